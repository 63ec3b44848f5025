package runtime

import (
	"strings"
	"sync"
	"time"

	"berth/hostagent/observed"
)

// inspectCache keeps what ContainerInspect said of each container between
// two lists, so that a list of a whole host inspects only the containers
// that changed. A full reconcile pass observes every container of the
// host, and Docker's events ask for such passes; inspecting 400 containers
// one by one while a burst of sets is being started (each inspect waits
// for the container's lock in dockerd) made one pass take 4-37 s at 100
// sets, back to back for the whole burst.
//
// An entry is trusted only while all of these hold:
//   - the event stream is connected (Watch enables the cache after it has
//     subscribed and flushes and disables it when the stream breaks), and
//     no event has come for the container since it was inspected: every
//     event of a container, whatever its action, drops its entry;
//   - the agent has not acted on the container since (Start, Stop, Kill,
//     Pause, Unpause, Update and Remove drop it themselves, because their
//     event may be read after the agent's next list);
//   - the list's summary still shows the state and health it had (a
//     container that died is seen at once, before its event is read);
//   - it is younger than maxAge, which bounds the cost of an event Docker
//     never sent.
type inspectCache struct {
	mu      sync.Mutex
	on      bool
	maxAge  time.Duration
	entries map[string]cachedInspect
	// An inspect is kept only if its container was not dropped after the
	// inspect began (it may have read the state before the event): seq
	// counts drops, dropped holds each container's last one, and pruned
	// the seq when records were last thrown away (an inspect older than
	// that with no record of its container is not kept either).
	seq     uint64
	dropped map[string]uint64
	pruned  uint64
}

type cachedInspect struct {
	c   observed.Container
	key string
	at  time.Time
}

func newInspectCache(maxAge time.Duration) *inspectCache {
	return &inspectCache{maxAge: maxAge, entries: map[string]cachedInspect{}, dropped: map[string]uint64{}}
}

// enable turns the cache on or off; either way it starts empty, and no
// inspect in flight is kept.
func (ic *inspectCache) enable(on bool) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	ic.on = on
	clear(ic.entries)
	clear(ic.dropped)
	ic.seq++
	ic.pruned = ic.seq
}

// get returns the cached container if it may be trusted for a list whose
// summary of it has summaryKey.
func (ic *inspectCache) get(id, summaryKey string, now time.Time) (observed.Container, bool) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	e, ok := ic.entries[id]
	if !ok || !ic.on || e.key != summaryKey || now.Sub(e.at) > ic.maxAge {
		return observed.Container{}, false
	}
	return e.c, true
}

// begin is called before an inspect; put keeps its result only if nothing
// dropped the container since.
func (ic *inspectCache) begin() uint64 {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	return ic.seq
}

func (ic *inspectCache) put(id string, since uint64, c observed.Container, now time.Time) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if !ic.on {
		return
	}
	if d, ok := ic.dropped[id]; (ok && d > since) || (!ok && ic.pruned > since) {
		return
	}
	ic.entries[id] = cachedInspect{c: c, key: inspectKey(c), at: now}
}

// drop forgets a container: an event came for it, or the agent acted on it.
func (ic *inspectCache) drop(id string) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	ic.seq++
	ic.dropped[id] = ic.seq
	delete(ic.entries, id)
}

// prune forgets every container not in live (a list of the whole host), so
// that removed containers do not stay in memory.
func (ic *inspectCache) prune(live map[string]bool) {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	for id := range ic.entries {
		if !live[id] {
			delete(ic.entries, id)
		}
	}
	n := len(ic.dropped)
	for id := range ic.dropped {
		if !live[id] {
			delete(ic.dropped, id)
		}
	}
	if len(ic.dropped) != n {
		ic.pruned = ic.seq
	}
}

// inspectKey and summaryKey put a container's state and health in the same
// words, from an inspect and from a list's summary ("Up 3 minutes
// (healthy)", "Up 2 seconds (health: starting)").
func inspectKey(c observed.Container) string { return c.State + "|" + c.Health }

func summaryKey(state, status string) string {
	health := ""
	if state == "running" {
		switch {
		case strings.Contains(status, "(healthy)"):
			health = "healthy"
		case strings.Contains(status, "(unhealthy)"):
			health = "unhealthy"
		case strings.Contains(status, "(health: starting)"):
			health = "starting"
		}
	}
	return state + "|" + health
}
