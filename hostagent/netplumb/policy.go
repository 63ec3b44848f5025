package netplumb

import (
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"berth/hostagent/flows"
	"berth/hostagent/shaper"
	"berth/schema"
)

// A port's policy is its data path beyond the veth: the OpenFlow rules
// (isolation, anti-spoofing, security groups), its shaping and its MTU.
// Plumb applies it; ApplyPolicy re-applies it live (a generation with new
// rules or bandwidth); Policy tells whether what the switch and the kernel
// hold still matches (flows lost to a vswitchd restart, a qdisc deleted by
// hand, a changed desired port).

// portPolicy is a port's rendered policy.
type portPolicy struct {
	ofport int
	mac    net.HardwareAddr
	flows  []flows.Flow
	cookie uint64
	spec   shaper.Spec
	mtu    int
	// digest covers everything above; rules only the security part.
	digest, rules string
}

func (p *Plumber) policyOf(port schema.SetPort, ofport int) (portPolicy, error) {
	fp := flows.Port{
		OFPort: ofport, VNI: flows.VNIOf(port.NetworkID, port.VNI), MAC: port.MAC, IP: port.IP,
		Secure: port.PortSecurity, Rules: port.Rules,
	}
	fs, err := flows.PortFlows(fp)
	if err != nil {
		return portPolicy{}, fmt.Errorf("port %s: %w", port.ID, err)
	}
	mac, _ := net.ParseMAC(port.MAC) // PortFlows checked it
	pol := portPolicy{
		ofport: ofport, mac: mac, flows: fs,
		cookie: flows.Cookie(p.tag, flows.KindPort, uint16(ofport), flows.Digest(fs)),
		spec:   shaper.FromBandwidth(port.Bandwidth, p.cfg.HostBandwidthKbit),
		mtu:    port.MTU,
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%x|%v|%d|", pol.cookie, port.PortSecurity, fp.VNI)
	for _, r := range port.Rules {
		fmt.Fprintf(h, "%s/%s/%d/%d/%s", r.Direction, r.Protocol, r.PortMin, r.PortMax, strings.Join(r.Remote, ","))
		if r.RemoteGroupTag != 0 {
			// The group's members are not the port's: they come and go
			// without touching its rules (or its conntrack zone).
			fmt.Fprintf(h, "/group=%s#%d", r.RemoteGroup, r.RemoteGroupTag)
		}
		h.Write([]byte{';'})
	}
	pol.rules = fmt.Sprintf("%016x", h.Sum64())
	for _, c := range []*shaper.Class{pol.spec.In, pol.spec.Out} {
		if c != nil {
			fmt.Fprintf(h, "%+v|", *c)
		} else {
			h.Write([]byte("-|"))
		}
	}
	fmt.Fprintf(h, "mtu=%d|gw=%s", pol.mtu, gatewayOf(port))
	pol.digest = fmt.Sprintf("%016x", h.Sum64())
	return pol, nil
}

// inbound is the host's inbound shaping tree, in the switch netns.
func (p *Plumber) inbound(h *handles) shaper.Inbound {
	return shaper.Inbound{
		H:        h.sw,
		Ifb:      "bi" + fmt.Sprintf("%04x", p.tag) + hostSuffix(p.cfg.Host),
		Alias:    "berth host=" + p.cfg.Host + " ifb=in",
		HostBits: uint64(p.cfg.HostBandwidthKbit) * 1000,
	}
}

// hostSuffix is 4 more hex digits of the host name, so that two hosts
// sharing a switch netns do not share an ifb name.
func hostSuffix(host string) string {
	h := fnv.New32()
	h.Write([]byte(host))
	return fmt.Sprintf("%04x", h.Sum32()&0xffff)
}

func (p *Plumber) flushZone(ctx context.Context, zone int) error {
	of := p.of
	if p.cfg.AppctlTarget == "" {
		of.AppctlTarget = appctlTarget(p.ovsDir)
	}
	return of.FlushZone(ctx, zone)
}

// forget removes what the data path holds for the interface hostEnd (its
// flows, its inbound class), if OVS knows it as ours. ofport is the
// interface's OpenFlow port when the caller listed it (0: look it up).
// Its conntrack zone is left: the next port on that ofport flushes it
// when its policy is first applied.
func (p *Plumber) forget(ctx context.Context, hostEnd string, ofport int, h *handles) error {
	if ofport <= 0 {
		row, err := p.ovs.interfaceByName(ctx, hostEnd)
		if err != nil || row == nil {
			return err
		}
		if row.Ext[ExtHost] != p.cfg.Host {
			return fmt.Errorf("ovs interface %s (external_ids %v): %w", hostEnd, row.Ext, ErrNotManaged)
		}
		ofport = row.OFPort
	}
	if ofport <= 0 || ofport > flows.MaxOFPort {
		return nil
	}
	p.invalidate()
	defer p.invalidate()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.of.Delete(ctx, flows.Cookie(p.tag, flows.KindPort, uint16(ofport), 0), flows.MaskKey); err != nil {
		return err
	}
	in := p.inbound(h)
	if l, err := h.sw.LinkByName(hostEnd); err == nil {
		return in.Set(l, uint16(ofport), nil, nil)
	}
	return in.Remove(uint16(ofport))
}

// ApplyPolicy makes the flows, shaping and MTU of a plugged port match
// port, live: flows are swapped in one bundle, HTB classes are changed in
// place. A change of the port's security rules forgets its conntrack zone
// (connections still allowed are picked up again by their next packet).
func (p *Plumber) ApplyPolicy(ctx context.Context, setID string, index int, port schema.SetPort, pid int) error {
	h, err := p.open()
	if err != nil {
		return err
	}
	defer h.close()
	return p.applyPolicy(ctx, index, port, pid, h)
}

func (p *Plumber) applyPolicy(ctx context.Context, index int, port schema.SetPort, pid int, h *handles) error {
	p.invalidate()
	defer p.invalidate()
	hostEnd, _ := IfNames(port.ID)
	row, err := p.ovs.interfaceByName(ctx, hostEnd)
	if err != nil {
		return err
	}
	if row == nil || row.Ext[ExtHost] != p.cfg.Host || row.Ext[ExtPort] != port.ID {
		return fmt.Errorf("port %s is not plugged into %s", port.ID, p.cfg.Bridge)
	}
	if row.OFPort <= 0 {
		return fmt.Errorf("port %s: ovs could not open %s (ofport %d)", port.ID, hostEnd, row.OFPort)
	}
	pol, err := p.policyOf(port, row.OFPort)
	if err != nil {
		return err
	}
	link, err := h.sw.LinkByName(hostEnd)
	if err != nil {
		return fmt.Errorf("find %s: %w", hostEnd, err)
	}
	ch, err := p.openPidNS(pid)
	if err != nil {
		return err
	}
	defer ch.Close()
	inner, err := ch.LinkByName(IfName(index))
	if err != nil {
		return fmt.Errorf("find %s in netns of pid %d: %w", IfName(index), pid, err)
	}
	if pol.mtu > 0 {
		for _, x := range []struct {
			h *netlink.Handle
			l netlink.Link
		}{{h.sw, link}, {ch, inner}} {
			if x.l.Attrs().MTU != pol.mtu {
				if err := x.h.LinkSetMTU(x.l, pol.mtu); err != nil {
					return fmt.Errorf("mtu of %s: %w", x.l.Attrs().Name, err)
				}
			}
		}
	}
	if err := shaper.SetOutbound(ch, inner, pol.spec.Out); err != nil {
		return err
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	// The groups this port's rules name get their address and accept
	// flows before the port's side of the conjunctions goes in.
	if p.groupsDirty {
		if err := p.syncGroupsLocked(ctx, nil, false); err != nil {
			return err
		}
	}
	if err := p.installPortFlows(ctx, pol); err != nil {
		return err
	}
	if row.Ext[ExtRules] != pol.rules {
		// Entries of rules that are gone must not keep admitting traffic;
		// a port new on this ofport must not inherit its predecessor's.
		if err := p.flushZone(ctx, pol.ofport); err != nil {
			p.log.Warn("flush conntrack zone", "zone", pol.ofport, "err", err)
		}
	}
	if err := p.inbound(h).Set(link, uint16(pol.ofport), pol.mac, pol.spec.In); err != nil {
		return err
	}
	if err := p.ovs.setExt(ctx, hostEnd, map[string]string{
		ExtVNI:     strconv.FormatUint(uint64(flows.VNIOf(port.NetworkID, port.VNI)), 10),
		ExtGateway: gatewayOf(port),
		ExtRules:   pol.rules,
		ExtPolicy:  pol.digest,
	}); err != nil {
		return err
	}
	return p.syncHostLocked(ctx, false)
}

// installPortFlows swaps the port's flows for pol's in one bundle, unless
// the switch already holds exactly them.
func (p *Plumber) installPortFlows(ctx context.Context, pol portPolicy) error {
	key := flows.Cookie(p.tag, flows.KindPort, uint16(pol.ofport), 0)
	es, err := p.of.Dump(ctx, key, flows.MaskKey)
	if err != nil {
		return err
	}
	have := flows.Cookies(es)
	if len(have) == 1 && have[pol.cookie] == len(pol.flows) {
		return nil
	}
	stale := make([]uint64, 0, len(have))
	for c := range have {
		stale = append(stale, c)
	}
	return p.of.Replace(ctx, pol.cookie, pol.flows, stale)
}

// Policy reports whether the data path of the plugged port matches port:
// the policy digest recorded on the OVS interface, the port's flows (one
// cookie, every flow present) and its shaping on both sides.
func (p *Plumber) Policy(ctx context.Context, index int, port schema.SetPort, pid int) (bool, error) {
	why, err := p.policyDiff(ctx, index, port, pid)
	if err != nil {
		return false, err
	}
	if why != "" {
		p.log.Debug("port data path differs", "port_id", port.ID, "why", why)
	}
	return why == "", nil
}

// policyDiff says how the port's data path differs from port ("": it
// does not).
func (p *Plumber) policyDiff(ctx context.Context, index int, port schema.SetPort, pid int) (string, error) {
	hostEnd, _ := IfNames(port.ID)
	row, err := p.snapRow(ctx, hostEnd)
	if err != nil {
		return "", err
	}
	if row == nil || row.OFPort <= 0 {
		return "not in the switch", nil
	}
	pol, err := p.policyOf(port, row.OFPort)
	if err != nil {
		return err.Error(), nil // ApplyPolicy reports it on the set
	}
	if row.Ext[ExtPolicy] != pol.digest {
		return "recorded policy " + row.Ext[ExtPolicy] + ", want " + pol.digest, nil
	}
	have, err := p.snapFlows(ctx, pol.ofport)
	if err != nil {
		return "", err
	}
	if len(have) != 1 || have[pol.cookie] != len(pol.flows) {
		return fmt.Sprintf("flows by cookie %v, want %d under %#x", have, len(pol.flows), pol.cookie), nil
	}
	h, err := p.open()
	if err != nil {
		return "", err
	}
	defer h.close()
	link, err := h.sw.LinkByName(hostEnd)
	if isNotFound(err) {
		return "host end missing", nil
	}
	if err != nil {
		return "", err
	}
	if pol.mtu > 0 && link.Attrs().MTU != pol.mtu {
		return fmt.Sprintf("mtu %d, want %d", link.Attrs().MTU, pol.mtu), nil
	}
	if ok, err := p.inbound(h).Matches(link, uint16(pol.ofport), pol.mac, pol.spec.In); err != nil || !ok {
		return "inbound shaping", err
	}
	ch, err := p.openPidNS(pid)
	if err != nil {
		return "set netns gone", nil
	}
	defer ch.Close()
	inner, err := ch.LinkByName(IfName(index))
	if isNotFound(err) {
		return IfName(index) + " missing", nil
	}
	if err != nil {
		return "", err
	}
	if ok, err := shaper.OutboundMatches(ch, inner, pol.spec.Out); err != nil || !ok {
		return "outbound shaping", err
	}
	return "", nil
}

// SetPeers tells the plumber which hosts to keep tunnels to (the desired
// state's peers); SyncHost applies it.
func (p *Plumber) SetPeers(peers []schema.Peer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.peers, p.peersKnown = slices.Clone(peers), true
}

// SetGroups tells the plumber the remote groups of the host's desired
// ports (flows.GroupsOf of the desired state); the next ApplyPolicy or
// SyncHost installs their flows.
func (p *Plumber) SetGroups(gs []flows.Group) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.groupsKnown && reflect.DeepEqual(p.groups, gs) {
		return
	}
	p.groups, p.groupsKnown, p.groupsDirty = gs, true, true
}

// syncGroupsLocked makes the switch's group flows those of p.groups,
// changing only the cookie keys (member addresses) that differ, in one
// bundle. es are the host's flows when the caller dumped them (dumped).
func (p *Plumber) syncGroupsLocked(ctx context.Context, es []flows.Entry, dumped bool) error {
	if !p.groupsKnown {
		return nil
	}
	if !dumped {
		var err error
		if es, err = p.of.Dump(ctx, flows.Cookie(p.tag, flows.KindGroup, 0, 0), flows.MaskKind); err != nil {
			return err
		}
	}
	have := map[uint16]map[uint64]int{}
	for _, e := range es {
		if flows.CookieKind(e.Cookie) != flows.KindGroup {
			continue
		}
		k, _ := flows.CookieKey(e.Cookie)
		if have[k] == nil {
			have[k] = map[uint64]int{}
		}
		have[k][e.Cookie]++
	}
	want := flows.GroupFlows(p.groups)
	sets := map[uint64][]flows.Flow{}
	var stale []uint64
	for k, fs := range want {
		c := flows.Cookie(p.tag, flows.KindGroup, k, flows.Digest(fs))
		if h := have[k]; len(h) == 1 && h[c] == len(fs) {
			continue
		}
		sets[c] = fs
		for oc := range have[k] {
			stale = append(stale, oc)
		}
	}
	for k, h := range have {
		if _, ok := want[k]; !ok {
			for oc := range h {
				stale = append(stale, oc)
			}
		}
	}
	if len(sets) > 0 || len(stale) > 0 {
		if err := p.of.ReplaceSets(ctx, sets, stale); err != nil {
			return fmt.Errorf("group flows: %w", err)
		}
		p.log.Debug("group flows changed", "sets", len(sets), "removed", len(stale))
	}
	p.groupsDirty = false
	return nil
}

// SyncHost converges the host-level data path: tunnels to the peers, the
// table defaults, per-network flooding and tunnel classification; and
// removes flows and inbound classes of ports that are no longer plugged.
func (p *Plumber) SyncHost(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.syncHostLocked(ctx, true)
}

// syncHostLocked is SyncHost's pass. A full pass also collects the flows
// of ports no longer plugged and checks the group flows, which takes a
// dump of every flow of the host (thousands with a few hundred sets); the
// pass that follows one port's change (plumb, policy, unplumb: the port's
// own flows are already right) dumps only the host-level flows, so a
// burst of boots does not dump the whole table once per port under p.mu.
func (p *Plumber) syncHostLocked(ctx context.Context, full bool) error {
	// Dump before listing ports: a port whose flows are in the dump was
	// plugged before it, so the listing shows it and its flows stay.
	cookie, mask := flows.Cookie(p.tag, 0, 0, 0), flows.MaskHost
	if !full {
		cookie, mask = flows.Cookie(p.tag, flows.KindHost, 0, 0), flows.MaskKind
	}
	es, err := p.of.Dump(ctx, cookie, mask)
	if err != nil {
		return err
	}
	all, err := p.ovs.listAll(ctx)
	if err != nil {
		return err
	}
	var rows, tunnelRows []ovsInterface
	for _, r := range all {
		switch {
		case r.Ext[ExtHost] == p.cfg.Host:
			rows = append(rows, r)
		case r.Ext[ExtTunnelHost] == p.cfg.Host:
			tunnelRows = append(tunnelRows, r)
		}
	}
	tunnels, removed, err := p.syncTunnelsLocked(ctx, tunnelRows)
	if err != nil {
		return err
	}
	h, err := p.open()
	if err != nil {
		return err
	}
	defer h.close()
	live := map[int]bool{}
	byVNI := map[uint32][]int{}
	gateways := map[uint32][]string{}
	for _, r := range rows {
		if r.OFPort <= 0 || r.OFPort > flows.MaxOFPort {
			continue
		}
		live[r.OFPort] = true
		if v, err := strconv.ParseUint(r.Ext[ExtVNI], 10, 32); err == nil && v > 0 && v <= flows.MaxVNI {
			byVNI[uint32(v)] = append(byVNI[uint32(v)], r.OFPort)
			if g := r.Ext[ExtGateway]; g != "" {
				gateways[uint32(v)] = append(gateways[uint32(v)], g)
			}
		}
	}
	locals, err := p.hostLocals(h, gateways)
	if err != nil {
		return err
	}
	hf := flows.Host{Tunnels: tunnels, Locals: locals, LearnCookie: flows.Cookie(p.tag, flows.KindLearn, 0, 0)}
	for v, ports := range byVNI {
		hf.Networks = append(hf.Networks, flows.Network{VNI: v, Ports: ports})
	}
	fs := flows.HostFlows(hf)
	cookie = flows.Cookie(p.tag, flows.KindHost, 0, flows.Digest(fs))
	have := map[uint64]int{}
	staleKeys := map[uint16]bool{}
	for _, e := range es {
		switch flows.CookieKind(e.Cookie) {
		case flows.KindHost:
			have[e.Cookie]++
		case flows.KindPort:
			if k, _ := flows.CookieKey(e.Cookie); !live[int(k)] {
				staleKeys[k] = true
			}
		}
	}
	if len(have) != 1 || have[cookie] != len(fs) {
		var stale []uint64
		for c := range have {
			stale = append(stale, c)
		}
		if err := p.of.Replace(ctx, cookie, fs, stale); err != nil {
			return fmt.Errorf("host flows: %w", err)
		}
	}
	if full {
		if err := p.syncGroupsLocked(ctx, es, true); err != nil {
			return err
		}
	}
	for k := range staleKeys {
		p.log.Info("removing flows of a port no longer plugged", "ofport", k)
		if err := p.of.Delete(ctx, flows.Cookie(p.tag, flows.KindPort, k, 0), flows.MaskKey); err != nil {
			return err
		}
	}
	if removed {
		if err := p.of.Delete(ctx, hf.LearnCookie, flows.MaskKind); err != nil {
			return err
		}
	}
	in := p.inbound(h)
	minors, err := in.Minors()
	if err != nil {
		return err
	}
	for _, m := range minors {
		if !live[int(m)] {
			p.log.Info("removing inbound class of a port no longer plugged", "ofport", m)
			if err := in.Remove(m); err != nil {
				return err
			}
		}
	}
	return in.RemoveIfIdle()
}

// gatewayOf is what ExtGateway records for port: its subnet's gateway
// with the prefix length, or "".
func gatewayOf(port schema.SetPort) string {
	gw := net.ParseIP(port.Gateway).To4()
	if gw == nil || port.PrefixLen <= 0 || port.PrefixLen > 32 {
		return ""
	}
	return gw.String() + "/" + strconv.Itoa(port.PrefixLen)
}

// hostLocals returns the networks (of gateways, "address/prefix" by VNI)
// whose gateway address the bridge's own interface holds: the host is on
// them (on one subnet of each: the first it holds a gateway of). A host
// without that interface in the switch netns is on none.
func (p *Plumber) hostLocals(h *handles, gateways map[uint32][]string) ([]flows.Local, error) {
	if len(gateways) == 0 {
		return nil, nil
	}
	link, err := h.sw.LinkByName(p.cfg.Bridge)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find bridge interface %s: %w", p.cfg.Bridge, err)
	}
	addrs, err := h.sw.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", p.cfg.Bridge, err)
	}
	held := map[string]bool{}
	for _, a := range addrs {
		held[a.IP.String()] = true
	}
	mac := link.Attrs().HardwareAddr.String()
	var out []flows.Local
	for vni, gs := range gateways {
		slices.Sort(gs)
		for _, g := range gs {
			if ip, sn, err := net.ParseCIDR(g); err == nil && held[ip.String()] {
				out = append(out, flows.Local{VNI: vni, Subnet: sn.String(), MAC: mac})
				break
			}
		}
	}
	return out, nil
}

