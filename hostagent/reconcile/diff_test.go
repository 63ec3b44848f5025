package reconcile

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"berth/hostagent/ledger"
	"berth/hostagent/observed"
	"berth/hostagent/setspec"
	"berth/schema"
)

var now = time.Unix(1_000_000, 0).UTC()

func desiredSet(state string, gen int64, ports ...string) *schema.DesiredSet {
	d := &schema.DesiredSet{ID: "s1", State: state, Generation: gen,
		Image:  schema.SetImage{ID: "img", DockerImageID: "sha256:aaa"},
		Limits: schema.SetLimits{VCPUs: 1, MemoryMB: 64}}
	for _, p := range ports {
		d.Ports = append(d.Ports, schema.SetPort{ID: p, MAC: "fa:16:3e:00:00:01", IP: "10.0.0.2", PrefixLen: 24})
	}
	return d
}

// withSidecar makes d a set-API set: app "web" + sidecar "logs".
func withSidecar(d *schema.DesiredSet, policy string) *schema.DesiredSet {
	d.Containers = []schema.SetContainer{
		{Name: "web", Role: schema.RoleApp, Image: d.Image, RestartPolicy: policy},
		{Name: "logs", Role: schema.RoleSidecar, Image: d.Image, RestartPolicy: schema.RestartAlways},
	}
	return d
}

func ctr(role string, running bool, exit int) *observed.Container {
	c := &observed.Container{ID: role + "-id", SetID: "s1", Role: role, Member: role, Running: running, ExitCode: exit, Generation: 1,
		Image: "sha256:aaa", Limits: schema.SetLimits{VCPUs: 1, MemoryMB: 64}}
	if running {
		c.State, c.Pid = "running", 42
	} else {
		c.State = "exited"
		c.StartedAt, c.FinishedAt = now.Add(-2*time.Second), now.Add(-time.Second)
	}
	return c
}

// member is the observed container of d's member name, made from its spec.
func member(d *schema.DesiredSet, name string, running bool, exit int) *observed.Container {
	for _, m := range setspec.Members(d) {
		if m.Name == name {
			c := ctr(m.Role, running, exit)
			c.ID, c.Member, c.Spec, c.Limits = name+"-id", name, m.Spec, m.Limits
			return c
		}
	}
	panic("no member " + name)
}

func plugged(id string) observed.Port {
	return observed.Port{SetID: "s1", PortID: id, Iface: "bv" + id, InSwitch: true, LinkPresent: true, Attached: true, Policy: true}
}

func set(infra *observed.Container, members []*observed.Container, ports ...observed.Port) *observed.Set {
	s := &observed.Set{ID: "s1", Infra: infra, Members: map[string]*observed.Container{}, Ports: ports}
	for _, m := range members {
		if m != nil {
			s.Members[m.Member] = m
		}
	}
	return s
}

func mod(c *observed.Container, f func(*observed.Container)) *observed.Container { f(c); return c }

func mod2(p observed.Port, f func(*observed.Port)) observed.Port { f(&p); return p }

func applied(gen int64) ledger.Entry { return ledger.Entry{Generation: gen} }

