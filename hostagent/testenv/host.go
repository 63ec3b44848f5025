package testenv

import (
	"context"
	"fmt"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/client"

	"berth/hostagent/images"
	"berth/hostagent/ledger"
	"berth/hostagent/netplumb"
	"berth/hostagent/probe"
	"berth/hostagent/reconcile"
	"berth/hostagent/runtime"
	"berth/schema"
)

// Host is one agent's drivers and reconciler over real Docker and a
// private OVS, without region: tests call Sync themselves (Converge).
type Host struct {
	Cli     *client.Client
	OVS     *OVS
	Images  *ImageService
	Name    string
	Ledger  string
	Rec     *reconcile.Reconciler
	Runtime *runtime.Docker
	Net     *netplumb.Plumber
	Prober  *probe.Prober
	opts    HostOptions
	stop    func()
}

// HostOptions tune NewHost.
type HostOptions struct {
	// Docker is the daemon to use (default: the machine's, testenv.Docker).
	Docker *client.Client
	// StopGrace is the runtime's default stop grace (default 3s).
	StopGrace time.Duration
	// Config tunes the reconciler (RetryBackoff defaults to an hour).
	Config reconcile.Config
	// Quiet logs at info level, not debug (tests at scale).
	Quiet bool
}

// NewHost starts a reconciler for a fresh host name; everything of that
// host is removed when the test ends.
func NewHost(t *testing.T, opts HostOptions) *Host {
	t.Helper()
	RequireRoot(t)
	cli := opts.Docker
	if cli == nil {
		cli = Docker(t)
	}
	if opts.StopGrace == 0 {
		opts.StopGrace = 3 * time.Second
	}
	if opts.Config.RetryBackoff == 0 {
		opts.Config.RetryBackoff = time.Hour
	}
	h := &Host{
		Cli:    cli,
		OVS:    StartOVS(t),
		Images: NewImageService(t),
		Ledger: filepath.Join(t.TempDir(), "applied.json"),
		opts:   opts,
	}
	// Cleanups run last-first: volumes go after the host's containers.
	t.Cleanup(func() {
		if h.Name != "" {
			removeHostVolumes(t, cli, h.Name)
		}
	})
	h.Name = HostName(t, cli)
	h.Start(t)
	t.Cleanup(func() { h.Stop() })
	return h
}

// Start builds a fresh reconciler, as an agent (re)start does.
func (h *Host) Start(t *testing.T) {
	t.Helper()
	level := slog.LevelDebug
	if h.opts.Quiet {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(TestWriter{t}, &slog.HandlerOptions{Level: level})).With("host", h.Name)
	h.Runtime = runtime.New(h.Cli, log, runtime.Config{Host: h.Name, PauseBinary: PauseBinary(t), StopGrace: h.opts.StopGrace})
	h.Net = netplumb.New(log, netplumb.Config{Host: h.Name, Bridge: h.OVS.Bridge, OVSDB: h.OVS.DB, SwitchNetns: h.OVS.Netns})
	img := images.New(h.Cli, log, images.Config{ImageURL: h.Images.URL, Token: h.Images.Token})
	led, err := ledger.Open(h.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	var rec *reconcile.Reconciler
	h.Prober = probe.New(log, func() { rec.RequestSync() })
	rec = reconcile.New(h.Runtime, h.Net, img, led, h.Prober, log, h.opts.Config)
	h.Rec = rec
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = rec.Run(ctx); close(done) }()
	watched := make(chan struct{})
	go func() { h.Runtime.Watch(ctx, func(string) { rec.RequestSync() }); close(watched) }()
	stopped := false
	h.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		<-done
		<-watched
		h.Prober.Close()
	}
}

// Stop stops the reconciler (an agent shutting down); containers stay.
func (h *Host) Stop() { h.stop() }

// TestWriter sends log lines to t.Log.
type TestWriter struct{ T testing.TB }

