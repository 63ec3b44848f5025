package dispatch

import (
	"context"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/internal/pgdb"
	"berth/schema"
)

// Store is what the agents' API needs from region's store.
type Store interface {
	RegisterHost(ctx context.Context, name string, r schema.HostRegister) error
	Heartbeat(ctx context.Context, host string) error
	DesiredForHost(ctx context.Context, host string, peerGrace time.Duration) (*schema.DesiredState, error)
	ApplyObserved(ctx context.Context, host string, obs schema.ObservedSet) error
}

// API serves /internal/v1 to host agents.
type API struct {
	store    Store
	notifier *Notifier
	token    string
	log      *slog.Logger
	// MaxWait caps a long poll; Fallback re-reads the state while waiting in
	// case a notification was lost.
	MaxWait  time.Duration
	Fallback time.Duration
	// PeerGrace is how long a host may stay silent and still be the
	// others' tunnel peer (region's host grace).
	PeerGrace time.Duration

	// sent holds the peers last sent to each host from this replica: a
	// poll answers at once when they changed since, even before it began.
	mu   sync.Mutex
	sent map[string][]schema.Peer
}

// NewAPI returns the agents' API, authorized by the shared agent token.
func NewAPI(store Store, notifier *Notifier, token string, log *slog.Logger) *API {
	return &API{store: store, notifier: notifier, token: token, log: log,
		MaxWait: 30 * time.Second, Fallback: 2 * time.Second, PeerGrace: 60 * time.Second,
		sent: map[string][]schema.Peer{}}
}

var hostNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Register adds the routes under r (which should be /internal/v1).
func (a *API) Register(r *mux.Router) {
	r.Use(a.auth)
	r.Handle("/hosts/{host}", a.wrap(a.register)).Methods(http.MethodPut)
	r.Handle("/hosts/{host}/desired", a.wrap(a.desired)).Methods(http.MethodGet)
	r.Handle("/hosts/{host}/report", a.wrap(a.report)).Methods(http.MethodPost)
}

func (a *API) auth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get(schema.AgentTokenHeader)
		if a.token == "" || subtle.ConstantTimeCompare([]byte(got), []byte(a.token)) != 1 {
			apierr.RenderNova(w, apierr.Unauthenticatedf("A valid agent token is required."))
			return
		}
		next.ServeHTTP(w, r)
	})
}

type handler func(w http.ResponseWriter, r *http.Request, host string) error

func (a *API) wrap(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := mux.Vars(r)["host"]
		var err error = apierr.Invalidf("Invalid host name %q.", host)
		if hostNameRE.MatchString(host) {
			err = pgdb.Classify(h(w, r, host))
		}
		if err != nil {
			if apierr.KindOf(err) == apierr.Internal {
				a.log.Error("agent api", "host", host, "err", err, "request_id", httpx.RequestID(r.Context()))
			}
			apierr.RenderNova(w, err)
		}
	})
}

func (a *API) register(w http.ResponseWriter, r *http.Request, host string) error {
	var body schema.HostRegister
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, false, &body); err != nil {
		return err
	}
	if body.VCPUs <= 0 || body.MemoryMB <= 0 || body.DiskGB < 0 {
		return apierr.Invalidf("vcpus and memory_mb must be positive, disk_gb not negative.")
	}
	if err := a.store.RegisterHost(r.Context(), host, body); err != nil {
		return err
	}
	h := schema.Host{Name: host, VCPUs: body.VCPUs, MemoryMB: body.MemoryMB, DiskGB: body.DiskGB,
		Labels: body.Labels, LastHeartbeat: time.Now().UTC()}
	a.log.Info("host registered", "host", host, "vcpus", body.VCPUs, "memory_mb", body.MemoryMB, "disk_gb", body.DiskGB)
	httpx.WriteJSON(w, http.StatusOK, h)
	return nil
}

func (a *API) desired(w http.ResponseWriter, r *http.Request, host string) error {
	q := r.URL.Query()
	var since int64
	if s := q.Get("index"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return apierr.Invalidf("index must be a non-negative integer.")
		}
		since = v
	}
	wait := a.MaxWait
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			return apierr.Invalidf("wait must be a duration such as 25s.")
		}
		wait = min(d, a.MaxWait)
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	// Peers change without the host's index: a host departs by going
	// silent (or deleted, or forced down). A change of them since they
	// were last sent (from this replica), or else since the poll began,
	// answers at once.
	a.mu.Lock()
	peers, known := a.sent[host]
	a.mu.Unlock()
	for {
		changed, cancel := a.notifier.Subscribe(host)
		state, err := a.store.DesiredForHost(r.Context(), host, a.PeerGrace)
		if err == nil && !known {
			peers, known = state.Peers, true
		}
		if err != nil || state.Index > since || since == 0 || !slices.Equal(peers, state.Peers) {
			cancel()
			if err != nil {
				return err
			}
			a.send(w, host, state)
			return nil
		}
		select {
		case <-changed:
		case <-time.After(a.Fallback):
		case <-deadline.C:
			cancel()
			a.send(w, host, state)
			return nil
		case <-r.Context().Done():
			cancel()
			return nil
		}
		cancel()
	}
}

// send answers a poll with state and remembers the peers sent.
func (a *API) send(w http.ResponseWriter, host string, state *schema.DesiredState) {
	a.mu.Lock()
	a.sent[host] = slices.Clone(state.Peers)
	a.mu.Unlock()
	httpx.WriteJSON(w, http.StatusOK, state)
}

func (a *API) report(w http.ResponseWriter, r *http.Request, host string) error {
	var body schema.HostReport
	if err := httpx.DecodeJSON(w, r, 16<<20, false, &body); err != nil {
		return err
	}
	ctx := r.Context()
	if err := a.store.Heartbeat(ctx, host); err != nil {
		return err
	}
	for _, obs := range body.Sets {
		if err := a.store.ApplyObserved(ctx, host, obs); err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
