// Package reconcile decides and carries out what a host must do so that its
// sets match region's desired state. Diff and Decide are pure; Reconciler
// runs one worker per set against the driver interfaces declared here.
package reconcile

import (
	"sort"
	"strings"
	"time"

	"berth/hostagent/ledger"
	"berth/hostagent/observed"
	"berth/hostagent/setspec"
	"berth/schema"
)

// Op is what a set needs next.
type Op string

// The operations Decide chooses from. A worker applies one, observes again
// and decides again, until the set needs nothing.
const (
	// OpNone: the set already matches (or waits, see Action.RetryAt).
	OpNone Op = "none"
	// OpCreate: (re)build the set from scratch, removing any leftover
	// containers and ports first (set volumes are kept); start it unless
	// the desired state is stopped.
	OpCreate Op = "create"
	// OpReplace: recreate the members in Targets (missing, or their spec
	// changed: a rebuild) inside the same infra, and remove containers not
	// desired. IP, MAC, port and set volumes stay.
	OpReplace Op = "replace"
	// OpStart: start the set (infra, plumbing, members), repairing its
	// network plumbing.
	OpStart Op = "start"
	// OpRestart: start the exited members in Targets by their restart
	// policy, counting each restart.
	OpRestart Op = "restart"
	// OpUpdate: apply the desired limits to the members in Targets live.
	OpUpdate Op = "update"
	// OpNetwork: re-apply the data path of plugged ports (flows, shaping,
	// MTU) that differs from desired, live.
	OpNetwork Op = "network"
	// OpReboot: restart every member (infra and the IP stay).
	OpReboot Op = "reboot"
	// OpPause and OpUnpause freeze and thaw every container of the set.
	OpPause   Op = "pause"
	OpUnpause Op = "unpause"
	// OpStop: stop every container and unplug the ports.
	OpStop Op = "stop"
	// OpDelete: remove every container, port and volume of the set.
	OpDelete Op = "delete"
)

// Action is the decision for one set.
type Action struct {
	SetID string
	Op    Op
	// Targets are the member names an Op acts on (Replace, Restart, Update).
	Targets []string
	// Orphan is true when the set is on the host but not desired at all.
	Orphan bool
	// Reason says why, for logs and tests.
	Reason string
	// RetryAt, with OpNone, is when a restart held back by its backoff is
	// due; the set must be looked at again then.
	RetryAt time.Time
}

