package store_test

import (
	"context"
	"testing"
	"time"

	"berth/internal/pgtest"
	"berth/region/scheduler"
	"berth/region/store"
	"berth/schema"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestRankHostsView checks region's in-memory host view against the real
// hosts table: rankings are debited so concurrent placements spread, a
// host registering is seen at once, and a view that finds no room is
// re-read before "no valid host" is answered.
func TestRankHostsView(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	register := func(name string, memMB int) {
		t.Helper()
		if err := st.RegisterHost(ctx, name, schema.HostRegister{VCPUs: 4, MemoryMB: memMB, DiskGB: 100}); err != nil {
			t.Fatal(err)
		}
	}
	// RAM ratio is 1.5 by default: a 1000 MB host can take 1500 MB.
	req := scheduler.Request{VCPUs: 1, MemoryMB: 1000, DiskGB: 1, Now: time.Now(), Grace: time.Minute}
	rank := func() []string {
		t.Helper()
		req.Now = time.Now()
		names, _, _, err := st.RankHosts(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	register("a", 1000)
	register("b", 1000)

	// Two placements in a row go to different hosts: the first one's
	// debit makes the other host the better one.
	first, second := rank(), rank()
	if len(first) == 0 || len(second) == 0 || first[0] == second[0] {
		t.Errorf("two rankings chose %v then %v, want two different hosts first", first, second)
	}

	// Both hosts are now full in the view (1000 of 1500 MB used, another
	// 1000 does not fit), though nothing was claimed in the database: the
	// view is re-read instead of answering no host.
	if got := rank(); len(got) != 2 {
		t.Errorf("with a view that thinks every host is full: %v, want both hosts after a re-read", got)
	}

	// A host that registers is in the next ranking, without waiting for
	// the view to age.
	register("c", 64000)
	if got := rank(); len(got) == 0 || got[0] != "c" {
		t.Errorf("after c registered: %v, want c first", got)
	}

	// A disabled host leaves the ranking at once too.
	yes := true
	if _, err := st.SetHostService(ctx, "c", &yes, nil, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range rank() {
		if n == "c" {
			t.Errorf("disabled host c still ranked")
		}
	}
}
