package sets

import (
	"context"
	"testing"

	"berth/client/sdk/internal/sdktest"
)

func TestCreateOptsValidation(t *testing.T) {
	ok := CreateOpts{Name: "web", FlavorRef: "1", Containers: []Container{{Name: "app", Image: "demo"}}}
	if _, err := ok.ToSetCreateMap(); err != nil {
		t.Fatal(err)
	}
	bad := map[string]CreateOpts{
		"no name":        {FlavorRef: "1", Containers: ok.Containers},
		"no flavor":      {Name: "w", Containers: ok.Containers},
		"no containers":  {Name: "w", FlavorRef: "1"},
		"no image":       {Name: "w", FlavorRef: "1", Containers: []Container{{Name: "a"}}},
		"duplicate name": {Name: "w", FlavorRef: "1", Containers: []Container{{Name: "a", Image: "i"}, {Name: "a", Image: "i"}}},
		"bad role":       {Name: "w", FlavorRef: "1", Containers: []Container{{Name: "a", Image: "i", Role: "infra"}}},
		"bad restart":    {Name: "w", FlavorRef: "1", Containers: []Container{{Name: "a", Image: "i", Restart: "sometimes"}}},
	}
	for name, o := range bad {
		if _, err := o.ToSetCreateMap(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestCreateGetListDelete(t *testing.T) {
	s := sdktest.New(t)
	s.JSON("POST /v2.1/berth-sets", 202, `{"set": {"id": "s1", "name": "web", "status": "BUILD", "containers": [{"name": "app", "image": "demo"}], "novel": 7}}`)
	s.JSON("GET /v2.1/berth-sets/s1", 200, `{"set": {"id": "s1", "name": "web", "status": "ACTIVE", "containers": [{"name": "app", "image": "demo", "state": "running"}]}}`)
	s.JSON("GET /v2.1/berth-sets", 200, `{"sets": [{"id": "s1", "name": "web", "containers": []}]}`)
	s.Handle("DELETE /v2.1/berth-sets/s1", nil)
	c := s.Client("v2.1/")
	ctx := context.Background()
	got, err := Create(ctx, c, CreateOpts{Name: "web", FlavorRef: "1", Containers: []Container{{Name: "app", Image: "demo", Role: RoleApp}}}).Extract()
	if err != nil || got.ID != "s1" || got.Status != "BUILD" || got.Extra["novel"] != float64(7) {
		t.Fatalf("create: %+v %v", got, err)
	}
	if want := `{"set":{"containers":[{"image":"demo","name":"app","role":"app"}],"flavorRef":"1","name":"web"}}`; s.Requests[0].Body != want {
		t.Errorf("create body %s, want %s", s.Requests[0].Body, want)
	}
	one, err := Get(ctx, c, "s1").Extract()
	if err != nil || one.Containers[0].State != "running" {
		t.Errorf("get: %+v %v", one, err)
	}
	pages, err := List(c, &ListOpts{Name: "web"}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, err := ExtractSets(pages)
	if err != nil || len(all) != 1 || all[0].Name != "web" {
		t.Errorf("list: %+v %v", all, err)
	}
	if s.Requests[2].Query != "name=web" {
		t.Errorf("list query %q", s.Requests[2].Query)
	}
}
