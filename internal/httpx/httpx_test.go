package httpx

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"berth/internal/apierr"
)

func TestDecodeJSON(t *testing.T) {
	type body struct {
		Name string `json:"name"`
		N    int    `json:"n"`
	}
	tests := []struct {
		name, ct, in string
		strict       bool
		kind         apierr.Kind // Internal = success
	}{
		{"ok", "application/json", `{"name": "a", "n": 1}`, true, apierr.Internal},
		{"no content type is accepted", "", `{"name": "a"}`, true, apierr.Internal},
		{"malformed", "application/json", `{"name": `, true, apierr.Invalid},
		{"syntax", "application/json", `{"name" "a"}`, true, apierr.Invalid},
		{"wrong type", "application/json", `{"n": "x"}`, true, apierr.Invalid},
		{"unknown field strict", "application/json", `{"bogus": 1}`, true, apierr.Invalid},
		{"unknown field lax", "application/json", `{"bogus": 1}`, false, apierr.Internal},
		{"trailing data", "application/json", `{} {}`, true, apierr.Invalid},
		{"empty", "application/json", ``, true, apierr.Invalid},
		{"wrong content type", "text/plain", `{}`, true, apierr.UnsupportedMedia},
		{"too large", "application/json", `{"name": "` + strings.Repeat("x", 2000) + `"}`, true, apierr.TooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tt.in))
			if tt.ct != "" {
				r.Header.Set("Content-Type", tt.ct)
			}
			var b body
			err := DecodeJSON(httptest.NewRecorder(), r, 1024, tt.strict, &b)
			if tt.kind == apierr.Internal {
				if err != nil {
					t.Fatalf("DecodeJSON: %v, want success", err)
				}
				return
			}
			if got := apierr.KindOf(err); err == nil || got != tt.kind {
				t.Fatalf("DecodeJSON err = %v (kind %d), want kind %d", err, got, tt.kind)
			}
		})
	}
}

func TestRequestIDs(t *testing.T) {
	var seen, client string
	h := RequestIDs(true)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen, client = RequestID(r.Context()), ClientRequestID(r.Context())
	}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	id := w.Header().Get("X-Openstack-Request-Id")
	if !reqIDPattern.MatchString(id) || w.Header().Get("X-Compute-Request-Id") != id || seen != id {
		t.Errorf("ids: header %q compute %q ctx %q, want one req-<uuid>", id, w.Header().Get("X-Compute-Request-Id"), seen)
	}
	if client != "" {
		t.Errorf("ClientRequestID %q for a request that sent none", client)
	}
	// A well-formed client id is kept for tracing; a malformed one replaced.
	const mine = "req-0b8f8a8e-2f55-4f5e-9f5c-1c2d3e4f5a6b"
	for in, keep := range map[string]bool{mine: true, "req-bogus": false, "x\r\ny": false} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("X-Openstack-Request-Id", in)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if got := w.Header().Get("X-Openstack-Request-Id"); (got == in) != keep || !reqIDPattern.MatchString(got) {
			t.Errorf("client id %q: got %q, keep=%v", in, got, keep)
		}
		// Only a kept client id can mark a retry.
		if want := map[bool]string{true: in}[keep]; client != want {
			t.Errorf("client id %q: ClientRequestID %q, want %q", in, client, want)
		}
	}
}
