package runtime_test

import (
	"context"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"berth/hostagent/observed"
)

// TestListInspectsOnlyWhatChanged: while Watch follows Docker's events a
// List inspects only containers that changed since the last one, and
// changes made behind the agent's back (a restart keeps the state
// "running" but changes the pid; a kill changes the state) still show.
func TestListInspectsOnlyWhatChanged(t *testing.T) {
	rt, cli, _ := newRuntime(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	set := testSet(t, cli)
	id, err := rt.CreateInfra(ctx, set)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Remove(context.Background(), id) })
	if err := rt.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	list := func() observed.Container {
		t.Helper()
		cs, err := rt.List(ctx, set.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != 1 {
			t.Fatalf("List = %d containers, want 1", len(cs))
		}
		return cs[0]
	}
	// Without Watch every List inspects.
	before := rt.Inspected()
	list()
	list()
	if n := rt.Inspected() - before; n != 2 {
		t.Fatalf("two Lists without Watch inspected %d times, want 2", n)
	}

	go rt.Watch(ctx, func(string) {})
	eventually := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("not within 10 s: %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	eventually("a List served without inspecting", func() bool {
		list()
		n := rt.Inspected()
		list()
		return rt.Inspected() == n
	})

	// Restarted behind the agent's back: same state, new pid.
	old := list()
	one := 1 // the pause process ignores TERM: do not wait the default 10 s
	if err := cli.ContainerRestart(ctx, id, container.StopOptions{Timeout: &one}); err != nil {
		t.Fatal(err)
	}
	eventually("the restarted container's new pid", func() bool {
		c := list()
		return c.Running && c.Pid != old.Pid && c.Pid > 0
	})

	// Stopped by the agent itself: seen by the very next List.
	if err := rt.Stop(ctx, id, time.Second); err != nil {
		t.Fatal(err)
	}
	if c := list(); c.Running || c.State != "exited" {
		t.Fatalf("right after Stop: running=%v state=%q", c.Running, c.State)
	}
	if err := rt.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
	if c := list(); !c.Running {
		t.Fatalf("right after Start: state %q", c.State)
	}

	// Killed behind the agent's back.
	if err := cli.ContainerKill(ctx, id, "KILL"); err != nil {
		t.Fatal(err)
	}
	eventually("the killed container as not running", func() bool { return !list().Running })
}
