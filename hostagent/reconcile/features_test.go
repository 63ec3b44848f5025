package reconcile_test

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/pkg/stdcopy"

	"berth/hostagent/testenv"
	"berth/schema"
)

func cgroupFile(t *testing.T, controller, id, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", controller, "docker", id, file))
	if err != nil {
		t.Fatalf("read cgroup: %v", err)
	}
	return strings.TrimSpace(string(b))
}

func started(t *testing.T, e *realEnv, id string) time.Time {
	t.Helper()
	j, err := e.cli.ContainerInspect(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	ts, _ := time.Parse(time.RFC3339Nano, j.State.StartedAt)
	return ts
}

func ipAddr(t *testing.T, e *realEnv, id string) string {
	t.Helper()
	out, code := testenv.Exec(t, e.cli, id, "ip", "-o", "link", "show", "dev", "eth0")
	out2, _ := testenv.Exec(t, e.cli, id, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
	if code != 0 {
		t.Fatalf("ip in %.12s: %s", id, out)
	}
	return strings.Fields(out2)[3] + " " + out[strings.Index(out, "link/ether"):][:28]
}

func TestPauseUnpause(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	s := newSet(t, e.cli, 11)
	rep := e.converge(t, []schema.DesiredSet{s}, "running", running(s.ID))
	app, infra := appID(t, rep[s.ID]), testenv.ContainerOf(t, rep[s.ID], "infra").ID

	s.State, s.Generation = schema.SetPaused, 2
	e.converge(t, []schema.DesiredSet{s}, "paused", func(r map[string]schema.ObservedSet) bool {
		return r[s.ID].PowerState == schema.PowerPaused && r[s.ID].Generation == 2
	})
	for _, id := range []string{app, infra} {
		if got := cgroupFile(t, "freezer", id, "freezer.state"); got != "FROZEN" {
			t.Errorf("freezer.state of %.12s = %s, want FROZEN", id, got)
		}
	}
	s.State, s.Generation = schema.SetRunning, 3
	rep = e.converge(t, []schema.DesiredSet{s}, "running again", func(r map[string]schema.ObservedSet) bool {
		return running(s.ID)(r) && r[s.ID].Generation == 3
	})
	if got := cgroupFile(t, "freezer", app, "freezer.state"); got != "THAWED" {
		t.Errorf("freezer.state after unpause = %s, want THAWED", got)
	}
	if appID(t, rep[s.ID]) != app {
		t.Error("unpause replaced the app container")
	}
	// A paused set can be stopped.
	s.State, s.Generation = schema.SetPaused, 4
	e.converge(t, []schema.DesiredSet{s}, "paused", func(r map[string]schema.ObservedSet) bool { return r[s.ID].PowerState == schema.PowerPaused })
	s.State, s.Generation = schema.SetStopped, 5
	e.converge(t, []schema.DesiredSet{s}, "stopped from paused", func(r map[string]schema.ObservedSet) bool {
		return r[s.ID].PowerState == schema.PowerShutdown && r[s.ID].Generation == 5 && r[s.ID].Error == ""
	})
}

func TestRebootKeepsInfra(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	s := newSet(t, e.cli, 12)
	rep := e.converge(t, []schema.DesiredSet{s}, "running", running(s.ID))
	app, infra := testenv.ContainerOf(t, rep[s.ID], "app"), testenv.ContainerOf(t, rep[s.ID], "infra")
	addr := ipAddr(t, e, app.ID)

	for i, hard := range []bool{false, true} {
		s.RebootSeq, s.RebootHard, s.Generation = int64(i+1), hard, int64(i+2)
		rep = e.converge(t, []schema.DesiredSet{s}, "rebooted", func(r map[string]schema.ObservedSet) bool {
			return running(s.ID)(r) && r[s.ID].RebootSeq == s.RebootSeq
		})
		a2, i2 := testenv.ContainerOf(t, rep[s.ID], "app"), testenv.ContainerOf(t, rep[s.ID], "infra")
		if a2.ID != app.ID || !a2.StartedAt.After(app.StartedAt) {
			t.Errorf("reboot (hard=%v): app %+v → %+v, want the same container started again", hard, app, a2)
		}
		if i2.ID != infra.ID || !i2.StartedAt.Equal(infra.StartedAt) {
			t.Errorf("reboot (hard=%v) touched infra: %+v → %+v", hard, infra, i2)
		}
		if got := ipAddr(t, e, app.ID); got != addr {
			t.Errorf("address after reboot = %s, want %s", got, addr)
		}
		app = a2
	}

	// An agent restart does not reboot again.
	e.restart(t)
	rep = e.converge(t, []schema.DesiredSet{s}, "re-adopted", func(r map[string]schema.ObservedSet) bool {
		return running(s.ID)(r) && r[s.ID].RebootSeq == s.RebootSeq
	})
	time.Sleep(300 * time.Millisecond)
	rep = e.converge(t, []schema.DesiredSet{s}, "still running", running(s.ID))
	if a := testenv.ContainerOf(t, rep[s.ID], "app"); !a.StartedAt.Equal(app.StartedAt) {
		t.Errorf("agent restart rebooted the set again: started %s → %s", app.StartedAt, a.StartedAt)
	}
}

func TestStopGrace(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	s := newSet(t, e.cli, 13)
	s.StopGraceSeconds = 1
	s.Containers = []schema.SetContainer{{Name: "app", Role: schema.RoleApp, Image: s.Image,
		Command: []string{"/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"}}}
	rep := e.converge(t, []schema.DesiredSet{s}, "running", running(s.ID))
	app := appID(t, rep[s.ID])
	s.State, s.Generation = schema.SetStopped, 2
	start := time.Now()
	e.converge(t, []schema.DesiredSet{s}, "stopped", func(r map[string]schema.ObservedSet) bool {
		return r[s.ID].PowerState == schema.PowerShutdown && r[s.ID].Generation == 2
	})
	took := time.Since(start)
	j, err := e.cli.ContainerInspect(context.Background(), app)
	if err != nil {
		t.Fatal(err)
	}
	// TERM is ignored: KILL (137) once the grace has passed, and the grace
	// is the set's 1s, not the agent's default. The elapsed time is only
	// checked from below (no KILL before the grace): an upper bound would
	// measure the machine's load, not the agent.
	if j.State.ExitCode != 137 || took < time.Second {
		t.Errorf("stop took %s with exit %d, want KILL (137) after at least the 1s grace", took, j.State.ExitCode)
	}
	if st := j.Config.StopTimeout; st == nil || *st != 1 {
		t.Errorf("container stop timeout = %v, want the set's 1s grace", st)
	}
}

// TestDeleteKills: a delete powers the set off, as Nova's delete does: its
// containers get KILL at once, never the TERM-and-grace of a stop, so an
// app that ignores TERM under a long grace does not hold the delete up.
// Checked by the signals Docker reports, not by a clock.
func TestDeleteKills(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	s := newSet(t, e.cli, 15)
	s.StopGraceSeconds = 600
	s.Containers = []schema.SetContainer{{Name: "app", Role: schema.RoleApp, Image: s.Image,
		Command: []string{"/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"}}}
	rep := e.converge(t, []schema.DesiredSet{s}, "running", running(s.ID))
	app := appID(t, rep[s.ID])
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, errs := e.cli.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", "container"), filters.Arg("container", app), filters.Arg("event", "kill"), filters.Arg("event", "destroy"))})
	s.State, s.Generation = schema.SetDeleted, 2
	e.converge(t, []schema.DesiredSet{s}, "deleted", func(r map[string]schema.ObservedSet) bool {
		return !r[s.ID].Exists && r[s.ID].Generation == 2
	})
	var signals []string
	for done := false; !done; {
		select {
		case m := <-msgs:
			if m.Action == "destroy" {
				done = true
				break
			}
			signals = append(signals, m.Actor.Attributes["signal"])
		case err := <-errs:
			t.Fatalf("docker events: %v", err)
		case <-time.After(time.Minute):
			t.Fatalf("no destroy event for the app container; kills seen: %v", signals)
		}
	}
	if len(signals) == 0 || slices.ContainsFunc(signals, func(sig string) bool { return sig != "9" && sig != "KILL" && sig != "SIGKILL" }) {
		t.Errorf("signals the deleted app got: %v, want KILL only", signals)
	}
}

func TestRebuildKeepsAddress(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	s := newSet(t, e.cli, 14)
	rep := e.converge(t, []schema.DesiredSet{s}, "running", running(s.ID))
	app, infra := appID(t, rep[s.ID]), testenv.ContainerOf(t, rep[s.ID], "infra").ID
	addr := ipAddr(t, e, app)

	newImage, _ := testenv.UniqueBusyboxImage(t, e.cli)
	s.Image, s.Generation = schema.SetImage{ID: "img-2", DockerImageID: newImage}, 2
	rep = e.converge(t, []schema.DesiredSet{s}, "rebuilt", func(r map[string]schema.ObservedSet) bool {
		return running(s.ID)(r) && r[s.ID].DockerImageID == newImage && r[s.ID].Generation == 2
	})
	app2 := appID(t, rep[s.ID])
	if app2 == app || testenv.ContainerOf(t, rep[s.ID], "infra").ID != infra {
		t.Errorf("rebuild: app %.12s → %.12s, infra %.12s → %.12s; want a new app in the same infra",
			app, app2, infra, testenv.ContainerOf(t, rep[s.ID], "infra").ID)
	}
	if got := ipAddr(t, e, app2); got != addr {
		t.Errorf("address after rebuild = %s, want %s", got, addr)
	}
}

func TestResizeLive(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	s := newSet(t, e.cli, 15)
	rep := e.converge(t, []schema.DesiredSet{s}, "running", running(s.ID))
	before := testenv.ContainerOf(t, rep[s.ID], "app")

	s.Limits, s.Generation = schema.SetLimits{VCPUs: 2, MemoryMB: 128, Pids: 100}, 2
	rep = e.converge(t, []schema.DesiredSet{s}, "resized", func(r map[string]schema.ObservedSet) bool {
		l := r[s.ID].Limits
		return running(s.ID)(r) && l != nil && l.VCPUs == 2 && l.MemoryMB == 128 && l.Pids == 100
	})
	after := testenv.ContainerOf(t, rep[s.ID], "app")
	if after.ID != before.ID || !after.StartedAt.Equal(before.StartedAt) {
		t.Errorf("resize restarted the app: %+v → %+v", before, after)
	}
	for _, c := range []struct{ ctl, file, want string }{
		{"memory", "memory.limit_in_bytes", strconv.Itoa(128 << 20)},
		{"memory", "memory.soft_limit_in_bytes", strconv.Itoa(64 << 20)},
		{"pids", "pids.max", "100"},
		{"cpu", "cpu.cfs_quota_us", strconv.Itoa(2 * mustAtoi(t, cgroupFile(t, "cpu", after.ID, "cpu.cfs_period_us")))},
	} {
		if got := cgroupFile(t, c.ctl, after.ID, c.file); got != c.want {
			t.Errorf("%s = %s, want %s", c.file, got, c.want)
		}
	}
}

func mustAtoi(t *testing.T, s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestHardening probes A9 from inside set containers with the escape
// probe (testenv/escapeprobe), as nobody through a setuid-root binary and
// as root, in a set without NET_RAW and in one with it; a control
// container under Docker's default seccomp profile shows that the probe
// tells the two profiles apart (ptrace in its own PID namespace).
func TestHardening(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	s := newSet(t, e.cli, 16)
	s.NetRaw = false
	s.Limits.Pids = 40
	other := newSet(t, e.cli, 17) // NET_RAW: true
	rep := e.converge(t, []schema.DesiredSet{s, other}, "running", func(r map[string]schema.ObservedSet) bool {
		return running(s.ID)(r) && running(other.ID)(r)
	})
	app, otherApp := appID(t, rep[s.ID]), appID(t, rep[other.ID])
	ctx := context.Background()

	// The probe binary, setuid root.
	bin, err := os.ReadFile(testenv.EscapeProbeBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{app, otherApp} {
		if err := e.Runtime.WriteFile(ctx, id, "/tmp/probe", 0o4755, bin); err != nil {
			t.Fatal(err)
		}
	}
	otherInfra, err := e.cli.ContainerInspect(ctx, testenv.ContainerOf(t, rep[other.ID], "infra").ID)
	if err != nil {
		t.Fatal(err)
	}
	otherPid := strconv.Itoa(otherInfra.State.Pid)
	denied := []string{"mount=EPERM", "unshare_mnt=EPERM", "unshare_user=EPERM", "keyctl=EPERM", "mknod=EPERM", "bpf=EPERM",
		// The ptrace family, in the set's own PID namespace too (Berth's
		// seccomp profile), and on another set's process.
		"ptrace_own=EPERM", "process_vm_readv=EPERM", "ptrace=EPERM",
		// Another set's processes are not even visible.
		"kill_other=ESRCH",
		"fork_exec=ok"}
	for _, c := range []struct {
		name, id, user string
		want           []string
	}{
		// setuid does not elevate under no-new-privileges.
		{"nobody through a setuid-root binary", app, "65534", append([]string{"euid=65534", "setuid0=EPERM", "raw_socket=EPERM"}, denied...)},
		{"root", app, "0", append([]string{"euid=0", "raw_socket=EPERM"}, denied...)},
		// NET_RAW only where the flavor asks for it.
		{"root in the NET_RAW set", otherApp, "0", append([]string{"euid=0", "raw_socket=ok"}, denied...)},
	} {
		out := execAs(t, e, c.id, c.user, "/tmp/probe", otherPid)
		t.Logf("probe as %s:\n%s", c.name, out)
		for _, want := range c.want {
			if !strings.Contains(out, want+"\n") {
				t.Errorf("probe as %s: output lacks %q", c.name, want)
			}
		}
	}

	// Control: the same probe under Docker's default profile (no
	// seccomp= option) may ptrace its own child. If this fails, the
	// probe no longer tells Berth's profile from Docker's.
	t.Run("control under Docker's default profile", func(t *testing.T) {
		resp, err := e.cli.ContainerCreate(ctx, &container.Config{Image: s.Image.DockerImageID, Cmd: []string{"sleep", "60"}},
			&container.HostConfig{CapDrop: []string{"ALL"}, SecurityOpt: []string{"no-new-privileges"}, NetworkMode: "none"}, nil, nil, "")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.cli.ContainerRemove(context.Background(), resp.ID, container.RemoveOptions{Force: true}) })
		if err := e.cli.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := e.Runtime.WriteFile(ctx, resp.ID, "/tmp/probe", 0o755, bin); err != nil {
			t.Fatal(err)
		}
		out := execAs(t, e, resp.ID, "0", "/tmp/probe")
		t.Logf("probe under Docker's default profile:\n%s", out)
		if !strings.Contains(out, "ptrace_own=ok\n") {
			t.Errorf("ptrace of its own child under Docker's default profile is not ok: the probe cannot tell the profiles apart")
		}
	})

	status, _ := testenv.Exec(t, e.cli, app, "cat", "/proc/self/status")
	for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(status, want) {
			t.Errorf("/proc/self/status lacks %q", want)
		}
	}
	if out, code := testenv.Exec(t, e.cli, app, "ping", "-c", "1", "-W", "1", "127.0.0.1"); code == 0 {
		t.Errorf("ping without NET_RAW succeeded: %s", out)
	}
	if out, code := testenv.Exec(t, e.cli, otherApp, "ping", "-c", "1", "-W", "2", s.Ports[0].IP); code != 0 {
		t.Errorf("ping from the NET_RAW set failed: %s", out)
	}
	// What a VM-like userland does still works under the profile.
	if out, code := testenv.Exec(t, e.cli, app, "/bin/sh", "-c",
		"ps >/dev/null && tar -cf /tmp/x.tar /etc && chown nobody /tmp/x.tar && su -s /bin/sh nobody -c id && wget -q -O /dev/null http://127.0.0.1:1/ 2>/dev/null; test $? -eq 1"); code != 0 {
		t.Errorf("ordinary commands under Berth's profile failed (exit %d): %s", code, out)
	}

	// Fork bomb: capped by the pids limit (ash gives up when fork fails);
	// the container survives.
	testenv.Exec(t, e.cli, app, "/bin/sh", "-c", "while :; do sleep 30 </dev/null >/dev/null 2>&1 & done")
	cur := mustAtoi(t, cgroupFile(t, "pids", app, "pids.current"))
	events := cgroupFile(t, "pids", app, "pids.events")
	if cur > 40 || cur < 30 || events == "max 0" {
		t.Errorf("fork bomb: pids.current = %d (max 40), pids.events %q", cur, events)
	}
	if got := cgroupFile(t, "pids", app, "pids.max"); got != "40" {
		t.Errorf("pids.max = %s, want 40", got)
	}
	if j, err := e.cli.ContainerInspect(ctx, app); err != nil || !j.State.Running {
		t.Errorf("app after the fork bomb: %v", err)
	}
	testenv.Exec(t, e.cli, app, "killall", "sleep")
}

func execAs(t *testing.T, e *realEnv, id, user string, cmd ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ex, err := e.cli.ContainerExecCreate(ctx, id, container.ExecOptions{User: user, Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	att, err := e.cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()
	var b strings.Builder
	if _, err := stdcopy.StdCopy(&b, &b, att.Reader); err != nil {
		t.Errorf("exec %v output: %v", cmd, err)
	}
	if ins, err := e.cli.ContainerExecInspect(ctx, ex.ID); err != nil || ins.ExitCode != 0 {
		t.Errorf("exec %v as %s: exit %d, %v: %s", cmd, user, ins.ExitCode, err, b.String())
	}
	return b.String()
}

func TestSidecarSharedVolume(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	s := newSet(t, e.cli, 18)
	img := s.Image
	s.Containers = []schema.SetContainer{
		{Name: "web", Role: schema.RoleApp, Image: img, Env: map[string]string{"GREETING": "hi"},
			Command: []string{"/bin/sh", "-c", `echo "$GREETING from web" >> /data/log; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done`},
			Volumes: []schema.SetVolumeMount{{Volume: "data", Path: "/data"}}},
		{Name: "shipper", Role: schema.RoleSidecar, Image: img,
			Volumes: []schema.SetVolumeMount{{Volume: "data", Path: "/in", ReadOnly: true}}},
	}
	rep := e.converge(t, []schema.DesiredSet{s}, "running", running(s.ID))
	web, shipper := testenv.ContainerOf(t, rep[s.ID], "web"), testenv.ContainerOf(t, rep[s.ID], "shipper")
	if web.Role != schema.RoleApp || shipper.Role != schema.RoleSidecar || len(rep[s.ID].Containers) != 3 {
		t.Fatalf("containers = %+v", rep[s.ID].Containers)
	}
	testenv.Eventually(t, 10*time.Second, "sidecar sees the app's file", func() bool {
		out, _ := testenv.Exec(t, e.cli, shipper.ID, "cat", "/in/log")
		return strings.Contains(out, "hi from web")
	})
	if out, code := testenv.Exec(t, e.cli, shipper.ID, "touch", "/in/x"); code == 0 {
		t.Errorf("read-only volume is writable: %s", out)
	}
	if out, _ := testenv.Exec(t, e.cli, shipper.ID, "ip", "-o", "-4", "addr", "show", "dev", "eth0"); !strings.Contains(out, s.Ports[0].IP) {
		t.Errorf("sidecar does not share the set's netns: %q", out)
	}

	// Rebuild of web (new command): the volume keeps its data.
	s.Containers[0].Command[2] = strings.Replace(s.Containers[0].Command[2], "from web", "from web v2", 1)
	s.Generation = 2
	rep = e.converge(t, []schema.DesiredSet{s}, "web rebuilt", func(r map[string]schema.ObservedSet) bool {
		return running(s.ID)(r) && r[s.ID].Generation == 2 && testenv.ContainerOf(t, r[s.ID], "web").ID != web.ID
	})
	if testenv.ContainerOf(t, rep[s.ID], "shipper").ID != shipper.ID {
		t.Error("rebuilding web replaced the sidecar")
	}
	testenv.Eventually(t, 10*time.Second, "both generations in the volume", func() bool {
		out, _ := testenv.Exec(t, e.cli, shipper.ID, "cat", "/in/log")
		return strings.Contains(out, "hi from web\n") && strings.Contains(out, "hi from web v2")
	})

	s.State, s.Generation = schema.SetDeleted, 3
	e.converge(t, []schema.DesiredSet{s}, "deleted", func(r map[string]schema.ObservedSet) bool { return !r[s.ID].Exists && r[s.ID].Generation == 3 })
	if left := e.hostLeftovers(t); len(left) > 0 {
		t.Errorf("left after delete: %v", left)
	}
}

func TestRestartPolicy(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	s := newSet(t, e.cli, 19)
	img := s.Image
	s.Containers = []schema.SetContainer{
		{Name: "app", Role: schema.RoleApp, Image: img, RestartPolicy: schema.RestartOnFailure},
		{Name: "flaky", Role: schema.RoleSidecar, Image: img, RestartPolicy: schema.RestartAlways,
			Command: []string{"/bin/sh", "-c", "sleep 0.3; exit 3"}},
		{Name: "oneshot", Role: schema.RoleSidecar, Image: img, RestartPolicy: schema.RestartOnFailure,
			Command: []string{"/bin/true"}},
	}
	rep := e.converge(t, []schema.DesiredSet{s}, "flaky restarted twice", func(r map[string]schema.ObservedSet) bool {
		if !running(s.ID)(r) {
			return false
		}
		for _, c := range r[s.ID].Containers {
			if c.Name == "flaky" {
				return c.RestartCount >= 2
			}
		}
		return false
	})
	if c := testenv.ContainerOf(t, rep[s.ID], "oneshot"); c.RestartCount != 0 || c.State != "exited" {
		t.Errorf("on-failure container that exited 0 = %+v, want exited, not restarted", c)
	}
	// The app crashes: restarted by its on-failure policy, counted, the
	// set stays running (a VM that reboots after a crash).
	app := testenv.ContainerOf(t, rep[s.ID], "app")
	if err := e.cli.ContainerKill(context.Background(), app.ID, "KILL"); err != nil {
		t.Fatal(err)
	}
	rep = e.converge(t, []schema.DesiredSet{s}, "app restarted", func(r map[string]schema.ObservedSet) bool {
		for _, c := range r[s.ID].Containers {
			if c.Name == "app" {
				return c.RestartCount == 1 && c.State == "running" && r[s.ID].PowerState == schema.PowerRunning
			}
		}
		return false
	})
	// Counts survive an agent restart.
	flaky := testenv.ContainerOf(t, rep[s.ID], "flaky").RestartCount
	e.restart(t)
	rep = e.converge(t, []schema.DesiredSet{s}, "re-adopted", running(s.ID))
	if got := testenv.ContainerOf(t, rep[s.ID], "flaky").RestartCount; got < flaky {
		t.Errorf("flaky restarts after agent restart = %d, want ≥ %d", got, flaky)
	}
	if got := testenv.ContainerOf(t, rep[s.ID], "app").RestartCount; got != 1 {
		t.Errorf("app restarts after agent restart = %d, want 1", got)
	}
}

func TestFirstBootInjection(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	s := newSet(t, e.cli, 20)
	s.AuthorizedKeys = "ssh-ed25519 AAAAC3Nza test@berth"
	s.Files = []schema.SetFile{{Path: "/etc/motd", Contents: base64.StdEncoding.EncodeToString([]byte("welcome\n"))}}
	s.UserData = base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\necho ran >> /tmp/user-data-runs\necho USER-DATA-OUTPUT\n"))
	rep := e.converge(t, []schema.DesiredSet{s}, "running", running(s.ID))
	app := appID(t, rep[s.ID])
	out, _ := testenv.Exec(t, e.cli, app, "stat", "-c", "%a %n", "/root/.ssh", "/root/.ssh/authorized_keys")
	if out != "700 /root/.ssh\n600 /root/.ssh/authorized_keys\n" {
		t.Errorf("ssh modes = %q", out)
	}
	if out, _ := testenv.Exec(t, e.cli, app, "cat", "/root/.ssh/authorized_keys", "/etc/motd"); out != s.AuthorizedKeys+"\nwelcome\n" {
		t.Errorf("injected files = %q", out)
	}
	testenv.Eventually(t, 10*time.Second, "user data output in the console log", func() bool {
		return strings.Contains(consoleLog(t, e, app), "USER-DATA-OUTPUT")
	})
	// A reboot does not run it again.
	s.RebootSeq, s.Generation = 1, 2
	e.converge(t, []schema.DesiredSet{s}, "rebooted", func(r map[string]schema.ObservedSet) bool {
		return running(s.ID)(r) && r[s.ID].RebootSeq == 1
	})
	time.Sleep(500 * time.Millisecond)
	if out, _ := testenv.Exec(t, e.cli, app, "cat", "/tmp/user-data-runs"); out != "ran\n" {
		t.Errorf("user data runs = %q, want one", out)
	}
}

func consoleLog(t *testing.T, e *realEnv, id string) string {
	t.Helper()
	rc, err := e.cli.ContainerLogs(context.Background(), id, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var b strings.Builder
	_, _ = stdcopy.StdCopy(&b, &b, rc)
	return b.String()
}

func TestHealthProbes(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	s := newSet(t, e.cli, 21)
	img := s.Image
	s.Containers = []schema.SetContainer{
		{Name: "web", Role: schema.RoleApp, Image: img,
			Command: []string{"/bin/sh", "-c", "httpd -p 8080; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"},
			Health:  &schema.SetHealthProbe{TCPPort: 8080, IntervalSeconds: 1, Retries: 1}},
		{Name: "checker", Role: schema.RoleSidecar, Image: img,
			Health: &schema.SetHealthProbe{Command: []string{"/bin/false"}, IntervalSeconds: 1, Retries: 1}},
	}
	rep := e.converge(t, []schema.DesiredSet{s}, "probed", func(r map[string]schema.ObservedSet) bool {
		return running(s.ID)(r) && r[s.ID].Health == schema.HealthUnhealthy &&
			testenv.ContainerOf(t, r[s.ID], "web").Health == schema.HealthHealthy
	})
	if c := testenv.ContainerOf(t, rep[s.ID], "checker"); c.Health != schema.HealthUnhealthy {
		t.Errorf("checker = %+v, want unhealthy", c)
	}
	// web stops listening: its TCP probe fails.
	testenv.Exec(t, e.cli, testenv.ContainerOf(t, rep[s.ID], "web").ID, "killall", "httpd")
	e.converge(t, []schema.DesiredSet{s}, "web unhealthy", func(r map[string]schema.ObservedSet) bool {
		return testenv.ContainerOf(t, r[s.ID], "web").Health == schema.HealthUnhealthy
	})
}

// TestDockerRestart restarts a private dockerd under running sets: without
// live restore the agent brings every set back to its desired power state
// (same containers, same address); with live restore nothing stops.
func TestDockerRestart(t *testing.T) {
	t.Parallel()
	dockerd := testenv.StartDockerd(t)
	h := testenv.NewHost(t, testenv.HostOptions{Docker: dockerd.Cli})
	e := &realEnv{Host: h, cli: h.Cli, ovs: h.OVS, imgs: h.Images, rec: h.Rec}
	a, b := newSet(t, e.cli, 41), newSet(t, e.cli, 42)
	b.State = schema.SetStopped
	sets := []schema.DesiredSet{a, b}
	settled := func(r map[string]schema.ObservedSet) bool {
		return running(a.ID)(r) && r[b.ID].PowerState == schema.PowerShutdown && r[b.ID].Error == ""
	}
	rep := e.converge(t, sets, "a running, b stopped", settled)
	before := rep[a.ID].Containers
	addr := ipAddr(t, e, appID(t, rep[a.ID]))

	took := dockerd.Restart(t, false)
	t.Logf("dockerd restart (no live restore) took %s", took)
	start := time.Now()
	rep = e.converge(t, sets, "a back to running", func(r map[string]schema.ObservedSet) bool {
		return settled(r) && testenv.ContainerOf(t, r[a.ID], "app").StartedAt.After(before[1].StartedAt)
	})
	t.Logf("set back to running %s after dockerd answered", time.Since(start))
	for i, c := range rep[a.ID].Containers {
		if c.ID != before[i].ID {
			t.Errorf("%s container replaced across the dockerd restart: %.12s → %.12s", c.Name, before[i].ID, c.ID)
		}
	}
	if got := ipAddr(t, e, appID(t, rep[a.ID])); got != addr {
		t.Errorf("address after dockerd restart = %s, want %s", got, addr)
	}

	// Now with live restore: containers keep running through the restart.
	dockerd.Restart(t, true) // this stop is still without it
	rep = e.converge(t, sets, "a running again", func(r map[string]schema.ObservedSet) bool {
		return settled(r) && testenv.ContainerOf(t, r[a.ID], "app").StartedAt.After(rep[a.ID].Containers[1].StartedAt)
	})
	before = rep[a.ID].Containers
	took = dockerd.Restart(t, true)
	t.Logf("dockerd restart (live restore) took %s", took)
	rep = e.converge(t, sets, "a still running", settled)
	for i, c := range rep[a.ID].Containers {
		if c.ID != before[i].ID || !c.StartedAt.Equal(before[i].StartedAt) {
			t.Errorf("live restore: %s container changed: %+v → %+v", c.Name, before[i], c)
		}
	}
}

// TestMemorySoftHard: the flavor's RAM is a hard limit with an elastic
// soft limit (reservation) at half of it. A set may burst above the soft
// limit while the host has room; past the hard limit the kernel's OOM
// killer ends the process that grew (not the set), with no swap to
// spill into.
func TestMemorySoftHard(t *testing.T) {
	t.Parallel()
	e := newRealEnv(t)
	s := newSet(t, e.cli, 22)
	s.Limits = schema.SetLimits{VCPUs: 1, MemoryMB: 64}
	rep := e.converge(t, []schema.DesiredSet{s}, "running", running(s.ID))
	app := appID(t, rep[s.ID])
	ctx := context.Background()
	bin, err := os.ReadFile(testenv.EscapeProbeBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Runtime.WriteFile(ctx, app, "/tmp/probe", 0o755, bin); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]int{
		"memory.limit_in_bytes":       64 << 20,
		"memory.soft_limit_in_bytes":  32 << 20,
		"memory.memsw.limit_in_bytes": 64 << 20, // no swap beyond the limit
	} {
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory/docker", app, file)); err != nil && file == "memory.memsw.limit_in_bytes" {
			t.Logf("%s: no swap accounting on this kernel", file)
			continue
		}
		if got := mustAtoi(t, cgroupFile(t, "memory", app, file)); got != want {
			t.Errorf("%s = %d, want %d", file, got, want)
		}
	}

	// Burst: 40 MiB above a baseline, past the 32 MiB soft limit.
	base := mustAtoi(t, cgroupFile(t, "memory", app, "memory.usage_in_bytes"))
	testenv.Exec(t, e.cli, app, "/bin/sh", "-c", "/tmp/probe alloc 40 120 >/tmp/alloc.out 2>&1 &")
	testenv.Eventually(t, 30*time.Second, "40 MiB allocated", func() bool {
		out, _ := testenv.Exec(t, e.cli, app, "cat", "/tmp/alloc.out")
		return strings.Contains(out, "alloc=40")
	})
	used := mustAtoi(t, cgroupFile(t, "memory", app, "memory.usage_in_bytes"))
	t.Logf("memory usage: %d MiB before, %d MiB holding 40 MiB (soft limit 32 MiB, hard 64 MiB)", base>>20, used>>20)
	if used <= 32<<20 || used-base < 38<<20 {
		t.Errorf("usage %d (baseline %d): want the 40 MiB burst resident above the 32 MiB soft limit", used, base)
	}
	if out, code := testenv.Exec(t, e.cli, app, "pidof", "probe"); code != 0 {
		t.Errorf("the bursting process is gone: %q", out)
	}
	testenv.Exec(t, e.cli, app, "killall", "probe")

	// Past the hard limit: OOM-killed (SIGKILL, 137), the set runs on.
	out, code := testenv.Exec(t, e.cli, app, "/tmp/probe", "alloc", "100", "0")
	if code != 137 || strings.Contains(out, "alloc=100") {
		t.Errorf("allocating 100 MiB under a 64 MiB limit: exit %d, %q; want the OOM killer's 137", code, out)
	}
	if oom := cgroupFile(t, "memory", app, "memory.oom_control"); !strings.Contains(oom, "oom_kill ") || strings.Contains(oom, "oom_kill 0") {
		t.Errorf("memory.oom_control = %q, want an OOM kill counted", oom)
	}
	rep = e.converge(t, []schema.DesiredSet{s}, "still running", running(s.ID))
	if c := testenv.ContainerOf(t, rep[s.ID], "app"); c.ID != app || c.State != "running" || c.RestartCount != 0 {
		t.Errorf("app after the OOM kill of a process = %+v, want the same container running, not restarted", c)
	}
}
