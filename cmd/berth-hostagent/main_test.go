package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"berth/hostagent/fakeregion"
	"berth/hostagent/runtime"
	"berth/hostagent/testenv"
	"berth/schema"
)

// stack is one host's surroundings: real Docker, a private OVS, and test
// doubles of region's and imagesvc's internal APIs sharing one agent token.
type stack struct {
	cli       *client.Client
	ovs       *testenv.OVS
	region    *fakeregion.Region
	images    *testenv.ImageService
	host      string
	tokenFile string
	stateDir  string
}

func newStack(t *testing.T) *stack {
	t.Helper()
	testenv.RequireRoot(t)
	cli := testenv.Docker(t)
	s := &stack{cli: cli, ovs: testenv.StartOVS(t), images: testenv.NewImageService(t), host: testenv.HostName(t, cli), stateDir: t.TempDir()}
	s.region = fakeregion.New(t, s.images.Token)
	s.tokenFile = filepath.Join(t.TempDir(), "agent-token")
	if err := os.WriteFile(s.tokenFile, []byte(s.images.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *stack) args(t *testing.T) []string {
	return []string{
		"--region-url", s.region.URL,
		"--image-url", s.images.URL,
		"--agent-token-file", s.tokenFile,
		"--host", s.host,
		"--bridge", s.ovs.Bridge,
		"--ovs-db", s.ovs.DB,
		"--switch-netns", s.ovs.Netns,
		"--pause-binary", testenv.PauseBinary(t),
		"--state-dir", s.stateDir,
		"--sync-interval", "1s",
		"--heartbeat-interval", "500ms",
		"--stop-grace", "3s",
		"--orphan-grace", "0s",
		"--log-level", "debug",
		"--listen", "127.0.0.1:0",
	}
}

// runMain runs the real Main in-process; the returned func stops it.
func (s *stack) runMain(t *testing.T) (stop func()) {
	t.Helper()
	m := NewMain()
	if err := m.ParseFlags(s.args(t)); err != nil {
		t.Fatal(err)
	}
	m.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Main.Run: %v", err)
		}
		if err := m.Close(); err != nil {
			t.Errorf("Main.Close: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func desiredSet(t *testing.T, cli *client.Client) schema.DesiredSet {
	return schema.DesiredSet{
		ID:         testenv.RandomHex(4) + "-0000-4000-8000-" + testenv.RandomHex(6),
		ProjectID:  "p1",
		Name:       "vm-1",
		Hostname:   "vm-1",
		State:      schema.SetRunning,
		Generation: 1,
		Image:      schema.SetImage{ID: "img-1", DockerImageID: testenv.BusyboxImage(t, cli)},
		Limits:     schema.SetLimits{VCPUs: 1, MemoryMB: 64, DiskGB: 1},
		Ports: []schema.SetPort{{
			ID: testenv.RandomHex(4) + "-1111-4000-8000-" + testenv.RandomHex(6), NetworkID: "n1",
			MAC: "fa:16:3e:aa:00:01", IP: "10.55.0.5", PrefixLen: 24, Gateway: "10.55.0.1",
		}},
	}
}

func setIs(id string, gen int64, exists bool, power string) func(schema.HostReport) bool {
	return func(r schema.HostReport) bool {
		s, ok := fakeregion.Set(r, id)
		return ok && s.Generation == gen && s.Exists == exists && s.PowerState == power && s.Error == ""
	}
}

func containerIDs(rep schema.HostReport, id string) map[string]string {
	s, _ := fakeregion.Set(rep, id)
	out := map[string]string{}
	for _, c := range s.Containers {
		out[c.Role] = c.ID
	}
	return out
}

func TestAgentDrivesSetThroughItsLife(t *testing.T) {
	s := newStack(t)
	stop := s.runMain(t)
	set := desiredSet(t, s.cli)

	s.region.WaitReport(t, s.host, 30*time.Second, "first heartbeat", func(schema.HostReport) bool { return true })
	reg, _, _, _ := s.region.Host(s.host)
	if reg.VCPUs < 1 || reg.MemoryMB < 1 || reg.DiskGB < 1 {
		t.Errorf("registered capacity = %+v, want detected values", reg)
	}
	if !strings.HasPrefix(reg.AgentURL, "http://127.0.0.1:") || strings.HasSuffix(reg.AgentURL, ":0") {
		t.Errorf("registered agent URL = %q, want the bound port", reg.AgentURL)
	}

	start := time.Now()
	s.region.SetDesired(s.host, set)
	rep := s.region.WaitReport(t, s.host, 60*time.Second, "running", setIs(set.ID, 1, true, schema.PowerRunning))
	t.Logf("create via region → running report: %s", time.Since(start))
	ids := containerIDs(rep, set.ID)
	if ids["infra"] == "" || ids["app"] == "" {
		t.Fatalf("report lacks containers: %+v", rep)
	}
	out, code := testenv.Exec(t, s.cli, ids["app"], "ip", "-o", "addr", "show", "dev", "eth0")
	if code != 0 || !strings.Contains(out, "10.55.0.5/24") {
		t.Errorf("app eth0: %q (exit %d)", out, code)
	}

	set.State, set.Generation = schema.SetStopped, 2
	start = time.Now()
	s.region.SetDesired(s.host, set)
	s.region.WaitReport(t, s.host, 60*time.Second, "shutdown", setIs(set.ID, 2, true, schema.PowerShutdown))
	t.Logf("stop via region → shutdown report: %s", time.Since(start))

	set.State, set.Generation = schema.SetRunning, 3
	s.region.SetDesired(s.host, set)
	rep = s.region.WaitReport(t, s.host, 60*time.Second, "running again", setIs(set.ID, 3, true, schema.PowerRunning))
	if got := containerIDs(rep, set.ID); got["app"] != ids["app"] {
		t.Errorf("start recreated the app: %v → %v", ids, got)
	}

	// The agent's own API answers with the token.
	req, _ := http.NewRequest(http.MethodPost, reg.AgentURL+"/agent/v1/sets/"+set.ID+"/sync", nil)
	req.Header.Set(schema.AgentTokenHeader, s.images.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var synced schema.ObservedSet
	if err := json.NewDecoder(resp.Body).Decode(&synced); err != nil || resp.StatusCode != 200 || synced.PowerState != schema.PowerRunning {
		t.Errorf("agent API sync = %d %+v (%v)", resp.StatusCode, synced, err)
	}
	resp.Body.Close()

	// Agent restart: the set is re-adopted, not recreated.
	stop()
	stop = s.runMain(t)
	time.Sleep(1500 * time.Millisecond) // a full resync after re-registration
	rep = s.region.WaitReport(t, s.host, 30*time.Second, "re-adopted", setIs(set.ID, 3, true, schema.PowerRunning))
	if got := containerIDs(rep, set.ID); got["app"] != ids["app"] || got["infra"] != ids["infra"] {
		t.Errorf("restart changed containers: %v → %v", ids, got)
	}

	set.State, set.Generation = schema.SetDeleted, 4
	start = time.Now()
	s.region.SetDesired(s.host, set)
	s.region.WaitReport(t, s.host, 60*time.Second, "gone", setIs(set.ID, 4, false, schema.PowerNoState))
	t.Logf("delete via region → gone report: %s", time.Since(start))
	if out := s.ovs.Vsctl(t, "list-ports", s.ovs.Bridge); strings.TrimSpace(out) != "" {
		t.Errorf("OVS ports left: %s", out)
	}
	s.region.SetDesired(s.host)
	s.region.WaitReport(t, s.host, 30*time.Second, "empty report", func(r schema.HostReport) bool { return len(r.Sets) == 0 })
	stop()
}

// TestBinarySurvivesKill runs the built binary and kills it with SIGTERM
// and SIGKILL: each restart re-attaches to the same containers.
func TestBinarySurvivesKill(t *testing.T) {
	s := newStack(t)
	bin := filepath.Join(t.TempDir(), "berth-hostagent")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v: %s", err, out)
	}
	var logs lockedBuffer
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, s.args(t)...)
		cmd.Stderr = &logs
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs.String())
		}
	})
	cmd := start()
	set := desiredSet(t, s.cli)
	s.region.SetDesired(s.host, set)
	rep := s.region.WaitReport(t, s.host, 60*time.Second, "running", setIs(set.ID, 1, true, schema.PowerRunning))
	ids := containerIDs(rep, set.ID)
	restarts := fmt.Sprint(rep.Sets[0].Containers)

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if sig == syscall.SIGTERM && err != nil {
			t.Errorf("agent exit after SIGTERM: %v, want 0", err)
		}
		_, regsBefore, _, _ := s.region.Host(s.host)
		cmd = start()
		testenv.Eventually(t, 30*time.Second, "re-registration", func() bool {
			_, n, _, _ := s.region.Host(s.host)
			return n > regsBefore
		})
		time.Sleep(1500 * time.Millisecond)
		rep = s.region.WaitReport(t, s.host, 30*time.Second, "running after "+sig.String(), setIs(set.ID, 1, true, schema.PowerRunning))
		if got := containerIDs(rep, set.ID); got["app"] != ids["app"] || got["infra"] != ids["infra"] {
			t.Errorf("after %s containers changed: %v → %v", sig, ids, got)
		}
		if got := fmt.Sprint(rep.Sets[0].Containers); got != restarts {
			t.Errorf("after %s containers (state, restarts, start time) changed:\n%s\n→\n%s", sig, restarts, got)
		}
	}
	set.State, set.Generation = schema.SetDeleted, 2
	s.region.SetDesired(s.host, set)
	s.region.WaitReport(t, s.host, 60*time.Second, "gone", setIs(set.ID, 2, false, schema.PowerNoState))
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
}

