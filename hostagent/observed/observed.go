// Package observed is the hostagent's vocabulary for what really exists on a
// host: Berth-managed containers and volumes as Docker reports them and set
// ports as OVS and the kernel report them. Drivers produce these values, the
// reconciler compares them with region's desired state. It holds data only,
// no I/O.
package observed

import (
	"sort"
	"time"

	"berth/schema"
)

// Container roles inside a set.
const (
	RoleInfra   = schema.RoleInfra
	RoleApp     = schema.RoleApp
	RoleSidecar = schema.RoleSidecar
)

// Container is one Berth-managed container.
type Container struct {
	ID    string
	Name  string
	SetID string
	// Role is RoleInfra, RoleApp or RoleSidecar.
	Role string
	// Member is the container's name within its set: "infra", "app" for a
	// plain server's app, else the SetContainer name.
	Member string
	// Generation is the desired generation the container was created for.
	Generation int64
	// Spec is the hash of the desired container spec it was created from
	// ("" for containers made before specs were hashed).
	Spec string
	// Image is the Docker image ID the container runs.
	Image string
	// State is Docker's state string: created, running, paused, restarting,
	// exited, dead.
	State        string
	Running      bool
	Paused       bool
	ExitCode     int
	OOMKilled    bool
	Pid          int
	RestartCount int
	StartedAt    time.Time
	FinishedAt   time.Time
	// Limits are the limits the container runs with now (DiskGB unused).
	Limits schema.SetLimits
	// Health is Docker's health status for a command probe: "",
	// "starting", "healthy" or "unhealthy".
	Health string
}

// Port is one set port found on the host: an OVS interface row carrying our
// external_ids and/or a veth host end carrying our alias.
type Port struct {
	SetID  string
	PortID string
	// Iface is the host-side veth name, e.g. "bv3f2a1b4c1a2".
	Iface string
	// InSwitch is true when OVS has an interface row for the port.
	InSwitch bool
	// OFPort is the OpenFlow port number, -1 when OVS cannot open the device.
	OFPort int
	// LinkPresent is true when the host-side veth exists.
	LinkPresent bool
	// Attached is true when the infra container's netns has eth0 with the
	// port's MAC. Only checked while the infra container runs.
	Attached bool
	// Policy is true when the port's flows, shaping and MTU match the
	// desired port. Only checked for attached ports.
	Policy bool
}

// Volume is one set volume (a Docker volume labelled as ours).
type Volume struct {
	// Name is the Docker volume name.
	Name  string
	SetID string
	// Volume is the set's name for it (SetVolumeMount.Volume).
	Volume string
}

// Set is everything found on the host for one set.
type Set struct {
	ID    string
	Infra *Container
	// Members are the set's other containers by member name.
	Members map[string]*Container
	// Extra holds containers of the set that are duplicates (a second
	// infra, two containers of one member name); they are always removed.
	Extra   []Container
	Ports   []Port
	Volumes []Volume
}

// Exists reports whether anything of the set is left on the host.
func (s *Set) Exists() bool {
	return s != nil && (s.Infra != nil || len(s.Members) > 0 || len(s.Extra) > 0 || len(s.Ports) > 0 || len(s.Volumes) > 0)
}

// Member returns the container of the named member, or nil.
func (s *Set) Member(name string) *Container {
	if s == nil {
		return nil
	}
	return s.Members[name]
}

// Generation is the highest generation label among the set's containers.
func (s *Set) Generation() int64 {
	var g int64
	for _, c := range s.Containers() {
		if c.Generation > g {
			g = c.Generation
		}
	}
	return g
}

// Containers lists the set's containers: infra first, then members by
// name, then extras.
func (s *Set) Containers() []Container {
	if s == nil {
		return nil
	}
	var out []Container
	if s.Infra != nil {
		out = append(out, *s.Infra)
	}
	names := make([]string, 0, len(s.Members))
	for n := range s.Members {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		out = append(out, *s.Members[n])
	}
	return append(out, s.Extra...)
}

// Port returns the observed port with the given ID, or nil.
func (s *Set) Port(portID string) *Port {
	if s == nil {
		return nil
	}
	for i := range s.Ports {
		if s.Ports[i].PortID == portID {
			return &s.Ports[i]
		}
	}
	return nil
}

// Group sorts containers, ports and volumes into sets keyed by set ID.
func Group(containers []Container, ports []Port, volumes ...Volume) map[string]*Set {
	sets := map[string]*Set{}
	get := func(id string) *Set {
		s, ok := sets[id]
		if !ok {
			s = &Set{ID: id, Members: map[string]*Container{}}
			sets[id] = s
		}
		return s
	}
	// Sort by ID so the same listing always yields the same grouping.
	cs := append([]Container(nil), containers...)
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].ID < cs[j].ID })
	for _, c := range cs {
		c := c
		if c.Member == "" {
			c.Member = c.Role
		}
		s := get(c.SetID)
		switch {
		case c.Role == RoleInfra && s.Infra == nil:
			s.Infra = &c
		case c.Role != RoleInfra && c.Member != RoleInfra && s.Members[c.Member] == nil:
			s.Members[c.Member] = &c
		default:
			s.Extra = append(s.Extra, c)
		}
	}
	for _, p := range ports {
		s := get(p.SetID)
		s.Ports = append(s.Ports, p)
	}
	for _, v := range volumes {
		s := get(v.SetID)
		s.Volumes = append(s.Volumes, v)
	}
	for _, s := range sets {
		sort.Slice(s.Ports, func(i, j int) bool { return s.Ports[i].PortID < s.Ports[j].PortID })
		sort.Slice(s.Volumes, func(i, j int) bool { return s.Volumes[i].Name < s.Volumes[j].Name })
	}
	return sets
}
