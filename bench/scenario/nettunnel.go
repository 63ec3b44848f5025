package scenario

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"berth/bench/osapi"
	"berth/bench/report"
	"berth/bench/stats"
	"berth/internal/devstack"
)

// hostedSet is a server 6b placed on a named host.
type hostedSet struct {
	host, id, app, ip string
}

// netAcrossHosts is 6b: throughput from a set on one host to a set on
// another, through the VXLAN tunnel between the hosts' bridges, and, for
// comparison, to a second set on the serving host. Servers are booted
// through the API as admin with availability zone nova:<host>.
func (e *Env) netAcrossHosts(ctx context.Context, veth *vethPair, sizeMB, reps int) error {
	t := time.Now()
	hp, err := e.startHostPair(ctx)
	if err != nil {
		return err
	}
	e.Log.Info("two bench hosts up", "hosts", hp.hosts[0].name+","+hp.hosts[1].name, "took", time.Since(t).Round(time.Millisecond))
	sets := []*hostedSet{{host: hp.hosts[0].name}, {host: hp.hosts[1].name}, {host: hp.hosts[0].name}}
	defer func() {
		dctx := context.WithoutCancel(ctx)
		e.removeHosted(dctx, sets)
		hp.close(dctx, e)
	}()
	for i, s := range sets {
		if err := e.bootOn(ctx, s, fmt.Sprintf("%sxnet-%d", e.Prefix, i)); err != nil {
			return err
		}
	}
	server, remote, local := sets[0], sets[1], sets[2]
	if err := writePayload(ctx, e, server.app, sizeMB); err != nil {
		return err
	}
	// The first packets wait for the tunnel ports and the underlay's ARP.
	for start := time.Now(); ; time.Sleep(500 * time.Millisecond) {
		// (busybox 1.35's wget -T crashes: SIGSEGV, exit 139.)
		_, err := e.execIn(ctx, remote.app, "timeout", "3", "wget", "-q", "-O", "/dev/null", "http://"+server.ip+"/small")
		if err == nil {
			break
		}
		if time.Since(start) > 60*time.Second {
			return fmt.Errorf("%s on %s does not reach %s on %s across the tunnel: %w", remote.id, remote.host, server.id, server.host, err)
		}
	}
	across, pairs, err := e.downloads(ctx, remote.app, server.ip, sizeMB, reps, veth, "6b")
	if err != nil {
		return err
	}
	same, pairs2, err := e.downloads(ctx, local.app, server.ip, sizeMB, reps, veth, "6b'")
	if err != nil {
		return err
	}
	as, ps := stats.Of(across), stats.Of(pairs)
	ss, ps2 := stats.Of(same), stats.Of(pairs2)
	e.Report.Add(report.Row{ID: "6b", Metric: fmt.Sprintf("TCP throughput set → set across two hosts (VXLAN between their bridges, HTTP GET of %d MB)", sizeMB),
		Unit: "Mbit/s", Value: &as, Baseline: "veth pair", BaselineValue: &ps, Ratio: stats.Ratio(as.P50, ps.P50),
		Note: fmt.Sprintf("ratio is throughput: below 1 is slower; %.2f× the same-host number on the serving host (6b')", stats.Ratio(as.P50, ss.P50))})
	e.Report.Add(report.Row{ID: "6b'", Metric: fmt.Sprintf("the same with both sets on the serving host of 6b (HTTP GET of %d MB)", sizeMB),
		Unit: "Mbit/s", Value: &ss, Baseline: "veth pair", BaselineValue: &ps2, Ratio: stats.Ratio(ss.P50, ps2.P50), Note: "ratio is throughput: below 1 is slower"})
	e.Report.Detail("network_hosts", map[string]any{"size_mb": sizeMB, "across_mbit": across, "veth_mbit_across": pairs,
		"same_host_mbit": same, "veth_mbit_same_host": pairs2})
	e.Report.Note("Two hosts (6b, 6b'): two more berth-hostagent processes (%s, %s) registered with the stack's region, each with "+
		"an Open vSwitch of its own (ovsdb-server, and ovs-vswitchd with its netdev datapath in a network namespace of its "+
		"own, at the scheduling priority of the stack's shared ovs-vswitchd) and its VXLAN endpoint (--tunnel-ip) on an "+
		"underlay bridge there; a veth pair between the underlay bridges is the wire (MTU 1500; the network's 1450 leaves "+
		"room for VXLAN's 50 bytes). Region hands each agent the other as a peer, and the agents put the tunnel ports in. "+
		"Servers are booted through the API as admin with availability zone nova:<host>: one serves, one on the other "+
		"host downloads (6b), one on the serving host downloads (6b'). Both hosts share this machine's kernel, Docker and "+
		"two CPUs, so the two vswitchds' encapsulation and forwarding compete for cores that two machines would not share.",
		hp.hosts[0].name, hp.hosts[1].name)
	return nil
}

