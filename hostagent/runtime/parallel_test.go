package runtime

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"
)

// Creates, starts and removes wait for one of MaxParallel slots; the
// wait ends with the caller's context and the slot comes back on release.
func TestHeavyCallsAreBounded(t *testing.T) {
	d := New(nil, slog.New(slog.NewTextHandler(io.Discard, nil)), Config{MaxParallel: 2, CallTimeout: time.Minute})
	ctx := context.Background()
	var releases []context.CancelFunc
	for i := 0; i < 2; i++ {
		_, release, err := d.heavyCall(ctx)
		if err != nil {
			t.Fatalf("slot %d: %v", i, err)
		}
		releases = append(releases, release)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, _, err := d.heavyCall(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third call with both slots taken: %v, want the caller's deadline", err)
	}
	if waited := time.Since(start); waited < 40*time.Millisecond {
		t.Errorf("third call returned after %v, want it to wait for a slot", waited)
	}
	releases[0]()
	cctx, release, err := d.heavyCall(ctx)
	if err != nil {
		t.Fatalf("after a release: %v", err)
	}
	// The call's own timeout runs from when it got its slot.
	if dl, ok := cctx.Deadline(); !ok || time.Until(dl) < 50*time.Second {
		t.Errorf("call deadline %v, want CallTimeout from now", dl)
	}
	release()
	releases[1]()
	if len(d.heavy) != 0 {
		t.Errorf("%d slots still taken after every release", len(d.heavy))
	}
}
