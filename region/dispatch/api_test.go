package dispatch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/mux"

	"berth/internal/pgtest"
	"berth/region/dispatch"
	"berth/region/store"
	"berth/schema"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const token = "agent-secret"

type env struct {
	st  *store.Store
	api *dispatch.API
	url string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dsn := pgtest.DSN(t)
	ctx := context.Background()
	st, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	n, err := dispatch.NewNotifier(dsn, log)
	if err != nil {
		t.Fatal(err)
	}
	nctx, cancel := context.WithCancel(ctx)
	go n.Run(nctx)
	t.Cleanup(func() { cancel(); n.Close() })
	api := dispatch.NewAPI(st, n, token, log)
	r := mux.NewRouter()
	api.Register(r.PathPrefix("/internal/v1").Subrouter())
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return &env{st: st, api: api, url: srv.URL + "/internal/v1"}
}

// desired long-polls host's desired state past index.
func (e *env) desired(host string, index int64) (schema.DesiredState, error) {
	var ds schema.DesiredState
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/hosts/%s/desired?index=%d", e.url, host, index), nil)
	req.Header.Set(schema.AgentTokenHeader, token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ds, fmt.Errorf("desired state of %s past %d: %w", host, index, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ds, fmt.Errorf("desired state of %s: HTTP %d", host, resp.StatusCode)
	}
	return ds, json.NewDecoder(resp.Body).Decode(&ds)
}

func peerNames(ds schema.DesiredState) []string {
	var out []string
	for _, p := range ds.Peers {
		out = append(out, p.Host)
	}
	return out
}

// A host that departs — forced down, silent past the grace, deleted —
// leaves the other hosts' peers (their agents then remove its tunnel),
// and a long poll that is waiting answers with the change instead of at
// its deadline; a host that comes back is a peer again.
func TestPeersDropDepartedHosts(t *testing.T) {
	e := newEnv(t)
	e.api.MaxWait = time.Hour // only a change answers the polls below
	ctx := context.Background()
	for i, h := range []string{"ha", "hb", "hc", "hd"} {
		tip := fmt.Sprintf("192.0.2.%d", i+1)
		if h == "hd" {
			tip = "" // no tunnel endpoint: never a peer
		}
		if err := e.st.RegisterHost(ctx, h, schema.HostRegister{VCPUs: 4, MemoryMB: 4096, DiskGB: 10, TunnelIP: tip}); err != nil {
			t.Fatal(err)
		}
	}
	ds, err := e.desired("ha", 0)
	if err != nil {
		t.Fatal(err)
	}
	if got := peerNames(ds); !slices.Equal(got, []string{"hb", "hc"}) {
		t.Fatalf("peers of ha = %v, want [hb hc]", got)
	}
	db := e.st.DB()
	down := true
	for _, step := range []struct {
		name   string
		change func() error
		want   []string
	}{
		{"forced down", func() error { _, err := e.st.SetHostService(ctx, "hb", nil, nil, &down); return err }, []string{"hc"}},
		{"silent past the grace", func() error {
			_, err := db.ExecContext(ctx, `UPDATE hosts SET last_heartbeat = now() - interval '1 hour' WHERE name = 'hc'`)
			return err
		}, nil},
		{"back (heartbeat)", func() error { return e.st.Heartbeat(ctx, "hc") }, []string{"hc"}},
		{"deleted", func() error { _, err := db.ExecContext(ctx, `DELETE FROM hosts WHERE name = 'hc'`); return err }, nil},
		{"registered again", func() error {
			return e.st.RegisterHost(ctx, "hc", schema.HostRegister{VCPUs: 4, MemoryMB: 4096, DiskGB: 10, TunnelIP: "192.0.2.3"})
		}, []string{"hc"}},
	} {
		type answer struct {
			ds  schema.DesiredState
			err error
		}
		got := make(chan answer, 1)
		go func() {
			ds, err := e.desired("ha", ds.Index)
			got <- answer{ds, err}
		}()
		time.Sleep(100 * time.Millisecond) // the poll waits (or sees the change first: either answers)
		if err := step.change(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		a := <-got
		if a.err != nil {
			t.Fatalf("%s: %v", step.name, a.err)
		}
		ds = a.ds
		if p := peerNames(ds); !slices.Equal(p, step.want) {
			t.Errorf("%s: peers of ha = %v, want %v", step.name, p, step.want)
		}
	}
}
