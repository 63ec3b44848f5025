// Package monitor runs region's periodic checks: hosts that went silent
// get their servers' power state set to unknown, and builds that never
// finished are failed. Every region replica may run it; each check is
// idempotent.
package monitor

import (
	"context"
	"log/slog"
	"time"
)

// Store is what the monitor needs.
type Store interface {
	MarkSilentHosts(ctx context.Context, grace time.Duration) (int64, error)
	FailStaleBuilds(ctx context.Context, timeout time.Duration) (int, error)
}

// Config sets the monitor's intervals.
type Config struct {
	// Interval between passes.
	Interval time.Duration
	// HostGrace is how long a host may be silent before it counts as down.
	HostGrace time.Duration
	// BuildTimeout fails builds older than this.
	BuildTimeout time.Duration
}

// Run checks every cfg.Interval until ctx ends.
func Run(ctx context.Context, st Store, cfg Config, log *slog.Logger) {
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		Pass(ctx, st, cfg, log)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Pass runs each check once.
func Pass(ctx context.Context, st Store, cfg Config, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Interval+30*time.Second)
	defer cancel()
	if n, err := st.MarkSilentHosts(ctx, cfg.HostGrace); err != nil {
		log.Error("mark silent hosts", "err", err)
	} else if n > 0 {
		log.Warn("servers on silent hosts marked power state unknown", "servers", n)
	}
	if cfg.BuildTimeout > 0 {
		if n, err := st.FailStaleBuilds(ctx, cfg.BuildTimeout); err != nil {
			log.Error("fail stale builds", "err", err)
		} else if n > 0 {
			log.Warn("builds timed out", "servers", n, "timeout", cfg.BuildTimeout)
		}
	}
}
