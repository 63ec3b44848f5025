package fault

import (
	"errors"
	"net/http"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
)

func TestFromResponse(t *testing.T) {
	h := http.Header{}
	h.Set("X-Openstack-Request-Id", "req-1")
	cases := []struct {
		name, body, wantName, wantMsg string
	}{
		{"nova", `{"itemNotFound": {"code": 404, "message": "Instance x could not be found."}}`, "itemNotFound", "Instance x could not be found."},
		{"glance", `{"message": "No image found with ID x", "code": "404 Not Found", "title": "Not Found"}`, "Not Found", "No image found with ID x"},
		{"real glance", `{"message": "404 Not Found\n\nNo image found with ID x\n\n", "code": "404 Not Found", "title": "Not Found"}`, "Not Found", "No image found with ID x"},
		{"neutron", `{"NeutronError": {"type": "NetworkNotFound", "message": "Network x could not be found.", "detail": ""}}`, "NetworkNotFound", "Network x could not be found."},
		{"keystone", `{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}`, "error", "The request you have made requires authentication."},
		{"text", "upstream timed out\nmore", "", "upstream timed out"},
		{"empty", "", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := FromResponse(404, h, []byte(tc.body), "GET", "http://x")
			if e.Name != tc.wantName || e.Message != tc.wantMsg || e.RequestID != "req-1" {
				t.Errorf("got name %q message %q id %q, want %q %q req-1", e.Name, e.Message, e.RequestID, tc.wantName, tc.wantMsg)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	e := &Error{Status: 409, Message: "Cannot 'stop' instance x while it is in vm_state stopped", RequestID: "req-2"}
	want := "Cannot 'stop' instance x while it is in vm_state stopped (HTTP 409) (Request-ID: req-2)"
	if e.Error() != want {
		t.Errorf("got %q, want %q", e.Error(), want)
	}
	if got := (&Error{Status: 503}).Error(); got != "Service Unavailable (HTTP 503)" {
		t.Errorf("no message: got %q", got)
	}
}

func TestFromGophercloud(t *testing.T) {
	h := http.Header{}
	h.Set("X-Compute-Request-Id", "req-3")
	ue := gophercloud.ErrUnexpectedResponseCode{Actual: 501, Body: []byte(`{"notImplemented": {"code": 501, "message": "nope"}}`), ResponseHeader: h}
	for _, err := range []error{ue, &ue, &gophercloud.ErrErrorAfterReauthentication{ErrOriginal: &ue}} {
		got := From(err)
		var fe *Error
		if !errors.As(got, &fe) || fe.Message != "nope" || fe.RequestID != "req-3" || !errors.Is(got, ErrNotImplemented) {
			t.Errorf("From(%T) = %#v", err, got)
		}
	}
	if StatusOf(ue) != 501 {
		t.Errorf("StatusOf = %d", StatusOf(ue))
	}
	plain := errors.New("x")
	if From(plain) != plain || From(nil) != nil {
		t.Error("From must pass other errors through")
	}
}
