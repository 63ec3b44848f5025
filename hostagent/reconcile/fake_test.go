package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"berth/hostagent/ledger"
	"berth/hostagent/observed"
	"berth/hostagent/setspec"
	"berth/schema"
)

// In-memory drivers for testing the workers without Docker or OVS.

type fakeHost struct {
	mu       sync.Mutex
	next     int
	ctrs     map[string]*observed.Container
	ports    map[string]observed.Port // by port ID
	policy   map[string]string        // applied policy by port ID
	calls    []string
	plumbErr error
	gate     chan struct{} // when set, Images.Ensure waits on it
	// plumbGate, when set, holds Plumb before it answers; hostListed
	// (when set) is closed by a whole-host List once it has its answer,
	// which it returns only when hostListGate is closed.
	plumbGate    chan struct{}
	hostListed   chan struct{}
	hostListGate chan struct{}
}

var (
	_ Runtime = (*fakeRuntime)(nil)
	_ Network = (*fakeNetwork)(nil)
	_ Images  = (*fakeImages)(nil)
	_ Ledger  = (*fakeLedger)(nil)
)

func newFakeHost() *fakeHost {
	return &fakeHost{ctrs: map[string]*observed.Container{}, ports: map[string]observed.Port{}, policy: map[string]string{}}
}

func (h *fakeHost) record(format string, args ...any) {
	h.calls = append(h.calls, fmt.Sprintf(format, args...))
}

func (h *fakeHost) callCount(prefix string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.calls {
		if len(c) >= len(prefix) && c[:len(prefix)] == prefix {
			n++
		}
	}
	return n
}

type fakeRuntime struct{ h *fakeHost }

func (f fakeRuntime) List(_ context.Context, setID string) ([]observed.Container, error) {
	f.h.mu.Lock()
	var out []observed.Container
	for _, c := range f.h.ctrs {
		if setID == "" || c.SetID == setID {
			out = append(out, *c)
		}
	}
	listed, gate := f.h.hostListed, f.h.hostListGate
	if setID == "" && listed != nil {
		f.h.hostListed, f.h.hostListGate = nil, nil
	}
	f.h.mu.Unlock()
	if setID == "" && listed != nil {
		close(listed)
		<-gate
	}
	return out, nil
}

func (f fakeRuntime) Inspect(_ context.Context, id string) (observed.Container, error) {
	f.h.mu.Lock()
	defer f.h.mu.Unlock()
	c, ok := f.h.ctrs[id]
	if !ok {
		return observed.Container{}, errors.New("no such container")
	}
	return *c, nil
}

func (f fakeRuntime) create(set schema.DesiredSet, role, member, spec string) (string, error) {
	f.h.mu.Lock()
	defer f.h.mu.Unlock()
	f.h.next++
	id := fmt.Sprintf("%s-%s-%d", set.ID, member, f.h.next)
	f.h.ctrs[id] = &observed.Container{ID: id, SetID: set.ID, Role: role, Member: member, Spec: spec, Generation: set.Generation, State: "created"}
	f.h.record("create %s %s", member, set.ID)
	return id, nil
}

func (f fakeRuntime) CreateInfra(_ context.Context, set schema.DesiredSet) (string, error) {
	return f.create(set, observed.RoleInfra, observed.RoleInfra, "")
}

func (f fakeRuntime) CreateMember(_ context.Context, set schema.DesiredSet, m setspec.Member, _ string) (string, error) {
	id, err := f.create(set, m.Role, m.Name, m.Spec)
	f.h.mu.Lock()
	f.h.ctrs[id].Limits = m.Limits
	f.h.ctrs[id].Image = m.Image.DockerImageID
	f.h.mu.Unlock()
	return id, err
}

func (f fakeRuntime) ListVolumes(context.Context, string) ([]observed.Volume, error) { return nil, nil }
func (f fakeRuntime) EnsureVolume(context.Context, schema.DesiredSet, string) (bool, error) {
	return false, nil
}
func (f fakeRuntime) RemoveVolume(context.Context, string) error { return nil }
func (f fakeRuntime) RunUserData(context.Context, string) error  { return nil }
func (f fakeRuntime) Kill(ctx context.Context, id string) error  { return f.Stop(ctx, id, 0) }
func (f fakeRuntime) Pause(_ context.Context, id string) error   { return f.setPaused(id, true) }
func (f fakeRuntime) Unpause(_ context.Context, id string) error { return f.setPaused(id, false) }
func (f fakeRuntime) setPaused(id string, p bool) error {
	f.h.mu.Lock()
	defer f.h.mu.Unlock()
	c, ok := f.h.ctrs[id]
	if !ok {
		return errors.New("no such container")
	}
	c.Paused = p
	f.h.record("pause=%v %s", p, c.Member)
	return nil
}

