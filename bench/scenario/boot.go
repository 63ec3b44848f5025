package scenario

import (
	"context"
	"fmt"
	"time"

	"berth/bench/osapi"
	"berth/bench/report"
	"berth/bench/stats"
)

// bootSample is one timed boot and delete, with the timestamps the
// breakdown is made of.
type bootSample struct {
	Total     time.Duration // POST sent → poll saw ACTIVE
	Delete    time.Duration // DELETE sent → poll saw 404
	DeleteAck time.Duration // DELETE sent → 204 read
	// Phases, each from the previous one's end.
	Phases map[string]time.Duration
}

// Phase names of a boot, in order.
var bootPhases = []struct{ name, from string }{
	{"API: auth, validation, image lookup, host snapshot + rank", "POST sent → create action start_time (DB now() of the create transaction)"},
	{"create transaction (claim, port, action) + 202", "action start_time → 202 read by the client"},
	{"agent pickup (long-poll wake, desired read, diff)", "202 → infra container Created (Docker)"},
	{"create containers (infra, app)", "infra Created → app Created (Docker)"},
	{"start infra", "app Created → infra StartedAt (Docker)"},
	{"network wiring (veth, OVS port, addresses) + start app", "infra StartedAt → app StartedAt (Docker)"},
	{"agent report → region marks ACTIVE", "app StartedAt → build event finish_time (instance action)"},
	{"client sees ACTIVE (poll every 20 ms)", "finish_time → poll saw ACTIVE"},
}

// Boot measures boot and delete latency against the Docker baselines,
// one at a time and interleaved (Berth, single container, pair), so noise
// lands on all three alike.
func (e *Env) Boot(ctx context.Context) error {
	n := 30
	if e.Quick {
		n = 3
	}
	poll := 20 * time.Millisecond
	var samples []bootSample
	var runs, pairs, rmPairs []time.Duration
	for i := range n {
		s, err := e.bootOnce(ctx, fmt.Sprintf("%sboot-%d", e.Prefix, i), poll)
		if err != nil {
			return err
		}
		samples = append(samples, s)

		id, took, err := e.dockerRun(ctx, fmt.Sprintf("%srun-%d", e.Prefix, i))
		if err != nil {
			return err
		}
		runs = append(runs, took)
		if _, err := e.dockerRemove(ctx, id); err != nil {
			return err
		}
		ids, took, err := e.dockerPair(ctx, fmt.Sprintf("%spair-%d", e.Prefix, i))
		if err != nil {
			return err
		}
		pairs = append(pairs, took)
		took, err = e.dockerRemove(ctx, ids...)
		if err != nil {
			return err
		}
		rmPairs = append(rmPairs, took)
		e.Log.Info("boot sample", "i", i, "berth", s.Total.Round(time.Millisecond), "docker_run", runs[i].Round(time.Millisecond),
			"docker_pair", pairs[i].Round(time.Millisecond), "berth_delete", s.Delete.Round(time.Millisecond), "docker_rm_pair", took.Round(time.Millisecond))
	}
	var totals, deletes, acks []time.Duration
	for _, s := range samples {
		totals, deletes, acks = append(totals, s.Total), append(deletes, s.Delete), append(acks, s.DeleteAck)
	}
	boot, run, pair := stats.Durations(totals), stats.Durations(runs), stats.Durations(pairs)
	del, rm := stats.Durations(deletes), stats.Durations(rmPairs)
	r := e.Report
	r.Add(report.Row{ID: "1a", Metric: "boot: POST /servers → ACTIVE", Unit: "s", Value: &boot,
		Baseline: "docker create+start", BaselineValue: &run, Ratio: stats.Ratio(boot.P50, run.P50),
		Target: "ratio ≤ 2.0 at p50", Met: report.B(stats.Ratio(boot.P50, run.P50) <= 2.0)})
	r.Add(report.Row{ID: "1b", Metric: "boot: absolute p50", Unit: "s", Value: &boot,
		Baseline: "hand-built pair (pause+app)", BaselineValue: &pair, Ratio: stats.Ratio(boot.P50, pair.P50),
		Target: "p50 ≤ 0.45 s", Met: report.B(boot.P50 <= 0.45)})
	r.Add(report.Row{ID: "1c", Metric: "delete: DELETE → 404", Unit: "s", Value: &del,
		Baseline: "docker rm -f (pair)", BaselineValue: &rm, Ratio: stats.Ratio(del.P50, rm.P50),
		Target: "p50 ≤ 0.3 s", Met: report.B(del.P50 <= 0.3)})
	ack := stats.Durations(acks)
	r.Detail("boot", map[string]any{"n": n, "poll_interval_ms": poll.Milliseconds(), "berth": boot, "docker_run": run,
		"docker_pair": pair, "delete": del, "delete_204": ack, "docker_rm_pair": rm})

	bd := report.Breakdown{Title: fmt.Sprintf("Where a boot's time goes (%d boots, one at a time, image already on the host)", n)}
	var sumP50 float64
	for _, p := range bootPhases {
		var ds []time.Duration
		for _, s := range samples {
			if d, ok := s.Phases[p.name]; ok {
				ds = append(ds, d)
			}
		}
		sum := stats.Durations(ds)
		sumP50 += sum.P50
		bd.Phases = append(bd.Phases, report.Phase{Name: p.name, Value: sum, From: p.from})
	}
	bd.Phases = append(bd.Phases, report.Phase{Name: "total (client-observed)", Value: boot, From: "POST sent → poll saw ACTIVE"})
	bd.Note = fmt.Sprintf("Phase medians add up to %.0f ms against a total median of %.0f ms (medians do not add exactly). "+
		"Docker's own timestamps place the container steps; PostgreSQL's now() (transaction start) the region steps. "+
		"Baselines in the same run: docker create+start %.0f ms, the hand-built pair %.0f ms; delete 204 came back after %.0f ms (p50).",
		sumP50*1e3, boot.P50*1e3, run.P50*1e3, pair.P50*1e3, ack.P50*1e3)
	r.Breakdowns = append(r.Breakdowns, bd)
	r.Note("Boot (1a-1c): %d boots one after another, each followed by its delete, interleaved with the two Docker baselines "+
		"(one container on a Docker bridge network; a pause container plus the app in its namespaces, the closest hand-built "+
		"equivalent of a set without OVS), all with m1.tiny's limits. ACTIVE and 404 are seen by polling GET /servers/{id} "+
		"every %s, which adds up to one interval to Berth's numbers. With %d samples p99 is the slowest sample.", n, poll, n)
	return nil
}

