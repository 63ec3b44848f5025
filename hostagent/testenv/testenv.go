// Package testenv gives hostagent integration tests the real things they run
// against: Docker, a private Open vSwitch, a pause binary and a tiny busybox
// image built locally (never pulled). Tests skip with a reason when a
// dependency is missing, but fail instead when BERTH_REQUIRE_REAL=1.
package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"berth/hostagent/runtime"
)

// RequireRealEnv is the variable that turns skips into failures.
const RequireRealEnv = "BERTH_REQUIRE_REAL"

// Require skips the test with reason when ok is false, or fails it when
// BERTH_REQUIRE_REAL=1.
func Require(t testing.TB, ok bool, reason string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv(RequireRealEnv) == "1" {
		t.Fatalf("%s (and %s=1 forbids skipping)", reason, RequireRealEnv)
	}
	t.Skip(reason)
}

// RequireRoot needs uid 0 (netns, veth, OVS, cgroups).
func RequireRoot(t testing.TB) {
	t.Helper()
	Require(t, os.Geteuid() == 0, "needs root")
}

// RequireBinaries needs every named program on PATH.
func RequireBinaries(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		_, err := exec.LookPath(n)
		Require(t, err == nil, "needs "+n+" on PATH")
	}
}

// Docker returns a client for the local daemon, API version negotiated.
func Docker(t testing.TB) *client.Client {
	t.Helper()
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		Require(t, false, "no docker client: "+err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = cli.Ping(ctx)
	Require(t, err == nil, fmt.Sprintf("docker daemon not reachable: %v", err))
	t.Cleanup(func() { cli.Close() })
	return cli
}

// RandomHex returns n random bytes as hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// HostName returns a host name unique to this test, and removes every
// container labelled with it when the test ends.
func HostName(t testing.TB, cli *client.Client) string {
	t.Helper()
	host := "t-" + RandomHex(4)
	t.Cleanup(func() { RemoveHostContainers(t, cli, host) })
	return host
}

// RemoveHostContainers force-removes every container labelled for host.
func RemoveHostContainers(t testing.TB, cli *client.Client, host string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", runtime.LabelHost+"="+host))})
	if err != nil {
		t.Logf("cleanup: list containers of %s: %v", host, err)
		return
	}
	for _, c := range cs {
		if err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true}); err != nil {
			t.Logf("cleanup: remove %s: %v", c.ID, err)
		}
	}
}

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// PauseBinary builds cmd/berth-pause (static) once per test process into a
// cache directory named after the hash of its source, shared by every test
// process, so that repeated runs leave one binary behind.
func PauseBinary(t testing.TB) string {
	t.Helper()
	return staticBinary(t, "berth/cmd/berth-pause", "berth-pause")
}

// EscapeProbeBinary builds the A9 probe (testenv/escapeprobe) static.
func EscapeProbeBinary(t testing.TB) string {
	t.Helper()
	return staticBinary(t, "berth/hostagent/testenv/escapeprobe", "escapeprobe")
}

func staticBinary(t testing.TB, pkg, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[pkg]; ok {
		return p
	}
	p, err := buildStatic(pkg, name)
	if err != nil {
		t.Fatal(err)
	}
	built[pkg] = p
	return p
}

func buildStatic(pkg, name string) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("go toolchain not on PATH: %w", err)
	}
	dir, err := exec.Command(goBin, "list", "-f", "{{.Dir}}", pkg).Output()
	if err != nil {
		return "", fmt.Errorf("locate %s: %w", pkg, err)
	}
	src, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(dir)), "main.go"))
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(src)
	cache := filepath.Join(os.TempDir(), "berth-test-"+name+"-"+hex.EncodeToString(sum[:])[:12])
	out := filepath.Join(cache, name)
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	tmp := fmt.Sprintf("%s.%d", out, os.Getpid())
	cmd := exec.Command(goBin, "build", "-ldflags", "-s -w", "-o", tmp, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %v: %s", name, err, b)
	}
	return out, os.Rename(tmp, out) // atomic: concurrent builders race harmlessly
}

// BusyboxPath is the static busybox the test images are made of.
const BusyboxPath = "/bin/busybox"

// AppCmd is the default command of the test image: idle, exit 0 on TERM.
var AppCmd = []string{"/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"}

var (
	bbMu  sync.Mutex
	bbIDs = map[*client.Client]string{}
)

