package netplumb

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

// External IDs Berth sets on every OVS interface it adds.
const (
	ExtSet  = "berth-set"
	ExtPort = "berth-port"
	ExtHost = "berth-host"
	// ExtVNI is the VNI of the port's network (host flows flood by it).
	ExtVNI = "berth-vni"
	// ExtGateway is the gateway of the port's subnet with its prefix
	// length, e.g. "10.99.0.1/24" ("" for none): the host joins the
	// network when it holds that address on the bridge.
	ExtGateway = "berth-gateway"
	// ExtPolicy is the digest of the port's applied policy (flows,
	// shaping, MTU); ExtRules the digest of its security configuration
	// (a change forgets the port's conntrack zone).
	ExtPolicy = "berth-policy"
	ExtRules  = "berth-rules"
	// ExtTunnelHost marks a VXLAN port as this host's tunnel to
	// ExtPeer. Tunnels carry no ExtHost: they are not set ports.
	ExtTunnelHost = "berth-tunnel-host"
	ExtPeer       = "berth-peer"
)

// vsctl runs ovs-vsctl against one database with a timeout.
type vsctl struct {
	bin     string
	db      string
	timeout time.Duration
}

func (v vsctl) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	full := []string{"--timeout=" + strconv.Itoa(max(1, int(v.timeout/time.Second)))}
	if v.db != "" {
		full = append(full, "--db="+v.db)
	}
	full = append(full, args...)
	cmd := exec.CommandContext(ctx, v.bin, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), &vsctlError{args: args, stderr: strings.TrimSpace(stderr.String()), err: err}
	}
	return stdout.String(), nil
}

type vsctlError struct {
	args   []string
	stderr string
	err    error
}

func (e *vsctlError) Error() string {
	return fmt.Sprintf("ovs-vsctl %s: %v: %s", strings.Join(e.args, " "), e.err, e.stderr)
}

func (e *vsctlError) Unwrap() error { return e.err }

// exitCode returns the exit status of a failed ovs-vsctl run, or -1.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// quote makes s one ovs-vsctl value token.
func quote(s string) string { return strconv.Quote(s) }

// ovsInterface is one interface row found by List.
type ovsInterface struct {
	Name    string
	Ext     map[string]string
	OFPort  int
	Options map[string]string
}

// findInterfaces lists interface rows whose external_ids match all of ext.
func (v vsctl) findInterfaces(ctx context.Context, ext map[string]string) ([]ovsInterface, error) {
	var conds []string
	for _, k := range slices.Sorted(maps.Keys(ext)) {
		conds = append(conds, "external_ids:"+k+"="+quote(ext[k]))
	}
	return v.find(ctx, conds...)
}

// interfaceByName returns the interface row of name, or nil.
func (v vsctl) interfaceByName(ctx context.Context, name string) (*ovsInterface, error) {
	rows, err := v.find(ctx, "name="+quote(name))
	if err != nil || len(rows) == 0 {
		return nil, err
	}
	return &rows[0], nil
}

// listAll lists every interface row (one call for the host pass, which
// needs set ports and tunnels alike).
func (v vsctl) listAll(ctx context.Context) ([]ovsInterface, error) {
	return v.query(ctx, "list", "Interface")
}

// find lists interface rows matching every condition.
func (v vsctl) find(ctx context.Context, conds ...string) ([]ovsInterface, error) {
	return v.query(ctx, append([]string{"find", "Interface"}, conds...)...)
}

// query runs a list or find of interfaces with the columns ovsInterface
// holds.
func (v vsctl) query(ctx context.Context, cmd ...string) ([]ovsInterface, error) {
	args := append([]string{"--format=json", "--data=json", "--columns=name,external_ids,ofport,options"}, cmd...)
	out, err := v.run(ctx, args...)
	if err != nil {
		return nil, err
	}
	var tbl struct {
		Data [][]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(out), &tbl); err != nil {
		return nil, fmt.Errorf("parse ovs-vsctl find output: %w", err)
	}
	var res []ovsInterface
	for _, row := range tbl.Data {
		if len(row) != 4 {
			return nil, fmt.Errorf("ovs-vsctl find: row has %d columns, want 4", len(row))
		}
		var it ovsInterface
		if err := json.Unmarshal(row[0], &it.Name); err != nil {
			return nil, fmt.Errorf("parse interface name: %w", err)
		}
		m, err := parseOVSMap(row[1])
		if err != nil {
			return nil, err
		}
		it.Ext = m
		it.OFPort = parseOVSInt(row[2], -1)
		if it.Options, err = parseOVSMap(row[3]); err != nil {
			return nil, err
		}
		res = append(res, it)
	}
	return res, nil
}

