package faults

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"berth/internal/devstack"
)

// probeHTTP fetches http://ip/ from inside a server's app container.
func probeHTTP(t *testing.T, s *devstack.Stack, fromServer, ip string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// (Debian's busybox wget segfaults on -T; hence timeout.)
	out, err := exec.CommandContext(ctx, "docker", "exec", appContainer(t, s, fromServer),
		"timeout", "3", "wget", "-q", "-O", "-", "http://"+ip+"/").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// TestIsolationAfterFaults: the network and container isolation checks
// (A3, A8, A9) hold after the host agent is killed with SIGKILL and
// restarted and PostgreSQL is restarted. Server a sits alone in a
// security group that admits only its members, with a2: a2 reaches a's
// HTTP port; b (demo, default group) and c (alt's project) never do, before
// and after the faults (c not once after them). Every set has its own PID and mount namespaces:
// a's app sees exactly the processes of its own PID namespace, and a file
// b writes is not visible in a.
func TestIsolationAfterFaults(t *testing.T) {
	s := stack(t)
	demo := token(t, s, devstack.UserDemo)
	alt := token(t, s, devstack.UserAlt)
	img := demoImageID(t, s)
	sfx := strconv.FormatInt(time.Now().UnixNano()%1e8, 36)
	a := createServer(t, s, demo, "iso-a-"+sfx, img, "1")
	a2 := createServer(t, s, demo, "iso-a2-"+sfx, img, "1")
	b := createServer(t, s, demo, "iso-b-"+sfx, img, "1")
	c := createServer(t, s, alt, "iso-c-"+sfx, img, "1")
	t.Cleanup(func() {
		deleteAll(t, s, demo, []string{a, a2, b})
		deleteAll(t, s, alt, []string{c})
	})
	for _, id := range []string{a, a2, b} {
		waitServer(t, s, demo, id, 2*time.Minute, "ACTIVE", isStatus("ACTIVE"))
	}
	waitServer(t, s, alt, c, 2*time.Minute, "ACTIVE", isStatus("ACTIVE"))

	// a and a2 in a group of their own that admits only its members.
	r := expect(t, http.MethodPost, s.NetworkURL()+"/v2.0/security-groups", demo,
		map[string]any{"security_group": map[string]any{"name": "iso-" + sfx}}, 201)
	sg := decode[struct {
		SG struct{ ID string } `json:"security_group"`
	}](t, r).SG.ID
	t.Cleanup(func() { api(t, http.MethodDelete, s.NetworkURL()+"/v2.0/security-groups/"+sg, demo, nil) })
	expect(t, http.MethodPost, s.NetworkURL()+"/v2.0/security-group-rules", demo, map[string]any{"security_group_rule": map[string]any{
		"security_group_id": sg, "direction": "ingress", "ethertype": "IPv4", "remote_group_id": sg}}, 201)
	for _, id := range []string{a, a2} {
		r := expect(t, http.MethodGet, s.NetworkURL()+"/v2.0/ports?device_id="+id, demo, nil, 200)
		ports := decode[struct{ Ports []struct{ ID string } }](t, r).Ports
		if len(ports) != 1 {
			t.Fatalf("server %s has %d ports, want 1", id, len(ports))
		}
		expect(t, http.MethodPut, s.NetworkURL()+"/v2.0/ports/"+ports[0].ID, demo,
			map[string]any{"port": map[string]any{"security_groups": []string{sg}}}, 200)
	}
	ip := serverIP(t, s, demo, a)

	// strict: c must never get through, not even while flows settle
	// (before the first check a is still in demo's default group, which
	// other tests may have opened to tcp/80 from anywhere).
	check := func(when string, strict bool) {
		t.Helper()
		// Wait for the hosts' flows to follow (the port change, or the
		// faults); then the matrix must hold as a whole.
		deadline := time.Now().Add(settleBound)
		for {
			okA2 := probeHTTP(t, s, a2, ip)
			errB := probeHTTP(t, s, b, ip)
			errC := probeHTTP(t, s, c, ip)
			if okA2 == nil && errB != nil && errC != nil {
				t.Logf("%s: a2 → a answered; b → a and c → a refused (%v; %v)", when, errB, errC)
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("%s: a2 → a: %v (want an answer); b → a: %v, c (alt) → a: %v (want no answer)", when, okA2, errB, errC)
				return
			}
			if errC == nil && strict {
				// Never, not even while flows settle: another project's
				// server reached a's port.
				t.Errorf("%s: alt's server %s reached demo's %s (%s) over HTTP", when, c, a, ip)
				return
			}
			time.Sleep(time.Second)
		}
	}
	check("before the faults", false)

	if err := s.KillService(devstack.ServiceHostAgent, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	t.Logf("agent back in %s", restart(t, s, devstack.ServiceHostAgent).Round(time.Millisecond))
	t.Logf("postgres back in %s", restart(t, s, devstack.ServicePostgres).Round(time.Millisecond))
	settle(t, s, settleBound)
	check("after agent SIGKILL and PostgreSQL restart", true)

	// Containers: a's app sees only its own PID namespace's processes, and
	// a file in b is not in a.
	pidNS := func(pid string) string {
		l, err := os.Readlink("/proc/" + pid + "/ns/pid")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	ctx := context.Background()
	ins, err := s.Docker().ContainerInspect(ctx, appContainer(t, s, a))
	if err != nil {
		t.Fatal(err)
	}
	insB, err := s.Docker().ContainerInspect(ctx, appContainer(t, s, b))
	if err != nil {
		t.Fatal(err)
	}
	nsA := pidNS(strconv.Itoa(ins.State.Pid))
	if nsA == pidNS("self") || nsA == pidNS(strconv.Itoa(insB.State.Pid)) {
		t.Errorf("a's app PID namespace %s is the host's or b's", nsA)
	}
	inNS := 0
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		if l, err := os.Readlink(p + "/ns/pid"); err == nil && l == nsA {
			inNS++
		}
	}
	out, err := exec.Command("docker", "exec", ins.ID, "sh", "-c", "ls -d /proc/[0-9]* | wc -l").CombinedOutput()
	if err != nil {
		t.Fatalf("list processes in a: %v %s", err, out)
	}
	// The count includes the sh and ls of this exec (also in a's namespace
	// but gone by the time the host counts): allow for them.
	seen, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	if seen > inNS+3 || seen == 0 {
		t.Errorf("a's app sees %d processes; its PID namespace holds %d (+ this exec's): it sees others'", seen, inNS)
	}
	marker := "/tmp/iso-marker-" + sfx
	if out, err := exec.Command("docker", "exec", insB.ID, "touch", marker).CombinedOutput(); err != nil {
		t.Fatalf("touch in b: %v %s", err, out)
	}
	if err := exec.Command("docker", "exec", ins.ID, "test", "-e", marker).Run(); err == nil {
		t.Errorf("a file b made (%s) is visible in a", marker)
	}
}
