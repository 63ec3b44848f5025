// Package fakeregion is a TEST DOUBLE of region's internal host API, the
// wire of schema/agent.go, for driving real hostagents in tests:
//
//	PUT  /internal/v1/hosts/{host}                       HostRegister → 200 Host
//	GET  /internal/v1/hosts/{host}/desired?index=N&wait=D → 200 DesiredState (long-poll)
//	POST /internal/v1/hosts/{host}/report                HostReport → 204
//
// every call authenticated by the X-Berth-Agent-Token header. It is not
// region: it stores nothing durable and applies no policy.
package fakeregion

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"berth/schema"
)

// Region is the double. Tests set desired state and read reports.
type Region struct {
	URL   string
	Token string

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	hosts   map[string]*host
	// FailRegister makes the next n registrations answer 503.
	failRegister int
}

type host struct {
	reg       schema.HostRegister
	known     bool
	index     int64
	desired   []schema.DesiredSet
	report    schema.HostReport
	reports   int
	lastSeen  time.Time
	registers int
}

// New starts the double on a local port; it is closed when the test ends.
func New(t testing.TB, token string) *Region {
	r := &Region{Token: token, changed: make(chan struct{}), hosts: map[string]*host{}}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /internal/v1/hosts/{host}", r.auth(r.register))
	mux.HandleFunc("GET /internal/v1/hosts/{host}/desired", r.auth(r.desired))
	mux.HandleFunc("POST /internal/v1/hosts/{host}/report", r.auth(r.reportH))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	r.URL = srv.URL
	return r
}

func (r *Region) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get(schema.AgentTokenHeader) != r.Token {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "bad agent token"})
			return
		}
		h(w, req)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// hostLocked returns the named host's record, creating an unknown one.
func (r *Region) hostLocked(name string) *host {
	h, ok := r.hosts[name]
	if !ok {
		h = &host{}
		r.hosts[name] = h
	}
	return h
}

func (r *Region) broadcastLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *Region) register(w http.ResponseWriter, req *http.Request) {
	var reg schema.HostRegister
	if err := json.NewDecoder(req.Body).Decode(&reg); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": err.Error()})
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failRegister > 0 {
		r.failRegister--
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"message": "not ready"})
		return
	}
	name := req.PathValue("host")
	h := r.hostLocked(name)
	h.reg, h.known, h.lastSeen = reg, true, time.Now()
	h.registers++
	if h.index == 0 {
		h.index = 1 // index 0 means "answer at once"; a known host starts at 1
	}
	r.broadcastLocked()
	writeJSON(w, http.StatusOK, schema.Host{Name: name, VCPUs: reg.VCPUs, MemoryMB: reg.MemoryMB, DiskGB: reg.DiskGB, Labels: reg.Labels, LastHeartbeat: h.lastSeen})
}

func (r *Region) desired(w http.ResponseWriter, req *http.Request) {
	name := req.PathValue("host")
	index, _ := strconv.ParseInt(req.URL.Query().Get("index"), 10, 64)
	wait, err := time.ParseDuration(req.URL.Query().Get("wait"))
	if err != nil || wait <= 0 {
		wait = 25 * time.Second
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		r.mu.Lock()
		h := r.hostLocked(name)
		if !h.known {
			r.mu.Unlock()
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "unknown host"})
			return
		}
		ds := schema.DesiredState{Index: h.index, Sets: append([]schema.DesiredSet{}, h.desired...)}
		ch := r.changed
		r.mu.Unlock()
		if index == 0 || ds.Index > index {
			writeJSON(w, http.StatusOK, ds)
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			writeJSON(w, http.StatusOK, ds)
			return
		case <-req.Context().Done():
			return
		}
	}
}

func (r *Region) reportH(w http.ResponseWriter, req *http.Request) {
	var rep schema.HostReport
	if err := json.NewDecoder(req.Body).Decode(&rep); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"message": err.Error()})
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.hostLocked(req.PathValue("host"))
	if !h.known {
		writeJSON(w, http.StatusNotFound, map[string]string{"message": "unknown host"})
		return
	}
	h.report, h.lastSeen = rep, time.Now()
	h.reports++
	r.broadcastLocked()
	w.WriteHeader(http.StatusNoContent)
}

// SetDesired replaces a host's desired sets and bumps its index.
func (r *Region) SetDesired(hostName string, sets ...schema.DesiredSet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.hostLocked(hostName)
	h.desired = append([]schema.DesiredSet(nil), sets...)
	h.index++
	r.broadcastLocked()
}

// Forget drops a host as if region lost it: its next calls get 404.
func (r *Region) Forget(hostName string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if h, ok := r.hosts[hostName]; ok {
		h.known = false
	}
}

// FailRegistrations makes the next n registrations fail with 503.
func (r *Region) FailRegistrations(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failRegister = n
}

// Host returns what the double knows of a host: its registration, the
// number of registrations and reports, and the last report.
func (r *Region) Host(hostName string) (reg schema.HostRegister, registers, reports int, last schema.HostReport) {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.hostLocked(hostName)
	return h.reg, h.registers, h.reports, h.report
}

// WaitReport waits until the host's last report satisfies cond.
func (r *Region) WaitReport(t testing.TB, hostName string, timeout time.Duration, what string, cond func(schema.HostReport) bool) schema.HostReport {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		h := r.hostLocked(hostName)
		rep, n, ch := h.report, h.reports, r.changed
		r.mu.Unlock()
		if n > 0 && cond(rep) {
			return rep
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s; last report: %+v", timeout, what, rep)
		}
	}
}

// Set returns the report entry for one set, if present.
func Set(rep schema.HostReport, id string) (schema.ObservedSet, bool) {
	for _, s := range rep.Sets {
		if s.ID == id {
			return s, true
		}
	}
	return schema.ObservedSet{}, false
}
