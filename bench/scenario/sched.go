package scenario

import (
	"context"
	"sort"

	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"berth/bench/osapi"
	"berth/bench/report"
	"berth/bench/stats"
	"berth/region/scheduler"
	"berth/region/store"
	"berth/schema"
)

// SchedOptions tunes the scheduler scenario.
type SchedOptions struct {
	// Placements per host count on the store path (default 100,000; 400
	// in quick mode).
	Placements int
	// TimeCap stops a store-path run early (default 180 s; 10 s quick).
	TimeCap time.Duration
}

// storeWorkers run the store path's placements at once.
const storeWorkers = 64

// Simulated hosts heartbeat this often (the real agent: every 5 s), and the
// scale regions treat a host as down after schedGrace.
const (
	simHeartbeat = 30 * time.Second
	schedGrace   = 120 * time.Second
)

// simFleet is a set of SIMULATED hosts: they register with region's
// agent API and heartbeat (an empty report), and do nothing else. They
// exist because 10,000 hosts cannot be had otherwise; only the scheduler
// scenario uses them.
type simFleet struct {
	reg   *Region
	names []string
	e     *Env

	mu      sync.Mutex
	hbLat   []time.Duration
	hbErrs  int
	cancel  context.CancelFunc
	done    chan struct{}
	started time.Time
}

// simCapacity is host i's size: 32, 64 or 96 vCPUs with 4 GB per vCPU.
func simCapacity(i int) schema.HostRegister {
	v := 32 * (1 + i%3)
	return schema.HostRegister{VCPUs: v, MemoryMB: v * 4096, DiskGB: 2000, AgentVersion: "bench-sim",
		Labels: map[string]string{"simulated": "true"}}
}

func (e *Env) registerFleet(ctx context.Context, reg *Region, n int) (*simFleet, time.Duration, error) {
	f := &simFleet{reg: reg, e: e}
	for i := range n {
		f.names = append(f.names, fmt.Sprintf("sim-%05d", i))
	}
	start := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for i, name := range f.names {
		g.Go(func() error {
			_, err := e.C.Do(gctx, osapi.Request{Method: http.MethodPut, URL: reg.Base + "/internal/v1/hosts/" + name,
				AgentToken: e.Stack.AgentToken(), Body: simCapacity(i)}, nil)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, 0, fmt.Errorf("register simulated hosts: %w", err)
	}
	took := time.Since(start)
	hctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done, f.started = cancel, make(chan struct{}), time.Now()
	go f.heartbeat(hctx)
	return f, took, nil
}

// heartbeat reports for every host once per simHeartbeat, spread evenly.
func (f *simFleet) heartbeat(ctx context.Context) {
	defer close(f.done)
	work := make(chan string)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range work {
				t := time.Now()
				_, err := f.e.C.Do(ctx, osapi.Request{Method: http.MethodPost, URL: f.reg.Base + "/internal/v1/hosts/" + name + "/report",
					AgentToken: f.e.Stack.AgentToken(), Body: schema.HostReport{Sets: []schema.ObservedSet{}}}, nil)
				f.mu.Lock()
				if err != nil {
					if ctx.Err() == nil {
						f.hbErrs++
					}
				} else {
					f.hbLat = append(f.hbLat, time.Since(t))
				}
				f.mu.Unlock()
			}
		}()
	}
	tick := time.NewTicker(simHeartbeat / time.Duration(len(f.names)))
	defer tick.Stop()
	for i := 0; ; i = (i + 1) % len(f.names) {
		select {
		case <-ctx.Done():
			close(work)
			wg.Wait()
			return
		case <-tick.C:
		}
		select {
		case work <- f.names[i]:
		case <-ctx.Done():
		}
	}
}

func (f *simFleet) stop() (stats.Summary, int) {
	f.cancel()
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	return stats.Durations(f.hbLat), f.hbErrs
}

