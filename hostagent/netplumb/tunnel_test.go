package netplumb_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"berth/hostagent/netplumb"
	"berth/hostagent/nettest"
	"berth/hostagent/testenv"
	"berth/schema"
)

// tunnelHost is one "host" of the two-host test: a private OVS in its own
// netns with an underlay bridge carrying the tunnel endpoint (as in OVS's
// userspace tunneling how-to) and a plumber for the integration bridge.
type tunnelHost struct {
	f        *fixture
	p        *netplumb.Plumber
	tunnelIP string
}

// wire connects two OVS netns with a veth pair, each end in a netdev
// "underlay" bridge whose internal port holds the tunnel endpoint.
func wire(t *testing.T, a, b *testenv.OVS, ipA, ipB string) {
	t.Helper()
	ea, eb := "bw"+testenv.RandomHex(4), "bw"+testenv.RandomHex(4)
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: ea, TxQLen: 1000}, PeerName: eb, PeerTxQLen: 1000}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(ea); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	for _, x := range []struct {
		o    *testenv.OVS
		end  string
		addr string
	}{{a, ea, ipA}, {b, eb, ipB}} {
		l, err := netlink.LinkByName(x.end)
		if err != nil {
			t.Fatal(err)
		}
		ns, err := netns.GetFromPath(x.o.Netns)
		if err != nil {
			t.Fatal(err)
		}
		err = netlink.LinkSetNsFd(l, int(ns))
		ns.Close()
		if err != nil {
			t.Fatal(err)
		}
		br := "bu" + testenv.RandomHex(4)
		for _, cmd := range [][]string{
			{"ethtool", "-K", x.end, "tx", "off", "tso", "off", "gso", "off"},
			{"ip", "link", "set", x.end, "up"},
		} {
			if out, err := nsenterPath(x.o.Netns, cmd...); err != nil {
				t.Fatalf("%v: %v: %s", cmd, err, out)
			}
		}
		x.o.Vsctl(t, "add-br", br, "--", "set", "Bridge", br, "datapath_type=netdev", "--", "add-port", br, x.end)
		for _, cmd := range [][]string{
			{"ip", "addr", "add", x.addr + "/24", "dev", br},
			{"ip", "link", "set", br, "up"},
		} {
			if out, err := nsenterPath(x.o.Netns, cmd...); err != nil {
				t.Fatalf("%v: %v: %s", cmd, err, out)
			}
		}
	}
}