func (f fakeRuntime) Update(_ context.Context, id string, l schema.SetLimits) error {
	f.h.mu.Lock()
	defer f.h.mu.Unlock()
	c, ok := f.h.ctrs[id]
	if !ok {
		return errors.New("no such container")
	}
	c.Limits = l
	f.h.record("update %s", c.Member)
	return nil
}

func (f fakeRuntime) Start(_ context.Context, id string) error {
	f.h.mu.Lock()
	defer f.h.mu.Unlock()
	c, ok := f.h.ctrs[id]
	if !ok {
		return errors.New("no such container")
	}
	c.Running, c.State, c.Pid = true, "running", 100+f.h.next
	f.h.record("start %s", c.Role)
	return nil
}

func (f fakeRuntime) Stop(_ context.Context, id string, _ time.Duration) error {
	f.h.mu.Lock()
	defer f.h.mu.Unlock()
	if c, ok := f.h.ctrs[id]; ok {
		c.Running, c.State, c.Pid = false, "exited", 0
		f.h.record("stop %s", c.Role)
	}
	return nil
}

func (f fakeRuntime) Remove(_ context.Context, id string) error {
	f.h.mu.Lock()
	defer f.h.mu.Unlock()
	if c, ok := f.h.ctrs[id]; ok {
		f.h.record("remove %s", c.Role)
	}
	delete(f.h.ctrs, id)
	return nil
}

type fakeNetwork struct{ h *fakeHost }

func (f fakeNetwork) List(_ context.Context, setID string) ([]observed.Port, error) {
	f.h.mu.Lock()
	defer f.h.mu.Unlock()
	var out []observed.Port
	for _, p := range f.h.ports {
		if setID == "" || p.SetID == setID {
			out = append(out, p)
		}
	}
	return out, nil
}

func (f fakeNetwork) Attached(_ context.Context, _ int, port schema.SetPort, _ int) (bool, error) {
	f.h.mu.Lock()
	defer f.h.mu.Unlock()
	_, ok := f.h.ports[port.ID]
	return ok, nil
}

func (f fakeNetwork) Plumb(_ context.Context, setID string, _ int, port schema.SetPort, _ int) error {
	f.h.mu.Lock()
	gate := f.h.plumbGate
	f.h.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.h.mu.Lock()
	defer f.h.mu.Unlock()
	if f.h.plumbErr != nil {
		return f.h.plumbErr
	}
	f.h.ports[port.ID] = observed.Port{SetID: setID, PortID: port.ID, InSwitch: true, LinkPresent: true}
	f.h.policy[port.ID] = policyKey(port)
	f.h.record("plumb %s", port.ID)
	return nil
}

// policyKey is what the fake data path "applies" of a port.
func policyKey(p schema.SetPort) string {
	return fmt.Sprintf("%v %v %+v %d", p.PortSecurity, p.Rules, p.Bandwidth, p.MTU)
}

func (f fakeNetwork) Policy(_ context.Context, _ int, port schema.SetPort, _ int) (bool, error) {
	f.h.mu.Lock()
	defer f.h.mu.Unlock()
	return f.h.policy[port.ID] == policyKey(port), nil
}

func (f fakeNetwork) ApplyPolicy(_ context.Context, _ string, _ int, port schema.SetPort, _ int) error {
	f.h.mu.Lock()
	defer f.h.mu.Unlock()
	if _, ok := f.h.ports[port.ID]; !ok {
		return errors.New("port not plugged")
	}
	f.h.policy[port.ID] = policyKey(port)
	f.h.record("policy %s", port.ID)
	return nil
}

func (f fakeNetwork) Unplumb(_ context.Context, p observed.Port) error {
	f.h.mu.Lock()
	defer f.h.mu.Unlock()
	delete(f.h.ports, p.PortID)
	delete(f.h.policy, p.PortID)
	f.h.record("unplumb %s", p.PortID)
	return nil
}

type fakeImages struct{ h *fakeHost }

