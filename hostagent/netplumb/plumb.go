// Package netplumb wires set ports: a veth pair per port, one end renamed
// eth<N> inside the set's infra netns, the other plugged into the host's OVS
// integration bridge. Host objects it makes are marked as Berth's (an
// interface alias on the veth ends, external_ids on the OVS interface) and
// only marked objects are listed or removed.
package netplumb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"berth/hostagent/flows"
	"berth/hostagent/nsexec"
	"berth/hostagent/observed"
	"berth/hostagent/shaper"
	"berth/schema"
)

// Config configures a Plumber.
type Config struct {
	// Host is this agent's host name, stamped on every object.
	Host string
	// Bridge is the OVS integration bridge, e.g. "br-berth".
	Bridge string
	// OVSDB is the database the agent connects to (libovsdb), e.g.
	// "unix:/run/openvswitch/db.sock"; "" is OVS's default socket.
	OVSDB string
	// SwitchNetns is the path of the network namespace in which
	// ovs-vswitchd sees its ports (e.g. /proc/<pid>/ns/net); "" is the
	// agent's own. Host-side veth ends are moved there.
	SwitchNetns string
	// CallTimeout bounds each OVSDB transaction (with ovs-vswitchd
	// applying it), ethtool and netlink call.
	CallTimeout time.Duration
	// EthtoolBinary defaults to "ethtool".
	EthtoolBinary string
	// OfctlBinary and AppctlBinary default to "ovs-ofctl" and "ovs-appctl".
	OfctlBinary  string
	AppctlBinary string
	// OFTarget is the bridge as ovs-ofctl reaches it; "" derives
	// "unix:<dir>/<bridge>.mgmt" from a "unix:<dir>/…" OVSDB, else uses
	// the bridge name (ovs-ofctl's default run directory).
	OFTarget string
	// AppctlTarget is ovs-appctl's -t for ovs-vswitchd (conntrack
	// flushes); "" finds <dir>/ovs-vswitchd.ctl or the pidfile next to
	// the OVSDB socket, else "ovs-vswitchd".
	AppctlTarget string
	// TunnelIP is this host's VXLAN endpoint; "" means no tunnels.
	TunnelIP string
	// HostBandwidthKbit is the inbound capacity the host's sets share
	// (the HTB parent class); 0 is shaper.DefaultHostKbit.
	HostBandwidthKbit int
}

// Plumber implements the reconciler's network driver.
type Plumber struct {
	cfg Config
	ovs switchDB
	of  flows.OFCtl
	tag uint16
	log *slog.Logger
	// ovsDir is the directory of the OVSDB socket ("" if not unix:).
	ovsDir string

	// mu serializes changes to the flow table and the host's inbound
	// tree (host-level state shared by every set's worker).
	mu         sync.Mutex
	peers      []schema.Peer
	peersKnown bool
	// groups are the remote groups of the desired ports (SetGroups);
	// until the first SetGroups the group flows are left as they are.
	// groupsDirty: changed since they were last installed.
	groups                   []flows.Group
	groupsKnown, groupsDirty bool

	// snap keeps the rows of the last List for the policy checks that
	// follow it (see snapshot).
	snapMu  sync.Mutex
	snapGen uint64
	snap    *snapshot
}

// ErrNotManaged is returned when an object in the way was not made by
// Berth on this host.
var ErrNotManaged = shaper.ErrNotManaged

// New returns a Plumber.
func New(log *slog.Logger, cfg Config) *Plumber {
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	if cfg.EthtoolBinary == "" {
		cfg.EthtoolBinary = "ethtool"
	}
	if cfg.HostBandwidthKbit <= 0 {
		cfg.HostBandwidthKbit = shaper.DefaultHostKbit
	}
	dir := ""
	if rest, ok := strings.CutPrefix(cfg.OVSDB, "unix:"); ok {
		dir = filepath.Dir(rest)
	}
	if cfg.OFTarget == "" {
		cfg.OFTarget = cfg.Bridge
		if dir != "" {
			cfg.OFTarget = "unix:" + filepath.Join(dir, cfg.Bridge+".mgmt")
		}
	}
	return &Plumber{
		cfg: cfg, log: log, tag: flows.HostTag(cfg.Host), ovsDir: dir,
		ovs: newLibOVSDB(cfg.OVSDB, cfg.CallTimeout),
		of: flows.OFCtl{
			Bin: cfg.OfctlBinary, Target: cfg.OFTarget, Appctl: cfg.AppctlBinary,
			AppctlTarget: cfg.AppctlTarget, Timeout: cfg.CallTimeout,
		},
	}
}

