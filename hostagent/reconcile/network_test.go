package reconcile_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"berth/hostagent/netplumb"
	"berth/hostagent/nettest"
	"berth/hostagent/testenv"
	"berth/schema"
)

// infraPid is the PID of a set's infra container (its network namespace).
func infraPid(t *testing.T, h *testenv.Host, s schema.ObservedSet) int {
	t.Helper()
	id := testenv.ContainerOf(t, s, "infra").ID
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ins, err := h.Cli.ContainerInspect(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return ins.State.Pid
}

// The data path through the real reconciler: security groups and a
// bandwidth limit on a set's port; an agent restart during a transfer
// changes no flow and no qdisc; a resize is applied live (OpNetwork, no
// new container, no new veth); a deleted set leaves nothing behind.
func TestNetworkDataPath(t *testing.T) {
	h := testenv.NewHost(t, testenv.HostOptions{})
	nettest.Prioritize(t, nettest.VswitchdPid(t, h.OVS))
	a, b := testenv.NewSet(t, h.Cli, 1), testenv.NewSet(t, h.Cli, 2)
	a.Ports[0].PortSecurity = true
	a.Ports[0].Rules = []schema.SetRule{{Direction: "egress"}, {Direction: "ingress", Protocol: "tcp", PortMin: 5001, PortMax: 5001}}
	b.Ports[0].PortSecurity = true
	b.Ports[0].Rules = []schema.SetRule{{Direction: "egress"}, {Direction: "ingress", Protocol: "tcp"}}
	b.Ports[0].Bandwidth = &schema.SetBandwidth{InboundAverageKBps: 1000} // 8 Mbit/s
	desired := []schema.DesiredSet{a, b}
	both := func(r map[string]schema.ObservedSet) bool {
		return testenv.Running(a.ID)(r) && testenv.Running(b.ID)(r)
	}
	rep := h.Converge(t, desired, "both sets running", both)
	pa, pb := infraPid(t, h, rep[a.ID]), infraPid(t, h, rep[b.ID])
	bContainers := rep[b.ID].Containers

	for _, port := range []string{":22", ":5001"} {
		nettest.EchoServer(nettest.Listen(t, pa, port))
	}
	if err := nettest.TCPWorks(pb, a.Ports[0].IP+":5001"); err != nil {
		t.Errorf("b→a:5001 (allowed): %v", err)
	}
	if err := nettest.TCPWorks(pb, a.Ports[0].IP+":22"); err == nil {
		t.Error("b→a:22 connected; a admits only 5001")
	}

	flows0, tc0 := nettest.Flows(t, h.OVS), nettest.TCState(t, h.OVS.Netns)
	ln := nettest.Listen(t, pb, ":5001")
	// A transfer across an agent restart, again (up to 3 runs, each
	// logged) while its rate is off the limit: a loaded machine makes a
	// rate noisy both ways (see nettest.MeasureRate); a restart that
	// disturbed the data path would be off every time.
	var x nettest.Transfer
	for try := 1; try <= 3; try++ {
		res := nettest.Sink(ln)
		sent := make(chan error, 1)
		go func() { sent <- nettest.Blast(pa, b.Ports[0].IP+":5001", 4*time.Second) }()
		time.Sleep(500 * time.Millisecond)
		h.Stop()
		h.Start(t)
		h.Converge(t, desired, "both sets running after the restart", both)
		if err := <-sent; err != nil {
			t.Fatalf("transfer across the agent restart: %v", err)
		}
		x = <-res
		t.Logf("run %d: %.2f Mbit/s across the restart (load average %s)", try, x.Mbit(), nettest.LoadAvg())
		if !nettest.Off(x.Mbit(), nettest.Goodput(8), 0.10) {
			break
		}
	}
	nettest.Within(t, "a→b across the agent restart (b inbound 8 Mbit/s)", x.Mbit(), nettest.Goodput(8), 0.10)
	if got := nettest.Flows(t, h.OVS); strings.Join(got, "\n") != strings.Join(flows0, "\n") {
		t.Errorf("flows changed across the restart:\nbefore:\n%s\nafter:\n%s", strings.Join(flows0, "\n"), strings.Join(got, "\n"))
	}
	if got := nettest.TCState(t, h.OVS.Netns); got != tc0 {
		t.Errorf("tc changed across the restart:\nbefore:\n%s\nafter:\n%s", tc0, got)
	}

	// Resize: a new generation with a new bandwidth is applied live.
	eth0 := nettest.Link(t, pb, "eth0").Attrs().Index
	b.Generation = 2
	b.Ports[0].Bandwidth = &schema.SetBandwidth{InboundAverageKBps: 2000}
	desired = []schema.DesiredSet{a, b}
	rep = h.Converge(t, desired, "b at generation 2", func(r map[string]schema.ObservedSet) bool {
		return both(r) && r[b.ID].Generation == 2
	})
	for i, c := range rep[b.ID].Containers {
		if c.ID != bContainers[i].ID || !c.StartedAt.Equal(bContainers[i].StartedAt) {
			t.Errorf("container %s changed by a bandwidth change: %+v → %+v", c.Name, bContainers[i], c)
		}
	}
	if nettest.Link(t, pb, "eth0").Attrs().Index != eth0 {
		t.Error("eth0 replaced by a bandwidth change")
	}
	x = nettest.MeasureRate(t, pa, ln, b.Ports[0].IP+":5001", 3*time.Second, nettest.Goodput(16), 0.10)
	nettest.Within(t, "a→b after the resize to 16 Mbit/s", x.Mbit(), nettest.Goodput(16), 0.10)

	// Delete b: nothing of its port is left in the flows or in tc.
	b.State = schema.SetDeleted
	h.Converge(t, []schema.DesiredSet{a, b}, "b gone", func(r map[string]schema.ObservedSet) bool {
		s, ok := r[b.ID]
		return !ok || !s.Exists
	})
	hostEnd, _ := netplumb.IfNames(b.Ports[0].ID)
	for _, l := range nettest.Flows(t, h.OVS) {
		if strings.Contains(l, b.Ports[0].MAC) {
			t.Errorf("flow of deleted b left: %s", l)
		}
	}
	if out := h.OVS.Vsctl(t, "show"); strings.Contains(out, hostEnd) {
		t.Errorf("ovs-vsctl show still has %s", hostEnd)
	}
	if tc := nettest.TCState(t, h.OVS.Netns); strings.Contains(tc, hostEnd) || strings.Contains(tc, "class htb 1:") && strings.Count(tc, "class htb 1:") > 1 {
		t.Errorf("tc still holds deleted b:\n%s", tc)
	}
}
