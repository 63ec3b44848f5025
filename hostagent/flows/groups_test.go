package flows

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"berth/schema"
)

func TestGroupFlowsGolden(t *testing.T) {
	gs := []Group{
		// The default group admits its members on two networks; only
		// network 100 has ingress rules naming it, 200 egress ones.
		{Tag: 5, Ingress: []uint32{100}, Egress: []uint32{200}, Members: []Member{
			{100, "10.0.0.3"}, {100, "10.0.0.4"}, {200, "10.1.0.3"}, {300, "10.2.0.9"},
		}},
		// A member of two groups gets one flow with both conjunctions.
		{Tag: 9, Ingress: []uint32{100}, Members: []Member{{100, "10.0.0.4"}}},
		// No members: an accept flow only (its rules admit nobody).
		{Tag: 12, Ingress: []uint32{100}},
		// Malformed: left out.
		{Tag: 0, Ingress: []uint32{100}, Members: []Member{{100, "10.0.0.5"}}},
		{Tag: MaxTag + 1, Ingress: []uint32{100}, Members: []Member{{100, "10.0.0.6"}}},
		{Tag: 13, Ingress: []uint32{100}, Members: []Member{{100, "fd00::1"}, {100, "nope"}}},
		// Named by no rule: nothing.
		{Tag: 14, Members: []Member{{100, "10.0.0.7"}}},
	}
	byKey := GroupFlows(gs)
	var all []Flow
	var b strings.Builder
	for _, k := range slices.Sorted(func(yield func(uint16) bool) {
		for k := range byKey {
			if !yield(k) {
				return
			}
		}
	}) {
		fs := byKey[k]
		all = append(all, fs...)
		for _, f := range fs {
			fmt.Fprintf(&b, "key=%d %s\n", k, f)
		}
	}
	golden(t, "groups", all, Cookie(HostTag("h1"), KindGroup, 0, 0))
	// Every address's flows sit under its own key; accept flows under 0.
	for k, fs := range byKey {
		for _, f := range fs {
			if strings.HasPrefix(f.Match, "conj_id=") != (k == 0) {
				t.Errorf("flow %s under key %d", f, k)
			}
		}
	}
	for _, want := range []string{
		"table=41,priority=99,reg6=0x64,ct_state=+new-inv+trk,ip,nw_src=10.0.0.4,actions=conjunction(5,2/2),conjunction(9,2/2)",
		"table=20,priority=99,reg6=0xc8,ct_state=+new-inv+trk,ip,nw_dst=10.1.0.3,actions=conjunction(5,2/2)",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("missing %s in\n%s", want, b.String())
		}
	}
	for _, absent := range []string{"10.0.0.5", "10.0.0.6", "10.0.0.7", "10.2.0.9", "nw_src=10.1.0.3", "nw_dst=10.0.0.3", "fd00", "conj_id=14"} {
		if strings.Contains(b.String(), absent) {
			t.Errorf("unexpected %s in\n%s", absent, b.String())
		}
	}
}

// One member joining changes the flows under one key only: the point of
// keying address flows apart (a boot touches one flow set per host).
func TestGroupFlowsMemberJoinTouchesOneKey(t *testing.T) {
	var members []Member
	for i := 2; i < 200; i++ {
		members = append(members, Member{100, fmt.Sprintf("10.0.0.%d", i)})
	}
	before := GroupFlows([]Group{{Tag: 5, Ingress: []uint32{100}, Members: members}})
	after := GroupFlows([]Group{{Tag: 5, Ingress: []uint32{100}, Members: append(slices.Clone(members), Member{100, "10.0.0.200"})}})
	var changed []uint16
	for k, fs := range after {
		if Digest(fs) != Digest(before[k]) || len(before[k]) != len(fs) {
			changed = append(changed, k)
		}
	}
	if len(changed) != 1 || changed[0] != AddressKey(100, "10.0.0.200") {
		t.Errorf("changed keys %v, want only %d", changed, AddressKey(100, "10.0.0.200"))
	}
	n := 0
	for _, fs := range after {
		n += len(fs)
	}
	if n != 200 { // 199 addresses + 1 accept flow: linear in members
		t.Errorf("%d group flows for 199 members, want 200", n)
	}
}

func TestGroupsOf(t *testing.T) {
	port := func(net string, vni int, secure bool, rules ...schema.SetRule) schema.SetPort {
		return schema.SetPort{NetworkID: net, VNI: vni, PortSecurity: secure, Rules: rules}
	}
	ds := schema.DesiredState{
		Sets: []schema.DesiredSet{
			{Ports: []schema.SetPort{
				port("n1", 100, true, schema.SetRule{Direction: "ingress", RemoteGroup: "a", RemoteGroupTag: 5},
					schema.SetRule{Direction: "egress", Remote: []string{"0.0.0.0/0"}}),
				port("n2", 200, true, schema.SetRule{Direction: "egress", RemoteGroup: "a", RemoteGroupTag: 5}),
			}},
			{Ports: []schema.SetPort{
				port("n1", 100, true, schema.SetRule{Direction: "ingress", RemoteGroup: "b", RemoteGroupTag: 7}),
				// Port security off: its rules are not enforced.
				port("n3", 300, false, schema.SetRule{Direction: "ingress", RemoteGroup: "c", RemoteGroupTag: 8}),
			}},
		},
		Groups: []schema.SetGroup{
			{ID: "a", Tag: 5, Members: []schema.SetGroupMember{{NetworkID: "n1", VNI: 100, IP: "10.0.0.3"}, {NetworkID: "n2", VNI: 200, IP: "10.1.0.3"}}},
			{ID: "b", Tag: 7, Members: []schema.SetGroupMember{}},
			{ID: "c", Tag: 8, Members: []schema.SetGroupMember{{NetworkID: "n3", VNI: 300, IP: "10.3.0.3"}}},
		},
	}
	want := []Group{
		{Tag: 5, Members: []Member{{100, "10.0.0.3"}, {200, "10.1.0.3"}}, Ingress: []uint32{100}, Egress: []uint32{200}},
		{Tag: 7, Ingress: []uint32{100}, Egress: []uint32{}},
	}
	got := GroupsOf(ds)
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b []uint32) bool { return slices.Equal(a, b) })); diff != "" {
		t.Errorf("GroupsOf (-want +got):\n%s", diff)
	}
}