func TestDecide(t *testing.T) {
	run1 := desiredSet(schema.SetRunning, 1, "p1")
	up := func(d *schema.DesiredSet) *observed.Set {
		var ms []*observed.Container
		for _, m := range setspec.Members(d) {
			ms = append(ms, member(d, m.Name, true, 0))
		}
		return set(ctr("infra", true, 0), ms, plugged("p1"))
	}
	app := func(running bool, exit int) []*observed.Container {
		return []*observed.Container{member(run1, "app", running, exit)}
	}
	side := func(policy string) *schema.DesiredSet {
		return withSidecar(desiredSet(schema.SetRunning, 1, "p1"), policy)
	}
	paused := func(o *observed.Set) *observed.Set {
		for _, c := range o.Containers() {
			c := c
			c.Paused = true
			if c.Role == observed.RoleInfra {
				o.Infra = &c
			} else {
				o.Members[c.Member] = &c
			}
		}
		return o
	}
	rebuilt := desiredSet(schema.SetRunning, 2, "p1")
	rebuilt.Image.DockerImageID = "sha256:bbb"
	resized := desiredSet(schema.SetRunning, 2, "p1")
	resized.Limits = schema.SetLimits{VCPUs: 2, MemoryMB: 128}
	resizedStopped := desiredSet(schema.SetStopped, 2)
	resizedStopped.Limits = schema.SetLimits{VCPUs: 2, MemoryMB: 128}
	reboot := desiredSet(schema.SetRunning, 2, "p1")
	reboot.RebootSeq = 1
	tests := []struct {
		name    string
		desired *schema.DesiredSet
		obs     *observed.Set
		applied ledger.Entry
		want    Op
		targets []string
		orphan  bool
		retry   bool
	}{
		{name: "new running set", desired: run1, obs: nil, want: OpCreate},
		{name: "new stopped set is created stopped", desired: desiredSet(schema.SetStopped, 1), obs: nil, want: OpCreate},
		{name: "new paused set is created", desired: desiredSet(schema.SetPaused, 1), obs: nil, want: OpCreate},
		{name: "running and plumbed", desired: run1, obs: up(run1), applied: applied(1), want: OpNone},
		{name: "running, newer generation, nothing to do", desired: desiredSet(schema.SetRunning, 2, "p1"), obs: up(run1), applied: applied(1), want: OpNone},
		{name: "infra only: app is made", desired: run1, obs: set(ctr("infra", true, 0), nil), want: OpReplace, targets: []string{"app"}},
		{name: "app only is rebuilt", desired: run1, obs: set(nil, app(false, 0)), want: OpCreate},
		{name: "ports only is rebuilt", desired: run1, obs: set(nil, nil, plugged("p1")), want: OpCreate},
		{
			name:    "duplicate app is removed",
			desired: run1,
			obs: func() *observed.Set {
				o := up(run1)
				o.Extra = []observed.Container{*member(run1, "app", true, 0)}
				return o
			}(),
			applied: applied(1),
			want:    OpReplace,
		},
		{
			name:    "duplicate infra rebuilds",
			desired: run1,
			obs:     func() *observed.Set { o := up(run1); o.Extra = []observed.Container{*ctr("infra", true, 0)}; return o }(),
			applied: applied(1),
			want:    OpCreate,
		},
		{name: "stopped, start requested", desired: desiredSet(schema.SetRunning, 3, "p1"), obs: set(ctr("infra", false, 0), app(false, 0)), applied: applied(2), want: OpStart},
		{name: "app died on its own: report, do not restart", desired: desiredSet(schema.SetRunning, 3, "p1"), obs: set(ctr("infra", true, 0), app(false, 137), plugged("p1")), applied: applied(3), want: OpNone},
		{name: "created but never started, new generation", desired: run1, obs: set(ctr("infra", false, 0), app(false, 0)), applied: applied(0), want: OpStart},
		{
			name:    "app created, never started, generation applied (agent killed mid-create)",
			desired: run1,
			obs:     set(ctr("infra", true, 0), []*observed.Container{mod(member(run1, "app", false, 0), func(c *observed.Container) { c.State = "created" })}, plugged("p1")),
			applied: applied(1),
			want:    OpStart,
		},
		{name: "infra and app stopped by a docker restart: back to running", desired: run1, obs: set(ctr("infra", false, 255), app(false, 255)), applied: applied(1), want: OpStart},
		{name: "paused set whose infra stopped is started", desired: desiredSet(schema.SetPaused, 1, "p1"), obs: set(ctr("infra", false, 0), app(false, 0)), applied: applied(1), want: OpStart},
		{name: "infra died under running app", desired: run1, obs: set(ctr("infra", false, 0), app(true, 0)), applied: applied(1), want: OpStart},
		{name: "port missing", desired: run1, obs: set(ctr("infra", true, 0), app(true, 0)), applied: applied(1), want: OpStart},
		{
			name:    "port veth gone",
			desired: run1,
			obs:     set(ctr("infra", true, 0), app(true, 0), observed.Port{SetID: "s1", PortID: "p1", InSwitch: true}),
			applied: applied(1),
			want:    OpStart,
		},
		{
			name:    "port not attached to this netns",
			desired: run1,
			obs:     set(ctr("infra", true, 0), app(true, 0), observed.Port{SetID: "s1", PortID: "p1", InSwitch: true, LinkPresent: true}),
			applied: applied(1),
			want:    OpStart,
		},
		{name: "port no longer desired", desired: desiredSet(schema.SetRunning, 2), obs: up(run1), applied: applied(1), want: OpStart},
		{
			name:    "port policy differs (new rules or bandwidth, lost flows): re-applied live",
			desired: run1,
			obs:     set(ctr("infra", true, 0), app(true, 0), mod2(plugged("p1"), func(p *observed.Port) { p.Policy = false })),
			applied: applied(1),
			want:    OpNetwork,
		},
		{
			name:    "broken plumbing wins over policy",
			desired: run1,
			obs:     set(ctr("infra", true, 0), app(true, 0), observed.Port{SetID: "s1", PortID: "p1", InSwitch: true, LinkPresent: true}),
			applied: applied(1),
			want:    OpStart,
		},
		{name: "running, desired stopped", desired: desiredSet(schema.SetStopped, 2, "p1"), obs: up(run1), applied: applied(1), want: OpStop},
		{name: "started outside berth while stopped", desired: desiredSet(schema.SetStopped, 2), obs: set(ctr("infra", false, 0), app(true, 0)), applied: applied(2), want: OpStop},
		{name: "only infra running while stopped", desired: desiredSet(schema.SetStopped, 2), obs: set(ctr("infra", true, 0), app(false, 0)), applied: applied(2), want: OpStop},
		{name: "paused, desired stopped", desired: desiredSet(schema.SetStopped, 2, "p1"), obs: paused(up(run1)), applied: applied(1), want: OpStop},
		{name: "stopped but port left in switch", desired: desiredSet(schema.SetStopped, 2), obs: set(ctr("infra", false, 0), app(false, 0), observed.Port{SetID: "s1", PortID: "p1", InSwitch: true}), applied: applied(2), want: OpStop},
		{name: "stopped", desired: desiredSet(schema.SetStopped, 2), obs: set(ctr("infra", false, 0), app(false, 0)), applied: applied(2), want: OpNone},

		{name: "pause", desired: desiredSet(schema.SetPaused, 2, "p1"), obs: up(run1), applied: applied(1), want: OpPause},
		{name: "paused", desired: desiredSet(schema.SetPaused, 2, "p1"), obs: paused(up(run1)), applied: applied(2), want: OpNone},
		{name: "unpause", desired: desiredSet(schema.SetRunning, 3, "p1"), obs: paused(up(run1)), applied: applied(2), want: OpUnpause},

		{name: "reboot requested", desired: reboot, obs: up(run1), applied: applied(1), want: OpReboot},
		{name: "reboot applied", desired: reboot, obs: up(run1), applied: ledger.Entry{Generation: 2, RebootSeq: 1}, want: OpNone},
		{name: "reboot of a crashed app", desired: reboot, obs: set(ctr("infra", true, 0), app(false, 1), plugged("p1")), applied: ledger.Entry{Generation: 2}, want: OpReboot},

		{name: "rebuild: new image", desired: rebuilt, obs: up(run1), applied: applied(1), want: OpReplace, targets: []string{"app"}},
		{
			name:    "container made before spec labels, same image",
			desired: run1,
			obs:     set(ctr("infra", true, 0), []*observed.Container{mod(member(run1, "app", true, 0), func(c *observed.Container) { c.Spec = "" })}, plugged("p1")),
			applied: applied(1),
			want:    OpNone,
		},
		{
			name:    "container made before spec labels, other image",
			desired: rebuilt,
			obs:     set(ctr("infra", true, 0), []*observed.Container{mod(member(run1, "app", true, 0), func(c *observed.Container) { c.Spec = "" })}, plugged("p1")),
			applied: applied(1),
			want:    OpReplace,
			targets: []string{"app"},
		},
		{name: "resize", desired: resized, obs: up(run1), applied: applied(1), want: OpUpdate, targets: []string{"app"}},
		{name: "resize while stopped", desired: resizedStopped, obs: set(ctr("infra", false, 0), app(false, 0)), applied: applied(1), want: OpUpdate, targets: []string{"app"}},

		{name: "sidecar set running", desired: side(schema.RestartNever), obs: up(side(schema.RestartNever)), applied: applied(1), want: OpNone},
		{name: "sidecar missing", desired: side(schema.RestartNever), obs: set(ctr("infra", true, 0), []*observed.Container{member(side(""), "web", true, 0)}, plugged("p1")), applied: applied(1), want: OpReplace, targets: []string{"logs"}},
		{name: "plain app replaced by set-API containers", desired: side(schema.RestartNever), obs: up(run1), applied: applied(1), want: OpReplace, targets: []string{"web", "logs", "app"}},
		{name: "set-API container crashed, on-failure", desired: side(schema.RestartOnFailure), obs: set(ctr("infra", true, 0), []*observed.Container{member(side(""), "web", false, 1), member(side(""), "logs", true, 0)}, plugged("p1")), applied: applied(1), want: OpRestart, targets: []string{"web"}},
		{name: "set-API container exited 0, on-failure", desired: side(schema.RestartOnFailure), obs: set(ctr("infra", true, 0), []*observed.Container{member(side(""), "web", false, 0), member(side(""), "logs", true, 0)}, plugged("p1")), applied: applied(1), want: OpNone},
		{name: "sidecar exited 0, always", desired: side(schema.RestartNever), obs: set(ctr("infra", true, 0), []*observed.Container{member(side(""), "web", true, 0), member(side(""), "logs", false, 0)}, plugged("p1")), applied: applied(1), want: OpRestart, targets: []string{"logs"}},
		{name: "app crashed, never", desired: side(schema.RestartNever), obs: set(ctr("infra", true, 0), []*observed.Container{member(side(""), "web", false, 1), member(side(""), "logs", true, 0)}, plugged("p1")), applied: applied(1), want: OpNone},
		{
			name:    "crash loop: restart held back",
			desired: side(schema.RestartAlways),
			obs:     set(ctr("infra", true, 0), []*observed.Container{member(side(""), "web", false, 1), member(side(""), "logs", true, 0)}, plugged("p1")),
			applied: ledger.Entry{Generation: 1, Restarts: map[string]ledger.Restarts{"web": {Count: 5, Streak: 5}}},
			want:    OpNone,
			retry:   true,
		},
		{
			name:    "crash after a long run: restart at once",
			desired: side(schema.RestartAlways),
			obs: set(ctr("infra", true, 0), []*observed.Container{mod(member(side(""), "web", false, 1), func(c *observed.Container) {
				c.StartedAt = now.Add(-time.Hour)
			}), member(side(""), "logs", true, 0)}, plugged("p1")),
			applied: ledger.Entry{Generation: 1, Restarts: map[string]ledger.Restarts{"web": {Count: 5, Streak: 5}}},
			want:    OpRestart,
			targets: []string{"web"},
		},

		{name: "delete existing", desired: desiredSet(schema.SetDeleted, 4), obs: up(run1), applied: applied(3), want: OpDelete},
		{name: "delete stopped", desired: desiredSet(schema.SetDeleted, 4), obs: set(ctr("infra", false, 0), app(false, 0)), want: OpDelete},
		{name: "delete leftover port", desired: desiredSet(schema.SetDeleted, 4), obs: set(nil, nil, observed.Port{SetID: "s1", PortID: "p1", LinkPresent: true}), want: OpDelete},
		{name: "delete leftover volume", desired: desiredSet(schema.SetDeleted, 4), obs: &observed.Set{ID: "s1", Volumes: []observed.Volume{{Name: "v", SetID: "s1"}}}, want: OpDelete},
		{name: "deleted and gone", desired: desiredSet(schema.SetDeleted, 4), obs: nil, want: OpNone},
		{name: "deleted and empty set", desired: desiredSet(schema.SetDeleted, 4), obs: &observed.Set{ID: "s1"}, want: OpNone},
		{name: "orphan", desired: nil, obs: up(run1), want: OpDelete, orphan: true},
		{name: "orphan gone", desired: nil, obs: nil, want: OpNone},
		{name: "unknown desired state", desired: desiredSet("frozen", 1), obs: up(run1), want: OpNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(tt.desired, tt.obs, tt.applied, now)
			if got.Op != tt.want || got.Orphan != tt.orphan {
				t.Errorf("Decide() = %s (orphan %v, %q), want %s (orphan %v)", got.Op, got.Orphan, got.Reason, tt.want, tt.orphan)
			}
			if tt.targets != nil && !cmp.Equal(got.Targets, tt.targets) {
				t.Errorf("Decide() targets = %v, want %v (%q)", got.Targets, tt.targets, got.Reason)
			}
			if got.RetryAt.IsZero() == tt.retry {
				t.Errorf("Decide() RetryAt = %v, want set: %v", got.RetryAt, tt.retry)
			}
			if got.Reason == "" {
				t.Error("Decide() gave no reason")
			}
		})
	}
}

