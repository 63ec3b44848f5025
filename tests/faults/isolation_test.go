package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"berth/internal/devstack"
)

// demoResources are resources of project demo that other tenants must not
// reach.
type demoResources struct {
	server, serverName           string
	image, imageName             string // private
	sharedImage                  string // visibility shared, alt not a member
	network, networkName, subnet string
	port, sg, sgName, rule       string
	keypair, group, groupName    string
	set, setName                 string
}

func makeDemoResources(t *testing.T, s *devstack.Stack) demoResources {
	t.Helper()
	demo := token(t, s, devstack.UserDemo)
	sfx := strconv.FormatInt(time.Now().UnixNano()%1e8, 36)
	var d demoResources
	d.serverName = "iso-srv-" + sfx
	d.server = createServer(t, s, demo, d.serverName, demoImageID(t, s), "1")
	d.imageName = "iso-img-" + sfx
	r := expect(t, http.MethodPost, s.ImageURL()+"/v2/images", demo, map[string]any{"name": d.imageName, "container_format": "docker", "disk_format": "raw", "visibility": "private"}, 201)
	d.image = decode[struct{ ID string }](t, r).ID
	r = expect(t, http.MethodPost, s.ImageURL()+"/v2/images", demo, map[string]any{"name": "iso-shared-" + sfx, "container_format": "docker", "disk_format": "raw", "visibility": "shared"}, 201)
	d.sharedImage = decode[struct{ ID string }](t, r).ID
	d.networkName = "iso-net-" + sfx
	r = expect(t, http.MethodPost, s.NetworkURL()+"/v2.0/networks", demo, map[string]any{"network": map[string]any{"name": d.networkName}}, 201)
	d.network = decode[struct{ Network struct{ ID string } }](t, r).Network.ID
	r = expect(t, http.MethodPost, s.NetworkURL()+"/v2.0/subnets", demo, map[string]any{"subnet": map[string]any{"name": "iso-sub-" + sfx, "network_id": d.network, "cidr": "10.251.3.0/24", "ip_version": 4}}, 201)
	d.subnet = decode[struct{ Subnet struct{ ID string } }](t, r).Subnet.ID
	r = expect(t, http.MethodPost, s.NetworkURL()+"/v2.0/ports", demo, map[string]any{"port": map[string]any{"name": "iso-port-" + sfx, "network_id": d.network}}, 201)
	d.port = decode[struct{ Port struct{ ID string } }](t, r).Port.ID
	d.sgName = "iso-sg-" + sfx
	r = expect(t, http.MethodPost, s.NetworkURL()+"/v2.0/security-groups", demo, map[string]any{"security_group": map[string]any{"name": d.sgName}}, 201)
	d.sg = decode[struct {
		SG struct{ ID string } `json:"security_group"`
	}](t, r).SG.ID
	r = expect(t, http.MethodPost, s.NetworkURL()+"/v2.0/security-group-rules", demo, map[string]any{"security_group_rule": map[string]any{"security_group_id": d.sg, "direction": "ingress", "protocol": "tcp", "port_range_min": 80, "port_range_max": 80}}, 201)
	d.rule = decode[struct {
		R struct{ ID string } `json:"security_group_rule"`
	}](t, r).R.ID
	d.keypair = "iso-kp-" + sfx
	expect(t, http.MethodPost, s.ComputeURL()+"/os-keypairs", demo, map[string]any{"keypair": map[string]any{"name": d.keypair}}, 200, 201)
	d.groupName = "iso-grp-" + sfx
	r = expect(t, http.MethodPost, s.ComputeURL()+"/os-server-groups", demo, map[string]any{"server_group": map[string]any{"name": d.groupName, "policies": []string{"affinity"}}}, 200)
	d.group = decode[struct {
		G struct{ ID string } `json:"server_group"`
	}](t, r).G.ID
	d.setName = "iso-set-" + sfx
	r = expect(t, http.MethodPost, s.ComputeURL()+"/berth-sets", demo, map[string]any{"set": map[string]any{
		"name": d.setName, "flavorRef": "1", "containers": []any{
			map[string]any{"name": "app", "image": demoImageID(t, s), "role": "app"},
			map[string]any{"name": "side", "image": demoImageID(t, s), "role": "sidecar", "command": sidecarCmd},
		}}}, 202)
	d.set = decode[struct{ Set struct{ ID string } }](t, r).Set.ID
	waitServer(t, s, demo, d.server, 2*time.Minute, "ACTIVE", isStatus("ACTIVE"))
	waitServer(t, s, demo, d.set, 2*time.Minute, "ACTIVE", isStatus("ACTIVE"))
	t.Cleanup(func() {
		// Best effort, in dependency order.
		api(t, http.MethodDelete, s.ComputeURL()+"/servers/"+d.server, demo, nil)
		api(t, http.MethodDelete, s.ComputeURL()+"/berth-sets/"+d.set, demo, nil)
		waitServer(t, s, demo, d.server, 2*time.Minute, "deleted", isGone)
		waitServer(t, s, demo, d.set, 2*time.Minute, "deleted", isGone)
		api(t, http.MethodDelete, s.NetworkURL()+"/v2.0/ports/"+d.port, demo, nil)
		api(t, http.MethodDelete, s.NetworkURL()+"/v2.0/subnets/"+d.subnet, demo, nil)
		api(t, http.MethodDelete, s.NetworkURL()+"/v2.0/networks/"+d.network, demo, nil)
		api(t, http.MethodDelete, s.NetworkURL()+"/v2.0/security-groups/"+d.sg, demo, nil)
		api(t, http.MethodDelete, s.ImageURL()+"/v2/images/"+d.image, demo, nil)
		api(t, http.MethodDelete, s.ImageURL()+"/v2/images/"+d.sharedImage, demo, nil)
		api(t, http.MethodDelete, s.ComputeURL()+"/os-keypairs/"+d.keypair, demo, nil)
		api(t, http.MethodDelete, s.ComputeURL()+"/os-server-groups/"+d.group, demo, nil)
	})
	return d
}

