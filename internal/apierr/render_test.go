package apierr

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRenderNova(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		body   map[string]any
	}{
		{"not found", NotFoundf("Instance x could not be found."), 404,
			map[string]any{"itemNotFound": map[string]any{"code": 404.0, "message": "Instance x could not be found."}}},
		{"bad request", Invalidf("bad"), 400, map[string]any{"badRequest": map[string]any{"code": 400.0, "message": "bad"}}},
		{"conflict", Conflictf("busy"), 409, map[string]any{"conflictingRequest": map[string]any{"code": 409.0, "message": "busy"}}},
		{"rate limit", &Error{Kind: OverLimit, Status: 429, Message: "slow down", RetryAfter: 5}, 429,
			map[string]any{"overLimit": map[string]any{"code": 429.0, "message": "slow down", "retryAfter": "5"}}},
		{"internal hides detail", errors.New("pq: secret detail"), 500,
			map[string]any{"computeFault": map[string]any{"code": 500.0, "message": "Unexpected API Error. Please report this at your cloud operator and attach the request ID if possible."}}},
		{"wrapped keeps kind", Wrap(errors.New("x"), Unavailable, "down"), 503,
			map[string]any{"serviceUnavailable": map[string]any{"code": 503.0, "message": "down"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			RenderNova(w, tt.err)
			if w.Code != tt.status {
				t.Errorf("status = %d, want %d", w.Code, tt.status)
			}
			var got map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.body, got); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRenderGlanceAndNeutron(t *testing.T) {
	w := httptest.NewRecorder()
	RenderGlance(w, NotFoundf("No image found with ID x"))
	var g map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &g)
	if diff := cmp.Diff(map[string]any{"message": "No image found with ID x", "code": "404 Not Found", "title": "Not Found"}, g); diff != "" {
		t.Errorf("glance body (-want +got):\n%s", diff)
	}
	w = httptest.NewRecorder()
	RenderNeutron(w, NotFoundf("Network x could not be found."), "NetworkNotFound")
	var n map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &n)
	want := map[string]any{"NeutronError": map[string]any{"type": "NetworkNotFound", "message": "Network x could not be found.", "detail": ""}}
	if diff := cmp.Diff(want, n); diff != "" {
		t.Errorf("neutron body (-want +got):\n%s", diff)
	}
}