// TunnelName is the name of this host's VXLAN port to peer.
func TunnelName(host, peer string) string {
	h := fnv.New32a()
	h.Write([]byte(host + "\x00" + peer))
	return fmt.Sprintf("bx%08x", h.Sum32())
}

// syncTunnelsLocked keeps one VXLAN port per peer (when this host has a
// tunnel endpoint and knows its peers), given the host's tunnel rows, and
// returns their ofports; removed says whether a tunnel went away.
func (p *Plumber) syncTunnelsLocked(ctx context.Context, rows []ovsInterface) ([]int, bool, error) {
	var err error
	if !p.peersKnown {
		var ofports []int
		for _, r := range rows {
			if r.OFPort > 0 {
				ofports = append(ofports, r.OFPort)
			}
		}
		return ofports, false, nil
	}
	want := map[string]schema.Peer{}
	if p.cfg.TunnelIP != "" {
		for _, pr := range p.peers {
			if pr.Host == p.cfg.Host || pr.TunnelIP == "" || pr.TunnelIP == p.cfg.TunnelIP {
				continue
			}
			want[TunnelName(p.cfg.Host, pr.Host)] = pr
		}
	}
	have := map[string]ovsInterface{}
	removed := false
	for _, r := range rows {
		if _, ok := want[r.Name]; ok {
			have[r.Name] = r
			continue
		}
		p.log.Info("removing tunnel", "peer", r.Ext[ExtPeer], "iface", r.Name)
		if err := p.ovs.delPort(ctx, r.Name); err != nil {
			return nil, false, err
		}
		removed = true
	}
	changed := false
	for name, pr := range want {
		if r, ok := have[name]; ok && r.Options["remote_ip"] == pr.TunnelIP && r.Options["local_ip"] == p.cfg.TunnelIP &&
			r.Options["key"] == "flow" && r.Ext[ExtPeer] == pr.Host {
			continue
		}
		if _, ok := have[name]; !ok {
			other, err := p.ovs.interfaceByName(ctx, name)
			if err != nil {
				return nil, false, err
			}
			if other != nil {
				return nil, false, fmt.Errorf("ovs interface %s (external_ids %v): %w", name, other.Ext, ErrNotManaged)
			}
		}
		p.log.Info("adding tunnel", "peer", pr.Host, "remote_ip", pr.TunnelIP, "iface", name)
		if err := p.ovs.addTunnel(ctx, p.cfg.Bridge, name,
			map[string]string{"remote_ip": pr.TunnelIP, "local_ip": p.cfg.TunnelIP, "key": "flow"},
			map[string]string{ExtTunnelHost: p.cfg.Host, ExtPeer: pr.Host}); err != nil {
			return nil, false, fmt.Errorf("tunnel to %s: %w", pr.Host, err)
		}
		changed = true
	}
	if changed {
		if rows, err = p.ovs.findInterfaces(ctx, map[string]string{ExtTunnelHost: p.cfg.Host}); err != nil {
			return nil, false, err
		}
	}
	var ofports []int
	for _, r := range rows {
		if _, ok := want[r.Name]; ok && r.OFPort > 0 {
			ofports = append(ofports, r.OFPort)
		}
	}
	return ofports, removed, nil
}