// probe is one request another tenant (or role) makes, and the statuses
// that are acceptable.
type probe struct {
	method, url string
	body        any
	want        []int
	hdr         map[string]string
}

func runProbes(t *testing.T, who, tok string, probes []probe) {
	t.Helper()
	for _, p := range probes {
		r := api(t, p.method, p.url, tok, p.body, p.hdr)
		if !slices.Contains(p.want, r.code) {
			t.Errorf("%s: %s %s = %s, want %v", who, p.method, p.url, r, p.want)
		}
	}
}

// TestTenantIsolation: with alt's token every read and write of demo's
// servers, private and shared images, networks, subnets, ports, security
// groups and rules, keypairs and server groups is 404 (A3), no list shows
// their ids or names, not even with all_tenants; and alt cannot use
// demo's keypair, group, network, port or image in its own requests.
func TestTenantIsolation(t *testing.T) {
	s := stack(t)
	d := makeDemoResources(t, s)
	alt := token(t, s, devstack.UserAlt)
	c, n, g := s.ComputeURL(), s.NetworkURL(), s.ImageURL()
	nf := []int{http.StatusNotFound}
	srv := c + "/servers/" + d.server

	var probes []probe
	add := func(method, url string, body any, want ...int) {
		if len(want) == 0 {
			want = nf
		}
		probes = append(probes, probe{method: method, url: url, body: body, want: want})
	}
	// Compute: the server and everything under it.
	add(http.MethodGet, srv, nil)
	add(http.MethodPut, srv, map[string]any{"server": map[string]any{"name": "stolen"}})
	add(http.MethodDelete, srv, nil)
	add(http.MethodGet, srv+"/metadata", nil)
	add(http.MethodPut, srv+"/metadata", map[string]any{"metadata": map[string]any{"a": "b"}})
	add(http.MethodPost, srv+"/metadata", map[string]any{"metadata": map[string]any{"a": "b"}})
	add(http.MethodPut, srv+"/metadata/a", map[string]any{"meta": map[string]any{"a": "b"}})
	add(http.MethodDelete, srv+"/metadata/a", nil)
	add(http.MethodGet, srv+"/ips", nil)
	add(http.MethodGet, srv+"/ips/private", nil)
	add(http.MethodGet, srv+"/os-interface", nil)
	add(http.MethodGet, srv+"/os-security-groups", nil)
	add(http.MethodGet, srv+"/diagnostics", nil, 403, 404)
	add(http.MethodGet, c+"/os-security-groups/"+d.sg, nil)
	add(http.MethodDelete, c+"/os-security-groups/"+d.sg, nil)
	add(http.MethodDelete, c+"/os-security-group-rules/"+d.rule, nil)
	add(http.MethodPost, c+"/os-security-group-rules", map[string]any{"security_group_rule": map[string]any{
		"parent_group_id": d.sg, "ip_protocol": "tcp", "from_port": 1, "to_port": 2, "cidr": "0.0.0.0/0"}}, 400, 403, 404)
	add(http.MethodGet, srv+"/os-instance-actions", nil)
	add(http.MethodGet, srv+"/berth-logs?tail=5", nil)
	add(http.MethodPost, srv+"/remote-consoles", map[string]any{"remote_console": map[string]any{"protocol": "serial", "type": "serial"}})
	for _, a := range []string{`{"os-stop": null}`, `{"os-start": null}`, `{"reboot": {"type": "HARD"}}`, `{"pause": null}`,
		`{"suspend": null}`, `{"lock": null}`, `{"unlock": null}`, `{"resize": {"flavorRef": "2"}}`, `{"confirmResize": null}`,
		`{"rebuild": {"imageRef": "` + demoImageID(t, s) + `"}}`, `{"createImage": {"name": "stolen"}}`,
		`{"changePassword": {"adminPass": "x"}}`, `{"os-getConsoleOutput": {"length": 5}}`, `{"os-getSerialConsole": {"type": "serial"}}`,
		`{"berth-getFile": {"path": "/etc/passwd"}}`, `{"berth-putFile": {"path": "/tmp/x", "contents": "eA=="}}`,
		`{"berth-syncStatus": null}`, `{"forceDelete": null}`, `{"shelve": null}`} {
		add(http.MethodPost, srv+"/action", a)
	}
	add(http.MethodGet, c+"/os-keypairs/"+d.keypair, nil)
	add(http.MethodDelete, c+"/os-keypairs/"+d.keypair, nil)
	add(http.MethodGet, c+"/os-server-groups/"+d.group, nil)
	add(http.MethodDelete, c+"/os-server-groups/"+d.group, nil)
	// Berth's set API scopes the same way; a set is a server.
	for _, id := range []string{d.set, d.server} {
		add(http.MethodGet, c+"/berth-sets/"+id, nil)
		add(http.MethodDelete, c+"/berth-sets/"+id, nil)
	}
	add(http.MethodGet, c+"/servers/"+d.set, nil)
	add(http.MethodPost, c+"/servers/"+d.set+"/action", map[string]any{"os-stop": nil})
	add(http.MethodDelete, c+"/servers/"+d.set, nil)
	// Image.
	for _, img := range []string{d.image, d.sharedImage} {
		u := g + "/v2/images/" + img
		add(http.MethodGet, u, nil)
		probes = append(probes, probe{method: http.MethodPatch, url: u, body: `[{"op": "replace", "path": "/name", "value": "stolen"}]`,
			want: nf, hdr: map[string]string{"Content-Type": "application/openstack-images-v2.1-json-patch"}})
		add(http.MethodDelete, u, nil)
		probes = append(probes, probe{method: http.MethodPut, url: u + "/file", body: []byte("data"), want: nf,
			hdr: map[string]string{"Content-Type": "application/octet-stream"}})
		add(http.MethodGet, u+"/file", nil)
		add(http.MethodPut, u+"/tags/stolen", nil)
		add(http.MethodDelete, u+"/tags/stolen", nil)
		add(http.MethodGet, u+"/members", nil)
		add(http.MethodPost, u+"/members", map[string]any{"member": projectID(t, s, alt)})
		add(http.MethodPut, u+"/members/"+projectID(t, s, alt), map[string]any{"status": "accepted"})
		add(http.MethodGet, u+"/layers", nil)
		probes = append(probes, probe{method: http.MethodPut, url: u + "/stage", body: []byte("data"), want: nf,
			hdr: map[string]string{"Content-Type": "application/octet-stream"}})
		add(http.MethodPost, u+"/import", map[string]any{"method": map[string]any{"name": "glance-direct"}})
		add(http.MethodPost, u+"/actions/deactivate", nil, 403, 404)
	}
	// Network.
	for _, res := range []struct{ path, id, key string }{
		{"networks", d.network, "network"}, {"subnets", d.subnet, "subnet"}, {"ports", d.port, "port"},
		{"security-groups", d.sg, "security_group"}, {"security-group-rules", d.rule, "security_group_rule"},
	} {
		u := n + "/v2.0/" + res.path + "/" + res.id
		add(http.MethodGet, u, nil)
		if res.path != "security-groups" && res.path != "security-group-rules" {
			add(http.MethodPut, u, map[string]any{res.key: map[string]any{"name": "stolen"}})
		}
		add(http.MethodDelete, u, nil)
	}
	// Using demo's things in alt's own requests: never 2xx.
	use := []int{400, 403, 404, 409}
	add(http.MethodPost, n+"/v2.0/subnets", map[string]any{"subnet": map[string]any{"network_id": d.network, "cidr": "10.251.4.0/24", "ip_version": 4}}, use...)
	add(http.MethodPost, n+"/v2.0/ports", map[string]any{"port": map[string]any{"network_id": d.network}}, use...)
	add(http.MethodPost, n+"/v2.0/security-group-rules", map[string]any{"security_group_rule": map[string]any{"security_group_id": d.sg, "direction": "ingress"}}, use...)
	add(http.MethodPost, c+"/servers", map[string]any{"server": map[string]any{"name": "x", "imageRef": d.image, "flavorRef": "1"}}, use...)
	add(http.MethodPost, c+"/servers", map[string]any{"server": map[string]any{"name": "x", "imageRef": demoImageID(t, s), "flavorRef": "1", "key_name": d.keypair}}, use...)
	add(http.MethodPost, c+"/servers", map[string]any{"server": map[string]any{"name": "x", "imageRef": demoImageID(t, s), "flavorRef": "1", "networks": []any{map[string]any{"uuid": d.network}}}}, use...)
	add(http.MethodPost, c+"/servers", map[string]any{"server": map[string]any{"name": "x", "imageRef": demoImageID(t, s), "flavorRef": "1", "networks": []any{map[string]any{"port": d.port}}}}, use...)
	add(http.MethodPost, c+"/servers", map[string]any{"server": map[string]any{"name": "x", "imageRef": demoImageID(t, s), "flavorRef": "1"}, "os:scheduler_hints": map[string]any{"group": d.group}}, use...)
	runProbes(t, "alt", alt, probes)

	// A client-sent identity does not change who alt is (A2).
	spoof := map[string]string{"X-Roles": "admin,member", "X-Project-Id": projectID(t, s, token(t, s, devstack.UserDemo)),
		"X-Tenant-Id": projectID(t, s, token(t, s, devstack.UserDemo)), "X-Identity-Status": "Confirmed", "X-User-Id": "demo"}
	for _, u := range []string{srv, g + "/v2/images/" + d.image, n + "/v2.0/networks/" + d.network} {
		if r := api(t, http.MethodGet, u, alt, nil, spoof); r.code != http.StatusNotFound {
			t.Errorf("alt with X-Roles/X-Project-Id of demo: GET %s = %s, want 404", u, r)
		}
	}

	// Lists never show demo's ids or names.
	secrets := []string{d.set, d.setName, d.server, d.serverName, d.image, d.imageName, d.sharedImage, d.network, d.networkName, d.subnet, d.port,
		d.sg, d.sgName, d.rule, d.keypair, d.group, d.groupName}
	for _, u := range []string{
		c + "/servers", c + "/servers/detail", c + "/servers?all_tenants=1", c + "/servers/detail?all_tenants=true",
		c + "/servers/detail?project_id=" + projectID(t, s, token(t, s, devstack.UserDemo)) + "&all_tenants=1",
		c + "/servers?name=" + d.serverName, c + "/os-security-groups", c + "/berth-sets", c + "/berth-sets?all_tenants=1", c + "/os-keypairs", c + "/os-server-groups", c + "/os-server-groups?all_projects=1",
		g + "/v2/images", g + "/v2/images?visibility=all", g + "/v2/images?visibility=shared&member_status=all", g + "/v2/images?visibility=private",
		g + "/v2/images?owner=" + projectID(t, s, token(t, s, devstack.UserDemo)),
		n + "/v2.0/networks", n + "/v2.0/subnets", n + "/v2.0/ports", n + "/v2.0/security-groups", n + "/v2.0/security-group-rules",
		n + "/v2.0/ports?device_id=" + d.server, n + "/v2.0/networks?name=" + d.networkName,
		n + "/v2.0/networks?tenant_id=" + projectID(t, s, token(t, s, devstack.UserDemo)),
	} {
		r := api(t, http.MethodGet, u, alt, nil)
		if r.code != http.StatusOK && r.code != http.StatusForbidden {
			t.Errorf("alt: GET %s = %s, want 200 (or 403 for all_tenants)", u, r)
			continue
		}
		for _, sec := range secrets {
			if bytes.Contains(r.body, []byte(sec)) {
				t.Errorf("alt: GET %s shows demo's %q: %s", u, sec, r)
			}
		}
	}
	// Still there for demo: nothing above changed it.
	if sv, ok := getServer(t, s, token(t, s, devstack.UserDemo), d.server); !ok || sv.Status != "ACTIVE" || sv.Name != d.serverName {
		t.Errorf("demo's server after alt's attempts: %+v (exists %v), want ACTIVE %s", sv, ok, d.serverName)
	}
	if sv, ok := getServer(t, s, token(t, s, devstack.UserDemo), d.set); !ok || sv.Status != "ACTIVE" {
		t.Errorf("demo's set after alt's attempts: %+v (exists %v), want ACTIVE", sv, ok)
	}
}

