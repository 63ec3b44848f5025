package scenario

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lib/pq"
)

// Region is a second berth-region process the bench starts on a database
// of its own, beside the stack's: the scale scenarios fill it with
// simulated hosts and seeded servers that must never reach the stack's
// real hostagent. It shares the stack's PostgreSQL, Keystone and imagesvc,
// as a second region replica would.
type Region struct {
	Name    string
	Base    string // e.g. http://127.0.0.1:4321
	DSN     string
	DB      *sql.DB
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// Compute is the region's Nova endpoint.
func (r *Region) Compute() string { return r.Base + "/v2.1" }

// PID is the region process's id.
func (r *Region) PID() int { return r.cmd.Process.Pid }

// StartRegion creates database bench_<name> and runs berth-region on it on
// a free port, with extra flags appended.
func (e *Env) StartRegion(ctx context.Context, name string, extra ...string) (*Region, error) {
	dbName := "bench_" + strings.ReplaceAll(name, "-", "_")
	admin, err := sql.Open("postgres", e.Stack.AdminDSN())
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+pq.QuoteIdentifier(dbName)); err != nil {
		return nil, err
	}
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+pq.QuoteIdentifier(dbName)); err != nil {
		return nil, fmt.Errorf("create database %s: %w", dbName, err)
	}
	dsn := strings.Replace(e.Stack.AdminDSN(), "/postgres?", "/"+dbName+"?", 1)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	logPath := filepath.Join(e.Stack.RunDir(), "logs", "bench-region-"+name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := append([]string{
		"--listen", "127.0.0.1:" + strconv.Itoa(port),
		"--db", dsn,
		"--keystone-url", e.Stack.KeystoneURL(),
		"--image-url", e.Stack.ImageURL(),
		"--agent-token-file", e.Stack.AgentTokenFile(),
		"--default-cidr", "10.200.0.0/16",
	}, extra...)
	cmd := exec.Command(filepath.Join(e.BinDir, "berth-region"), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &Region{Name: name, Base: "http://127.0.0.1:" + strconv.Itoa(port), DSN: dsn, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(r.done) }()
	e.regions = append(e.regions, r)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(r.Base + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-r.done:
			return nil, fmt.Errorf("region %s exited at start; see %s", name, logPath)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("region %s not serving after 60s; see %s", name, logPath)
		}
	}
	if r.DB, err = sql.Open("postgres", dsn); err != nil {
		return nil, err
	}
	e.Log.Info("extra region serving", "name", name, "url", r.Base, "pid", r.PID(), "db", dbName)
	return r, nil
}

// Alive fails once the process has exited.
func (r *Region) Alive() error {
	select {
	case <-r.done:
		return fmt.Errorf("region %s exited; see %s", r.Name, r.LogPath)
	default:
		return nil
	}
}

// Stop ends the process (SIGTERM, then SIGKILL after 10 s). Safe to call
// twice.
func (r *Region) Stop() {
	if r.DB != nil {
		r.DB.Close()
		r.DB = nil
	}
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}
