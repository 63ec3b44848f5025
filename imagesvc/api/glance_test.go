package api_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imageimport"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/members"
	"github.com/gophercloud/gophercloud/v2/pagination"

	"berth/imagesvc/dockerarchive/archivetest"
)

func listNames(t *testing.T, c *gophercloud.ServiceClient, opts images.ListOpts) []string {
	t.Helper()
	var out []string
	err := images.List(c, opts).EachPage(context.Background(), func(_ context.Context, p pagination.Page) (bool, error) {
		imgs, err := images.ExtractImages(p)
		for _, i := range imgs {
			out = append(out, i.Name)
		}
		return true, err
	})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	slices.Sort(out)
	return out
}

func TestMembersWithGophercloud(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	owner, consumer, stranger := e.client("p1", "member"), e.client("p2", "member"), e.client("p3", "member")
	img, err := images.Create(ctx, owner, images.CreateOpts{Name: "shared-img", ContainerFormat: "bare", DiskFormat: "raw"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := images.Create(ctx, owner, images.CreateOpts{Name: "private-img", Visibility: ptr(images.ImageVisibilityPrivate)}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := members.Create(ctx, owner, priv.ID, "p2").Extract(); !gophercloud.ResponseCodeIs(err, http.StatusForbidden) {
		t.Errorf("member of a private image: got %v, want 403", err)
	}
	m, err := members.Create(ctx, owner, img.ID, "p2").Extract()
	if err != nil {
		t.Fatalf("Create member: %v", err)
	}
	if m.Status != "pending" || m.MemberID != "p2" || m.ImageID != img.ID || m.Schema != "/v2/schemas/member" {
		t.Errorf("member: %+v", m)
	}
	if _, err := members.Create(ctx, owner, img.ID, "p2").Extract(); !gophercloud.ResponseCodeIs(err, http.StatusConflict) {
		t.Errorf("duplicate member: got %v, want 409", err)
	}
	if _, err := members.Create(ctx, consumer, img.ID, "p3").Extract(); !gophercloud.ResponseCodeIs(err, http.StatusForbidden) {
		t.Errorf("a member adding members: got %v, want 403", err)
	}
	// A pending member sees the image but does not list it by default.
	if _, err := images.Get(ctx, consumer, img.ID).Extract(); err != nil {
		t.Errorf("pending member's show: %v", err)
	}
	if _, err := images.Get(ctx, stranger, img.ID).Extract(); !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		t.Errorf("stranger's show: %v, want 404", err)
	}
	if got := listNames(t, consumer, images.ListOpts{}); len(got) != 0 {
		t.Errorf("pending member's list: %v", got)
	}
	if got := listNames(t, consumer, images.ListOpts{MemberStatus: images.ImageMemberStatusPending}); !slices.Equal(got, []string{"shared-img"}) {
		t.Errorf("member_status=pending list: %v", got)
	}
	// Only the member decides its status.
	if _, err := members.Update(ctx, owner, img.ID, "p2", members.UpdateOpts{Status: "accepted"}).Extract(); !gophercloud.ResponseCodeIs(err, http.StatusForbidden) {
		t.Errorf("owner accepting for the member: got %v, want 403", err)
	}
	if _, err := members.Update(ctx, consumer, img.ID, "p2", members.UpdateOpts{Status: "maybe"}).Extract(); !gophercloud.ResponseCodeIs(err, http.StatusBadRequest) {
		t.Errorf("bad status: got %v, want 400", err)
	}
	m, err = members.Update(ctx, consumer, img.ID, "p2", members.UpdateOpts{Status: "accepted"}).Extract()
	if err != nil || m.Status != "accepted" {
		t.Fatalf("accept: %+v %v", m, err)
	}
	// openstacksdk (openstack image set --accept) also sends "member".
	if r := e.do("PUT", "/v2/images/"+img.ID+"/members/p2", e.ks.Issue("p2", "member"),
		[]byte(`{"status": "accepted", "member": "p2"}`), "Content-Type", "application/json"); r.status != 200 {
		t.Errorf("member update with openstacksdk's body: %d %s", r.status, r.body)
	}
	if got := listNames(t, consumer, images.ListOpts{}); !slices.Equal(got, []string{"shared-img"}) {
		t.Errorf("accepted member's list: %v", got)
	}
	if got := listNames(t, consumer, images.ListOpts{Visibility: images.ImageVisibilityShared}); !slices.Equal(got, []string{"shared-img"}) {
		t.Errorf("visibility=shared list: %v", got)
	}
	// Lists: the owner sees every member, a member only itself.
	if _, err := members.Create(ctx, owner, img.ID, "p4").Extract(); err != nil {
		t.Fatal(err)
	}
	count := func(c *gophercloud.ServiceClient) int {
		pages, err := members.List(c, img.ID).AllPages(ctx)
		if err != nil {
			t.Fatalf("List members: %v", err)
		}
		ms, _ := members.ExtractMembers(pages)
		return len(ms)
	}
	if n := count(owner); n != 2 {
		t.Errorf("owner sees %d members, want 2", n)
	}
	if n := count(consumer); n != 1 {
		t.Errorf("member sees %d members, want 1 (itself)", n)
	}
	if _, err := members.Get(ctx, consumer, img.ID, "p4").Extract(); !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		t.Errorf("member showing another member: %v, want 404", err)
	}
	// Data of a shared image is the member's to download.
	if err := imagedata.Upload(ctx, owner, img.ID, bytes.NewReader([]byte("shared data"))).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if _, err := imagedata.Download(ctx, consumer, img.ID).Extract(); err != nil {
		t.Errorf("member download: %v", err)
	}
	if err := images.Delete(ctx, consumer, img.ID).ExtractErr(); !gophercloud.ResponseCodeIs(err, http.StatusForbidden) {
		t.Errorf("member deleting the image: %v, want 403", err)
	}
	if err := members.Delete(ctx, owner, img.ID, "p2").ExtractErr(); err != nil {
		t.Fatalf("Delete member: %v", err)
	}
	if _, err := images.Get(ctx, consumer, img.ID).Extract(); !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		t.Errorf("removed member's show: %v, want 404", err)
	}
}

