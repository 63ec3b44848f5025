// Package e2e drives a whole Berth stack (PostgreSQL, Docker, OVS,
// Keystone, region, imagesvc, hostagent; see internal/devstack) through the
// real openstack CLI, the way a user would after `make run`.
//
// It needs root, the packages `make deps` installs and the binaries
// `make build` puts in bin/. Without them it skips, unless
// BERTH_REQUIRE_REAL=1, under which it fails. BERTH_E2E_KEEP=1 keeps the
// run directory (logs, database) for a look afterwards.
package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"berth/internal/devstack"
)

func TestServerLifecycle(t *testing.T) {
	s := startStack(t)
	o := &osc{stack: s}
	demo := devstack.CloudDemo
	subnet := netip.MustParsePrefix(s.CIDR())

	// Best effort: whatever a failed step leaves behind goes before the
	// stack does (Close purges the host's containers anyway).
	t.Cleanup(func() {
		if out, errOut, err := o.run(t, demo, "server", "delete", "--wait", "web1", "web2"); err != nil && !strings.Contains(errOut, "No server") {
			t.Logf("cleanup: server delete: %v %s %s", err, out, errOut)
		}
	})

	t.Run("image list shows the demo image", func(t *testing.T) {
		var images []struct{ Name, Status string }
		o.json(t, demo, &images, "image", "list")
		if !slices.ContainsFunc(images, func(i struct{ Name, Status string }) bool {
			return i.Name == devstack.DemoImageName && strings.EqualFold(i.Status, "active")
		}) {
			t.Fatalf("image list = %+v, want an active %q", images, devstack.DemoImageName)
		}
	})

	t.Run("flavor list shows the seeded flavors", func(t *testing.T) {
		var flavors []struct{ Name string }
		o.json(t, demo, &flavors, "flavor", "list")
		for _, want := range []string{"m1.tiny", "m1.small", "m1.medium", "m1.large"} {
			if !slices.ContainsFunc(flavors, func(f struct{ Name string }) bool { return f.Name == want }) {
				t.Errorf("flavor list = %+v, missing %s", flavors, want)
			}
		}
	})

	var web1, web2 server
	if !t.Run("server create --wait web1 becomes ACTIVE", func(t *testing.T) {
		o.must(t, demo, "server", "create", "--image", devstack.DemoImageName, "--flavor", "m1.tiny", "--wait", "web1", "-f", "value", "-c", "id")
		web1 = o.waitStatus(t, demo, "web1", "ACTIVE", time.Minute)
	}) {
		t.FailNow()
	}

	t.Run("server show web1", func(t *testing.T) {
		o.json(t, demo, &web1, "server", "show", "web1")
		if web1.Status != "ACTIVE" {
			t.Errorf("status = %q, want ACTIVE", web1.Status)
		}
		if ip := firstIP(web1); !ip.IsValid() || !subnet.Contains(ip) {
			t.Errorf("addresses = %v, want an address in %s", web1.Addresses, subnet)
		}
		if !strings.Contains(asString(web1.Flavor), "m1.tiny") {
			t.Errorf("flavor = %v, want m1.tiny", web1.Flavor)
		}
		if !strings.Contains(asString(web1.Image), devstack.DemoImageName) {
			t.Errorf("image = %v, want %s", web1.Image, devstack.DemoImageName)
		}
		if _, err := time.Parse(time.RFC3339, web1.Created); err != nil {
			t.Errorf("created = %q: %v", web1.Created, err)
		}
		if web1.HostID == "" {
			t.Error("hostId is empty")
		}
	})

	t.Run("hostagent kill -9 and restart leaves web1 alone", func(t *testing.T) {
		before := setContainers(t, web1.ID, "")
		if err := s.KillService(devstack.ServiceHostAgent, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := s.RestartService(ctx, devstack.ServiceHostAgent); err != nil {
			t.Fatal(err)
		}
		if after := setContainers(t, web1.ID, ""); !slices.Equal(sorted(before), sorted(after)) {
			t.Errorf("web1's containers were %v before the restart, %v after; want the same", before, after)
		}
		o.waitStatus(t, demo, "web1", "ACTIVE", 30*time.Second)
	})

	if !t.Run("web1 can reach web2", func(t *testing.T) {
		// Raw sockets (ping) only where the flavor asks for them (A9): an
		// admin makes such a flavor, web2 boots with it.
		o.must(t, devstack.CloudAdmin, "flavor", "create", "--ram", "512", "--vcpus", "1", "--disk", "1",
			"--property", "berth:net_raw=true", "m1.tiny.netraw")
		o.must(t, demo, "server", "create", "--image", devstack.DemoImageName, "--flavor", "m1.tiny.netraw", "--wait", "web2")
		web2 = o.waitStatus(t, demo, "web2", "ACTIVE", time.Minute)
		ip2 := firstIP(web2)
		if !subnet.Contains(ip2) || ip2 == firstIP(web1) {
			t.Fatalf("web2 addresses = %v (web1 %v), want a second address in %s", web2.Addresses, web1.Addresses, subnet)
		}
		apps := setContainers(t, web1.ID, "app")
		if len(apps) != 1 {
			t.Fatalf("web1 app containers = %v, want one", apps)
		}
		apps2 := setContainers(t, web2.ID, "app")
		if len(apps2) != 1 {
			t.Fatalf("web2 app containers = %v, want one", apps2)
		}
		if out, err := dockerCLI(t, "exec", apps2[0], "ping", "-c", "3", "-W", "2", firstIP(web1).String()); err != nil {
			t.Errorf("ping web1 from web2: %v\n%s", err, out)
		}
		if out, err := dockerCLI(t, "exec", apps[0], "ping", "-c", "1", "-W", "2", ip2.String()); err == nil {
			t.Errorf("ping from web1 (m1.tiny, no NET_RAW) succeeded: %s; want permission denied", out)
		}
		// TCP too: the userspace datapath mangles it when offloads stay on.
		// (Debian's busybox 1.35 wget segfaults on -T; hence timeout.)
		out, err := dockerCLI(t, "exec", apps[0], "timeout", "10", "wget", "-q", "-O", "-", "http://"+ip2.String()+"/")
		if err != nil || out != strings.TrimSpace(devstack.DemoPage) {
			t.Errorf("wget http://%s/ from web1 = %q, %v; want %q", ip2, out, err, devstack.DemoPage)
		}
	}) {
		t.FailNow()
	}

	t.Run("stop and start web1", func(t *testing.T) {
		o.must(t, demo, "server", "stop", "web1")
		o.waitStatus(t, demo, "web1", "SHUTOFF", time.Minute)
		o.must(t, demo, "server", "start", "web1")
		o.waitStatus(t, demo, "web1", "ACTIVE", time.Minute)
	})

	t.Run("another project cannot see web1", func(t *testing.T) {
		_, errOut, err := o.run(t, devstack.CloudAlt, "server", "show", web1.ID)
		if err == nil || !strings.Contains(errOut, "No server with a name or ID") {
			t.Errorf("alt: server show %s: err=%v stderr=%q; want failure with \"No server with a name or ID\"", web1.ID, err, errOut)
		}
		token, err := s.Token(context.Background(), devstack.UserAlt)
		if err != nil {
			t.Fatal(err)
		}
		if code, body := apiCall(t, http.MethodGet, s.ComputeURL()+"/servers/"+web1.ID, token, nil); code != http.StatusNotFound {
			t.Errorf("alt: GET /servers/%s = %d %s, want 404", web1.ID, code, body)
		}
	})

	t.Run("unknown flavor is a 400", func(t *testing.T) {
		if _, _, err := o.run(t, demo, "server", "create", "--image", devstack.DemoImageName, "--flavor", "m1.nope", "bad"); err == nil {
			t.Error("server create --flavor m1.nope succeeded")
		}
		token, err := s.Token(context.Background(), devstack.UserDemo)
		if err != nil {
			t.Fatal(err)
		}
		var img struct{ ID string }
		o.json(t, demo, &img, "image", "show", devstack.DemoImageName)
		code, body := apiCall(t, http.MethodPost, s.ComputeURL()+"/servers", token, map[string]any{
			"server": map[string]any{"name": "bad", "imageRef": img.ID, "flavorRef": "no-such-flavor"},
		})
		var fault map[string]struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if code != http.StatusBadRequest || json.Unmarshal(body, &fault) != nil || fault["badRequest"].Code != http.StatusBadRequest {
			t.Errorf("POST /servers with an unknown flavor = %d %s, want 400 badRequest", code, body)
		}
	})

	t.Run("no token is a 401", func(t *testing.T) {
		if code, body := apiCall(t, http.MethodGet, s.ComputeURL()+"/servers", "", nil); code != http.StatusUnauthorized {
			t.Errorf("GET /servers without a token = %d %s, want 401", code, body)
		}
	})

	t.Run("delete leaves nothing behind", func(t *testing.T) {
		o.must(t, demo, "server", "delete", "--wait", "web1", "web2")
		for _, srv := range []server{web1, web2} {
			if _, errOut, err := o.run(t, demo, "server", "show", srv.ID); err == nil || !strings.Contains(errOut, "No server") {
				t.Errorf("server show %s after delete: err=%v stderr=%q, want not found", srv.Name, err, errOut)
			}
			waitFor(t, 30*time.Second, "containers of "+srv.Name+" removed", func() bool {
				return len(setContainers(t, srv.ID, "")) == 0
			})
			waitFor(t, 30*time.Second, "veths of "+srv.Name+" removed", func() bool {
				return len(vethsOf(t, srv.ID)) == 0
			})
		}
		waitFor(t, 30*time.Second, "no ports left on "+s.Bridge(), func() bool {
			out, err := o.vsctl("list-ports", s.Bridge())
			if err != nil {
				t.Fatal(err)
			}
			return strings.TrimSpace(out) == ""
		})
	})
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func firstIP(s server) netip.Addr {
	for _, ips := range s.Addresses {
		for _, ip := range ips {
			if a, err := netip.ParseAddr(ip); err == nil {
				return a
			}
		}
	}
	return netip.Addr{}
}

// asString flattens a field the CLI prints as a string or an object.
func asString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// vethsOf lists links the hostagent made for a set; it marks them with an
// alias "berth host=… set=<id> port=…".
func vethsOf(t *testing.T, setID string) []string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range links {
		if strings.Contains(l.Attrs().Alias, "set="+setID) {
			names = append(names, l.Attrs().Name)
		}
	}
	return names
}

func (o *osc) vsctl(args ...string) (string, error) {
	return runOutput("ovs-vsctl", append([]string{"--db=" + o.stack.OVSDB(), "--timeout=10"}, args...)...)
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Errorf("timed out after %s waiting for %s", timeout, what)
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
}
