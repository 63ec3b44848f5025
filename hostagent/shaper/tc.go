package shaper

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// ErrNotManaged is returned when a device in the way is not ours.
var ErrNotManaged = errors.New("not managed by berth on this host")

const (
	// hostMinor is the minor of the host's parent class in the inbound
	// tree; port classes use their ofport (at most 0xfeff) as minor.
	hostMinor = 0xffff
	// redirectPrio is the priority of the redirect filter on a host end.
	redirectPrio = 1
)

var rootHandle = netlink.MakeHandle(1, 0)

func missing(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.Is(err, unix.ENOENT) || errors.As(err, &nf)
}

// Inbound is a host's inbound tree: an ifb device in the switch's network
// namespace with an HTB root, the host's parent class and one class per
// shaped port.
type Inbound struct {
	// H is a netlink handle in the switch's network namespace.
	H *netlink.Handle
	// Ifb names the host's ifb device, e.g. "bi1a2b3c4d".
	Ifb string
	// Alias marks the ifb as this host's.
	Alias string
	// HostBits is the host's inbound capacity (the parent class).
	HostBits uint64
}

// ifb returns the host's ifb, or nil when it does not exist.
func (in Inbound) ifb() (netlink.Link, error) {
	l, err := in.H.LinkByName(in.Ifb)
	if missing(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", in.Ifb, err)
	}
	if l.Type() != "ifb" || l.Attrs().Alias != in.Alias {
		return nil, fmt.Errorf("%s (%s, alias %q): %w", in.Ifb, l.Type(), l.Attrs().Alias, ErrNotManaged)
	}
	return l, nil
}

// ensure creates the ifb with its root and parent class when missing.
func (in Inbound) ensure() (netlink.Link, error) {
	l, err := in.ifb()
	if err != nil {
		return nil, err
	}
	if l == nil {
		if err := in.H.LinkAdd(&netlink.Ifb{LinkAttrs: netlink.LinkAttrs{Name: in.Ifb, TxQLen: 1000}}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create %s: %w", in.Ifb, err)
		}
		if l, err = in.H.LinkByName(in.Ifb); err != nil {
			return nil, fmt.Errorf("find %s: %w", in.Ifb, err)
		}
		if err := in.H.LinkSetAlias(l, in.Alias); err != nil {
			return nil, fmt.Errorf("mark %s: %w", in.Ifb, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := in.H.LinkSetUp(l); err != nil {
			return nil, fmt.Errorf("set %s up: %w", in.Ifb, err)
		}
	}
	if err := ensureRoot(in.H, l, 0); err != nil {
		return nil, err
	}
	parent := netlink.NewHtbClass(netlink.ClassAttrs{LinkIndex: l.Attrs().Index, Parent: rootHandle, Handle: netlink.MakeHandle(1, hostMinor)},
		netlink.HtbClassAttrs{Rate: in.HostBits, Ceil: in.HostBits, Buffer: burst(0, in.HostBits), Cbuffer: burst(0, in.HostBits), Quantum: quantum(in.HostBits)})
	if ok, err := classIs(in.H, l, parent.Handle, rootHandle, &Class{RateBits: in.HostBits, CeilBits: in.HostBits}); err != nil || !ok {
		if err != nil {
			return nil, err
		}
		if err := in.H.ClassReplace(parent); err != nil {
			return nil, fmt.Errorf("host class on %s: %w", in.Ifb, err)
		}
	}
	return l, nil
}

// ensureRoot makes an HTB qdisc 1: (default class defcls) the root of l,
// unless it already is.
func ensureRoot(h *netlink.Handle, l netlink.Link, defcls uint32) error {
	qs, err := h.QdiscList(l)
	if err != nil {
		return fmt.Errorf("list qdiscs of %s: %w", l.Attrs().Name, err)
	}
	for _, q := range qs {
		if q.Attrs().Parent == netlink.HANDLE_ROOT && q.Attrs().Handle == rootHandle {
			if htb, ok := q.(*netlink.Htb); ok && htb.Defcls == defcls {
				return nil
			}
		}
	}
	q := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_ROOT, Handle: rootHandle})
	q.Defcls = defcls
	if err := h.QdiscReplace(q); err != nil {
		return fmt.Errorf("htb root on %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// classIs reports whether l has class handle under parent with c's rate,
// ceil and prio.
func classIs(h *netlink.Handle, l netlink.Link, handle, parent uint32, c *Class) (bool, error) {
	cs, err := h.ClassList(l, rootHandle)
	if err != nil {
		return false, fmt.Errorf("list classes of %s: %w", l.Attrs().Name, err)
	}
	for _, x := range cs {
		htb, ok := x.(*netlink.HtbClass)
		if !ok || x.Attrs().Handle != handle {
			continue
		}
		// The kernel lists a top-level class's parent as TC_H_ROOT.
		p := x.Attrs().Parent
		sameParent := p == parent || (parent == rootHandle && p == netlink.HANDLE_ROOT)
		return sameParent && htb.Rate == c.RateBits/8 && htb.Ceil == c.CeilBits/8 && htb.Prio == c.Prio, nil
	}
	return false, nil
}

func htbClass(l netlink.Link, handle, parent uint32, c *Class) *netlink.HtbClass {
	return netlink.NewHtbClass(netlink.ClassAttrs{LinkIndex: l.Attrs().Index, Parent: parent, Handle: handle},
		netlink.HtbClassAttrs{
			Rate: c.RateBits, Ceil: c.CeilBits, Prio: c.Prio, Quantum: quantum(c.RateBits),
			Buffer: burst(c.BurstBytes, c.RateBits), Cbuffer: burst(c.BurstBytes, c.CeilBits),
		})
}

// macKeys match a destination MAC on a packet redirected from a device's
// egress: u32 offsets are relative to the network header and 4-byte
// aligned, so the MAC's first two bytes sit in the low half of the word
// at -16 and the rest in the word at -12.
func macKeys(mac net.HardwareAddr) []nl.TcU32Key {
	return []nl.TcU32Key{
		{Mask: 0x0000ffff, Val: uint32(mac[0])<<8 | uint32(mac[1]), Off: -16},
		{Mask: 0xffffffff, Val: uint32(mac[2])<<24 | uint32(mac[3])<<16 | uint32(mac[4])<<8 | uint32(mac[5]), Off: -12},
	}
}

func classifier(ifb netlink.Link, minor uint16, mac net.HardwareAddr) *netlink.U32 {
	return &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: ifb.Attrs().Index, Parent: rootHandle, Priority: minor, Protocol: unix.ETH_P_ALL},
		ClassId:     netlink.MakeHandle(1, minor),
		Sel:         &nl.TcU32Sel{Flags: nl.TC_U32_TERMINAL, Keys: macKeys(mac)},
	}
}

func redirect(port, ifb netlink.Link) *netlink.U32 {
	return &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: port.Attrs().Index, Parent: netlink.HANDLE_MIN_EGRESS, Priority: redirectPrio, Protocol: unix.ETH_P_ALL},
		Actions:     []netlink.Action{netlink.NewMirredAction(ifb.Attrs().Index)},
	}
}