// Two hosts on this machine joined by VXLAN: sets of one network reach
// each other across hosts, sets of different networks exchange nothing,
// and a host that leaves the peer list loses its tunnel.
func TestVXLANBetweenHosts(t *testing.T) {
	f1, f2 := newFixture(t), newFixture(t)
	subnet := fmt.Sprintf("172.31.%d.", 10+rand.IntN(200))
	h1 := &tunnelHost{f: f1, tunnelIP: subnet + "1"}
	h2 := &tunnelHost{f: f2, tunnelIP: subnet + "2"}
	wire(t, f1.ovs, f2.ovs, h1.tunnelIP, h2.tunnelIP)
	peers := []schema.Peer{{Host: f1.host, TunnelIP: h1.tunnelIP}, {Host: f2.host, TunnelIP: h2.tunnelIP}}
	ctx := context.Background()
	for _, h := range []*tunnelHost{h1, h2} {
		h.p = h.f.plumber(t, netplumb.Config{TunnelIP: h.tunnelIP})
		h.p.SetPeers(peers)
		if err := h.p.SyncHost(ctx); err != nil {
			t.Fatal(err)
		}
	}
	port := func(n int, network string) schema.SetPort {
		p := netPort(n, network, true, allowAll)
		p.MTU = 1450 // VXLAN's 50 bytes of overhead on a 1500-byte underlay
		if network == "net-1" {
			p.Gateway = "10.99.0.1" // net-2, on the same subnet, has none
		}
		return p
	}
	a := f1.plumb(t, h1.p, port(1, "net-1"))
	d := f1.plumb(t, h1.p, port(4, "net-2"))
	b := f2.plumb(t, h2.p, port(2, "net-1"))
	c := f2.plumb(t, h2.p, port(3, "net-2"))

	t.Run("same network across hosts", func(t *testing.T) {
		// The first packets wait for the underlay's ARP.
		testenv.Eventually(t, 10*time.Second, "ping a→b across the tunnel", func() bool { return nettest.Ping(a.pid, b.port.IP) == nil })
		if err := nettest.Ping(c.pid, d.port.IP); err != nil {
			t.Errorf("ping c→d (net-2) across the tunnel: %v", err)
		}
		nettest.EchoServer(nettest.Listen(t, b.pid, ":7000"))
		if err := nettest.TCPWorks(a.pid, b.port.IP+":7000"); err != nil {
			t.Errorf("tcp a→b: %v", err)
		}
		ln := nettest.Listen(t, b.pid, ":5001")
		x := nettest.Measure(t, a.pid, ln, b.port.IP+":5001", time.Second)
		t.Logf("a→b over VXLAN (userspace datapath): %.0f Mbit/s", x.Mbit())
		if x.Mbit() < 10 {
			t.Errorf("a→b over VXLAN: %.1f Mbit/s", x.Mbit())
		}
	})

	t.Run("other network across hosts: not a single packet", func(t *testing.T) {
		before := nettest.RxPackets(t, c.pid)
		if err := nettest.Ping(a.pid, c.port.IP); err == nil {
			t.Error("ping a (net-1) → c (net-2) succeeded")
		}
		marker := []byte("berth-vxlan-" + testenv.RandomHex(4))
		got := nettest.SendAndCapture(t, a.pid, [][]byte{nettest.UDPFrame(nettest.MAC(c.port.MAC), nettest.MAC(a.port.MAC), a.port.IP, c.port.IP, 5000, 5000, marker)}, [][]byte{marker}, c.pid)
		if n := got[0][string(marker)]; n != 0 {
			t.Errorf("c received %d frames from net-1", n)
		}
		if after := nettest.RxPackets(t, c.pid); after != before {
			t.Errorf("c's eth0 received %d packets from another network, want 0", after-before)
		}
	})

	t.Run("the host's own port stays local", func(t *testing.T) {
		// Host 1 holds the gateway; host 2 does not. Host 1's sets reach
		// it, host 2's sets on the same network do not: the host never
		// answers through a tunnel (every host may hold the address).
		for _, args := range [][]string{
			{"ip", "addr", "add", "10.99.0.1/24", "dev", f1.ovs.Bridge},
			{"ip", "link", "set", f1.ovs.Bridge, "up"},
			{"ethtool", "-K", f1.ovs.Bridge, "tx", "off"},
		} {
			if out, err := nsenterPath(f1.ovs.Netns, args...); err != nil {
				t.Fatalf("%v: %v: %s", args, err, out)
			}
		}
		if err := h1.p.SyncHost(ctx); err != nil {
			t.Fatal(err)
		}
		if err := nettest.Ping(a.pid, "10.99.0.1"); err != nil {
			t.Errorf("ping a (host 1, net-1) → host 1's gateway: %v", err)
		}
		if err := nettest.Ping(b.pid, "10.99.0.1"); err == nil {
			t.Error("ping b (host 2, net-1) → host 1's gateway passed through the tunnel")
		}
		if err := nettest.Ping(d.pid, "10.99.0.1"); err == nil {
			t.Error("ping d (host 1, net-2: not the gateway's network) → host 1's gateway passed")
		}
		if err := nettest.TCPWorks(nettest.VswitchdPid(t, f1.ovs), b.port.IP+":7000"); err == nil {
			t.Error("host 1 → b (host 2) connected through the tunnel")
		}
	})

	t.Run("a host that leaves loses its tunnel", func(t *testing.T) {
		tun := netplumb.TunnelName(f1.host, f2.host)
		if !strings.Contains(f1.ovs.Vsctl(t, "list-ports", f1.ovs.Bridge), tun) {
			t.Fatalf("no tunnel %s on host 1", tun)
		}
		h1.p.SetPeers(peers[:1])
		if err := h1.p.SyncHost(ctx); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(f1.ovs.Vsctl(t, "list-ports", f1.ovs.Bridge), tun) {
			t.Errorf("tunnel %s left after its peer went", tun)
		}
		for _, l := range f1.flowsOf(t) {
			if strings.Contains(l, "tun_id") || strings.Contains(l, "TUN_ID") {
				t.Errorf("tunnel flow left: %s", l)
			}
		}
		if err := nettest.Ping(a.pid, b.port.IP); err == nil {
			t.Error("ping a→b still passes without a tunnel")
		}
		if err := nettest.Ping(a.pid, d.port.IP); err == nil {
			t.Error("ping a→d (other network, same host) passed")
		}
	})
}
