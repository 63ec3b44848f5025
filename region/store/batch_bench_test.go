package store_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"berth/internal/pgtest"
	"berth/region/scheduler"
	"berth/region/store"
)

// BenchmarkCreateServer places servers as region's create handler does
// (PlaceServer: the first candidates from the host view, then the batched
// create) from 64 goroutines over simulated hosts
// of 32, 64 or 96 vCPUs, across 100 projects with unlimited quotas, m1
// tiny/small/medium mixed 6:3:1 and every 10th create joining an
// anti-affinity group of 10, one transaction per create (batch=1) or
// batched. It reports placements per second and, when pgtest runs its own
// cluster (a child of the test binary), PostgreSQL's CPU per placement
// next to the test process's own. Run one size at a time, e.g.
//
//	go test -run '^$' -bench 'CreateServer/hosts=10000' -benchtime 5000x ./region/store/
func BenchmarkCreateServer(b *testing.B) {
	for _, hosts := range []int{1000, 10000} {
		for _, batch := range []int{1, 32} {
			b.Run(fmt.Sprintf("hosts=%d/batch=%d", hosts, batch), func(b *testing.B) {
				benchCreate(b, hosts, store.PlacementBatch{Max: batch, Linger: store.DefaultPlacementBatch.Linger,
					InFlight: store.DefaultPlacementBatch.InFlight})
			})
		}
	}
}

func benchCreate(b *testing.B, hosts int, cfg store.PlacementBatch) {
	ctx := context.Background()
	st, err := store.Open(ctx, pgtest.DSN(b))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	st.SetPlacementBatch(cfg)
	st.DB().SetMaxOpenConns(64)
	st.DB().SetMaxIdleConns(64)
	if _, err := st.DB().ExecContext(ctx, `INSERT INTO hosts (name, vcpus, memory_mb, disk_gb, labels, agent_version)
		SELECT format('sim-%s', lpad(i::text, 5, '0')), 32 * (1 + i % 3), 32 * (1 + i % 3) * 4096, 2000,
			'{"simulated": "true"}', 'bench-sim'
		FROM generate_series(0, $1 - 1) i`, hosts); err != nil {
		b.Fatal(err)
	}
	projects := make([]string, 100)
	for i := range projects {
		projects[i] = fmt.Sprintf("bench-project-%03d", i)
		if err := st.SetQuotas(ctx, projects[i], map[string]int{"instances": -1, "cores": -1, "ram": -1,
			"server_groups": -1, "server_group_members": -1}); err != nil {
			b.Fatal(err)
		}
	}
	var flavors []*store.Flavor
	for _, id := range []string{"1", "1", "1", "1", "1", "1", "2", "2", "2", "3"} {
		f, err := st.FindFlavor(ctx, id)
		if err != nil {
			b.Fatal(err)
		}
		flavors = append(flavors, f)
	}
	groups := make([]string, b.N/100+1)
	for i := range groups {
		g, err := st.CreateServerGroup(ctx, store.ServerGroup{ID: uuid.NewString(), ProjectID: projects[i%len(projects)],
			UserID: "bench", Name: fmt.Sprintf("aa-%d", i), Policy: scheduler.AntiAffinity})
		if err != nil {
			b.Fatal(err)
		}
		groups[i] = g.ID
	}
	const workers = 64
	var next atomic.Int64
	var noHost atomic.Int64
	var firstErr error
	var errOnce sync.Once
	pg0, self0 := childCPU(), selfCPU()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				seq := int(next.Add(1)) - 1
				if seq >= b.N {
					return
				}
				f, project, group := flavors[seq%len(flavors)], projects[seq%len(projects)], ""
				if seq%10 == 0 {
					gi := (seq / 10) % len(groups)
					group, project = groups[gi], projects[gi%len(projects)]
				}
				srv, err := st.PlaceServer(ctx, store.NewServer{ID: uuid.NewString(), ProjectID: project, UserID: "bench",
					Name: fmt.Sprintf("p-%d", seq), ImageID: "img", Flavor: f, AvailabilityZone: "nova",
					RequestID: "req-" + uuid.NewString(), GroupID: group},
					scheduler.Request{VCPUs: f.VCPUs, MemoryMB: f.RAMMB, DiskGB: f.DiskGB, Now: time.Now(), Grace: 2 * time.Minute})
				if err == nil && !srv.Host.Valid {
					noHost.Add(1)
				}
				if err != nil {
					errOnce.Do(func() { firstErr = err })
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	pg, self := childCPU()-pg0, selfCPU()-self0
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "placements/s")
	if pg > 0 {
		b.ReportMetric(pg*1e3/float64(b.N), "pg-ms/op")
	}
	b.ReportMetric(self*1e3/float64(b.N), "client-ms/op")
	if batches, creates := st.PlacementStats(); batches > 0 {
		b.ReportMetric(float64(creates)/float64(batches), "creates/batch")
	}
	b.ReportMetric(float64(noHost.Load()), "no-host")
}

// selfCPU is this process's CPU time in seconds.
func selfCPU() float64 {
	st, ok := procStat(os.Getpid())
	if !ok {
		return 0
	}
	return st.cpu
}

// childCPU is the CPU time, in seconds, of this process's live
// descendants (pgtest's PostgreSQL and its backends).
func childCPU() float64 {
	ents, _ := os.ReadDir("/proc")
	kids := map[int][]int{}
	cpu := map[int]float64{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := procStat(pid); ok {
			kids[st.ppid] = append(kids[st.ppid], pid)
			cpu[pid] = st.cpu + st.reaped
		}
	}
	var walk func(pid int) float64
	walk = func(pid int) float64 {
		sum := 0.0
		for _, k := range kids[pid] {
			sum += cpu[k] + walk(k)
		}
		return sum
	}
	return walk(os.Getpid())
}

type stat struct {
	ppid        int
	cpu, reaped float64
}

func procStat(pid int) (stat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 15 {
		return stat{}, false
	}
	num := func(i int) float64 { v, _ := strconv.ParseFloat(f[i], 64); return v / 100 }
	ppid, _ := strconv.Atoi(f[1])
	return stat{ppid: ppid, cpu: num(11) + num(12), reaped: num(13) + num(14)}, true
}
