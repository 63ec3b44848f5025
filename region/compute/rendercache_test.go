package compute_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"berth/region/store"
	"berth/schema"
)

// Region keeps the JSON of the servers it renders (rendercache.go). These
// tests read a server through every path that may serve a kept body (GET
// /servers/{id} and GET /servers/detail) and with several callers, so
// that each keeps a body; change one thing; and read again. Each change
// is checked to be invisible before and visible after, so a cache that
// missed the change would fail the test.

// caller is one way of reading a server.
type caller struct {
	name, token, mv string
	// query is added to the detail list (an admin lists all projects).
	query string
}

var (
	member     = caller{"member 2.1", "demo-token", "", ""}
	memberNew  = caller{"member 2.66", "demo-token", "2.66", ""}
	adminNew   = caller{"admin 2.66", "admin-token", "2.66", "&all_tenants=1"}
	allCallers = []caller{member, memberNew, adminNew}
)

// do sends a request as c with header extras and returns status and body.
func (e *env) do(t testing.TB, c caller, method, path string, body any, hdr map[string]string) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.url+"/v2.1"+path, rd)
	req.Header.Set("X-Auth-Token", c.token)
	req.Header.Set("Content-Type", "application/json")
	if c.mv != "" {
		req.Header.Set("OpenStack-API-Version", "compute "+c.mv)
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// bodies returns server id as c reads it: from GET /servers/{id} (nil
// on 404) and from GET /servers/detail (nil when not listed), raw.
func (e *env) bodies(t testing.TB, c caller, id string, hdr map[string]string) (show, listed json.RawMessage) {
	t.Helper()
	code, b := e.do(t, c, http.MethodGet, "/servers/"+id, nil, hdr)
	switch code {
	case http.StatusOK:
		var one struct{ Server json.RawMessage }
		if err := json.Unmarshal(b, &one); err != nil {
			t.Fatalf("show %s as %s: %v", id, c.name, err)
		}
		show = one.Server
	case http.StatusNotFound:
	default:
		t.Fatalf("show %s as %s: %d %s", id, c.name, code, b)
	}
	code, b = e.do(t, c, http.MethodGet, "/servers/detail?limit=1000"+c.query, nil, hdr)
	if code != http.StatusOK {
		t.Fatalf("list as %s: %d %s", c.name, code, b)
	}
	var page struct{ Servers []json.RawMessage }
	if err := json.Unmarshal(b, &page); err != nil {
		t.Fatalf("list as %s: %v", c.name, err)
	}
	for _, s := range page.Servers {
		var head struct{ ID string }
		_ = json.Unmarshal(s, &head)
		if head.ID == id {
			listed = s
		}
	}
	return show, listed
}

// serverView is a server body decoded loosely (nil: not found).
type serverView map[string]any

func decode(raw json.RawMessage) serverView {
	if raw == nil {
		return nil
	}
	var v serverView
	_ = json.Unmarshal(raw, &v)
	return v
}

// field follows a path of keys (and list indexes as numbers) in v.
func (v serverView) field(path ...any) any {
	var cur any = map[string]any(v)
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			cur = m[k]
		case int:
			l, ok := cur.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			cur = l[k]
		}
	}
	return cur
}

// groupNames is the body's security_groups as "a,b".
func (v serverView) groupNames() string {
	var names []string
	gs, _ := v.field("security_groups").([]any)
	for _, g := range gs {
		names = append(names, fmt.Sprint(g.(map[string]any)["name"]))
	}
	return strings.Join(names, ",")
}

// registerHost64 registers a host with room for many servers.
func (e *env) registerHost64(t testing.TB, name string) {
	t.Helper()
	body, _ := json.Marshal(schema.HostRegister{VCPUs: 64, MemoryMB: 1 << 20, DiskGB: 4000})
	req, _ := http.NewRequest(http.MethodPut, e.url+"/internal/v1/hosts/"+name, bytes.NewReader(body))
	req.Header.Set(schema.AgentTokenHeader, agentToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("register host %s: %d", name, resp.StatusCode)
	}
}