func TestRestartBackoff(t *testing.T) {
	for streak, want := range []time.Duration{0, 500 * time.Millisecond, time.Second, 2 * time.Second} {
		if got := RestartBackoff(streak); got != want {
			t.Errorf("RestartBackoff(%d) = %s, want %s", streak, got, want)
		}
	}
	if got := RestartBackoff(40); got != time.Minute {
		t.Errorf("RestartBackoff(40) = %s, want 1m", got)
	}
}

func TestDiff(t *testing.T) {
	desired := []schema.DesiredSet{
		{ID: "b-new", State: schema.SetRunning, Generation: 1},
		{ID: "a-gone", State: schema.SetDeleted, Generation: 2},
		{ID: "c-stop", State: schema.SetStopped, Generation: 5},
	}
	obs := map[string]*observed.Set{
		"c-stop": {ID: "c-stop", Infra: &observed.Container{ID: "i", Role: "infra", Running: true}, Members: map[string]*observed.Container{"app": {ID: "a", Role: "app", Member: "app", Running: true}}},
		"z-orph": {ID: "z-orph", Members: map[string]*observed.Container{"app": {ID: "x", Role: "app", Member: "app"}}},
	}
	got := Diff(desired, obs, map[string]ledger.Entry{"c-stop": {Generation: 4}}, now)
	type short struct {
		ID     string
		Op     Op
		Orphan bool
	}
	var gotShort []short
	for _, a := range got {
		gotShort = append(gotShort, short{a.SetID, a.Op, a.Orphan})
	}
	want := []short{
		{"a-gone", OpNone, false},
		{"b-new", OpCreate, false},
		{"c-stop", OpStop, false},
		{"z-orph", OpDelete, true},
	}
	if diff := cmp.Diff(want, gotShort); diff != "" {
		t.Errorf("Diff() mismatch (-want +got):\n%s", diff)
	}
}

