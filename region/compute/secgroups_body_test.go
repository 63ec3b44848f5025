package compute_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/secgroups"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
)

// TestServerBodySecurityGroups: the server body's security_groups names
// the groups on its ports (after add/removeSecurityGroup, and as created
// with security_groups), in GET /servers/{id} and /servers/detail alike.
func TestServerBodySecurityGroups(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.registerHost(t, "h1", 8192)
	demo := e.client("demo-token")
	if _, err := secgroups.Create(ctx, demo, secgroups.CreateOpts{Name: "web", Description: "w"}).Extract(); err != nil {
		t.Fatal(err)
	}
	names := func(s *servers.Server) []string {
		var out []string
		for _, g := range s.SecurityGroups {
			out = append(out, fmt.Sprint(g["name"]))
		}
		return out
	}
	check := func(id string, want []string) {
		t.Helper()
		s, err := servers.Get(ctx, demo, id).Extract()
		if err != nil {
			t.Fatal(err)
		}
		if got := names(s); !slices.Equal(got, want) {
			t.Errorf("GET server %s security_groups = %v, want %v", id, got, want)
		}
		pages, err := servers.List(demo, servers.ListOpts{}).AllPages(ctx)
		if err != nil {
			t.Fatal(err)
		}
		all, _ := servers.ExtractServers(pages)
		for i := range all {
			if all[i].ID == id && !slices.Equal(names(&all[i]), want) {
				t.Errorf("/servers/detail %s security_groups = %v, want %v", id, names(&all[i]), want)
			}
		}
	}
	plain, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "plain", ImageRef: demoImage, FlavorRef: "1"}, nil).Extract()
	if err != nil {
		t.Fatal(err)
	}
	check(plain.ID, []string{"default"})
	if err := secgroups.AddServer(ctx, demo, plain.ID, "web").ExtractErr(); err != nil {
		t.Fatal(err)
	}
	check(plain.ID, []string{"default", "web"})
	if err := secgroups.RemoveServer(ctx, demo, plain.ID, "default").ExtractErr(); err != nil {
		t.Fatal(err)
	}
	check(plain.ID, []string{"web"})

	// Created with groups (named twice: one entry); the create response
	// names them too.
	res := servers.Create(ctx, demo, servers.CreateOpts{Name: "web", ImageRef: demoImage, FlavorRef: "1",
		SecurityGroups: []string{"web", "web"}}, nil)
	web, err := res.Extract()
	if err != nil {
		t.Fatal(err)
	}
	if got := names(web); !slices.Equal(got, []string{"web"}) {
		t.Errorf("create response security_groups = %v, want [web]", got)
	}
	check(web.ID, []string{"web"})
	if _, err := servers.Create(ctx, demo, servers.CreateOpts{Name: "x", ImageRef: demoImage, FlavorRef: "1",
		SecurityGroups: []string{"nope"}}, nil).Extract(); faultCode(err) != 400 {
		t.Errorf("create with an unknown group: %v, want 400", err)
	}
	// Another project's group is unknown to this one.
	if _, err := servers.Create(ctx, e.client("alt-token"), servers.CreateOpts{Name: "x", ImageRef: demoImage, FlavorRef: "1",
		SecurityGroups: []string{"web"}}, nil).Extract(); faultCode(err) != 400 {
		t.Errorf("alt creates with demo's group: %v, want 400", err)
	}
}
