package network_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"

	"berth/internal/keystone"
	"berth/internal/pgtest"
	"berth/region/network"
	"berth/region/store"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// fakeKeystone is a test double of Keystone's token validation API.
func fakeKeystone(t *testing.T) string {
	tokens := map[string][2]string{
		"demo": {"demo-project", "member"}, "alt": {"alt-project", "member"},
		"reader": {"demo-project", "reader"}, "admin": {"admin-project", "admin"},
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who, ok := tokens[r.Header.Get("X-Subject-Token")]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"token": map[string]any{
			"expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
			"user":       map[string]any{"id": "u-" + who[0]},
			"project":    map[string]any{"id": who[0], "domain": map[string]string{"id": "default"}},
			"roles":      []map[string]string{{"name": who[1]}},
		}})
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/v3"
}

func setup(t *testing.T) (func(token string) *gophercloud.ServiceClient, *store.Store) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if _, err := st.EnsureDefaultNetwork(ctx, "private", "10.77.0.0/24"); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := httptest.NewServer(network.New(st, keystone.NewValidator(fakeKeystone(t), time.Minute, nil), log))
	t.Cleanup(srv.Close)
	return func(token string) *gophercloud.ServiceClient {
		pc := &gophercloud.ProviderClient{HTTPClient: http.Client{Timeout: 10 * time.Second}}
		pc.SetToken(token)
		return &gophercloud.ServiceClient{ProviderClient: pc, Endpoint: srv.URL + "/", ResourceBase: srv.URL + "/v2.0/"}
	}, st
}

func code(err error) int {
	var ue gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &ue) {
		return ue.Actual
	}
	return 0
}

