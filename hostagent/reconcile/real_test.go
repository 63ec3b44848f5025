package reconcile_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"berth/hostagent/runtime"
	"berth/hostagent/testenv"
	"berth/schema"
)

// realEnv is a reconciler over real Docker and a private OVS.
type realEnv struct {
	*testenv.Host
	cli  *client.Client
	ovs  *testenv.OVS
	imgs *testenv.ImageService
	rec  interface {
		Sync(context.Context, []schema.DesiredSet) error
		Report() schema.HostReport
	}
}

func newRealEnv(t *testing.T) *realEnv {
	t.Helper()
	h := testenv.NewHost(t, testenv.HostOptions{})
	return &realEnv{Host: h, cli: h.Cli, ovs: h.OVS, imgs: h.Images, rec: h.Rec}
}

// restart stops the reconciler and starts a fresh one, as an agent
// restart does.
func (e *realEnv) restart(t *testing.T) {
	e.Stop()
	e.Start(t)
	e.rec = e.Rec
}

func (e *realEnv) converge(t *testing.T, desired []schema.DesiredSet, what string, cond func(map[string]schema.ObservedSet) bool) map[string]schema.ObservedSet {
	t.Helper()
	return e.Converge(t, desired, what, cond)
}

func (e *realEnv) hostLeftovers(t *testing.T) []string { return e.Leftovers(t) }

func newSet(t *testing.T, cli *client.Client, n int) schema.DesiredSet {
	return testenv.NewSet(t, cli, n)
}

var running = testenv.Running

func appID(t *testing.T, s schema.ObservedSet) string {
	t.Helper()
	return testenv.ContainerOf(t, s, "app").ID
}

func ping(t *testing.T, cli *client.Client, from string, ip string) {
	t.Helper()
	out, code := testenv.Exec(t, cli, from, "ping", "-c", "1", "-W", "3", ip)
	if code != 0 {
		t.Errorf("ping %s from %.12s: exit %d\n%s", ip, from, code, out)
	}
}

func TestSetLifecycle(t *testing.T) {
	e := newRealEnv(t)
	a, b := newSet(t, e.cli, 1), newSet(t, e.cli, 2)

	start := time.Now()
	rep := e.converge(t, []schema.DesiredSet{a}, "set a running", running(a.ID))
	t.Logf("set create, end to end: %s", time.Since(start))
	appA := appID(t, rep[a.ID])

	t.Run("app sees eth0 with its ip", func(t *testing.T) {
		out, code := testenv.Exec(t, e.cli, appA, "ip", "-o", "addr", "show", "dev", "eth0")
		if code != 0 || !strings.Contains(out, a.Ports[0].IP+"/16") {
			t.Errorf("ip addr in app: %q (exit %d), want %s/16", out, code, a.Ports[0].IP)
		}
		out, _ = testenv.Exec(t, e.cli, appA, "hostname")
		if strings.TrimSpace(out) != "srv-1" {
			t.Errorf("hostname in app = %q, want srv-1", out)
		}
		if rep[a.ID].Generation != 1 {
			t.Errorf("reported generation = %d, want 1", rep[a.ID].Generation)
		}
	})

	both := []schema.DesiredSet{a, b}
	rep = e.converge(t, both, "sets a and b running", func(r map[string]schema.ObservedSet) bool { return running(a.ID)(r) && running(b.ID)(r) })
	appB := appID(t, rep[b.ID])
	t.Run("two sets on one bridge ping each other", func(t *testing.T) {
		ping(t, e.cli, appA, b.Ports[0].IP)
		ping(t, e.cli, appB, a.Ports[0].IP)
	})

	t.Run("stop", func(t *testing.T) {
		a.State, a.Generation = schema.SetStopped, 2
		rep = e.converge(t, []schema.DesiredSet{a, b}, "set a shut down", func(r map[string]schema.ObservedSet) bool {
			s := r[a.ID]
			return s.PowerState == schema.PowerShutdown && s.Generation == 2
		})
		for _, c := range rep[a.ID].Containers {
			if c.State != "exited" {
				t.Errorf("%s container state = %s after stop, want exited", c.Role, c.State)
			}
		}
		if strings.Contains(e.ovs.Vsctl(t, "list-ports", e.ovs.Bridge), "bv"+strings.ReplaceAll(a.Ports[0].ID, "-", "")[:11]) {
			t.Error("stopped set still has its OVS port")
		}
	})

	t.Run("start replumbs", func(t *testing.T) {
		a.State, a.Generation = schema.SetRunning, 3
		rep = e.converge(t, []schema.DesiredSet{a, b}, "set a running again", func(r map[string]schema.ObservedSet) bool {
			return running(a.ID)(r) && r[a.ID].Generation == 3
		})
		if got := appID(t, rep[a.ID]); got != appA {
			t.Errorf("app container after start = %s, want the same %s", got, appA)
		}
		ping(t, e.cli, appA, b.Ports[0].IP)
		ping(t, e.cli, appB, a.Ports[0].IP)
	})

	t.Run("delete leaves nothing", func(t *testing.T) {
		a.State, a.Generation = schema.SetDeleted, 4
		b.State, b.Generation = schema.SetDeleted, 2
		e.converge(t, []schema.DesiredSet{a, b}, "both sets gone", func(r map[string]schema.ObservedSet) bool {
			return !r[a.ID].Exists && !r[b.ID].Exists && r[a.ID].Generation == 4 && r[b.ID].Generation == 2 &&
				r[a.ID].PowerState == schema.PowerNoState
		})
		if left := e.hostLeftovers(t); len(left) > 0 {
			t.Errorf("left after delete: %v", left)
		}
		// Region drops confirmed-deleted sets: they leave the report.
		e.converge(t, nil, "report empty", func(r map[string]schema.ObservedSet) bool { return len(r) == 0 })
	})
}

