// Package pgtest gives tests a fresh PostgreSQL database each.
//
// DSN(t) returns the DSN of a new, empty database that is dropped when the
// test ends. The databases live either on the server named by the
// BERTH_TEST_PG_DSN environment variable or, when that is unset, on a
// throwaway cluster that pgtest starts lazily, once per test binary, in a
// temporary directory on a free loopback port (initdb and postgres are found
// in BERTH_PG_BIN, $PATH, /usr/local/bin or /usr/lib/postgresql/*/bin).
//
// When no PostgreSQL is available the test is skipped, unless
// BERTH_REQUIRE_REAL=1, in which case it fails: CI must exercise the real
// database.
//
// A package that uses DSN should stop the cluster when its test binary
// exits:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// Without it the cluster still stops when the test binary dies (it is
// started with a parent-death signal), but its temporary directory stays.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/lib/pq" // the postgres driver
)

// Environment variables pgtest reads.
const (
	EnvDSN         = "BERTH_TEST_PG_DSN" // admin DSN of an existing server to create databases on
	EnvBin         = "BERTH_PG_BIN"      // directory holding initdb and postgres
	EnvRequireReal = "BERTH_REQUIRE_REAL"
)

var (
	mu      sync.Mutex
	srv     *server // the shared server, once started
	srvErr  error   // why starting it failed (sticky)
	skipMsg string  // why there is no server to use (sticky)
)

// server is a PostgreSQL we can create databases on.
type server struct {
	adminDSN string  // DSN of a maintenance database (e.g. postgres)
	admin    *sql.DB // connection to adminDSN
	cluster  *cluster
}

// DSN returns the DSN of a fresh, empty database for this test, dropped at
// the end of the test. It skips the test when no PostgreSQL is available
// (fails under BERTH_REQUIRE_REAL=1).
func DSN(tb testing.TB) string {
	tb.Helper()
	s, err, skip := shared()
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	if skip != "" {
		if os.Getenv(EnvRequireReal) == "1" {
			tb.Fatalf("pgtest: %s (and %s=1)", skip, EnvRequireReal)
		}
		tb.Skipf("pgtest: %s", skip)
	}
	name := "t_" + randHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.admin.ExecContext(ctx, "CREATE DATABASE "+name+" TEMPLATE template0 ENCODING 'UTF8'"); err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := s.admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Logf("pgtest: drop database %s: %v", name, err)
		}
	})
	dsn, err := withDatabase(s.adminDSN, name)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	return dsn
}

// Main runs the tests and then stops the cluster pgtest started, if any.
// Use it as the body of TestMain.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	os.Exit(code)
}

// Stop stops the cluster pgtest started (if any) and removes its directory.
// Later calls to DSN fail.
func Stop() {
	mu.Lock()
	defer mu.Unlock()
	if srv == nil {
		return
	}
	srv.admin.Close()
	if srv.cluster != nil {
		srv.cluster.stop()
	}
	srv = nil
	srvErr = errors.New("the test cluster was stopped")
}

func shared() (*server, error, string) {
	mu.Lock()
	defer mu.Unlock()
	if srv != nil || srvErr != nil || skipMsg != "" {
		return srv, srvErr, skipMsg
	}
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		db, err := openAndPing(dsn, 10*time.Second)
		if err != nil {
			srvErr = fmt.Errorf("%s: %w", EnvDSN, err)
			return nil, srvErr, ""
		}
		srv = &server{adminDSN: dsn, admin: db}
		return srv, nil, ""
	}
	bin, err := findBin()
	if err != nil {
		skipMsg = err.Error()
		return nil, nil, skipMsg
	}
	var c *cluster
	for attempt := 0; attempt < 3; attempt++ {
		c, err = startCluster(bin)
		if err == nil || !errors.Is(err, errPortInUse) {
			break
		}
	}
	if err != nil {
		srvErr = err
		return nil, err, ""
	}
	db, err := openAndPing(c.dsn, 5*time.Second)
	if err != nil {
		c.stop()
		srvErr = err
		return nil, err, ""
	}
	srv = &server{adminDSN: c.dsn, admin: db, cluster: c}
	return srv, nil, ""
}