// schedRun is one host count's results.
type schedRun struct {
	Hosts          int            `json:"hosts"`
	RegisterS      float64        `json:"register_s"`
	API            map[string]any `json:"api"`
	Store          map[string]any `json:"store"`
	Check          map[string]int `json:"check"`
	Heartbeat      stats.Summary  `json:"heartbeat"`
	HeartbeatErrs  int            `json:"heartbeat_errors"`
	HeartbeatRate  float64        `json:"heartbeat_rate"`
	CPUIdle        cpuUse         `json:"cpu_heartbeats_only"`
	CPUAPI         cpuUse         `json:"cpu_api_path"`
	CPUStore       cpuUse         `json:"cpu_store_path"`
	apiRate        float64
	apiLat         stats.Summary
	storeRate      float64
	storeLat       stats.Summary
	storeN, target int
	capped         bool
	storeBatch     float64 // creates per transaction on the store path
	deadlocks      int     // PostgreSQL deadlocks in the run's database (retried)
}

// Scheduler registers 1,000 and then 10,000 simulated hosts with a region
// of their own and places servers on them through the API (POST /servers,
// 32 clients, a time-boxed sample) and through the store path region's
// handler runs (scheduler.Rank on a host snapshot + store.CreateServer,
// which batches concurrent creates and claims in PostgreSQL), with
// anti-affinity groups mixed in. Then it
// checks from the database that no host is overcommitted.
func (e *Env) Scheduler(ctx context.Context) error {
	counts := []int{1000, 10000}
	apiDur, apiMax := 30*time.Second, 3000
	placements, capDur := e.Sched.Placements, e.Sched.TimeCap
	if placements == 0 {
		placements = 100000
		if capDur == 0 {
			capDur = 180 * time.Second
		}
	}
	if e.Quick {
		counts, apiDur, apiMax = []int{100}, 10*time.Second, 100
		if e.Sched.Placements == 0 {
			placements = 400
		}
		if e.Sched.TimeCap == 0 {
			capDur = 10 * time.Second
		}
	}
	if capDur == 0 {
		capDur = 24 * time.Hour
	}
	// The scheduler's own cost per decision, in-process.
	rankCost := map[int]rankTimes{}
	for _, h := range counts {
		rankCost[h] = rankBenchmark(h)
	}
	var runs []*schedRun
	for _, h := range counts {
		run, err := e.schedOnce(ctx, h, apiDur, apiMax, placements, capDur)
		if err != nil {
			return fmt.Errorf("%d hosts: %w", h, err)
		}
		runs = append(runs, run)
	}
	r := e.Report
	for i, run := range runs {
		id := string(rune('a' + i*4))
		lat, slat := run.apiLat, run.storeLat
		r.Add(report.Row{ID: "3" + id, Metric: fmt.Sprintf("API path, %d hosts: POST /servers, 32 clients", run.Hosts), Unit: "s", Value: &lat,
			Note: fmt.Sprintf("%.0f placements/s", run.apiRate)})
		row := report.Row{ID: "3" + string(rune('b'+i*4)), Metric: fmt.Sprintf("store path, %d hosts: placements/s (%d placed)", run.Hosts, run.storeN),
			Unit: "/s", Single: report.F(run.storeRate), Baseline: "API path", BaselineSingle: report.F(run.apiRate),
			Ratio: stats.Ratio(run.storeRate, run.apiRate)}
		if run.Hosts >= 10000 {
			row.Target, row.Met = "≥ 1,000/s at 10,000 hosts", report.B(run.storeRate >= 1000)
		}
		if run.capped {
			row.Note = fmt.Sprintf("stopped at the %s cap before %d", capDur, run.target)
		}
		r.Add(row)
		rc := rankCost[run.Hosts]
		r.Add(report.Row{ID: "3" + string(rune('c'+i*4)), Metric: fmt.Sprintf("store path, %d hosts: decision latency (rank + batched claim tx)", run.Hosts),
			Unit: "s", Value: &slat,
			Note: fmt.Sprintf("in-process, per call: the first %d candidates from the weight-ordered view (what a create ranks) %s, "+
				"a full scheduler.Rank %s", scheduler.Best, rc.first, rc.full)})
		bad := run.Check["overcommitted_hosts"] + run.Check["claim_mismatch_hosts"] + run.Check["anti_affinity_violations"]
		r.Add(report.Row{ID: "3" + string(rune('d'+i*4)), Metric: fmt.Sprintf("%d hosts: overcommitted hosts + claim mismatches + anti-affinity violations (from the DB)", run.Hosts),
			Unit: "", Single: report.F(float64(bad)), Target: "0", Met: report.B(bad == 0),
			Note: fmt.Sprintf("%d servers placed, %d with no valid host, %d group members", run.Check["placed"], run.Check["no_valid_host"], run.Check["group_members"])})
	}
	for _, run := range runs {
		per := func(u cpuUse, k string, n int) float64 { return u.Seconds[k] / float64(max(n, 1)) * 1e3 }
		apiN := 0
		if v, ok := run.API["placed"].(int); ok {
			apiN = v
		}
		r.Note("CPU at %d simulated hosts — heartbeats alone (%.0f/s achieved, p50 %.1f ms): %s. API path: %.1f ms of region "+
			"and %.1f ms of PostgreSQL CPU per placement (%s). Store path: %.2f ms of the bench process's CPU (Rank, the "+
			"store's client side and the simulated heartbeats) and %.2f ms of PostgreSQL per placement (%s); %.1f creates "+
			"per transaction on average, %d deadlocks retried.", run.Hosts, run.HeartbeatRate, run.Heartbeat.P50*1e3, run.CPUIdle,
			per(run.CPUAPI, "region (sched)", apiN), per(run.CPUAPI, "postgres", apiN), run.CPUAPI,
			per(run.CPUStore, "bench", run.storeN), per(run.CPUStore, "postgres", run.storeN), run.CPUStore,
			run.storeBatch, run.deadlocks)
	}
	r.Detail("scheduler", runs)
	r.Note("Scheduler at scale (3a-3h): the hosts are SIMULATED: each registers through region's agent API (PUT "+
		"/internal/v1/hosts/{host}; 32, 64 or 96 vCPUs with 4 GB each, 2 TB disk) and posts an empty report every %s "+
		"(the real agent: every 5 s) to stay up; they never build anything, so placed servers stay BUILD. They run against "+
		"a region process and database of their own (--host-grace %s). The API path is a time-boxed sample (%d placements "+
		"or %s) of POST /servers by 32 clients in the demo project, networks \"none\", flavors m1.tiny/small/medium mixed "+
		"6:3:1, every 10th into an anti-affinity group of up to 10. The store path is what that handler does per server, "+
		"run in-process by %d workers with the same code: scheduler.RankFirst over region's in-memory host view ("+
		"re-read from the database at most every second, kept in weight order and debited per placement) through "+
		"store.PlaceServer, as the handler does: it ranks the first 32 candidates and queues the create for the store's "+
		"placement batcher (the rest of the hosts are ranked only if all 32 are taken): creates that arrive together share one PostgreSQL "+
		"transaction (up to %d, %d transactions in flight) that claims capacity with a re-check per host, across 100 projects "+
		"with the same mix. A create waits for its batch, so throughput needs concurrent creates: the store path's workers "+
		"stand for that many clients of a region.", simHeartbeat, schedGrace, apiMax, apiDur, storeWorkers,
		store.DefaultPlacementBatch.Max, store.DefaultPlacementBatch.InFlight)
	return nil
}

