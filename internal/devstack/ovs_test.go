package devstack

import (
	"slices"
	"testing"
)

func TestStaleBridges(t *testing.T) {
	br := func(name, dir, pid string) ovsBridge {
		ids := map[string]string{}
		if dir != "" {
			ids[ovsIDRunDir] = dir
		}
		if pid != "" {
			ids[ovsIDOwnerPID] = pid
		}
		return ovsBridge{name: name, externalIDs: ids}
	}
	brs := []ovsBridge{
		br("brb-self", "/tmp/gone-self", "1"),      // ours: never
		br("brb-dead", "/tmp/gone", "2"),           // owner dead, dir gone: stale
		br("brb-live", "/tmp/gone-live", "3"),      // owner alive: stays
		br("brb-run", "/work/.run", "4"),           // dir still there (make run): stays
		br("br-other", "", ""),                     // not Berth's: stays
		{name: "brb-noid", externalIDs: nil},       // no external ids at all: stays
		br("brb-dead2", "/tmp/gone2", "not-a-pid"), // unreadable owner counts as dead
	}
	alive := func(b ovsBridge) bool { return b.externalIDs[ovsIDOwnerPID] == "3" }
	exists := func(dir string) bool { return dir == "/work/.run" }
	got := staleBridges(brs, "brb-self", alive, exists)
	if want := []string{"brb-dead", "brb-dead2"}; !slices.Equal(got, want) {
		t.Fatalf("stale bridges: got %v, want %v", got, want)
	}
}