// An observation pass lists the host's ports once (List) and then checks
// each port's policy: the snapshot keeps List's OVS rows and, once the
// first check needs them, the host's port flows, so a pass costs two
// execs, not two per port. Any change to a port invalidates it; a
// snapshot older than snapTTL is not used.
const snapTTL = time.Second

type snapshot struct {
	gen     uint64
	at      time.Time
	rows    map[string]ovsInterface
	cookies map[uint16]map[uint64]int // port flows by ofport, nil until needed
}

// invalidate drops the snapshot: a port's rows or flows changed.
func (p *Plumber) invalidate() {
	p.snapMu.Lock()
	defer p.snapMu.Unlock()
	p.snapGen++
	p.snap = nil
}

func (p *Plumber) snapGeneration() uint64 {
	p.snapMu.Lock()
	defer p.snapMu.Unlock()
	return p.snapGen
}

// remember stores rows listed while the snapshot generation was gen.
func (p *Plumber) remember(gen uint64, rows []ovsInterface) {
	p.snapMu.Lock()
	defer p.snapMu.Unlock()
	if gen != p.snapGen {
		return // a port changed meanwhile: the rows may be stale
	}
	m := make(map[string]ovsInterface, len(rows))
	for _, r := range rows {
		m[r.Name] = r
	}
	p.snap = &snapshot{gen: gen, at: time.Now(), rows: m}
}