func (w TestWriter) Write(p []byte) (int, error) {
	w.T.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Converge syncs until cond holds for the report, and returns that report.
func (h *Host) Converge(t testing.TB, desired []schema.DesiredSet, what string, cond func(map[string]schema.ObservedSet) bool) map[string]schema.ObservedSet {
	t.Helper()
	return h.ConvergeWithin(t, 60*time.Second, desired, what, cond)
}

// ConvergeWithin is Converge with another give-up time (a safety net for
// hung tests at scale, not a speed requirement).
func (h *Host) ConvergeWithin(t testing.TB, limit time.Duration, desired []schema.DesiredSet, what string, cond func(map[string]schema.ObservedSet) bool) map[string]schema.ObservedSet {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(limit)
	for {
		if err := h.Rec.Sync(ctx, desired); err != nil {
			t.Logf("sync: %v", err)
		}
		rep := map[string]schema.ObservedSet{}
		for _, s := range h.Rec.Report().Sets {
			rep[s.ID] = s
		}
		if cond(rep) {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; report: %+v", what, rep)
		}
		select {
		case <-h.Rec.Changed():
		case <-h.Rec.Resync():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Running is a Converge condition: the set runs without error.
func Running(id string) func(map[string]schema.ObservedSet) bool {
	return func(r map[string]schema.ObservedSet) bool {
		s, ok := r[id]
		return ok && s.Exists && s.PowerState == schema.PowerRunning && s.Error == ""
	}
}

// ContainerOf returns the ID of a set's container by name ("infra",
// "app", ...), failing the test if it has none.
func ContainerOf(t testing.TB, s schema.ObservedSet, name string) schema.ObservedContainer {
	t.Helper()
	for _, c := range s.Containers {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("set %s has no %s container: %+v", s.ID, name, s)
	return schema.ObservedContainer{}
}

// NewSet is a plain running set (busybox app, one port on 10.77.0.0/24,
// NET_RAW so that it can ping) numbered n.
func NewSet(t testing.TB, cli *client.Client, n int) schema.DesiredSet {
	id := fmt.Sprintf("%08x-0000-4000-8000-%012x", n, time.Now().UnixNano()&0xffffffffffff)
	return schema.DesiredSet{
		ID:         id,
		Name:       fmt.Sprintf("srv-%d", n),
		Hostname:   fmt.Sprintf("srv-%d", n),
		State:      schema.SetRunning,
		Generation: 1,
		Image:      schema.SetImage{ID: "img-busybox", DockerImageID: BusyboxImage(t, cli)},
		Limits:     schema.SetLimits{VCPUs: 1, MemoryMB: 64},
		NetRaw:     true,
		Ports: []schema.SetPort{{
			ID:        RandomHex(4) + "-1111-4000-8000-" + RandomHex(6),
			NetworkID: "net-1",
			MAC:       fmt.Sprintf("fa:16:3e:00:%02x:%02x", n/256, n%256),
			IP:        fmt.Sprintf("10.77.%d.%d", n/200, 10+n%200),
			PrefixLen: 16,
			Gateway:   "10.77.0.1",
		}},
	}
}

// Leftovers lists everything of the host still on the machine:
// containers, volumes, OVS ports and marked links.
func (h *Host) Leftovers(t testing.TB) []string {
	t.Helper()
	var left []string
	ctx := context.Background()
	cs, err := h.Cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", runtime.LabelHost+"="+h.Name))})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		left = append(left, "container "+c.Names[0])
	}
	vs, err := h.Cli.VolumeList(ctx, volume.ListOptions{Filters: filters.NewArgs(filters.Arg("label", runtime.LabelHost+"="+h.Name))})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs.Volumes {
		left = append(left, "volume "+v.Name)
	}
	for _, l := range strings.Split(strings.TrimSpace(h.OVS.Vsctl(t, "list-ports", h.OVS.Bridge)), "\n") {
		if l != "" {
			left = append(left, "ovs port "+l)
		}
	}
	for _, ns := range []string{h.OVS.Netns, "/proc/self/ns/net"} {
		out, err := exec.Command("nsenter", "--net="+ns, "ip", "-o", "link").CombinedOutput()
		if err != nil {
			t.Fatalf("list links: %v: %s", err, out)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "berth host="+h.Name+" ") {
				left = append(left, "link "+l)
			}
		}
	}
	return left
}

func removeHostVolumes(t testing.TB, cli *client.Client, host string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vs, err := cli.VolumeList(ctx, volume.ListOptions{Filters: filters.NewArgs(filters.Arg("label", runtime.LabelHost+"="+host))})
	if err != nil {
		return
	}
	for _, v := range vs.Volumes {
		if err := cli.VolumeRemove(ctx, v.Name, true); err != nil {
			t.Logf("cleanup: remove volume %s: %v", v.Name, err)
		}
	}
}
