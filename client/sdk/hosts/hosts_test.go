package hosts

import (
	"context"
	"testing"

	"berth/client/sdk/internal/sdktest"
)

func TestListAndGet(t *testing.T) {
	s := sdktest.New(t)
	s.JSON("GET /v2.1/berth-hosts", 200, `{"hosts": [{"name": "n1", "vcpus": 8, "vcpus_used": 2, "memory_mb": 1000, "memory_mb_used": 10, "disk_gb": 5, "disk_gb_used": 1, "state": "up", "heartbeat_age_seconds": 1.5, "sets": 2}]}`)
	s.JSON("GET /v2.1/berth-hosts/n1", 200, `{"host": {"name": "n1", "state": "down"}}`)
	s.JSON("GET /v2.1/berth-hosts/n2", 200, `{"hosts": [{"name": "n2", "state": "up"}]}`)
	c := s.Client("v2.1/")
	pages, err := List(c).AllPages(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	hs, err := ExtractHosts(pages)
	if err != nil || len(hs) != 1 || hs[0].VCPUsUsed != 2 || hs[0].HeartbeatAgeSeconds != 1.5 || hs[0].Sets != 2 {
		t.Errorf("list: %+v %v", hs, err)
	}
	for name, state := range map[string]string{"n1": "down", "n2": "up"} {
		h, err := Get(context.Background(), c, name).Extract()
		if err != nil || h.Name != name || h.State != state {
			t.Errorf("get %s: %+v %v", name, h, err)
		}
	}
}
