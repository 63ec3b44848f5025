package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"golang.org/x/sys/unix"
)

// Dockerd is a private Docker daemon for tests that restart Docker: its own
// data root, exec root (and so its own containerd), socket and cgroup
// parent, no bridge and no iptables, so that restarting it disturbs nobody
// else's containers.
type Dockerd struct {
	Dir    string
	Socket string
	Cli    *client.Client
	cmd    *exec.Cmd
	done   chan struct{}
	log    *os.File
}

// StartDockerd starts a private daemon (live restore off) and stops it,
// removing its data, when the test ends.
func StartDockerd(t *testing.T) *Dockerd {
	t.Helper()
	RequireRoot(t)
	RequireBinaries(t, "dockerd", "containerd", "runc")
	dir, err := os.MkdirTemp("", "bdk-")
	if err != nil {
		t.Fatal(err)
	}
	d := &Dockerd{Dir: dir, Socket: filepath.Join(dir, "docker.sock")}
	if d.log, err = os.Create(filepath.Join(dir, "dockerd.log")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			if b, err := os.ReadFile(d.log.Name()); err == nil {
				t.Logf("dockerd.log:\n%s", tail(b, 4000))
				// The whole log, for a failure at scale.
				if keep := os.Getenv("BERTH_DOCKERD_LOG"); keep != "" {
					_ = os.WriteFile(keep, b, 0o644)
				}
			}
		}
		d.log.Close()
		unmountUnder(dir) // dockerd leaves its data root bind-mounted
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("cleanup: %v", err)
		}
	})
	d.start(t, false)
	d.Cli, err = client.NewClientWithOpts(client.WithHost("unix://"+d.Socket), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Cli.Close() })
	return d
}

func (d *Dockerd) start(t *testing.T, liveRestore bool) {
	t.Helper()
	args := []string{
		"--data-root", filepath.Join(d.Dir, "root"), "--exec-root", filepath.Join(d.Dir, "exec"),
		"-H", "unix://" + d.Socket, "--pidfile", filepath.Join(d.Dir, "docker.pid"),
		"--bridge", "none", "--iptables=false", "--ip-masq=false", "--ip-forward=false",
		"--cgroup-parent", "/" + filepath.Base(d.Dir),
		"--containerd-namespace", filepath.Base(d.Dir), "--containerd-plugins-namespace", filepath.Base(d.Dir) + "p",
	}
	if liveRestore {
		args = append(args, "--live-restore")
	}
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+d.Socket), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	// A daemon that exits while starting (on a loaded machine dockerd
	// gives up on its containerd after a fixed wait) is started again, as
	// systemd's Restart= does on a host.
	for attempt := 1; ; attempt++ {
		d.cmd = exec.Command("dockerd", args...)
		d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
		d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
		if err := d.cmd.Start(); err != nil {
			t.Fatalf("start dockerd: %v", err)
		}
		d.done = make(chan struct{})
		go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(d.cmd, d.done)
		exited := false
		// A give-up time, not a speed goal: a daemon that comes up without
		// live restore first stops every container it finds running.
		Eventually(t, 5*time.Minute, "private dockerd up", func() bool {
			select {
			case <-d.done:
				exited = true
				return true
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_, err := cli.Ping(ctx)
			return err == nil
		})
		if !exited {
			return
		}
		if attempt == 3 {
			t.Fatalf("dockerd exited while starting, %d times", attempt)
		}
		t.Logf("dockerd exited while starting (%s); starting it again", d.cmd.ProcessState)
	}
}

// stop sends TERM (by PID) and waits for the daemon to exit.
func (d *Dockerd) stop(t *testing.T) {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(5 * time.Minute): // it stops every container first
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Logf("dockerd did not stop in 5m; killed")
	}
	d.cmd = nil
}

// Restart stops the daemon (TERM: without live restore it stops every
// container) and starts it again, with or without live restore.
func (d *Dockerd) Restart(t *testing.T, liveRestore bool) time.Duration {
	t.Helper()
	start := time.Now()
	d.stop(t)
	d.start(t, liveRestore)
	return time.Since(start)
}

// unmountUnder detaches every mount at or below dir, deepest first.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && (f[1] == dir || strings.HasPrefix(f[1], dir+"/")) {
			points = append(points, f[1])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(points)))
	for _, p := range points {
		_ = unix.Unmount(p, unix.MNT_DETACH)
	}
}

func (d *Dockerd) String() string { return fmt.Sprintf("dockerd at %s", d.Socket) }
