package compute_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"berth/internal/apierr"
	"berth/region/store"
	"berth/schema"
)

// raw makes one compute request at a microversion and decodes the body.
func (e *env) raw(t *testing.T, method, path, version, token string, body any) (int, map[string]any) {
	t.Helper()
	code, b := e.do(t, caller{token: token, mv: version}, method, path, body, nil)
	out := map[string]any{}
	_ = json.Unmarshal(b, &out)
	return code, out
}

// TestMicroversionBehaviour checks what each microversion from 2.16 on
// changes, on both sides of the version that changes it.
func TestMicroversionBehaviour(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.registerHost(t, "h1", 8192)
	srv, err := servers.Create(ctx, e.client("demo-token"), servers.CreateOpts{Name: "mv", ImageRef: demoImage, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	e.converge(t, "h1", schema.PowerRunning, nil)
	sp := "/servers/" + srv.ID

	// A port a server holds keeps its addresses (the set is plumbed with
	// them): the network API's re-addressing is for free ports only.
	held, err := e.store.FindServer(ctx, store.Scope{AllProjects: true}, srv.ID)
	if err != nil || len(held.Ports) != 1 {
		t.Fatalf("server ports: %v %v", held, err)
	}
	mac := "aa:bb:cc:00:00:01"
	if _, err := e.store.UpdatePort(ctx, store.Scope{AllProjects: true}, held.Ports[0].ID, store.PortChanges{MACAddress: &mac}); !apierr.Is(err, apierr.Conflict) {
		t.Errorf("re-address a bound port: %v, want a conflict", err)
	}

	// Fields of the server body.
	_, old := e.raw(t, "GET", sp, "2.15", "admin-token", nil)
	_, cur := e.raw(t, "GET", sp, "2.55", "admin-token", nil)
	o, c := old["server"].(map[string]any), cur["server"].(map[string]any)
	for _, k := range []string{"host_status", "description", "tags"} {
		if _, ok := o[k]; ok {
			t.Errorf("2.15 server has %q", k)
		}
		if _, ok := c[k]; !ok {
			t.Errorf("2.55 server lacks %q: %v", k, c)
		}
	}
	if c["host_status"] != "UP" || c["description"] != nil {
		t.Errorf("2.55 host_status=%v description=%v, want UP and null", c["host_status"], c["description"])
	}
	if f, _ := c["flavor"].(map[string]any); f["original_name"] != "m1.tiny" || f["ram"] != 512.0 || f["id"] != nil {
		t.Errorf("2.55 flavor = %v, want the embedded m1.tiny", c["flavor"])
	}
	if f, _ := o["flavor"].(map[string]any); f["id"] != "1" {
		t.Errorf("2.15 flavor = %v, want a reference to 1", o["flavor"])
	}
	_, demoView := e.raw(t, "GET", sp, "2.55", "demo-token", nil)
	if _, ok := demoView["server"].(map[string]any)["host_status"]; ok {
		t.Error("a member sees host_status")
	}

	tagPath := sp + "/tags/blue"
	cases := []struct {
		name                 string
		method, path, mv     string
		body                 any
		want                 int
		wantKey, wantMissing string
	}{
		{"tags before 2.26", "PUT", tagPath, "2.25", nil, 404, "", ""},
		{"add a tag", "PUT", tagPath, "2.26", nil, 201, "", ""},
		{"add it again", "PUT", tagPath, "2.26", nil, 204, "", ""},
		{"bad tag", "PUT", sp + "/tags/a,b", "2.26", nil, 400, "", ""},
		{"check a tag", "GET", tagPath, "2.26", nil, 204, "", ""},
		{"check a missing tag", "GET", sp + "/tags/red", "2.26", nil, 404, "", ""},
		{"unknown status, 2.37", "GET", "/servers?status=NOPE", "2.37", nil, 200, "servers", ""},
		{"unknown status, 2.38", "GET", "/servers?status=NOPE", "2.38", nil, 400, "badRequest", ""},
		{"proxy before 2.36", "GET", "/os-security-groups", "2.35", nil, 200, "security_groups", ""},
		{"proxy from 2.36", "GET", "/os-security-groups", "2.36", nil, 404, "itemNotFound", ""},
		{"networks required from 2.37", "POST", "/servers", "2.37",
			map[string]any{"server": map[string]any{"name": "n", "imageRef": demoImage, "flavorRef": "1"}}, 400, "badRequest", ""},
		{"no 'none' before 2.37", "POST", "/servers", "2.36",
			map[string]any{"server": map[string]any{"name": "n", "imageRef": demoImage, "flavorRef": "1", "networks": "none"}}, 400, "badRequest", ""},
		{"tags on create before 2.52", "POST", "/servers", "2.51",
			map[string]any{"server": map[string]any{"name": "n", "imageRef": demoImage, "flavorRef": "1", "networks": "none", "tags": []string{"x"}}}, 400, "badRequest", ""},
		{"crash dump before 2.17", "POST", sp + "/action", "2.16", map[string]any{"trigger_crash_dump": nil}, 400, "badRequest", ""},
		{"crash dump from 2.17", "POST", sp + "/action", "2.17", map[string]any{"trigger_crash_dump": nil}, 400, "badRequest", ""},
		{"floating IP action from 2.44", "POST", sp + "/action", "2.44", map[string]any{"addFloatingIp": map[string]any{"address": "10.0.0.1"}}, 404, "itemNotFound", ""},
		{"flavor update before 2.55", "PUT", "/flavors/1", "2.54", map[string]any{"flavor": map[string]any{"description": "d"}}, 405, "", ""},
		{"flavor update from 2.55", "PUT", "/flavors/1", "2.55", map[string]any{"flavor": map[string]any{"description": "d"}}, 200, "flavor", ""},
		{"more than the max", "GET", "/servers", "2.67", nil, 406, "notAcceptable", ""},
		{"live migration is refused with its reason", "POST", sp + "/action", "2.1",
			map[string]any{"os-migrateLive": map[string]any{"host": nil, "block_migration": false, "disk_over_commit": false}}, 501, "notImplemented", ""},
		{"personality from 2.57", "POST", "/servers", "2.57",
			map[string]any{"server": map[string]any{"name": "n", "imageRef": demoImage, "flavorRef": "1", "networks": "none",
				"personality": []any{map[string]any{"path": "/a", "contents": ""}}}}, 400, "badRequest", ""},
		{"trusted certificates", "POST", "/servers", "2.63",
			map[string]any{"server": map[string]any{"name": "n", "imageRef": demoImage, "flavorRef": "1", "networks": "none",
				"trusted_image_certificates": []string{"x"}}}, 400, "badRequest", ""},
		{"changes-before before changes-since", "GET", "/servers?changes-since=2030-01-01T00:00:00Z&changes-before=2029-01-01T00:00:00Z", "2.66", nil, 400, "badRequest", ""},
		{"group with policies at 2.64", "POST", "/os-server-groups", "2.64",
			map[string]any{"server_group": map[string]any{"name": "g", "policies": []string{"affinity"}}}, 400, "badRequest", ""},
		{"rules on affinity", "POST", "/os-server-groups", "2.64",
			map[string]any{"server_group": map[string]any{"name": "g", "policy": "affinity", "rules": map[string]any{"max_server_per_host": 2}}}, 400, "badRequest", ""},
		{"group with policy and rules", "POST", "/os-server-groups", "2.64",
			map[string]any{"server_group": map[string]any{"name": "g", "policy": "anti-affinity", "rules": map[string]any{"max_server_per_host": 2}}}, 200, "server_group", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			token := "demo-token"
			if tc.path == "/flavors/1" {
				token = "admin-token"
			}
			code, body := e.raw(t, tc.method, tc.path, tc.mv, token, tc.body)
			if code != tc.want {
				t.Fatalf("%s %s at %s: %d %v, want %d", tc.method, tc.path, tc.mv, code, body, tc.want)
			}
			if _, ok := body[tc.wantKey]; tc.wantKey != "" && !ok {
				t.Errorf("body %v lacks %q", body, tc.wantKey)
			}
		})
	}

	// Tag filters and the tags in the body.
	_, list := e.raw(t, "GET", "/servers?tags=blue", "2.26", "demo-token", nil)
	_, none := e.raw(t, "GET", "/servers?not-tags-any=blue,green", "2.26", "demo-token", nil)
	if n, m := len(list["servers"].([]any)), len(none["servers"].([]any)); n != 1 || m != 0 {
		t.Errorf("tags=blue lists %d, not-tags-any=blue,green lists %d; want 1 and 0", n, m)
	}
	_, tags := e.raw(t, "PUT", sp+"/tags", "2.26", "demo-token", map[string]any{"tags": []string{"a", "b", "a"}})
	if got, _ := json.Marshal(tags["tags"]); string(got) != `["a","b"]` {
		t.Errorf("replaced tags = %s, want [a b]", got)
	}
	// Quota sets: PUT answers without "id"; DELETE goes back to defaults.
	code, put := e.raw(t, "PUT", "/os-quota-sets/demo-project", "2.1", "admin-token", map[string]any{"quota_set": map[string]any{"instances": 3}})
	if qs, _ := put["quota_set"].(map[string]any); code != 200 || qs["instances"] != 3.0 || qs["id"] != nil {
		t.Errorf("quota PUT = %d %v, want instances 3 and no id", code, put)
	}
	if code, _ := e.raw(t, "DELETE", "/os-quota-sets/demo-project", "2.1", "demo-token", nil); code != 403 {
		t.Errorf("member resets quotas: %d, want 403", code)
	}
	if code, _ := e.raw(t, "DELETE", "/os-quota-sets/demo-project", "2.1", "admin-token", nil); code != 202 {
		t.Errorf("quota DELETE: %d, want 202", code)
	}
	if _, got := e.raw(t, "GET", "/os-quota-sets/demo-project", "2.1", "admin-token", nil); got["quota_set"].(map[string]any)["instances"] != 10.0 {
		t.Errorf("quotas after DELETE = %v, want the default 10 instances", got)
	}
	// Limits and flavor descriptions.
	_, lim := e.raw(t, "GET", "/limits", "2.39", "demo-token", nil)
	abs := lim["limits"].(map[string]any)["absolute"].(map[string]any)
	if _, ok := abs["maxImageMeta"]; ok {
		t.Errorf("2.39 limits still have maxImageMeta: %v", abs)
	}
	_, specs := e.raw(t, "GET", "/flavors/1", "2.61", "demo-token", nil)
	if _, ok := specs["flavor"].(map[string]any)["extra_specs"]; !ok {
		t.Errorf("2.61 flavor lacks extra_specs: %v", specs)
	}
	// Instance actions: paging (2.58), updated_at, event hostId (2.62),
	// changes-before (2.66).
	_, page := e.raw(t, "GET", sp+"/os-instance-actions?limit=1", "2.66", "demo-token", nil)
	acts, _ := page["instanceActions"].([]any)
	if len(acts) != 1 || page["links"] == nil || acts[0].(map[string]any)["updated_at"] == nil {
		t.Errorf("2.66 actions?limit=1 = %v, want one action with updated_at and a next link", page)
	}
	_, none2 := e.raw(t, "GET", sp+"/os-instance-actions?changes-before=2000-01-01T00:00:00Z", "2.66", "demo-token", nil)
	if acts, _ := none2["instanceActions"].([]any); len(acts) != 0 {
		t.Errorf("actions changed before 2000 = %v, want none", acts)
	}
	req := acts[0].(map[string]any)["request_id"].(string)
	_, one := e.raw(t, "GET", sp+"/os-instance-actions/"+req, "2.62", "admin-token", nil)
	evs, _ := one["instanceAction"].(map[string]any)["events"].([]any)
	if len(evs) == 0 || evs[0].(map[string]any)["hostId"] == nil || evs[0].(map[string]any)["host"] == nil {
		t.Errorf("2.62 action events = %v, want host and hostId", evs)
	}
	_, fl := e.raw(t, "GET", "/flavors/1", "2.55", "demo-token", nil)
	if d := fl["flavor"].(map[string]any)["description"]; d != "d" {
		t.Errorf("flavor description = %v, want d", d)
	}
}
