// Package sdktest serves canned answers to the SDK's unit tests: a test
// double of one OpenStack service endpoint on httptest.
package sdktest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
)

// Request is what the double received.
type Request struct {
	Method, Path, Query string
	Body                string
}

// Server is the double; Handle registers "METHOD /path" handlers.
type Server struct {
	*httptest.Server
	mu       sync.Mutex
	handlers map[string]http.HandlerFunc
	Requests []Request
}

// New starts a double and stops it when the test ends.
func New(t *testing.T) *Server {
	s := &Server{handlers: map[string]http.HandlerFunc{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(b))
		s.mu.Lock()
		s.Requests = append(s.Requests, Request{r.Method, r.URL.Path, r.URL.RawQuery, string(b)})
		h := s.handlers[r.Method+" "+r.URL.Path]
		s.mu.Unlock()
		w.Header().Set("X-Openstack-Request-Id", "req-test")
		if h == nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(404)
			io.WriteString(w, `{"itemNotFound": {"code": 404, "message": "The resource could not be found."}}`)
			return
		}
		h(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// Handle answers route with h.
func (s *Server) Handle(route string, h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handlers[route] = h
}

// JSON answers route with status and body.
func (s *Server) JSON(route string, status int, body string) {
	s.Handle(route, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	})
}

// Client is a service client whose endpoint is the double's root + prefix
// (e.g. "v2.1/").
func (s *Server) Client(prefix string) *gophercloud.ServiceClient {
	p := &gophercloud.ProviderClient{TokenID: "tok"}
	return &gophercloud.ServiceClient{ProviderClient: p, Endpoint: s.URL + "/" + prefix}
}
