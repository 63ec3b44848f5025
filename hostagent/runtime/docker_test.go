package runtime_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"berth/hostagent/observed"
	"berth/hostagent/runtime"
	"berth/hostagent/setspec"
	"berth/hostagent/testenv"
	"berth/schema"
)

func newRuntime(t *testing.T) (*runtime.Docker, *client.Client, string) {
	t.Helper()
	testenv.RequireRoot(t)
	cli := testenv.Docker(t)
	host := testenv.HostName(t, cli)
	rt := runtime.New(cli, slog.New(slog.NewTextHandler(io.Discard, nil)), runtime.Config{
		Host:        host,
		PauseBinary: testenv.PauseBinary(t),
		StopGrace:   3 * time.Second,
	})
	return rt, cli, host
}

func testSet(t *testing.T, cli *client.Client) schema.DesiredSet {
	return schema.DesiredSet{
		ID:         "set-" + testenv.RandomHex(8),
		Name:       "Web One",
		Hostname:   "web-1",
		State:      schema.SetRunning,
		Generation: 3,
		Image:      schema.SetImage{ID: "img", DockerImageID: testenv.BusyboxImage(t, cli)},
		Limits:     schema.SetLimits{VCPUs: 1, MemoryMB: 128, DiskGB: 1},
	}
}

func readCgroup(t *testing.T, controller, id, file string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", controller, "docker", id, file))
	if err != nil {
		t.Fatalf("read cgroup: %v", err)
	}
	return strings.TrimSpace(string(b))
}