// Diff decides what every set needs. desired is region's list for this host,
// observed what the drivers found, applied what the ledger says was applied
// per set. The result holds one action per set in either input, sorted by
// set ID.
func Diff(desired []schema.DesiredSet, observedSets map[string]*observed.Set, applied map[string]ledger.Entry, now time.Time) []Action {
	want := make(map[string]*schema.DesiredSet, len(desired))
	ids := make([]string, 0, len(desired)+len(observedSets))
	for i := range desired {
		d := &desired[i]
		if _, dup := want[d.ID]; !dup {
			ids = append(ids, d.ID)
		}
		want[d.ID] = d
	}
	for id := range observedSets {
		if _, ok := want[id]; !ok {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	out := make([]Action, 0, len(ids))
	for _, id := range ids {
		a := Decide(want[id], observedSets[id], applied[id], now)
		a.SetID = id
		out = append(out, a)
	}
	return out
}

// Decide chooses the next operation for one set. d is nil when region no
// longer lists the set; o is nil when nothing of it was found; applied is
// what the agent last carried out for the set; now is for restart backoff.
//
// A member that exits on its own while its set is desired running is
// restarted only by its restart policy (a plain server's app: never). With
// "never" the agent reports shutdown or crashed and region decides
// (Nova's sync_power_states); a newer generation (a start request) starts
// it again. A set whose infra stopped (a Docker or host restart) while
// desired running is started again: it returns to its desired power state.
// A set running while desired stopped is always stopped again.
func Decide(d *schema.DesiredSet, o *observed.Set, applied ledger.Entry, now time.Time) Action {
	exists := o.Exists()
	if d == nil {
		if exists {
			return Action{Op: OpDelete, Orphan: true, Reason: "not desired"}
		}
		return Action{Op: OpNone, Reason: "gone"}
	}
	switch d.State {
	case schema.SetDeleted:
		if exists {
			return Action{Op: OpDelete, Reason: "desired deleted"}
		}
		return Action{Op: OpNone, Reason: "gone"}
	case schema.SetStopped, schema.SetRunning, schema.SetPaused:
	default:
		return Action{Op: OpNone, Reason: "unknown desired state " + d.State}
	}
	if !exists || o.Infra == nil {
		if !exists {
			return Action{Op: OpCreate, Reason: "missing"}
		}
		return Action{Op: OpCreate, Reason: "infra container missing"}
	}
	for _, c := range o.Extra {
		if c.Role == observed.RoleInfra {
			return Action{Op: OpCreate, Reason: "duplicate infra container"}
		}
	}
	ms := setspec.Members(d)
	if t, why := replaceTargets(ms, o); t != nil || len(o.Extra) > 0 {
		if why == "" {
			why = "duplicate containers"
		}
		return Action{Op: OpReplace, Targets: t, Reason: why}
	}

	if d.State == schema.SetStopped {
		if running(o.Infra) {
			return Action{Op: OpStop, Reason: "running, desired stopped"}
		}
		for _, m := range ms {
			if running(o.Member(m.Name)) {
				return Action{Op: OpStop, Reason: m.Name + " running, desired stopped"}
			}
		}
		for _, p := range o.Ports {
			if p.InSwitch || p.LinkPresent {
				return Action{Op: OpStop, Reason: "port plugged, desired stopped"}
			}
		}
		if t := limitsDrift(ms, o); t != nil {
			return Action{Op: OpUpdate, Targets: t, Reason: "limits differ"}
		}
		return Action{Op: OpNone, Reason: "stopped"}
	}

	// Desired running or paused.
	if !running(o.Infra) {
		return Action{Op: OpStart, Reason: "infra not running"}
	}
	if d.State == schema.SetRunning && anyPaused(o) {
		return Action{Op: OpUnpause, Reason: "paused, desired running"}
	}
	var stopped, neverStarted []string
	for _, m := range ms {
		if c := o.Member(m.Name); !running(c) {
			stopped = append(stopped, m.Name)
			if c.State == "created" {
				neverStarted = append(neverStarted, m.Name)
			}
		}
	}
	if stopped != nil && applied.Generation < d.Generation {
		return Action{Op: OpStart, Reason: strings.Join(stopped, ",") + " stopped, desired running"}
	}
	if neverStarted != nil {
		// Made but never started (an agent restart between the two): it
		// cannot have stopped on its own.
		return Action{Op: OpStart, Reason: strings.Join(neverStarted, ",") + " never started"}
	}
	var due []string
	var retryAt time.Time
	for _, m := range ms {
		ok, at := RestartDue(m, o.Member(m.Name), applied.Restarts[m.Name], now)
		switch {
		case ok:
			due = append(due, m.Name)
		case !at.IsZero() && (retryAt.IsZero() || at.Before(retryAt)):
			retryAt = at
		}
	}
	if due != nil {
		return Action{Op: OpRestart, Targets: due, Reason: "exited; restart policy"}
	}
	if r := portsDrift(d, o); r != "" {
		return Action{Op: OpStart, Reason: r}
	}
	if r := policyDrift(d, o); r != "" {
		return Action{Op: OpNetwork, Reason: r}
	}
	if t := limitsDrift(ms, o); t != nil {
		return Action{Op: OpUpdate, Targets: t, Reason: "limits differ"}
	}
	if d.RebootSeq > applied.RebootSeq {
		return Action{Op: OpReboot, Reason: "reboot requested"}
	}
	if d.State == schema.SetPaused && !allPaused(o) {
		return Action{Op: OpPause, Reason: "running, desired paused"}
	}
	switch {
	case !retryAt.IsZero():
		return Action{Op: OpNone, Reason: "restart held back by backoff", RetryAt: retryAt}
	case stopped != nil:
		return Action{Op: OpNone, Reason: strings.Join(stopped, ",") + " stopped outside berth; reported, region decides"}
	case d.State == schema.SetPaused:
		return Action{Op: OpNone, Reason: "paused"}
	}
	return Action{Op: OpNone, Reason: "running"}
}

func running(c *observed.Container) bool { return c != nil && c.Running }

func anyPaused(o *observed.Set) bool {
	for _, c := range o.Containers() {
		if c.Paused {
			return true
		}
	}
	return false
}

// allPaused: every running container of the set is paused.
func allPaused(o *observed.Set) bool {
	for _, c := range o.Containers() {
		if c.Running && !c.Paused {
			return false
		}
	}
	return true
}

// SameImage compares Docker image IDs with or without "sha256:".
func SameImage(a, b string) bool {
	return strings.TrimPrefix(a, "sha256:") == strings.TrimPrefix(b, "sha256:")
}

// replaceTargets lists desired members that are missing or were made from
// another spec, and members no longer desired.
func replaceTargets(ms []setspec.Member, o *observed.Set) ([]string, string) {
	var t, why []string
	want := map[string]bool{}
	for _, m := range ms {
		want[m.Name] = true
		c := o.Member(m.Name)
		switch {
		case c == nil:
			t, why = append(t, m.Name), append(why, m.Name+" missing")
		case c.Spec != "" && c.Spec != m.Spec:
			t, why = append(t, m.Name), append(why, m.Name+" spec changed")
		case c.Spec == "" && !SameImage(c.Image, m.Image.DockerImageID):
			t, why = append(t, m.Name), append(why, m.Name+" image changed")
		}
	}
	var gone []string
	for name := range o.Members {
		if !want[name] {
			gone = append(gone, name)
		}
	}
	sort.Strings(gone)
	for _, name := range gone {
		t, why = append(t, name), append(why, name+" no longer desired")
	}
	return t, strings.Join(why, ", ")
}

// limitsDrift lists members whose running limits differ from desired.
// Pids are compared only when desired sets them.
func limitsDrift(ms []setspec.Member, o *observed.Set) []string {
	var t []string
	for _, m := range ms {
		c := o.Member(m.Name)
		if c == nil {
			continue
		}
		if c.Limits.VCPUs != m.Limits.VCPUs || c.Limits.MemoryMB != m.Limits.MemoryMB ||
			(m.Limits.Pids > 0 && c.Limits.Pids != m.Limits.Pids) {
			t = append(t, m.Name)
		}
	}
	return t
}

// LongRun is how long a container must have run for its restart streak
// (and with it the backoff) to start over.
const LongRun = 10 * time.Second

// RestartBackoff is the wait before a policy restart after streak quick
// exits in a row: none for the first, then 500ms doubling up to a minute.
func RestartBackoff(streak int) time.Duration {
	if streak <= 0 {
		return 0
	}
	d := 500 * time.Millisecond
	for i := 1; i < streak && d < time.Minute; i++ {
		d *= 2
	}
	return min(d, time.Minute)
}

// EffectiveStreak is the streak that counts for a container's last exit:
// zero after a long run.
func EffectiveStreak(c *observed.Container, r ledger.Restarts) int {
	if c != nil && !c.StartedAt.IsZero() && c.FinishedAt.Sub(c.StartedAt) >= LongRun {
		return 0
	}
	return r.Streak
}

// RestartDue says whether member m's exited container c is to be
// restarted by its policy now, and otherwise when it will be (zero when
// never).
func RestartDue(m setspec.Member, c *observed.Container, r ledger.Restarts, now time.Time) (bool, time.Time) {
	if !WouldRestart(m, c) {
		return false, time.Time{}
	}
	at := c.FinishedAt.Add(RestartBackoff(EffectiveStreak(c, r)))
	if !now.Before(at) {
		return true, time.Time{}
	}
	return false, at
}

// WouldRestart says whether m's policy restarts its exited container c.
func WouldRestart(m setspec.Member, c *observed.Container) bool {
	if c == nil || c.Running || c.State == "created" || c.State == "" {
		return false
	}
	switch m.RestartPolicy {
	case schema.RestartAlways:
		return true
	case schema.RestartOnFailure:
		return c.ExitCode != 0 || c.OOMKilled
	}
	return false
}

// portsDrift says how the plumbing of a running set differs from d, or "".
func portsDrift(d *schema.DesiredSet, o *observed.Set) string {
	want := map[string]bool{}
	for _, p := range d.Ports {
		want[p.ID] = true
		op := o.Port(p.ID)
		switch {
		case op == nil:
			return "port " + p.ID + " not plugged"
		case !op.InSwitch || !op.LinkPresent || !op.Attached:
			return "port " + p.ID + " plumbing broken"
		}
	}
	for _, p := range o.Ports {
		if !want[p.PortID] {
			return "port " + p.PortID + " no longer desired"
		}
	}
	return ""
}

// policyDrift says which plugged port's data path differs from d, or "".
func policyDrift(d *schema.DesiredSet, o *observed.Set) string {
	for _, p := range d.Ports {
		if op := o.Port(p.ID); op != nil && !op.Policy {
			return "port " + p.ID + " policy differs"
		}
	}
	return ""
}