func (p *Plumber) freshSnap() *snapshot {
	if p.snap == nil || p.snap.gen != p.snapGen || time.Since(p.snap.at) > snapTTL {
		return nil
	}
	return p.snap
}

// A host-wide pass (the reconciler's full observation, Pass) keeps one
// snapshot for its whole length instead: while sets are being built, some
// worker plumbs a port every moment, and with the shared snapshot
// invalidated each time every port's check asked OVSDB and ran ovs-ofctl
// of its own (a pass over 100 ports took 5-10 s, one after another for a
// whole burst). A pinned snapshot can be behind a worker that plumbed
// meanwhile; its set then looks out of date, is handed to its worker, and
// the worker decides on its own fresh observation. Per-set observations
// (the workers') never use it.
type passKey struct{}

type pass struct {
	mu   sync.Mutex
	snap *snapshot
}

// Pass returns ctx carrying a snapshot for one host-wide observation: a
// List of all sets with it, then Attached and Policy checks with it.
func (p *Plumber) Pass(ctx context.Context) context.Context {
	return context.WithValue(ctx, passKey{}, &pass{})
}

func passOf(ctx context.Context) *pass {
	ps, _ := ctx.Value(passKey{}).(*pass)
	return ps
}

// pin keeps the rows of a host-wide List in the pass.
func (ps *pass) pin(rows []ovsInterface) {
	m := make(map[string]ovsInterface, len(rows))
	for _, r := range rows {
		m[r.Name] = r
	}
	ps.mu.Lock()
	ps.snap = &snapshot{at: time.Now(), rows: m}
	ps.mu.Unlock()
}

