package api_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"berth/imagesvc/blob"
	"berth/imagesvc/dockerarchive/archivetest"
)

func ptr[T any](v T) *T { return &v }

func TestImageLifecycleWithGophercloud(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.client("p1", "member", "reader")

	created, err := images.Create(ctx, c, images.CreateOpts{
		Name: "cirros", ContainerFormat: "bare", DiskFormat: "qcow2",
		Tags: []string{"small", "test"}, MinDisk: 1, MinRAM: 64,
		Properties: map[string]string{"os_distro": "cirros", "architecture": "x86_64"},
	}).Extract()
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if created.Status != images.ImageStatusQueued || created.Owner != "p1" || created.Visibility != images.ImageVisibilityShared {
		t.Errorf("Create: got status %s owner %s visibility %s, want queued p1 shared", created.Status, created.Owner, created.Visibility)
	}
	if created.Properties["os_distro"] != "cirros" || created.MinDiskGigabytes != 1 || created.MinRAMMegabytes != 64 {
		t.Errorf("Create: got properties %v min_disk %d min_ram %d", created.Properties, created.MinDiskGigabytes, created.MinRAMMegabytes)
	}
	if created.File != "/v2/images/"+created.ID+"/file" || created.Schema != "/v2/schemas/image" {
		t.Errorf("Create: got file %q schema %q", created.File, created.Schema)
	}

	got, err := images.Get(ctx, c, created.ID).Extract()
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if !slices.Equal(created.OpenStackImageImportMethods, []string{"glance-direct"}) {
		t.Errorf("Create: import methods header %v, want [glance-direct]", created.OpenStackImageImportMethods)
	}
	if diff := cmp.Diff(created, got, cmpopts.IgnoreFields(images.Image{}, "OpenStackImageImportMethods")); diff != "" {
		t.Errorf("Get differs from Create (-create +get):\n%s", diff)
	}

	updated, err := images.Update(ctx, c, created.ID, images.UpdateOpts{
		images.ReplaceImageName{NewName: "cirros-0.6"},
		images.ReplaceImageTags{NewTags: []string{"one"}},
		images.ReplaceImageMinRam{NewMinRam: 128},
		images.UpdateImageProperty{Op: images.AddOp, Name: "hw_disk_bus", Value: "virtio"},
		images.UpdateImageProperty{Op: images.ReplaceOp, Name: "os_distro", Value: "alpine"},
		images.UpdateImageProperty{Op: images.RemoveOp, Name: "architecture"},
	}).Extract()
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if updated.Name != "cirros-0.6" || !slices.Equal(updated.Tags, []string{"one"}) || updated.MinRAMMegabytes != 128 ||
		updated.Properties["hw_disk_bus"] != "virtio" || updated.Properties["os_distro"] != "alpine" {
		t.Errorf("Update: got %+v", updated)
	}
	if _, ok := updated.Properties["architecture"]; ok {
		t.Errorf("Update: architecture was not removed: %v", updated.Properties)
	}

	data := bytes.Repeat([]byte("berth image data "), 50000)
	if err := imagedata.Upload(ctx, c, created.ID, bytes.NewReader(data)).ExtractErr(); err != nil {
		t.Fatalf("Upload: %v", err)
	}
	active, err := images.Get(ctx, c, created.ID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	md5sum, shasum := md5.Sum(data), sha512.Sum512(data)
	if active.Status != images.ImageStatusActive || active.SizeBytes != int64(len(data)) ||
		active.Checksum != hex.EncodeToString(md5sum[:]) ||
		active.Properties["os_hash_algo"] != "sha512" || active.Properties["os_hash_value"] != hex.EncodeToString(shasum[:]) {
		t.Errorf("after upload: got status %s size %d checksum %s props %v", active.Status, active.SizeBytes, active.Checksum, active.Properties)
	}

	dl := imagedata.Download(ctx, c, created.ID)
	rc, err := dl.Extract()
	if err != nil {
		t.Fatalf("Download: %v", err)
	}
	back, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(back, data) {
		t.Errorf("Download: got %d bytes, want the %d uploaded", len(back), len(data))
	}
	if dl.Header.Get("Content-MD5") != active.Checksum {
		t.Errorf("Download Content-MD5: got %q, want %q", dl.Header.Get("Content-MD5"), active.Checksum)
	}

	err = imagedata.Upload(ctx, c, created.ID, strings.NewReader("again")).ExtractErr()
	if !gophercloud.ResponseCodeIs(err, http.StatusConflict) {
		t.Errorf("second Upload: got %v, want 409", err)
	}

	if err := images.Delete(ctx, c, created.ID).ExtractErr(); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := images.Get(ctx, c, created.ID).Extract(); !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		t.Errorf("Get after Delete: got %v, want 404", err)
	}
	if _, err := e.blobs.Stat(ctx, "images/"+created.ID); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("blob after Delete: got %v, want ErrNotFound", err)
	}
}