func openAndPing(dsn string, wait time.Duration) (*sql.DB, error) {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		err = db.PingContext(ctx)
		cancel()
		if err == nil {
			return db, nil
		}
		if time.Now().After(deadline) {
			db.Close()
			return nil, fmt.Errorf("connect: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// findBin returns the directory holding initdb and postgres.
func findBin() (string, error) {
	has := func(dir string) bool {
		for _, b := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if dir := os.Getenv(EnvBin); dir != "" {
		if has(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("%s=%s holds no initdb and postgres", EnvBin, dir)
	}
	if p, err := exec.LookPath("initdb"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	if has("/usr/local/bin") {
		return "/usr/local/bin", nil
	}
	// Debian/Ubuntu keep them out of $PATH; take the newest major version.
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return majorOf(dirs[i]) > majorOf(dirs[j]) })
	for _, d := range dirs {
		if has(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL found: set %s, or put initdb and postgres in $PATH or %s", EnvDSN, EnvBin)
}

func majorOf(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

// cluster is a PostgreSQL server pgtest started.
type cluster struct {
	dir  string
	cmd  *exec.Cmd
	done chan struct{} // closed when the postgres process has exited
	dsn  string
}

var errPortInUse = errors.New("port in use")

// dirPrefix names pgtest's cluster directories under os.TempDir().
const dirPrefix = "berth-pgtest-"

// reapStale removes cluster directories that test binaries which died
// (or skipped Main) left behind: older than a few minutes and with no
// running postmaster. A live cluster always has data/postmaster.pid naming
// a running process.
func reapStale() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dirPrefix+"*"))
	for _, d := range dirs {
		fi, err := os.Stat(d)
		if err != nil || !fi.IsDir() || time.Since(fi.ModTime()) < 5*time.Minute {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(d, "data", "postmaster.pid")); err == nil {
			pid, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
			if err := syscall.Kill(pid, 0); pid > 0 && (err == nil || errors.Is(err, syscall.EPERM)) {
				continue // still running
			}
		}
		os.RemoveAll(d)
	}
}

func startCluster(bin string) (*cluster, error) {
	reapStale()
	dir, err := os.MkdirTemp("", dirPrefix)
	if err != nil {
		return nil, fmt.Errorf("pgtest dir: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(dir)
		}
	}()
	cred, err := runAs()
	if err != nil {
		return nil, err
	}
	if cred != nil {
		// initdb refuses to run as root; the cluster belongs to postgres.
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, fmt.Errorf("pgtest dir: %w", err)
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--no-locale", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Env = append(os.Environ(), "LC_ALL=C")
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}

	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "postgres.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("pgtest log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(bin, "postgres"), "-D", data,
		"-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
		"-c", "max_connections=200", "-c", "shared_buffers=64MB")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Pdeathsig stops the server if the test binary dies without Stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGINT, Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	c := &cluster{dir: dir, cmd: cmd, done: make(chan struct{}),
		dsn: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)}
	go func() { cmd.Wait(); close(c.done) }()

	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-c.done:
			out, _ := os.ReadFile(logPath)
			if strings.Contains(string(out), "Address already in use") {
				return nil, fmt.Errorf("postgres on port %d: %w", port, errPortInUse)
			}
			return nil, fmt.Errorf("postgres exited: %s\n%s", cmd.ProcessState, out)
		case <-time.After(100 * time.Millisecond):
		}
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			conn.Close()
			db, err := openAndPing(c.dsn, 2*time.Second)
			if err == nil {
				db.Close()
				ok = true
				return c, nil
			}
		}
		if time.Now().After(deadline) {
			c.stop()
			out, _ := os.ReadFile(logPath)
			return nil, fmt.Errorf("postgres did not come up in time:\n%s", out)
		}
	}
}

// stop asks postgres for a fast shutdown, kills it if that takes too
// long, and removes the cluster's directory.
func (c *cluster) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
	os.RemoveAll(c.dir)
}

// runAs is the credential to run PostgreSQL with: the postgres user when
// we are root (initdb refuses root), else nil (ourselves).
func runAs() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root needs a postgres user to own the test cluster: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// withDatabase returns dsn pointing at database name. It accepts both URL
// (postgres://...) and key=value DSNs.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("parse DSN: %w", err)
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	var parts []string
	for _, f := range strings.Fields(dsn) {
		if !strings.HasPrefix(f, "dbname=") {
			parts = append(parts, f)
		}
	}
	return strings.Join(append(parts, "dbname="+name), " "), nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
