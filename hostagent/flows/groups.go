package flows

import (
	"fmt"
	"hash/fnv"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	"berth/schema"
)

// Remote groups. A rule whose remote is a security group (Neutron's
// remote_group_id) is an OpenFlow conjunctive match of two dimensions,
// as Neutron's OVS firewall renders it:
//
//	1/2  the port's side: its ofport, the rule's protocol and ports (port flows)
//	2/2  the peer's address is a member: one flow per (network, member address)
//	     carrying conjunction(tag,2/2) for every group it belongs to (group flows)
//
// and a complete conjunction looks up conj_id=tag, whose flow commits the
// connection in the port's zone and delivers it. Port rules never list
// member addresses, so a project of n servers in a group that admits its
// members holds O(n) flows instead of n² (one per member per port), and a
// member joining or leaving changes one address flow on each host instead
// of every port's rules.
//
// Priorities inside tables 20 and 41 (a packet meets the highest that
// matches): 200 invalid → drop, 190 established/related → pass, 100 a plain
// rule → commit, 99 either dimension of a remote-group rule, 95 the
// conjunction's accept flow, 90 the port's drop. OVS evaluates conjunctions
// only above the best plain match, so a plain rule that admits a packet
// wins, and a conjunction beats the port's drop. The accept flows must
// rank above the drop: OVS looks up conj_id=tag among every flow of the
// table (conjunctive ones aside) and takes the best match. Two complete
// conjunctions (a port with rules naming two groups the peer is in) are
// resolved by OVS to either; both accept the same way.
const (
	prioRule     = 100
	prioConj     = 99
	prioAccept   = 95
	prioPortDrop = 90
)

// MaxTag is the largest group tag (conjunction id) region hands out.
const MaxTag = 1<<31 - 1

// Member is one address of a group's port on a network.
type Member struct {
	VNI uint32
	IP  string
}

// Group is a security group that rules of local ports name as their remote.
type Group struct {
	// Tag is the group's conjunction id, unique in the region.
	Tag uint32
	// Members are its ports' addresses, by network.
	Members []Member
	// Ingress and Egress are the networks (VNIs) whose local ports have
	// ingress (egress) rules naming the group: only members on those
	// networks get address flows in table 41 (20), and the group an
	// accept flow there.
	Ingress, Egress []uint32
}

// conj is the action of one dimension flow of the conjunctions tags.
func conj(tags []uint32, dim string) string {
	tags = slices.Compact(slices.Sorted(slices.Values(tags)))
	parts := make([]string, len(tags))
	for i, t := range tags {
		parts[i] = "conjunction(" + strconv.FormatUint(uint64(t), 10) + "," + dim + ")"
	}
	return strings.Join(parts, ",")
}

// AddressKey is the cookie key of the group flows of one member address
// (1-65535; 0 holds the accept flows). Addresses whose keys collide share
// one flow set, which stays correct: a key's set is rendered whole.
func AddressKey(vni uint32, ip string) uint16 {
	h := fnv.New32a()
	fmt.Fprintf(h, "%d/%s", vni, ip)
	return uint16(1 + h.Sum32()%0xffff)
}

// GroupFlows renders the host's shared remote-group flows by cookie key:
// key 0 holds each group's accept flows (conj_id=tag), every other key the
// address flows (dimension 2/2) of the member addresses hashed to it.
// Malformed groups and members (tag 0 or too big, a bad VNI or address)
// are left out: their conjunctions never complete, so their rules admit
// nobody.
func GroupFlows(gs []Group) map[uint16][]Flow {
	type addr struct {
		table int
		vni   uint32
		ip    string
	}
	tags := map[addr][]uint32{}
	var accept []Flow
	for _, g := range gs {
		if g.Tag == 0 || g.Tag > MaxTag {
			continue
		}
		for _, d := range []struct {
			table int
			vnis  []uint32
			act   string
		}{
			{TableIngressCT, g.Ingress, "ct(commit,zone=NXM_NX_REG7[0..15]),output:NXM_NX_REG7[0..15]"},
			{TableEgress, g.Egress, fmt.Sprintf("ct(commit,zone=NXM_OF_IN_PORT[]),resubmit(,%d)", TableL2)},
		} {
			on := map[uint32]bool{}
			for _, v := range d.vnis {
				if v > 0 && v <= MaxVNI {
					on[v] = true
				}
			}
			if len(on) == 0 {
				continue
			}
			accept = append(accept, Flow{d.table, prioAccept, "conj_id=" + strconv.FormatUint(uint64(g.Tag), 10) + ",ip", d.act})
			for _, m := range g.Members {
				ip := net.ParseIP(m.IP).To4()
				if ip == nil || !on[m.VNI] {
					continue
				}
				a := addr{d.table, m.VNI, ip.String()}
				tags[a] = append(tags[a], g.Tag)
			}
		}
	}
	out := map[uint16][]Flow{}
	if len(accept) > 0 {
		out[0] = normalize(accept)
	}
	for a, ts := range tags {
		field := "nw_src"
		if a.table == TableEgress {
			field = "nw_dst"
		}
		k := AddressKey(a.vni, a.ip)
		out[k] = append(out[k], Flow{a.table, prioConj,
			fmt.Sprintf("%s=%#x,ct_state=+new-inv+trk,ip,%s=%s", regNet, a.vni, field, a.ip), conj(ts, "2/2")})
	}
	for k, fs := range out {
		out[k] = normalize(fs)
	}
	return out
}

// GroupsOf gathers, from the rules of a host's desired ports, which
// networks name each remote group in which direction, and joins them with
// the groups' members from the desired state: the input of GroupFlows.
// Sets being deleted count too: their port flows stay until unplumbed.
func GroupsOf(ds schema.DesiredState) []Group {
	type use struct{ in, eg map[uint32]bool }
	uses := map[uint32]*use{}
	for _, s := range ds.Sets {
		for _, p := range s.Ports {
			if !p.PortSecurity {
				continue
			}
			vni := VNIOf(p.NetworkID, p.VNI)
			for _, r := range p.Rules {
				if r.RemoteGroupTag <= 0 || r.RemoteGroupTag > MaxTag {
					continue
				}
				t := uint32(r.RemoteGroupTag)
				u := uses[t]
				if u == nil {
					u = &use{map[uint32]bool{}, map[uint32]bool{}}
					uses[t] = u
				}
				switch r.Direction {
				case "ingress":
					u.in[vni] = true
				case "egress":
					u.eg[vni] = true
				}
			}
		}
	}
	members := map[uint32][]Member{}
	for _, g := range ds.Groups {
		if g.Tag <= 0 || g.Tag > MaxTag || uses[uint32(g.Tag)] == nil {
			continue
		}
		for _, m := range g.Members {
			members[uint32(g.Tag)] = append(members[uint32(g.Tag)], Member{VNI: VNIOf(m.NetworkID, m.VNI), IP: m.IP})
		}
	}
	out := make([]Group, 0, len(uses))
	for _, t := range slices.Sorted(maps.Keys(uses)) {
		u := uses[t]
		out = append(out, Group{
			Tag: t, Members: members[t],
			Ingress: slices.Sorted(maps.Keys(u.in)), Egress: slices.Sorted(maps.Keys(u.eg)),
		})
	}
	return out
}