func TestDownloadWithoutDataIs204(t *testing.T) {
	e := newEnv(t)
	tok := e.ks.Issue("p1", "member")
	img := e.create(tok, `{"name": "empty", "container_format": "bare", "disk_format": "raw"}`)
	r := e.do("GET", "/v2/images/"+img["id"].(string)+"/file", tok, nil)
	if r.status != http.StatusNoContent {
		t.Errorf("got %d, want 204", r.status)
	}
}

func TestListPagingFiltersAndSorting(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.client("p1", "member")
	var want []string
	for i := 0; i < 5; i++ {
		name := string(rune('a' + i))
		img, err := images.Create(ctx, c, images.CreateOpts{Name: "img-" + name, ContainerFormat: "bare",
			DiskFormat: "raw", Tags: []string{"even"}[:1-i%2]}).Extract()
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, img.Name)
	}
	// Another project's private image never shows.
	if _, err := images.Create(ctx, e.client("p2", "member"), images.CreateOpts{Name: "other",
		Visibility: ptr(images.ImageVisibilityPrivate)}).Extract(); err != nil {
		t.Fatal(err)
	}

	var pages int
	var gotNames []string
	err := images.List(c, images.ListOpts{Limit: 2, SortKey: "name", SortDir: "asc"}).EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
		pages++
		imgs, err := images.ExtractImages(p)
		for _, i := range imgs {
			gotNames = append(gotNames, i.Name)
		}
		return true, err
	})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if diff := cmp.Diff(want, gotNames); diff != "" {
		t.Errorf("paged list (-want +got):\n%s", diff)
	}
	if pages < 3 {
		t.Errorf("got %d pages of 2, want at least 3", pages)
	}

	all, err := images.List(c, images.ListOpts{Tags: []string{"even"}, Sort: "name:desc"}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	even, _ := images.ExtractImages(all)
	var evenNames []string
	for _, i := range even {
		evenNames = append(evenNames, i.Name)
	}
	if diff := cmp.Diff([]string{"img-e", "img-c", "img-a"}, evenNames); diff != "" {
		t.Errorf("tag filter, name desc (-want +got):\n%s", diff)
	}

	// Raw shape: first, schema, next.
	tok := e.ks.Issue("p1", "member")
	r := e.do("GET", "/v2/images?limit=2&sort_key=name&sort_dir=asc", tok, nil).json(t)
	if r["schema"] != "/v2/schemas/images" || r["first"] != "/v2/images?limit=2&sort_dir=asc&sort_key=name" {
		t.Errorf("list body: schema %v first %v", r["schema"], r["first"])
	}
	next, _ := r["next"].(string)
	if !strings.HasPrefix(next, "/v2/images?") || !strings.Contains(next, "marker=") {
		t.Errorf("list body: next %q, want a /v2/images link with a marker", next)
	}
	r = e.do("GET", "/v2/images?name=in:img-a,img-b,other", tok, nil).json(t)
	if n := len(r["images"].([]any)); n != 2 {
		t.Errorf("name=in: filter: got %d images, want 2", n)
	}
	if _, ok := r["next"]; ok {
		t.Errorf("a short page has a next link: %v", r["next"])
	}
}

