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
type Filter func(h *HostState, r *Request) (ok bool, reason string)

// DefaultFilters are applied in order, like Nova's enabled_filters.
var DefaultFilters = []Filter{
	func(h *HostState, r *Request) (bool, string) {
		return r.ForceHost == "" || h.Name == r.ForceHost, "not the forced host"
	},
	func(h *HostState, _ *Request) (bool, string) { return !h.Disabled, "disabled" },
	func(h *HostState, r *Request) (bool, string) {
		return r.Grace <= 0 || r.Now.Sub(h.LastHeartbeat) <= r.Grace, "down"
	},
	func(h *HostState, r *Request) (bool, string) { return h.FreeVCPUs() >= r.VCPUs, "not enough vCPUs" },
	func(h *HostState, r *Request) (bool, string) {
		return h.FreeMemoryMB() >= r.MemoryMB, "not enough RAM"
	},
	func(h *HostState, r *Request) (bool, string) { return h.FreeDiskGB() >= r.DiskGB, "not enough disk" },
}

// Best is how many of the passing hosts Rank orders by weight. A placement
// claims the first candidate that still has room, and only a stale snapshot
// or a race makes it go past the first few, so ordering all of them is
// wasted work: a full sort of 10,000 hosts is ~7 ms per placement, the
// partial selection well under one.
const Best = 32

// Rank returns the names of the hosts that pass every filter, best first.
// Hosts are weighed like Nova's default RAM weigher (spread: most free RAM
// first), with the name as a stable tie-break. Only the first Best names
// are in weight order; the other passing hosts follow in no particular order, so
// a claim that loses every race still has every possible host to try.
// rejected counts the hosts each filter reason removed, for the "No valid
// host" fault.
func Rank(hosts []HostState, r Request) (names []string, rejected map[string]int) {
	rejected = map[string]int{}
	// top is a min-heap (worst at top[0]) of the best passing hosts' indexes.
	top := make([]int, 0, Best)
	rest := make([]int, 0, len(hosts))
	worse := func(i, j int) bool { // host i weighs less than host j
		if fi, fj := hosts[i].FreeMemoryMB(), hosts[j].FreeMemoryMB(); fi != fj {
			return fi < fj
		}
		return hosts[i].Name > hosts[j].Name
	}
hostLoop:
	for i := range hosts {
		h := &hosts[i]
		for _, f := range DefaultFilters {
			if ok, why := f(h, &r); !ok {
				rejected[why]++
				continue hostLoop
			}
		}
		switch {
		case len(top) < Best:
			top = append(top, i)
			heapUp(top, len(top)-1, worse)
		case worse(top[0], i):
			rest = append(rest, top[0])
			top[0] = i
			heapDown(top, 0, worse)
		default:
			rest = append(rest, i)
		}
	}
	slices.SortFunc(top, func(a, b int) int {
		if worse(b, a) {
			return -1
		}
		if worse(a, b) {
			return 1
		}
		return 0
	})
	names = make([]string, 0, len(top)+len(rest))
	for _, i := range top {
		names = append(names, hosts[i].Name)
	}
	for _, i := range rest {
		names = append(names, hosts[i].Name)
	}
	return names, rejected
}

// Heavier reports whether host a weighs more than host b in Rank's order:
// more free RAM, then the name.
func Heavier(a, b *HostState) bool {
	if fa, fb := a.FreeMemoryMB(), b.FreeMemoryMB(); fa != fb {
		return fa > fb
	}
	return a.Name < b.Name
}

// RankFirst is Rank over hosts kept in weight order (order holds indexes
// of hosts, heaviest first by Heavier): it returns the first limit hosts
// that pass every filter, best first, and stops there. complete reports
// whether it looked at every host, so that names are all the candidates
// and rejected counts every reason; a fleet with room passes its first
// few hosts, so a placement costs a few filter calls instead of one per
// host.
func RankFirst(hosts []HostState, order []int, r Request, limit int) (names []string, rejected map[string]int, complete bool) {
	rejected = map[string]int{}
	names = make([]string, 0, limit)
hostLoop:
	for _, i := range order {
		if len(names) == limit {
			return names, rejected, false
		}
		h := &hosts[i]
		for _, f := range DefaultFilters {
			if ok, why := f(h, &r); !ok {
				rejected[why]++
				continue hostLoop
			}
		}
		names = append(names, h.Name)
	}
	return names, rejected, true
}

func heapUp(h []int, i int, less func(a, b int) bool) {
	for i > 0 {
		p := (i - 1) / 2
		if !less(h[i], h[p]) {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func heapDown(h []int, i int, less func(a, b int) bool) {
	for {
		l, m := 2*i+1, i
		if l < len(h) && less(h[l], h[m]) {
			m = l
		}
		if r := l + 1; r < len(h) && less(h[r], h[m]) {
			m = r
		}
		if m == i {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
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
	for _, c := range candidates {
		if GroupAllows(policy, 0, memberHosts, c) {
			out = append(out, c)
		}
	}
	if policy == SoftAffinity || policy == SoftAntiAffinity {
		slices.SortStableFunc(out, func(a, b string) int { return groupOrder(policy, memberHosts, a, b) })
	}
	return out
}

// GroupAllows reports whether a group's policy lets one more member go to
// host, its members running on memberHosts (host → member count, no zero
// counts). maxPerHost > 1 is anti-affinity's max_server_per_host rule
// (microversion 2.64): up to that many members on one host. Soft policies
// allow every host.
func GroupAllows(policy string, maxPerHost int, memberHosts map[string]int, host string) bool {
	switch policy {
	case Affinity:
		return len(memberHosts) == 0 || memberHosts[host] > 0
	case AntiAffinity:
		return memberHosts[host] < max(maxPerHost, 1)
	}
	return true
}

// groupOrder compares two hosts for a soft policy: below 0 when a is
// preferred (more members for soft-affinity, fewer for soft-anti-affinity).
func groupOrder(policy string, memberHosts map[string]int, a, b string) int {
	if policy == SoftAffinity {
		return cmp.Compare(memberHosts[b], memberHosts[a])
	}
	return cmp.Compare(memberHosts[a], memberHosts[b])
}

// GroupPick is the first host of ApplyGroup's order that skip does not
// rule out, without building that order: the first allowed candidate for
// a hard policy (or none), the most preferred one for a soft policy (rank
// order among equals). It scans candidates once.
func GroupPick(candidates []string, policy string, maxPerHost int, memberHosts map[string]int, skip func(string) bool) (string, bool) {
	soft := policy == SoftAffinity || policy == SoftAntiAffinity
	best, found := "", false
	for _, c := range candidates {
		if !GroupAllows(policy, maxPerHost, memberHosts, c) || skip(c) {
			continue
		}
		if !soft {
			return c, true
		}
		if !found || groupOrder(policy, memberHosts, c, best) < 0 {
			best, found = c, true
		}
	}
	return best, found
}