func TestDeactivateReactivate(t *testing.T) {
	e := newEnv(t)
	tok := e.ks.Issue("p1", "member")
	admin := e.ks.Issue("adm", "admin")
	id := e.create(tok, `{"name": "d", "container_format": "bare", "disk_format": "raw", "visibility": "community"}`)["id"].(string)
	glanceError(t, e.do("POST", "/v2/images/"+id+"/actions/deactivate", admin, nil), 400) // queued
	if r := e.do("PUT", "/v2/images/"+id+"/file", tok, []byte("data"), "Content-Type", "application/octet-stream"); r.status != 204 {
		t.Fatal(r.status)
	}
	glanceError(t, e.do("POST", "/v2/images/"+id+"/actions/deactivate", tok, nil), 403)
	for i := 0; i < 2; i++ { // deactivating twice is fine
		if r := e.do("POST", "/v2/images/"+id+"/actions/deactivate", admin, nil); r.status != 204 {
			t.Fatalf("deactivate: %d %s", r.status, r.body)
		}
	}
	if s := e.do("GET", "/v2/images/"+id, tok, nil).json(t)["status"]; s != "deactivated" {
		t.Errorf("status %v", s)
	}
	glanceError(t, e.do("GET", "/v2/images/"+id+"/file", tok, nil), 403)
	glanceError(t, e.do("GET", "/v2/images/"+id+"/file", e.ks.Issue("p2", "member"), nil), 403)
	if r := e.do("GET", "/v2/images/"+id+"/file", admin, nil); r.status != 200 || string(r.body) != "data" {
		t.Errorf("admin download of a deactivated image: %d", r.status)
	}
	glanceError(t, e.do("POST", "/v2/images/"+id+"/actions/reactivate", tok, nil), 403)
	if r := e.do("POST", "/v2/images/"+id+"/actions/reactivate", admin, nil); r.status != 204 {
		t.Fatalf("reactivate: %d", r.status)
	}
	if r := e.do("GET", "/v2/images/"+id+"/file", tok, nil); r.status != 200 {
		t.Errorf("download after reactivate: %d", r.status)
	}
}

