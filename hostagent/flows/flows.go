// Package flows renders the OpenFlow pipeline of a host's integration
// bridge: tenant isolation (a VNI per network carried in a register),
// anti-spoofing, stateful security groups over OVS conntrack and VXLAN
// forwarding between hosts. Rendering is pure; OFCtl installs and reads
// flows through ovs-ofctl.
//
// Tables (every packet enters table 0):
//
//	 0 classify      set port → reg6=VNI, go to 10; tunnel → reg6=tun_id, reg4=1, learn, go to 30;
//	                 LOCAL (the host) → ARP/IPv4 for a subnet whose gateway it holds: reg6=VNI, reg4=2, go to 30
//	10 port security own MAC+IP only (ARP: own spa/sha; no DHCP server replies); IPv4 → ct(zone=ofport) → 20
//	20 egress SG     +est/+rel pass; +new matching an egress rule → ct(commit) → 30; a remote-group
//	                 rule is a conjunction (port side × member address, see groups.go); else drop
//	30 L2 lookup     (reg6, dl_dst) of a local port → reg7=ofport, go to 40; broadcast ARP → flood
//	                 in the network; a set's frame to the host's MAC → LOCAL; other unicast from a
//	                 local port → 35
//	35 remote MACs   learned (reg6, MAC) → tunnel with tun_id=VNI; else flood to every tunnel
//	40 ingress       ARP → port; IPv4 → ct(zone=ofport) → 41
//	41 ingress SG    +est/+rel → port; +new matching an ingress rule (or both sides of a remote-group
//	                 conjunction) → ct(commit) → port; else drop
//
// The bridge's own port (LOCAL, the host) joins the networks whose gateway
// address the host holds, on this host only: what it sends skips port
// security (the host is trusted) but meets each set's ingress security
// group like any other sender; it never enters a tunnel, and nothing from
// a tunnel reaches it (every host may hold the same gateway address).
//
// Every flow carries a cookie: 0xbe, a 16-bit tag of the host, a kind
// (host-level, port, learned), a 16-bit key (the ofport for port flows) and
// a 20-bit digest of the flow set it belongs to. Flows are replaced by
// adding the new set and deleting cookies of older digests in one bundle, so
// a change never opens a window, and an agent restart finds its own flows by
// cookie instead of adding duplicates.
package flows

import (
	"fmt"
	"hash/fnv"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"

	"berth/schema"
)

// Tables of the pipeline.
const (
	TableClassify  = 0
	TablePortSec   = 10
	TableEgress    = 20
	TableL2        = 30
	TableRemote    = 35
	TableIngress   = 40
	TableIngressCT = 41
)

// Registers: the network (VNI), the destination ofport and where the
// packet came from (originSet, originTunnel, originHost).
const (
	regNet    = "reg6"
	regDst    = "reg7"
	regOrigin = "reg4"
)

// Values of regOrigin.
const (
	originSet    = 0
	originTunnel = 1
	originHost   = 2
)

// LocalPort is the bridge's own port as ovs-ofctl names it.
const LocalPort = "LOCAL"

// LearnTimeout is how long (seconds) a remote MAC learned from a tunnel
// is kept.
const LearnTimeout = 300

// MaxOFPort is the highest ofport a port flow can key (OpenFlow's
// physical port range).
const MaxOFPort = 0xfeff

// MaxVNI is the largest VXLAN network identifier.
const MaxVNI = 1<<24 - 1

// Kind is the class of a flow, part of its cookie.
type Kind uint8

// Flow kinds.
const (
	// KindHost flows belong to the host: table defaults, per-network
	// flooding, tunnel classification.
	KindHost Kind = 1
	// KindPort flows belong to one set port (the cookie key is its ofport).
	KindPort Kind = 2
	// KindLearn flows are remote MACs learned from tunnels.
	KindLearn Kind = 3
	// KindGroup flows are the shared remote-group flows (GroupFlows); the
	// cookie key is 0 for the accept flows, else an AddressKey.
	KindGroup Kind = 4
)

const cookieMagic = 0xbe

