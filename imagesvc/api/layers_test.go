package api_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"berth/imagesvc/content"
	"berth/imagesvc/dockerarchive/archivetest"
	"berth/imagesvc/store"
)

// upload creates a docker image named name with token and uploads data.
func (e *env) uploadDocker(token, name string, data []byte) string {
	e.t.Helper()
	id := e.create(token, `{"name": "`+name+`", "container_format": "docker", "disk_format": "raw"}`)["id"].(string)
	if r := e.do("PUT", "/v2/images/"+id+"/file", token, data, "Content-Type", "application/octet-stream"); r.status != 204 {
		e.t.Fatalf("upload %s: %d %s", name, r.status, r.body)
	}
	return id
}

func TestDockerDownloadIsByteForByte(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.client("p1", "member")
	big := archivetest.RandomLayer(1<<20 + 4096) // past what is kept in memory: spooled
	small := archivetest.LayerTar(map[string]string{"etc/motd": "hi\n"})
	for _, layout := range []archivetest.Layout{archivetest.Legacy, archivetest.OCI, archivetest.OCIGzip} {
		arc := archivetest.Build(layout, "berth/app:1", big, small)
		img, err := images.Create(ctx, c, images.CreateOpts{Name: "app", ContainerFormat: "docker", DiskFormat: "raw"}).Extract()
		if err != nil {
			t.Fatal(err)
		}
		if err := imagedata.Upload(ctx, c, img.ID, bytes.NewReader(arc.Data)).ExtractErr(); err != nil {
			t.Fatalf("layout %d: Upload: %v", layout, err)
		}
		got, _ := images.Get(ctx, c, img.ID).Extract()
		sum := md5.Sum(arc.Data)
		if got.Checksum != hex.EncodeToString(sum[:]) || got.SizeBytes != int64(len(arc.Data)) {
			t.Errorf("layout %d: checksum %s size %d, want the uploaded bytes' %x %d", layout, got.Checksum, got.SizeBytes, sum, len(arc.Data))
		}
		dl := imagedata.Download(ctx, c, img.ID)
		rc, err := dl.Extract()
		if err != nil {
			t.Fatal(err)
		}
		back, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(back, arc.Data) {
			t.Errorf("layout %d: download differs from the upload (%d vs %d bytes)", layout, len(back), len(arc.Data))
		}
		if dl.Header.Get("Content-MD5") != got.Checksum {
			t.Errorf("layout %d: Content-MD5 %q, want %q", layout, dl.Header.Get("Content-MD5"), got.Checksum)
		}
		// A range from the middle of the big layer.
		tok := e.ks.Issue("p1", "member")
		r := e.do("GET", "/v2/images/"+img.ID+"/file", tok, nil, "Range", "bytes=100000-100999")
		if r.status != http.StatusPartialContent || !bytes.Equal(r.body, arc.Data[100000:101000]) {
			t.Errorf("layout %d: range: got %d and %d bytes", layout, r.status, len(r.body))
		}
	}
}