func TestDockerArchiveUpload(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.client("p1", "member")
	base := archivetest.LayerTar(map[string]string{"etc/os-release": "ID=berth\n"})
	app := archivetest.LayerTar(map[string]string{"srv/app": "hello\n"})

	for _, layout := range []archivetest.Layout{archivetest.Legacy, archivetest.OCI, archivetest.OCIGzip} {
		arc := archivetest.Build(layout, "berth/app:1", base, app)
		img, err := images.Create(ctx, c, images.CreateOpts{Name: "app", ContainerFormat: "docker", DiskFormat: "raw"}).Extract()
		if err != nil {
			t.Fatal(err)
		}
		if err := imagedata.Upload(ctx, c, img.ID, bytes.NewReader(arc.Data)).ExtractErr(); err != nil {
			t.Fatalf("Upload (layout %d): %v", layout, err)
		}
		got, err := images.Get(ctx, c, img.ID).Extract()
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != images.ImageStatusActive || got.Properties["docker_image_id"] != arc.ImageID {
			t.Errorf("layout %d: got status %s docker_image_id %v, want active %s", layout, got.Status, got.Properties["docker_image_id"], arc.ImageID)
		}
		r := e.do("GET", "/internal/v1/images/"+img.ID+"/layers", "", nil, "X-Berth-Agent-Token", agentToken)
		var chain []string
		var parents []any
		for _, l := range r.json(t)["layers"].([]any) {
			chain = append(chain, l.(map[string]any)["chain_id"].(string))
			parents = append(parents, l.(map[string]any)["parent_chain_id"])
		}
		if diff := cmp.Diff(arc.ChainIDs, chain); diff != "" {
			t.Errorf("layout %d: layer chain (-want +got):\n%s", layout, diff)
		}
		if len(parents) == 2 && (parents[0] != nil || parents[1] != arc.ChainIDs[0]) {
			t.Errorf("layout %d: parents %v, want [nil %s]", layout, parents, arc.ChainIDs[0])
		}
	}

	// A client may not set docker_image_id itself.
	r := e.do("POST", "/v2/images", e.ks.Issue("p1", "member"), []byte(`{"name": "x", "docker_image_id": "sha256:forged"}`),
		"Content-Type", "application/json")
	if r.status != http.StatusForbidden {
		t.Errorf("create with docker_image_id: got %d, want 403", r.status)
	}
}

func TestCorruptDockerArchiveStaysQueued(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.client("p1", "member")
	arc := archivetest.Build(archivetest.Legacy, "x:1", archivetest.LayerTar(map[string]string{"a": "b"}))
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"not a tar", bytes.Repeat([]byte("garbage!"), 4096)},
		{"truncated", arc.Data[:len(arc.Data)/3]},
		{"empty", []byte{}},
		{"manifest references a missing layer", withoutLayer(t, arc.Data)},
		{"layer bytes flipped", func() []byte {
			b := append([]byte(nil), arc.Data...)
			i := bytes.Index(b, []byte("layer.tar"))
			// The first layer's tar data starts at the next 512-byte block.
			j := (i/512+1)*512 + 600
			b[j] ^= 0xff
			return b
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := images.Create(ctx, c, images.CreateOpts{Name: "bad", ContainerFormat: "docker", DiskFormat: "raw"}).Extract()
			if err != nil {
				t.Fatal(err)
			}
			err = imagedata.Upload(ctx, c, img.ID, bytes.NewReader(tc.data)).ExtractErr()
			if !gophercloud.ResponseCodeIs(err, http.StatusBadRequest) {
				t.Fatalf("Upload: got %v, want 400", err)
			}
			got, _ := images.Get(ctx, c, img.ID).Extract()
			if got.Status != images.ImageStatusQueued || got.Checksum != "" {
				t.Errorf("after a bad upload: status %s checksum %q, want queued and none", got.Status, got.Checksum)
			}
			if _, err := e.blobs.Stat(ctx, "images/"+img.ID); !errors.Is(err, blob.ErrNotFound) {
				t.Errorf("blob after a bad upload: got %v, want ErrNotFound", err)
			}
			// The image can still take a good archive.
			if err := imagedata.Upload(ctx, c, img.ID, bytes.NewReader(arc.Data)).ExtractErr(); err != nil {
				t.Errorf("good upload after a bad one: %v", err)
			}
		})
	}
}

