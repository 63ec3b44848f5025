package scenario

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/volume"

	"berth/bench/osapi"
	"berth/internal/devstack"
)

// A hostPair is two more hosts for 6b, on this machine: each is a real
// berth-hostagent registered with the stack's region, with an Open
// vSwitch of its own (ovsdb-server, and ovs-vswitchd in a network
// namespace of its own, since one netdev datapath per namespace is all
// Linux allows) and its VXLAN endpoint on an underlay bridge of that
// vswitchd, as in OVS's userspace-tunnelling how-to. A veth pair between
// the two underlay bridges is the wire. Region tells each agent the
// other's endpoint, and the agents put the tunnel ports in themselves.
//
// Both hosts share this machine's kernel, Docker and two CPUs: what the
// sender's and the receiver's vswitchd each do (encapsulation, the
// tunnel lookup) runs on the same cores that two machines would split.
type hostPair struct {
	hosts [2]*benchHost
}

// benchHost is one of the pair.
type benchHost struct {
	name, bridge, tunnelIP string
	dir                    string // its OVS database, sockets and logs, and the agent's state
	db                     string // "unix:<dir>/db.sock"
	netns                  string // ovs-vswitchd's network namespace, "/proc/<pid>/ns/net"
	ovsdb, vswitchd, agent *child
}

// child is a process the bench started and stops by its PID.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