// TestServerBodyFollowsEveryChange: every change that shows in a server's
// body shows on the next GET, through show and list, for members and
// admins, whatever was read (and kept) before.
func TestServerBodyFollowsEveryChange(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.registerHost64(t, "h1")
	demo, admin := e.client("demo-token"), e.client("admin-token")
	sc := store.Scope{ProjectID: "demo-project"}
	if err := e.store.SetQuotas(ctx, "demo-project", map[string]int{"instances": 100, "cores": 200, "ram": 1 << 20}); err != nil {
		t.Fatal(err)
	}
	// A network with room for every server of the test (the default one
	// is a /29).
	lan, err := e.store.CreateNetwork(ctx, store.Network{ID: "1a200000-0000-4000-8000-000000000001", Name: "lan",
		ProjectID: "demo-project", AdminStateUp: true, MTU: 1450})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.CreateSubnet(ctx, sc, store.Subnet{ID: "1a200000-0000-4000-8000-000000000002", NetworkID: lan.ID,
		ProjectID: "demo-project", CIDR: "192.168.50.0/24", EnableDHCP: true}); err != nil {
		t.Fatal(err)
	}
	web, err := e.store.CreateSecurityGroup(ctx, store.SecurityGroup{ID: "5eb00000-0000-4000-8000-000000000001",
		ProjectID: "demo-project", Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	// boot makes a server of demo-project; active: reported running.
	boot := func(t *testing.T, name string, active bool) string {
		t.Helper()
		srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: name, ImageRef: demoImage, FlavorRef: "1",
			Networks: []servers.Network{{UUID: lan.ID}}}, nil).Extract()
		if err != nil {
			t.Fatal(err)
		}
		if active {
			e.converge(t, "h1", schema.PowerRunning, nil)
		}
		return srv.ID
	}
	action := func(t *testing.T, id string, body any) {
		t.Helper()
		if code, b := e.do(t, memberNew, http.MethodPost, "/servers/"+id+"/action", body, nil); code != http.StatusAccepted {
			t.Fatalf("action %v: %d %s", body, code, b)
		}
	}
	portOf := func(t *testing.T, id string) store.Port {
		t.Helper()
		srv, err := e.store.FindServer(ctx, sc, id)
		if err != nil || len(srv.Ports) == 0 {
			t.Fatalf("ports of %s: %v", id, err)
		}
		return srv.Ports[0]
	}
	str := func(v any) string { return fmt.Sprint(v) }

	for _, tc := range []struct {
		name    string
		active  bool     // the server is ACTIVE before the change (else BUILD)
		callers []caller // who reads it (all when nil)
		change  func(t *testing.T, id string)
		// shows reports whether v (as c reads it) shows the change.
		shows func(c caller, v serverView) bool
	}{
		{name: "task state (stop requested)", active: true,
			change: func(t *testing.T, id string) { action(t, id, map[string]any{"os-stop": nil}) },
			shows:  func(c caller, v serverView) bool { return str(v.field("OS-EXT-STS:task_state")) == "powering-off" }},
		{name: "status and power state (stop done)", active: true,
			change: func(t *testing.T, id string) {
				action(t, id, map[string]any{"os-stop": nil})
				e.converge(t, "h1", schema.PowerShutdown, nil)
			},
			shows: func(c caller, v serverView) bool {
				return v.field("status") == "SHUTOFF" && v.field("OS-EXT-STS:power_state") == 4.0
			}},
		{name: "build finished (vm state, progress, launched_at)", active: false,
			change: func(t *testing.T, id string) { e.converge(t, "h1", schema.PowerRunning, nil) },
			shows: func(c caller, v serverView) bool {
				return v.field("status") == "ACTIVE" && v.field("progress") == 100.0 && v.field("OS-SRV-USG:launched_at") != nil
			}},
		{name: "fault", active: false,
			change: func(t *testing.T, id string) {
				e.converge(t, "h1", schema.PowerNoState, func(d *schema.DesiredSet, o *schema.ObservedSet) {
					if d.ID == id {
						o.Error = "no space left on device"
					}
				})
			},
			shows: func(c caller, v serverView) bool {
				return v.field("status") == "ERROR" && v.field("fault", "message") == "no space left on device"
			}},
		{name: "name", active: true,
			change: func(t *testing.T, id string) {
				if _, err := servers.Update(ctx, demo, id, servers.UpdateOpts{Name: "renamed"}).Extract(); err != nil {
					t.Fatal(err)
				}
			},
			shows: func(c caller, v serverView) bool { return v.field("name") == "renamed" }},
		{name: "description", active: true, callers: []caller{memberNew, adminNew},
			change: func(t *testing.T, id string) {
				body := map[string]any{"server": map[string]any{"description": "the new one"}}
				if code, b := e.do(t, memberNew, http.MethodPut, "/servers/"+id, body, nil); code != http.StatusOK {
					t.Fatalf("update: %d %s", code, b)
				}
			},
			shows: func(c caller, v serverView) bool { return v.field("description") == "the new one" }},
		{name: "metadata", active: true,
			change: func(t *testing.T, id string) {
				body := map[string]any{"metadata": map[string]string{"tier": "db"}}
				if code, b := e.do(t, member, http.MethodPost, "/servers/"+id+"/metadata", body, nil); code != http.StatusOK {
					t.Fatalf("metadata: %d %s", code, b)
				}
			},
			shows: func(c caller, v serverView) bool { return v.field("metadata", "tier") == "db" }},
		{name: "tags", active: true, callers: []caller{memberNew, adminNew},
			change: func(t *testing.T, id string) {
				if code, b := e.do(t, memberNew, http.MethodPut, "/servers/"+id+"/tags/blue", nil, nil); code != http.StatusCreated {
					t.Fatalf("tag: %d %s", code, b)
				}
			},
			shows: func(c caller, v serverView) bool { return v.field("tags", 0) == "blue" }},
		{name: "locked", active: true, callers: []caller{memberNew, adminNew},
			change: func(t *testing.T, id string) { action(t, id, map[string]any{"lock": nil}) },
			shows:  func(c caller, v serverView) bool { return v.field("locked") == true }},
		{name: "flavor after resize", active: true,
			change: func(t *testing.T, id string) {
				if err := servers.Resize(ctx, demo, id, servers.ResizeOpts{FlavorRef: "2"}).ExtractErr(); err != nil {
					t.Fatal(err)
				}
				e.converge(t, "h1", schema.PowerRunning, nil)
				if err := servers.ConfirmResize(ctx, demo, id).ExtractErr(); err != nil {
					t.Fatal(err)
				}
			},
			shows: func(c caller, v serverView) bool {
				if c.mv == "" {
					return v.field("flavor", "id") == "2"
				}
				return v.field("flavor", "original_name") == "m1.small" && v.field("flavor", "ram") == 2048.0
			}},
		{name: "image after rebuild", active: true,
			change: func(t *testing.T, id string) {
				if _, err := servers.Rebuild(ctx, demo, id, servers.RebuildOpts{ImageRef: altImage}).Extract(); err != nil {
					t.Fatal(err)
				}
				e.converge(t, "h1", schema.PowerRunning, nil)
			},
			shows: func(c caller, v serverView) bool {
				return v.field("image", "id") == altImage && v.field("status") == "ACTIVE"
			}},
		{name: "security group added to the server", active: true,
			change: func(t *testing.T, id string) {
				action(t, id, map[string]any{"addSecurityGroup": map[string]string{"name": "web"}})
			},
			shows: func(c caller, v serverView) bool { return v.groupNames() == "default,web" }},
		{name: "port's security groups changed (Neutron)", active: true,
			change: func(t *testing.T, id string) {
				if _, err := e.store.UpdatePort(ctx, sc, portOf(t, id).ID, store.PortChanges{SetGroups: true, Groups: []string{web.ID}}); err != nil {
					t.Fatal(err)
				}
			},
			shows: func(c caller, v serverView) bool { return v.groupNames() == "web" }},
		{name: "security group renamed", active: true,
			change: func(t *testing.T, id string) {
				// The server joins web and is read (and kept) with it...
				action(t, id, map[string]any{"addSecurityGroup": map[string]string{"name": "web"}})
				for _, c := range allCallers {
					if show, _ := e.bodies(t, c, id, nil); !strings.Contains(decode(show).groupNames(), "web") {
						t.Fatalf("after joining web, as %s: %s", c.name, show)
					}
				}
				// ...then web is renamed; the server's row is not touched.
				name := "frontend"
				if _, err := e.store.UpdateSecurityGroup(ctx, sc, web.ID, &name, nil); err != nil {
					t.Fatal(err)
				}
			},
			shows: func(c caller, v serverView) bool { return v.groupNames() == "default,frontend" }},
		{name: "network renamed", active: true,
			change: func(t *testing.T, id string) {
				// (Its row is not touched either.)
				name := "lan-renamed"
				if _, err := e.store.UpdateNetwork(ctx, sc, lan.ID, store.NetworkChanges{Name: &name}); err != nil {
					t.Fatal(err)
				}
			},
			shows: func(c caller, v serverView) bool { return v.field("addresses", "lan-renamed", 0, "addr") != nil }},
		{name: "host after migration", active: true,
			change: func(t *testing.T, id string) {
				e.registerHost64(t, "h2")
				if err := servers.Migrate(ctx, admin, id).ExtractErr(); err != nil {
					t.Fatal(err)
				}
				e.converge(t, "h2", schema.PowerRunning, nil)
			},
			shows: func(c caller, v serverView) bool {
				if c.token == "admin-token" && v.field("OS-EXT-SRV-ATTR:host") != "h2" {
					return false
				}
				sum := sha256.Sum224([]byte("demo-project" + "h2"))
				return v.field("status") == "ACTIVE" && v.field("hostId") == hex.EncodeToString(sum[:])
			}},
		{name: "deleted", active: true,
			change: func(t *testing.T, id string) {
				if err := servers.Delete(ctx, demo, id).ExtractErr(); err != nil {
					t.Fatal(err)
				}
				for _, h := range []string{"h1", "h2"} {
					e.converge(t, h, schema.PowerShutdown, func(d *schema.DesiredSet, o *schema.ObservedSet) {
						o.Exists = d.State != schema.SetDeleted
					})
				}
			},
			shows: func(c caller, v serverView) bool { return v == nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := boot(t, "srv", tc.active)
			callers := tc.callers
			if callers == nil {
				callers = allCallers
			}
			before := map[string]serverView{}
			for _, c := range callers {
				show, listed := e.bodies(t, c, id, nil)
				for how, v := range map[string]serverView{"show": decode(show), "list": decode(listed)} {
					if v == nil || tc.shows(c, v) {
						t.Fatalf("before the change, %s as %s: %s; the test cannot tell", how, c.name, show)
					}
				}
				before[c.name] = decode(show)
			}
			tc.change(t, id)
			for _, c := range callers {
				show, listed := e.bodies(t, c, id, nil)
				for how, raw := range map[string]json.RawMessage{"show": show, "list": listed} {
					if v := decode(raw); !tc.shows(c, v) {
						t.Errorf("after the change, %s as %s:\n%s\nbefore it:\n%v", how, c.name, raw, before[c.name])
					}
				}
			}
		})
	}
}

