// Command berth-region runs region: the Nova-compatible compute API (with
// the host agents' internal API beside it) and the Neutron-compatible
// network API, over PostgreSQL.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gorilla/mux"

	"berth/internal/keystone"
	"berth/internal/metrics"
	"berth/region/agentclient"
	"berth/region/compute"
	"berth/region/dispatch"
	"berth/region/imageclient"
	"berth/region/monitor"
	"berth/region/network"
	"berth/region/store"
)

// Main is the region process: Run serves until ctx ends.
type Main struct {
	Listen         string
	NetworkListen  string
	DSN            string
	KeystoneURL    string
	ImageURL       string
	AgentTokenFile string
	DefaultCIDR    string
	PublicURL      string
	TokenCacheTTL  time.Duration
	HostGrace      time.Duration
	BuildTimeout   time.Duration
	// CreateBatch is how concurrent server creates share transactions.
	CreateBatch store.PlacementBatch
	// RenderCacheMB bounds the rendered servers kept for lists and shows:
	// 0 is compute's default (64), below 0 keeps none.
	RenderCacheMB int
	Log           *slog.Logger

	store    *store.Store
	notifier *dispatch.Notifier
	servers  []*http.Server
}

func main() {
	m := &Main{}
	flag.StringVar(&m.Listen, "listen", "127.0.0.1:8774", "compute API address")
	flag.StringVar(&m.NetworkListen, "network-listen", "", "network API address (e.g. 127.0.0.1:9696); empty: off")
	flag.StringVar(&m.DSN, "db", os.Getenv("BERTH_REGION_DB"), "PostgreSQL DSN (env BERTH_REGION_DB)")
	flag.StringVar(&m.KeystoneURL, "keystone-url", "http://127.0.0.1:5000/v3", "Keystone v3 URL")
	flag.StringVar(&m.ImageURL, "image-url", "http://127.0.0.1:9292", "imagesvc URL")
	flag.StringVar(&m.AgentTokenFile, "agent-token-file", "", "file holding the host agents' shared secret")
	flag.StringVar(&m.DefaultCIDR, "default-cidr", "10.99.0.0/24", "CIDR of the default network")
	flag.StringVar(&m.PublicURL, "public-url", "", "base URL for links (default: the request's host)")
	flag.DurationVar(&m.TokenCacheTTL, "token-cache-ttl", 30*time.Second, "how long a validated token is trusted")
	flag.DurationVar(&m.HostGrace, "host-grace", 60*time.Second, "how long a host may be silent before it counts as down")
	flag.DurationVar(&m.BuildTimeout, "build-timeout", 10*time.Minute, "fail builds that have not finished after this long (0: never)")
	m.CreateBatch = store.DefaultPlacementBatch
	flag.IntVar(&m.CreateBatch.Max, "create-batch", m.CreateBatch.Max, "most concurrent server creates committed in one transaction (1: one each)")
	flag.DurationVar(&m.CreateBatch.Linger, "create-linger", m.CreateBatch.Linger, "how long a create batch waits for more creates to join it")
	flag.IntVar(&m.CreateBatch.InFlight, "create-inflight", m.CreateBatch.InFlight, "create batches committing at once")
	flag.IntVar(&m.RenderCacheMB, "render-cache-mb", 0, "MB of rendered servers kept for lists and shows (0: 64; -1: none)")
	level := flag.String("log-level", "info", "debug, info, warn or error")
	flag.Parse()
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(*level))
	m.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv})).With("service", "region")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := m.Run(ctx)
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		m.Log.Error("region stopped", "err", err)
		os.Exit(1)
	}
}

// Run opens the store, starts the listeners and serves until ctx ends.
func (m *Main) Run(ctx context.Context) error {
	if m.DSN == "" {
		return errors.New("--db is required")
	}
	token, err := readToken(m.AgentTokenFile)
	if err != nil {
		return err
	}
	m.store, err = store.Open(ctx, m.DSN)
	if err != nil {
		return err
	}
	if m.CreateBatch != (store.PlacementBatch{}) {
		m.store.SetPlacementBatch(m.CreateBatch)
	}
	net0, err := m.store.EnsureDefaultNetwork(ctx, "private", m.DefaultCIDR)
	if err != nil {
		return err
	}
	m.notifier, err = dispatch.NewNotifier(m.DSN, m.Log)
	if err != nil {
		return fmt.Errorf("listen for notifications: %w", err)
	}
	go m.notifier.Run(ctx)
	go monitor.Run(ctx, m.store, monitor.Config{Interval: 10 * time.Second, HostGrace: m.HostGrace,
		BuildTimeout: m.BuildTimeout}, m.Log.With("component", "monitor"))

	validator := keystone.NewValidator(m.KeystoneURL, m.TokenCacheTTL, nil)
	agents := dispatch.NewAPI(m.store, m.notifier, token, m.Log.With("component", "dispatch"))
	agents.PeerGrace = m.HostGrace // a host down for region is no tunnel peer
	computeAPI := compute.New(compute.Config{
		Store: m.store, Validator: validator, Images: imageclient.New(m.ImageURL, nil), Agents: agentclient.New(token),
		Log: m.Log.With("component", "compute"), DefaultNetworkID: net0.ID, HostGrace: m.HostGrace,
		PublicURL: m.PublicURL, RenderCacheBytes: m.RenderCacheMB << 20,
	}, func(r *mux.Router) {
		r.Use(metrics.RouteTemplate)
		agents.Register(r.PathPrefix("/internal/v1").Subrouter())
	})

	// /metrics is served on both listeners, outside the APIs' auth and
	// fault middleware: process-level and aggregate figures only.
	reg := metrics.New()
	errc := make(chan error, 2)
	m.serve(ctx, m.Listen, reg.Wrap("compute", computeAPI), errc)
	if m.NetworkListen != "" {
		m.serve(ctx, m.NetworkListen, reg.Wrap("network", network.New(m.store, validator, m.Log.With("component", "network"))), errc)
	}
	m.Log.Info("region serving", "compute", m.Listen, "network", m.NetworkListen, "default_network", net0.CIDR)
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

func (m *Main) serve(ctx context.Context, addr string, h http.Handler, errc chan<- error) {
	srv := &http.Server{
		Addr: addr, Handler: h,
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 60 * time.Second,
		// Long polls of the agents last up to 30 s.
		WriteTimeout: 90 * time.Second, IdleTimeout: 120 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	m.servers = append(m.servers, srv)
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve %s: %w", addr, err)
		}
	}()
}

// Close stops the listeners and closes the store.
func (m *Main) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range m.servers {
		_ = s.Shutdown(ctx)
	}
	if m.notifier != nil {
		m.notifier.Close()
	}
	if m.store != nil {
		return m.store.Close()
	}
	return nil
}

func readToken(path string) (string, error) {
	if path == "" {
		if t := os.Getenv("BERTH_AGENT_TOKEN"); t != "" {
			return t, nil
		}
		return "", errors.New("--agent-token-file (or BERTH_AGENT_TOKEN) is required")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("agent token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if len(t) < 16 {
		return "", errors.New("agent token: too short (want at least 16 characters)")
	}
	return t, nil
}