// Close closes the plumber's OVSDB connection.
func (p *Plumber) Close() { p.ovs.close() }

// appctlTarget finds ovs-vswitchd's control socket in dir.
func appctlTarget(dir string) string {
	if dir == "" {
		return "ovs-vswitchd"
	}
	if _, err := os.Stat(filepath.Join(dir, "ovs-vswitchd.ctl")); err == nil {
		return filepath.Join(dir, "ovs-vswitchd.ctl")
	}
	if b, err := os.ReadFile(filepath.Join(dir, "ovs-vswitchd.pid")); err == nil {
		return filepath.Join(dir, "ovs-vswitchd."+strings.TrimSpace(string(b))+".ctl")
	}
	return "ovs-vswitchd"
}

// IfNames returns the host-side veth name ("bv" + 11 characters of the port
// ID, within the 15-byte limit) and the peer's temporary name before it
// becomes eth<N> in the set's netns.
func IfNames(portID string) (hostEnd, peer string) {
	k := strings.ReplaceAll(portID, "-", "")
	if len(k) > 11 {
		k = k[:11]
	}
	return "bv" + k, "bp" + k
}

// IfName is the name of the set's index-th port inside its netns.
func IfName(index int) string { return fmt.Sprintf("eth%d", index) }

// alias marks a veth end as ours.
func (p *Plumber) alias(setID, portID string) string {
	return "berth host=" + p.cfg.Host + " set=" + setID + " port=" + portID
}

// parseAlias returns the set and port of an alias made by this host.
func (p *Plumber) parseAlias(a string) (setID, portID string, ours bool) {
	f := strings.Fields(a)
	if len(f) != 4 || f[0] != "berth" {
		return "", "", false
	}
	kv := map[string]string{}
	for _, x := range f[1:] {
		k, v, _ := strings.Cut(x, "=")
		kv[k] = v
	}
	if kv["host"] != p.cfg.Host {
		return "", "", false
	}
	return kv["set"], kv["port"], true
}

// handles holds netlink handles for the agent's netns and the switch netns
// (the same handle when they are the same namespace).
type handles struct {
	agent, sw *netlink.Handle
	swNS      netns.NsHandle // -1 when the switch netns is the agent's
}

func (h *handles) close() {
	h.agent.Close()
	if h.sw != h.agent {
		h.sw.Close()
	}
	if h.swNS.IsOpen() {
		h.swNS.Close()
	}
}

func (h *handles) separate() bool { return h.swNS.IsOpen() }

