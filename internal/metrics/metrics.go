// Package metrics serves a service's Prometheus /metrics: the Go runtime
// and process collectors (goroutines, open descriptors, RSS) and one
// request counter and latency histogram per API, labelled by route
// template, never by path. Everything here is process-level or aggregate,
// so /metrics needs no token and shows nothing of any tenant.
package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Path is where Handler serves the metrics on every API listener.
const Path = "/metrics"

// Registry holds one process's collectors.
type Registry struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// New makes a registry with the Go and process collectors and the request
// metrics. A registry per process, not the global one, so tests can build
// several services in one binary.
func New() *Registry {
	r := &Registry{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_http_requests_total",
			Help: "HTTP requests served, by API, method, route template and status code.",
		}, []string{"api", "method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "berth_http_request_duration_seconds",
			Help:    "Time to serve HTTP requests, by API and route template.",
			Buckets: prometheus.DefBuckets,
		}, []string{"api", "route"}),
	}
	r.reg.MustRegister(collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), r.requests, r.duration)
	return r
}

// Handler serves the metrics in the Prometheus text format.
func (r *Registry) Handler() http.Handler {
	return promhttp.HandlerFor(r.reg, promhttp.HandlerOpts{})
}

type routeKey struct{}

// Wrap serves Path from the registry and passes every other request to
// api, counting it under the given API name. It sits outside the API's own
// middleware (request ids, Keystone auth, fault rendering), so /metrics is
// never authenticated nor turned into an API fault.
func (r *Registry) Wrap(api string, next http.Handler) http.Handler {
	metricsH := r.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == Path {
			metricsH.ServeHTTP(w, req)
			return
		}
		start := time.Now()
		route := new(string)
		rec := &statusWriter{ResponseWriter: w}
		defer func() {
			// A panic is re-raised as is; the handler's Recover renders
			// the fault, this only counts what was written.
			if rec.status == 0 {
				rec.status = http.StatusOK
			}
			tmpl := *route
			if tmpl == "" {
				tmpl = "other" // no route matched: never the raw path, whose values are unbounded
			}
			r.requests.WithLabelValues(api, method(req.Method), tmpl, strconv.Itoa(rec.status)).Inc()
			r.duration.WithLabelValues(api, tmpl).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(rec, req.WithContext(context.WithValue(req.Context(), routeKey{}, route)))
	})
}

// RouteTemplate is a gorilla/mux middleware (router.Use) that tells Wrap
// which route template matched; mux runs it only for matched routes.
func RouteTemplate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if p, ok := req.Context().Value(routeKey{}).(*string); ok {
			if cur := mux.CurrentRoute(req); cur != nil {
				if t, err := cur.GetPathTemplate(); err == nil {
					*p = t
				}
			}
		}
		next.ServeHTTP(w, req)
	})
}

// method keeps the method label bounded: a fuzzer's made-up verbs count
// as OTHER.
func method(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Flush lets streaming handlers flush through the writer.
func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer (hijack for
// the console's websocket, deadlines for uploads).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