// Cookie masks: all of a host's flows, one kind of them, one key of a
// kind, one exact cookie.
const (
	MaskHost uint64 = 0xffffff0000000000
	MaskKind uint64 = 0xfffffff000000000
	MaskKey  uint64 = 0xfffffffffff00000
	MaskAll  uint64 = 0xffffffffffffffff
)

// HostTag is the 16-bit tag of a host name carried in its cookies.
func HostTag(host string) uint16 {
	h := fnv.New32a()
	h.Write([]byte(host))
	s := h.Sum32()
	return uint16(s>>16) ^ uint16(s)
}

// Cookie builds a flow cookie.
func Cookie(tag uint16, kind Kind, key uint16, digest uint32) uint64 {
	return uint64(cookieMagic)<<56 | uint64(tag)<<40 | uint64(kind&0xf)<<36 | uint64(key)<<20 | uint64(digest&0xfffff)
}

// CookieKind returns the kind part of a cookie.
func CookieKind(c uint64) Kind { return Kind(c >> 36 & 0xf) }

// CookieKey returns the key and digest parts of a cookie.
func CookieKey(c uint64) (key uint16, digest uint32) {
	return uint16(c >> 20), uint32(c & 0xfffff)
}

// Flow is one OpenFlow rule without its cookie.
type Flow struct {
	Table    int
	Priority int
	// Match in ovs-ofctl syntax, e.g. "in_port=3,ip"; "" matches all.
	Match string
	// Actions in ovs-ofctl syntax, e.g. "resubmit(,30)".
	Actions string
}

// String is the flow as ovs-ofctl reads it, without a cookie.
func (f Flow) String() string {
	s := "table=" + strconv.Itoa(f.Table) + ",priority=" + strconv.Itoa(f.Priority)
	if f.Match != "" {
		s += "," + f.Match
	}
	return s + ",actions=" + f.Actions
}

// Spec is the flow as an ovs-ofctl add line with cookie.
func (f Flow) Spec(cookie uint64) string {
	return fmt.Sprintf("cookie=%#x,%s", cookie, f)
}

// Digest is the 20-bit digest of a flow set, independent of order.
func Digest(fs []Flow) uint32 {
	lines := make([]string, len(fs))
	for i, f := range fs {
		lines[i] = f.String()
	}
	sort.Strings(lines)
	h := fnv.New32a()
	for _, l := range lines {
		h.Write([]byte(l))
		h.Write([]byte{'\n'})
	}
	return h.Sum32() & 0xfffff
}

// normalize sorts flows (table, priority descending, match) and drops
// later duplicates of a (table, priority, match), which OpenFlow would
// merge into one flow anyway.
func normalize(fs []Flow) []Flow {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.Table != b.Table {
			return a.Table < b.Table
		}
		if a.Priority != b.Priority {
			return a.Priority > b.Priority
		}
		return a.Match < b.Match
	})
	out := fs[:0]
	for i, f := range fs {
		if i > 0 && f.Table == fs[i-1].Table && f.Priority == fs[i-1].Priority && f.Match == fs[i-1].Match {
			continue
		}
		out = append(out, f)
	}
	return out
}

// VNIOf is a network's VXLAN network identifier: seg when region gave one,
// else one derived from the network ID (the same on every host).
func VNIOf(networkID string, seg int) uint32 {
	if seg > 0 && seg <= MaxVNI {
		return uint32(seg)
	}
	h := fnv.New32a()
	h.Write([]byte(networkID))
	v := h.Sum32() & MaxVNI
	if v == 0 {
		v = 1
	}
	return v
}

// Port is a set port as the pipeline sees it.
type Port struct {
	// OFPort is the port's OpenFlow port number; it is also its conntrack
	// zone and its key in cookies.
	OFPort int
	// VNI identifies the port's network.
	VNI uint32
	MAC string
	IP  string
	// Secure turns on anti-spoofing and security groups (port_security).
	Secure bool
	Rules  []schema.SetRule
}

// Zone is the port's conntrack zone.
func (p Port) Zone() int { return p.OFPort }