func TestLayersAreStoredOnceAcrossImagesAndProjects(t *testing.T) {
	e := newEnv(t)
	p1, p2 := e.ks.Issue("p1", "member"), e.ks.Issue("p2", "member")
	base := archivetest.RandomLayer(1<<20 + 4096)
	app1 := archivetest.RandomLayer(256 << 10)
	app2 := archivetest.RandomLayer(256<<10 + 512)
	one := archivetest.Build(archivetest.Legacy, "one:1", base, app1)
	two := archivetest.Build(archivetest.Legacy, "two:1", base, app2)

	id1 := e.uploadDocker(p1, "one", one.Data)
	_, afterOne := e.blobFiles("sha256")
	id2 := e.uploadDocker(p2, "two", two.Data)
	_, afterTwo := e.blobFiles("sha256")
	// The second image adds its own layer (and small config, manifest,
	// recipe), not the base again.
	if grew := afterTwo - afterOne; grew < int64(len(app2)) || grew > int64(len(app2))+64<<10 {
		t.Errorf("second image grew the store by %d bytes, want about its new layer's %d", grew, len(app2))
	}

	// The chain, base first, with sizes, digests, parents and sharing.
	r := e.do("GET", "/v2/images/"+id2+"/layers", p2, nil)
	if r.status != 200 {
		t.Fatalf("layers: %d %s", r.status, r.body)
	}
	body := r.json(t)
	layers := body["layers"].([]any)
	if len(layers) != 2 || body["top_layer"] != two.ChainIDs[1] {
		t.Fatalf("layers: %s", r.body)
	}
	l0, l1 := layers[0].(map[string]any), layers[1].(map[string]any)
	if l0["chain_id"] != two.ChainIDs[0] || l0["parent_chain_id"] != nil || l0["digest"] != two.DiffIDs[0] ||
		l0["size"] != float64(len(base)) || l0["blob_digest"] != two.DiffIDs[0] || l0["shared"] != true {
		t.Errorf("base layer: %v", l0)
	}
	if l1["chain_id"] != two.ChainIDs[1] || l1["parent_chain_id"] != two.ChainIDs[0] || l1["shared"] != false {
		t.Errorf("top layer: %v", l1)
	}
	// p2 sees that the base is shared but not p1's private image id.
	if imgs := l0["images"].([]any); len(imgs) != 1 || imgs[0] != id2 {
		t.Errorf("base layer images seen by p2: %v, want only %s", imgs, id2)
	}
	admin := e.ks.Issue("admin", "admin")
	r = e.do("GET", "/v2/images/"+id2+"/layers", admin, nil)
	if imgs := r.json(t)["layers"].([]any)[0].(map[string]any)["images"].([]any); len(imgs) != 2 {
		t.Errorf("base layer images seen by admin: %v, want both", imgs)
	}
	r = e.do("GET", "/v2/layers/"+two.ChainIDs[0], p1, nil)
	if r.status != 200 || r.json(t)["layer"].(map[string]any)["images"].([]any)[0] != id1 {
		t.Errorf("show layer: %d %s", r.status, r.body)
	}
	glanceError(t, e.do("GET", "/v2/layers/"+two.ChainIDs[1], p1, nil), 404) // p1 sees no image using it
	glanceError(t, e.do("GET", "/v2/images/"+id1+"/layers", p2, nil), 404)

	// A layer in use cannot be deleted; only admins delete layers.
	glanceError(t, e.do("DELETE", "/v2/layers/"+two.ChainIDs[0], p1, nil), 403)
	glanceError(t, e.do("DELETE", "/v2/layers/"+two.ChainIDs[0], admin, nil), 409)
	glanceError(t, e.do("DELETE", "/v2/layers/sha256:"+strings.Repeat("0", 64), admin, nil), 404)

	// Deleting an image releases what no one else uses; the shared base
	// stays until its last user goes.
	if r := e.do("DELETE", "/v2/images/"+id1, p1, nil); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if _, err := e.store.LayerChain(context.Background(), one.ChainIDs[1]); err == nil {
		t.Errorf("image one's own layer is still recorded after its image was deleted")
	}
	if _, err := e.content.Stat(context.Background(), one.DiffIDs[1]); err == nil {
		t.Errorf("image one's own layer blob is still there")
	}
	if _, err := e.content.Stat(context.Background(), one.DiffIDs[0]); err != nil {
		t.Errorf("the shared base blob went with the first image: %v", err)
	}
	dl := e.do("GET", "/v2/images/"+id2+"/file", p2, nil)
	if !bytes.Equal(dl.body, two.Data) {
		t.Errorf("image two's data changed after image one was deleted")
	}
	if r := e.do("DELETE", "/v2/images/"+id2, p2, nil); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if n, b := e.blobFiles("sha256"); n != 0 {
		t.Errorf("after deleting every image %d blob files (%d bytes) remain", n, b)
	}
	if n, _, _ := e.store.BlobUsage(context.Background()); n != 0 {
		t.Errorf("after deleting every image %d blob records remain", n)
	}
}

