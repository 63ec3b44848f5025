package netplumb_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"berth/hostagent/netplumb"
	"berth/hostagent/observed"
	"berth/hostagent/testenv"
	"berth/schema"
)

// netnsHolder starts a process in a fresh network namespace, standing in
// for an infra container, and returns its PID.
func netnsHolder(t *testing.T) int {
	t.Helper()
	cmd := exec.Command(testenv.BusyboxPath, "sleep", "3600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd.Process.Pid
}

// inNetns runs a command inside the netns of pid.
func inNetns(pid int, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"--net=/proc/" + strconv.Itoa(pid) + "/ns/net"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", full...).CombinedOutput()
	return string(out), err
}

func nsenterPath(path string, args ...string) (string, error) {
	out, err := exec.Command("nsenter", append([]string{"--net=" + path}, args...)...).CombinedOutput()
	return string(out), err
}

type fixture struct {
	ovs  *testenv.OVS
	p    *netplumb.Plumber
	host string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	testenv.RequireBinaries(t, "nsenter")
	ovs := testenv.StartOVS(t)
	host := "t-" + testenv.RandomHex(4)
	p := netplumb.New(slog.New(slog.NewTextHandler(io.Discard, nil)), netplumb.Config{
		Host: host, Bridge: ovs.Bridge, OVSDB: ovs.DB, SwitchNetns: ovs.Netns,
	})
	t.Cleanup(p.Close)
	return &fixture{ovs: ovs, p: p, host: host}
}

func port(n int) schema.SetPort {
	return schema.SetPort{
		ID:        testenv.RandomHex(4) + "-aaaa-bbbb-cccc-" + testenv.RandomHex(6),
		MAC:       "fa:16:3e:00:00:0" + strconv.Itoa(n),
		IP:        "10.99.0." + strconv.Itoa(10+n),
		PrefixLen: 24,
		Gateway:   "10.99.0.1",
	}
}

func TestPlumbTwoSetsTalk(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	pidA, pidB := netnsHolder(t), netnsHolder(t)
	pa, pb := port(1), port(2)

	start := time.Now()
	if err := f.p.Plumb(ctx, "set-a", 0, pa, pidA); err != nil {
		t.Fatalf("Plumb a: %v", err)
	}
	t.Logf("plumb took %s", time.Since(start))
	if err := f.p.Plumb(ctx, "set-b", 0, pb, pidB); err != nil {
		t.Fatalf("Plumb b: %v", err)
	}

	t.Run("eth0 configured inside", func(t *testing.T) {
		out, err := inNetns(pidA, "ip", "-o", "addr", "show", "eth0")
		if err != nil || !strings.Contains(out, pa.IP+"/24") {
			t.Errorf("eth0 in A: %q %v, want %s/24", out, err, pa.IP)
		}
		out, _ = inNetns(pidA, "ip", "link", "show", "eth0")
		if !strings.Contains(out, pa.MAC) || !strings.Contains(out, "UP") {
			t.Errorf("eth0 link in A: %q, want mac %s and UP", out, pa.MAC)
		}
		out, _ = inNetns(pidA, "ip", "route")
		if !strings.Contains(out, "default via 10.99.0.1 dev eth0") {
			t.Errorf("routes in A: %q, want default via gateway", out)
		}
		for _, pid := range []int{pidA} {
			ok, err := f.p.Attached(ctx, 0, pa, pid)
			if err != nil || !ok {
				t.Errorf("Attached(a) = %v, %v; want true", ok, err)
			}
		}
		if ok, _ := f.p.Attached(ctx, 0, pa, pidB); ok {
			t.Error("Attached(a) in B's netns = true, want false")
		}
	})

	t.Run("offloads off on both ends", func(t *testing.T) {
		hostEnd, _ := netplumb.IfNames(pa.ID)
		outHost, err := nsenterPath(f.ovs.Netns, "ethtool", "-k", hostEnd)
		if err != nil {
			t.Fatalf("ethtool host end: %v: %s", err, outHost)
		}
		outPeer, err := inNetns(pidA, "ethtool", "-k", "eth0")
		if err != nil {
			t.Fatalf("ethtool eth0: %v: %s", err, outPeer)
		}
		for name, out := range map[string]string{"host end": outHost, "eth0": outPeer} {
			for _, feat := range []string{"tx-checksumming: off", "tcp-segmentation-offload: off", "generic-segmentation-offload: off"} {
				if !strings.Contains(out, feat) {
					t.Errorf("%s: want %q in ethtool -k", name, feat)
				}
			}
		}
	})

	t.Run("ping across the bridge", func(t *testing.T) {
		out, err := inNetns(pidA, testenv.BusyboxPath, "ping", "-c", "3", "-W", "2", pb.IP)
		if err != nil {
			t.Errorf("ping a→b: %v\n%s", err, out)
		}
	})

	t.Run("tcp does not crawl", func(t *testing.T) {
		const size = 20 << 20
		bb := testenv.BusyboxPath
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "blob"), make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
		srv := exec.Command("nsenter", "--net=/proc/"+strconv.Itoa(pidB)+"/ns/net", bb, "httpd", "-f", "-p", "5001", "-h", dir)
		if err := srv.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()
		testenv.Eventually(t, 5*time.Second, "listener", func() bool {
			out, _ := inNetns(pidB, bb, "netstat", "-ltn")
			return strings.Contains(out, ":5001")
		})
		got := filepath.Join(dir, "got")
		start := time.Now()
		out, err := inNetns(pidA, bb, "wget", "-q", "-O", got, "http://"+pb.IP+":5001/blob")
		d := time.Since(start)
		if err != nil {
			t.Fatalf("fetch 20MiB: %v: %s", err, out)
		}
		if fi, err := os.Stat(got); err != nil || fi.Size() != size {
			t.Fatalf("received %v bytes (%v), want %d", fi, err, size)
		}
		t.Logf("20 MiB over TCP in %s", d)
		if d > 10*time.Second {
			t.Errorf("20 MiB took %s: offloads not off?", d)
		}
	})

	t.Run("list", func(t *testing.T) {
		ports, err := f.p.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(ports) != 2 {
			t.Fatalf("List() = %+v, want 2 ports", ports)
		}
		for _, p := range ports {
			if !p.InSwitch || !p.LinkPresent || p.OFPort <= 0 {
				t.Errorf("port %+v: want in switch with an ofport and link present", p)
			}
		}
		ports, err = f.p.List(ctx, "set-b")
		if err != nil || len(ports) != 1 || ports[0].PortID != pb.ID || ports[0].SetID != "set-b" {
			t.Errorf("List(set-b) = %+v, %v", ports, err)
		}
		other := netplumb.New(slog.New(slog.NewTextHandler(io.Discard, nil)), netplumb.Config{
			Host: "someone-else", Bridge: f.ovs.Bridge, OVSDB: f.ovs.DB, SwitchNetns: f.ovs.Netns,
		})
		if ports, _ := other.List(ctx, ""); len(ports) != 0 {
			t.Errorf("another host's List() = %+v, want none", ports)
		}
	})

	t.Run("replumb replaces", func(t *testing.T) {
		if err := f.p.Plumb(ctx, "set-a", 0, pa, pidA); err != nil {
			t.Fatalf("Plumb again: %v", err)
		}
		if out := f.ovs.Vsctl(t, "list-ports", f.ovs.Bridge); strings.Count(out, "\n") != 2 {
			t.Errorf("ports on bridge after replumb:\n%s", out)
		}
		if out, err := inNetns(pidB, testenv.BusyboxPath, "ping", "-c", "1", "-W", "2", pa.IP); err != nil {
			t.Errorf("ping b→a after replumb: %v\n%s", err, out)
		}
	})

	t.Run("unplumb", func(t *testing.T) {
		ports, _ := f.p.List(ctx, "set-a")
		for _, p := range ports {
			if err := f.p.Unplumb(ctx, p); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.p.Unplumb(ctx, observed.Port{SetID: "set-a", PortID: pa.ID}); err != nil {
			t.Errorf("second Unplumb: %v", err)
		}
		if ports, _ := f.p.List(ctx, "set-a"); len(ports) != 0 {
			t.Errorf("List(set-a) after unplumb = %+v", ports)
		}
		if out, _ := inNetns(pidA, "ip", "link", "show", "eth0"); !strings.Contains(out, "does not exist") {
			t.Errorf("eth0 in A after unplumb: %q", out)
		}
		hostEnd, _ := netplumb.IfNames(pa.ID)
		if strings.Contains(f.ovs.Vsctl(t, "list-ports", f.ovs.Bridge), hostEnd) {
			t.Error("OVS port left after unplumb")
		}
	})
}

func TestPlumbFailureLeavesNothing(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	pid := netnsHolder(t)
	p := port(3)
	p.Gateway = "192.168.77.1" // not on the port's subnet: the route fails
	err := f.p.Plumb(ctx, "set-x", 0, p, pid)
	if err == nil {
		t.Fatal("Plumb with an unreachable gateway succeeded")
	}
	t.Logf("Plumb error: %v", err)
	ports, lerr := f.p.List(ctx, "")
	if lerr != nil || len(ports) != 0 {
		t.Errorf("List() after failed plumb = %+v, %v; want nothing", ports, lerr)
	}
	if out, _ := inNetns(pid, "ip", "-o", "link"); strings.Contains(out, "eth0") || strings.Contains(out, "bp") {
		t.Errorf("links left in the set netns:\n%s", out)
	}
	hostEnd, peer := netplumb.IfNames(p.ID)
	for _, name := range []string{hostEnd, peer} {
		if _, err := netlink.LinkByName(name); err == nil {
			t.Errorf("%s left in the agent netns", name)
		}
	}
	if out, _ := nsenterPath(f.ovs.Netns, "ip", "-o", "link"); strings.Contains(out, hostEnd) {
		t.Errorf("%s left in the switch netns", hostEnd)
	}
}

func TestBadPortRejectedBeforeAnything(t *testing.T) {
	f := newFixture(t)
	p := port(4)
	p.MAC = "not-a-mac"
	if err := f.p.Plumb(context.Background(), "set-y", 0, p, netnsHolder(t)); err == nil {
		t.Fatal("Plumb with a bad MAC succeeded")
	}
}

func TestForeignLinkIsNotTouched(t *testing.T) {
	f := newFixture(t)
	p := port(5)
	hostEnd, _ := netplumb.IfNames(p.ID)
	// Somebody else's bridge device squats the name in the agent netns.
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: hostEnd}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(hostEnd); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	err := f.p.Plumb(context.Background(), "set-z", 0, p, netnsHolder(t))
	if !errors.Is(err, netplumb.ErrNotManaged) {
		t.Fatalf("Plumb over a foreign link: %v, want ErrNotManaged", err)
	}
	if _, err := netlink.LinkByName(hostEnd); err != nil {
		t.Errorf("foreign link was removed: %v", err)
	}
}

