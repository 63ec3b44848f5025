package reconcile_test

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/volume"

	"berth/hostagent/flows"
	"berth/hostagent/netplumb"
	"berth/hostagent/nettest"
	"berth/hostagent/reconcile"
	"berth/hostagent/runtime"
	"berth/hostagent/testenv"
	"berth/schema"
)

// envInt reads a positive size from the environment (make soak sets the
// full ones), else def.
func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// liveRestoreAfter is whether the daemon comes back with live restore
// after restart i. The cycle covers every pair of (stop mode, start
// mode): a stop without live restore stops every container; a stop with
// it leaves them running, and a start without it then stops what it
// finds.
var liveRestoreAfter = []bool{true, true, false, false}

// TestDockerRestartAtScale is R2: a private dockerd restarted
// BERTH_SOAK_RESTARTS times (make test: 2, make soak: 6) under
// BERTH_SOAK_SETS sets (make test: 10, make soak: 100) — plain servers,
// sets with a sidecar and a shared volume, some desired stopped, some
// paused. After every restart every set is back in its desired power
// state with the
// same containers (none lost, none duplicated), the same address in its
// netns, the same OVS port with its flows and shaping, and nothing else
// of the host exists: no stray container, volume, port, link or flow.
func TestDockerRestartAtScale(t *testing.T) {
	t.Parallel()
	nSets := envInt(t, "BERTH_SOAK_SETS", 10)
	nRestarts := envInt(t, "BERTH_SOAK_RESTARTS", 2)
	dockerd := testenv.StartDockerd(t)
	// The agent's own retry backoff (testenv's default is an hour): an
	// operation Docker fails while it settles after a restart is retried
	// as on a real host.
	h := testenv.NewHost(t, testenv.HostOptions{Docker: dockerd.Cli, Config: reconcile.Config{RetryBackoff: 5 * time.Second}, Quiet: true})
	// A safety net for a hung test, scaled with the work; not a speed goal.
	limit := time.Duration(nSets)*6*time.Second + 2*time.Minute

	var sets []schema.DesiredSet
	wantVolumes := 0
	for i := range nSets {
		s := newSet(t, h.Cli, 200+i)
		s.NetRaw = false
		switch {
		case i%10 == 9:
			s.State = schema.SetStopped
		case i%10 == 4:
			s.State = schema.SetPaused
		case i%5 == 2:
			s.Containers = []schema.SetContainer{
				{Name: "web", Role: schema.RoleApp, Image: s.Image, RestartPolicy: schema.RestartOnFailure,
					Command: []string{"/bin/sh", "-c", `date >> /data/boots; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done`},
					Volumes: []schema.SetVolumeMount{{Volume: "data", Path: "/data"}}},
				{Name: "shipper", Role: schema.RoleSidecar, Image: s.Image, RestartPolicy: schema.RestartAlways,
					Volumes: []schema.SetVolumeMount{{Volume: "data", Path: "/in", ReadOnly: true}}},
			}
			wantVolumes++
		}
		sets = append(sets, s)
	}
	errs := map[string]int{} // errors seen in reports, retried since
	settled := func(r map[string]schema.ObservedSet) bool {
		for _, o := range r {
			if o.Error != "" {
				errs[o.Error]++
			}
		}
		for _, s := range sets {
			o, ok := r[s.ID]
			if !ok || o.Error != "" || !o.Exists {
				return false
			}
			if want := powerOf(s); o.PowerState != want {
				return false
			}
		}
		return true
	}

	begin := time.Now()
	rep := h.ConvergeWithin(t, limit, sets, "every set in its desired state", settled)
	t.Logf("%d sets (%d containers) converged in %s", nSets, countContainers(rep), time.Since(begin).Round(time.Millisecond))
	ids := map[string]map[string]string{} // set → member → container ID
	for _, s := range sets {
		ids[s.ID] = map[string]string{}
		for _, c := range rep[s.ID].Containers {
			ids[s.ID][c.Name] = c.ID
		}
	}
	check := func(round string, rep map[string]schema.ObservedSet) {
		t.Helper()
		checkScale(t, h, sets, ids, rep, wantVolumes, round)
	}
	check("before", rep)

	for i := range nRestarts {
		live := liveRestoreAfter[i%len(liveRestoreAfter)]
		before := rep
		took := dockerd.Restart(t, live)
		start := time.Now()
		rep = h.ConvergeWithin(t, limit, sets, fmt.Sprintf("restart %d: every set back", i+1), func(r map[string]schema.ObservedSet) bool {
			return settled(r) && dockerAgrees(t, h, sets, r)
		})
		restarted := 0
		for _, s := range sets {
			if s.State != schema.SetStopped && !testenv.ContainerOf(t, rep[s.ID], "infra").StartedAt.Equal(testenv.ContainerOf(t, before[s.ID], "infra").StartedAt) {
				restarted++
			}
		}
		t.Logf("restart %d (live restore after: %v): dockerd down and up in %s; all %d sets in their desired state %s later; %d running or paused sets were started again",
			i+1, live, took.Round(time.Millisecond), nSets, time.Since(start).Round(time.Millisecond), restarted)
		check(fmt.Sprintf("after restart %d", i+1), rep)
		for e, n := range errs {
			t.Logf("restart %d: reported %d times before a retry succeeded: %s", i+1, n, e)
		}
		clear(errs)
	}
}