// filterFor returns l's u32 filter of priority prio under parent, or nil.
// A u32 priority lists as its hash table and then its keyed nodes: the
// first node with a selector is the filter.
func filterFor(h *netlink.Handle, l netlink.Link, parent uint32, prio uint16) (*netlink.U32, error) {
	fs, err := h.FilterList(l, parent)
	if err != nil {
		return nil, fmt.Errorf("list filters of %s: %w", l.Attrs().Name, err)
	}
	for _, f := range fs {
		if u, ok := f.(*netlink.U32); ok && f.Attrs().Priority == prio && u.Sel != nil {
			return u, nil
		}
	}
	return nil, nil
}

func sameKeys(u *netlink.U32, keys []nl.TcU32Key) bool {
	if u.Sel == nil || len(u.Sel.Keys) != len(keys) {
		return false
	}
	for i, k := range keys {
		g := u.Sel.Keys[i]
		if g.Mask != k.Mask || g.Val != k.Val || g.Off != k.Off {
			return false
		}
	}
	return true
}

func redirectsTo(u *netlink.U32, ifb netlink.Link) bool {
	if u == nil || ifb == nil {
		return false
	}
	for _, a := range u.Actions {
		if m, ok := a.(*netlink.MirredAction); ok && m.Ifindex == ifb.Attrs().Index && m.MirredAction == netlink.TCA_EGRESS_REDIR {
			return true
		}
	}
	return false
}

// hasClsact reports whether l has a clsact qdisc.
func hasClsact(h *netlink.Handle, l netlink.Link) (bool, error) {
	qs, err := h.QdiscList(l)
	if err != nil {
		return false, fmt.Errorf("list qdiscs of %s: %w", l.Attrs().Name, err)
	}
	for _, q := range qs {
		if q.Type() == "clsact" {
			return true, nil
		}
	}
	return false, nil
}

