// Command berth-hostagent runs on every host: it registers the host with
// region, watches the host's desired sets and converges Docker and OVS to
// them, reporting what it observes.
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
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/docker/docker/client"

	"berth/hostagent/agent"
	"berth/hostagent/agentapi"
	"berth/hostagent/flows"
	"berth/hostagent/hostinfo"
	"berth/hostagent/images"
	"berth/hostagent/ledger"
	"berth/hostagent/netplumb"
	"berth/hostagent/probe"
	"berth/hostagent/reconcile"
	"berth/hostagent/runtime"
	"berth/schema"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	m := NewMain()
	if err := m.ParseFlags(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if m.Config.PrintSeccomp {
		b, err := runtime.SeccompProfile()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Stdout.Write(append(b, '\n'))
		return
	}
	err := m.Run(ctx)
	if cerr := m.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		m.Logger.Error("hostagent failed", "err", err)
		os.Exit(1)
	}
}

// Config is everything the flags set.
type Config struct {
	// PrintSeccomp: print the containers' seccomp profile and exit.
	PrintSeccomp      bool
	RegionURL         string
	ImageURL          string
	RegistryPull      bool
	TokenFile         string
	Host              string
	Bridge            string
	DatapathType      string
	EnsureBridge      bool
	OVSDB             string
	SwitchNetns       string
	PauseBinary       string
	StateDir          string
	VCPUs             int
	MemoryMB          int
	DiskGB            int
	SyncInterval      time.Duration
	HeartbeatInterval time.Duration
	StopGrace         time.Duration
	OrphanGrace       time.Duration
	DryRunOrphans     bool
	LogLevel          string
	Listen            string
	AgentURL          string
	PidsLimit         int64
	DockerParallel    int
	TunnelIP          string
	HostBandwidthMbit int
	OFTarget          string
}

// Main is the hostagent program.
type Main struct {
	Config Config
	Logger *slog.Logger

	docker *client.Client

	mu       sync.Mutex
	agentURL string
}

// AgentURL is the address of the agent's own API once Run has bound it
// ("" before, or when --listen is empty).
func (m *Main) AgentURL() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.agentURL
}

// NewMain returns a Main with default configuration.
func NewMain() *Main {
	return &Main{Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))}
}

// ParseFlags fills m.Config from command-line arguments.
func (m *Main) ParseFlags(args []string) error {
	c := &m.Config
	fs := flag.NewFlagSet("berth-hostagent", flag.ContinueOnError)
	fs.StringVar(&c.RegionURL, "region-url", "http://127.0.0.1:8774", "region base URL (internal host API)")
	fs.StringVar(&c.ImageURL, "image-url", "http://127.0.0.1:9292", "imagesvc base URL")
	fs.BoolVar(&c.RegistryPull, "registry-pull", true, "pull images through imagesvc's registry API (only missing layers move); the archive is the fallback")
	fs.StringVar(&c.TokenFile, "agent-token-file", "", "file holding the shared agent secret (required)")
	fs.StringVar(&c.Host, "host", "", "host name to register as (default: os.Hostname)")
	fs.StringVar(&c.Bridge, "bridge", "br-berth", "OVS integration bridge")
	fs.StringVar(&c.DatapathType, "datapath-type", "", `datapath type if the bridge must be created: "system", "netdev" or "" (auto)`)
	fs.BoolVar(&c.EnsureBridge, "ensure-bridge", true, "create the bridge at start if it is missing")
	fs.StringVar(&c.OVSDB, "ovs-db", "", "OVSDB remote the agent connects to, e.g. unix:/run/openvswitch/db.sock (default: OVS's own socket)")
	fs.StringVar(&c.SwitchNetns, "switch-netns", "", "netns path where ovs-vswitchd runs, if not the agent's own")
	fs.StringVar(&c.PauseBinary, "pause-binary", "", "static pause binary for infra containers (default: berth-pause next to this binary)")
	fs.StringVar(&c.StateDir, "state-dir", "/var/lib/berth/hostagent", "directory for the agent's own state")
	fs.IntVar(&c.VCPUs, "vcpus", 0, "vCPUs to offer (0: detect)")
	fs.IntVar(&c.MemoryMB, "memory-mb", 0, "memory to offer in MiB (0: detect)")
	fs.IntVar(&c.DiskGB, "disk-gb", 0, "disk to offer in GiB (0: detect)")
	fs.DurationVar(&c.SyncInterval, "sync-interval", 10*time.Second, "period of full resyncs")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat-interval", 5*time.Second, "longest gap between reports (region expects ≤ 10s)")
	fs.DurationVar(&c.StopGrace, "stop-grace", 10*time.Second, "TERM→KILL grace period when stopping containers")
	fs.DurationVar(&c.OrphanGrace, "orphan-grace", 30*time.Second, "how long a set absent from the desired state waits before removal")
	fs.BoolVar(&c.DryRunOrphans, "dry-run-orphans", false, "log orphaned sets instead of removing them")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8780", `address of the agent's own API (port 0: any free port; "": no API)`)
	fs.StringVar(&c.AgentURL, "agent-url", "", "URL region uses to reach the agent API (default: from --listen)")
	fs.Int64Var(&c.PidsLimit, "pids-limit", 1024, "processes per container when the flavor sets none")
	fs.IntVar(&c.DockerParallel, "docker-parallel", 0, "container creates, starts and removes in flight at once (0: 4 per CPU)")
	fs.StringVar(&c.TunnelIP, "tunnel-ip", "", "this host's VXLAN tunnel endpoint (registered with region; \"\": no tunnels)")
	fs.IntVar(&c.HostBandwidthMbit, "host-bandwidth-mbit", 10000, "inbound capacity the host's sets share (HTB parent class)")
	fs.BoolVar(&c.PrintSeccomp, "print-seccomp-profile", false, "print the seccomp profile every container gets (Docker's default less the ptrace family) as JSON and exit")
	fs.StringVar(&c.OFTarget, "of-target", "", "ovs-ofctl target of the bridge (default: <ovs-db dir>/<bridge>.mgmt, or the bridge name)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if c.TokenFile == "" && !c.PrintSeccomp {
		return errors.New("--agent-token-file is required")
	}
	if c.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("host name: %w", err)
		}
		c.Host = h
	}
	if c.TunnelIP != "" && net.ParseIP(c.TunnelIP).To4() == nil {
		return fmt.Errorf("--tunnel-ip %q is not an IPv4 address", c.TunnelIP)
	}
	if c.PauseBinary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("--pause-binary not set and own path unknown: %w", err)
		}
		c.PauseBinary = filepath.Join(filepath.Dir(exe), "berth-pause")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	m.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	return nil
}

