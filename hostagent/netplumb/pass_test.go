package netplumb_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"berth/hostagent/netplumb"
	"berth/hostagent/testenv"
	"berth/schema"
)

// TestPassReadsTheSwitchOnce: a host-wide observation pass checks every
// port's policy from one dump of the switch's flows, even when a port is
// plumbed in the middle of it (which invalidates the shared snapshot, so
// that checks outside a pass read the switch once per port).
func TestPassReadsTheSwitchOnce(t *testing.T) {
	testenv.RequireBinaries(t, "nsenter")
	real, err := exec.LookPath("ovs-ofctl")
	if err != nil {
		t.Fatal(err)
	}
	// ovs-ofctl through a wrapper that counts the flow dumps.
	dir := t.TempDir()
	count := filepath.Join(dir, "dumps")
	wrapper := filepath.Join(dir, "ovs-ofctl")
	script := fmt.Sprintf("#!/bin/sh\ncase \" $* \" in *\" dump-flows \"*) echo x >> %q ;; esac\nexec %q \"$@\"\n", count, real)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	dumps := func() int {
		b, _ := os.ReadFile(count)
		return strings.Count(string(b), "x")
	}
	ovs := testenv.StartOVS(t)
	p := netplumb.New(slog.New(slog.NewTextHandler(io.Discard, nil)), netplumb.Config{
		Host: "t-" + testenv.RandomHex(4), Bridge: ovs.Bridge, OVSDB: ovs.DB, SwitchNetns: ovs.Netns, OfctlBinary: wrapper,
	})
	t.Cleanup(p.Close)
	ctx := context.Background()

	type plugged struct {
		port schema.SetPort
		pid  int
	}
	var sets []plugged
	for i := 1; i <= 3; i++ {
		pl := plugged{port(i), netnsHolder(t)}
		if err := p.Plumb(ctx, fmt.Sprintf("set-%d", i), 0, pl.port, pl.pid); err != nil {
			t.Fatalf("Plumb %d: %v", i, err)
		}
		sets = append(sets, pl)
	}
	extra, extraPid := port(4), netnsHolder(t)

	check := func(ctx context.Context) int {
		t.Helper()
		before := dumps()
		for i, s := range sets {
			ok, err := p.Policy(ctx, 0, s.port, s.pid)
			if err != nil || !ok {
				t.Fatalf("Policy of set %d = %v, %v; want true", i+1, ok, err)
			}
		}
		return dumps() - before
	}

	// Outside a pass: a port plumbed after the List leaves every check to
	// read the switch itself.
	if _, err := p.List(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if err := p.Plumb(ctx, "set-4", 0, extra, extraPid); err != nil {
		t.Fatal(err)
	}
	if n := check(ctx); n != len(sets) {
		t.Fatalf("checks outside a pass dumped the flows %d times, want %d (once per port)", n, len(sets))
	}

	// In a pass: one dump for all, though a port goes in the middle.
	pctx := p.Pass(ctx)
	ports, err := p.List(pctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range ports {
		if op.SetID == "set-4" {
			if err := p.Unplumb(ctx, op); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := check(pctx); n != 1 {
		t.Fatalf("checks in a pass dumped the flows %d times, want 1", n)
	}
}