func TestIfNames(t *testing.T) {
	h, p := netplumb.IfNames("3f2a1b4c-1a2b-4c5d-8e9f-001122334455")
	if h != "bv3f2a1b4c1a2" || p != "bp3f2a1b4c1a2" {
		t.Errorf("IfNames() = %q, %q", h, p)
	}
	if len(h) > 15 {
		t.Errorf("host end %q longer than IFNAMSIZ-1", h)
	}
}

func TestEnsureBridge(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	br := "bn" + testenv.RandomHex(4)
	p := netplumb.New(slog.New(slog.NewTextHandler(io.Discard, nil)), netplumb.Config{
		Host: f.host, Bridge: br, OVSDB: f.ovs.DB, SwitchNetns: f.ovs.Netns,
	})
	t.Cleanup(p.Close)
	for range 2 { // idempotent
		if err := p.EnsureBridge(ctx, "netdev"); err != nil {
			t.Fatalf("EnsureBridge: %v", err)
		}
	}
	get := func(br, col string) string { return strings.TrimSpace(f.ovs.Vsctl(t, "get", "Bridge", br, col)) }
	if got := get(br, "datapath_type"); got != "netdev" {
		t.Errorf("datapath_type = %s, want netdev", got)
	}
	if got := get(br, "fail_mode"); got != "secure" {
		t.Errorf("fail_mode = %s, want secure", got)
	}
	// The bridge's own port is there, as ovs-vsctl add-br makes it.
	if got := strings.TrimSpace(f.ovs.Vsctl(t, "get", "Interface", br, "type")); got != "internal" {
		t.Errorf("interface %s type = %q, want internal", br, got)
	}
	if out, err := exec.Command("ovs-ofctl", "dump-flows", "unix:"+filepath.Join(f.ovs.Dir, br+".mgmt")).CombinedOutput(); err != nil {
		t.Errorf("dump-flows %s: %v: %s", br, err, out)
	} else if strings.Contains(string(out), "NORMAL") {
		t.Errorf("secure bridge has a NORMAL flow:\n%s", out)
	}
	// An existing bridge keeps its datapath, and is made secure.
	f.ovs.Vsctl(t, "set-fail-mode", f.ovs.Bridge, "standalone")
	if err := f.p.EnsureBridge(ctx, "system"); err != nil {
		t.Fatal(err)
	}
	if got := get(f.ovs.Bridge, "datapath_type"); got != "netdev" {
		t.Errorf("existing bridge datapath_type = %s, want it untouched (netdev)", got)
	}
	if got := get(f.ovs.Bridge, "fail_mode"); got != "secure" {
		t.Errorf("existing bridge fail_mode = %s, want secure", got)
	}
}