// TestRolePolicy: a reader of demo may read but not create, change or
// delete (A4); a member may not call the admin APIs, force a host, bind a
// port to a host or share a network, and X-Roles: admin does not make it
// an admin (A2).
func TestRolePolicy(t *testing.T) {
	s := stack(t)
	d := makeDemoResources(t, s)
	reader := token(t, s, devstack.UserDemoReader)
	demo := token(t, s, devstack.UserDemo)
	c, n, g := s.ComputeURL(), s.NetworkURL(), s.ImageURL()
	img := demoImageID(t, s)
	srv := c + "/servers/" + d.server
	forbidden := []int{http.StatusForbidden}

	// The reader sees demo's things...
	for _, u := range []string{srv, c + "/servers", n + "/v2.0/networks/" + d.network, g + "/v2/images/" + d.image, c + "/os-server-groups/" + d.group} {
		if r := api(t, http.MethodGet, u, reader, nil); r.code != http.StatusOK {
			t.Errorf("reader: GET %s = %s, want 200", u, r)
		}
	}
	// ...and changes none of them.
	var probes []probe
	add := func(method, url string, body any, want ...int) {
		if len(want) == 0 {
			want = forbidden
		}
		probes = append(probes, probe{method: method, url: url, body: body, want: want})
	}
	add(http.MethodPost, c+"/servers", map[string]any{"server": map[string]any{"name": "r", "imageRef": img, "flavorRef": "1"}})
	add(http.MethodDelete, srv, nil)
	add(http.MethodPut, srv, map[string]any{"server": map[string]any{"name": "r"}})
	add(http.MethodPost, srv+"/action", map[string]any{"os-stop": nil})
	add(http.MethodPost, srv+"/action", map[string]any{"reboot": map[string]any{"type": "SOFT"}})
	add(http.MethodPut, srv+"/metadata", map[string]any{"metadata": map[string]any{"a": "b"}})
	add(http.MethodPost, c+"/os-keypairs", map[string]any{"keypair": map[string]any{"name": "r"}})
	add(http.MethodPost, c+"/os-server-groups", map[string]any{"server_group": map[string]any{"name": "r", "policies": []string{"affinity"}}})
	add(http.MethodDelete, c+"/os-server-groups/"+d.group, nil)
	add(http.MethodPost, n+"/v2.0/networks", map[string]any{"network": map[string]any{"name": "r"}})
	add(http.MethodDelete, n+"/v2.0/networks/"+d.network, nil)
	add(http.MethodPut, n+"/v2.0/networks/"+d.network, map[string]any{"network": map[string]any{"name": "r"}})
	add(http.MethodPost, n+"/v2.0/ports", map[string]any{"port": map[string]any{"network_id": d.network}})
	add(http.MethodDelete, n+"/v2.0/ports/"+d.port, nil)
	add(http.MethodPost, n+"/v2.0/security-groups", map[string]any{"security_group": map[string]any{"name": "r"}})
	add(http.MethodDelete, n+"/v2.0/security-group-rules/"+d.rule, nil)
	add(http.MethodPost, g+"/v2/images", map[string]any{"name": "r", "container_format": "docker", "disk_format": "raw"})
	add(http.MethodDelete, g+"/v2/images/"+d.image, nil)
	add(http.MethodPut, g+"/v2/images/"+d.image+"/tags/r", nil)
	add(http.MethodPost, c+"/berth-sets", map[string]any{"set": map[string]any{"name": "r", "flavorRef": "1", "containers": []any{map[string]any{"name": "app", "image": img}}}})
	add(http.MethodDelete, c+"/berth-sets/"+d.set, nil)
	runProbes(t, "reader", reader, probes)

	// The member may not act as an admin.
	probes = nil
	add(http.MethodGet, c+"/os-hypervisors", nil)
	add(http.MethodGet, c+"/os-hypervisors/detail", nil)
	add(http.MethodGet, c+"/os-hypervisors/statistics", nil)
	add(http.MethodGet, c+"/os-services", nil)
	add(http.MethodGet, c+"/berth-hosts", nil)
	add(http.MethodPut, c+"/os-quota-sets/"+projectID(t, s, demo), map[string]any{"quota_set": map[string]any{"instances": 1000}})
	add(http.MethodPut, c+"/os-services/disable", map[string]any{"host": s.HostName(), "binary": "nova-compute"})
	add(http.MethodPost, srv+"/action", map[string]any{"os-resetState": map[string]any{"state": "error"}})
	add(http.MethodPost, c+"/flavors", map[string]any{"flavor": map[string]any{"name": "mine", "ram": 64, "vcpus": 1, "disk": 1}})
	add(http.MethodDelete, c+"/flavors/1", nil)
	add(http.MethodPost, c+"/flavors/1/os-extra_specs", map[string]any{"extra_specs": map[string]any{"berth:net_raw": "true"}})
	// Forcing a host: nova:HOST is admin only (A4); Nova's `host` field
	// (2.74) is not in Berth's range, so it is an unknown field.
	add(http.MethodPost, c+"/servers", map[string]any{"server": map[string]any{"name": "f", "imageRef": img, "flavorRef": "1", "availability_zone": "nova:" + s.HostName()}})
	add(http.MethodPost, c+"/servers", map[string]any{"server": map[string]any{"name": "f", "imageRef": img, "flavorRef": "1", "host": s.HostName()}}, 400, 403)
	add(http.MethodPost, n+"/v2.0/ports", map[string]any{"port": map[string]any{"network_id": d.network, "binding:host_id": s.HostName()}})
	add(http.MethodPost, n+"/v2.0/networks", map[string]any{"network": map[string]any{"name": "shared-by-member", "shared": true}})
	add(http.MethodPost, g+"/v2/images/"+demoImageID(t, s)+"/actions/deactivate", nil)
	add(http.MethodDelete, g+"/v2/layers/sha256:"+strings.Repeat("a", 64), nil, 403, 404)
	add(http.MethodPost, g+"/v2/images", map[string]any{"name": "pub", "container_format": "docker", "disk_format": "raw", "visibility": "public"})
	runProbes(t, "member", demo, probes)
	// X-Roles: admin on top changes nothing.
	for i := range probes {
		probes[i].hdr = map[string]string{"X-Roles": "admin", "X-Is-Admin-Project": "True", "X-Service-Roles": "admin"}
	}
	runProbes(t, "member with X-Roles: admin", demo, probes)
	// And nothing the reader or member tried took effect.
	if sv, ok := getServer(t, s, demo, d.server); !ok || sv.Status != "ACTIVE" {
		t.Errorf("demo's server after the denied calls: %+v (exists %v), want ACTIVE", sv, ok)
	}
	if r := api(t, http.MethodGet, c+"/os-quota-sets/"+projectID(t, s, demo), demo, nil); !bytes.Contains(r.body, []byte(`"instances":10`)) && !bytes.Contains(r.body, []byte(`"instances": 10`)) {
		t.Logf("demo's quota now: %s", r)
	}
}

