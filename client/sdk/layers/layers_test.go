package layers

import (
	"context"
	"testing"

	"berth/client/sdk/internal/sdktest"
)

func TestList(t *testing.T) {
	s := sdktest.New(t)
	s.JSON("GET /v2/images/i1/layers", 200, `{"layers": [{"digest": "sha256:a", "chain_id": "sha256:c1", "parent": "", "size": 10, "shared_by": ["i1", "i2"]},
		{"digest": "sha256:b", "chain_id": "sha256:c2", "parent": "sha256:c1", "size": 20, "shared_by": ["i1"]}]}`)
	ls, err := List(context.Background(), s.Client("v2/"), "i1").Extract()
	if err != nil || len(ls) != 2 || ls[1].Parent != "sha256:c1" || len(ls[0].SharedBy) != 2 || ls[1].Size != 20 {
		t.Errorf("%+v %v", ls, err)
	}
}

func TestListServiceShape(t *testing.T) {
	s := sdktest.New(t)
	s.JSON("GET /v2/images/i1/layers", 200, `{"image_id": "i1", "top_layer": "sha256:c2", "layers": [
		{"chain_id": "sha256:c1", "digest": "sha256:a", "parent_chain_id": null, "blob_digest": null, "media_type": null, "size": 10, "created_at": "2026-11-22T16:01:30Z", "images": ["i1", "i2"], "shared": true},
		{"chain_id": "sha256:c2", "digest": "sha256:b", "parent_chain_id": "sha256:c1", "blob_digest": "sha256:bb", "media_type": "application/vnd.oci.image.layer.v1.tar", "size": 20, "images": ["i1"], "shared": false}]}`)
	r := List(context.Background(), s.Client("v2/"), "i1")
	ls, err := r.Extract()
	if err != nil || len(ls) != 2 || ls[0].Parent != "" || ls[1].Parent != "sha256:c1" || len(ls[0].SharedBy) != 2 || !ls[0].Shared || ls[1].BlobDigest != "sha256:bb" {
		t.Errorf("%+v %v", ls, err)
	}
	if top, err := r.ExtractTopLayer(); top != "sha256:c2" || err != nil {
		t.Errorf("top %q %v", top, err)
	}
}
