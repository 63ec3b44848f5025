package runtime

import (
	"testing"
	"time"

	"berth/hostagent/observed"
)

func TestInspectCache(t *testing.T) {
	now := time.Unix(1000, 0)
	running := observed.Container{ID: "a", State: "running", Pid: 42}
	key := summaryKey("running", "Up 3 minutes")

	type step func(ic *inspectCache) (observed.Container, bool)
	hit := func(id, k string, at time.Time) step {
		return func(ic *inspectCache) (observed.Container, bool) { return ic.get(id, k, at) }
	}
	for _, tc := range []struct {
		name string
		do   func(ic *inspectCache) step
		want bool
	}{
		{"kept while on", func(ic *inspectCache) step {
			ic.put("a", ic.begin(), running, now)
			return hit("a", key, now)
		}, true},
		{"off: nothing kept", func(ic *inspectCache) step {
			ic.enable(false)
			ic.put("a", ic.begin(), running, now)
			return hit("a", key, now)
		}, false},
		{"turned off: emptied", func(ic *inspectCache) step {
			ic.put("a", ic.begin(), running, now)
			ic.enable(false)
			ic.enable(true)
			return hit("a", key, now)
		}, false},
		{"summary shows another state", func(ic *inspectCache) step {
			ic.put("a", ic.begin(), running, now)
			return hit("a", summaryKey("exited", "Exited (137) 1 second ago"), now)
		}, false},
		{"summary shows a health change", func(ic *inspectCache) step {
			ic.put("a", ic.begin(), running, now)
			return hit("a", summaryKey("running", "Up 3 minutes (unhealthy)"), now)
		}, false},
		{"too old", func(ic *inspectCache) step {
			ic.put("a", ic.begin(), running, now)
			return hit("a", key, now.Add(2*time.Minute))
		}, false},
		{"dropped after it was kept", func(ic *inspectCache) step {
			ic.put("a", ic.begin(), running, now)
			ic.drop("a")
			return hit("a", key, now)
		}, false},
		{"inspect raced a drop: not kept", func(ic *inspectCache) step {
			since := ic.begin()
			ic.drop("a") // the event is read while the inspect runs
			ic.put("a", since, running, now)
			return hit("a", key, now)
		}, false},
		{"inspect after the drop: kept", func(ic *inspectCache) step {
			ic.drop("a")
			ic.put("a", ic.begin(), running, now)
			return hit("a", key, now)
		}, true},
		{"another container's drop does not matter", func(ic *inspectCache) step {
			since := ic.begin()
			ic.drop("b")
			ic.put("a", since, running, now)
			return hit("a", key, now)
		}, true},
		{"pruned record: an older inspect is not kept", func(ic *inspectCache) step {
			since := ic.begin()
			ic.drop("a")
			ic.prune(map[string]bool{}) // a full list did not see a
			ic.put("a", since, running, now)
			return hit("a", key, now)
		}, false},
		{"pruned: gone from the cache", func(ic *inspectCache) step {
			ic.put("a", ic.begin(), running, now)
			ic.prune(map[string]bool{"b": true})
			return hit("a", key, now)
		}, false},
		{"prune keeps the live", func(ic *inspectCache) step {
			ic.put("a", ic.begin(), running, now)
			ic.prune(map[string]bool{"a": true})
			return hit("a", key, now)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ic := newInspectCache(time.Minute)
			ic.enable(true)
			c, ok := tc.do(ic)(ic)
			if ok != tc.want {
				t.Fatalf("hit = %v, want %v", ok, tc.want)
			}
			if ok && c.Pid != running.Pid {
				t.Fatalf("cached pid %d, want %d", c.Pid, running.Pid)
			}
		})
	}
}

func TestSummaryKeyMatchesInspectKey(t *testing.T) {
	for _, tc := range []struct {
		state, status string
		c             observed.Container
	}{
		{"running", "Up 3 minutes", observed.Container{State: "running"}},
		{"running", "Up 2 seconds (health: starting)", observed.Container{State: "running", Health: "starting"}},
		{"running", "Up 1 hour (healthy)", observed.Container{State: "running", Health: "healthy"}},
		{"running", "Up 1 hour (unhealthy)", observed.Container{State: "running", Health: "unhealthy"}},
		{"exited", "Exited (0) 5 seconds ago", observed.Container{State: "exited"}},
		{"paused", "Up 4 minutes (Paused)", observed.Container{State: "paused"}},
		{"created", "Created", observed.Container{State: "created"}},
	} {
		if got, want := summaryKey(tc.state, tc.status), inspectKey(tc.c); got != want {
			t.Errorf("summaryKey(%q, %q) = %q, inspect says %q", tc.state, tc.status, got, want)
		}
	}
}
