package compute

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"

	"berth/region/novastate"
	"berth/region/store"
	"berth/schema"
)

// Nova's time formats: resource timestamps, and the usage timestamps
// (launched_at, terminated_at) with microseconds and no zone.
const (
	timeFormat  = "2006-01-02T15:04:05Z"
	usageFormat = "2006-01-02T15:04:05.000000"
)

func (a *API) serverLinks(r *http.Request, id string) []schema.Link {
	return serverLinksAt(a.baseURL(r), id)
}

func serverLinksAt(base, id string) []schema.Link {
	return []schema.Link{
		{Href: base + "/v2.1/servers/" + id, Rel: "self"},
		{Href: base + "/servers/" + id, Rel: "bookmark"},
	}
}

// hostID is Nova's opaque hostId: sha224 of project id + host name, so a
// tenant can tell whether two of its servers share a host, but not which.
func hostID(projectID, host string) string {
	if host == "" {
		return ""
	}
	sum := sha256.Sum224([]byte(projectID + host))
	return hex.EncodeToString(sum[:])
}

// progressOf is what the server's progress field shows: build steps while
// building, 100 once built; Nova reports progress only for these statuses.
func progressOf(s *store.Server) int {
	switch s.Status() {
	case "BUILD":
		switch s.TaskState.String {
		case novastate.TaskScheduling:
			return 10
		case novastate.TaskNetworking:
			return 30
		case novastate.TaskSpawning:
			if s.ObservedGeneration >= s.Generation {
				return 90
			}
			return 50
		}
		return 0
	case "ACTIVE", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING":
		return s.Progress
	}
	return 0
}

// viewOpts is everything a server's body depends on besides the server
// itself (its row, ports and their security groups, which
// store.ServerVersion versions): the request's base URL (links), its
// microversion and role, and, where the body shows it (admin, 2.16), the
// status of the server's host. renderServer reads nothing else, so a body
// rendered for a server version and a viewOpts is the body of every
// request with the same two (the render cache relies on it).
type viewOpts struct {
	base       string
	mv         Microversion
	admin      bool
	hostStatus string
}

// viewer makes the viewOpts of one request's servers.
type viewer struct {
	opts viewOpts
	// status is the host status of a server's host, when bodies show it.
	status func(host string) string
}

// viewerOf is the request's viewer. It reads the hosts table (at most
// once a second) where bodies show host_status, and never after.
func (a *API) viewerOf(r *http.Request) viewer {
	v := viewer{opts: viewOpts{base: a.baseURL(r), mv: versionOf(r.Context()), admin: identity(r.Context()).IsAdmin()}}
	if v.opts.showsHostStatus() {
		v.status = a.hostStatusOf(r.Context())
	}
	return v
}

// optsFor is the viewOpts of a server on host.
func (v viewer) optsFor(host string) viewOpts {
	o := v.opts
	if v.status != nil {
		o.hostStatus = v.status(host)
	}
	return o
}

// showsHostStatus: host_status is in admins' bodies from 2.16.
func (o viewOpts) showsHostStatus() bool { return o.admin && o.mv.AtLeast(Microversion{2, 16}) }

func (a *API) serverView(r *http.Request, s *store.Server) schema.Server {
	return renderServer(a.viewerOf(r).optsFor(s.Host.String), s)
}

// renderServer is the Nova body of s for a request with options o.
func renderServer(o viewOpts, s *store.Server) schema.Server {
	base := o.base
	meta := map[string]string{}
	_ = json.Unmarshal(s.Metadata, &meta)
	addrs := map[string][]schema.Address{}
	for _, p := range s.Ports {
		addrs[p.NetworkName] = append(addrs[p.NetworkName], schema.Address{
			MAC: p.MACAddress, Type: "fixed", Addr: p.IPAddress, Version: 4,
		})
	}
	v := schema.Server{
		ID: s.ID, Name: s.Name, Status: s.Status(), TenantID: s.ProjectID, UserID: s.UserID,
		Metadata: meta, HostID: hostID(s.ProjectID, s.Host.String),
		Image:   schema.Ref{ID: s.ImageID, Links: []schema.Link{{Href: base + "/images/" + s.ImageID, Rel: "bookmark"}}},
		Flavor:  schema.Ref{ID: s.FlavorID, Links: []schema.Link{{Href: base + "/flavors/" + s.FlavorID, Rel: "bookmark"}}},
		Created: s.CreatedAt.UTC().Format(timeFormat), Updated: s.UpdatedAt.UTC().Format(timeFormat),
		Addresses: addrs, AccessIPv4: s.AccessIPv4, AccessIPv6: s.AccessIPv6,
		Links: serverLinksAt(base, s.ID), Progress: progressOf(s), ConfigDrive: "",
		SecurityGroups: groupRefs(s.SecurityGroupNames),
		DiskConfig:     "MANUAL", AvailabilityZone: s.AvailabilityZone,
		PowerState: s.PowerState, VMState: s.VMState, VolumesAttached: []any{},
	}
	if s.TaskState.Valid {
		t := s.TaskState.String
		v.TaskState = &t
	}
	if s.KeyName.Valid {
		k := s.KeyName.String
		v.KeyName = &k
	}
	if s.LaunchedAt != nil {
		t := s.LaunchedAt.UTC().Format(usageFormat)
		v.LaunchedAt = &t
	}
	if s.TerminatedAt != nil {
		t := s.TerminatedAt.UTC().Format(usageFormat)
		v.TerminatedAt = &t
	}
	if len(s.Fault) > 0 && (s.VMState == novastate.Error || s.VMState == novastate.Deleted) {
		var f store.FaultBody
		if json.Unmarshal(s.Fault, &f) == nil {
			v.Fault = &schema.Fault{Code: f.Code, Message: f.Message, Created: f.Created.UTC().Format(timeFormat)}
		}
	}
	mv := o.mv
	if o.admin {
		host := s.Host.String
		name := "instance-" + s.ID
		v.Host, v.HypervisorHostname, v.InstanceName = &host, &host, &name
		if mv.AtLeast(Microversion{2, 3}) {
			empty, zero, hn, dev, res := "", 0, store.HostnameOf(s.Name), "/dev/sda", s.ReservationID
			v.ReservationID, v.LaunchIndex, v.Hostname = &res, &zero, &hn
			v.KernelID, v.RamdiskID, v.RootDeviceName = &empty, &empty, &dev
			if s.UserData.Valid {
				ud := s.UserData.String
				v.UserData = &ud
			}
		}
	}
	if mv.AtLeast(Microversion{2, 9}) {
		locked := s.Locked
		v.Locked = &locked
	}
	laterViewFields(o, s, &v)
	return v
}

// groupRefs is the server body's security_groups: the names of the groups
// on its ports, one entry a name (Nova de-duplicates by name too), and
// omitted when it has none.
func groupRefs(names []string) []schema.SecurityGroupRef {
	var out []schema.SecurityGroupRef
	for _, n := range names {
		out = append(out, schema.SecurityGroupRef{Name: n})
	}
	return out
}