func waitStatus(t *testing.T, c *gophercloud.ServiceClient, id string, want images.ImageStatus) *images.Image {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		img, err := images.Get(context.Background(), c, id).Extract()
		if err != nil {
			t.Fatal(err)
		}
		if img.Status == want {
			return img
		}
		if time.Now().After(deadline) {
			t.Fatalf("image %s is %s, want %s", id, img.Status, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestInteroperableImportWithGophercloud(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.client("p1", "member")
	info, err := imageimport.Get(ctx, c).Extract()
	if err != nil || !slices.Equal(info.ImportMethods.Value, []string{"glance-direct"}) {
		t.Fatalf("import info: %+v %v", info, err)
	}
	for _, tc := range []struct {
		name, cf string
		data     []byte
	}{
		{"plain", "bare", bytes.Repeat([]byte("import me "), 10000)},
		{"docker", "docker", archivetest.Build(archivetest.Legacy, "i:1", archivetest.RandomLayer(256<<10)).Data},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := images.Create(ctx, c, images.CreateOpts{Name: "imported", ContainerFormat: tc.cf, DiskFormat: "raw"}).Extract()
			if err != nil {
				t.Fatal(err)
			}
			if err := imageimport.Create(ctx, c, img.ID, imageimport.CreateOpts{Name: imageimport.GlanceDirectMethod}).ExtractErr(); !gophercloud.ResponseCodeIs(err, http.StatusConflict) {
				t.Errorf("import before staging: got %v, want 409", err)
			}
			if err := imagedata.Stage(ctx, c, img.ID, bytes.NewReader(tc.data)).ExtractErr(); err != nil {
				t.Fatalf("Stage: %v", err)
			}
			if got, _ := images.Get(ctx, c, img.ID).Extract(); got.Status != "uploading" {
				t.Errorf("after stage: %s, want uploading", got.Status)
			}
			if err := imagedata.Upload(ctx, c, img.ID, bytes.NewReader(tc.data)).ExtractErr(); !gophercloud.ResponseCodeIs(err, http.StatusConflict) {
				t.Errorf("upload to a staged image: got %v, want 409", err)
			}
			if err := imageimport.Create(ctx, c, img.ID, imageimport.CreateOpts{Name: imageimport.WebDownloadMethod, URI: "http://x"}).ExtractErr(); !gophercloud.ResponseCodeIs(err, http.StatusBadRequest) {
				t.Errorf("web-download: got %v, want 400", err)
			}
			if err := imageimport.Create(ctx, c, img.ID, imageimport.CreateOpts{Name: imageimport.GlanceDirectMethod}).ExtractErr(); err != nil {
				t.Fatalf("Import: %v", err)
			}
			got := waitStatus(t, c, img.ID, images.ImageStatusActive)
			sum := md5.Sum(tc.data)
			if got.Checksum != hex.EncodeToString(sum[:]) || got.SizeBytes != int64(len(tc.data)) {
				t.Errorf("imported: checksum %s size %d", got.Checksum, got.SizeBytes)
			}
			rc, err := imagedata.Download(ctx, c, img.ID).Extract()
			if err != nil {
				t.Fatal(err)
			}
			var back bytes.Buffer
			back.ReadFrom(rc)
			rc.Close()
			if !bytes.Equal(back.Bytes(), tc.data) {
				t.Errorf("download after import differs")
			}
			if _, err := e.blobs.Stat(ctx, "staging/"+img.ID); err == nil {
				t.Errorf("the staged data stayed after the import")
			}
		})
	}
	// A bad docker archive fails the import and puts the image back to queued.
	img, _ := images.Create(ctx, c, images.CreateOpts{Name: "bad", ContainerFormat: "docker", DiskFormat: "raw"}).Extract()
	if err := imagedata.Stage(ctx, c, img.ID, bytes.NewReader([]byte("not an archive"))).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	if err := imageimport.Create(ctx, c, img.ID, imageimport.CreateOpts{Name: imageimport.GlanceDirectMethod}).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, img.ID, images.ImageStatusQueued)
}

