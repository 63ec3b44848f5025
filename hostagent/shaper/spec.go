// Package shaper limits set ports with HTB over netlink.
//
// Inbound (to a set) is shaped in one HTB tree per host: every shaped
// port's host-side veth redirects its egress (what OVS sends towards the
// set) to the host's ifb device, whose HTB root has one parent class
// (the host's capacity) and one class per port (rate = guarantee or
// average, ceil = peak or average, prio). Ports borrow what others leave
// idle up to their ceiling; lower prio borrows first.
//
// Outbound (from a set) is shaped on the set's own side: an HTB root on
// eth<N> inside the set's network namespace (the set has no
// CAP_NET_ADMIN to undo it). It cannot be shaped on the host side with
// OVS's userspace datapath: vswitchd reads a veth through an AF_PACKET
// socket, which the kernel serves before tc ingress runs, so a host-veth
// ingress redirect to an ifb only shapes a copy. Outbound limits are
// therefore per set (rate, ceil, burst) without borrowing between sets.
//
// Every change is delete-existing-then-add for qdiscs and filters
// (ENOENT ignored) and replace-in-place for classes, so a live resize
// does not drop the queue.
package shaper

import "berth/schema"

// Class is one HTB class.
type Class struct {
	// RateBits is the assured rate in bit/s.
	RateBits uint64
	// CeilBits is the most the class may borrow up to, in bit/s.
	CeilBits uint64
	// BurstBytes is how much may be sent at ceil speed beyond the rate
	// (0: 10ms of the rate, at least two full frames).
	BurstBytes uint32
	// Prio orders borrowing (0 first, up to 7).
	Prio uint32
}

// Spec is what a port's bandwidth asks for; nil classes are unshaped.
type Spec struct {
	// In is the port's class in the host's inbound tree.
	In *Class
	// Out is the root class on the set's eth<N>.
	Out *Class
}

// DefaultHostKbit is the host's inbound capacity when none is configured.
const DefaultHostKbit = 10_000_000

// FromBandwidth maps Nova's quota:vif_* (KB/s and KB; 1 KB/s = 8 kbit/s,
// as libvirt passes them to tc) and Berth's guarantee and priority to HTB
// classes. hostKbit caps every ceiling. Inbound: rate = the guarantee, or
// the average; ceil = peak (at least the average), or the average, or the
// host's capacity for a port with only a guarantee. Outbound: rate =
// average, ceil = peak, burst; a root class, so it behaves like libvirt's
// (average with bursts).
func FromBandwidth(bw *schema.SetBandwidth, hostKbit int) Spec {
	if hostKbit <= 0 {
		hostKbit = DefaultHostKbit
	}
	host := uint64(hostKbit) * 1000
	var s Spec
	if bw == nil {
		return s
	}
	kbps := func(kBps int) uint64 { return uint64(max(kBps, 0)) * 8000 }
	prio := uint32(min(max(bw.Priority, 0), 7))
	avg, peak := kbps(bw.InboundAverageKBps), kbps(bw.InboundPeakKBps)
	guarantee := uint64(max(bw.GuaranteeKbit, 0)) * 1000
	if avg > 0 || guarantee > 0 {
		c := &Class{Prio: prio, BurstBytes: uint32(max(bw.InboundBurstKB, 0)) * 1024}
		switch {
		case avg > 0:
			c.CeilBits = max(avg, peak)
		default:
			c.CeilBits = host
		}
		c.RateBits = avg
		if guarantee > 0 {
			c.RateBits = guarantee
		}
		c.CeilBits = min(c.CeilBits, host)
		c.RateBits = min(c.RateBits, c.CeilBits)
		s.In = c
	}
	if oavg := kbps(bw.OutboundAverageKBps); oavg > 0 {
		s.Out = &Class{
			RateBits:   oavg,
			CeilBits:   max(oavg, kbps(bw.OutboundPeakKBps)),
			BurstBytes: uint32(max(bw.OutboundBurstKB, 0)) * 1024,
		}
	}
	return s
}

// burst is the class's buffer in bytes at rate bits. The default is 10ms
// of the rate (at least two full frames) rather than tc's one MTU: HTB
// refills from a timer, and on a busy host (or a VM with steal time) a
// timer that fires late with a one-frame bucket loses the time it was
// late, so the class falls short of its rate. 10ms of extra burst is
// 0.2% of a 5s average.
func burst(set uint32, bits uint64) uint32 {
	if set > 0 {
		return set
	}
	return uint32(max(bits/8/100, 2*1514))
}

// quantum is the class's DRR quantum: rate/10 (tc's r2q) kept within the
// range the kernel does not warn about.
func quantum(bits uint64) uint32 {
	return uint32(min(max(bits/8/10, 1600), 60000))
}
