package faults

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"berth/internal/devstack"
)

// hostGrace is region's --host-grace (devstack keeps the default): a host
// silent for longer is down.
const hostGrace = 60 * time.Second

// serviceAction is PUT /os-services/{action} for host (2.11 for
// force-down), as admin.
func serviceAction(t *testing.T, s *devstack.Stack, action, host string, extra map[string]any) {
	t.Helper()
	body := map[string]any{"host": host, "binary": "nova-compute"}
	for k, v := range extra {
		body[k] = v
	}
	r := api(t, http.MethodPut, s.ComputeURL()+"/os-services/"+action, token(t, s, devstack.UserAdmin), body,
		map[string]string{"OpenStack-API-Version": "compute 2.11"})
	if r.code != http.StatusOK {
		t.Fatalf("os-services/%s %s: %s", action, host, r)
	}
}

// hostState is the hypervisor's "state" (up/down) as admin sees it.
func hostState(t *testing.T, s *devstack.Stack, host string) string {
	t.Helper()
	r := expect(t, http.MethodGet, s.ComputeURL()+"/os-hypervisors/detail", token(t, s, devstack.UserAdmin), nil, 200)
	for _, h := range decode[struct {
		H []struct {
			Name  string `json:"hypervisor_hostname"`
			State string `json:"state"`
		} `json:"hypervisors"`
	}](t, r).H {
		if h.Name == host {
			return h.State
		}
	}
	return ""
}

// startSecondAgent runs another host agent on this machine as host name,
// with a bridge of its own on the stack's OVS, until the test ends: then
// the host is disabled and forced down (so nothing is scheduled there
// again), the agent stopped by its PID, and its bridge and containers
// removed.
func startSecondAgent(t *testing.T, s *devstack.Stack, name string) {
	t.Helper()
	dir, err := binDir()
	if err != nil {
		t.Fatal(err)
	}
	bridge := s.Bridge() + "e"
	logf, err := os.Create(filepath.Join(s.RunDir(), "logs", "hostagent-"+name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, "berth-hostagent"),
		"--region-url", strings.TrimSuffix(s.ComputeURL(), "/v2.1"),
		"--image-url", s.ImageURL(),
		"--agent-token-file", s.AgentTokenFile(),
		"--host", name,
		"--bridge", bridge, "--datapath-type", "netdev",
		"--ovs-db", s.OVSDB(),
		"--pause-binary", filepath.Join(dir, "berth-pause"),
		"--state-dir", filepath.Join(s.RunDir(), "agent-"+name),
		"--listen", "127.0.0.1:0")
	cmd.Dir, cmd.Stdout, cmd.Stderr = s.RunDir(), logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		serviceAction(t, s, "disable", name, nil)
		serviceAction(t, s, "force-down", name, map[string]any{"forced_down": true})
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		ctx := context.Background()
		cs, err := s.Docker().ContainerList(ctx, container.ListOptions{All: true,
			Filters: filters.NewArgs(filters.Arg("label", devstack.LabelHost+"="+name))})
		if err == nil {
			for _, c := range cs {
				_ = s.Docker().ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
			}
		}
		if out, err := exec.Command("ovs-vsctl", "--db="+s.OVSDB(), "--if-exists", "del-br", bridge).CombinedOutput(); err != nil {
			t.Logf("del-br %s: %v %s", bridge, err, out)
		}
	})
	for start := time.Now(); hostState(t, s, name) != "up"; time.Sleep(time.Second) {
		if time.Since(start) > 2*time.Minute {
			t.Fatalf("second host agent %s not up after 2 minutes (see %s)", name, logf.Name())
		}
	}
}

