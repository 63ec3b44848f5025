// Package imagesvctest runs a whole imagesvc (Glance API and registry on
// one loopback listener) for tests: a fresh PostgreSQL database (pgtest),
// a temporary blob store, and a fake Keystone (keystonefake). The listener
// counts the bytes that cross it, so tests can measure what a docker pull
// really moved.
package imagesvctest

import (
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"berth/imagesvc/api"
	"berth/imagesvc/blob"
	"berth/imagesvc/content"
	"berth/imagesvc/keystonefake"
	"berth/imagesvc/registry"
	"berth/imagesvc/store"
	"berth/imagesvc/wirecount"
	"berth/internal/keystone"
	"berth/internal/pgtest"
)

// AgentToken is the agent token the service is started with.
const AgentToken = "agent-secret-for-tests"

// Options change the defaults.
type Options struct {
	MaxImageSize int64
	UploadLease  time.Duration
	// GCGrace is the blob garbage-collection grace (default 0: tests
	// delete what they just uploaded).
	GCGrace time.Duration
}

// Env is a running imagesvc.
type Env struct {
	KS       *keystonefake.Keystone
	URL      string // http://127.0.0.1:<port>
	Host     string // 127.0.0.1:<port>, the registry host for docker
	Store    *store.Store
	Blobs    *blob.FS
	Content  *content.Store
	API      *api.Server
	Registry *registry.Registry
	DataDir  string
	// Wire counts the bytes read from and written to client connections.
	Wire *Counter
}

// Counter counts bytes on connections.
type Counter = wirecount.Counter

// Start runs an imagesvc for the test, stopped when it ends.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	db, err := store.Open(t.Context(), pgtest.DSN(t), 10*time.Second)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	dir := t.TempDir()
	blobs, err := blob.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	level := slog.LevelError + 4
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ks := keystonefake.New(t)
	st := store.New(db)
	cs := content.New(blobs, st, log)
	cs.GCGrace = o.GCGrace
	validator := keystone.NewValidator(ks.URL(), 0, nil)
	a := api.New(api.Config{Store: st, Blobs: blobs, Content: cs, Validator: validator, AgentToken: AgentToken,
		MaxImageSize: o.MaxImageSize, UploadLease: o.UploadLease, Logger: log})
	reg := registry.New(registry.Config{Store: st, Content: cs, MaxImageSize: o.MaxImageSize, Logger: log,
		Auth: registry.NewKeystoneAuth(ks.URL(), 30*time.Second, validator, AgentToken, nil)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wire := &Counter{}
	srv := &http.Server{Handler: registry.Route(reg.Handler(), a.Handler()), ReadHeaderTimeout: 30 * time.Second}
	go srv.Serve(wirecount.Listen(ln, wire))
	t.Cleanup(func() {
		srv.Close()
		a.Close()
		reg.Close()
	})
	return &Env{KS: ks, URL: "http://" + ln.Addr().String(), Host: ln.Addr().String(), Store: st, Blobs: blobs,
		Content: cs, API: a, Registry: reg, DataDir: dir, Wire: wire}
}