func (e *Env) schedOnce(ctx context.Context, hosts int, apiDur time.Duration, apiMax, placements int, capDur time.Duration) (*schedRun, error) {
	args := []string{"--host-grace", schedGrace.String()}
	if e.TokenCacheBug {
		args = append(args, "--token-cache-ttl", "1ns")
	}
	reg, err := e.StartRegion(ctx, fmt.Sprintf("sched-%d", hosts), args...)
	if err != nil {
		return nil, err
	}
	defer reg.Stop()
	run := &schedRun{Hosts: hosts, target: placements}
	fleet, took, err := e.registerFleet(ctx, reg, hosts)
	if err != nil {
		return nil, err
	}
	run.RegisterS = took.Seconds()
	e.Log.Info("simulated hosts registered", "hosts", hosts, "took", took.Round(time.Millisecond))
	defer func() {
		if fleet != nil {
			fleet.stop()
		}
	}()
	if err := e.SetQuota(ctx, reg.Compute(), e.Demo.ProjectID); err != nil {
		return nil, err
	}
	pids := map[string]int{"region (sched)": reg.PID()}
	// What the fleet's heartbeats alone cost, before any placement.
	idle := 10 * time.Second
	if e.Quick {
		idle = 2 * time.Second
	}
	c0 := e.snapCPU(pids)
	time.Sleep(idle)
	run.CPUIdle = c0.to(e.snapCPU(pids))

	// API path.
	groups := make([]string, apiMax/100+1)
	for i := range groups {
		var out struct {
			Group struct {
				ID string `json:"id"`
			} `json:"server_group"`
		}
		if _, err := e.C.Do(ctx, osapi.Request{Method: http.MethodPost, URL: reg.Compute() + "/os-server-groups", Token: e.Demo.Token,
			Body: map[string]any{"server_group": map[string]any{"name": fmt.Sprintf("aa-%d", i), "policies": []string{"anti-affinity"}}}}, &out); err != nil {
			return nil, fmt.Errorf("create server group: %w", err)
		}
		groups[i] = out.Group.ID
	}
	flavors := []string{"1", "1", "1", "1", "1", "1", "2", "2", "2", "3"}
	c1 := e.snapCPU(pids)
	api := load(ctx, 32, apiDur, apiMax, func(ctx context.Context, w, seq int) error {
		var hints map[string]any
		if seq%10 == 0 {
			hints = map[string]any{"group": groups[(seq/10)%len(groups)]}
		}
		_, err := e.bootAtFlavor(ctx, reg.Compute(), e.Demo.Token, fmt.Sprintf("api-%d", seq), flavors[seq%len(flavors)], hints)
		return err
	})
	run.CPUAPI = c1.to(e.snapCPU(pids))
	if err := reg.Alive(); err != nil {
		return nil, err
	}
	if api.Errors > 0 {
		e.Log.Warn("API path errors", "n", api.Errors, "first", api.FirstErr)
		if len(api.Lat) == 0 {
			return nil, fmt.Errorf("API path: every POST /servers failed: %w", api.FirstErr)
		}
	}
	run.apiRate, run.apiLat = api.Rate(), stats.Durations(api.Lat)
	run.API = map[string]any{"placed": len(api.Lat), "errors": api.Errors, "seconds": api.Elapsed.Seconds(), "rate": api.Rate(), "latency": run.apiLat}
	if api.FirstErr != nil {
		run.API["first_error"] = api.FirstErr.Error()
	}
	e.Log.Info("API path done", "hosts", hosts, "placed", len(api.Lat), "errors", api.Errors, "rate", fmt.Sprintf("%.1f/s", api.Rate()))

	// Store path.
	c2 := e.snapCPU(pids)
	if err := e.storePath(ctx, reg, run, placements, capDur); err != nil {
		return nil, err
	}
	run.CPUStore = c2.to(e.snapCPU(pids))
	hbStart := fleet.started
	run.Heartbeat, run.HeartbeatErrs = fleet.stop()
	run.HeartbeatRate = float64(run.Heartbeat.N) / time.Since(hbStart).Seconds()
	fleet = nil
	if run.Check, err = checkClaims(ctx, reg); err != nil {
		return nil, err
	}
	e.Log.Info("claims checked", "hosts", hosts, "check", run.Check)
	return run, nil
}

