package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// OVS is a private Open vSwitch: its own ovsdb-server and database socket,
// and an ovs-vswitchd in its own network namespace (userspace netdev
// datapaths in one namespace collide on their "ovs-netdev" tap, so every
// test switch gets a fresh one), with one netdev bridge.
type OVS struct {
	Dir    string
	DB     string // "unix:<dir>/db.sock", for ovs-vsctl --db
	Bridge string
	// Netns is the path of ovs-vswitchd's network namespace.
	Netns string

	restartDB func(t testing.TB)
}

// RestartDB stops ovsdb-server and starts it again on the same database
// (ovs-vswitchd and clients reconnect by themselves).
func (o *OVS) RestartDB(t testing.TB) {
	t.Helper()
	o.restartDB(t)
}

var ovsSchemaPaths = []string{"/usr/share/openvswitch/vswitch.ovsschema", "/usr/local/share/openvswitch/vswitch.ovsschema"}

// StartOVS starts a private OVS for the test and stops it (by PID) when the
// test ends. Its logs are printed if the test fails.
func StartOVS(t testing.TB) *OVS {
	t.Helper()
	RequireRoot(t)
	RequireBinaries(t, "ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ethtool")
	var schema string
	for _, p := range ovsSchemaPaths {
		if _, err := os.Stat(p); err == nil {
			schema = p
			break
		}
	}
	Require(t, schema != "", "needs the OVS vswitch.ovsschema")

	dir, err := os.MkdirTemp("", "bovs-") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	o := &OVS{Dir: dir, DB: "unix:" + filepath.Join(dir, "db.sock"), Bridge: "bt" + RandomHex(4)}
	env := append(os.Environ(), "OVS_RUNDIR="+dir, "OVS_LOGDIR="+dir, "OVS_DBDIR="+dir, "OVS_SYSCONFDIR="+dir)
	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v: %s", name, args, err, out)
		}
	}
	run("ovsdb-tool", "create", filepath.Join(dir, "conf.db"), schema)

	var procs []*exec.Cmd
	t.Cleanup(func() {
		for i := len(procs) - 1; i >= 0; i-- {
			stopProcess(procs[i])
		}
		if t.Failed() {
			for _, l := range []string{"ovsdb-server.log", "ovs-vswitchd.log"} {
				if b, err := os.ReadFile(filepath.Join(dir, l)); err == nil {
					t.Logf("%s:\n%s", l, tail(b, 4000))
				}
			}
		}
		os.RemoveAll(dir)
	})
	start := func(cmd *exec.Cmd) {
		t.Helper()
		cmd.Env = env
		if cmd.SysProcAttr == nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{}
		}
		cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", cmd.Path, err)
		}
		procs = append(procs, cmd)
	}
	sock := filepath.Join(dir, "db.sock")
	var db *exec.Cmd
	startDB := func(t testing.TB) {
		t.Helper()
		db = exec.Command("ovsdb-server", filepath.Join(dir, "conf.db"),
			"--remote=punix:"+sock, "--unixctl="+filepath.Join(dir, "ovsdb-server.ctl"),
			"--log-file="+filepath.Join(dir, "ovsdb-server.log"))
		start(db)
		Eventually(t, 10*time.Second, "ovsdb-server socket", func() bool {
			_, err := os.Stat(sock)
			return err == nil
		})
	}
	startDB(t)
	o.restartDB = func(t testing.TB) {
		t.Helper()
		stopProcess(db) // (stays in procs: stopping it again is a no-op)
		_ = os.Remove(sock)
		startDB(t)
	}
	run("ovs-vsctl", "--db="+o.DB, "--no-wait", "init")

	vsd := exec.Command("ovs-vswitchd", o.DB,
		"--unixctl="+filepath.Join(dir, "ovs-vswitchd.ctl"),
		"--log-file="+filepath.Join(dir, "ovs-vswitchd.log"))
	vsd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	start(vsd)
	o.Netns = "/proc/" + strconv.Itoa(vsd.Process.Pid) + "/ns/net"

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ovs-vsctl", "--db="+o.DB, "--timeout=20",
		"add-br", o.Bridge, "--", "set", "Bridge", o.Bridge, "datapath_type=netdev", "fail_mode=secure")
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("create bridge %s: %v: %s", o.Bridge, err, out)
	}
	return o
}

// Vsctl runs ovs-vsctl against the private database.
func (o *OVS) Vsctl(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ovs-vsctl", append([]string{"--db=" + o.DB, "--timeout=15"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ovs-vsctl %v: %v: %s", args, err, out)
	}
	return string(out)
}

func stopProcess(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		return fmt.Sprintf("…%s", b[len(b)-n:])
	}
	return string(b)
}
