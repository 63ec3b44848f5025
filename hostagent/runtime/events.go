package runtime

import (
	"context"
	"strings"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
)

// Watch follows Docker's events for this host's containers until ctx ends
// and calls changed(setID) for every lifecycle event (a container died,
// started, was paused, changed health...). When Docker comes back after
// the stream broke (a dockerd restart), it calls changed("") so that the
// whole host is looked at again.
func (d *Docker) Watch(ctx context.Context, changed func(setID string)) {
	backoff := time.Duration(0)
	broken := false
	for ctx.Err() == nil {
		if backoff > 0 {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		pctx, cancel := d.call(ctx)
		_, err := d.cli.Ping(pctx)
		cancel()
		if err != nil {
			if !broken {
				d.log.Warn("docker unreachable; waiting for it", "err", err)
			}
			broken = true
			backoff = min(max(2*backoff, 250*time.Millisecond), 5*time.Second)
			continue
		}
		wctx, stop := context.WithCancel(ctx)
		msgs, errs := d.cli.Events(wctx, events.ListOptions{Filters: filters.NewArgs(
			filters.Arg("type", string(events.ContainerEventType)),
			filters.Arg("label", LabelManaged+"=true"),
			filters.Arg("label", LabelHost+"="+d.cfg.Host),
		)})
		if broken {
			d.log.Info("docker is back; resyncing")
			changed("")
		}
		broken, backoff = false, 0
		err = d.follow(wctx, msgs, errs, changed)
		stop()
		if ctx.Err() != nil {
			return
		}
		d.log.Warn("docker event stream ended", "err", err)
		broken, backoff = true, 250*time.Millisecond
	}
}

func (d *Docker) follow(ctx context.Context, msgs <-chan events.Message, errs <-chan error, changed func(string)) error {
	// List may trust what it inspected only while no event can be missed.
	// Docker does not say when the subscription has begun, so the cache
	// comes on a moment after the request, and goes (emptied) with the
	// stream.
	trust := time.NewTimer(time.Second)
	defer trust.Stop()
	defer d.inspects.enable(false)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-errs:
			return err
		case <-trust.C:
			d.inspects.enable(true)
		case m := <-msgs:
			if m.Actor.ID != "" {
				d.inspects.drop(m.Actor.ID)
			}
			if lifecycleEvent(string(m.Action)) {
				changed(m.Actor.Attributes[LabelSet])
			}
		}
	}
}

// lifecycleEvent: events that change what the reconciler observes (not
// exec_*, attach, resize, top, archive-path...).
func lifecycleEvent(action string) bool {
	switch action {
	case "create", "start", "die", "oom", "pause", "unpause", "destroy", "update", "rename":
		return true
	}
	return strings.HasPrefix(action, "health_status")
}