func TestAbortedUploadLeavesImageQueued(t *testing.T) {
	e := newEnv(t)
	tok := e.ks.Issue("p1", "member")
	img := e.create(tok, `{"name": "big", "container_format": "bare", "disk_format": "raw"}`)
	id := img["id"].(string)

	// Promise 1 MiB, send 64 KiB, hang up.
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("PUT", e.srv.URL+"/v2/images/"+id+"/file", pr)
	req.ContentLength = 1 << 20
	req.Header.Set("X-Auth-Token", tok)
	req.Header.Set("Content-Type", "application/octet-stream")
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	pw.Write(make([]byte, 64<<10))
	pw.CloseWithError(errors.New("client hung up"))
	<-done

	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := e.store.FindImageByID(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		// Queued again after having been saving (each step bumps updated_at).
		if got.Status == "queued" && got.UpdatedAt.After(got.CreatedAt) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("image is %s after an aborted upload, want queued", got.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := e.blobs.Stat(context.Background(), "images/"+id); !errors.Is(err, blob.ErrNotFound) {
		t.Errorf("blob after an aborted upload: got %v, want ErrNotFound", err)
	}
	if tmp, _ := os.ReadDir(filepath.Join(e.dataDir, "tmp")); len(tmp) != 0 {
		t.Errorf("%d partial files left in the blob store's tmp", len(tmp))
	}
	// Now a full upload works.
	r := e.do("PUT", "/v2/images/"+id+"/file", tok, []byte("complete"), "Content-Type", "application/octet-stream")
	if r.status != http.StatusNoContent {
		t.Errorf("upload after abort: got %d %s", r.status, r.body)
	}
}

func TestImageJSONShape(t *testing.T) {
	e := newEnv(t)
	tok := e.ks.Issue("p1", "member")
	img := e.create(tok, `{"name": "Ubuntu", "container_format": "bare", "disk_format": "raw",
		"id": "b2173dd3-7ad6-4362-baa6-a68bce3565cb", "hw_rng_model": "virtio"}`)
	var keys []string
	for k := range img {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	want := []string{"checksum", "container_format", "created_at", "disk_format", "file", "hw_rng_model", "id",
		"min_disk", "min_ram", "name", "os_hash_algo", "os_hash_value", "os_hidden", "owner", "protected",
		"schema", "self", "size", "status", "tags", "updated_at", "virtual_size", "visibility"}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Errorf("image keys (-want +got):\n%s", diff)
	}
	for _, k := range []string{"checksum", "size", "virtual_size", "os_hash_algo", "os_hash_value"} {
		if img[k] != nil {
			t.Errorf("%s of a queued image: got %v, want null", k, img[k])
		}
	}
	if img["id"] != "b2173dd3-7ad6-4362-baa6-a68bce3565cb" || img["self"] != "/v2/images/b2173dd3-7ad6-4362-baa6-a68bce3565cb" {
		t.Errorf("id %v self %v", img["id"], img["self"])
	}
	if ts, _ := img["created_at"].(string); len(ts) != len("2026-11-22T15:14:53Z") || !strings.HasSuffix(ts, "Z") {
		t.Errorf("created_at %q is not in Glance's format", ts)
	}
	if _, err := time.Parse(time.RFC3339, img["updated_at"].(string)); err != nil {
		t.Errorf("updated_at: %v", err)
	}
}

// withoutLayer copies a docker save archive leaving out its layer files
// (manifest.json still lists them).
func withoutLayer(t *testing.T, data []byte) []byte {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(h.Name, "layer.tar") {
			continue
		}
		body, _ := io.ReadAll(tr)
		tw.WriteHeader(h)
		tw.Write(body)
	}
	tw.Close()
	return out.Bytes()
}