func TestNetworksSubnetsPorts(t *testing.T) {
	client, _ := setup(t)
	ctx := context.Background()
	demo, alt := client("demo"), client("alt")

	pages, err := networks.List(demo, nil).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, _ := networks.ExtractNetworks(pages)
	if len(all) != 1 || all[0].Name != "private" || !all[0].Shared || len(all[0].Subnets) != 1 {
		t.Fatalf("networks = %+v, want the shared default network with its subnet", all)
	}

	n, err := networks.Create(ctx, demo, networks.CreateOpts{Name: "net1"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	sn, err := subnets.Create(ctx, demo, subnets.CreateOpts{NetworkID: n.ID, CIDR: "192.168.50.0/29", IPVersion: 4,
		DNSNameservers: []string{"192.168.50.53"}}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if sn.GatewayIP != "192.168.50.1" || len(sn.AllocationPools) != 1 || sn.AllocationPools[0].Start != "192.168.50.2" ||
		sn.AllocationPools[0].End != "192.168.50.6" {
		t.Errorf("subnet defaults = gw %s pools %+v, want gw .1 and pool .2-.6", sn.GatewayIP, sn.AllocationPools)
	}
	if _, err := subnets.Create(ctx, demo, subnets.CreateOpts{NetworkID: n.ID, CIDR: "192.168.50.0/28", IPVersion: 4}).Extract(); code(err) != 400 {
		t.Errorf("overlapping subnet: %v, want 400", err)
	}

	// Another project sees nothing of it.
	if _, err := networks.Get(ctx, alt, n.ID).Extract(); code(err) != 404 {
		t.Errorf("alt network get: %v, want 404", err)
	}
	if _, err := subnets.Get(ctx, alt, sn.ID).Extract(); code(err) != 404 {
		t.Errorf("alt subnet get: %v, want 404", err)
	}
	if _, err := ports.Create(ctx, alt, ports.CreateOpts{NetworkID: n.ID}).Extract(); code(err) != 404 {
		t.Errorf("alt port on demo's network: %v, want 404", err)
	}
	if err := networks.Delete(ctx, alt, n.ID).ExtractErr(); code(err) != 404 {
		t.Errorf("alt delete: %v, want 404", err)
	}
	if _, err := networks.Create(ctx, client("reader"), networks.CreateOpts{Name: "x"}).Extract(); code(err) != 403 {
		t.Errorf("reader create: %v, want 403", err)
	}

	// IPAM: five addresses, six concurrent ports → five distinct, one 409.
	var mu sync.Mutex
	seen := map[string]bool{}
	conflicts := 0
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := ports.Create(ctx, demo, ports.CreateOpts{NetworkID: n.ID}).Extract()
			mu.Lock()
			defer mu.Unlock()
			if code(err) == 409 {
				conflicts++
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			if seen[p.FixedIPs[0].IPAddress] {
				t.Errorf("address %s handed out twice", p.FixedIPs[0].IPAddress)
			}
			seen[p.FixedIPs[0].IPAddress] = true
			if len(p.SecurityGroups) != 1 {
				t.Errorf("port groups %v, want the default group", p.SecurityGroups)
			}
		}()
	}
	wg.Wait()
	if len(seen) != 5 || conflicts != 1 {
		t.Errorf("%d addresses, %d conflicts; want 5 and 1", len(seen), conflicts)
	}
	if err := networks.Delete(ctx, demo, n.ID).ExtractErr(); code(err) != 409 {
		t.Errorf("delete network with ports: %v, want 409", err)
	}
	pp, _ := ports.List(demo, ports.ListOpts{NetworkID: n.ID}).AllPages(ctx)
	pl, _ := ports.ExtractPorts(pp)
	for _, p := range pl {
		if err := ports.Delete(ctx, demo, p.ID).ExtractErr(); err != nil {
			t.Fatal(err)
		}
	}
	if err := networks.Delete(ctx, demo, n.ID).ExtractErr(); err != nil {
		t.Errorf("delete empty network: %v", err)
	}
	if _, err := ports.Create(ctx, demo, ports.CreateOpts{NetworkID: all[0].ID,
		FixedIPs: []ports.IP{{IPAddress: "10.77.0.50"}}}).Extract(); err != nil {
		t.Errorf("fixed IP on the shared network: %v", err)
	}
	if _, err := ports.Create(ctx, alt, ports.CreateOpts{NetworkID: all[0].ID,
		FixedIPs: []ports.IP{{IPAddress: "10.77.0.50"}}}).Extract(); code(err) != 409 {
		t.Errorf("taken fixed IP: %v, want 409", err)
	}
}

func TestSecurityGroups(t *testing.T) {
	client, _ := setup(t)
	ctx := context.Background()
	demo, alt := client("demo"), client("alt")
	pages, err := groups.List(demo, groups.ListOpts{}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gs, _ := groups.ExtractGroups(pages)
	if len(gs) != 1 || gs[0].Name != "default" || len(gs[0].Rules) != 2 {
		t.Fatalf("groups = %+v, want the default group with Neutron's two rules", gs)
	}
	g, err := groups.Create(ctx, demo, groups.CreateOpts{Name: "web"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	r, err := rules.Create(ctx, demo, rules.CreateOpts{SecGroupID: g.ID, Direction: rules.DirIngress, EtherType: rules.EtherType4,
		Protocol: rules.ProtocolTCP, PortRangeMin: 22, PortRangeMax: 22, RemoteIPPrefix: "0.0.0.0/0"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rules.Create(ctx, demo, rules.CreateOpts{SecGroupID: g.ID, Direction: rules.DirIngress, EtherType: rules.EtherType4,
		Protocol: rules.ProtocolTCP, PortRangeMin: 22, PortRangeMax: 22, RemoteIPPrefix: "0.0.0.0/0"}).Extract(); code(err) != 409 {
		t.Errorf("duplicate rule: %v, want 409", err)
	}
	for name, opts := range map[string]rules.CreateOpts{
		"bad direction": {SecGroupID: g.ID, Direction: "sideways", EtherType: rules.EtherType4},
		"bad protocol":  {SecGroupID: g.ID, Direction: rules.DirIngress, EtherType: rules.EtherType4, Protocol: "gre"},
		"bad range":     {SecGroupID: g.ID, Direction: rules.DirIngress, EtherType: rules.EtherType4, Protocol: rules.ProtocolTCP, PortRangeMin: 90, PortRangeMax: 80},
	} {
		if _, err := rules.Create(ctx, demo, opts).Extract(); code(err) != 400 {
			t.Errorf("%s: %v, want 400", name, err)
		}
	}
	if _, err := groups.Get(ctx, alt, g.ID).Extract(); code(err) != 404 {
		t.Errorf("alt group get: %v, want 404", err)
	}
	if err := rules.Delete(ctx, alt, r.ID).ExtractErr(); code(err) != 404 {
		t.Errorf("alt rule delete: %v, want 404", err)
	}
	if err := rules.Delete(ctx, demo, r.ID).ExtractErr(); err != nil {
		t.Error(err)
	}
	if err := groups.Delete(ctx, demo, g.ID).ExtractErr(); err != nil {
		t.Error(err)
	}
	// Fault bodies are Neutron's.
	req, _ := http.NewRequest("GET", demo.ResourceBase+"networks/00000000-0000-0000-0000-000000000000", nil)
	req.Header.Set("X-Auth-Token", "demo")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var fault struct {
		NeutronError struct{ Type, Message string } `json:"NeutronError"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&fault)
	if resp.StatusCode != 404 || fault.NeutronError.Type != "NetworkNotFound" || !strings.Contains(fault.NeutronError.Message, "could not be found") {
		t.Errorf("fault = %d %+v, want 404 NetworkNotFound", resp.StatusCode, fault)
	}
}

func TestNeutronDetails(t *testing.T) {
	client, _ := setup(t)
	ctx := context.Background()
	demo := client("demo")
	n, err := networks.Create(ctx, demo, networks.CreateOpts{Name: "n"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	// "gateway_ip": null means no gateway, as in Neutron.
	noGW := ""
	sn, err := subnets.Create(ctx, demo, subnets.CreateOpts{NetworkID: n.ID, CIDR: "192.168.60.0/24", IPVersion: 4, GatewayIP: &noGW}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if sn.GatewayIP != "" {
		t.Errorf("gateway with gateway_ip null = %q, want none", sn.GatewayIP)
	}
	gw := "192.168.60.254"
	if sn, err = subnets.Update(ctx, demo, sn.ID, subnets.UpdateOpts{GatewayIP: &gw}).Extract(); err != nil || sn.GatewayIP != gw {
		t.Errorf("subnet gateway update: %v %v, want %s", sn, err, gw)
	}
	g, err := groups.Create(ctx, demo, groups.CreateOpts{Name: "a"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	name := "b"
	if g, err = groups.Update(ctx, demo, g.ID, groups.UpdateOpts{Name: name}).Extract(); err != nil || g.Name != "b" {
		t.Errorf("group rename: %v %v", g, err)
	}
	// Bulk create (Neutron's plural body).
	var out struct {
		Rules []map[string]any `json:"security_group_rules"`
	}
	_, err = demo.Post(ctx, demo.ResourceBase+"security-group-rules", map[string]any{"security_group_rules": []map[string]any{
		{"security_group_id": g.ID, "direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 80},
		{"security_group_id": g.ID, "direction": "ingress", "protocol": "tcp", "port_range_min": 443, "port_range_max": 443},
	}}, &out, &gophercloud.RequestOpts{OkCodes: []int{201}})
	if err != nil || len(out.Rules) != 2 {
		t.Errorf("bulk rules: %v %+v, want two", err, out)
	}
}