// An ovsdb-server restart (an upgrade, a crash) does not wedge the agent:
// its OVSDB client reconnects and monitors again, and ports plugged before
// and after are listed and removed as usual.
func TestOVSDBRestart(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	pidA, pidB := netnsHolder(t), netnsHolder(t)
	pa, pb := port(1), port(2)
	if err := f.p.Plumb(ctx, "set-a", 0, pa, pidA); err != nil {
		t.Fatalf("Plumb a: %v", err)
	}
	f.ovs.RestartDB(t)
	// The client notices the lost connection on its own schedule: the
	// first calls may fail, later ones must not.
	testenv.Eventually(t, time.Minute, "Plumb b after the ovsdb-server restart", func() bool {
		err := f.p.Plumb(ctx, "set-b", 0, pb, pidB)
		if err != nil {
			t.Logf("Plumb b: %v", err)
		}
		return err == nil
	})
	ports, err := f.p.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, pt := range ports {
		got[pt.PortID] = pt.InSwitch && pt.OFPort > 0
	}
	if !got[pa.ID] || !got[pb.ID] {
		t.Fatalf("List after the restart = %+v, want a and b plugged", ports)
	}
	for _, pt := range ports {
		if err := f.p.Unplumb(ctx, pt); err != nil {
			t.Fatalf("Unplumb %s: %v", pt.PortID, err)
		}
	}
	if out := f.ovs.Vsctl(t, "show"); strings.Contains(out, "Port bv") {
		t.Errorf("ports left after Unplumb:\n%s", out)
	}
}
