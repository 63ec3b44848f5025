package netplumb

import (
	"context"
	"os"
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

// EnsureBridge creates the integration bridge if it is missing, in
// fail_mode=secure, and puts an existing one in fail_mode=secure. dpType
// is the datapath type for a new bridge: "system" (kernel), "netdev"
// (userspace) or "" to pick netdev when the kernel module is not loaded.
func (p *Plumber) EnsureBridge(ctx context.Context, dpType string) error {
	br, err := p.ovs.bridge(ctx, p.cfg.Bridge)
	if err != nil {
		return err
	}
	if br != nil {
		// fail_mode=secure: no NORMAL flow, ever, so an ovs-vswitchd
		// restart forwards nothing until the agent has put its flows back.
		if br.FailMode != "secure" {
			p.log.Warn("setting the bridge to fail_mode=secure (it would forward everything with NORMAL when the agent's flows are absent)",
				"bridge", p.cfg.Bridge, "fail_mode", br.FailMode)
			return p.ovs.setFailMode(ctx, p.cfg.Bridge, "secure")
		}
		return nil
	}
	if dpType == "" {
		dpType = DefaultDatapathType()
	}
	if err := p.ovs.addBridge(ctx, p.cfg.Bridge, dpType); err != nil {
		return err
	}
	p.log.Info("created bridge", "bridge", p.cfg.Bridge, "datapath_type", dpType)
	return nil
}

// DefaultDatapathType is "system" when the openvswitch kernel module is
// loaded and "netdev" (userspace) otherwise.
func DefaultDatapathType() string {
	if _, err := os.Stat("/sys/module/openvswitch"); err == nil {
		return "system"
	}
	return "netdev"
}