// bootAtFlavor POSTs one server with no network (the simulated hosts
// need no port, and a /16 would run out at 65,000 anyway).
func (e *Env) bootAtFlavor(ctx context.Context, compute, token, name, flavor string, hints map[string]any) (string, error) {
	body := map[string]any{"server": map[string]any{"name": name, "imageRef": e.ImageID, "flavorRef": flavor, "networks": "none"}}
	if hints != nil {
		body["os:scheduler_hints"] = hints
	}
	var out struct {
		Server struct {
			ID string `json:"id"`
		} `json:"server"`
	}
	// networks "none" needs microversion 2.37, as in Nova.
	_, err := e.C.Do(ctx, osapi.Request{Method: http.MethodPost, URL: compute + "/servers", Token: token, Body: body, OK: []int{202},
		Header: map[string]string{"OpenStack-API-Version": "compute 2.37"}}, &out)
	return out.Server.ID, err
}

func (e *Env) storePath(ctx context.Context, reg *Region, run *schedRun, placements int, capDur time.Duration) error {
	st, err := store.Open(ctx, reg.DSN)
	if err != nil {
		return err
	}
	defer st.Close()
	st.DB().SetMaxOpenConns(32)
	st.DB().SetMaxIdleConns(32)
	const nProjects = 100
	projects := make([]string, nProjects)
	for i := range projects {
		projects[i] = fmt.Sprintf("bench-project-%03d", i)
		if err := st.SetQuotas(ctx, projects[i], map[string]int{"instances": -1, "cores": -1, "ram": -1,
			"server_groups": -1, "server_group_members": -1}); err != nil {
			return err
		}
	}
	var flavors []*store.Flavor
	for _, id := range []string{"1", "1", "1", "1", "1", "1", "2", "2", "2", "3"} {
		f, err := st.FindFlavor(ctx, id)
		if err != nil {
			return err
		}
		flavors = append(flavors, f)
	}
	// Every 10th placement joins an anti-affinity group of 10.
	groups := make([]string, placements/100+1)
	for i := range groups {
		g, err := st.CreateServerGroup(ctx, store.ServerGroup{ID: uuid.NewString(), ProjectID: projects[i%nProjects],
			UserID: "bench", Name: fmt.Sprintf("aa-%d", i), Policy: scheduler.AntiAffinity})
		if err != nil {
			return err
		}
		groups[i] = g.ID
	}
	var noHost atomic.Int64
	res := load(ctx, storeWorkers, capDur, placements, func(ctx context.Context, w, seq int) error {
		f := flavors[seq%len(flavors)]
		project := projects[seq%nProjects]
		group := ""
		if seq%10 == 0 {
			gi := (seq / 10) % len(groups)
			group, project = groups[gi], projects[gi%nProjects]
		}
		srv, err := st.PlaceServer(ctx, store.NewServer{ID: uuid.NewString(), ProjectID: project, UserID: "bench",
			Name: fmt.Sprintf("p-%d", seq), ImageID: e.ImageID, DockerImageID: e.DockerImageID, Flavor: f,
			AvailabilityZone: "nova", RequestID: "req-" + uuid.NewString(), GroupID: group},
			scheduler.Request{VCPUs: f.VCPUs, MemoryMB: f.RAMMB, DiskGB: f.DiskGB, Now: time.Now(), Grace: schedGrace})
		if err != nil {
			return err
		}
		if !srv.Host.Valid {
			noHost.Add(1)
		}
		return nil
	})
	if res.Errors > 0 {
		e.Log.Warn("store path errors", "n", res.Errors, "first", res.FirstErr)
		if len(res.Lat) == 0 {
			return fmt.Errorf("store path: every placement failed: %w", res.FirstErr)
		}
	}
	run.storeN, run.storeRate = len(res.Lat), res.Rate()
	if batches, creates := st.PlacementStats(); batches > 0 {
		run.storeBatch = float64(creates) / float64(batches)
	}
	if err := st.DB().GetContext(ctx, &run.deadlocks, `SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()`); err != nil {
		return err
	}
	run.storeLat = stats.Durations(res.Lat)
	run.capped = len(res.Lat)+res.Errors < placements
	run.Store = map[string]any{"placed": len(res.Lat), "errors": res.Errors, "no_valid_host": noHost.Load(),
		"seconds": res.Elapsed.Seconds(), "rate": res.Rate(), "latency": run.storeLat, "capped": run.capped,
		"creates_per_batch": run.storeBatch, "deadlocks": run.deadlocks}
	if res.FirstErr != nil {
		run.Store["first_error"] = res.FirstErr.Error()
	}
	e.Log.Info("store path done", "hosts", run.Hosts, "placed", len(res.Lat), "errors", res.Errors,
		"rate", fmt.Sprintf("%.1f/s", res.Rate()), "p99", run.storeLat.P99)
	return nil
}

