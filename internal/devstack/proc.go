package devstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopGrace is how long a process gets between its stop signal and SIGKILL.
const stopGrace = 10 * time.Second

// procSpec says how to run one long-lived process of the stack.
type procSpec struct {
	name string // service name, e.g. "postgres"; also names its log and pid files
	path string
	args []string
	env  []string // added to a minimal environment
	dir  string
	// ports must be free before the process starts.
	ports []int
	// cred runs the process as another user (PostgreSQL refuses root).
	cred *syscall.Credential
	// stopSignal asks the process to stop; SIGTERM when zero.
	stopSignal syscall.Signal
	// ready returns nil once the process serves; it is polled until it does.
	ready func(ctx context.Context) error
	// readyTimeout bounds the wait for ready; 60s when zero.
	readyTimeout time.Duration
	// keepIfShared leaves the process running at Close while another
	// stack on this machine is alive (dockerd is a machine-wide service).
	keepIfShared bool
	// grace is the time between the stop signal and SIGKILL; stopGrace
	// when zero.
	grace time.Duration
}

// Process is one daemon the stack started (or adopted from an earlier run
// in the same run directory). Its methods are safe for concurrent use.
type Process struct {
	spec    procSpec
	logPath string
	pidPath string
	log     *slog.Logger

	mu        sync.Mutex
	logOffset int64         // size of the log when the current process started
	pid       int           // 0 when not running
	done      chan struct{} // closed when the current process has exited
}

// Name is the service name, e.g. "hostagent".
func (p *Process) Name() string { return p.spec.name }

// PID is the process ID, or 0 when the process is not running.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pid
}

// LogPath is the file that receives the process's stdout and stderr.
func (p *Process) LogPath() string { return p.logPath }

// Running reports whether the process is alive.
func (p *Process) Running() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return false
	}
	select {
	case <-done:
		return false
	default:
		return true
	}
}

func newProcess(runDir string, spec procSpec, log *slog.Logger) *Process {
	return &Process{
		spec:    spec,
		logPath: filepath.Join(runDir, "logs", spec.name+".log"),
		pidPath: filepath.Join(runDir, "run", spec.name+".pid"),
		log:     log.With("service", spec.name),
	}
}

// start launches the process in its own process group (so a Ctrl-C aimed at
// berth-stack does not reach it before an orderly Close) and waits for it to
// become ready. A leftover process from a crashed earlier run, found by its
// pid file, is stopped first.
func (p *Process) start(ctx context.Context) error {
	if err := p.reapStale(); err != nil {
		return err
	}
	for _, port := range p.spec.ports {
		if err := portFree(port); err != nil {
			return fmt.Errorf("%s: %w", p.spec.name, err)
		}
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open %s log: %w", p.spec.name, err)
	}
	defer logf.Close()
	if fi, err := logf.Stat(); err == nil {
		p.mu.Lock()
		p.logOffset = fi.Size()
		p.mu.Unlock()
	}
	fmt.Fprintf(logf, "\n=== %s berth-stack starting %s %s\n", time.Now().Format(time.RFC3339), p.spec.path, strings.Join(p.spec.args, " "))

	path, err := lookPath(p.spec.path)
	if err != nil {
		return fmt.Errorf("start %s: %w", p.spec.name, err)
	}
	cmd := exec.Command(path, p.spec.args...)
	cmd.Dir = p.spec.dir
	cmd.Env = append(baseEnv(), p.spec.env...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: p.spec.cred}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.spec.name, err)
	}
	done := make(chan struct{})
	p.mu.Lock()
	p.pid, p.done = cmd.Process.Pid, done
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.log.Debug("process exited", "pid", cmd.Process.Pid, "err", err)
		close(done)
	}()
	if err := os.WriteFile(p.pidPath, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		return err
	}
	p.log.Info("started", "pid", cmd.Process.Pid, "log", p.logPath)
	return p.waitReady(ctx)
}

// logSinceStart is what the current process has logged so far.
func (p *Process) logSinceStart() (string, error) {
	p.mu.Lock()
	off := p.logOffset
	p.mu.Unlock()
	f, err := os.Open(p.logPath)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return "", err
	}
	b, err := io.ReadAll(f)
	return string(b), err
}

// adopt takes over a still-running process from an earlier run.
func (p *Process) adopt(pid int) {
	done := make(chan struct{})
	p.mu.Lock()
	p.pid, p.done = pid, done
	p.mu.Unlock()
	go func() {
		for alive(pid) {
			time.Sleep(100 * time.Millisecond)
		}
		close(done)
	}()
	p.log.Info("adopted running process", "pid", pid)
}