// TestHostLossEvacuation (R7): with a second host agent running, a host
// whose agent stops for longer than the down threshold is reported down and
// its server's power state unknown (0); evacuated, the server is re-created
// on the other host with the same id, address and flavor and becomes
// ACTIVE there with its containers running; when the first host's agent
// returns it removes its stale copy of the server.
func TestHostLossEvacuation(t *testing.T) {
	s := stack(t)
	settle(t, s, settleBound)
	demo := token(t, s, devstack.UserDemo)
	admin := token(t, s, devstack.UserAdmin)
	hostB := s.HostName() + "-b"
	startSecondAgent(t, s, hostB)

	// The server on the stack's host: B is disabled while it is placed.
	serviceAction(t, s, "disable", hostB, nil)
	id := createServer(t, s, demo, "evac-"+fmt.Sprint(time.Now().UnixNano()%1e8), demoImageID(t, s), "1")
	t.Cleanup(func() { deleteAll(t, s, demo, []string{id}) })
	waitServer(t, s, demo, id, 2*time.Minute, "ACTIVE", isStatus("ACTIVE"))
	serviceAction(t, s, "enable", hostB, nil)
	before, _ := getServerAdmin(t, s, admin, id)
	if before.Host != s.HostName() {
		t.Fatalf("server %s on %q, want %s", id, before.Host, s.HostName())
	}
	ip := serverIP(t, s, demo, id)
	infraA := roleContainer(t, s, id, "infra")

	// The host goes silent past the grace.
	if err := s.KillService(devstack.ServiceHostAgent, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	agentBack := false
	t.Cleanup(func() {
		if !agentBack {
			restart(t, s, devstack.ServiceHostAgent)
		}
	})
	stopped := time.Now()
	for hostState(t, s, s.HostName()) != "down" || mustServer(t, s, admin, id).Power != 0 {
		if time.Since(stopped) > hostGrace+settleBound {
			sv := mustServer(t, s, admin, id)
			t.Fatalf("%s after the agent stopped: host %s, server power state %d; want down and 0 (unknown)",
				time.Since(stopped).Round(time.Second), hostState(t, s, s.HostName()), sv.Power)
		}
		time.Sleep(2 * time.Second)
	}
	t.Logf("host down and power state unknown %s after the agent stopped", time.Since(stopped).Round(time.Second))

	// The lost machine takes the server's data path with it, and its
	// containers stop as at a power loss. (Both agents share this
	// machine's kernel and OVS, where a dead host's interfaces would
	// otherwise keep the port's names taken.)
	ifaces, err := ovsInterfaces(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	for name, set := range ifaces {
		if set == id {
			if out, err := exec.Command("ovs-vsctl", "--db="+s.OVSDB(), "--if-exists", "del-port", name).CombinedOutput(); err != nil {
				t.Fatalf("del-port %s: %v %s", name, err, out)
			}
		}
	}
	links, err := linksOf(s, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		_ = exec.Command("ip", "link", "del", l).Run()
	}
	for _, role := range []string{"app", "infra"} {
		if err := s.Docker().ContainerKill(context.Background(), roleContainer(t, s, id, role), "KILL"); err != nil {
			t.Fatal(err)
		}
	}

	// Evacuate: the same server on B.
	r := api(t, http.MethodPost, s.ComputeURL()+"/servers/"+id+"/action", admin, map[string]any{"evacuate": map[string]any{}},
		map[string]string{"OpenStack-API-Version": "compute 2.29"})
	if r.code != http.StatusOK {
		t.Fatalf("evacuate %s: %s", id, r)
	}
	moved := time.Now()
	for {
		sv := mustServer(t, s, admin, id)
		if sv.Status == "ACTIVE" && sv.TaskS == nil && sv.Host == hostB {
			break
		}
		if time.Since(moved) > settleBound {
			t.Fatalf("evacuated server is %s (task %s) on %q %s later, want ACTIVE on %s", sv.Status, deref(sv.TaskS), sv.Host,
				settleBound, hostB)
		}
		time.Sleep(time.Second)
	}
	t.Logf("ACTIVE on %s %s after the evacuate", hostB, time.Since(moved).Round(time.Second))
	after := mustServer(t, s, admin, id)
	if after.Host != hostB {
		t.Errorf("evacuated server on %q, want %s", after.Host, hostB)
	}
	if got := serverIP(t, s, demo, id); got != ip {
		t.Errorf("evacuated server's address %s, was %s", got, ip)
	}
	if fmt.Sprint(after.Flavor) != fmt.Sprint(before.Flavor) {
		t.Errorf("evacuated server's flavor %v, was %v", after.Flavor, before.Flavor)
	}
	cs, err := s.Docker().ContainerList(context.Background(), container.ListOptions{Filters: filters.NewArgs(
		filters.Arg("label", devstack.LabelSet+"="+id), filters.Arg("label", devstack.LabelHost+"="+hostB))})
	if err != nil || len(cs) < 2 {
		t.Errorf("running containers of %s on %s: %d (%v), want infra and app", id, hostB, len(cs), err)
	}

	// The first host returns and removes its stale copy (stopped
	// containers of a set it no longer holds).
	restart(t, s, devstack.ServiceHostAgent)
	agentBack = true
	back := time.Now()
	for {
		_, err := s.Docker().ContainerInspect(context.Background(), infraA)
		if err != nil {
			break
		}
		if time.Since(back) > settleBound {
			t.Fatalf("the stale copy of %s (container %s) is still on %s %s after its agent returned",
				id, infraA[:12], s.HostName(), settleBound)
		}
		time.Sleep(time.Second)
	}
	t.Logf("stale copy removed %s after the agent returned", time.Since(back).Round(time.Second))
	if sv := mustServer(t, s, admin, id); sv.Status != "ACTIVE" || sv.Host != hostB {
		t.Errorf("after the first host returned, the server is %s on %s, want ACTIVE on %s", sv.Status, sv.Host, hostB)
	}
	deleteAll(t, s, demo, []string{id})
	settle(t, s, settleBound)
}

// evacServer is what R7 compares across the move.
type evacServer struct {
	server
	Flavor map[string]any `json:"flavor"`
}

func getServerAdmin(t *testing.T, s *devstack.Stack, tok, id string) (evacServer, bool) {
	t.Helper()
	r := api(t, http.MethodGet, s.ComputeURL()+"/servers/"+id, tok, nil)
	if r.code == http.StatusNotFound {
		return evacServer{}, false
	}
	if r.code != http.StatusOK {
		t.Fatalf("GET server %s: %s", id, r)
	}
	return decode[struct{ Server evacServer }](t, r).Server, true
}

func mustServer(t *testing.T, s *devstack.Stack, tok, id string) evacServer {
	t.Helper()
	sv, ok := getServerAdmin(t, s, tok, id)
	if !ok {
		t.Fatalf("server %s is gone", id)
	}
	return sv
}