// checkClaims verifies from the database that no host is overcommitted,
// that every host's usage equals the sum of its live servers' flavors, and
// that no anti-affinity group has two members on one host.
func checkClaims(ctx context.Context, reg *Region) (map[string]int, error) {
	out := map[string]int{}
	for key, q := range map[string]string{
		"overcommitted_hosts": `SELECT count(*) FROM hosts WHERE vcpus_used > floor(vcpus * cpu_ratio)
			OR memory_mb_used > floor(memory_mb * ram_ratio) OR disk_gb_used > floor(disk_gb * disk_ratio)`,
		"claim_mismatch_hosts": `SELECT count(*) FROM hosts h LEFT JOIN (SELECT host, sum(vcpus) v, sum(ram_mb) r, sum(disk_gb) d
			FROM servers WHERE deleted_at IS NULL AND host IS NOT NULL GROUP BY host) s ON s.host = h.name
			WHERE h.vcpus_used <> coalesce(s.v, 0) OR h.memory_mb_used <> coalesce(s.r, 0) OR h.disk_gb_used <> coalesce(s.d, 0)`,
		"anti_affinity_violations": `SELECT count(*) FROM (SELECT m.group_id, s.host FROM server_group_members m
			JOIN servers s ON s.id = m.server_id JOIN server_groups g ON g.id = m.group_id
			WHERE g.policy = 'anti-affinity' AND s.deleted_at IS NULL AND s.host IS NOT NULL
			GROUP BY 1, 2 HAVING count(*) > 1) x`,
		"placed":        `SELECT count(*) FROM servers WHERE host IS NOT NULL AND deleted_at IS NULL`,
		"no_valid_host": `SELECT count(*) FROM servers WHERE vm_state = 'error'`,
		"group_members": `SELECT count(*) FROM server_group_members`,
		"hosts":         `SELECT count(*) FROM hosts`,
	} {
		var n int
		if err := reg.DB.QueryRowContext(ctx, q).Scan(&n); err != nil {
			return nil, fmt.Errorf("check %s: %w", key, err)
		}
		out[key] = n
	}
	return out, nil
}