func (p *Plumber) open() (*handles, error) {
	agent, err := netlink.NewHandle()
	if err != nil {
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	if err := agent.SetSocketTimeout(p.cfg.CallTimeout); err != nil {
		agent.Close()
		return nil, fmt.Errorf("netlink timeout: %w", err)
	}
	h := &handles{agent: agent, sw: agent, swNS: netns.None()}
	if p.cfg.SwitchNetns == "" {
		return h, nil
	}
	ns, err := netns.GetFromPath(p.cfg.SwitchNetns)
	if err != nil {
		agent.Close()
		return nil, fmt.Errorf("open switch netns %s: %w", p.cfg.SwitchNetns, err)
	}
	self, err := netns.Get()
	if err == nil && self.Equal(ns) {
		self.Close()
		ns.Close()
		return h, nil
	}
	if err == nil {
		self.Close()
	}
	sw, err := netlink.NewHandleAt(ns)
	if err != nil {
		agent.Close()
		ns.Close()
		return nil, fmt.Errorf("netlink handle in switch netns: %w", err)
	}
	if err := sw.SetSocketTimeout(p.cfg.CallTimeout); err != nil {
		agent.Close()
		sw.Close()
		ns.Close()
		return nil, fmt.Errorf("netlink timeout: %w", err)
	}
	h.sw, h.swNS = sw, ns
	return h, nil
}

// openPidNS returns a netlink handle in the netns of pid.
func (p *Plumber) openPidNS(pid int) (*netlink.Handle, error) {
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return nil, fmt.Errorf("open netns of pid %d: %w", pid, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in netns of pid %d: %w", pid, err)
	}
	if err := h.SetSocketTimeout(p.cfg.CallTimeout); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

func linkList(h *netlink.Handle) ([]netlink.Link, error) {
	var err error
	for range 5 {
		var ls []netlink.Link
		ls, err = h.LinkList()
		if err == nil {
			return ls, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return nil, fmt.Errorf("list links: %w", err)
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// List returns this host's ports, of one set or all: OVS interface rows with
// our external_ids, joined with the veth host ends carrying our alias.
func (p *Plumber) List(ctx context.Context, setID string) ([]observed.Port, error) {
	ext := map[string]string{ExtHost: p.cfg.Host}
	if setID != "" {
		ext[ExtSet] = setID
	}
	gen := p.snapGeneration()
	rows, err := p.ovs.findInterfaces(ctx, ext)
	if err != nil {
		return nil, err
	}
	p.remember(gen, rows)
	if ps := passOf(ctx); ps != nil && setID == "" {
		ps.pin(rows)
	}
	h, err := p.open()
	if err != nil {
		return nil, err
	}
	defer h.close()

	byKey := map[string]*observed.Port{}
	var order []string
	get := func(set, port, iface string) *observed.Port {
		k := set + "/" + port
		if pt, ok := byKey[k]; ok {
			return pt
		}
		pt := &observed.Port{SetID: set, PortID: port, Iface: iface, OFPort: -1}
		byKey[k] = pt
		order = append(order, k)
		return pt
	}
	for _, r := range rows {
		pt := get(r.Ext[ExtSet], r.Ext[ExtPort], r.Name)
		pt.InSwitch, pt.OFPort = true, r.OFPort
	}
	scan := func(nh *netlink.Handle, inSwitch bool) error {
		links, err := linkList(nh)
		if err != nil {
			return err
		}
		for _, l := range links {
			set, port, ours := p.parseAlias(l.Attrs().Alias)
			if !ours || (setID != "" && set != setID) {
				continue
			}
			hostEnd, _ := IfNames(port)
			pt := get(set, port, hostEnd)
			if inSwitch && l.Attrs().Name == hostEnd {
				pt.LinkPresent = true
			}
		}
		return nil
	}
	if err := scan(h.sw, true); err != nil {
		return nil, err
	}
	if h.separate() {
		// Leftovers of a plumb interrupted before the move.
		if err := scan(h.agent, false); err != nil {
			return nil, err
		}
	}
	out := make([]observed.Port, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	return out, nil
}

// Attached reports whether the netns of pid has the port's interface up with
// its MAC and IP.
func (p *Plumber) Attached(ctx context.Context, index int, port schema.SetPort, pid int) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	ch, err := p.openPidNS(pid)
	if err != nil {
		return false, nil // the process is gone: nothing is attached
	}
	defer ch.Close()
	l, err := ch.LinkByName(IfName(index))
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	mac, err := net.ParseMAC(port.MAC)
	if err != nil {
		return false, fmt.Errorf("port %s: bad mac %q: %w", port.ID, port.MAC, err)
	}
	if l.Attrs().HardwareAddr.String() != mac.String() || l.Attrs().Flags&net.FlagUp == 0 {
		return false, nil
	}
	addrs, err := ch.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if a.IP.String() == port.IP {
			return true, nil
		}
	}
	return false, nil
}

type portAddr struct {
	mac   net.HardwareAddr
	ipnet *net.IPNet
	gw    net.IP
}

func parsePort(port schema.SetPort) (portAddr, error) {
	var a portAddr
	var err error
	if a.mac, err = net.ParseMAC(port.MAC); err != nil {
		return a, fmt.Errorf("port %s: bad mac %q: %w", port.ID, port.MAC, err)
	}
	ip := net.ParseIP(port.IP).To4()
	if ip == nil {
		return a, fmt.Errorf("port %s: bad ipv4 address %q", port.ID, port.IP)
	}
	if port.PrefixLen <= 0 || port.PrefixLen > 32 {
		return a, fmt.Errorf("port %s: bad prefix length %d", port.ID, port.PrefixLen)
	}
	a.ipnet = &net.IPNet{IP: ip, Mask: net.CIDRMask(port.PrefixLen, 32)}
	if port.Gateway != "" {
		if a.gw = net.ParseIP(port.Gateway).To4(); a.gw == nil {
			return a, fmt.Errorf("port %s: bad gateway %q", port.ID, port.Gateway)
		}
	}
	return a, nil
}

// Plumb gives the netns of pid the set's index-th interface for port and
// plugs the host end into the bridge. Earlier plumbing of the port is
// replaced. On failure nothing of this call is left behind.
func (p *Plumber) Plumb(ctx context.Context, setID string, index int, port schema.SetPort, pid int) (err error) {
	addr, err := parsePort(port)
	if err != nil {
		return err
	}
	hostEnd, peer := IfNames(port.ID)
	ifName := IfName(index)
	p.invalidate()
	defer p.invalidate()
	h, err := p.open()
	if err != nil {
		return err
	}
	defer h.close()

	// Clear earlier plumbing of the port. Its flows and shaping go first,
	// then the OVS row in its own transaction: vswitchd must close the old
	// device before a new veth of the same name appears, or it keeps
	// reading the dead one.
	if err := p.forget(ctx, hostEnd, 0, h); err != nil {
		return fmt.Errorf("remove stale data path of %s: %w", hostEnd, err)
	}
	if err := p.ovs.delPort(ctx, hostEnd); err != nil {
		return fmt.Errorf("remove stale port %s: %w", hostEnd, err)
	}
	for _, x := range []struct {
		h    *netlink.Handle
		name string
	}{{h.agent, hostEnd}, {h.agent, peer}, {h.sw, hostEnd}} {
		if err := p.removeOwnedLink(x.h, x.name); err != nil {
			return fmt.Errorf("remove stale %s: %w", x.name, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: hostEnd, TxQLen: 1000, MTU: port.MTU}, PeerName: peer, PeerTxQLen: 1000, PeerMTU: uint32(max(port.MTU, 0))}
	if err := h.agent.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s: %w", hostEnd, err)
	}
	plugged := false
	defer func() {
		if err == nil {
			return
		}
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.CallTimeout)
		defer cancel()
		if plugged {
			if derr := p.forget(uctx, hostEnd, 0, h); derr != nil {
				err = errors.Join(err, derr)
			}
			if derr := p.ovs.delPort(uctx, hostEnd); derr != nil {
				err = errors.Join(err, derr)
			}
			p.mu.Lock()
			if derr := p.syncHostLocked(uctx, false); derr != nil {
				err = errors.Join(err, derr)
			}
			p.mu.Unlock()
		}
		for _, nh := range []*netlink.Handle{h.sw, h.agent} {
			if derr := p.removeOwnedLink(nh, hostEnd); derr != nil {
				err = errors.Join(err, derr)
			}
		}
	}()
	hostLink, err := h.agent.LinkByName(hostEnd)
	if err != nil {
		return fmt.Errorf("find %s: %w", hostEnd, err)
	}
	peerLink, err := h.agent.LinkByName(peer)
	if err != nil {
		return fmt.Errorf("find %s: %w", peer, err)
	}
	alias := p.alias(setID, port.ID)
	for _, l := range []netlink.Link{hostLink, peerLink} {
		if err := h.agent.LinkSetAlias(l, alias); err != nil {
			return fmt.Errorf("mark %s: %w", l.Attrs().Name, err)
		}
	}
	// The userspace datapath does not complete checksums or segment
	// offloaded TCP: turn offloads off on both ends before the peer moves.
	for _, name := range []string{hostEnd, peer} {
		if err := p.disableOffloads(ctx, name); err != nil {
			return err
		}
	}
	if err := h.agent.LinkSetNsPid(peerLink, pid); err != nil {
		return fmt.Errorf("move %s into netns of pid %d: %w", peer, pid, err)
	}
	if h.separate() {
		if err := h.agent.LinkSetNsFd(hostLink, int(h.swNS)); err != nil {
			return fmt.Errorf("move %s into switch netns: %w", hostEnd, err)
		}
	}
	if err := p.configureInside(pid, peer, ifName, index == 0, addr); err != nil {
		return err
	}
	hostLink, err = h.sw.LinkByName(hostEnd)
	if err != nil {
		return fmt.Errorf("find %s in switch netns: %w", hostEnd, err)
	}
	// The host end only carries the set's frames to and from the switch:
	// the switch netns's own stack must neither talk on it nor listen.
	if err := p.muteHostEnd(h, hostEnd); err != nil {
		return err
	}
	if err := h.sw.LinkSetUp(hostLink); err != nil {
		return fmt.Errorf("set %s up: %w", hostEnd, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	plugged = true
	// Until its flows are in, the port's traffic meets table 0's drop.
	if err := p.ovs.addPort(ctx, p.cfg.Bridge, hostEnd, map[string]string{
		ExtSet: setID, ExtPort: port.ID, ExtHost: p.cfg.Host,
		ExtVNI:     strconv.FormatUint(uint64(flows.VNIOf(port.NetworkID, port.VNI)), 10),
		ExtGateway: gatewayOf(port),
	}); err != nil {
		return fmt.Errorf("add %s to bridge %s: %w", hostEnd, p.cfg.Bridge, err)
	}
	if err := p.applyPolicy(ctx, index, port, pid, h); err != nil {
		return err
	}
	if err := p.announce(pid, ifName, addr); err != nil {
		p.log.Warn("gratuitous ARP", "port_id", port.ID, "err", err)
	}
	return nil
}

// configureInside renames the peer to ifName in the netns of pid and gives
// it its MAC, address, link state and (for the first port) default route.
func (p *Plumber) configureInside(pid int, peer, ifName string, first bool, a portAddr) error {
	ch, err := p.openPidNS(pid)
	if err != nil {
		return err
	}
	defer ch.Close()
	if old, err := ch.LinkByName(ifName); err == nil {
		// Stale plumbing from an earlier attempt: only a veth may be replaced.
		if old.Type() != "veth" {
			return fmt.Errorf("%s in netns of pid %d is a %s: %w", ifName, pid, old.Type(), ErrNotManaged)
		}
		if err := ch.LinkDel(old); err != nil {
			return fmt.Errorf("remove stale %s: %w", ifName, err)
		}
	} else if !isNotFound(err) {
		return err
	}
	l, err := ch.LinkByName(peer)
	if err != nil {
		return fmt.Errorf("find %s in netns of pid %d: %w", peer, pid, err)
	}
	if err := ch.LinkSetName(l, ifName); err != nil {
		return fmt.Errorf("rename %s to %s: %w", peer, ifName, err)
	}
	if err := ch.LinkSetHardwareAddr(l, a.mac); err != nil {
		return fmt.Errorf("set mac of %s: %w", ifName, err)
	}
	if err := ch.AddrAdd(l, &netlink.Addr{IPNet: a.ipnet}); err != nil {
		return fmt.Errorf("add address %s to %s: %w", a.ipnet, ifName, err)
	}
	if err := ch.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", ifName, err)
	}
	if lo, err := ch.LinkByName("lo"); err == nil {
		if err := ch.LinkSetUp(lo); err != nil {
			return fmt.Errorf("set lo up: %w", err)
		}
	}
	if first && a.gw != nil {
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: a.gw}
		if err := ch.RouteReplace(r); err != nil {
			return fmt.Errorf("default route via %s: %w", a.gw, err)
		}
	}
	return nil
}

func (p *Plumber) disableOffloads(ctx context.Context, dev string) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, p.cfg.EthtoolBinary, "-K", dev, "tx", "off", "tso", "off", "gso", "off").CombinedOutput()
	if err != nil {
		return fmt.Errorf("ethtool -K %s: %w: %s", dev, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// removeOwnedLink deletes link name if it is ours (our alias, or an unmarked
// veth whose name is derived from a port ID, left by an interrupted plumb).
func (p *Plumber) removeOwnedLink(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	alias := l.Attrs().Alias
	if _, _, ours := p.parseAlias(alias); !ours && (alias != "" || l.Type() != "veth") {
		return fmt.Errorf("link %s (alias %q): %w", name, alias, ErrNotManaged)
	}
	if err := h.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// Unplumb removes a port from the bridge and deletes its veth (which takes
// the interface inside the set's netns with it).
func (p *Plumber) Unplumb(ctx context.Context, port observed.Port) error {
	hostEnd, peer := IfNames(port.PortID)
	if port.Iface != "" {
		hostEnd = port.Iface
	}
	p.invalidate()
	defer p.invalidate()
	h, err := p.open()
	if err != nil {
		return err
	}
	defer h.close()
	if err := p.forget(ctx, hostEnd, port.OFPort, h); err != nil {
		return err
	}
	if err := p.ovs.delPort(ctx, hostEnd); err != nil {
		return err
	}
	var errs []error
	p.mu.Lock()
	if err := p.syncHostLocked(ctx, false); err != nil {
		errs = append(errs, err)
	}
	p.mu.Unlock()
	for _, x := range []struct {
		h    *netlink.Handle
		name string
	}{{h.sw, hostEnd}, {h.agent, hostEnd}, {h.agent, peer}} {
		if err := p.removeOwnedLink(x.h, x.name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Counters returns a port's traffic counters as the set sees them (the
// host-side veth end's transmit counters are the set's receive ones).
func (p *Plumber) Counters(ctx context.Context, port observed.Port) (schema.NICStats, error) {
	var st schema.NICStats
	if err := ctx.Err(); err != nil {
		return st, err
	}
	hostEnd, _ := IfNames(port.PortID)
	if port.Iface != "" {
		hostEnd = port.Iface
	}
	h, err := p.open()
	if err != nil {
		return st, err
	}
	defer h.close()
	l, err := h.sw.LinkByName(hostEnd)
	if err != nil {
		return st, fmt.Errorf("find %s: %w", hostEnd, err)
	}
	s := l.Attrs().Statistics
	if s == nil {
		return st, fmt.Errorf("%s has no statistics", hostEnd)
	}
	st.RxOctets, st.RxPackets, st.RxDrop = s.TxBytes, s.TxPackets, s.TxDropped
	st.TxOctets, st.TxPackets, st.TxDrop = s.RxBytes, s.RxPackets, s.RxDropped
	return st, nil
}

// muteHostEnd keeps the switch netns's own IP stack off a host-side veth
// end, which the userspace datapath reads with a packet socket while the
// kernel sees the same frames. Without IPv6 the kernel sends nothing of
// its own (router solicitations, MLD reports) straight into the set; with
// arp_ignore=8 it does not answer a set's ARP for the host's addresses
// (the gateway) on this link, which would let any set, of any network,
// reach the host past the flow tables; drop_unicast_in_l2_multicast and a
// strict rp_filter drop IPv4 sent to it by broadcast or from addresses not
// routed here. These are sysctls of the switch netns, written from a
// thread inside it; they go with the device. Kernels without IPv6 have
// nothing to turn off there.
func (p *Plumber) muteHostEnd(h *handles, dev string) error {
	settings := []struct {
		path, value string
		optional    bool // absent when the kernel lacks the feature
	}{
		{"/proc/sys/net/ipv6/conf/" + dev + "/disable_ipv6", "1", true},
		{"/proc/sys/net/ipv4/conf/" + dev + "/arp_ignore", "8", false},
		{"/proc/sys/net/ipv4/conf/" + dev + "/drop_unicast_in_l2_multicast", "1", true},
		{"/proc/sys/net/ipv4/conf/" + dev + "/rp_filter", "1", false},
	}
	write := func() error {
		for _, x := range settings {
			err := os.WriteFile(x.path, []byte(x.value), 0o644)
			if errors.Is(err, os.ErrNotExist) && x.optional {
				continue
			}
			if err != nil {
				return fmt.Errorf("mute %s: %w", dev, err)
			}
		}
		return nil
	}
	if !h.separate() {
		return write()
	}
	return inNetns(h.swNS, write)
}

// inNetns runs fn inside ns (for what is per network namespace: sysctls,
// packet sockets).
func inNetns(ns netns.NsHandle, fn func() error) error { return nsexec.Do(ns, fn) }

// announce sends a gratuitous ARP from the set's interface once its flows
// are in: neighbours that knew its address at another MAC (an address
// freed and handed out again; the host's neighbour table above all)
// update their entry instead of sending to the old MAC until it fails.
func (p *Plumber) announce(pid int, ifName string, a portAddr) error {
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return fmt.Errorf("open netns of pid %d: %w", pid, err)
	}
	defer ns.Close()
	return inNetns(ns, func() error {
		ifi, err := net.InterfaceByName(ifName)
		if err != nil {
			return err
		}
		const proto = unix.ETH_P_ARP<<8&0xff00 | unix.ETH_P_ARP>>8 // network order
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		defer unix.Close(fd)
		ip := a.ipnet.IP.To4()
		f := make([]byte, 0, 42)
		f = append(f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
		f = append(f, a.mac...)
		f = append(f, 0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1) // ARP request, Ethernet/IPv4
		f = append(f, a.mac...)
		f = append(f, ip...)
		f = append(f, 0, 0, 0, 0, 0, 0)
		f = append(f, ip...)
		return unix.Sendto(fd, f, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Protocol: proto})
	})
}
