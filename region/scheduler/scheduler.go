// Package scheduler chooses hosts for sets. It is pure: a snapshot of hosts
// goes in, an ordered list of candidates comes out, and nothing is read or
// written. The store claims capacity on the first candidate that still has
// room inside the create transaction, so a stale snapshot can never lead to
// an overcommitted host (see store.CreateServer).
package scheduler

import (
	"cmp"
	"slices"
	"time"
)

// HostState is a host as the scheduler sees it.
type HostState struct {
	Name          string
	VCPUs         int
	MemoryMB      int
	DiskGB        int
	CPURatio      float64
	RAMRatio      float64
	DiskRatio     float64
	VCPUsUsed     int
	MemoryMBUsed  int
	DiskGBUsed    int
	Disabled      bool
	LastHeartbeat time.Time
	Labels        map[string]string
}

// FreeVCPUs is the vCPUs still claimable under the overcommit ratio.
func (h HostState) FreeVCPUs() int { return int(float64(h.VCPUs)*h.CPURatio) - h.VCPUsUsed }

// FreeMemoryMB is the memory still claimable under the overcommit ratio.
func (h HostState) FreeMemoryMB() int {
	return int(float64(h.MemoryMB)*h.RAMRatio) - h.MemoryMBUsed
}

// FreeDiskGB is the disk still claimable under the overcommit ratio.
func (h HostState) FreeDiskGB() int { return int(float64(h.DiskGB)*h.DiskRatio) - h.DiskGBUsed }

// Request is what one set needs.
type Request struct {
	VCPUs    int
	MemoryMB int
	DiskGB   int
	// ForceHost restricts placement to one host (admin "az:host").
	ForceHost string
	// Now and Grace decide which hosts are up: a host whose last heartbeat
	// is older than Now-Grace is skipped.
	Now   time.Time
	Grace time.Duration
}

// Filter rejects hosts that cannot take a request; it returns the reason.
type Filter func(h HostState, r Request) (ok bool, reason string)

// DefaultFilters are applied in order, like Nova's enabled_filters.
var DefaultFilters = []Filter{
	func(h HostState, r Request) (bool, string) {
		return r.ForceHost == "" || h.Name == r.ForceHost, "not the forced host"
	},
	func(h HostState, _ Request) (bool, string) { return !h.Disabled, "disabled" },
	func(h HostState, r Request) (bool, string) {
		return r.Grace <= 0 || r.Now.Sub(h.LastHeartbeat) <= r.Grace, "down"
	},
	func(h HostState, r Request) (bool, string) { return h.FreeVCPUs() >= r.VCPUs, "not enough vCPUs" },
	func(h HostState, r Request) (bool, string) {
		return h.FreeMemoryMB() >= r.MemoryMB, "not enough RAM"
	},
	func(h HostState, r Request) (bool, string) { return h.FreeDiskGB() >= r.DiskGB, "not enough disk" },
}

// Rank returns the names of the hosts that pass every filter, best first.
// Hosts are weighed like Nova's default RAM weigher (spread: most free RAM
// first), with the name as a stable tie-break. rejected counts the hosts
// each filter reason removed, for the "No valid host" fault.
func Rank(hosts []HostState, r Request) (names []string, rejected map[string]int) {
	rejected = map[string]int{}
	passing := make([]HostState, 0, len(hosts))
hostLoop:
	for _, h := range hosts {
		for _, f := range DefaultFilters {
			if ok, why := f(h, r); !ok {
				rejected[why]++
				continue hostLoop
			}
		}
		passing = append(passing, h)
	}
	slices.SortFunc(passing, func(a, b HostState) int {
		if c := cmp.Compare(b.FreeMemoryMB(), a.FreeMemoryMB()); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	names = make([]string, len(passing))
	for i, h := range passing {
		names[i] = h.Name
	}
	return names, rejected
}

// Server group policies (os-server-groups).
const (
	Affinity         = "affinity"
	AntiAffinity     = "anti-affinity"
	SoftAffinity     = "soft-affinity"
	SoftAntiAffinity = "soft-anti-affinity"
)

// ApplyGroup filters and reorders ranked candidates for a server group
// whose members run on memberHosts (host → member count). Hard policies
// filter (affinity: only the members' host once there is one;
// anti-affinity: never a member's host); soft ones only reorder (most
// members first, or fewest first), keeping the rank order among equals.
func ApplyGroup(candidates []string, policy string, memberHosts map[string]int) []string {
	out := make([]string, 0, len(candidates))
	switch policy {
	case Affinity:
		for _, c := range candidates {
			if len(memberHosts) == 0 || memberHosts[c] > 0 {
				out = append(out, c)
			}
		}
	case AntiAffinity:
		for _, c := range candidates {
			if memberHosts[c] == 0 {
				out = append(out, c)
			}
		}
	case SoftAffinity, SoftAntiAffinity:
		out = append(out, candidates...)
		slices.SortStableFunc(out, func(a, b string) int {
			if policy == SoftAffinity {
				return cmp.Compare(memberHosts[b], memberHosts[a])
			}
			return cmp.Compare(memberHosts[a], memberHosts[b])
		})
	default:
		out = append(out, candidates...)
	}
	return out
}
