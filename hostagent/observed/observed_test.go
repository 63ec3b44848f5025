package observed

import "testing"

func TestGroup(t *testing.T) {
	cs := []Container{
		{ID: "b", SetID: "s1", Role: RoleApp}, // no member label: named after its role
		{ID: "a", SetID: "s1", Role: RoleInfra},
		{ID: "c", SetID: "s1", Role: RoleApp, Member: "app"}, // duplicate app
		{ID: "e", SetID: "s1", Role: RoleInfra},              // duplicate infra
		{ID: "d", SetID: "s2", Role: RoleSidecar, Member: "logs"},
	}
	ps := []Port{{SetID: "s3", PortID: "p2"}, {SetID: "s3", PortID: "p1"}}
	vs := []Volume{{Name: "v", SetID: "s4", Volume: "data"}}
	sets := Group(cs, ps, vs...)
	s1 := sets["s1"]
	if s1.Infra == nil || s1.Infra.ID != "a" || s1.Member("app") == nil || s1.Member("app").ID != "b" || len(s1.Extra) != 2 {
		t.Errorf("s1 = %+v, want infra a, app b, extras c and e", s1)
	}
	if got := s1.Containers(); len(got) != 4 || got[0].ID != "a" || got[1].ID != "b" {
		t.Errorf("s1.Containers() = %+v, want infra first, then app", got)
	}
	if s2 := sets["s2"]; !s2.Exists() || s2.Member("logs") == nil || s2.Infra != nil {
		t.Errorf("s2 = %+v, want one sidecar member", s2)
	}
	s3 := sets["s3"]
	if !s3.Exists() || s3.Ports[0].PortID != "p1" || s3.Port("p2") == nil || s3.Port("p3") != nil {
		t.Errorf("s3 = %+v, want sorted ports p1, p2", s3)
	}
	if s4 := sets["s4"]; !s4.Exists() || len(s4.Volumes) != 1 {
		t.Errorf("s4 = %+v, want a set with one volume", s4)
	}
	var none *Set
	if none.Exists() || none.Member("app") != nil || none.Containers() != nil {
		t.Error("nil set claims to exist")
	}
}
