package agent_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"berth/hostagent/agent"
	"berth/hostagent/fakeregion"
	"berth/schema"
)

// echoReconciler reports every desired set as converged at once.
type echoReconciler struct {
	mu      sync.Mutex
	syncs   int
	last    []schema.DesiredSet
	changed chan struct{}
}

var _ agent.Reconciler = (*echoReconciler)(nil)

func (e *echoReconciler) Run(ctx context.Context) error { <-ctx.Done(); return nil }

func (e *echoReconciler) Sync(_ context.Context, desired []schema.DesiredSet) error {
	e.mu.Lock()
	e.syncs++
	e.last = desired
	e.mu.Unlock()
	select {
	case e.changed <- struct{}{}:
	default:
	}
	return nil
}

func (e *echoReconciler) Report() schema.HostReport {
	e.mu.Lock()
	defer e.mu.Unlock()
	rep := schema.HostReport{Sets: []schema.ObservedSet{}}
	for _, d := range e.last {
		power := schema.PowerShutdown
		if d.State == schema.SetRunning {
			power = schema.PowerRunning
		}
		rep.Sets = append(rep.Sets, schema.ObservedSet{ID: d.ID, Generation: d.Generation, Exists: d.State != schema.SetDeleted, PowerState: power})
	}
	return rep
}

func (e *echoReconciler) Changed() <-chan struct{} { return e.changed }

func (e *echoReconciler) Resync() <-chan struct{} { return nil }

func runAgent(t *testing.T, region *fakeregion.Region, host string, cfg agent.Config) *echoReconciler {
	t.Helper()
	rec := &echoReconciler{changed: make(chan struct{}, 1)}
	cfg.Host = host
	a := agent.New(agent.NewClient(region.URL, host, region.Token, nil), rec, slog.New(slog.NewTextHandler(io.Discard, nil)), cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return rec
}

func TestAgentLoop(t *testing.T) {
	region := fakeregion.New(t, "secret")
	region.FailRegistrations(2)
	rec := runAgent(t, region, "h1", agent.Config{
		Register:          schema.HostRegister{VCPUs: 4, MemoryMB: 2048, DiskGB: 10},
		SyncInterval:      time.Hour, // only desired-state changes drive syncs here
		HeartbeatInterval: 200 * time.Millisecond,
		Wait:              2 * time.Second,
	})

	// Registration is retried until region answers, then the first (empty)
	// desired state syncs and is reported.
	region.WaitReport(t, "h1", 10*time.Second, "first report", func(r schema.HostReport) bool { return r.Sets != nil })
	reg, registers, _, _ := region.Host("h1")
	if reg.VCPUs != 4 || reg.MemoryMB != 2048 || registers != 1 {
		t.Errorf("registration = %+v (%d times), want capacity 4/2048 once", reg, registers)
	}

	// A desired-state change reaches the reconciler and its result is
	// reported promptly (long before the sync interval).
	set := schema.DesiredSet{ID: "s1", State: schema.SetRunning, Generation: 1}
	start := time.Now()
	region.SetDesired("h1", set)
	region.WaitReport(t, "h1", 5*time.Second, "s1 running", func(r schema.HostReport) bool {
		s, ok := fakeregion.Set(r, "s1")
		return ok && s.PowerState == schema.PowerRunning
	})
	t.Logf("desired change → report: %s", time.Since(start))

	set.State, set.Generation = schema.SetStopped, 2
	region.SetDesired("h1", set)
	region.WaitReport(t, "h1", 5*time.Second, "s1 stopped", func(r schema.HostReport) bool {
		s, ok := fakeregion.Set(r, "s1")
		return ok && s.Generation == 2 && s.PowerState == schema.PowerShutdown
	})

	// Heartbeats keep coming without changes.
	_, _, before, _ := region.Host("h1")
	time.Sleep(700 * time.Millisecond)
	if _, _, after, _ := region.Host("h1"); after-before < 2 {
		t.Errorf("reports in 700ms with a 200ms heartbeat = %d, want ≥ 2", after-before)
	}

	// Region loses the host: the agent registers again.
	region.Forget("h1")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, n, _, _ := region.Host("h1"); n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("agent did not re-register after region forgot the host")
		}
		time.Sleep(50 * time.Millisecond)
	}
	rec.mu.Lock()
	syncs := rec.syncs
	rec.mu.Unlock()
	if syncs < 3 {
		t.Errorf("syncs = %d, want at least one per desired state", syncs)
	}
}

func TestClientErrors(t *testing.T) {
	region := fakeregion.New(t, "secret")
	c := agent.NewClient(region.URL, "h2", "wrong", nil)
	_, err := c.Register(context.Background(), schema.HostRegister{})
	se, ok := err.(*agent.StatusError)
	if !ok || se.Code != 401 {
		t.Fatalf("Register with a wrong token: %v, want a 401 StatusError", err)
	}
	c = agent.NewClient(region.URL, "h2", "secret", nil)
	if err := c.Report(context.Background(), schema.HostReport{}); err == nil {
		t.Error("Report from an unregistered host succeeded")
	}
	if _, err := c.Register(context.Background(), schema.HostRegister{VCPUs: 1}); err != nil {
		t.Fatal(err)
	}
	// index=0 answers at once; a current index waits out the wait.
	ds, err := c.Desired(context.Background(), 0, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.Desired(context.Background(), ds.Index, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("long-poll returned after %s, want to wait ~300ms", d)
	}
}