// Run wires the agent and runs it until ctx ends.
func (m *Main) Run(ctx context.Context) error {
	c := m.Config
	log := m.Logger.With("host", c.Host)
	token, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return fmt.Errorf("read agent token: %w", err)
	}
	secret := strings.TrimSpace(string(token))
	if secret == "" {
		return fmt.Errorf("agent token file %s is empty", c.TokenFile)
	}
	if _, err := os.Stat(c.PauseBinary); err != nil {
		return fmt.Errorf("pause binary: %w", err)
	}
	if err := os.MkdirAll(c.StateDir, 0o700); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}

	m.docker, err = client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("docker client: %w", err)
	}
	ictx, cancel := context.WithTimeout(ctx, 30*time.Second)
	info, err := m.docker.Info(ictx)
	cancel()
	if err != nil {
		return fmt.Errorf("docker info: %w", err)
	}
	capacity, err := m.capacity(info.DockerRootDir)
	if err != nil {
		return err
	}

	nw := netplumb.New(log, netplumb.Config{
		Host: c.Host, Bridge: c.Bridge, OVSDB: c.OVSDB, SwitchNetns: c.SwitchNetns,
		OFTarget: c.OFTarget, TunnelIP: c.TunnelIP, HostBandwidthKbit: c.HostBandwidthMbit * 1000,
	})
	if c.EnsureBridge {
		if err := nw.EnsureBridge(ctx, c.DatapathType); err != nil {
			return fmt.Errorf("ensure bridge %s: %w", c.Bridge, err)
		}
	}
	// The pipeline's defaults (drop what no port flow admits) go in before
	// any set is looked at; a restart finds them by cookie and adds nothing.
	if err := nw.SyncHost(ctx); err != nil {
		return fmt.Errorf("host data path: %w", err)
	}
	rt := runtime.New(m.docker, log, runtime.Config{Host: c.Host, PauseBinary: c.PauseBinary, StopGrace: c.StopGrace, PidsLimit: c.PidsLimit, MaxParallel: c.DockerParallel})
	img := images.New(m.docker, log, images.Config{ImageURL: c.ImageURL, Token: secret, Registry: c.RegistryPull})
	led, err := ledger.Open(filepath.Join(c.StateDir, "applied-generations.json"))
	if err != nil {
		return err
	}
	var rec *reconcile.Reconciler
	prober := probe.New(log, func() { rec.RequestSync() })
	defer prober.Close()
	rec = reconcile.New(rt, nw, img, led, prober, log, reconcile.Config{OrphanGrace: c.OrphanGrace, DryRunOrphans: c.DryRunOrphans})

	var ln net.Listener
	if c.Listen != "" {
		ln, err = net.Listen("tcp", c.Listen)
		if err != nil {
			return fmt.Errorf("listen %s: %w", c.Listen, err)
		}
		url := c.AgentURL
		if url == "" {
			url = advertisedURL(ln.Addr().(*net.TCPAddr), c.Host)
		}
		m.mu.Lock()
		m.agentURL = url
		m.mu.Unlock()
	}
	peers := &peerTap{Region: agent.NewClient(c.RegionURL, c.Host, secret, nil), groups: nw.SetGroups, kick: make(chan struct{}, 1)}
	a := agent.New(peers, rec, log, agent.Config{
		Host: c.Host,
		Register: schema.HostRegister{
			VCPUs: capacity.VCPUs, MemoryMB: capacity.MemoryMB, DiskGB: capacity.DiskGB,
			AgentVersion: version(), AgentURL: m.AgentURL(), TunnelIP: c.TunnelIP,
		},
		SyncInterval:      c.SyncInterval,
		HeartbeatInterval: c.HeartbeatInterval,
	})

	var wg sync.WaitGroup
	defer wg.Wait()
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	wg.Add(1)
	go func() {
		defer wg.Done()
		rt.Watch(wctx, func(string) { rec.RequestSync() })
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		hostNetLoop(wctx, log, nw, peers, c.SyncInterval)
	}()
	if ln != nil {
		srv := &http.Server{
			Handler: agentapi.New(log.With("component", "agentapi"), agentapi.Config{
				Token: secret, Sets: rec, NICs: nw, Files: rt, Docker: m.docker,
			}),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("agent api server", "err", err)
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			if srv.Shutdown(sctx) != nil {
				srv.Close() // log follows and shells do not end by themselves
			}
		}()
	}
	log.Info("hostagent starting", "region_url", c.RegionURL, "bridge", c.Bridge, "agent_url", m.AgentURL(),
		"vcpus", capacity.VCPUs, "memory_mb", capacity.MemoryMB, "disk_gb", capacity.DiskGB)
	err = a.Run(ctx)
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		err = nil // asked to stop before region answered
	}
	log.Info("hostagent stopped")
	return err
}

