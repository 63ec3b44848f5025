package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"berth/internal/devstack"
	"berth/internal/stacktest"
)

// need skips the test with reason, or fails it under BERTH_REQUIRE_REAL=1.
func need(t *testing.T, ok bool, reason string) { t.Helper(); stacktest.Need(t, ok, reason) }

// repoRoot is the module's root directory.
func repoRoot(t *testing.T) string { t.Helper(); return stacktest.RepoRoot(t) }

// startStack brings up a stack of its own (free ports, its own bridge,
// host name and subnet) from the binaries `make build` left in bin/, and
// tears it down when the test ends (BERTH_E2E_KEEP keeps its run
// directory). On failure the daemons' log tails go into the test log.
func startStack(t *testing.T) *devstack.Stack {
	t.Helper()
	_, err := os.Stat("/bin/busybox")
	need(t, err == nil, "busybox-static not installed (make deps)")
	return stacktest.StartWith(t, stacktest.Options{
		Prefix:   "berth-e2e-",
		Needs:    []string{"openstack", "ovsdb-server", "ovs-vswitchd", "ethtool"},
		LogLevel: slog.LevelInfo,
		KeepEnv:  "BERTH_E2E_KEEP",
	})
}

// osc runs the openstack CLI against one stack.
type osc struct {
	stack *devstack.Stack
}

// run runs `openstack ARGS` as cloud and returns stdout, stderr and the
// error (an *exec.ExitError for a non-zero exit).
func (o *osc) run(t *testing.T, cloud string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openstack", args...)
	cmd.Env = append(os.Environ(), o.stack.Env(cloud)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("OS_CLOUD=%s openstack %s (%s) err=%v", cloud, strings.Join(args, " "), time.Since(start).Round(time.Millisecond), err)
	if ctx.Err() != nil {
		err = fmt.Errorf("openstack %s: timed out: %w", strings.Join(args, " "), ctx.Err())
	}
	return stdout.String(), stderr.String(), err
}

// must runs the CLI and fails the test on a non-zero exit.
func (o *osc) must(t *testing.T, cloud string, args ...string) string {
	t.Helper()
	out, errOut, err := o.run(t, cloud, args...)
	if err != nil {
		t.Fatalf("openstack %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// json runs the CLI with -f json and decodes stdout into v.
func (o *osc) json(t *testing.T, cloud string, v any, args ...string) {
	t.Helper()
	out := o.must(t, cloud, append(args, "-f", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("openstack %s: decode JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// server is what `server show -f json` prints that the test looks at.
type server struct {
	ID        string              `json:"id"`
	Name      string              `json:"name"`
	Status    string              `json:"status"`
	Addresses map[string][]string `json:"addresses"`
	Flavor    any                 `json:"flavor"`
	Image     any                 `json:"image"`
	Created   string              `json:"created"`
	HostID    string              `json:"hostId"`
}

// waitStatus polls `server show` until the server reaches want.
func (o *osc) waitStatus(t *testing.T, cloud, name, want string, timeout time.Duration) server {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var s server
	for {
		o.json(t, cloud, &s, "server", "show", name)
		if s.Status == want {
			return s
		}
		if s.Status == "ERROR" || time.Now().After(deadline) {
			t.Fatalf("server %s is %s, want %s", name, s.Status, want)
		}
		time.Sleep(time.Second)
	}
}

// apiCall makes a raw HTTP request and returns status and body.
func apiCall(t *testing.T, method, url, token string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// dockerCLI runs the docker CLI and returns trimmed stdout.
func dockerCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("docker %s: exit %d: %s", strings.Join(args, " "), ee.ExitCode(), strings.TrimSpace(stderr.String()+stdout.String()))
		}
	}
	return strings.TrimSpace(stdout.String()), err
}

// setContainers lists the IDs of a set's containers, running or not,
// optionally only those of one role.
func setContainers(t *testing.T, setID, role string) []string {
	t.Helper()
	args := []string{"ps", "-aq", "--no-trunc", "--filter", "label=" + devstack.LabelSet + "=" + setID}
	if role != "" {
		args = append(args, "--filter", "label="+devstack.LabelRole+"="+role)
	}
	out, err := dockerCLI(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(out)
}

// runOutput runs a short command and returns its stdout.
func runOutput(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, ee.Stderr)
		}
	}
	return string(out), err
}