// rankTimes is the scheduler's cost per call over a fleet.
type rankTimes struct{ full, first time.Duration }

// rankBenchmark is scheduler.Rank's cost per call over n hosts, and that
// of scheduler.RankFirst over the same hosts in weight order (what a
// create ranks with store.PlaceServer).
func rankBenchmark(n int) rankTimes {
	now := time.Now()
	hs := make([]scheduler.HostState, n)
	for i := range hs {
		c := simCapacity(i)
		hs[i] = scheduler.HostState{Name: fmt.Sprintf("sim-%05d", i), VCPUs: c.VCPUs, MemoryMB: c.MemoryMB, DiskGB: c.DiskGB,
			CPURatio: 16, RAMRatio: 1.5, DiskRatio: 1, VCPUsUsed: i % 50, MemoryMBUsed: (i % 97) * 512, LastHeartbeat: now}
	}
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return scheduler.Heavier(&hs[order[a]], &hs[order[b]]) })
	req := scheduler.Request{VCPUs: 1, MemoryMB: 512, DiskGB: 1, Now: now, Grace: time.Minute}
	per := func(f func()) time.Duration {
		var d time.Duration
		deadline := time.Now().Add(time.Second)
		runs := 0
		for time.Now().Before(deadline) || runs < 3 {
			t := time.Now()
			f()
			d += time.Since(t)
			runs++
		}
		return (d / time.Duration(runs)).Round(100 * time.Nanosecond)
	}
	return rankTimes{
		full:  per(func() { scheduler.Rank(hs, req) }),
		first: per(func() { scheduler.RankFirst(hs, order, req, scheduler.Best) }),
	}
}