// Set shapes traffic to a port: port is its host-side veth end, minor its
// class (its ofport), mac the set's MAC. A nil c removes the shaping.
func (in Inbound) Set(port netlink.Link, minor uint16, mac net.HardwareAddr, c *Class) error {
	if minor == 0 || minor >= hostMinor {
		return fmt.Errorf("class minor %d out of range", minor)
	}
	if c == nil {
		if err := in.unredirect(port); err != nil {
			return err
		}
		return in.Remove(minor)
	}
	ifb, err := in.ensure()
	if err != nil {
		return err
	}
	if err := in.H.ClassReplace(htbClass(ifb, netlink.MakeHandle(1, minor), netlink.MakeHandle(1, hostMinor), c)); err != nil {
		return fmt.Errorf("class 1:%x on %s: %w", minor, in.Ifb, err)
	}
	want := classifier(ifb, minor, mac)
	got, err := filterFor(in.H, ifb, rootHandle, minor)
	if err != nil {
		return err
	}
	if got == nil || got.ClassId != want.ClassId || !sameKeys(got, want.Sel.Keys) {
		if err := in.H.FilterDel(&netlink.U32{FilterAttrs: want.FilterAttrs}); err != nil && !missing(err) {
			return fmt.Errorf("remove old classifier of 1:%x: %w", minor, err)
		}
		if err := in.H.FilterAdd(want); err != nil {
			return fmt.Errorf("classifier of 1:%x on %s: %w", minor, in.Ifb, err)
		}
	}
	ok, err := hasClsact(in.H, port)
	if err != nil {
		return err
	}
	if !ok {
		if err := in.H.QdiscAdd(&netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: port.Attrs().Index, Parent: netlink.HANDLE_CLSACT, Handle: netlink.MakeHandle(0xffff, 0)}}); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("clsact on %s: %w", port.Attrs().Name, err)
		}
	}
	red, err := filterFor(in.H, port, netlink.HANDLE_MIN_EGRESS, redirectPrio)
	if err != nil {
		return err
	}
	if !redirectsTo(red, ifb) {
		r := redirect(port, ifb)
		if err := in.H.FilterDel(&netlink.U32{FilterAttrs: r.FilterAttrs}); err != nil && !missing(err) {
			return fmt.Errorf("remove old redirect on %s: %w", port.Attrs().Name, err)
		}
		if err := in.H.FilterAdd(r); err != nil {
			return fmt.Errorf("redirect %s to %s: %w", port.Attrs().Name, in.Ifb, err)
		}
	}
	return nil
}

// unredirect removes the clsact qdisc (and with it the redirect) of port.
func (in Inbound) unredirect(port netlink.Link) error {
	if port == nil {
		return nil
	}
	ok, err := hasClsact(in.H, port)
	if err != nil || !ok {
		return err
	}
	q := &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: port.Attrs().Index, Parent: netlink.HANDLE_CLSACT, Handle: netlink.MakeHandle(0xffff, 0)}}
	if err := in.H.QdiscDel(q); err != nil && !missing(err) {
		return fmt.Errorf("remove clsact of %s: %w", port.Attrs().Name, err)
	}
	return nil
}

// Remove deletes a port's classifier and class from the host's tree.
func (in Inbound) Remove(minor uint16) error {
	ifb, err := in.ifb()
	if err != nil || ifb == nil {
		return err
	}
	f := &netlink.U32{FilterAttrs: netlink.FilterAttrs{LinkIndex: ifb.Attrs().Index, Parent: rootHandle, Priority: minor, Protocol: unix.ETH_P_ALL}}
	if err := in.H.FilterDel(f); err != nil && !missing(err) {
		return fmt.Errorf("remove classifier of 1:%x: %w", minor, err)
	}
	c := &netlink.HtbClass{ClassAttrs: netlink.ClassAttrs{LinkIndex: ifb.Attrs().Index, Parent: netlink.MakeHandle(1, hostMinor), Handle: netlink.MakeHandle(1, minor)}}
	if err := in.H.ClassDel(c); err != nil && !missing(err) {
		return fmt.Errorf("remove class 1:%x: %w", minor, err)
	}
	return nil
}