func TestTimeFiltersWithGophercloud(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	c := e.client("p1", "member")
	first, _ := images.Create(ctx, c, images.CreateOpts{Name: "first"}).Extract()
	time.Sleep(1100 * time.Millisecond) // Glance's timestamps have second precision
	second, _ := images.Create(ctx, c, images.CreateOpts{Name: "second"}).Extract()
	if got := listNames(t, c, images.ListOpts{CreatedAtQuery: &images.ImageDateQuery{Date: second.CreatedAt, Filter: images.FilterGTE}}); !slices.Equal(got, []string{"second"}) {
		t.Errorf("created_at=gte:second: %v", got)
	}
	if got := listNames(t, c, images.ListOpts{CreatedAtQuery: &images.ImageDateQuery{Date: second.CreatedAt, Filter: images.FilterLT}}); !slices.Equal(got, []string{"first"}) {
		t.Errorf("created_at=lt:second: %v", got)
	}
	if got := listNames(t, c, images.ListOpts{UpdatedAtQuery: &images.ImageDateQuery{Date: first.UpdatedAt}}); !slices.Equal(got, []string{"first"}) {
		t.Errorf("updated_at=first: %v", got)
	}
	glanceError(t, e.do("GET", "/v2/images?created_at=gte:yesterday", e.ks.Issue("p1", "member"), nil), 400)
}

func TestQuotaAndChecksum(t *testing.T) {
	e := newEnv(t, envOpts{maxImageSize: 100 << 10})
	tok := e.ks.Issue("p1", "member")
	octet := []string{"Content-Type", "application/octet-stream"}
	big := bytes.Repeat([]byte("x"), 200<<10)
	for _, path := range []string{"file", "stage"} {
		id := e.create(tok, `{"name": "q", "container_format": "bare", "disk_format": "raw"}`)["id"].(string)
		glanceError(t, e.do("PUT", "/v2/images/"+id+"/"+path, tok, big, octet...), 413)
		if s := e.do("GET", "/v2/images/"+id, tok, nil).json(t)["status"]; s != "queued" {
			t.Errorf("after a 413 on %s: status %v, want queued", path, s)
		}
	}
	// Without a Content-Length the cap still holds (chunked upload).
	id := e.create(tok, `{"name": "q", "container_format": "docker", "disk_format": "raw"}`)["id"].(string)
	arc := archivetest.Build(archivetest.Legacy, "q:1", archivetest.RandomLayer(150<<10))
	req, _ := http.NewRequest("PUT", e.srv.URL+"/v2/images/"+id+"/file", bytes.NewReader(arc.Data))
	req.ContentLength = -1
	req.Body = readerOnly{bytes.NewReader(arc.Data)}
	req.Header.Set("X-Auth-Token", tok)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("chunked docker upload over the cap: %d, want 413", resp.StatusCode)
	}

	// A Content-MD5 that does not match: 400, the image stays queued.
	data := []byte("checked data")
	sum := md5.Sum(data)
	wrong := md5.Sum([]byte("other"))
	id = e.create(tok, `{"name": "c", "container_format": "bare", "disk_format": "raw"}`)["id"].(string)
	glanceError(t, e.do("PUT", "/v2/images/"+id+"/file", tok, data, "Content-Type", "application/octet-stream",
		"Content-MD5", hex.EncodeToString(wrong[:])), 400)
	if s := e.do("GET", "/v2/images/"+id, tok, nil).json(t)["status"]; s != "queued" {
		t.Errorf("after a checksum mismatch: status %v, want queued", s)
	}
	if r := e.do("PUT", "/v2/images/"+id+"/file", tok, data, "Content-Type", "application/octet-stream",
		"Content-MD5", base64.StdEncoding.EncodeToString(sum[:])); r.status != 204 {
		t.Errorf("upload with a matching base64 Content-MD5: %d %s", r.status, r.body)
	}
	glanceError(t, e.do("PUT", "/v2/images/"+id+"/file", tok, data, octet...), 409)
	small := archivetest.Build(archivetest.Legacy, "c:1", archivetest.LayerTar(map[string]string{"a": "b"}))
	id = e.create(tok, `{"name": "c", "container_format": "docker", "disk_format": "raw"}`)["id"].(string)
	glanceError(t, e.do("PUT", "/v2/images/"+id+"/file", tok, small.Data, "Content-Type", "application/octet-stream",
		"Content-MD5", hex.EncodeToString(wrong[:])), 400)
	if s := e.do("GET", "/v2/images/"+id, tok, nil).json(t)["status"]; s != "queued" {
		t.Errorf("docker upload with a checksum mismatch: status %v, want queued", s)
	}
}

type readerOnly struct{ r *bytes.Reader }

func (r readerOnly) Read(p []byte) (int, error) { return r.r.Read(p) }
func (r readerOnly) Close() error               { return nil }