func TestCreateFailureUndoes(t *testing.T) {
	e := newRealEnv(t)
	s := newSet(t, e.cli, 3)
	s.Ports[0].Gateway = "192.168.200.1" // off-subnet: fails after both containers exist and infra runs
	rep := e.converge(t, []schema.DesiredSet{s}, "create error", func(r map[string]schema.ObservedSet) bool {
		return r[s.ID].Error != ""
	})
	got := rep[s.ID]
	t.Logf("reported error: %s", got.Error)
	if got.Exists || got.Generation != 1 || len(got.Containers) != 0 {
		t.Errorf("after failed create: %+v, want nothing existing, generation 1", got)
	}
	if !strings.Contains(got.Error, "route") {
		t.Errorf("error %q does not say what failed", got.Error)
	}
	if left := e.hostLeftovers(t); len(left) > 0 {
		t.Errorf("left after failed create: %v", left)
	}
	// Backoff: the next syncs do not retry the same generation at once.
	for range 3 {
		if err := e.rec.Sync(context.Background(), []schema.DesiredSet{s}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if left := e.hostLeftovers(t); len(left) > 0 {
		t.Errorf("retried within backoff: %v", left)
	}
	// A fixed desired state (new generation) is tried at once.
	s.Ports[0].Gateway, s.Generation = "10.77.0.1", 2
	e.converge(t, []schema.DesiredSet{s}, "fixed set running", running(s.ID))
}

func TestRestartReadopts(t *testing.T) {
	e := newRealEnv(t)
	s := newSet(t, e.cli, 4)
	rep := e.converge(t, []schema.DesiredSet{s}, "running", running(s.ID))
	before := rep[s.ID].Containers
	pids := map[string]int{}
	for _, c := range before {
		pids[c.ID] = pidOf(t, e, c.ID)
	}

	e.restart(t) // a fresh agent process: nothing in memory
	start := time.Now()
	rep = e.converge(t, []schema.DesiredSet{s}, "re-adopted", running(s.ID))
	t.Logf("re-adopt took %s", time.Since(start))
	after := rep[s.ID].Containers
	if len(after) != len(before) {
		t.Fatalf("containers after restart = %+v, before %+v", after, before)
	}
	for i := range before {
		if before[i].ID != after[i].ID || !before[i].StartedAt.Equal(after[i].StartedAt) || before[i].RestartCount != after[i].RestartCount {
			t.Errorf("%s container changed across agent restart: %+v → %+v", before[i].Role, before[i], after[i])
		}
		if pid := pidOf(t, e, after[i].ID); pid != pids[after[i].ID] {
			t.Errorf("%s container's PID changed across agent restart: %d → %d", after[i].Role, pids[after[i].ID], pid)
		}
	}
	ofport := e.ovs.Vsctl(t, "get", "Interface", "bv"+strings.ReplaceAll(s.Ports[0].ID, "-", "")[:11], "ofport")
	time.Sleep(500 * time.Millisecond)
	e.converge(t, []schema.DesiredSet{s}, "still running", running(s.ID))
	if again := e.ovs.Vsctl(t, "get", "Interface", "bv"+strings.ReplaceAll(s.Ports[0].ID, "-", "")[:11], "ofport"); again != ofport {
		t.Errorf("port re-plumbed after restart: ofport %s → %s", ofport, again)
	}
}

func TestDrift(t *testing.T) {
	e := newRealEnv(t)
	s := newSet(t, e.cli, 5)
	rep := e.converge(t, []schema.DesiredSet{s}, "running", running(s.ID))
	app := appID(t, rep[s.ID])
	ctx := context.Background()

	t.Run("killed outside berth is reported, not restarted", func(t *testing.T) {
		if err := e.cli.ContainerKill(ctx, app, "KILL"); err != nil {
			t.Fatal(err)
		}
		e.converge(t, []schema.DesiredSet{s}, "crashed", func(r map[string]schema.ObservedSet) bool {
			return r[s.ID].PowerState == schema.PowerCrashed
		})
		time.Sleep(300 * time.Millisecond)
		if err := e.rec.Sync(ctx, []schema.DesiredSet{s}); err != nil {
			t.Fatal(err)
		}
		j, err := e.cli.ContainerInspect(ctx, app)
		if err != nil || j.State.Running {
			t.Errorf("app restarted by the agent at the same generation (running=%v, %v)", j.State != nil && j.State.Running, err)
		}
	})

	t.Run("region stops it: stop path", func(t *testing.T) {
		s.State, s.Generation = schema.SetStopped, 2
		e.converge(t, []schema.DesiredSet{s}, "shutdown", func(r map[string]schema.ObservedSet) bool {
			return r[s.ID].PowerState == schema.PowerShutdown && r[s.ID].Generation == 2
		})
	})

	t.Run("started outside berth while stopped is stopped again", func(t *testing.T) {
		infra := ""
		for _, c := range e.rec.Report().Sets[0].Containers {
			if c.Name == "infra" {
				infra = c.ID
			}
		}
		for _, id := range []string{infra, app} {
			if err := e.cli.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		e.converge(t, []schema.DesiredSet{s}, "stopped again", func(r map[string]schema.ObservedSet) bool {
			j, err := e.cli.ContainerInspect(ctx, app)
			return err == nil && !j.State.Running && r[s.ID].PowerState == schema.PowerShutdown
		})
	})
}

func TestOrphanIsReaped(t *testing.T) {
	e := newRealEnv(t)
	s := newSet(t, e.cli, 6)
	e.converge(t, []schema.DesiredSet{s}, "running", running(s.ID))
	// Region forgot the set (e.g. deleted while the agent was down).
	e.converge(t, []schema.DesiredSet{}, "orphan reaped", func(r map[string]schema.ObservedSet) bool {
		_, known := r[s.ID]
		return !known
	})
	if left := e.hostLeftovers(t); len(left) > 0 {
		t.Errorf("orphan left: %v", left)
	}
}

func TestImageLoadedFromImagesvc(t *testing.T) {
	e := newRealEnv(t)
	id, _ := testenv.UniqueBusyboxImage(t, e.cli)
	e.imgs.Add(t, e.cli, "img-unique", id)
	if _, err := e.cli.ImageRemove(context.Background(), id, image.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	s := newSet(t, e.cli, 7)
	s.Image = schema.SetImage{ID: "img-unique", DockerImageID: id}
	e.converge(t, []schema.DesiredSet{s}, "running from a loaded image", running(s.ID))
	if e.imgs.Fetches.Load() != 1 {
		t.Errorf("imagesvc fetches = %d, want 1", e.imgs.Fetches.Load())
	}
}

// TestForeignContainersUntouched: containers without Berth's labels for
// this host — a plain one, another host's, one with only some of the
// labels, one squatting the name a set's infra would get — are never
// stopped, restarted or removed, through creates, orphan reaping and
// deletes; the set whose name is taken fails with an error instead.
func TestForeignContainersUntouched(t *testing.T) {
	e := newRealEnv(t)
	ctx := context.Background()
	s, blocked := newSet(t, e.cli, 8), newSet(t, e.cli, 9)
	img := s.Image.DockerImageID
	foreign := map[string]string{}
	for name, c := range map[string]struct {
		labels map[string]string
		name   string
	}{
		"plain":         {nil, ""},
		"other host":    {map[string]string{runtime.LabelManaged: "true", runtime.LabelHost: "not-" + e.Name, runtime.LabelSet: s.ID, runtime.LabelRole: "infra"}, ""},
		"some labels":   {map[string]string{runtime.LabelHost: e.Name, runtime.LabelSet: s.ID, runtime.LabelRole: "app"}, ""},
		"name squatter": {nil, runtime.ContainerName(e.Name, blocked.ID, "infra")},
	} {
		resp, err := e.cli.ContainerCreate(ctx, &container.Config{Image: img, Labels: c.labels}, &container.HostConfig{NetworkMode: "none"}, nil, nil, c.name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.cli.ContainerRemove(context.Background(), resp.ID, container.RemoveOptions{Force: true}) })
		if err := e.cli.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
			t.Fatal(err)
		}
		foreign[name] = resp.ID
	}
	startedAt := map[string]string{}
	for name, id := range foreign {
		j, err := e.cli.ContainerInspect(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		startedAt[name] = j.State.StartedAt
	}
	untouched := func(when string) {
		t.Helper()
		for name, id := range foreign {
			j, err := e.cli.ContainerInspect(ctx, id)
			if err != nil {
				t.Errorf("%s: foreign container %q: %v", when, name, err)
				continue
			}
			if !j.State.Running || j.State.StartedAt != startedAt[name] {
				t.Errorf("%s: foreign container %q touched: running=%v started %s (was %s)", when, name, j.State.Running, j.State.StartedAt, startedAt[name])
			}
		}
	}

	rep := e.converge(t, []schema.DesiredSet{s, blocked}, "s running, blocked failed", func(r map[string]schema.ObservedSet) bool {
		return running(s.ID)(r) && r[blocked.ID].Error != ""
	})
	t.Logf("set whose infra name is taken: %s", rep[blocked.ID].Error)
	if len(rep[s.ID].Containers) != 2 {
		t.Errorf("set s containers = %+v, want its own infra and app only", rep[s.ID].Containers)
	}
	untouched("after create")

	e.converge(t, []schema.DesiredSet{}, "everything of the host reaped", func(r map[string]schema.ObservedSet) bool { return len(r) == 0 })
	for _, l := range e.hostLeftovers(t) {
		// The half-labelled foreign container carries this host's label.
		if j, err := e.cli.ContainerInspect(ctx, foreign["some labels"]); err != nil || l != "container "+j.Name {
			t.Errorf("left after reaping: %s", l)
		}
	}
	untouched("after orphan reaping")
	e.restart(t)
	e.converge(t, []schema.DesiredSet{}, "a fresh agent", func(r map[string]schema.ObservedSet) bool { return len(r) == 0 })
	time.Sleep(300 * time.Millisecond)
	untouched("after an agent restart")
}

func pidOf(t *testing.T, e *realEnv, id string) int {
	t.Helper()
	j, err := e.cli.ContainerInspect(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j.State.Pid
}

// TestDeleteWhileAgentDown is the agent's half of R4: while the agent is
// down one set becomes desired deleted and another leaves the desired
// state altogether (region finished its delete at once); when the agent
// returns, both are reaped — containers, OVS ports, links — and the sets
// that stay are untouched.
func TestDeleteWhileAgentDown(t *testing.T) {
	e := newRealEnv(t)
	del, gone, keep := newSet(t, e.cli, 23), newSet(t, e.cli, 24), newSet(t, e.cli, 25)
	rep := e.converge(t, []schema.DesiredSet{del, gone, keep}, "running", func(r map[string]schema.ObservedSet) bool {
		return running(del.ID)(r) && running(gone.ID)(r) && running(keep.ID)(r)
	})
	kept := rep[keep.ID].Containers

	e.Stop()
	del.State, del.Generation = schema.SetDeleted, 2
	e.Start(t)
	e.rec = e.Rec
	desired := []schema.DesiredSet{del, keep}
	e.converge(t, desired, "deleted and forgotten sets reaped", func(r map[string]schema.ObservedSet) bool {
		_, known := r[gone.ID]
		return !known && !r[del.ID].Exists && r[del.ID].Generation == 2 && running(keep.ID)(r)
	})
	rep = e.converge(t, []schema.DesiredSet{keep}, "only keep left", func(r map[string]schema.ObservedSet) bool {
		return len(r) == 1 && running(keep.ID)(r)
	})
	for i, c := range rep[keep.ID].Containers {
		if c.ID != kept[i].ID || !c.StartedAt.Equal(kept[i].StartedAt) {
			t.Errorf("kept set's %s container changed: %+v → %+v", c.Name, kept[i], c)
		}
	}
	keep.State, keep.Generation = schema.SetDeleted, 2
	e.converge(t, []schema.DesiredSet{keep}, "keep deleted", func(r map[string]schema.ObservedSet) bool { return !r[keep.ID].Exists })
	if left := e.hostLeftovers(t); len(left) != 0 {
		t.Errorf("left after the agent came back: %v", left)
	}
}
