// Package agent is the hostagent's main loop: it joins region, long-polls
// the host's desired state, runs periodic full resyncs through the
// reconciler and reports observed state (which is also the heartbeat).
package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"berth/schema"
)

// Region is region's internal host API as the agent uses it.
type Region interface {
	Register(ctx context.Context, reg schema.HostRegister) (schema.Host, error)
	Desired(ctx context.Context, index int64, wait time.Duration) (schema.DesiredState, error)
	Report(ctx context.Context, rep schema.HostReport) error
}

// Reconciler converges the host to a desired state and tells what it saw.
type Reconciler interface {
	Run(ctx context.Context) error
	Sync(ctx context.Context, desired []schema.DesiredSet) error
	Report() schema.HostReport
	Changed() <-chan struct{}
	// Resync asks for a full Sync soon (Docker events, restart backoff,
	// probe results).
	Resync() <-chan struct{}
}

// Config tunes the agent loop.
type Config struct {
	Host     string
	Register schema.HostRegister
	// SyncInterval is the period of full resyncs (drift repair).
	SyncInterval time.Duration
	// HeartbeatInterval is the longest gap between two reports.
	HeartbeatInterval time.Duration
	// Wait is how long one desired-state poll may block in region.
	Wait time.Duration
	// MaxBackoff caps the retry delay after region errors.
	MaxBackoff time.Duration
}

func (c *Config) defaults() {
	if c.SyncInterval <= 0 {
		c.SyncInterval = 10 * time.Second
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 5 * time.Second
	}
	if c.Wait <= 0 {
		c.Wait = 25 * time.Second
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
}

// Agent runs the loops.
type Agent struct {
	region Region
	rec    Reconciler
	log    *slog.Logger
	cfg    Config

	syncKick     chan struct{}
	registerKick chan struct{}

	mu          sync.Mutex
	desired     []schema.DesiredSet
	haveDesired bool
}

// New returns an Agent.
func New(region Region, rec Reconciler, log *slog.Logger, cfg Config) *Agent {
	cfg.defaults()
	return &Agent{
		region: region, rec: rec, log: log, cfg: cfg,
		syncKick:     make(chan struct{}, 1),
		registerKick: make(chan struct{}, 1),
	}
}

// Run registers the host (retrying until region answers), then runs the
// watch, sync and report loops until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if err := a.register(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, loop := range []func(context.Context){
		func(ctx context.Context) { _ = a.rec.Run(ctx) },
		a.watch,
		a.syncLoop,
		a.reportLoop,
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(ctx)
		}()
	}
	<-ctx.Done()
	wg.Wait()
	// A last report so region sees the final state promptly.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := a.region.Report(rctx, a.rec.Report()); err != nil {
		a.log.Debug("final report", "err", err)
	}
	return nil
}

func (a *Agent) register(ctx context.Context) error {
	b := backoff{max: a.cfg.MaxBackoff}
	for {
		h, err := a.region.Register(ctx, a.cfg.Register)
		if err == nil {
			a.log.Info("registered with region", "vcpus", h.VCPUs, "memory_mb", h.MemoryMB, "disk_gb", h.DiskGB)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		d := b.next()
		a.log.Warn("register with region failed; retrying", "err", err, "retry_in", d)
		if !sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// watch long-polls the desired state and kicks a sync on every change.
func (a *Agent) watch(ctx context.Context) {
	var index int64
	first := true
	b := backoff{max: a.cfg.MaxBackoff}
	for ctx.Err() == nil {
		start := time.Now()
		ds, err := a.region.Desired(ctx, index, a.cfg.Wait)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var se *StatusError
			if errors.As(err, &se) && se.Code == http.StatusNotFound {
				a.kickRegister()
			}
			d := b.next()
			a.log.Warn("watch desired state failed; retrying", "err", err, "retry_in", d)
			sleep(ctx, d)
			continue
		}
		b.reset()
		changed := first || ds.Index != index
		if changed {
			a.mu.Lock()
			a.desired, a.haveDesired = ds.Sets, true
			a.mu.Unlock()
			a.log.Debug("desired state", "index", ds.Index, "sets", len(ds.Sets))
			kick(a.syncKick)
		}
		first = false
		index = ds.Index
		if !changed && time.Since(start) < time.Second {
			sleep(ctx, time.Second) // region did not block: do not spin
		}
	}
}

// syncLoop runs a full reconcile pass on every desired-state change and on
// every sync interval, but never before the first desired state arrived
// (otherwise every set would look orphaned).
func (a *Agent) syncLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.syncKick:
		case <-a.rec.Resync():
		}
		a.mu.Lock()
		desired, ok := append([]schema.DesiredSet(nil), a.desired...), a.haveDesired
		a.mu.Unlock()
		if !ok {
			continue
		}
		start := time.Now()
		err := a.rec.Sync(ctx, desired)
		if took := time.Since(start); took > time.Second {
			// A full pass delays every new set and every drift repair
			// behind it: worth knowing about when it is slow.
			a.log.Info("slow sync pass", "sets", len(desired), "took", took)
		}
		if err != nil && ctx.Err() == nil {
			a.log.Warn("sync failed", "err", err)
		}
	}
}

// reportLoop reports on every status change and at least every heartbeat
// interval; it re-registers when region no longer knows the host.
func (a *Agent) reportLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.rec.Changed():
		case <-a.registerKick:
			if err := a.register(ctx); err != nil {
				return
			}
		}
		err := a.region.Report(ctx, a.rec.Report())
		var se *StatusError
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return
		case errors.As(err, &se) && se.Code == http.StatusNotFound:
			a.log.Warn("region does not know this host; registering again", "err", err)
			kick(a.registerKick)
		default:
			a.log.Warn("report failed", "err", err)
		}
	}
}

func (a *Agent) kickRegister() { kick(a.registerKick) }

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// backoff doubles from 500ms up to max.
type backoff struct {
	cur, max time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = 500 * time.Millisecond
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	return b.cur
}

func (b *backoff) reset() { b.cur = 0 }