func (p Port) validate() (net.HardwareAddr, net.IP, error) {
	if p.OFPort <= 0 || p.OFPort > MaxOFPort {
		return nil, nil, fmt.Errorf("ofport %d out of range", p.OFPort)
	}
	if p.VNI == 0 || p.VNI > MaxVNI {
		return nil, nil, fmt.Errorf("vni %d out of range", p.VNI)
	}
	mac, err := net.ParseMAC(p.MAC)
	if err != nil || len(mac) != 6 {
		return nil, nil, fmt.Errorf("bad mac %q", p.MAC)
	}
	ip := net.ParseIP(p.IP).To4()
	if ip == nil {
		return nil, nil, fmt.Errorf("bad ipv4 address %q", p.IP)
	}
	return mac, ip, nil
}

// PortFlows renders the flows of one set port.
func PortFlows(p Port) ([]Flow, error) {
	mac, ip, err := p.validate()
	if err != nil {
		return nil, err
	}
	o, z := p.OFPort, p.Zone()
	inPort := "in_port=" + strconv.Itoa(o)
	dst := regDst + "=" + strconv.Itoa(o)
	out := "output:" + strconv.Itoa(o)
	fs := []Flow{
		{TableClassify, 100, inPort, fmt.Sprintf("load:%#x->NXM_NX_REG6[],resubmit(,%d)", p.VNI, TablePortSec)},
		{TableL2, 100, fmt.Sprintf("%s=%#x,dl_dst=%s", regNet, p.VNI, mac), fmt.Sprintf("load:%#x->NXM_NX_REG7[],resubmit(,%d)", o, TableIngress)},
	}
	if !p.Secure {
		// No port security: anything the port sends stays in its network.
		fs = append(fs,
			Flow{TablePortSec, 100, inPort, fmt.Sprintf("resubmit(,%d)", TableL2)},
			Flow{TableIngress, 100, dst, out},
		)
		return normalize(fs), nil
	}
	ct := fmt.Sprintf("ct(table=%%d,zone=%d)", z)
	commit := fmt.Sprintf("ct(commit,zone=%d)", z)
	fs = append(fs,
		// A set never answers DHCP, whatever its addresses.
		Flow{TablePortSec, 110, inPort + ",udp,tp_src=67", "drop"},
		Flow{TablePortSec, 100, fmt.Sprintf("%s,arp,dl_src=%s,arp_spa=%s,arp_sha=%s", inPort, mac, ip, mac), fmt.Sprintf("resubmit(,%d)", TableL2)},
		Flow{TablePortSec, 100, fmt.Sprintf("%s,ip,dl_src=%s,nw_src=%s", inPort, mac, ip), fmt.Sprintf(ct, TableEgress)},
		Flow{TablePortSec, 90, inPort, "drop"},

		Flow{TableEgress, 200, inPort + ",ct_state=+inv+trk,ip", "drop"},
		Flow{TableEgress, 190, inPort + ",ct_state=+est-inv+trk,ip", fmt.Sprintf("resubmit(,%d)", TableL2)},
		Flow{TableEgress, 190, inPort + ",ct_state=+rel-inv+trk,ip", fmt.Sprintf("resubmit(,%d)", TableL2)},
		Flow{TableEgress, prioPortDrop, inPort, "drop"},

		Flow{TableIngress, 100, dst + ",arp", out},
		Flow{TableIngress, 100, dst + ",ip", fmt.Sprintf(ct, TableIngressCT)},
		Flow{TableIngress, 90, dst, "drop"},

		Flow{TableIngressCT, 200, dst + ",ct_state=+inv+trk,ip", "drop"},
		Flow{TableIngressCT, 190, dst + ",ct_state=+est-inv+trk,ip", out},
		Flow{TableIngressCT, 190, dst + ",ct_state=+rel-inv+trk,ip", out},
		Flow{TableIngressCT, prioPortDrop, dst, "drop"},
	)
	// The port's side of remote-group rules (conjunction dimension 1/2),
	// by flow: rules with the same protocol and ports naming several
	// groups share one flow carrying each group's conjunction.
	type side struct {
		table int
		match string
	}
	sides := map[side][]uint32{}
	for i, r := range p.Rules {
		if r.RemoteGroup != "" || r.RemoteGroupTag != 0 {
			if r.RemoteGroupTag <= 0 || r.RemoteGroupTag > MaxTag || len(r.Remote) > 0 {
				return nil, fmt.Errorf("rule %d: remote group %q with tag %d and remote %v", i, r.RemoteGroup, r.RemoteGroupTag, r.Remote)
			}
			matches, err := ruleMatches(r, false)
			if err != nil {
				return nil, fmt.Errorf("rule %d: %w", i, err)
			}
			for _, m := range matches {
				sd := side{TableEgress, inPort + ",ct_state=+new-inv+trk," + m}
				if r.Direction == "ingress" {
					sd = side{TableIngressCT, dst + ",ct_state=+new-inv+trk," + m}
				}
				sides[sd] = append(sides[sd], uint32(r.RemoteGroupTag))
			}
			continue
		}
		matches, err := RuleMatches(r)
		if err != nil {
			return nil, fmt.Errorf("rule %d: %w", i, err)
		}
		for _, m := range matches {
			switch r.Direction {
			case "ingress":
				fs = append(fs, Flow{TableIngressCT, prioRule, dst + ",ct_state=+new-inv+trk," + m, commit + "," + out})
			case "egress":
				fs = append(fs, Flow{TableEgress, prioRule, inPort + ",ct_state=+new-inv+trk," + m, commit + fmt.Sprintf(",resubmit(,%d)", TableL2)})
			}
		}
	}
	for sd, tags := range sides {
		fs = append(fs, Flow{sd.table, prioConj, sd.match, conj(tags, "1/2")})
	}
	return normalize(fs), nil
}

