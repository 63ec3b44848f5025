package scheduler

import (
	"fmt"
	"testing"
	"time"
)

// benchHosts is a fleet of n up hosts of mixed sizes and usage.
func benchHosts(n int, now time.Time) []HostState {
	hs := make([]HostState, n)
	for i := range hs {
		vcpus := 32 << (i % 3)
		hs[i] = HostState{
			Name: fmt.Sprintf("sim-%05d", i), VCPUs: vcpus, MemoryMB: vcpus * 4096, DiskGB: 2000,
			CPURatio: 16, RAMRatio: 1.5, DiskRatio: 1,
			VCPUsUsed: i % 50, MemoryMBUsed: (i % 97) * 512, DiskGBUsed: i % 40,
			LastHeartbeat: now,
		}
	}
	return hs
}

// BenchmarkRank is the scheduler's cost per placement: filter and weigh a
// snapshot of 1,000 or 10,000 hosts (make bench reports it too).
func BenchmarkRank(b *testing.B) {
	now := time.Now()
	for _, n := range []int{1000, 10000} {
		hosts := benchHosts(n, now)
		req := Request{VCPUs: 1, MemoryMB: 512, DiskGB: 1, Now: now, Grace: time.Minute}
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				names, _ := Rank(hosts, req)
				if len(names) != n {
					b.Fatalf("got %d candidates, want %d", len(names), n)
				}
			}
		})
	}
}