// BusyboxImage returns the ID of a local busybox image (one static binary
// plus applet links, CMD AppCmd), importing it if needed.
func BusyboxImage(t testing.TB, cli *client.Client) string {
	t.Helper()
	bbMu.Lock()
	defer bbMu.Unlock()
	if id, ok := bbIDs[cli]; ok {
		return id
	}
	layer := busyboxLayer(t)
	ref := "berth-test/busybox:" + contentTag(layer)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if img, err := cli.ImageInspect(ctx, ref); err == nil {
		bbIDs[cli] = img.ID
		return img.ID
	}
	id := importImage(t, cli, layer, ref, nil)
	bbIDs[cli] = id
	return id
}

// UniqueBusyboxImage imports a busybox image with an ID no other test
// shares (a unique label), removed when the test ends.
func UniqueBusyboxImage(t testing.TB, cli *client.Client) (id, ref string) {
	t.Helper()
	u := RandomHex(6)
	ref = "berth-test/busybox-unique:" + u
	id = importImage(t, cli, busyboxLayer(t), ref, []string{"LABEL berth.test=" + u})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// The image is this test's alone: so are containers still using it.
		cs, _ := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("ancestor", id))})
		for _, c := range cs {
			_ = cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
		}
		if _, err := cli.ImageRemove(ctx, id, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil && !cerrdefs.IsNotFound(err) {
			t.Logf("cleanup: remove image %s: %v", id, err)
		}
	})
	return id, ref
}

func importImage(t testing.TB, cli *client.Client, layer []byte, ref string, extra []string) string {
	t.Helper()
	changes := append([]string{`CMD ["` + strings.Join(AppCmd, `","`) + `"]`}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := runtime.ImportImage(ctx, cli, layer, ref, changes, time.Minute); err != nil {
		t.Fatalf("import busybox image: %v", err)
	}
	img, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		t.Fatalf("inspect imported image: %v", err)
	}
	return img.ID
}

// contentTag names an image after its content, so every test process
// reuses one import.
func contentTag(layer []byte) string {
	h := sha256.New()
	h.Write(layer)
	h.Write([]byte(strings.Join(AppCmd, "\x00")))
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// busyboxLayer is a tar with /bin/busybox, a symlink per applet and /tmp.
func busyboxLayer(t testing.TB) []byte {
	t.Helper()
	bin, err := os.ReadFile(BusyboxPath)
	Require(t, err == nil, "needs a static busybox at "+BusyboxPath)
	out, err := exec.Command(BusyboxPath, "--list-full").Output()
	if err != nil {
		t.Fatalf("busybox --list-full: %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dirs := map[string]bool{}
	mkdir := func(d string) {
		for _, p := range parents(d) {
			if !dirs[p] {
				dirs[p] = true
				must(t, tw.WriteHeader(&tar.Header{Name: p + "/", Mode: 0o755, Typeflag: tar.TypeDir, ModTime: epoch}))
			}
		}
	}
	mkdir("bin")
	must(t, tw.WriteHeader(&tar.Header{Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg, ModTime: epoch}))
	_, err = tw.Write(bin)
	must(t, err)
	for _, applet := range strings.Fields(string(out)) {
		if applet == "bin/busybox" {
			continue
		}
		mkdir(filepath.Dir(applet))
		must(t, tw.WriteHeader(&tar.Header{Name: applet, Linkname: "/bin/busybox", Typeflag: tar.TypeSymlink, Mode: 0o777, ModTime: epoch}))
	}
	must(t, tw.WriteHeader(&tar.Header{Name: "tmp/", Mode: 0o1777, Typeflag: tar.TypeDir, ModTime: epoch}))
	must(t, tw.Close())
	return buf.Bytes()
}

func parents(d string) []string {
	var out []string
	for d != "." && d != "/" && d != "" {
		out = append([]string{d}, out...)
		d = filepath.Dir(d)
	}
	return out
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Exec runs cmd in a running container and returns its combined output
// and exit code.
func Exec(t testing.TB, cli *client.Client, id string, cmd ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ex, err := cli.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		t.Fatalf("exec create in %s: %v", id, err)
	}
	att, err := cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		t.Fatalf("exec attach: %v", err)
	}
	defer att.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, att.Reader); err != nil {
		t.Fatalf("exec read: %v", err)
	}
	ins, err := cli.ContainerExecInspect(ctx, ex.ID)
	if err != nil {
		t.Fatalf("exec inspect: %v", err)
	}
	return out.String(), ins.ExitCode
}

// Eventually polls cond every 100ms until it returns true or timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