// RuleMatches renders one security group rule as the matches (protocol,
// ports, remote address) of the flows that admit a new connection. A
// remote-group rule has no such matches (it is a conjunction, see
// GroupFlows) and is an error here.
func RuleMatches(r schema.SetRule) ([]string, error) {
	if r.RemoteGroup != "" || r.RemoteGroupTag != 0 {
		return nil, fmt.Errorf("remote group %q is matched by conjunction, not by address", r.RemoteGroup)
	}
	return ruleMatches(r, true)
}

// ruleMatches is RuleMatches; without withRemote it leaves the remote
// addresses out (the port's side of a remote-group rule).
func ruleMatches(r schema.SetRule, withRemote bool) ([]string, error) {
	if r.Direction != "ingress" && r.Direction != "egress" {
		return nil, fmt.Errorf("bad direction %q", r.Direction)
	}
	proto, err := protocol(r.Protocol)
	if err != nil {
		return nil, err
	}
	var ports []string
	switch proto {
	case "tcp", "udp":
		if r.PortMin < 0 || r.PortMax < 0 || r.PortMin > 65535 || r.PortMax > 65535 {
			return nil, fmt.Errorf("bad port range %d-%d", r.PortMin, r.PortMax)
		}
		for _, pm := range PortRangeMasks(r.PortMin, r.PortMax) {
			ports = append(ports, "tp_dst="+pm)
		}
	case "icmp":
		var parts []string
		if r.PortMin > 0 {
			if r.PortMin > 255 {
				return nil, fmt.Errorf("bad icmp type %d", r.PortMin)
			}
			parts = append(parts, "icmp_type="+strconv.Itoa(r.PortMin))
		}
		if r.PortMax > 0 {
			if r.PortMax > 255 {
				return nil, fmt.Errorf("bad icmp code %d", r.PortMax)
			}
			parts = append(parts, "icmp_code="+strconv.Itoa(r.PortMax))
		}
		if len(parts) > 0 {
			ports = []string{strings.Join(parts, ",")}
		}
	}
	if len(ports) == 0 {
		ports = []string{""}
	}
	field := "nw_src"
	if r.Direction == "egress" {
		field = "nw_dst"
	}
	var remotes []string
	for _, c := range r.Remote {
		if !withRemote {
			break
		}
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			ip := net.ParseIP(c).To4()
			if ip == nil {
				return nil, fmt.Errorf("bad remote %q", c)
			}
			n = &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}
		}
		if n.IP.To4() == nil {
			return nil, fmt.Errorf("remote %q is not ipv4", c)
		}
		ones, _ := n.Mask.Size()
		if ones == 0 {
			remotes = []string{""} // anywhere
			break
		}
		if ones == 32 {
			remotes = append(remotes, field+"="+n.IP.String())
		} else {
			remotes = append(remotes, field+"="+n.String())
		}
	}
	if len(remotes) == 0 {
		remotes = []string{""}
	}
	var out []string
	for _, rm := range remotes {
		for _, pt := range ports {
			m := proto
			for _, x := range []string{rm, pt} {
				if x != "" {
					m += "," + x
				}
			}
			out = append(out, m)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// protocol maps a Neutron protocol (name or number) to an ovs-ofctl match.
func protocol(p string) (string, error) {
	switch strings.ToLower(p) {
	case "", "any":
		return "ip", nil
	case "tcp", "6":
		return "tcp", nil
	case "udp", "17":
		return "udp", nil
	case "icmp", "1":
		return "icmp", nil
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 255 {
		return "", fmt.Errorf("unsupported protocol %q", p)
	}
	return "ip,nw_proto=" + strconv.Itoa(n), nil
}

// PortRangeMasks splits a port range into value/mask matches; nil means
// any port. lo=hi=0 is any; hi=0 is the single port lo.
func PortRangeMasks(lo, hi int) []string {
	if lo == 0 && hi == 0 {
		return nil
	}
	if hi == 0 {
		hi = lo
	}
	if lo > hi {
		lo, hi = hi, lo
	}
	if lo <= 1 && hi >= 65535 {
		return nil
	}
	var out []string
	for lo <= hi {
		size := 1
		for lo%(size*2) == 0 && lo+size*2-1 <= hi && size < 1<<16 {
			size *= 2
		}
		if size == 1 {
			out = append(out, strconv.Itoa(lo))
		} else {
			out = append(out, fmt.Sprintf("%#x/%#x", lo, 0xffff&^(size-1)))
		}
		lo += size
	}
	return out
}

// Network is one network with ports on this host.
type Network struct {
	VNI uint32
	// Ports are the ofports of its local set ports.
	Ports []int
}

// Local is a network the host itself (the bridge's LOCAL port) is on: the
// host holds the gateway address of its subnet.
type Local struct {
	VNI uint32
	// Subnet is the network's IPv4 subnet, e.g. "10.99.0.0/24": what the
	// host sends into it is classified by destination address.
	Subnet string
	// MAC is the LOCAL port's MAC address: sets' frames to it go to the
	// host.
	MAC string
}

// Host is what the host-level flows depend on.
type Host struct {
	Networks []Network
	// Locals are the networks the host is on; only ones with local set
	// ports (in Networks) get flows.
	Locals []Local
	// Tunnels are the ofports of the VXLAN ports to peer hosts.
	Tunnels []int
	// LearnCookie marks flows learned from tunnels.
	LearnCookie uint64
}

// HostFlows renders the host-level flows: table defaults (drop), flooding
// of broadcast ARP within each network, unknown unicast to the tunnels and
// classification of tunnel traffic by VNI.
func HostFlows(h Host) []Flow {
	fs := []Flow{
		// Beats OVS's default NORMAL flow (priority 0) without removing it.
		{TableClassify, 1, "", "drop"},
	}
	for _, t := range []int{TablePortSec, TableEgress, TableL2, TableRemote, TableIngress, TableIngressCT} {
		fs = append(fs, Flow{t, 0, "", "drop"})
	}
	tunnels := slices.Sorted(slices.Values(h.Tunnels))
	tunOut := func(vni uint32) string {
		parts := []string{fmt.Sprintf("set_field:%#x->tun_id", vni)}
		for _, t := range tunnels {
			parts = append(parts, "output:"+strconv.Itoa(t))
		}
		return strings.Join(parts, ",")
	}
	for _, t := range tunnels {
		fs = append(fs, Flow{TableClassify, 100, "in_port=" + strconv.Itoa(t),
			fmt.Sprintf("move:NXM_NX_TUN_ID[0..23]->NXM_NX_REG6[0..23],load:0x1->NXM_NX_REG4[],"+
				"learn(table=%d,hard_timeout=%d,priority=100,cookie=%#x,NXM_NX_REG6[],NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[],"+
				"load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[],output:NXM_OF_IN_PORT[]),resubmit(,%d)",
				TableRemote, LearnTimeout, h.LearnCookie, TableL2)})
	}
	// One subnet per network, and no two overlapping: the host's packet
	// must belong to one network (the lowest VNI wins).
	locals := map[uint32]Local{}
	var subnets []*net.IPNet
	ls := slices.Clone(h.Locals)
	sort.SliceStable(ls, func(i, j int) bool { return ls[i].VNI < ls[j].VNI })
next:
	for _, l := range ls {
		if _, dup := locals[l.VNI]; dup || !validLocal(l) {
			continue
		}
		_, sn, _ := net.ParseCIDR(l.Subnet)
		for _, o := range subnets {
			if o.Contains(sn.IP) || sn.Contains(o.IP) {
				continue next
			}
		}
		subnets = append(subnets, sn)
		locals[l.VNI] = l
	}
	nets := slices.Clone(h.Networks)
	sort.Slice(nets, func(i, j int) bool { return nets[i].VNI < nets[j].VNI })
	for _, n := range nets {
		if len(n.Ports) == 0 {
			continue
		}
		var ports []string
		for _, p := range slices.Sorted(slices.Values(n.Ports)) {
			ports = append(ports, "output:"+strconv.Itoa(p))
		}
		toPorts := strings.Join(ports, ",")
		bcast := fmt.Sprintf("%s=%#x,arp,dl_dst=ff:ff:ff:ff:ff:ff", regNet, n.VNI)
		fromSet := toPorts
		l, onNet := locals[n.VNI]
		if onNet {
			fromSet += ",output:" + LocalPort
		}
		if len(tunnels) > 0 {
			fromSet += "," + tunOut(n.VNI)
		}
		fs = append(fs,
			Flow{TableL2, 50, fmt.Sprintf("%s=%d,%s", regOrigin, originSet, bcast), fromSet},
			Flow{TableL2, 50, fmt.Sprintf("%s=%d,%s", regOrigin, originTunnel, bcast), toPorts},
		)
		if onNet {
			vni := fmt.Sprintf("load:%#x->NXM_NX_REG6[],load:%#x->NXM_NX_REG4[],resubmit(,%d)", n.VNI, originHost, TableL2)
			fs = append(fs,
				// The host's ARP and IPv4 into the subnet; anything else
				// it sends meets table 0's drop.
				Flow{TableClassify, 100, "in_port=" + LocalPort + ",arp,arp_tpa=" + l.Subnet, vni},
				Flow{TableClassify, 100, "in_port=" + LocalPort + ",ip,nw_dst=" + l.Subnet, vni},
				Flow{TableL2, 50, fmt.Sprintf("%s=%d,%s", regOrigin, originHost, bcast), toPorts},
				// A set's frames to the host (ARP replies, IPv4 to the
				// gateway or routed through it), after its egress rules.
				// (Above a set port's flow, should a set carry the host's MAC.)
				Flow{TableL2, 110, fmt.Sprintf("%s=%d,%s=%#x,dl_dst=%s", regOrigin, originSet, regNet, n.VNI, strings.ToLower(l.MAC)), "output:" + LocalPort},
			)
		}
		if len(tunnels) > 0 {
			fs = append(fs,
				Flow{TableL2, 10, fmt.Sprintf("%s=%d,%s=%#x,dl_dst=00:00:00:00:00:00/01:00:00:00:00:00", regOrigin, originSet, regNet, n.VNI), fmt.Sprintf("resubmit(,%d)", TableRemote)},
				Flow{TableRemote, 10, fmt.Sprintf("%s=%#x", regNet, n.VNI), tunOut(n.VNI)},
			)
		}
	}
	return normalize(fs)
}

// validLocal reports whether l renders into well-formed flows (a
// unicast MAC, an IPv4 subnet in canonical form).
func validLocal(l Local) bool {
	mac, err := net.ParseMAC(l.MAC)
	if err != nil || len(mac) != 6 || mac[0]&1 != 0 || l.VNI == 0 || l.VNI > MaxVNI {
		return false
	}
	ip, n, err := net.ParseCIDR(l.Subnet)
	return err == nil && ip.To4() != nil && n.String() == l.Subnet
}