// TestServerBodyPerCaller: a body kept for one caller is never served to
// another whose body differs: role (admin fields), microversion, the URL
// the request came in on (links), the host's status (admin, 2.16).
func TestServerBodyPerCaller(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.registerHost64(t, "h1")
	demo := e.client("demo-token")
	srv, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "one", ImageRef: demoImage, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	e.converge(t, "h1", schema.PowerRunning, nil)

	// Admin first, so its body is what is kept.
	aShow, aList := e.bodies(t, adminNew, srv.ID, nil)
	mShow, mList := e.bodies(t, member, srv.ID, nil)
	nShow, _ := e.bodies(t, memberNew, srv.ID, nil)
	for how, raw := range map[string]json.RawMessage{"admin show": aShow, "admin list": aList} {
		if v := decode(raw); v.field("OS-EXT-SRV-ATTR:host") != "h1" || v.field("host_status") != "UP" || v.field("locked") != false {
			t.Errorf("%s lacks admin or 2.66 fields: %s", how, raw)
		}
	}
	for how, raw := range map[string]json.RawMessage{"member show": mShow, "member list": mList} {
		v := decode(raw)
		for _, k := range []string{"OS-EXT-SRV-ATTR:host", "host_status", "locked", "tags", "description"} {
			if _, ok := v[k]; ok {
				t.Errorf("%s (2.1) shows %s: %s", how, k, raw)
			}
		}
	}
	if v := decode(nShow); v["locked"] != false || v["OS-EXT-SRV-ATTR:host"] != nil {
		t.Errorf("member 2.66 show: %s, want locked and no admin fields", nShow)
	}

	// Links follow the request's host and scheme.
	for _, hdr := range []map[string]string{{"Host": "api.example.test"}, {"Host": "api.example.test", "X-Forwarded-Proto": "https"}} {
		show, listed := e.bodies(t, member, srv.ID, hdr)
		want := "http://api.example.test/v2.1/servers/" + srv.ID
		if hdr["X-Forwarded-Proto"] != "" {
			want = "https" + strings.TrimPrefix(want, "http")
		}
		for how, raw := range map[string]json.RawMessage{"show": show, "list": listed} {
			if got := decode(raw).field("links", 0, "href"); got != want {
				t.Errorf("%s via %v: self link %v, want %s", how, hdr, got, want)
			}
		}
	}

	// host_status follows the host (within the host view's second).
	if _, err := e.store.SetHostService(ctx, "h1", ptr(true), nil, nil); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	show, listed := e.bodies(t, adminNew, srv.ID, nil)
	for how, raw := range map[string]json.RawMessage{"show": show, "list": listed} {
		if got := decode(raw).field("host_status"); got != "MAINTENANCE" {
			t.Errorf("%s after disabling the host: host_status %v, want MAINTENANCE", how, got)
		}
	}

	// A kept body is byte for byte the body rendered afresh, and show and
	// list agree.
	again, againListed := e.bodies(t, member, srv.ID, nil)
	if !bytes.Equal(again, mShow) || !bytes.Equal(againListed, mList) || !bytes.Equal(mShow, mList) {
		t.Errorf("bodies differ:\nshow first %s\nshow again %s\nlisted first %s\nlisted again %s", mShow, again, mList, againListed)
	}
}

func ptr[T any](v T) *T { return &v }
