package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// OVS external_ids that mark a bridge as a stack's.
const (
	ovsIDRunDir   = "berth-run-dir"
	ovsIDOwnerPID = "berth-owner-pid"
)

const ovsSchema = "/usr/share/openvswitch/vswitch.ovsschema"

// The machine has one shared OVS instance (see Config.OVSDir). Joining and
// leaving it happen under an flock on OVSDir/lock, so one stack never stops
// the instance while another is adding its bridge.

func (s *Stack) ovsDBSock() string { return filepath.Join(s.cfg.OVSDir, "db.sock") }

// OVSDB is the OVSDB remote the hostagent connects to, e.g.
// "unix:/run/berth/ovs/db.sock".
func (s *Stack) OVSDB() string { return "unix:" + s.ovsDBSock() }

func (s *Stack) vsctl(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return runCmd(ctx, nil, nil, "ovs-vsctl", append([]string{"--db=" + s.OVSDB(), "--timeout=20"}, args...)...)
}

func (s *Stack) ovsEnv() []string {
	d := s.cfg.OVSDir
	return []string{"OVS_RUNDIR=" + d, "OVS_LOGDIR=" + d, "OVS_DBDIR=" + d}
}

func (s *Stack) lockOVS(ctx context.Context) (unlock func(), err error) {
	if err := os.MkdirAll(s.cfg.OVSDir, 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(s.cfg.OVSDir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("ovs: lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("ovs: wait for lock %s: %w", f.Name(), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ensureOVS starts the shared OVS instance unless it runs, adds this
// stack's bridge and puts the gateway address on it.
func (s *Stack) ensureOVS(ctx context.Context) error {
	unlock, err := s.lockOVS(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.startOVS(ctx); err != nil {
		return err
	}
	s.addTeardown("ovs", s.leaveOVS)
	if err := s.addBridge(ctx); err != nil {
		return err
	}
	return s.configureGateway(ctx)
}

func (s *Stack) ovsAppctl(ctx context.Context, daemon string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	target := filepath.Join(s.cfg.OVSDir, daemon+".ctl")
	return runCmd(ctx, nil, nil, "ovs-appctl", append([]string{"-t", target}, args...)...)
}

func (s *Stack) startOVS(ctx context.Context) error {
	d := s.cfg.OVSDir
	db := filepath.Join(d, "conf.db")
	if _, err := s.ovsAppctl(ctx, "ovsdb-server", "version"); err != nil {
		s.reapOVSDaemon("ovsdb-server")
		if _, err := os.Stat(db); err != nil {
			if _, err := runCmd(ctx, nil, nil, "ovsdb-tool", "create", db, ovsSchema); err != nil {
				return fmt.Errorf("ovs: %w", err)
			}
		} else if out, err := runCmd(ctx, nil, nil, "ovsdb-tool", "needs-conversion", db, ovsSchema); err == nil && strings.TrimSpace(out) == "yes" {
			if _, err := runCmd(ctx, nil, nil, "ovsdb-tool", "convert", db, ovsSchema); err != nil {
				return fmt.Errorf("ovs: %w", err)
			}
		}
		// --detach returns once the server serves; it then belongs to no
		// stack and is tracked by its pid file.
		if _, err := runCmd(ctx, s.ovsEnv(), nil, "ovsdb-server", db,
			"--remote=punix:"+s.ovsDBSock(),
			"--pidfile="+filepath.Join(d, "ovsdb-server.pid"),
			"--unixctl="+filepath.Join(d, "ovsdb-server.ctl"),
			"--log-file="+filepath.Join(d, "ovsdb-server.log"),
			"--detach", "--no-chdir"); err != nil {
			return fmt.Errorf("ovs: %w", err)
		}
		if _, err := s.vsctl(ctx, "--no-wait", "init"); err != nil {
			return fmt.Errorf("ovs: %w", err)
		}
		s.log.Info("started ovsdb-server", "dir", d)
	}
	if _, err := s.ovsAppctl(ctx, "ovs-vswitchd", "version"); err != nil {
		s.reapOVSDaemon("ovs-vswitchd")
		if _, err := runCmd(ctx, s.ovsEnv(), nil, "ovs-vswitchd", s.OVSDB(),
			"--pidfile="+filepath.Join(d, "ovs-vswitchd.pid"),
			"--unixctl="+filepath.Join(d, "ovs-vswitchd.ctl"),
			"--log-file="+filepath.Join(d, "ovs-vswitchd.log"),
			"--detach", "--no-chdir"); err != nil {
			return fmt.Errorf("ovs: %w", err)
		}
		s.log.Info("started ovs-vswitchd", "dir", d)
	}
	return nil
}

// reapOVSDaemon kills a daemon whose pid file survives it not answering.
func (s *Stack) reapOVSDaemon(name string) {
	if pid, ok := readPidFile(filepath.Join(s.cfg.OVSDir, name+".pid")); ok && alive(pid) && sameExecutable(pid, name) {
		s.log.Warn("killing unresponsive OVS daemon", "daemon", name, "pid", pid)
		_ = killAndWait(pid, syscall.SIGTERM)
	}
}

// ovsBridge is one row of the Bridge table.
type ovsBridge struct {
	name        string
	externalIDs map[string]string
}

func (s *Stack) listBridges(ctx context.Context) ([]ovsBridge, error) {
	out, err := s.vsctl(ctx, "--format=json", "--columns=name,external_ids", "list", "Bridge")
	if err != nil {
		return nil, fmt.Errorf("ovs: %w", err)
	}
	var table struct {
		Data [][]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &table); err != nil {
		return nil, fmt.Errorf("ovs: parse bridge list: %w", err)
	}
	var brs []ovsBridge
	for _, row := range table.Data {
		if len(row) != 2 {
			continue
		}
		var b ovsBridge
		if err := json.Unmarshal(row[0], &b.name); err != nil {
			return nil, fmt.Errorf("ovs: parse bridge name: %w", err)
		}
		// external_ids is ["map", [[k, v], ...]].
		var m []json.RawMessage
		var pairs [][2]string
		if err := json.Unmarshal(row[1], &m); err == nil && len(m) == 2 {
			_ = json.Unmarshal(m[1], &pairs)
		}
		b.externalIDs = map[string]string{}
		for _, p := range pairs {
			b.externalIDs[p[0]] = p[1]
		}
		brs = append(brs, b)
	}
	return brs, nil
}

func (s *Stack) addBridge(ctx context.Context) error {
	brs, err := s.listBridges(ctx)
	if err != nil {
		return err
	}
	for _, b := range brs {
		if b.name != s.cfg.Bridge {
			continue
		}
		dir, ok := b.externalIDs[ovsIDRunDir]
		if !ok {
			return fmt.Errorf("ovs: bridge %s exists and is not managed by Berth", b.name)
		}
		if dir != s.cfg.RunDir && ownerAlive(b) {
			return fmt.Errorf("ovs: bridge %s belongs to the running stack in %s", b.name, dir)
		}
	}
	for _, name := range staleBridges(brs, s.cfg.Bridge, ownerAlive, dirExists) {
		// A stack killed before its teardown leaves its bridge behind in
		// the shared database, and every later start would bring it back.
		if _, err := s.vsctl(ctx, "--if-exists", "del-br", name); err != nil {
			s.log.Warn("could not remove the bridge of a dead stack", "bridge", name, "err", err)
			continue
		}
		s.log.Info("removed the bridge of a dead stack", "bridge", name)
	}
	_, err = s.vsctl(ctx, "--may-exist", "add-br", s.cfg.Bridge,
		// fail_mode=secure: no NORMAL flow, so nothing passes that the
		// agent's pipeline does not admit (before the agent has put its
		// flows in, or after ovs-vswitchd restarts).
		"--", "set", "bridge", s.cfg.Bridge, "datapath_type=netdev", "fail_mode=secure",
		fmt.Sprintf("external_ids:%s=%q", ovsIDRunDir, s.cfg.RunDir),
		fmt.Sprintf("external_ids:%s=%d", ovsIDOwnerPID, os.Getpid()))
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.cfg.OVSDir, "ovs-vswitchd.log"))
		if strings.Contains(lastLines(string(log), 30), "creating tap device failed: Device or resource busy") {
			return fmt.Errorf("ovs: another ovs-vswitchd with a netdev datapath runs on this machine outside %s (only one per network namespace can): %w", s.cfg.OVSDir, err)
		}
		return fmt.Errorf("ovs: add bridge %s: %w", s.cfg.Bridge, err)
	}
	return nil
}

// otherStacks lists the run directories of other live stacks on this
// machine, known by their bridges on the shared OVS instance (none when
// the instance is not running).
func (s *Stack) otherStacks(ctx context.Context) ([]string, error) {
	if _, err := os.Stat(s.ovsDBSock()); err != nil {
		return nil, nil
	}
	brs, err := s.listBridges(ctx)
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, b := range brs {
		if dir := b.externalIDs[ovsIDRunDir]; dir != s.cfg.RunDir && ownerAlive(b) {
			dirs = append(dirs, dir)
		}
	}
	return dirs, nil
}

// staleBridges names the Berth bridges (other than self) whose stack is
// gone for good: its owner process is dead and its run directory removed.
// A bridge whose run directory still exists may belong to a `make run`
// stack that starts again in it, and one without Berth's external ids is
// not ours: both stay.
func staleBridges(brs []ovsBridge, self string, alive func(ovsBridge) bool, exists func(string) bool) []string {
	var out []string
	for _, b := range brs {
		dir, ours := b.externalIDs[ovsIDRunDir]
		if !ours || b.name == self || dir == "" || alive(b) || exists(dir) {
			continue
		}
		out = append(out, b.name)
	}
	return out
}

func dirExists(dir string) bool {
	_, err := os.Stat(dir)
	return err == nil || !errors.Is(err, fs.ErrNotExist)
}

func ownerAlive(b ovsBridge) bool {
	pid, err := strconv.Atoi(b.externalIDs[ovsIDOwnerPID])
	return err == nil && alive(pid)
}

// configureGateway puts the subnet's first address on the bridge's
// internal interface, brings it up, and turns off TX offloads, which the
// userspace datapath does not complete for packets the host sends.
func (s *Stack) configureGateway(ctx context.Context) error {
	var link netlink.Link
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if link, err = netlink.LinkByName(s.cfg.Bridge); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ovs: bridge interface %s did not appear: %w", s.cfg.Bridge, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	gw := s.cfg.gateway()
	addr, err := netlink.ParseAddr(gw.String())
	if err != nil {
		return err
	}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("ovs: add %s to %s: %w", gw, s.cfg.Bridge, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("ovs: bring %s up: %w", s.cfg.Bridge, err)
	}
	if _, err := runCmd(ctx, nil, nil, "ethtool", "-K", s.cfg.Bridge, "tx", "off"); err != nil {
		s.log.Warn("could not turn off TX offloads on the bridge", "bridge", s.cfg.Bridge, "err", err)
	}
	s.log.Info("bridge ready", "bridge", s.cfg.Bridge, "gateway", gw.String())
	return nil
}

// leaveOVS removes this stack's bridge if it purges, and stops the shared
// instance when no other live stack has a bridge on it.
func (s *Stack) leaveOVS() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	unlock, err := s.lockOVS(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := s.ovsAppctl(ctx, "ovsdb-server", "version"); err != nil {
		return nil // already gone
	}
	var errs []error
	if s.cfg.PurgeOnClose {
		if _, err := s.vsctl(ctx, "--if-exists", "del-br", s.cfg.Bridge); err != nil {
			errs = append(errs, fmt.Errorf("ovs: %w", err))
		}
	}
	others, err := s.otherStacks(ctx)
	if err != nil {
		return errors.Join(append(errs, err)...) // unsure: leave it running
	}
	if len(others) > 0 {
		s.log.Info("leaving shared OVS running for other stacks", "stacks", others)
		return errors.Join(errs...)
	}
	return errors.Join(append(errs, s.stopOVS(ctx))...)
}

// stopOVS stops both daemons; "exit --cleanup" makes ovs-vswitchd delete
// its datapath and taps, which SIGTERM would leave behind.
func (s *Stack) stopOVS(ctx context.Context) error {
	var errs []error
	for _, d := range []struct {
		name string
		args []string
	}{
		{"ovs-vswitchd", []string{"exit", "--cleanup"}},
		{"ovsdb-server", []string{"exit"}},
	} {
		pid, havePid := readPidFile(filepath.Join(s.cfg.OVSDir, d.name+".pid"))
		if _, err := s.ovsAppctl(ctx, d.name, d.args...); err != nil {
			s.log.Warn("ovs-appctl exit failed, signalling", "daemon", d.name, "err", err)
			if havePid && alive(pid) && sameExecutable(pid, d.name) {
				errs = append(errs, killAndWait(pid, syscall.SIGTERM))
			}
			continue
		}
		if havePid && !waitGone(pid, stopGrace) {
			errs = append(errs, killAndWait(pid, syscall.SIGKILL))
		}
		s.log.Info("stopped", "service", d.name)
	}
	return errors.Join(errs...)
}