func (ps *pass) row(iface string) (ovsInterface, bool) {
	if ps == nil {
		return ovsInterface{}, false
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.snap == nil {
		return ovsInterface{}, false
	}
	r, ok := ps.snap.rows[iface]
	return r, ok
}

// snapRow returns the OVS row of iface from the pass's or the shared
// snapshot, or asks OVS.
func (p *Plumber) snapRow(ctx context.Context, iface string) (*ovsInterface, error) {
	if r, ok := passOf(ctx).row(iface); ok {
		return &r, nil
	}
	p.snapMu.Lock()
	if s := p.freshSnap(); s != nil {
		if r, ok := s.rows[iface]; ok {
			p.snapMu.Unlock()
			return &r, nil
		}
	}
	p.snapMu.Unlock()
	return p.ovs.interfaceByName(ctx, iface)
}

// snapFlows returns the port flows of ofport by cookie, from the snapshot
// (dumping the host's port flows once) or from the switch.
func (p *Plumber) snapFlows(ctx context.Context, ofport int) (map[uint64]int, error) {
	if ps := passOf(ctx); ps != nil {
		ps.mu.Lock()
		defer ps.mu.Unlock()
		if ps.snap != nil {
			if ps.snap.cookies == nil {
				byPort, err := p.portFlowsByPort(ctx)
				if err != nil {
					return nil, err
				}
				ps.snap.cookies = byPort
			}
			return ps.snap.cookies[uint16(ofport)], nil
		}
	}
	p.snapMu.Lock()
	s := p.freshSnap()
	var gen uint64
	if s != nil {
		if s.cookies != nil {
			m := s.cookies[uint16(ofport)]
			p.snapMu.Unlock()
			return m, nil
		}
		gen = s.gen
	}
	p.snapMu.Unlock()
	if s == nil {
		es, err := p.of.Dump(ctx, flows.Cookie(p.tag, flows.KindPort, uint16(ofport), 0), flows.MaskKey)
		if err != nil {
			return nil, err
		}
		return flows.Cookies(es), nil
	}
	byPort, err := p.portFlowsByPort(ctx)
	if err != nil {
		return nil, err
	}
	p.snapMu.Lock()
	if p.snap == s && p.snapGen == gen {
		s.cookies = byPort
	}
	p.snapMu.Unlock()
	return byPort[uint16(ofport)], nil
}

// portFlowsByPort dumps the host's port flows once: flow counts by cookie,
// by ofport.
func (p *Plumber) portFlowsByPort(ctx context.Context) (map[uint16]map[uint64]int, error) {
	es, err := p.of.Dump(ctx, flows.Cookie(p.tag, flows.KindPort, 0, 0), flows.MaskKind)
	if err != nil {
		return nil, err
	}
	byPort := map[uint16]map[uint64]int{}
	for c, n := range flows.Cookies(es) {
		k, _ := flows.CookieKey(c)
		if byPort[k] == nil {
			byPort[k] = map[uint64]int{}
		}
		byPort[k][c] = n
	}
	return byPort, nil
}