// dockerAgrees is whether Docker itself shows every container of a
// running or paused set running (and frozen if paused) and none of a
// stopped set, as the report says,
// with the start times the report has: a report from before the restart
// is not taken for the agent's recovery.
func dockerAgrees(t *testing.T, h *testenv.Host, sets []schema.DesiredSet, r map[string]schema.ObservedSet) bool {
	t.Helper()
	ctx := context.Background()
	for _, s := range sets {
		for _, c := range r[s.ID].Containers {
			j, err := h.Cli.ContainerInspect(ctx, c.ID)
			if err != nil || j.State == nil {
				return false
			}
			started, _ := time.Parse(time.RFC3339Nano, j.State.StartedAt)
			if j.State.Running != (s.State != schema.SetStopped) || j.State.Paused != (s.State == schema.SetPaused) {
				return false
			}
			if c.State != j.State.Status || !started.Equal(c.StartedAt) {
				return false
			}
		}
	}
	return true
}

func powerOf(s schema.DesiredSet) string {
	switch s.State {
	case schema.SetStopped:
		return schema.PowerShutdown
	case schema.SetPaused:
		return schema.PowerPaused
	}
	return schema.PowerRunning
}

func countContainers(rep map[string]schema.ObservedSet) int {
	n := 0
	for _, s := range rep {
		n += len(s.Containers)
	}
	return n
}