func (f fakeImages) Ensure(ctx context.Context, img schema.SetImage) error {
	f.h.mu.Lock()
	gate := f.h.gate
	f.h.record("ensure %s", img.ID)
	f.h.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

type fakeLedger struct {
	mu      sync.Mutex
	entries map[string]ledger.Entry
}

func (l *fakeLedger) Get(id string) ledger.Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.entries[id].Clone()
}
func (l *fakeLedger) Put(id string, e ledger.Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.entries[id] = e.Clone()
	return nil
}
func (l *fakeLedger) Forget(id string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.entries, id)
	return nil
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time          { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

func newFakeReconciler(t *testing.T, cfg Config) (*Reconciler, *fakeHost, *clock) {
	t.Helper()
	h := newFakeHost()
	r := New(fakeRuntime{h}, fakeNetwork{h}, fakeImages{h}, &fakeLedger{entries: map[string]ledger.Entry{}}, nil,
		slog.New(slog.NewTextHandler(io.Discard, nil)), cfg)
	clk := &clock{now: time.Unix(1_000_000, 0)}
	r.now = clk.Now
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r, h, clk
}

func fakeSet(state string, gen int64) schema.DesiredSet {
	return schema.DesiredSet{
		ID: "s1", State: state, Generation: gen,
		Image: schema.SetImage{ID: "img", DockerImageID: "sha256:x"},
		Ports: []schema.SetPort{{ID: "p1", MAC: "fa:16:3e:00:00:01", IP: "10.0.0.2", PrefixLen: 24}},
	}
}

// settle syncs until the report for s1 satisfies cond.
func settle(t *testing.T, r *Reconciler, desired []schema.DesiredSet, cond func(schema.ObservedSet, bool) bool) schema.ObservedSet {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := r.Sync(context.Background(), desired); err != nil {
			t.Fatal(err)
		}
		var s schema.ObservedSet
		found := false
		for _, x := range r.Report().Sets {
			if x.ID == "s1" {
				s, found = x, true
			}
		}
		if cond(s, found) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out; last status %+v (found %v)", s, found)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNewerDesiredReplacesPending(t *testing.T) {
	r, h, _ := newFakeReconciler(t, Config{})
	h.gate = make(chan struct{})
	ctx := context.Background()

	if err := r.Sync(ctx, []schema.DesiredSet{fakeSet(schema.SetRunning, 1)}); err != nil {
		t.Fatal(err)
	}
	// The worker is now blocked inside create (image ensure).
	deadline := time.Now().Add(5 * time.Second)
	for h.callCount("ensure") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("worker never started")
		}
		time.Sleep(time.Millisecond)
	}
	for _, d := range []schema.DesiredSet{fakeSet(schema.SetStopped, 2), fakeSet(schema.SetRunning, 3), fakeSet(schema.SetDeleted, 4)} {
		if err := r.Sync(ctx, []schema.DesiredSet{d}); err != nil {
			t.Fatal(err)
		}
	}
	close(h.gate)
	s := settle(t, r, []schema.DesiredSet{fakeSet(schema.SetDeleted, 4)}, func(s schema.ObservedSet, ok bool) bool {
		return ok && !s.Exists && s.Generation == 4
	})
	if s.Error != "" {
		t.Errorf("error = %q", s.Error)
	}
	// The delete removes app and infra with force (a KILL), without a
	// stop; a stop would be the stale "stopped" state acted on.
	if n := h.callCount("stop"); n != 0 {
		t.Errorf("stop calls = %d, want 0 (the stale stopped/running states were skipped): %v", n, h.calls)
	}
	if n := h.callCount("remove"); n != 2 {
		t.Errorf("remove calls = %d, want 2 (app and infra): %v", n, h.calls)
	}
	if n := h.callCount("create"); n != 2 {
		t.Errorf("create calls = %d, want 2 (one set): %v", n, h.calls)
	}
}

