package network_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"berth/internal/keystone"
	"berth/internal/pgtest"
	"berth/region/network"
	"berth/region/store"
)

// FuzzNetworkBodies drives region's real network handler (real PostgreSQL
// via pgtest, a test double of Keystone's token API) with arbitrary bodies
// and content types on every endpoint that reads one, as any of four
// users. Every answer is below 500 and every error Neutron's fault
// {"NeutronError": {"type", "message", "detail"}} (A6, C1). `go test` runs
// the seeds; `make soak` runs it with -fuzz.
func FuzzNetworkBodies(f *testing.F) {
	seeds := []string{
		`{"network": {"name": "n", "admin_state_up": true, "mtu": 1400, "description": "d", "shared": false}}`,
		`{"network": {"name": "n2", "description": "x"}}`,
		`{"subnet": {"name": "s", "network_id": "{network}", "cidr": "10.66.0.0/24", "ip_version": 4, "gateway_ip": "10.66.0.1", "allocation_pools": [{"start": "10.66.0.10", "end": "10.66.0.20"}], "dns_nameservers": ["8.8.8.8"], "enable_dhcp": true, "host_routes": []}}`,
		`{"subnet": {"name": "s2", "gateway_ip": null, "allocation_pools": [{"start": "10.66.0.30", "end": "10.66.0.40"}]}}`,
		`{"port": {"name": "p", "network_id": "{network}", "fixed_ips": [{"subnet_id": "{subnet}", "ip_address": "10.65.0.50"}], "mac_address": "fa:16:3e:00:00:01", "security_groups": ["{sg}"], "port_security_enabled": true, "device_owner": "compute:nova", "binding:host_id": "h"}}`,
		`{"port": {"name": "p2", "security_groups": [], "port_security_enabled": false, "device_id": "x"}}`,
		`{"security_group": {"name": "g", "description": "d", "stateful": true}}`,
		`{"security_group_rule": {"security_group_id": "{sg}", "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 80, "port_range_max": 81, "remote_ip_prefix": "10.0.0.0/8"}}`,
	}
	for i, s := range seeds {
		for tok := range 4 {
			f.Add(uint8(i), []byte(s), "application/json", uint8(tok))
		}
	}
	for _, s := range []string{
		`{"network": {"mtu": -1}}`, `{"network": {"mtu": 1e400}}`,
		`{"subnet": {"network_id": "{network}", "cidr": "10.66.0.0/33"}}`, `{"subnet": {"network_id": "{network}", "cidr": "::/0", "ip_version": 6}}`,
		`{"subnet": {"network_id": "{network}", "cidr": "0.0.0.0/0"}}`, `{"subnet": {"network_id": "{network}", "cidr": "10.67.0.0/24", "allocation_pools": [{"start": "10.67.0.200", "end": "10.67.0.2"}]}}`,
		`{"port": {"network_id": "{network}", "fixed_ips": [{"ip_address": "999.1.1.1"}]}}`, `{"port": {"network_id": "{network}", "mac_address": "zz"}}`,
		`{"security_group_rule": {"security_group_id": "{sg}", "direction": "ingress", "protocol": "tcp", "port_range_min": 90, "port_range_max": 80}}`,
		`{"security_group_rule": {"security_group_id": "{sg}", "direction": "ingress", "protocol": "icmp", "port_range_min": 300}}`,
		`{"security_group_rule": {"security_group_id": "{sg}", "direction": "ingress", "remote_ip_prefix": "10.0.0.0/99"}}`,
		`{}`, `[]`, `null`, ``, `{"network": null}`, `{"network": {}, "subnet": {}}`,
	} {
		route := uint8(0)
		switch {
		case strings.HasPrefix(s, `{"subnet"`):
			route = 2
		case strings.HasPrefix(s, `{"port"`):
			route = 4
		case strings.HasPrefix(s, `{"security_group_rule"`):
			route = 7
		}
		f.Add(route, []byte(s), "application/json", uint8(0))
	}
	f.Add(uint8(0), []byte(seeds[0]), "text/plain", uint8(0))

	e := newNetFuzzEnv(f)
	f.Fuzz(func(t *testing.T, route uint8, body []byte, ct string, tok uint8) {
		rt := netRoutes[int(route)%len(netRoutes)]
		path := e.fill(rt.path)
		body = []byte(e.fill(string(body)))
		who := []string{"nf-demo", "nf-alt", "nf-reader", "nf-admin"}[int(tok)%4]
		rec := e.do(rt.method, path, who, body, ct)
		what := fmt.Sprintf("%s %s as %s: %q (ct %q)", rt.method, rt.path, who, body, ct)
		if rec.Code >= 500 {
			t.Fatalf("%s: %d %s", what, rec.Code, rec.Body)
		}
		if rec.Code >= 400 {
			var fault struct {
				E *struct {
					Type    *string `json:"type"`
					Message *string `json:"message"`
					Detail  *string `json:"detail"`
				} `json:"NeutronError"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &fault); err != nil || fault.E == nil || fault.E.Type == nil || fault.E.Message == nil || fault.E.Detail == nil {
				t.Fatalf("%s: %d with a body that is not a Neutron fault: %s", what, rec.Code, rec.Body)
			}
		}
	})
}

var netRoutes = []struct{ method, path string }{
	{http.MethodPost, "/v2.0/networks"},
	{http.MethodPut, "/v2.0/networks/{network}"},
	{http.MethodPost, "/v2.0/subnets"},
	{http.MethodPut, "/v2.0/subnets/{subnet}"},
	{http.MethodPost, "/v2.0/ports"},
	{http.MethodPut, "/v2.0/ports/{port}"},
	{http.MethodPost, "/v2.0/security-groups"},
	{http.MethodPost, "/v2.0/security-group-rules"},
}

type netFuzzEnv struct {
	h    http.Handler
	vals map[string]string
}

func (e *netFuzzEnv) fill(s string) string {
	for k, v := range e.vals {
		s = strings.ReplaceAll(s, "{"+k+"}", v)
	}
	return s
}

func (e *netFuzzEnv) do(method, path, token string, body []byte, ct string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, path, bytes.NewReader(body))
	r.Header.Set("X-Auth-Token", token)
	if ct = strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return -1
		}
		return c
	}, ct); ct != "" {
		r.Header.Set("Content-Type", ct)
	}
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	return w
}

func newNetFuzzEnv(tb testing.TB) *netFuzzEnv {
	tb.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, pgtest.DSN(tb))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	if _, err := st.EnsureDefaultNetwork(ctx, "private", "10.77.0.0/24"); err != nil {
		tb.Fatal(err)
	}
	tokens := map[string][2]string{
		"nf-demo": {"demo-project", "member"}, "nf-alt": {"alt-project", "member"},
		"nf-reader": {"demo-project", "reader"}, "nf-admin": {"admin-project", "admin"},
	}
	ks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	tb.Cleanup(ks.Close)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e := &netFuzzEnv{h: network.New(st, keystone.NewValidator(ks.URL+"/v3", time.Hour, nil), log), vals: map[string]string{}}
	mk := func(path, key, body string) string {
		rec := e.do(http.MethodPost, path, "nf-demo", []byte(e.fill(body)), "application/json")
		if rec.Code != http.StatusCreated {
			tb.Fatalf("POST %s: %d %s", path, rec.Code, rec.Body)
		}
		var v map[string]struct{ ID string }
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			tb.Fatal(err)
		}
		return v[key].ID
	}
	e.vals["network"] = mk("/v2.0/networks", "network", `{"network": {"name": "fz"}}`)
	e.vals["subnet"] = mk("/v2.0/subnets", "subnet", `{"subnet": {"network_id": "{network}", "cidr": "10.65.0.0/24", "ip_version": 4}}`)
	e.vals["sg"] = mk("/v2.0/security-groups", "security_group", `{"security_group": {"name": "fz"}}`)
	e.vals["port"] = mk("/v2.0/ports", "port", `{"port": {"network_id": "{network}"}}`)
	return e
}
