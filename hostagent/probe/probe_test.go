package probe

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"berth/hostagent/reconcile"
	"berth/schema"
)

func waitFor(t *testing.T, p *Prober, key, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Health(key) != want {
		if time.Now().After(deadline) {
			t.Fatalf("health of %s = %q, want %q", key, p.Health(key), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestProberResults(t *testing.T) {
	var up atomic.Bool
	var changes atomic.Int32
	p := New(slog.New(slog.NewTextHandler(io.Discard, nil)), func() { changes.Add(1) })
	defer p.Close()
	p.dial = func(context.Context, int, int) error {
		if up.Load() {
			return nil
		}
		return errors.New("refused")
	}
	target := reconcile.ProbeTarget{Key: "c1", Pid: 1, Port: 80, Interval: 10 * time.Millisecond, Timeout: time.Second, Retries: 3}
	p.Track([]reconcile.ProbeTarget{target})
	if got := p.Health("c1"); got != schema.HealthStarting && got != schema.HealthUnhealthy {
		t.Errorf("first result = %q, want starting", got)
	}
	waitFor(t, p, "c1", schema.HealthUnhealthy)
	up.Store(true)
	waitFor(t, p, "c1", schema.HealthHealthy)
	p.Track([]reconcile.ProbeTarget{target}) // unchanged: the result stays
	if got := p.Health("c1"); got != schema.HealthHealthy {
		t.Errorf("re-tracked result = %q, want healthy", got)
	}
	p.Track(nil)
	if got := p.Health("c1"); got != "" {
		t.Errorf("untracked result = %q, want empty", got)
	}
	if changes.Load() < 2 {
		t.Errorf("changes = %d, want at least 2", changes.Load())
	}
}

// TestDialInNetns dials a listener of this process's own netns through
// its pid (needs permission to open /proc/self/ns/net, as root has).
func TestDialInNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := DialInNetns(ctx, os.Getpid(), port); err != nil {
		t.Errorf("DialInNetns(open port %d) = %v", port, err)
	}
	ln.Close()
	if err := DialInNetns(ctx, os.Getpid(), port); err == nil {
		t.Errorf("DialInNetns(closed port %s) succeeded", strconv.Itoa(port))
	}
}