// hostedServer is what 6b reads of a server as admin: also its host.
type hostedServer struct {
	osapi.Server
	Host string `json:"OS-EXT-SRV-ATTR:host"`
}

func (e *Env) serverAsAdmin(ctx context.Context, id string) (hostedServer, error) {
	var out struct {
		Server hostedServer `json:"server"`
	}
	_, err := e.C.Do(ctx, osapi.Request{Method: http.MethodGet, URL: e.Compute() + "/servers/" + id, Token: e.Admin.Token}, &out)
	return out.Server, err
}

// bootOn boots an m1.tiny demo-image server as admin onto s.host and
// waits until it is ACTIVE there.
func (e *Env) bootOn(ctx context.Context, s *hostedSet, name string) error {
	tok := e.Admin.Token
	if e.TokenCacheBug {
		fresh, err := e.C.PasswordToken(ctx, e.Stack.KeystoneURL(), devstack.UserAdmin, e.Stack.Password(devstack.UserAdmin), "admin")
		if err != nil {
			return err
		}
		tok = fresh.Token
	}
	b, err := e.bootAt(ctx, e.Compute(), tok, name, map[string]any{"availability_zone": "nova:" + s.host}, nil)
	if err != nil {
		return err
	}
	s.id = b.ID
	for start := time.Now(); ; time.Sleep(200 * time.Millisecond) {
		srv, err := e.serverAsAdmin(ctx, b.ID)
		if err != nil {
			return err
		}
		switch {
		case srv.Status == "ERROR" && srv.Fault != nil:
			return fmt.Errorf("server %s on %s: ERROR: %s", b.ID, s.host, srv.Fault.Message)
		case srv.Status == "ERROR":
			return fmt.Errorf("server %s on %s: ERROR", b.ID, s.host)
		case srv.Status == "ACTIVE" && srv.Host != s.host:
			return fmt.Errorf("server %s is on %q, asked for %s", b.ID, srv.Host, s.host)
		case srv.Status == "ACTIVE":
			if s.ip = firstAddr(srv.Addresses); s.ip == "" {
				return fmt.Errorf("server %s: no address", b.ID)
			}
			s.app, err = e.appOf(ctx, b.ID)
			return err
		}
		if time.Since(start) > 3*time.Minute {
			return fmt.Errorf("server %s on %s still %s after 3 minutes", b.ID, s.host, srv.Status)
		}
	}
}

// removeHosted deletes 6b's servers as admin and waits until they are
// gone (so their agents have removed them before being stopped).
func (e *Env) removeHosted(ctx context.Context, sets []*hostedSet) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	for _, s := range sets {
		if s.id != "" {
			if _, err := e.C.Do(ctx, osapi.Request{Method: http.MethodDelete, URL: e.Compute() + "/servers/" + s.id,
				Token: e.Admin.Token, OK: []int{204, 404}}, nil); err != nil {
				e.Log.Warn("delete server", "id", s.id, "err", err)
			}
		}
	}
	for _, s := range sets {
		for s.id != "" {
			_, err := e.serverAsAdmin(ctx, s.id)
			if osapi.Code(err) == http.StatusNotFound {
				break
			}
			if ctx.Err() != nil {
				e.Log.Warn("server not gone", "id", s.id, "host", s.host)
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
}
