// Package stacktest brings up a real Berth stack (internal/devstack) for a
// test: free ports, its own bridge, torn down when the test ends, log
// tails in the test log on failure. Tests that need the real thing call
// Need, which skips, or fails under BERTH_REQUIRE_REAL=1 (CI).
package stacktest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"berth/internal/devstack"
)

// Need skips with reason, or fails under BERTH_REQUIRE_REAL=1 (CI).
func Need(t *testing.T, ok bool, reason string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("BERTH_REQUIRE_REAL") == "1" {
		t.Fatalf("%s (and BERTH_REQUIRE_REAL=1 forbids skipping)", reason)
	}
	t.Skip(reason)
}

// RepoRoot walks up from the test's directory to go.mod.
func RepoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// Options tune Start for a suite.
type Options struct {
	// Prefix names the run directory under the temp dir ("berth-stack-").
	Prefix string
	// Needs are more programs the suite runs (e.g. "openstack"), looked
	// up on PATH and in /usr/sbin.
	Needs []string
	// LogLevel of the stack's own log in the test output (Warn).
	LogLevel slog.Level
	// KeepEnv names an environment variable that, when set, keeps the
	// run directory after the test.
	KeepEnv string
}

// Start brings up a stack of its own on free ports from bin/ (make
// build) and tears it down when the test ends.
func Start(t *testing.T) *devstack.Stack {
	t.Helper()
	return StartWith(t, Options{LogLevel: slog.LevelWarn})
}

// StartWith is Start with a suite's options.
func StartWith(t *testing.T, o Options) *devstack.Stack {
	t.Helper()
	Need(t, os.Geteuid() == 0, "needs root (dockerd, OVS, veths)")
	for _, prog := range append([]string{"go", "docker", "keystone-manage", "uwsgi", "ovs-vsctl"}, o.Needs...) {
		_, err := exec.LookPath(prog)
		if err != nil {
			_, err = os.Stat(filepath.Join("/usr/sbin", prog))
		}
		Need(t, err == nil, prog+" not installed (make deps)")
	}
	bin := filepath.Join(RepoRoot(t), "bin")
	for _, b := range []string{"berth-region", "berth-imagesvc", "berth-hostagent", "berth-pause"} {
		_, err := os.Stat(filepath.Join(bin, b))
		Need(t, err == nil, fmt.Sprintf("%s/%s not built (make build)", bin, b))
	}
	prefix := o.Prefix
	if prefix == "" {
		prefix = "berth-stack-"
	}
	// Not t.TempDir: its parent is 0700 and PostgreSQL runs as postgres.
	runDir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := devstack.FreePortsConfig(runDir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.BinDir = bin
	cfg.Log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: o.LogLevel}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	s, err := devstack.Up(ctx, cfg)
	if err != nil {
		LogTails(t, runDir)
		os.RemoveAll(runDir)
		t.Fatalf("devstack.Up: %v", err)
	}
	t.Logf("stack up in %s: %s", time.Since(start).Round(time.Millisecond), runDir)
	t.Cleanup(func() {
		if t.Failed() {
			LogTails(t, runDir)
		}
		if err := s.Close(); err != nil {
			t.Errorf("stack close: %v", err)
		}
		if o.KeepEnv == "" || os.Getenv(o.KeepEnv) == "" {
			os.RemoveAll(runDir)
		}
	})
	return s
}

// LogTails puts the last 40 lines of each daemon's log into the test log.
func LogTails(t *testing.T, runDir string) {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(runDir, "logs", "*.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > 40 {
			lines = lines[len(lines)-40:]
		}
		t.Logf("---- tail of %s\n%s", l, strings.Join(lines, "\n"))
	}
}