// TestAuthFailures: a missing or garbage token is 401 with the service's
// fault body and WWW-Authenticate on every service (A1).
func TestAuthFailures(t *testing.T) {
	s := stack(t)
	for _, u := range []struct {
		svc svc
		url string
	}{
		{compute, s.ComputeURL() + "/servers"}, {compute, s.ComputeURL() + "/flavors"},
		{network, s.NetworkURL() + "/v2.0/networks"}, {network, s.NetworkURL() + "/v2.0/ports"},
		{image, s.ImageURL() + "/v2/images"}, {image, s.ImageURL() + "/v2/schemas/image"},
	} {
		for _, tok := range []string{"", "garbage", "gAAAAABnotafernettoken" + strings.Repeat("A", 150), strings.Repeat("z", 8000)} {
			r := api(t, http.MethodGet, u.url, tok, nil)
			if r.code != http.StatusUnauthorized {
				t.Errorf("GET %s with token %.20q = %s, want 401", u.url, tok, r)
				continue
			}
			if r.hdr.Get("WWW-Authenticate") == "" {
				t.Errorf("GET %s with token %.20q: 401 without WWW-Authenticate", u.url, tok)
			}
			if why := faultProblem(u.svc, r); why != "" {
				t.Errorf("GET %s with token %.20q: %s: %s", u.url, tok, why, r)
			}
		}
	}
}