// checkScale compares the host with what it must hold: the same
// containers per set and nothing else on the daemon, one volume per set
// that declares one, for every running or paused set its address in its netns and
// its OVS port with the right flows and shaping; and no OVS port, link or
// port flow of a set that is not running.
func checkScale(t *testing.T, h *testenv.Host, sets []schema.DesiredSet, ids map[string]map[string]string, rep map[string]schema.ObservedSet, wantVolumes int, round string) {
	t.Helper()
	ctx := context.Background()
	all, err := h.Cli.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{} // container ID → set/member
	for set, members := range ids {
		for m, id := range members {
			want[id] = set + "/" + m
		}
	}
	seen := map[string]bool{}
	for _, c := range all {
		if _, ok := want[c.ID]; !ok {
			t.Errorf("%s: stray container %s %v (labels %v)", round, c.ID[:12], c.Names, c.Labels)
			continue
		}
		seen[c.ID] = true
	}
	for id, what := range want {
		if !seen[id] {
			t.Errorf("%s: container %s of %s is gone", round, id[:12], what)
		}
	}
	for _, s := range sets {
		got := map[string]string{}
		for _, c := range rep[s.ID].Containers {
			if _, dup := got[c.Name]; dup {
				t.Errorf("%s: set %s reports two %s containers", round, s.ID, c.Name)
			}
			got[c.Name] = c.ID
		}
		if !maps.Equal(got, ids[s.ID]) {
			t.Errorf("%s: set %s containers %v, want the same as before %v", round, s.ID, got, ids[s.ID])
		}
	}
	vs, err := h.Cli.VolumeList(ctx, volume.ListOptions{Filters: filters.NewArgs(filters.Arg("label", runtime.LabelHost+"="+h.Name))})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs.Volumes) != wantVolumes {
		t.Errorf("%s: %d volumes of the host, want %d", round, len(vs.Volumes), wantVolumes)
	}

	// Network: every running or paused set has its port, address and policy; no
	// other port, marked link or port flow exists.
	wantPorts, ofports := map[string]bool{}, map[int]bool{}
	for _, s := range sets {
		if s.State == schema.SetStopped {
			continue
		}
		hostEnd, _ := netplumb.IfNames(s.Ports[0].ID)
		wantPorts[hostEnd] = true
		of, err := strconv.Atoi(strings.TrimSpace(h.OVS.Vsctl(t, "get", "Interface", hostEnd, "ofport")))
		if err != nil {
			t.Errorf("%s: set %s: ofport of %s: %v", round, s.ID, hostEnd, err)
			continue
		}
		ofports[of] = true
		j, err := h.Cli.ContainerInspect(ctx, ids[s.ID]["infra"])
		if err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("nsenter", "-t", strconv.Itoa(j.State.Pid), "-n", "ip", "-o", "addr", "show", "dev", "eth0").CombinedOutput()
		if err != nil || !strings.Contains(string(out), " "+s.Ports[0].IP+"/16 ") {
			t.Errorf("%s: set %s eth0 = %q (%v), want %s/16", round, s.ID, out, err, s.Ports[0].IP)
		}
		if ok, err := h.Net.Policy(ctx, 0, s.Ports[0], j.State.Pid); err != nil || !ok {
			t.Errorf("%s: set %s port policy (flows, shaping) intact = %v, %v", round, s.ID, ok, err)
		}
	}
	var gotPorts []string
	for _, p := range strings.Fields(h.OVS.Vsctl(t, "list-ports", h.OVS.Bridge)) {
		gotPorts = append(gotPorts, p)
		if !wantPorts[p] {
			t.Errorf("%s: stray OVS port %s", round, p)
		}
	}
	if len(gotPorts) != len(wantPorts) {
		t.Errorf("%s: %d OVS ports, want %d", round, len(gotPorts), len(wantPorts))
	}
	links := 0
	for _, ns := range []string{h.OVS.Netns, "/proc/self/ns/net"} {
		out, err := exec.Command("nsenter", "--net="+ns, "ip", "-o", "link").CombinedOutput()
		if err != nil {
			t.Fatalf("list links: %v: %s", err, out)
		}
		links += strings.Count(string(out), "berth host="+h.Name+" ")
	}
	if links != len(wantPorts) {
		t.Errorf("%s: %d marked links of the host, want %d", round, links, len(wantPorts))
	}
	var stray []int
	for _, f := range nettest.Flows(t, h.OVS) {
		c, ok := flowCookie(f)
		if !ok || flows.CookieKind(c) != flows.KindPort {
			continue
		}
		if k, _ := flows.CookieKey(c); !ofports[int(k)] && !slices.Contains(stray, int(k)) {
			stray = append(stray, int(k))
		}
	}
	if len(stray) > 0 {
		t.Errorf("%s: port flows for ofports %v that no set owns", round, stray)
	}
}

func flowCookie(f string) (uint64, bool) {
	for _, field := range strings.FieldsFunc(f, func(r rune) bool { return r == ',' || r == ' ' }) {
		if v, ok := strings.CutPrefix(field, "cookie="); ok {
			c, err := strconv.ParseUint(strings.TrimPrefix(v, "0x"), 16, 64)
			return c, err == nil
		}
	}
	return 0, false
}