func TestCorruptBlobIsNotServedAsGood(t *testing.T) {
	e := newEnv(t)
	tok := e.ks.Issue("p1", "member")
	layer := archivetest.RandomLayer(256 << 10)
	arc := archivetest.Build(archivetest.Legacy, "x:1", layer)
	id := e.uploadDocker(tok, "x", arc.Data)
	// Flip a byte of the stored layer behind the service's back.
	d := arc.DiffIDs[0][len("sha256:"):]
	path := filepath.Join(e.dataDir, "blobs", "sha256", d[:2], d)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[4096] ^= 0xff
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	resp, got, rerr := e.download(id, tok)
	if rerr == nil && bytes.Equal(got, arc.Data) {
		t.Fatal("a corrupted layer was served as if intact")
	}
	if rerr == nil && int64(len(got)) == resp.ContentLength {
		t.Errorf("a corrupted layer was served in full (%d bytes) without an error", len(got))
	}
	_ = content.ErrCorrupt
}

// TestLegacyDockerImagesAreConverted: a docker image stored by an earlier
// imagesvc (its archive as one blob, layers without blobs) moves to layer
// blobs, and still downloads byte for byte.
func TestLegacyDockerImagesAreConverted(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tok := e.ks.Issue("p1", "member")
	arc := archivetest.Build(archivetest.Legacy, "old:1", archivetest.RandomLayer(256<<10), archivetest.LayerTar(map[string]string{"a": "b"}))
	id := e.create(tok, `{"name": "old", "container_format": "docker", "disk_format": "raw"}`)["id"].(string)
	key := "images/" + id
	if _, err := e.blobs.Put(ctx, key, bytes.NewReader(arc.Data)); err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum(arc.Data)
	var layers []store.ImageLayer
	for i := range arc.ChainIDs {
		layers = append(layers, store.ImageLayer{ChainID: arc.ChainIDs[i], DiffID: arc.DiffIDs[i], Size: 1})
	}
	if _, err := e.store.StartUpload(ctx, id, time.Minute, func(*store.Image) error { return nil }); err != nil {
		t.Fatal(err)
	}
	before, err := e.store.FinishUpload(ctx, id, store.Upload{BlobKey: key, Size: int64(len(arc.Data)),
		Checksum: hex.EncodeToString(sum[:]), Docker: &store.DockerData{Layers: layers}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := e.api.ConvertLegacyImages(ctx)
	if err != nil || n != 1 {
		t.Fatalf("ConvertLegacyImages: %d %v", n, err)
	}
	after, _ := e.store.FindImageByID(ctx, id)
	if after.BlobKey != nil || after.RecipeDigest == nil || after.ManifestDigest == nil || !after.UpdatedAt.Equal(before.UpdatedAt) {
		t.Errorf("converted image: blob_key %v recipe %v manifest %v updated %v (was %v)",
			after.BlobKey, after.RecipeDigest, after.ManifestDigest, after.UpdatedAt, before.UpdatedAt)
	}
	if _, err := e.blobs.Stat(ctx, key); err == nil {
		t.Errorf("the old archive blob stays")
	}
	if r := e.do("GET", "/v2/images/"+id+"/file", tok, nil); !bytes.Equal(r.body, arc.Data) || r.header.Get("Content-MD5") != *after.Checksum {
		t.Errorf("download after the conversion differs")
	}
	ls, _ := e.store.ImageLayers(ctx, id)
	if len(ls) != 2 || ls[0].BlobDigest == nil || *ls[0].BlobDigest != arc.DiffIDs[0] {
		t.Errorf("layers after the conversion: %+v", ls)
	}
	if n, err := e.api.ConvertLegacyImages(ctx); err != nil || n != 0 {
		t.Errorf("second ConvertLegacyImages: %d %v", n, err)
	}
}
