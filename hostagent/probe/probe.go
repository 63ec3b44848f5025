// Package probe runs the TCP health probes of set containers: a connect to
// 127.0.0.1:port from inside the set's network namespace (the infra's),
// so a probe needs nothing from the container image and no route from the
// host. Command probes are Docker's (HEALTHCHECK), not this package's.
package probe

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"berth/hostagent/nsexec"
	"berth/hostagent/reconcile"
	"berth/schema"
)

// Prober implements reconcile.Prober.
type Prober struct {
	log      *slog.Logger
	changed  func()
	dial     func(ctx context.Context, pid, port int) error
	mu       sync.Mutex
	tracked  map[string]*target
	stopping context.Context
	stop     context.CancelFunc
}

var _ reconcile.Prober = (*Prober)(nil)

type target struct {
	spec   reconcile.ProbeTarget
	cancel context.CancelFunc
	result string
	fails  int
}

// New returns a Prober; changed is called whenever a result changes.
func New(log *slog.Logger, changed func()) *Prober {
	ctx, cancel := context.WithCancel(context.Background())
	return &Prober{log: log, changed: changed, dial: DialInNetns, tracked: map[string]*target{}, stopping: ctx, stop: cancel}
}

// Close stops every probe.
func (p *Prober) Close() { p.stop() }

// Track replaces the probes to run; a probe whose target did not change
// keeps running (and its result).
func (p *Prober) Track(targets []reconcile.ProbeTarget) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keep := map[string]bool{}
	for _, t := range targets {
		keep[t.Key] = true
		if old, ok := p.tracked[t.Key]; ok {
			if old.spec == t {
				continue
			}
			old.cancel()
		}
		ctx, cancel := context.WithCancel(p.stopping)
		tg := &target{spec: t, cancel: cancel, result: schema.HealthStarting}
		p.tracked[t.Key] = tg
		go p.run(ctx, tg)
	}
	for k, t := range p.tracked {
		if !keep[k] {
			t.cancel()
			delete(p.tracked, k)
		}
	}
}

// Health returns the result for key ("" if not tracked).
func (p *Prober) Health(key string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.tracked[key]; ok {
		return t.result
	}
	return ""
}

func (p *Prober) run(ctx context.Context, t *target) {
	for {
		dctx, cancel := context.WithTimeout(ctx, t.spec.Timeout)
		err := p.dial(dctx, t.spec.Pid, t.spec.Port)
		cancel()
		if ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		before := t.result
		if err == nil {
			t.fails, t.result = 0, schema.HealthHealthy
		} else if t.fails++; t.fails >= t.spec.Retries {
			t.result = schema.HealthUnhealthy
		}
		after := t.result
		p.mu.Unlock()
		if before != after {
			p.log.Info("health changed", "container_id", t.spec.Key, "port", t.spec.Port, "health", after, "err", err)
			if p.changed != nil {
				p.changed()
			}
		}
		tm := time.NewTimer(t.spec.Interval)
		select {
		case <-ctx.Done():
			tm.Stop()
			return
		case <-tm.C:
		}
	}
}

// DialInNetns connects to 127.0.0.1:port inside the network namespace of
// pid. The socket is made on an OS thread switched into that namespace;
// the thread is discarded if it cannot be switched back.
func DialInNetns(ctx context.Context, pid, port int) error {
	return nsexec.DoPid(pid, func() error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if conn != nil {
			conn.Close()
		}
		return err
	})
}
