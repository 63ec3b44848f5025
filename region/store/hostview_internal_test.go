package store

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"berth/region/scheduler"
)

// TestHostViewKeepsWeightOrder debits random hosts of a view many times
// and checks that its order stays sorted by weight and pos its inverse.
func TestHostViewKeepsWeightOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	hs := make([]scheduler.HostState, 300)
	for i := range hs {
		hs[i] = scheduler.HostState{Name: fmt.Sprintf("h%03d", i), VCPUs: 64, MemoryMB: 1024 * (1 + rng.IntN(64)),
			DiskGB: 1000, CPURatio: 16, RAMRatio: 1.5, DiskRatio: 1, LastHeartbeat: time.Now()}
	}
	var v hostView
	v.setLocked(hs, time.Now())
	for range 2000 {
		v.debitLocked(rng.IntN(len(hs)), scheduler.Request{VCPUs: 1, MemoryMB: 128 * (1 + rng.IntN(8)), DiskGB: 1})
	}
	for p, i := range v.order {
		if v.pos[i] != p {
			t.Fatalf("pos[%d] = %d, want %d", i, v.pos[i], p)
		}
		if p > 0 && scheduler.Heavier(&v.hosts[i], &v.hosts[v.order[p-1]]) {
			t.Fatalf("order[%d] (%s, %d MB free) is heavier than order[%d] (%s, %d MB free)", p, v.hosts[i].Name,
				v.hosts[i].FreeMemoryMB(), p-1, v.hosts[v.order[p-1]].Name, v.hosts[v.order[p-1]].FreeMemoryMB())
		}
	}
}