func TestCreateFailureUndoesAndBacksOff(t *testing.T) {
	r, h, clk := newFakeReconciler(t, Config{RetryBackoff: time.Minute})
	h.plumbErr = errors.New("boom")
	want := []schema.DesiredSet{fakeSet(schema.SetRunning, 1)}

	s := settle(t, r, want, func(s schema.ObservedSet, ok bool) bool { return ok && s.Error != "" })
	if s.Exists || s.Generation != 1 || s.PowerState != schema.PowerNoState {
		t.Errorf("status after failed create = %+v", s)
	}
	if len(h.ctrs) != 0 || len(h.ports) != 0 {
		t.Errorf("left after failed create: %v %v", h.ctrs, h.ports)
	}
	if got, want := h.calls, []string{"ensure img", "create infra s1", "create app s1", "start infra", "remove app", "remove infra"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("calls = %v, want %v", got, want)
	}

	for range 5 {
		if err := r.Sync(context.Background(), want); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n := h.callCount("create infra"); n != 1 {
		t.Errorf("create attempts within backoff = %d, want 1", n)
	}

	h.mu.Lock()
	h.plumbErr = nil
	h.mu.Unlock()
	clk.Advance(2 * time.Minute)
	s = settle(t, r, want, func(s schema.ObservedSet, ok bool) bool { return ok && s.PowerState == schema.PowerRunning })
	if s.Error != "" || s.Generation != 1 {
		t.Errorf("status after successful retry = %+v, want no error, generation 1", s)
	}
}

func TestOrphanGrace(t *testing.T) {
	r, h, clk := newFakeReconciler(t, Config{OrphanGrace: time.Minute})
	settle(t, r, []schema.DesiredSet{fakeSet(schema.SetRunning, 1)}, func(s schema.ObservedSet, ok bool) bool {
		return ok && s.PowerState == schema.PowerRunning
	})
	for range 3 {
		if err := r.Sync(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n := h.callCount("remove"); n != 0 {
		t.Fatalf("orphan removed within its grace period: %v", h.calls)
	}
	clk.Advance(2 * time.Minute)
	settle(t, r, nil, func(_ schema.ObservedSet, ok bool) bool { return !ok })
	if len(h.ctrs) != 0 || len(h.ports) != 0 {
		t.Errorf("orphan left: %v %v", h.ctrs, h.ports)
	}
}

func TestOrphanDryRun(t *testing.T) {
	r, h, _ := newFakeReconciler(t, Config{DryRunOrphans: true})
	settle(t, r, []schema.DesiredSet{fakeSet(schema.SetRunning, 1)}, func(s schema.ObservedSet, ok bool) bool {
		return ok && s.PowerState == schema.PowerRunning
	})
	for range 3 {
		if err := r.Sync(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if n := h.callCount("remove"); n != 0 {
		t.Errorf("dry run removed the orphan: %v", h.calls)
	}
}

// A new generation that only changes a port's policy (rules, bandwidth) is
// applied live: no replumb, no container touched.
func TestPolicyChangeIsLive(t *testing.T) {
	r, h, _ := newFakeReconciler(t, Config{})
	d := fakeSet(schema.SetRunning, 1)
	settle(t, r, []schema.DesiredSet{d}, func(s schema.ObservedSet, ok bool) bool {
		return ok && s.Generation == 1 && s.PowerState == schema.PowerRunning
	})
	plumbs, creates := h.callCount("plumb "), h.callCount("create ")

	d.Generation = 2
	d.Ports[0].Bandwidth = &schema.SetBandwidth{InboundAverageKBps: 1000}
	d.Ports[0].Rules = []schema.SetRule{{Direction: "ingress", Protocol: "tcp", PortMin: 22, PortMax: 22}}
	settle(t, r, []schema.DesiredSet{d}, func(s schema.ObservedSet, ok bool) bool { return ok && s.Generation == 2 })
	if got := h.callCount("policy p1"); got != 1 {
		t.Errorf("policy applied %d times, want 1", got)
	}
	if h.callCount("plumb ") != plumbs || h.callCount("create ") != creates {
		t.Errorf("calls %v: a policy change must not replumb or recreate", h.calls)
	}
	// Drift (flows lost to a vswitchd restart) is repaired by the next sync.
	h.mu.Lock()
	h.policy["p1"] = "lost"
	h.mu.Unlock()
	settle(t, r, []schema.DesiredSet{d}, func(schema.ObservedSet, bool) bool { return h.callCount("policy p1") == 2 })
}

// A Sync that observed the host while a worker was creating a set, and
// got the lock only after the worker had failed and undone everything,
// must not report its stale view (half-made containers) over the
// worker's fresh one.
func TestStaleSyncDoesNotOverwriteWorker(t *testing.T) {
	r, h, _ := newFakeReconciler(t, Config{RetryBackoff: time.Minute})
	h.plumbErr, h.plumbGate = errors.New("boom"), make(chan struct{})
	want := []schema.DesiredSet{fakeSet(schema.SetRunning, 1)}
	ctx := context.Background()
	if err := r.Sync(ctx, want); err != nil {
		t.Fatal(err)
	}
	// The worker has made the containers and waits in Plumb.
	deadline := time.Now().Add(5 * time.Second)
	for h.callCount("start infra") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("worker never reached plumbing")
		}
		time.Sleep(time.Millisecond)
	}
	h.mu.Lock()
	listed, gate := make(chan struct{}), make(chan struct{})
	h.hostListed, h.hostListGate = listed, gate
	h.mu.Unlock()
	synced := make(chan error, 1)
	go func() { synced <- r.Sync(ctx, want) }()
	<-listed // this Sync saw the half-made set

	close(h.plumbGate) // the worker fails and undoes
	for {
		if s := r.Report().Sets; len(s) == 1 && s[0].Error != "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("worker never reported its failure")
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	if err := <-synced; err != nil {
		t.Fatal(err)
	}
	if s := r.Report().Sets[0]; s.Exists || len(s.Containers) != 0 || s.Error == "" {
		t.Errorf("status after a stale sync = %+v, want the worker's: nothing exists, the error", s)
	}
}