// setExt sets external_ids keys of an interface.
func (v vsctl) setExt(ctx context.Context, iface string, ext map[string]string) error {
	args := []string{"set", "Interface", iface}
	for _, k := range slices.Sorted(maps.Keys(ext)) {
		args = append(args, "external_ids:"+k+"="+quote(ext[k]))
	}
	_, err := v.run(ctx, args...)
	return err
}

// addTunnel adds (or updates) a VXLAN port with flow-based keys.
func (v vsctl) addTunnel(ctx context.Context, bridge, name string, opts, ext map[string]string) error {
	args := []string{"--", "--may-exist", "add-port", bridge, name, "--", "set", "Interface", name, "type=vxlan"}
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		args = append(args, "options:"+k+"="+quote(opts[k]))
	}
	for _, k := range slices.Sorted(maps.Keys(ext)) {
		args = append(args, "external_ids:"+k+"="+quote(ext[k]))
	}
	_, err := v.run(ctx, args...)
	return err
}

// parseOVSMap decodes OVSDB JSON ["map", [[k, v], ...]].
func parseOVSMap(raw json.RawMessage) (map[string]string, error) {
	var pair [2]json.RawMessage
	if err := json.Unmarshal(raw, &pair); err != nil {
		return nil, fmt.Errorf("parse ovsdb map: %w", err)
	}
	var kvs [][2]string
	if err := json.Unmarshal(pair[1], &kvs); err != nil {
		return nil, fmt.Errorf("parse ovsdb map entries: %w", err)
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv[0]] = kv[1]
	}
	return m, nil
}

// parseOVSInt decodes an OVSDB integer, or an empty ["set", []] as def.
func parseOVSInt(raw json.RawMessage, def int) int {
	var n int
	if err := json.Unmarshal(raw, &n); err == nil {
		return n
	}
	return def
}

// addPort adds iface to bridge with Berth's external_ids in one transaction.
func (v vsctl) addPort(ctx context.Context, bridge, iface string, ext map[string]string) error {
	args := []string{"--", "--may-exist", "add-port", bridge, iface, "--", "set", "Interface", iface}
	for _, k := range slices.Sorted(maps.Keys(ext)) {
		args = append(args, "external_ids:"+k+"="+quote(ext[k]))
	}
	_, err := v.run(ctx, args...)
	return err
}

func (v vsctl) delPort(ctx context.Context, iface string) error {
	_, err := v.run(ctx, "--if-exists", "del-port", iface)
	return err
}

// EnsureBridge creates the integration bridge if it is missing. dpType is
// the datapath type for a new bridge: "system" (kernel), "netdev"
// (userspace) or "" to pick netdev when the kernel module is not loaded.
// An existing bridge is left exactly as it is.
func (p *Plumber) EnsureBridge(ctx context.Context, dpType string) error {
	_, err := p.ovs.run(ctx, "br-exists", p.cfg.Bridge)
	if err == nil {
		if mode, err := p.ovs.run(ctx, "get-fail-mode", p.cfg.Bridge); err == nil && strings.TrimSpace(mode) != "secure" {
			p.log.Warn("bridge is not in fail_mode=secure: after an ovs-vswitchd restart it forwards everything (NORMAL) until the agent has put its flows back",
				"bridge", p.cfg.Bridge, "fail_mode", strings.TrimSpace(mode))
		}
		return nil
	}
	if exitCode(err) != 2 {
		return err
	}
	if dpType == "" {
		dpType = DefaultDatapathType()
	}
	// fail_mode=secure: no NORMAL flow, ever, so a vswitchd restart
	// forwards nothing until the agent has put its flows back.
	_, err = p.ovs.run(ctx, "--may-exist", "add-br", p.cfg.Bridge, "--", "set", "Bridge", p.cfg.Bridge,
		"datapath_type="+dpType, "fail_mode=secure")
	if err == nil {
		p.log.Info("created bridge", "bridge", p.cfg.Bridge, "datapath_type", dpType)
	}
	return err
}

// DefaultDatapathType is "system" when the openvswitch kernel module is
// loaded and "netdev" (userspace) otherwise.
func DefaultDatapathType() string {
	if _, err := os.Stat("/sys/module/openvswitch"); err == nil {
		return "system"
	}
	return "netdev"
}