// Matches reports whether traffic to port is shaped as c says (nil: not
// shaped at all).
func (in Inbound) Matches(port netlink.Link, minor uint16, mac net.HardwareAddr, c *Class) (bool, error) {
	ifb, err := in.ifb()
	if err != nil {
		return false, err
	}
	var red *netlink.U32
	if port != nil {
		if red, err = filterFor(in.H, port, netlink.HANDLE_MIN_EGRESS, redirectPrio); err != nil {
			return false, err
		}
	}
	if c == nil {
		if red != nil {
			return false, nil
		}
		minors, err := in.Minors()
		if err != nil {
			return false, err
		}
		for _, m := range minors {
			if m == minor {
				return false, nil
			}
		}
		return true, nil
	}
	if ifb == nil || !redirectsTo(red, ifb) {
		return false, nil
	}
	if ok, err := classIs(in.H, ifb, netlink.MakeHandle(1, hostMinor), rootHandle, &Class{RateBits: in.HostBits, CeilBits: in.HostBits}); err != nil || !ok {
		return false, err
	}
	if ok, err := classIs(in.H, ifb, netlink.MakeHandle(1, minor), netlink.MakeHandle(1, hostMinor), c); err != nil || !ok {
		return false, err
	}
	f, err := filterFor(in.H, ifb, rootHandle, minor)
	if err != nil || f == nil {
		return false, err
	}
	return f.ClassId == netlink.MakeHandle(1, minor) && sameKeys(f, macKeys(mac)), nil
}

// RemoveIfIdle deletes the host's ifb (and its tree) once no port class is
// left in it, so that a host whose sets are gone leaves nothing behind.
func (in Inbound) RemoveIfIdle() error {
	ifb, err := in.ifb()
	if err != nil || ifb == nil {
		return err
	}
	minors, err := in.Minors()
	if err != nil || len(minors) > 0 {
		return err
	}
	if err := in.H.LinkDel(ifb); err != nil && !missing(err) {
		return fmt.Errorf("remove %s: %w", in.Ifb, err)
	}
	return nil
}

// Minors lists the port classes in the host's tree.
func (in Inbound) Minors() ([]uint16, error) {
	ifb, err := in.ifb()
	if err != nil || ifb == nil {
		return nil, err
	}
	cs, err := in.H.ClassList(ifb, rootHandle)
	if err != nil {
		return nil, fmt.Errorf("list classes of %s: %w", in.Ifb, err)
	}
	var out []uint16
	for _, c := range cs {
		maj, min := netlink.MajorMinor(c.Attrs().Handle)
		if maj == 1 && min != hostMinor && min != 0 {
			out = append(out, min)
		}
	}
	return out, nil
}

// SetOutbound shapes what a set sends: an HTB root with one class on its
// interface l (inside the set's namespace, h a handle there). A nil c
// removes it.
func SetOutbound(h *netlink.Handle, l netlink.Link, c *Class) error {
	if c == nil {
		qs, err := h.QdiscList(l)
		if err != nil {
			return fmt.Errorf("list qdiscs of %s: %w", l.Attrs().Name, err)
		}
		for _, q := range qs {
			if q.Attrs().Parent == netlink.HANDLE_ROOT && q.Attrs().Handle == rootHandle && q.Type() == "htb" {
				if err := h.QdiscDel(q); err != nil && !missing(err) {
					return fmt.Errorf("remove htb root of %s: %w", l.Attrs().Name, err)
				}
			}
		}
		return nil
	}
	if l.Attrs().TxQLen < 1000 {
		// The class's pfifo takes its length from the device when it is
		// made: a veth made with txqueuelen 0 would queue one packet.
		if err := h.LinkSetTxQLen(l, 1000); err != nil {
			return fmt.Errorf("txqueuelen of %s: %w", l.Attrs().Name, err)
		}
	}
	if err := ensureRoot(h, l, 1); err != nil {
		return err
	}
	if err := h.ClassReplace(htbClass(l, netlink.MakeHandle(1, 1), rootHandle, c)); err != nil {
		return fmt.Errorf("class 1:1 on %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// OutboundMatches reports whether l is shaped as c says (nil: not at all).
func OutboundMatches(h *netlink.Handle, l netlink.Link, c *Class) (bool, error) {
	qs, err := h.QdiscList(l)
	if err != nil {
		return false, fmt.Errorf("list qdiscs of %s: %w", l.Attrs().Name, err)
	}
	root := false
	for _, q := range qs {
		if htb, ok := q.(*netlink.Htb); ok && q.Attrs().Parent == netlink.HANDLE_ROOT && q.Attrs().Handle == rootHandle && htb.Defcls == 1 {
			root = true
		}
	}
	if c == nil || !root {
		return c == nil && !root, nil
	}
	return classIs(h, l, netlink.MakeHandle(1, 1), rootHandle, c)
}
