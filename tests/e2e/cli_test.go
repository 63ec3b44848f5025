package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"berth/internal/devstack"
)

// TestBerthCLI drives the berth CLI (bin/berth) through a server's and a
// set's life cycle against the real stack, the way a user would.
func TestBerthCLI(t *testing.T) {
	s := startStack(t)
	bin := filepath.Join(repoRoot(t), "bin", "berth")
	if _, err := os.Stat(bin); err != nil {
		need(t, false, "bin/berth not built (make build)")
	}
	home := t.TempDir() // the token cache lives under $HOME/.cache
	berth := func(t *testing.T, args ...string) (string, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = append(os.Environ(), append(s.Env(devstack.CloudDemo), "HOME="+home, "XDG_CACHE_HOME="+home+"/.cache")...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		start := time.Now()
		err := cmd.Run()
		t.Logf("berth %s (%s) err=%v %s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), err, strings.TrimSpace(errOut.String()))
		return out.String(), err
	}
	must := func(t *testing.T, args ...string) string {
		t.Helper()
		out, err := berth(t, args...)
		if err != nil {
			t.Fatalf("berth %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	t.Cleanup(func() {
		_, _ = berth(t, "server", "delete", "--wait", "cli1")
		_, _ = berth(t, "set", "delete", "--wait", "web")
	})

	t.Run("images and flavors", func(t *testing.T) {
		if out := must(t, "image", "list", "-f", "value", "-c", "Name"); !strings.Contains(out, devstack.DemoImageName) {
			t.Errorf("image list = %q, want %s", out, devstack.DemoImageName)
		}
		if out := must(t, "image", "layers", devstack.DemoImageName); strings.TrimSpace(out) == "" {
			t.Error("image layers printed nothing")
		}
		if out := must(t, "flavor", "list", "-f", "value", "-c", "Name"); !strings.Contains(out, "m1.tiny") {
			t.Errorf("flavor list = %q, want m1.tiny", out)
		}
	})

	t.Run("server life cycle", func(t *testing.T) {
		must(t, "server", "create", "--image", devstack.DemoImageName, "--flavor", "m1.tiny", "--wait", "cli1")
		var srv map[string]any
		if err := json.Unmarshal([]byte(must(t, "server", "show", "cli1", "-f", "json")), &srv); err != nil {
			t.Fatal(err)
		}
		if srv["Status"] != "ACTIVE" && srv["status"] != "ACTIVE" {
			t.Fatalf("server show = %v, want ACTIVE", srv)
		}
		must(t, "server", "stop", "--wait", "cli1")
		must(t, "server", "start", "--wait", "cli1")
		local := filepath.Join(t.TempDir(), "hello.txt")
		if err := os.WriteFile(local, []byte("copied by berth cp\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		must(t, "server", "cp", local, "cli1:/tmp/hello.txt")
		back := filepath.Join(t.TempDir(), "back.txt")
		must(t, "server", "cp", "cli1:/tmp/hello.txt", back)
		if b, _ := os.ReadFile(back); string(b) != "copied by berth cp\n" {
			t.Errorf("file copied back = %q, want what was copied in", b)
		}
		must(t, "server", "sync-status", "cli1")
		must(t, "server", "logs", "cli1")
		followLogs(t, bin, append(s.Env(devstack.CloudDemo), "HOME="+home, "XDG_CACHE_HOME="+home+"/.cache"),
			"cli1", fmt.Sprint(srv["id"], srv["ID"]))
		if _, err := berth(t, "server", "stop", "--wait", "nope-no-such-server"); err == nil {
			t.Error("stopping a missing server exited 0, want an error exit")
		}
		must(t, "server", "delete", "--wait", "cli1")
	})

	t.Run("set life cycle", func(t *testing.T) {
		yaml := filepath.Join(t.TempDir(), "set.yaml")
		if err := os.WriteFile(yaml, []byte(`name: web
flavor: m1.small
containers:
  - name: app
    image: demo
    volumes:
      - name: www
        path: /data
  - name: helper
    image: demo
    role: sidecar
    command: ["sh", "-c", "echo from-sidecar > /data/side.txt; exec sleep 3600"]
    volumes:
      - name: www
        path: /data
`), 0o644); err != nil {
			t.Fatal(err)
		}
		must(t, "set", "create", "-f", yaml, "--wait")
		out := must(t, "set", "show", "web", "-f", "json")
		if !strings.Contains(out, "helper") || !strings.Contains(out, "sidecar") {
			t.Errorf("set show = %s, want both containers", out)
		}
		if out := must(t, "set", "list", "-f", "value"); !strings.Contains(out, "web") {
			t.Errorf("set list = %q, want web", out)
		}
		must(t, "set", "delete", "--wait", "web")
	})
}

// followLogs runs `berth server logs -f` on a server that has printed
// nothing for a while, makes the app's PID 1 print a line, and expects the
// follower to show it while the stream is open, then to end with exit 0 on
// Ctrl-C (SIGINT), as a user stopping a follow would.
func followLogs(t *testing.T, bin string, env []string, name, ids string) {
	t.Helper()
	var setID string
	for _, f := range strings.Fields(strings.ReplaceAll(ids, "<nil>", " ")) {
		setID = f
	}
	apps := setContainers(t, setID, "app")
	if len(apps) != 1 {
		t.Fatalf("server %s (%s): app containers %v, want one", name, setID, apps)
	}
	cmd := exec.Command(bin, "server", "logs", "-f", name)
	cmd.Env = append(os.Environ(), env...)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	}()
	// Silent first: the follow must be open (headers flushed, not waiting
	// for a first line) before anything is printed.
	time.Sleep(2 * time.Second)
	select {
	case err := <-done:
		t.Fatalf("berth server logs -f ended on a silent server: %v\n%s", err, out.String())
	default:
	}
	marker := fmt.Sprintf("berth-follow-%d", time.Now().UnixNano())
	if _, err := dockerCLI(t, "exec", apps[0], "sh", "-c", "echo "+marker+" > /proc/1/fd/1"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(out.String(), marker) {
		if time.Now().After(deadline) {
			t.Fatalf("berth server logs -f did not show %q within a minute; it printed:\n%s", marker, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("berth server logs -f %s showed the line printed after 2 s of silence", name)
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("berth server logs -f after Ctrl-C: %v, want exit 0\n%s", err, out.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("berth server logs -f still runs 30 s after Ctrl-C")
	}
}

// syncBuffer is a bytes.Buffer safe to write from a child's output copier
// while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
