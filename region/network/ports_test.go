package network_test

import (
	"context"
	"strings"
	"testing"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"
)

// TestPortUpdatesAndRevisions: a free port's MAC and address can change,
// every change bumps revision_number, If-Match holds an update to a
// revision, and the binding attributes are kept (profile: admin only).
func TestPortUpdatesAndRevisions(t *testing.T) {
	client, _ := setup(t)
	ctx := context.Background()
	demo, admin := client("demo"), client("admin")
	n, err := networks.Create(ctx, demo, networks.CreateOpts{Name: "pnet"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	sn, err := subnets.Create(ctx, demo, subnets.CreateOpts{NetworkID: n.ID, CIDR: "192.168.60.0/28", IPVersion: 4}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	p, err := ports.Create(ctx, demo, ports.CreateOpts{NetworkID: n.ID}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	rev := p.RevisionNumber

	mac := "aa:bb:cc:dd:ee:01"
	up, err := ports.Update(ctx, demo, p.ID, ports.UpdateOpts{MACAddress: &mac,
		FixedIPs: []ports.IP{{SubnetID: sn.ID, IPAddress: "192.168.60.9"}}}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if up.MACAddress != mac || len(up.FixedIPs) != 1 || up.FixedIPs[0].IPAddress != "192.168.60.9" {
		t.Errorf("updated port = %s %+v, want %s and 192.168.60.9", up.MACAddress, up.FixedIPs, mac)
	}
	if up.RevisionNumber != rev+1 {
		t.Errorf("revision after update = %d, want %d", up.RevisionNumber, rev+1)
	}

	// The list filters by fixed IP.
	pages, err := ports.List(demo, ports.ListOpts{FixedIPs: []ports.FixedIPOpts{{IPAddress: "192.168.60.9"}}}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := ports.ExtractPorts(pages); len(got) != 1 || got[0].ID != p.ID {
		t.Errorf("ports with fixed IP .9 = %+v, want only %s", got, p.ID)
	}

	// If-Match: the stale revision fails with 412, the current one works.
	name := "renamed"
	stale := rev
	_, err = ports.Update(ctx, demo, p.ID, ports.UpdateOpts{Name: &name, RevisionNumber: &stale}).Extract()
	if code(err) != 412 || !strings.Contains(err.Error(), "RevisionNumberConstraintFailed") {
		t.Errorf("update at a stale revision: %v, want 412 RevisionNumberConstraintFailed", err)
	}
	cur := up.RevisionNumber
	if _, err := ports.Update(ctx, demo, p.ID, ports.UpdateOpts{Name: &name, RevisionNumber: &cur}).Extract(); err != nil {
		t.Errorf("update at the current revision: %v", err)
	}

	// Taken addresses and MACs are 409; bad ones 400.
	other, err := ports.Create(ctx, demo, ports.CreateOpts{NetworkID: n.ID}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts ports.UpdateOpts
		want int
	}{
		{"taken IP", ports.UpdateOpts{FixedIPs: []ports.IP{{IPAddress: "192.168.60.9"}}}, 409},
		{"taken MAC", ports.UpdateOpts{MACAddress: &mac}, 409},
		{"IP outside the subnet", ports.UpdateOpts{FixedIPs: []ports.IP{{SubnetID: sn.ID, IPAddress: "10.9.9.9"}}}, 400},
		{"two fixed IPs", ports.UpdateOpts{FixedIPs: []ports.IP{{IPAddress: "192.168.60.10"}, {IPAddress: "192.168.60.11"}}}, 400},
		{"bad MAC", ports.UpdateOpts{MACAddress: ptr("zz:zz")}, 400},
		{"vnic_type direct", ports.UpdateOpts{}, 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.name == "vnic_type direct" {
				_, err = demo.Put(ctx, demo.ServiceURL("ports", other.ID),
					map[string]any{"port": map[string]any{"binding:vnic_type": "direct"}}, nil, nil)
			} else {
				_, err = ports.Update(ctx, demo, other.ID, tc.opts).Extract()
			}
			if code(err) != tc.want {
				t.Errorf("got %v, want %d", err, tc.want)
			}
		})
	}

	// binding:profile is the admin's.
	body := map[string]any{"port": map[string]any{"binding:profile": map[string]any{"pci_slot": "x"}}}
	if _, err := demo.Put(ctx, demo.ServiceURL("ports", other.ID), body, nil, nil); code(err) != 403 {
		t.Errorf("member sets binding:profile: %v, want 403", err)
	}
	var shown struct {
		Port map[string]any `json:"port"`
	}
	if _, err := admin.Put(ctx, admin.ServiceURL("ports", other.ID), body, &shown, &gophercloud.RequestOpts{OkCodes: []int{200}}); err != nil {
		t.Fatal(err)
	}
	if prof, _ := shown.Port["binding:profile"].(map[string]any); prof["pci_slot"] != "x" || shown.Port["binding:vnic_type"] != "normal" {
		t.Errorf("binding after update = %v / %v", shown.Port["binding:profile"], shown.Port["binding:vnic_type"])
	}

	// Networks and subnets carry revisions too.
	sname := "s2"
	sn2, err := subnets.Update(ctx, demo, sn.ID, subnets.UpdateOpts{Name: &sname}).Extract()
	if err != nil || sn2.RevisionNumber != sn.RevisionNumber+1 {
		t.Errorf("subnet revision %d -> %+v (%v), want +1", sn.RevisionNumber, sn2, err)
	}
	staleSub := sn.RevisionNumber
	if _, err := subnets.Update(ctx, demo, sn.ID, subnets.UpdateOpts{Name: &sname, RevisionNumber: &staleSub}).Extract(); code(err) != 412 {
		t.Errorf("subnet update at a stale revision: %v, want 412", err)
	}
	nn := "pnet2"
	n2, err := networks.Update(ctx, demo, n.ID, networks.UpdateOpts{Name: &nn}).Extract()
	if err != nil || n2.RevisionNumber != n.RevisionNumber+1 {
		t.Errorf("network revision %d -> %v (%v), want +1", n.RevisionNumber, n2, err)
	}
	old := n.RevisionNumber
	if _, err := networks.Update(ctx, demo, n.ID, networks.UpdateOpts{Name: &nn, RevisionNumber: &old}).Extract(); code(err) != 412 {
		t.Errorf("network update at a stale revision: %v, want 412", err)
	}
}

func ptr(s string) *string { return &s }