func TestSetContainers(t *testing.T) {
	rt, cli, host := newRuntime(t)
	ctx := context.Background()
	set := testSet(t, cli)

	infraID, err := rt.CreateInfra(ctx, set)
	if err != nil {
		t.Fatalf("CreateInfra: %v", err)
	}
	app, _ := setspec.Primary(setspec.Members(&set))
	appID, err := rt.CreateMember(ctx, set, app, infraID)
	if err != nil {
		t.Fatalf("CreateMember: %v", err)
	}
	for _, id := range []string{infraID, appID} {
		if err := rt.Start(ctx, id); err != nil {
			t.Fatalf("Start: %v", err)
		}
	}

	t.Run("app config", func(t *testing.T) {
		j, err := cli.ContainerInspect(ctx, appID)
		if err != nil {
			t.Fatal(err)
		}
		hc := j.HostConfig
		if got, want := hc.NanoCPUs, int64(1e9); got != want {
			t.Errorf("NanoCPUs = %d, want %d", got, want)
		}
		if got, want := hc.Memory, int64(128<<20); got != want {
			t.Errorf("Memory = %d, want %d", got, want)
		}
		if got, want := hc.MemoryReservation, int64(64<<20); got != want {
			t.Errorf("MemoryReservation = %d, want %d", got, want)
		}
		if hc.PidsLimit == nil || *hc.PidsLimit != 1024 {
			t.Errorf("PidsLimit = %v, want 1024", hc.PidsLimit)
		}
		if hc.Privileged {
			t.Error("app container is privileged")
		}
		if !slices.Contains(hc.SecurityOpt, "no-new-privileges") {
			t.Errorf("SecurityOpt = %v, want no-new-privileges", hc.SecurityOpt)
		}
		if got, want := string(hc.NetworkMode), "container:"+infraID; got != want {
			t.Errorf("NetworkMode = %q, want %q", got, want)
		}
		if got, want := string(hc.IpcMode), "container:"+infraID; got != want {
			t.Errorf("IpcMode = %q, want %q", got, want)
		}
		if hc.RestartPolicy.Name != container.RestartPolicyDisabled {
			t.Errorf("RestartPolicy = %q, want no", hc.RestartPolicy.Name)
		}
		want := map[string]string{
			"berth.managed": "true", "berth.set": set.ID, "berth.role": "app",
			"berth.host": host, "berth.generation": "3", "berth.container": "app", "berth.spec": app.Spec,
		}
		caps := slices.Sorted(slices.Values(runtime.Capabilities))
		for i := range caps {
			caps[i] = "CAP_" + caps[i]
		}
		if !slices.Equal(hc.CapDrop, []string{"ALL"}) || !slices.Equal(slices.Sorted(slices.Values([]string(hc.CapAdd))), caps) {
			t.Errorf("caps: drop %v add %v, want drop ALL, add %v", hc.CapDrop, hc.CapAdd, runtime.Capabilities)
		}
		if len(hc.Binds) != 0 || len(hc.Mounts) != 0 || hc.PidMode != "" || hc.UTSMode != "" || hc.UsernsMode != "" || hc.CgroupnsMode != "private" {
			t.Errorf("host mounts or namespaces: %+v", hc)
		}
		profile, err := runtime.SeccompProfile()
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(hc.SecurityOpt, "seccomp="+string(profile)) {
			t.Errorf("SecurityOpt lacks Berth's seccomp profile (%d options)", len(hc.SecurityOpt))
		}
		for k, v := range want {
			if got := j.Config.Labels[k]; got != v {
				t.Errorf("label %s = %q, want %q", k, got, v)
			}
		}
		if got, want := strings.TrimPrefix(j.Name, "/"), runtime.ContainerName(host, set.ID, "app"); got != want {
			t.Errorf("name = %q, want %q", got, want)
		}
	})

	t.Run("infra config", func(t *testing.T) {
		j, err := cli.ContainerInspect(ctx, infraID)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(j.HostConfig.NetworkMode); got != "none" {
			t.Errorf("infra NetworkMode = %q, want none", got)
		}
		if got := j.Config.Labels["berth.role"]; got != "infra" {
			t.Errorf("infra role label = %q", got)
		}
		if !strings.HasPrefix(j.Config.Image, "berth/pause:") {
			t.Errorf("infra image = %q, want berth/pause:*", j.Config.Image)
		}
		if j.HostConfig.Privileged {
			t.Error("infra container is privileged")
		}
		profile, _ := runtime.SeccompProfile()
		if !slices.Contains(j.HostConfig.SecurityOpt, "seccomp="+string(profile)) || !slices.Contains(j.HostConfig.SecurityOpt, "no-new-privileges") {
			t.Errorf("infra SecurityOpt lacks no-new-privileges or Berth's seccomp profile (%d options)", len(j.HostConfig.SecurityOpt))
		}
	})

	t.Run("cgroup limits", func(t *testing.T) {
		if got, want := readCgroup(t, "memory", appID, "memory.limit_in_bytes"), strconv.Itoa(128<<20); got != want {
			t.Errorf("memory.limit_in_bytes = %s, want %s", got, want)
		}
		if got, want := readCgroup(t, "memory", appID, "memory.soft_limit_in_bytes"), strconv.Itoa(64<<20); got != want {
			t.Errorf("memory.soft_limit_in_bytes = %s, want %s", got, want)
		}
		quota, period := readCgroup(t, "cpu", appID, "cpu.cfs_quota_us"), readCgroup(t, "cpu", appID, "cpu.cfs_period_us")
		if quota != period {
			t.Errorf("cpu quota/period = %s/%s, want one CPU", quota, period)
		}
		if got := readCgroup(t, "pids", appID, "pids.max"); got != "1024" {
			t.Errorf("pids.max = %s, want 1024", got)
		}
	})

	t.Run("shared namespaces and hostname", func(t *testing.T) {
		out, code := testenv.Exec(t, cli, appID, "hostname")
		if code != 0 || strings.TrimSpace(out) != "web-1" {
			t.Errorf("hostname in app = %q (exit %d), want web-1", out, code)
		}
		infraNS, _ := os.Readlink("/proc/" + strconv.Itoa(inspectPid(t, cli, infraID)) + "/ns/net")
		appNS, _ := os.Readlink("/proc/" + strconv.Itoa(inspectPid(t, cli, appID)) + "/ns/net")
		if infraNS == "" || infraNS != appNS {
			t.Errorf("netns infra %q, app %q: want shared", infraNS, appNS)
		}
	})

	t.Run("list", func(t *testing.T) {
		cs, err := rt.List(ctx, set.ID)
		if err != nil {
			t.Fatal(err)
		}
		sets := observed.Group(cs, nil)
		o := sets[set.ID]
		a := o.Member("app")
		if o.Infra == nil || a == nil || len(o.Extra) != 0 || o.Infra.ID != infraID || a.ID != appID {
			t.Fatalf("List grouped = %+v, want infra %s and app %s", o, infraID, appID)
		}
		if !a.Running || o.Infra.Pid <= 0 || a.Generation != 3 || a.StartedAt.IsZero() || a.Spec != app.Spec ||
			a.Limits != (schema.SetLimits{VCPUs: 1, MemoryMB: 128, Pids: 1024}) {
			t.Errorf("app observed = %+v", *a)
		}
	})

	t.Run("stop is graceful", func(t *testing.T) {
		// Both end on TERM: exit 0, not the 137 of a KILL after the grace
		// (no upper bound on the time: that would measure the machine).
		if err := rt.Stop(ctx, appID, 0); err != nil {
			t.Fatal(err)
		}
		if err := rt.Stop(ctx, infraID, 0); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{appID, infraID} {
			c, err := rt.Inspect(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if c.Running || c.ExitCode != 0 {
				t.Errorf("%s after stop: running=%v exit=%d, want stopped with 0", c.Role, c.Running, c.ExitCode)
			}
		}
	})

	t.Run("remove", func(t *testing.T) {
		for _, id := range []string{appID, infraID, appID} { // twice: idempotent
			if err := rt.Remove(ctx, id); err != nil {
				t.Fatal(err)
			}
		}
		cs, err := rt.List(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(cs) != 0 {
			t.Errorf("List after remove = %d containers, want 0", len(cs))
		}
	})
}

func inspectPid(t *testing.T, cli *client.Client, id string) int {
	t.Helper()
	j, err := cli.ContainerInspect(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return j.State.Pid
}

func TestOnlyOwnContainersAreSeen(t *testing.T) {
	rt, cli, _ := newRuntime(t)
	ctx := context.Background()
	set := testSet(t, cli)
	// Another host's set on the same daemon.
	otherHost := testenv.HostName(t, cli)
	other := runtime.New(cli, slog.New(slog.NewTextHandler(io.Discard, nil)), runtime.Config{Host: otherHost, PauseBinary: testenv.PauseBinary(t)})
	if _, err := other.CreateInfra(ctx, set); err != nil {
		t.Fatal(err)
	}
	// An unmanaged container carrying some of our labels.
	resp, err := cli.ContainerCreate(ctx, &container.Config{Image: set.Image.DockerImageID, Labels: map[string]string{"berth.set": set.ID, "berth.host": otherHost}}, nil, nil, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.ContainerRemove(context.Background(), resp.ID, container.RemoveOptions{Force: true}) })

	cs, err := rt.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 0 {
		t.Errorf("List() saw %d foreign containers", len(cs))
	}
	cs, err = other.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 {
		t.Errorf("other host List() = %d containers, want its 1 infra", len(cs))
	}
	if _, err := rt.Inspect(ctx, resp.ID); err == nil {
		t.Error("Inspect() of an unmanaged container succeeded, want ErrNotManaged")
	}
}

func TestAppResources(t *testing.T) {
	r := runtime.AppResources(schema.SetLimits{VCPUs: 2, MemoryMB: 512}, 100)
	if r.NanoCPUs != 2e9 || r.Memory != 512<<20 || r.MemoryReservation != 256<<20 || r.MemorySwap != 512<<20 || *r.PidsLimit != 100 {
		t.Errorf("AppResources() = %+v", r)
	}
	r = runtime.AppResources(schema.SetLimits{}, 100)
	if r.NanoCPUs != 0 || r.Memory != 0 {
		t.Errorf("AppResources(no limits) = %+v, want unlimited CPU and memory", r)
	}
}

func TestHostname(t *testing.T) {
	tests := []struct {
		set  schema.DesiredSet
		want string
	}{
		{schema.DesiredSet{Hostname: "web-1"}, "web-1"},
		{schema.DesiredSet{Name: "My Server_2"}, "my-server-2"},
		{schema.DesiredSet{ID: "abc"}, "set-abc"},
		{schema.DesiredSet{Hostname: strings.Repeat("a", 70)}, strings.Repeat("a", 63)},
	}
	for _, tt := range tests {
		if got := runtime.Hostname(tt.set); got != tt.want {
			t.Errorf("Hostname(%+v) = %q, want %q", tt.set, got, tt.want)
		}
	}
}
