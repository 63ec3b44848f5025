package reconcile

import (
	"berth/hostagent/ledger"
	"berth/hostagent/observed"
	"berth/hostagent/setspec"
	"berth/schema"
)

// primary returns the observed primary app of a set: the desired one, or
// for a set no longer desired the container named "app" or else the first
// app found.
func primary(d *schema.DesiredSet, o *observed.Set) (*observed.Container, setspec.Member) {
	if o == nil {
		return nil, setspec.Member{}
	}
	if d != nil {
		if m, ok := setspec.Primary(setspec.Members(d)); ok {
			return o.Member(m.Name), m
		}
	}
	if c := o.Member(setspec.PlainApp); c != nil {
		return c, setspec.Member{Name: c.Member, RestartPolicy: schema.RestartNever}
	}
	for _, c := range o.Containers() {
		if c.Role == observed.RoleApp && o.Member(c.Member) != nil {
			return o.Member(c.Member), setspec.Member{Name: c.Member, RestartPolicy: schema.RestartNever}
		}
	}
	return nil, setspec.Member{}
}

// PowerState maps what was observed to a Nova power state. The primary app
// decides: running or paused as Docker says; stopped is shutdown, except a
// non-zero (or OOM) exit while the set is desired running, which is
// crashed — unless its restart policy is about to restart it (a VM that
// reboots after a crash stays running).
func PowerState(d *schema.DesiredSet, o *observed.Set) string {
	app, m := primary(d, o)
	if app == nil {
		return schema.PowerNoState
	}
	desiredUp := d != nil && (d.State == schema.SetRunning || d.State == schema.SetPaused)
	switch {
	case app.Paused:
		return schema.PowerPaused
	case app.Running:
		return schema.PowerRunning
	case desiredUp && running(o.Infra) && WouldRestart(m, app):
		return schema.PowerRunning
	case desiredUp && app.State != "created" && (app.ExitCode != 0 || app.OOMKilled):
		return schema.PowerCrashed
	default:
		return schema.PowerShutdown
	}
}

// Status builds the report entry for one set. applied is the ledger entry
// (reboot sequence, restart counts); generation is the generation the entry
// speaks for; errMsg is the last failure, "" when none; health gives the
// TCP probe result of a container ID (nil: none).
func Status(id string, d *schema.DesiredSet, o *observed.Set, applied ledger.Entry, generation int64, errMsg string, health func(string) string) schema.ObservedSet {
	s := schema.ObservedSet{
		ID:         id,
		Generation: generation,
		Exists:     o.Exists(),
		PowerState: PowerState(d, o),
		Error:      errMsg,
		RebootSeq:  applied.RebootSeq,
	}
	members := map[string]setspec.Member{}
	for _, m := range setspec.Members(d) {
		members[m.Name] = m
	}
	worst := ""
	for _, c := range o.Containers() {
		h := c.Health
		if m, ok := members[c.Member]; ok && m.Health != nil && m.Health.TCPPort > 0 && health != nil {
			h = health(c.ID)
			if h == "" && c.Running {
				h = schema.HealthStarting
			}
		}
		s.Containers = append(s.Containers, schema.ObservedContainer{
			Role:         c.Role,
			Name:         c.Member,
			ID:           c.ID,
			State:        c.State,
			RestartCount: c.RestartCount + applied.Restarts[c.Member].Count,
			StartedAt:    c.StartedAt,
			Health:       h,
		})
		worst = worseHealth(worst, h)
	}
	s.Health = worst
	if app, m := primary(d, o); app != nil {
		s.DockerImageID = app.Image
		if d != nil && SameImage(app.Image, m.Image.DockerImageID) {
			s.DockerImageID = m.Image.DockerImageID // as region spelled it
		}
		l := app.Limits
		if d != nil {
			l.DiskGB = m.Limits.DiskGB // not enforced on overlay2/extfs: echoed
		}
		s.Limits = &l
	}
	return s
}

// worseHealth combines two results: unhealthy > starting > healthy > "".
func worseHealth(a, b string) string {
	rank := map[string]int{"": 0, schema.HealthHealthy: 1, schema.HealthStarting: 2, schema.HealthUnhealthy: 3}
	if rank[b] > rank[a] {
		return b
	}
	return a
}