func startChild(name string, cmd *exec.Cmd, logPath string) (*child, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(c.done) }()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and SIGKILL after 15 s. A nil child is a no-op.
func (c *child) stop() {
	if c == nil || c.exited() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

var ovsSchemas = []string{"/usr/share/openvswitch/vswitch.ovsschema", "/usr/local/share/openvswitch/vswitch.ovsschema"}

func runTool(ctx context.Context, env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func (h *benchHost) vsctl(ctx context.Context, args ...string) error {
	_, err := runTool(ctx, nil, append([]string{"ovs-vsctl", "--db=" + h.db, "--timeout=20"}, args...)...)
	return err
}

// inNetns runs a command in the host's switch namespace.
func (h *benchHost) inNetns(ctx context.Context, args ...string) error {
	_, err := runTool(ctx, nil, append([]string{"nsenter", "--net=" + h.netns}, args...)...)
	return err
}

// startHostPair brings both hosts up and returns once region lists both
// as up. On error it stops what it started.
func (e *Env) startHostPair(ctx context.Context) (_ *hostPair, err error) {
	schema := ""
	for _, p := range ovsSchemas {
		if _, err := os.Stat(p); err == nil {
			schema = p
			break
		}
	}
	if schema == "" {
		return nil, errors.New("no vswitch.ovsschema: Open vSwitch is not installed")
	}
	tag := make([]byte, 3)
	_, _ = rand.Read(tag)
	sfx := hex.EncodeToString(tag)
	hp := &hostPair{}
	defer func() {
		if err != nil {
			hp.close(context.WithoutCancel(ctx), e)
		}
	}()
	for i := range hp.hosts {
		name := fmt.Sprintf("%s-n%d", e.Stack.HostName(), i+1)
		h := &benchHost{name: name, bridge: fmt.Sprintf("bni%s%d", sfx, i+1),
			// Addresses inside the two switch namespaces only (TEST-NET-1).
			tunnelIP: fmt.Sprintf("192.0.2.%d", i+1), dir: filepath.Join(e.Stack.RunDir(), "nethost-"+name)}
		hp.hosts[i] = h
		if err := e.startSwitch(ctx, h, schema); err != nil {
			return nil, fmt.Errorf("host %s: %w", name, err)
		}
	}
	if err := hp.wire(ctx, sfx); err != nil {
		return nil, err
	}
	for _, h := range hp.hosts {
		if err := e.startAgent(h); err != nil {
			return nil, fmt.Errorf("host %s: %w", h.name, err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		up, err := e.hostsUp(ctx)
		if err != nil {
			return nil, err
		}
		if up[hp.hosts[0].name] && up[hp.hosts[1].name] {
			return hp, nil
		}
		for _, h := range hp.hosts {
			if h.agent.exited() {
				return nil, fmt.Errorf("hostagent %s exited; see its log in %s", h.name, filepath.Join(e.Stack.RunDir(), "logs"))
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("hosts %s and %s not both up after 2 minutes", hp.hosts[0].name, hp.hosts[1].name)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// startSwitch starts the host's ovsdb-server and, in a new network
// namespace, its ovs-vswitchd, at the scheduling priority of the stack's
// shared ovs-vswitchd, so that 6b's data path competes for the CPUs as
// 6a's does (the bench itself may run under nice).
func (e *Env) startSwitch(ctx context.Context, h *benchHost, schema string) error {
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		return err
	}
	sock := filepath.Join(h.dir, "db.sock")
	h.db = "unix:" + sock
	env := []string{"OVS_RUNDIR=" + h.dir, "OVS_LOGDIR=" + h.dir, "OVS_DBDIR=" + h.dir, "OVS_SYSCONFDIR=" + h.dir}
	if _, err := runTool(ctx, env, "ovsdb-tool", "create", filepath.Join(h.dir, "conf.db"), schema); err != nil {
		return err
	}
	cmd := exec.Command("ovsdb-server", filepath.Join(h.dir, "conf.db"), "--remote=punix:"+sock,
		"--unixctl="+filepath.Join(h.dir, "ovsdb-server.ctl"), "--log-file="+filepath.Join(h.dir, "ovsdb-server.log"))
	cmd.Env = append(os.Environ(), env...)
	var err error
	if h.ovsdb, err = startChild("ovsdb-server", cmd, filepath.Join(h.dir, "ovsdb-server.out")); err != nil {
		return err
	}
	for start := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		if h.ovsdb.exited() || time.Since(start) > 10*time.Second {
			return fmt.Errorf("ovsdb-server does not serve %s; see %s", sock, h.dir)
		}
	}
	if err := h.vsctl(ctx, "--no-wait", "init"); err != nil {
		return err
	}
	cmd = exec.Command("ovs-vswitchd", h.db, "--unixctl="+filepath.Join(h.dir, "ovs-vswitchd.ctl"),
		"--log-file="+filepath.Join(h.dir, "ovs-vswitchd.log"))
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if h.vswitchd, err = startChild("ovs-vswitchd", cmd, filepath.Join(h.dir, "ovs-vswitchd.out")); err != nil {
		return err
	}
	h.netns = "/proc/" + strconv.Itoa(h.vswitchd.pid()) + "/ns/net"
	if pid, ok := e.sharedVswitchd(); ok {
		if nice, err := niceOf(pid); err == nil {
			if err := syscall.Setpriority(syscall.PRIO_PROCESS, h.vswitchd.pid(), nice); err != nil {
				e.Log.Warn("could not match the shared ovs-vswitchd's priority", "nice", nice, "err", err)
			}
		}
	}
	return h.inNetns(ctx, "ip", "link", "set", "lo", "up")
}

// sharedVswitchd is the PID of the machine's shared ovs-vswitchd (6a's).
func (e *Env) sharedVswitchd() (int, bool) {
	b, err := os.ReadFile(filepath.Join(e.Stack.Config().OVSDir, "ovs-vswitchd.pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, err == nil
}

// niceOf reads a process's nice value (field 19 of /proc/PID/stat).
func niceOf(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	// The command name (field 2) may hold spaces; count after its ')'.
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 17 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	return strconv.Atoi(f[16])
}

// wire joins the two hosts: a veth pair, one end in each switch
// namespace, each end a port of an underlay netdev bridge whose own
// interface holds the tunnel endpoint. TX offloads are off on the ends:
// the userspace datapath does not complete checksums the kernel left out.
func (hp *hostPair) wire(ctx context.Context, sfx string) error {
	ends := [2]string{"bnw" + sfx + "a", "bnw" + sfx + "b"}
	if _, err := runTool(ctx, nil, "ip", "link", "add", ends[0], "type", "veth", "peer", "name", ends[1]); err != nil {
		return err
	}
	for i, h := range hp.hosts {
		end, under := ends[i], fmt.Sprintf("bnu%s%d", sfx, i+1)
		if _, err := runTool(ctx, nil, "ip", "link", "set", end, "netns", strconv.Itoa(h.vswitchd.pid())); err != nil {
			_, _ = runTool(ctx, nil, "ip", "link", "del", ends[0])
			return err
		}
		for _, c := range [][]string{{"ethtool", "-K", end, "tx", "off", "tso", "off", "gso", "off"}, {"ip", "link", "set", end, "up"}} {
			if err := h.inNetns(ctx, c...); err != nil {
				return err
			}
		}
		if err := h.vsctl(ctx, "add-br", under, "--", "set", "Bridge", under, "datapath_type=netdev", "--", "add-port", under, end); err != nil {
			return err
		}
		for _, c := range [][]string{{"ip", "addr", "add", h.tunnelIP + "/24", "dev", under}, {"ip", "link", "set", under, "up"}} {
			if err := h.inNetns(ctx, c...); err != nil {
				return err
			}
		}
	}
	return nil
}

// startAgent runs berth-hostagent for the host against the stack's
// region and imagesvc.
func (e *Env) startAgent(h *benchHost) error {
	cmd := exec.Command(filepath.Join(e.BinDir, "berth-hostagent"),
		"--region-url", strings.TrimSuffix(e.Compute(), "/v2.1"),
		"--image-url", e.Stack.ImageURL(),
		"--agent-token-file", e.Stack.AgentTokenFile(),
		"--host", h.name,
		"--bridge", h.bridge, "--datapath-type", "netdev",
		"--ovs-db", h.db,
		"--switch-netns", h.netns,
		"--tunnel-ip", h.tunnelIP,
		"--pause-binary", filepath.Join(e.BinDir, "berth-pause"),
		"--state-dir", filepath.Join(h.dir, "agent"),
		"--listen", "127.0.0.1:0")
	cmd.Dir = e.Stack.RunDir()
	var err error
	h.agent, err = startChild("hostagent", cmd, filepath.Join(e.Stack.RunDir(), "logs", "hostagent-"+h.name+".log"))
	return err
}

// hostsUp is region's view of which hypervisors are up.
func (e *Env) hostsUp(ctx context.Context) (map[string]bool, error) {
	var out struct {
		Hypervisors []struct {
			Name  string `json:"hypervisor_hostname"`
			State string `json:"state"`
		} `json:"hypervisors"`
	}
	if _, err := e.C.Do(ctx, osapi.Request{Method: http.MethodGet, URL: e.Compute() + "/os-hypervisors/detail", Token: e.Admin.Token}, &out); err != nil {
		return nil, err
	}
	up := map[string]bool{}
	for _, h := range out.Hypervisors {
		up[h.Name] = h.State == "up"
	}
	return up, nil
}

// close takes the hosts out of service (disabled and forced down, so
// region schedules nothing there and drops them from every peer list;
// the API cannot delete a host), stops the agents, removes whatever of
// theirs is left in Docker, and stops both switches, whose namespaces
// and the wire in them go with them. The servers must be gone already.
func (hp *hostPair) close(ctx context.Context, e *Env) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for _, h := range hp.hosts {
		if h == nil {
			continue
		}
		if h.agent != nil {
			for _, c := range []struct {
				action string
				body   map[string]any
			}{{"disable", nil}, {"force-down", map[string]any{"forced_down": true}}} {
				body := map[string]any{"host": h.name, "binary": "nova-compute"}
				for k, v := range c.body {
					body[k] = v
				}
				if _, err := e.C.Do(ctx, osapi.Request{Method: http.MethodPut, URL: e.Compute() + "/os-services/" + c.action,
					Token: e.Admin.Token, Body: body, Header: map[string]string{"OpenStack-API-Version": "compute 2.11"}}, nil); err != nil {
					e.Log.Warn("take bench host out of service", "host", h.name, "action", c.action, "err", err)
				}
			}
		}
		h.agent.stop()
		e.purgeHost(ctx, h.name)
		h.vswitchd.stop()
		h.ovsdb.stop()
	}
}

// purgeHost removes the containers and volumes a host's agent left.
func (e *Env) purgeHost(ctx context.Context, host string) {
	f := filters.NewArgs(filters.Arg("label", devstack.LabelHost+"="+host))
	if cs, err := e.Docker.ContainerList(ctx, container.ListOptions{All: true, Filters: f}); err == nil {
		for _, c := range cs {
			if err := e.Docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
				e.Log.Warn("remove leftover container", "host", host, "id", c.ID, "err", err)
			}
		}
	}
	if vs, err := e.Docker.VolumeList(ctx, volume.ListOptions{Filters: f}); err == nil {
		for _, v := range vs.Volumes {
			_ = e.Docker.VolumeRemove(ctx, v.Name, true)
		}
	}
}
