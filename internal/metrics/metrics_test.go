package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/mux"
)

// TestWrap checks that /metrics is served before the API (no auth, no
// fault) and that requests are counted by route template, never by path.
func TestWrap(t *testing.T) {
	r := mux.NewRouter()
	r.Use(RouteTemplate)
	r.Handle("/v2/things/{id}", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
	}))
	// The API refuses everything it does not route, as an auth layer would.
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	})
	srv := httptest.NewServer(New().Wrap("test", r))
	defer srv.Close()

	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/v2/things/secret-tenant-id"},
		{"BREW", "/nowhere/another-secret"},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := http.Get(srv.URL + Path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	body := string(b)
	for _, want := range []string{
		"\ngo_goroutines ",
		"\nprocess_open_fds ",
		`berth_http_requests_total{api="test",code="202",method="GET",route="/v2/things/{id}"} 1`,
		`berth_http_requests_total{api="test",code="401",method="OTHER",route="other"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if strings.Contains(body, "secret") {
		t.Errorf("/metrics shows a request path:\n%s", body)
	}
}