// bootOnce boots a server, waits for ACTIVE, reads its breakdown, then
// deletes it and waits for 404.
func (e *Env) bootOnce(ctx context.Context, name string, poll time.Duration) (bootSample, error) {
	s := bootSample{Phases: map[string]time.Duration{}}
	b, err := e.boot(ctx, name, nil)
	if err != nil {
		return s, err
	}
	active, err := e.waitActive(ctx, b.ID, poll, 2*time.Minute)
	if err != nil {
		return s, err
	}
	s.Total = active.Sub(b.Sent)

	act, err := e.action(ctx, b.ID, b.RequestID)
	if err != nil {
		return s, fmt.Errorf("instance action of %s: %w", b.ID, err)
	}
	cs, err := e.setContainers(ctx, b.ID)
	if err != nil {
		return s, err
	}
	e.fillPhases(&s, b, active, act, cs)

	del := time.Now()
	if err := e.deleteServer(ctx, b.ID); err != nil {
		return s, err
	}
	s.DeleteAck = time.Since(del)
	gone, err := e.waitGone(ctx, b.ID, poll, 2*time.Minute)
	if err != nil {
		return s, err
	}
	s.Delete = gone.Sub(del)
	return s, nil
}

func (e *Env) fillPhases(s *bootSample, b booted, active time.Time, act osapi.Action, cs []ctrInfo) {
	actStart, err := osapi.UsageTime(act.StartTime)
	if err != nil {
		return
	}
	var built time.Time
	for _, ev := range act.Events {
		if ev.Event == "compute__do_build_and_run_instance" && ev.FinishTime != nil {
			built, _ = osapi.UsageTime(*ev.FinishTime)
		}
	}
	var infra, app ctrInfo
	for _, c := range cs {
		switch c.Role {
		case "infra":
			infra = c
		case "app":
			app = c
		}
	}
	if built.IsZero() || infra.Created.IsZero() || app.Started.IsZero() {
		e.Log.Warn("incomplete timestamps for breakdown", "server_id", b.ID)
		return
	}
	marks := []time.Time{b.Sent, actStart, b.Accepted, infra.Created, app.Created, infra.Started, app.Started, built, active}
	for i, p := range bootPhases {
		s.Phases[p.name] = marks[i+1].Sub(marks[i])
	}
}