func (p *Process) waitReady(ctx context.Context) error {
	if p.spec.ready == nil {
		return nil
	}
	timeout := p.spec.readyTimeout
	if timeout == 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	var lastErr error
	for {
		if lastErr = p.spec.ready(ctx); lastErr == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited before it was ready (see %s): %w", p.spec.name, p.logPath, lastErr)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %s (see %s): %w", p.spec.name, timeout, p.logPath, lastErr)
		case <-time.After(150 * time.Millisecond):
		}
	}
}

// signal sends sig to the process.
func (p *Process) signal(sig syscall.Signal) error {
	pid := p.PID()
	if pid == 0 || !p.Running() {
		return fmt.Errorf("%s is not running", p.spec.name)
	}
	return syscall.Kill(pid, sig)
}

// wait blocks until the process exits or the timeout passes.
func (p *Process) wait(timeout time.Duration) bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// stop sends the stop signal, then SIGKILL after the grace period, and
// waits for the process to be gone.
func (p *Process) stop() error {
	if !p.Running() {
		p.clear()
		return nil
	}
	sig := p.spec.stopSignal
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	pid := p.PID()
	p.log.Info("stopping", "pid", pid, "signal", sig.String())
	_ = syscall.Kill(pid, sig)
	grace := p.spec.grace
	if grace == 0 {
		grace = stopGrace
	}
	if !p.wait(grace) {
		p.log.Warn("did not stop in time, killing", "pid", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		if !p.wait(5 * time.Second) {
			return fmt.Errorf("%s (pid %d) survived SIGKILL", p.spec.name, pid)
		}
	}
	p.clear()
	return nil
}

func (p *Process) clear() {
	p.mu.Lock()
	p.pid = 0
	p.mu.Unlock()
	_ = os.Remove(p.pidPath)
}

// reapStale stops a process recorded in our pid file that outlived the run
// that started it (berth-stack was killed with SIGKILL, say). It only
// touches a process whose executable matches the one we would start.
func (p *Process) reapStale() error {
	pid, ok := readPidFile(p.pidPath)
	if !ok || !alive(pid) || !sameExecutable(pid, p.spec.path) {
		_ = os.Remove(p.pidPath)
		return nil
	}
	p.log.Warn("stopping leftover process from an earlier run", "pid", pid)
	return killAndWait(pid, p.spec.stopSignal)
}

// portFree fails when something already listens on 127.0.0.1:port.
func portFree(port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("port %d is taken by another program (on :5000, Debian's own keystone service? systemctl disable --now keystone): %w", port, err)
	}
	return l.Close()
}

// readPidFile returns the pid stored in path.
func readPidFile(path string) (int, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// sameExecutable reports whether pid runs the program path (a name is
// looked up as for starting it), comparing resolved paths, or base names
// when /proc/PID/exe is unreadable.
func sameExecutable(pid int, path string) bool {
	want := path
	if p, err := lookPath(path); err == nil {
		want = p
	}
	if r, err := filepath.EvalSymlinks(want); err == nil {
		want = r
	}
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
		exe = strings.TrimSuffix(exe, " (deleted)")
		return exe == want || filepath.Base(exe) == filepath.Base(want)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	argv0, _, _ := strings.Cut(string(b), "\x00")
	return filepath.Base(argv0) == filepath.Base(path)
}

// killAndWait stops a process that is not our child: sig (SIGTERM when
// zero), then SIGKILL after the grace period.
func killAndWait(pid int, sig syscall.Signal) error {
	if sig == 0 {
		sig = syscall.SIGTERM
	}
	_ = syscall.Kill(pid, sig)
	if waitGone(pid, stopGrace) {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if waitGone(pid, 5*time.Second) {
		return nil
	}
	return fmt.Errorf("pid %d survived SIGKILL", pid)
}

// waitGone polls until pid no longer exists or the timeout passes.
func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for alive(pid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// stdPath is the PATH children get; root's tools live in the sbin dirs,
// which a developer's PATH may lack.
const stdPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// lookPath finds name in stdPath, then in the caller's PATH.
func lookPath(name string) (string, error) {
	if strings.Contains(name, "/") {
		if _, err := os.Stat(name); err != nil {
			return "", err
		}
		return name, nil
	}
	for _, dir := range filepath.SplitList(stdPath) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return exec.LookPath(name)
}

// baseEnv is the environment every child starts from: enough to find
// programs and nothing that could steer them elsewhere (no OS_*, no
// PYTHONPATH from a developer's shell).
func baseEnv() []string {
	env := []string{"PATH=" + stdPath, "LANG=C.UTF-8"}
	for _, k := range []string{"HOME", "TMPDIR", "TZ"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// runCmd runs a short command to completion, returning its combined output
// in the error when it fails.
func runCmd(ctx context.Context, env []string, cred *syscall.Credential, name string, args ...string) (string, error) {
	path, err := lookPath(name)
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(baseEnv(), env...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(lastLines(string(out), 15)))
	}
	return string(out), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