func faultProblem(v svc, r reply) string {
	switch v {
	case compute:
		return novaFaultProblem(r.code, r.body)
	case network:
		return neutronFaultProblem(r.code, r.body)
	}
	return glanceFaultProblem(r.code, r.body)
}

// TestRevokedToken: a token revoked in Keystone (DELETE /v3/auth/tokens)
// is refused by compute, network and image within the validation cache's
// TTL (30 s, region's and imagesvc's --token-cache-ttl default, which
// devstack keeps) plus a small margin (A5).
func TestRevokedToken(t *testing.T) {
	s := stack(t)
	t.Parallel()
	const ttl = 30 * time.Second
	const margin = 3 * time.Second
	victim := freshToken(t, s, devstack.UserDemo)
	urls := map[string]string{
		"compute": s.ComputeURL() + "/servers", "network": s.NetworkURL() + "/v2.0/networks", "image": s.ImageURL() + "/v2/images",
	}
	// Every service validates (and caches) the token first.
	for name, u := range urls {
		if r := api(t, http.MethodGet, u, victim, nil); r.code != http.StatusOK {
			t.Fatalf("%s: GET %s with a fresh token = %s", name, u, r)
		}
	}
	r := api(t, http.MethodDelete, s.KeystoneURL()+"/auth/tokens", token(t, s, devstack.UserAdmin), nil,
		map[string]string{"X-Subject-Token": victim})
	if r.code != http.StatusNoContent {
		t.Fatalf("keystone: revoke: %s", r)
	}
	revoked := time.Now()
	if r := api(t, http.MethodGet, s.KeystoneURL()+"/auth/tokens", token(t, s, devstack.UserAdmin), nil,
		map[string]string{"X-Subject-Token": victim}); r.code != http.StatusNotFound {
		t.Fatalf("keystone still validates the revoked token: %s", r)
	}
	refused := map[string]time.Duration{}
	for len(refused) < len(urls) && time.Since(revoked) < ttl+margin+5*time.Second {
		for name, u := range urls {
			if _, done := refused[name]; done {
				continue
			}
			r := api(t, http.MethodGet, u, victim, nil)
			switch r.code {
			case http.StatusOK:
			case http.StatusUnauthorized:
				refused[name] = time.Since(revoked)
			default:
				t.Errorf("%s: GET with a revoked token = %s, want 200 (cached) or 401", name, r)
				refused[name] = time.Since(revoked)
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	for name := range urls {
		d, ok := refused[name]
		switch {
		case !ok:
			t.Errorf("%s still accepts the token revoked %s ago (cache TTL %s)", name, time.Since(revoked).Round(time.Second), ttl)
		case d > ttl+margin:
			t.Errorf("%s refused the revoked token only after %s, want ≤ %s + %s", name, d.Round(time.Millisecond), ttl, margin)
		default:
			t.Logf("%s refuses the revoked token %s after revocation (TTL %s)", name, d.Round(time.Millisecond), ttl)
		}
	}
}

// TestKeystoneDown: with Keystone stopped, a token the services have not
// cached is 503 in each service's fault shape (A1), a cached one keeps
// working (for at most the TTL), and once Keystone is back the new token
// is accepted.
func TestKeystoneDown(t *testing.T) {
	s := stack(t)
	cached := token(t, s, devstack.UserDemo)
	uncached := freshToken(t, s, devstack.UserDemo)
	urls := []struct {
		svc svc
		url string
	}{{compute, s.ComputeURL() + "/servers"}, {network, s.NetworkURL() + "/v2.0/networks"}, {image, s.ImageURL() + "/v2/images"}}
	for _, u := range urls {
		expect(t, http.MethodGet, u.url, cached, nil, 200)
	}
	if err := s.KillService(devstack.ServiceKeystone, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	t.Cleanup(func() { ensureRunning(t, s) })
	for _, u := range urls {
		r := api(t, http.MethodGet, u.url, uncached, nil)
		if r.code != http.StatusServiceUnavailable {
			t.Errorf("Keystone down: GET %s with an uncached token = %s, want 503", u.url, r)
		} else if why := faultProblem(u.svc, r); why != "" {
			t.Errorf("Keystone down: GET %s: %s: %s", u.url, why, r)
		}
		if r := api(t, http.MethodGet, u.url, cached, nil); r.code != http.StatusOK && time.Since(down) < 25*time.Second {
			t.Errorf("Keystone down: GET %s with a cached token = %s, want 200 until the cache TTL", u.url, r)
		}
	}
	took := restart(t, s, devstack.ServiceKeystone)
	t.Logf("keystone back in %s", took.Round(time.Millisecond))
	for _, u := range urls {
		expect(t, http.MethodGet, u.url, uncached, nil, 200)
	}
}

// TestNoPrivilegeFromAPI: nothing a tenant can put in a set or server
// request makes a privileged container, mounts a host path, joins a host
// namespace or adds capabilities (A9): such fields are refused, and the
// containers of a set built from every field the API has are
// unprivileged, in their own namespaces, with no-new-privileges and no
// host bind mounts.
func TestNoPrivilegeFromAPI(t *testing.T) {
	s := stack(t)
	demo := token(t, s, devstack.UserDemo)
	img := demoImageID(t, s)
	app := func(extra map[string]any) map[string]any {
		c := map[string]any{"name": "app", "image": img, "role": "app"}
		for k, v := range extra {
			c[k] = v
		}
		return map[string]any{"set": map[string]any{"name": "priv", "flavorRef": "1", "containers": []any{c}}}
	}
	for name, body := range map[string]any{
		"privileged":          app(map[string]any{"privileged": true}),
		"cap_add":             app(map[string]any{"cap_add": []string{"SYS_ADMIN"}}),
		"security_opt":        app(map[string]any{"security_opt": []string{"seccomp=unconfined"}}),
		"network_mode host":   app(map[string]any{"network_mode": "host"}),
		"pid host":            app(map[string]any{"pid": "host"}),
		"binds":               app(map[string]any{"binds": []string{"/:/host"}}),
		"devices":             app(map[string]any{"devices": []string{"/dev/kmsg"}}),
		"user root":           app(map[string]any{"user": "0:0"}),
		"volume on /proc":     app(map[string]any{"volumes": []any{map[string]any{"name": "v", "path": "/proc/sys"}}}),
		"volume on /":         app(map[string]any{"volumes": []any{map[string]any{"name": "v", "path": "/"}}}),
		"volume named a path": app(map[string]any{"volumes": []any{map[string]any{"name": "/etc", "path": "/x"}}}),
		"volume name ..":      app(map[string]any{"volumes": []any{map[string]any{"name": "../../etc", "path": "/x"}}}),
		"container infra":     map[string]any{"set": map[string]any{"name": "p", "flavorRef": "1", "containers": []any{map[string]any{"name": "infra", "image": img}}}},
		"server privileged":   map[string]any{"server": map[string]any{"name": "p", "imageRef": img, "flavorRef": "1", "privileged": true}},
		"server host ns":      map[string]any{"server": map[string]any{"name": "p", "imageRef": img, "flavorRef": "1", "network_mode": "host"}},
	} {
		path := "/berth-sets"
		if _, ok := body.(map[string]any)["server"]; ok {
			path = "/servers"
		}
		r := api(t, http.MethodPost, s.ComputeURL()+path, demo, body)
		if r.code != http.StatusBadRequest && r.code != http.StatusForbidden {
			t.Errorf("%s: POST %s = %s, want 400 or 403", name, path, r)
			if r.code == http.StatusAccepted {
				var v struct{ Set, Server struct{ ID string } }
				_ = json.Unmarshal(r.body, &v)
				for _, id := range []string{v.Set.ID, v.Server.ID} {
					if id != "" {
						t.Cleanup(func() { deleteAll(t, s, demo, []string{id}) })
					}
				}
			}
		}
	}

	// A set using every field there is.
	r := expect(t, http.MethodPost, s.ComputeURL()+"/berth-sets", demo, map[string]any{"set": map[string]any{
		"name": "full", "flavorRef": "1", "metadata": map[string]string{"a": "b"},
		"containers": []any{
			map[string]any{"name": "app", "image": img, "role": "app", "env": map[string]string{"A": "1"},
				"volumes": []any{map[string]any{"name": "data", "path": "/data"}}, "limits": map[string]any{"vcpus": 0.5, "memory_mb": 128},
				"restart": "always"},
			map[string]any{"name": "side", "image": img, "role": "sidecar", "command": sidecarCmd,
				"volumes": []any{map[string]any{"name": "data", "path": "/data", "read_only": true}}},
		}}}, 202)
	id := decode[struct{ Set struct{ ID string } }](t, r).Set.ID
	t.Cleanup(func() { deleteAll(t, s, demo, []string{id}) })
	waitServer(t, s, demo, id, 2*time.Minute, "ACTIVE", isStatus("ACTIVE"))
	ctx := context.Background()
	cs, err := s.Docker().ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", devstack.LabelSet+"="+id), filters.Arg("label", devstack.LabelHost+"="+s.HostName()))})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) < 3 {
		t.Fatalf("set %s has %d containers, want infra, app and side", id, len(cs))
	}
	for _, c := range cs {
		ins, err := s.Docker().ContainerInspect(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		hc, role := ins.HostConfig, c.Labels[devstack.LabelRole]
		if hc.Privileged {
			t.Errorf("%s container is privileged", role)
		}
		for _, ns := range []struct{ what, mode string }{{"network", string(hc.NetworkMode)}, {"pid", string(hc.PidMode)},
			{"ipc", string(hc.IpcMode)}, {"uts", string(hc.UTSMode)}, {"userns", string(hc.UsernsMode)}, {"cgroupns", string(hc.CgroupnsMode)}} {
			if ns.mode == "host" {
				t.Errorf("%s container shares the host's %s namespace", role, ns.what)
			}
		}
		for _, capability := range hc.CapAdd {
			switch strings.ToUpper(strings.TrimPrefix(strings.ToUpper(capability), "CAP_")) {
			case "SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "SYS_MODULE", "ALL", "DAC_READ_SEARCH", "SYS_RAWIO", "BPF", "PERFMON":
				t.Errorf("%s container has capability %s", role, capability)
			}
		}
		if !slices.ContainsFunc(hc.SecurityOpt, func(o string) bool { return strings.HasPrefix(o, "no-new-privileges") }) {
			t.Errorf("%s container lacks no-new-privileges: %v", role, hc.SecurityOpt)
		}
		if len(hc.Devices) > 0 {
			t.Errorf("%s container has host devices %v", role, hc.Devices)
		}
		for _, m := range ins.Mounts {
			if m.Type == "bind" && !m.RW {
				continue // read-only binds of Berth's own files (the pause binary)
			}
			if m.Type == "bind" {
				t.Errorf("%s container has a writable host bind mount %s → %s", role, m.Source, m.Destination)
			}
		}
	}
}

// sidecarCmd runs until TERM (busybox sleep as PID 1 would ignore it and
// make every delete wait out the stop grace).
var sidecarCmd = []string{"sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"}