// lockedBuffer collects a child's stderr while the test may read it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestFlags(t *testing.T) {
	m := NewMain()
	if err := m.ParseFlags(nil); err == nil {
		t.Error("ParseFlags without --agent-token-file succeeded")
	}
	m = NewMain()
	if err := m.ParseFlags([]string{"--agent-token-file", "/x", "--vcpus", "3", "--sync-interval", "2s"}); err != nil {
		t.Fatal(err)
	}
	c := m.Config
	if c.Host == "" || c.Bridge != "br-berth" || c.VCPUs != 3 || c.SyncInterval != 2*time.Second || !strings.HasSuffix(c.PauseBinary, "berth-pause") {
		t.Errorf("config = %+v", c)
	}
	// Printing the seccomp profile needs no token.
	m = NewMain()
	if err := m.ParseFlags([]string{"--print-seccomp-profile"}); err != nil || !m.Config.PrintSeccomp {
		t.Errorf("--print-seccomp-profile: %v", err)
	}
}

// TestKillMidCreate kills the agent (SIGKILL) while it creates 20 sets;
// after a restart every set converges to running and no container of the
// host is left over (R3).
func TestKillMidCreate(t *testing.T) {
	s := newStack(t)
	bin := filepath.Join(t.TempDir(), "berth-hostagent")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v: %s", err, out)
	}
	var logs lockedBuffer
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, s.args(t)...)
		cmd.Stderr = &logs
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs.String())
		}
	})
	const n = 20
	var sets []schema.DesiredSet
	for i := range n {
		d := desiredSet(t, s.cli)
		d.Name, d.Hostname = fmt.Sprintf("vm-%d", i), fmt.Sprintf("vm-%d", i)
		d.Ports[0].MAC = fmt.Sprintf("fa:16:3e:aa:01:%02x", i)
		d.Ports[0].IP = fmt.Sprintf("10.55.0.%d", 10+i)
		sets = append(sets, d)
	}
	cmd := start()
	s.region.WaitReport(t, s.host, 30*time.Second, "first heartbeat", func(schema.HostReport) bool { return true })
	begin := time.Now()
	s.region.SetDesired(s.host, sets...)
	testenv.Eventually(t, 60*time.Second, "creation under way", func() bool {
		return len(s.hostContainers(t)) >= n/2
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	t.Logf("killed after %s with %d containers made", time.Since(begin), len(s.hostContainers(t)))

	cmd = start()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	rep := s.region.WaitReport(t, s.host, 90*time.Second, "all sets running", func(r schema.HostReport) bool {
		for _, d := range sets {
			if !setIs(d.ID, 1, true, schema.PowerRunning)(r) {
				return false
			}
		}
		return true
	})
	t.Logf("all %d sets running %s after the first desired state", n, time.Since(begin))
	reported := map[string]bool{}
	for _, d := range sets {
		ids := containerIDs(rep, d.ID)
		if len(ids) != 2 {
			t.Errorf("set %s containers = %v, want infra + app", d.ID, ids)
		}
		for _, id := range ids {
			reported[id] = true
		}
	}
	for _, c := range s.hostContainers(t) {
		if !reported[c] {
			t.Errorf("orphan container %s", c)
		}
	}
	if got := strings.Fields(s.ovs.Vsctl(t, "list-ports", s.ovs.Bridge)); len(got) != n {
		t.Errorf("OVS ports = %d, want %d", len(got), n)
	}

	// Mid-delete and mid-stop: half the sets deleted, half stopped, the
	// agent killed while that is under way; after a restart the deletes
	// are resumed and the stops done (R3).
	for i := range sets {
		sets[i].Generation = 2
		sets[i].State = schema.SetStopped
		if i%2 == 0 {
			sets[i].State = schema.SetDeleted
		}
	}
	s.region.SetDesired(s.host, sets...)
	testenv.Eventually(t, 60*time.Second, "deletes and stops under way", func() bool {
		return len(s.hostContainers(t)) < 2*n || s.runningContainers(t) < 2*n
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	t.Logf("killed with %d containers left, %d running", len(s.hostContainers(t)), s.runningContainers(t))
	cmd = start()
	rep = s.region.WaitReport(t, s.host, 90*time.Second, "deleted and stopped", func(r schema.HostReport) bool {
		for _, d := range sets {
			if d.State == schema.SetDeleted && !setIs(d.ID, 2, false, schema.PowerNoState)(r) ||
				d.State == schema.SetStopped && !setIs(d.ID, 2, true, schema.PowerShutdown)(r) {
				return false
			}
		}
		return true
	})
	if got := len(s.hostContainers(t)); got != n || s.runningContainers(t) != 0 {
		t.Errorf("containers after the second kill: %d (%d running), want %d stopped (the stopped sets')", got, s.runningContainers(t), n)
	}
	if got := strings.Fields(s.ovs.Vsctl(t, "list-ports", s.ovs.Bridge)); len(got) != 0 {
		t.Errorf("OVS ports of deleted and stopped sets left: %v", got)
	}
}

// runningContainers counts the running containers of the stack's host.
func (s *stack) runningContainers(t *testing.T) int {
	t.Helper()
	cs, err := s.cli.ContainerList(context.Background(), container.ListOptions{
		Filters: filters.NewArgs(filters.Arg("label", runtime.LabelHost+"="+s.host))})
	if err != nil {
		t.Fatal(err)
	}
	return len(cs)
}

// hostContainers lists the IDs of every container of the stack's host.
func (s *stack) hostContainers(t *testing.T) []string {
	t.Helper()
	cs, err := s.cli.ContainerList(context.Background(), container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", runtime.LabelHost+"="+s.host))})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	return ids
}
