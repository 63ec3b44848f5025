// Package faults checks that Berth keeps its promises on its worst day:
// malformed and hostile requests, other tenants' tokens, revoked tokens,
// and real faults injected into a real stack (kill -9 of the host agent, of
// region and of imagesvc, a PostgreSQL restart, a container killed behind
// Berth's back, a host lost and its server evacuated to a second host
// agent, a second region on the same database), each followed by
// invariants over the region database, Docker and OVS.
// docs/reliability.md maps every promise (R*, A*, C*) to its test.
//
// All tests in this package share one stack (internal/devstack on free
// ports, its own bridge, host name and subnet), brought up by the first
// test that needs it and torn down by TestMain. A test that stops a service
// starts it again before it ends, and every test begins by making sure all
// services run, so -shuffle=on is safe.
//
// It needs root, the packages `make deps` installs and the binaries
// `make build` puts in bin/ (or BERTH_BIN_DIR). Without them it skips,
// unless BERTH_REQUIRE_REAL=1, under which it fails. Knobs:
//
//	BERTH_FAULTS_KEEP=1          keep the run directory (logs, database)
//	BERTH_FAULTS_FUZZ_REQUESTS=N requests of the HTTP fuzz driver (10000)
//	BERTH_FAULTS_CHURN_SERVERS=N servers in each churn under a fault (12)
//	BERTH_FAULTS_ROUNDS=N        rounds of the churn fault loops (1)
package faults

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"berth/internal/devstack"
)

// requireRealEnv turns every skip into a failure: CI must run these tests.
const requireRealEnv = "BERTH_REQUIRE_REAL"

var (
	stackOnce sync.Once
	shared    *devstack.Stack
	sharedDir string
	stackErr  error
	skipWhy   string
	// stackFailed records that some test failed, so TestMain dumps logs.
	stackFailed bool
	failedMu    sync.Mutex
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		failedMu.Lock()
		failed := stackFailed
		failedMu.Unlock()
		if failed || code != 0 {
			dumpLogs(sharedDir, 60)
		}
		if err := shared.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "faults: stack close:", err)
			code = 1
		}
		if os.Getenv("BERTH_FAULTS_KEEP") == "" && code == 0 {
			os.RemoveAll(sharedDir)
		} else {
			fmt.Fprintln(os.Stderr, "faults: run directory kept:", sharedDir)
		}
	}
	os.Exit(code)
}

// need skips the test with reason, or fails it under BERTH_REQUIRE_REAL=1.
func need(t testing.TB, ok bool, reason string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv(requireRealEnv) == "1" {
		t.Fatalf("%s (and %s=1 forbids skipping)", reason, requireRealEnv)
	}
	t.Skip(reason)
}

// repoRoot walks up from the test's directory to go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod not found above the test directory")
		}
		dir = parent
	}
}

func binDir() (string, error) {
	if d := os.Getenv("BERTH_BIN_DIR"); d != "" {
		return filepath.Abs(d)
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin"), nil
}

// prerequisites says why the stack cannot run here ("" when it can).
func prerequisites() string {
	if os.Geteuid() != 0 {
		return "needs root (dockerd, OVS, veths)"
	}
	for _, prog := range []string{"docker", "keystone-manage", "uwsgi", "ovs-vsctl", "ovsdb-server", "ovs-vswitchd"} {
		if _, err := exec.LookPath(prog); err != nil {
			if _, err := os.Stat(filepath.Join("/usr/sbin", prog)); err != nil {
				return prog + " not installed (make deps)"
			}
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		return "busybox-static not installed (make deps)"
	}
	bin, err := binDir()
	if err != nil {
		return err.Error()
	}
	for _, b := range []string{"berth-region", "berth-imagesvc", "berth-hostagent", "berth-pause"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return fmt.Sprintf("%s/%s not built (make build)", bin, b)
		}
	}
	return ""
}

// stack returns the package's shared stack, bringing it up on first use,
// and makes sure every service runs (an earlier test may have killed one
// and failed before restarting it).
func stack(t *testing.T) *devstack.Stack {
	t.Helper()
	stackOnce.Do(func() {
		if skipWhy = prerequisites(); skipWhy != "" {
			return
		}
		bin, _ := binDir()
		// Not t.TempDir: its parent is 0700 and PostgreSQL runs as postgres.
		sharedDir, stackErr = os.MkdirTemp("", "berth-faults-")
		if stackErr != nil {
			return
		}
		cfg, err := devstack.FreePortsConfig(sharedDir)
		if err != nil {
			stackErr = err
			return
		}
		cfg.BinDir = bin
		cfg.Log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		start := time.Now()
		shared, stackErr = devstack.Up(ctx, cfg)
		if stackErr != nil {
			dumpLogs(sharedDir, 40)
			return
		}
		fmt.Fprintf(os.Stderr, "faults: stack up in %s: %s (host %s)\n", time.Since(start).Round(time.Millisecond), sharedDir, cfg.HostName)
	})
	need(t, skipWhy == "", skipWhy)
	if stackErr != nil {
		t.Fatalf("devstack.Up: %v", stackErr)
	}
	t.Cleanup(func() {
		if t.Failed() {
			failedMu.Lock()
			stackFailed = true
			failedMu.Unlock()
		}
	})
	ensureRunning(t, shared)
	return shared
}

// ensureRunning restarts any Berth or infrastructure service that is not
// running.
func ensureRunning(t *testing.T, s *devstack.Stack) {
	t.Helper()
	for _, name := range []string{devstack.ServicePostgres, devstack.ServiceKeystone, devstack.ServiceRegion, devstack.ServiceImage, devstack.ServiceHostAgent} {
		p := s.Service(name)
		if p == nil || p.Running() {
			continue
		}
		t.Logf("%s is not running (left so by an earlier test?); starting it", name)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		err := s.RestartService(ctx, name)
		cancel()
		if err != nil {
			t.Fatalf("restart %s: %v", name, err)
		}
	}
}

// restart starts a service again and fails the test if it does not come up.
func restart(t *testing.T, s *devstack.Stack, name string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	if err := s.RestartService(ctx, name); err != nil {
		t.Fatalf("restart %s: %v", name, err)
	}
	return time.Since(start)
}

func dumpLogs(runDir string, n int) {
	logs, _ := filepath.Glob(filepath.Join(runDir, "logs", "*.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(lines) > n {
			lines = lines[len(lines)-n:]
		}
		fmt.Fprintf(os.Stderr, "---- tail of %s\n%s\n", l, strings.Join(lines, "\n"))
	}
}

// envInt reads a positive integer knob, or def.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