// peerTap passes region's desired state through to the agent and keeps
// the peers (other hosts' tunnel endpoints) for the host network loop. The
// remote groups of the desired ports go to the plumber at once, before
// the agent's sync sees the sets whose rules name them.
type peerTap struct {
	agent.Region
	groups func([]flows.Group)
	mu     sync.Mutex
	peers  []schema.Peer
	seen   bool
	kick   chan struct{}
}

func (p *peerTap) Desired(ctx context.Context, index int64, wait time.Duration) (schema.DesiredState, error) {
	ds, err := p.Region.Desired(ctx, index, wait)
	if err != nil {
		return ds, err
	}
	if p.groups != nil {
		p.groups(flows.GroupsOf(ds))
	}
	p.mu.Lock()
	changed := !p.seen || !slices.Equal(p.peers, ds.Peers)
	p.peers, p.seen = slices.Clone(ds.Peers), true
	p.mu.Unlock()
	if changed {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	return ds, nil
}

func (p *peerTap) current() ([]schema.Peer, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.peers), p.seen
}

// hostNetwork is the host-level data path (tunnels, host flows).
type hostNetwork interface {
	SetPeers(peers []schema.Peer)
	SyncHost(ctx context.Context) error
}

// hostNetLoop converges the host-level data path when the peers change and
// every interval (a vswitchd restart loses flows).
func hostNetLoop(ctx context.Context, log *slog.Logger, nw hostNetwork, peers *peerTap, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-peers.kick:
		}
		if ps, ok := peers.current(); ok {
			nw.SetPeers(ps)
		}
		if err := nw.SyncHost(ctx); err != nil && ctx.Err() == nil {
			log.Warn("host network sync failed", "err", err)
		}
	}
}

// advertisedURL is the agent API URL for a listen address: a wildcard
// address is advertised under the host name.
func advertisedURL(addr *net.TCPAddr, host string) string {
	h := addr.IP.String()
	if addr.IP.IsUnspecified() {
		h = host
	}
	return "http://" + net.JoinHostPort(h, strconv.Itoa(addr.Port))
}

// capacity detects what the machine offers; non-zero flags override.
func (m *Main) capacity(dockerRoot string) (hostinfo.Capacity, error) {
	c := m.Config
	detected, err := hostinfo.Detect(dockerRoot)
	if err != nil && (c.VCPUs == 0 || c.MemoryMB == 0 || c.DiskGB == 0) {
		return detected, fmt.Errorf("detect capacity: %w", err)
	}
	if c.VCPUs > 0 {
		detected.VCPUs = c.VCPUs
	}
	if c.MemoryMB > 0 {
		detected.MemoryMB = c.MemoryMB
	}
	if c.DiskGB > 0 {
		detected.DiskGB = c.DiskGB
	}
	return detected, nil
}

// Close releases what Run opened.
func (m *Main) Close() error {
	if m.docker != nil {
		err := m.docker.Close()
		m.docker = nil
		return err
	}
	return nil
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "dev"
}