func TestPowerState(t *testing.T) {
	running := desiredSet(schema.SetRunning, 1)
	stopped := desiredSet(schema.SetStopped, 1)
	app := func(c *observed.Container) []*observed.Container { c.Member = "app"; return []*observed.Container{c} }
	oom := ctr("app", false, 0)
	oom.OOMKilled = true
	paused := ctr("app", true, 0)
	paused.Paused = true
	created := ctr("app", false, 0)
	created.State = "created"
	restarting := withSidecar(desiredSet(schema.SetRunning, 1), schema.RestartOnFailure)
	tests := []struct {
		name    string
		desired *schema.DesiredSet
		obs     *observed.Set
		want    string
	}{
		{"nothing", running, nil, schema.PowerNoState},
		{"infra only", running, set(ctr("infra", true, 0), nil), schema.PowerNoState},
		{"running", running, set(ctr("infra", true, 0), app(ctr("app", true, 0))), schema.PowerRunning},
		{"paused", running, set(ctr("infra", true, 0), app(paused)), schema.PowerPaused},
		{"clean exit", running, set(ctr("infra", true, 0), app(ctr("app", false, 0))), schema.PowerShutdown},
		{"non-zero exit while desired running", running, set(ctr("infra", true, 0), app(ctr("app", false, 137))), schema.PowerCrashed},
		{"oom while desired running", running, set(ctr("infra", true, 0), app(oom)), schema.PowerCrashed},
		{"non-zero exit after our stop", stopped, set(ctr("infra", false, 0), app(ctr("app", false, 143))), schema.PowerShutdown},
		{"never started", running, set(ctr("infra", false, 0), app(created)), schema.PowerShutdown},
		{"orphan exited", nil, set(nil, app(ctr("app", false, 1))), schema.PowerShutdown},
		{"crashed, restart policy will restart it", restarting, set(ctr("infra", true, 0), []*observed.Container{member(restarting, "web", false, 1)}), schema.PowerRunning},
		{"sidecar set: the primary app decides", restarting, set(ctr("infra", true, 0), []*observed.Container{member(restarting, "web", true, 0), member(restarting, "logs", false, 1)}), schema.PowerRunning},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := PowerState(tt.desired, tt.obs); got != tt.want {
				t.Errorf("PowerState() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	d := withSidecar(desiredSet(schema.SetRunning, 3), schema.RestartAlways)
	d.Limits.DiskGB = 5
	d.Containers[0].Health = &schema.SetHealthProbe{TCPPort: 80}
	web := member(d, "web", true, 0)
	web.RestartCount = 1
	logs := member(d, "logs", true, 0)
	logs.Health = schema.HealthUnhealthy
	o := set(ctr("infra", true, 0), []*observed.Container{web, logs})
	got := Status("s1", d, o, ledger.Entry{Generation: 3, RebootSeq: 2, Restarts: map[string]ledger.Restarts{"web": {Count: 4}}}, 3, "",
		func(id string) string {
			if id == "web-id" {
				return schema.HealthHealthy
			}
			return ""
		})
	if got.PowerState != schema.PowerRunning || got.RebootSeq != 2 || got.DockerImageID != "sha256:aaa" || got.Health != schema.HealthUnhealthy {
		t.Errorf("Status() = %+v", got)
	}
	if got.Limits == nil || *got.Limits != (schema.SetLimits{VCPUs: 1, MemoryMB: 64, DiskGB: 5}) {
		t.Errorf("Status().Limits = %+v", got.Limits)
	}
	byName := map[string]schema.ObservedContainer{}
	for _, c := range got.Containers {
		byName[c.Name] = c
	}
	if c := byName["web"]; c.RestartCount != 5 || c.Health != schema.HealthHealthy || c.Role != schema.RoleApp {
		t.Errorf("web = %+v, want 5 restarts (1 Docker + 4 agent), healthy", c)
	}
	if c := byName["logs"]; c.Health != schema.HealthUnhealthy || c.Role != schema.RoleSidecar {
		t.Errorf("logs = %+v", c)
	}
}
