package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"berth/imagesvc/store"
	"berth/internal/apierr"
	"berth/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// mustOpen returns a store on a fresh, migrated database whose clock
// ticks one second per call, starting at a fixed time.
func mustOpen(t *testing.T) *store.Store {
	t.Helper()
	db, err := store.Open(t.Context(), pgtest.DSN(t), 10*time.Second)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	s := store.New(db)
	now := time.Date(2026, 11, 22, 15, 0, 0, 0, time.UTC)
	s.Now = func() time.Time { now = now.Add(time.Second); return now }
	return s
}

func ptr[T any](v T) *T { return &v }

func newImage(owner, vis, name string) *store.Image {
	return &store.Image{ID: uuid.NewString(), Name: ptr(name), Owner: ptr(owner),
		Status: store.StatusQueued, Visibility: vis}
}

func TestCreateFindUpdateDelete(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t)
	img := newImage("p1", store.VisibilityPrivate, "one")
	img.Tags = store.Tags{"a", "b"}
	img.Properties = store.Properties{"os_distro": "alpine"}
	if err := s.CreateImage(ctx, img); err != nil {
		t.Fatalf("CreateImage: %v", err)
	}
	if err := s.CreateImage(ctx, img); !apierr.Is(err, apierr.Conflict) {
		t.Fatalf("CreateImage with a used id: got %v, want Conflict", err)
	}
	got, err := s.FindImageByID(ctx, img.ID)
	if err != nil {
		t.Fatalf("FindImageByID: %v", err)
	}
	if diff := cmp.Diff(img, got); diff != "" {
		t.Errorf("FindImageByID (-want +got):\n%s", diff)
	}
	for _, id := range []string{uuid.NewString(), "not-a-uuid", ""} {
		if _, err := s.FindImageByID(ctx, id); !apierr.Is(err, apierr.NotFound) {
			t.Errorf("FindImageByID(%q): got %v, want NotFound", id, err)
		}
	}

	up, err := s.UpdateImage(ctx, img.ID, func(i *store.Image) error {
		i.Name = ptr("renamed")
		i.Properties["k"] = "v"
		return nil
	})
	if err != nil {
		t.Fatalf("UpdateImage: %v", err)
	}
	if *up.Name != "renamed" || up.Properties["k"] != "v" || !up.UpdatedAt.After(img.UpdatedAt) {
		t.Errorf("UpdateImage: got name %q props %v updated %v", *up.Name, up.Properties, up.UpdatedAt)
	}
	// An error from fn changes nothing.
	_, err = s.UpdateImage(ctx, img.ID, func(i *store.Image) error {
		i.Name = ptr("lost")
		return apierr.Forbiddenf("no")
	})
	if !apierr.Is(err, apierr.Forbidden) {
		t.Fatalf("UpdateImage with failing fn: got %v", err)
	}
	if got, _ := s.FindImageByID(ctx, img.ID); *got.Name != "renamed" {
		t.Errorf("a failed update changed the name to %q", *got.Name)
	}

	if _, err := s.DeleteImage(ctx, img.ID, func(*store.Image) error { return apierr.Forbiddenf("protected") }); !apierr.Is(err, apierr.Forbidden) {
		t.Fatalf("DeleteImage refused by check: got %v", err)
	}
	del, err := s.DeleteImage(ctx, img.ID, func(*store.Image) error { return nil })
	if err != nil || del.ID != img.ID {
		t.Fatalf("DeleteImage: got %v, %v", del, err)
	}
	if _, err := s.FindImageByID(ctx, img.ID); !apierr.Is(err, apierr.NotFound) {
		t.Errorf("after delete: got %v, want NotFound", err)
	}
	if _, err := s.DeleteImage(ctx, img.ID, func(*store.Image) error { return nil }); !apierr.Is(err, apierr.NotFound) {
		t.Errorf("second delete: got %v, want NotFound", err)
	}
}

func TestUploadLifecycle(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t)
	img := newImage("p1", store.VisibilityPrivate, "up")
	if err := s.CreateImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	ok := func(*store.Image) error { return nil }
	if _, err := s.StartUpload(ctx, img.ID, time.Minute, ok); err != nil {
		t.Fatalf("StartUpload: %v", err)
	}
	if _, err := s.StartUpload(ctx, img.ID, time.Minute, ok); !apierr.Is(err, apierr.Conflict) {
		t.Fatalf("second StartUpload while saving: got %v, want Conflict", err)
	}
	if err := s.AbortUpload(ctx, img.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.FindImageByID(ctx, img.ID); got.Status != store.StatusQueued {
		t.Fatalf("after abort: status %s, want queued", got.Status)
	}
	if _, err := s.FinishUpload(ctx, img.ID, store.Upload{}); !apierr.Is(err, apierr.Conflict) {
		t.Fatalf("FinishUpload while queued: got %v, want Conflict", err)
	}
	if _, err := s.StartUpload(ctx, img.ID, time.Minute, ok); err != nil {
		t.Fatal(err)
	}
	layers := []store.ImageLayer{
		{ChainID: "sha256:c1", DiffID: "sha256:d1", Size: 10},
		{ChainID: "sha256:c2", DiffID: "sha256:d2", Size: 20},
	}
	done, err := s.FinishUpload(ctx, img.ID, store.Upload{BlobKey: "images/" + img.ID, Size: 30,
		Checksum: "md5", OSHashAlgo: "sha512", OSHashValue: "sha",
		Properties: map[string]string{"docker_image_id": "sha256:cfg"}, Docker: &store.DockerData{Layers: layers}})
	if err != nil {
		t.Fatalf("FinishUpload: %v", err)
	}
	if done.Status != store.StatusActive || *done.Size != 30 || *done.Checksum != "md5" ||
		done.Properties["docker_image_id"] != "sha256:cfg" || *done.TopLayer != "sha256:c2" {
		t.Errorf("FinishUpload: got %+v", done)
	}
	if _, err := s.StartUpload(ctx, img.ID, time.Minute, ok); !apierr.Is(err, apierr.Conflict) {
		t.Errorf("StartUpload on an active image: got %v, want Conflict", err)
	}

	// A second image sharing the base layer reuses it.
	img2 := newImage("p1", store.VisibilityPrivate, "up2")
	if err := s.CreateImage(ctx, img2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartUpload(ctx, img2.ID, time.Minute, ok); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FinishUpload(ctx, img2.ID, store.Upload{BlobKey: "images/" + img2.ID,
		Docker: &store.DockerData{Layers: []store.ImageLayer{layers[0], {ChainID: "sha256:c3", DiffID: "sha256:d3", Size: 5}}}}); err != nil {
		t.Fatal(err)
	}
	chain, err := s.LayerChain(ctx, "sha256:c3")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, l := range chain {
		ids = append(ids, l.ChainID)
	}
	if diff := cmp.Diff([]string{"sha256:c1", "sha256:c3"}, ids); diff != "" {
		t.Errorf("LayerChain (-want +got):\n%s", diff)
	}
	if chain[1].ParentChainID == nil || *chain[1].ParentChainID != "sha256:c1" {
		t.Errorf("c3's parent: got %v, want sha256:c1", chain[1].ParentChainID)
	}
	if _, err := s.LayerChain(ctx, "sha256:none"); !apierr.Is(err, apierr.NotFound) {
		t.Errorf("LayerChain of unknown layer: got %v", err)
	}

	// Deleted during upload: FinishUpload is NotFound.
	img3 := newImage("p1", store.VisibilityPrivate, "gone")
	if err := s.CreateImage(ctx, img3); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartUpload(ctx, img3.ID, time.Minute, ok); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteImage(ctx, img3.ID, ok); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FinishUpload(ctx, img3.ID, store.Upload{}); !apierr.Is(err, apierr.NotFound) {
		t.Errorf("FinishUpload of a deleted image: got %v, want NotFound", err)
	}
}

func names(imgs []*store.Image) []string {
	out := []string{}
	for _, i := range imgs {
		out = append(out, *i.Name)
	}
	return out
}

func TestFindImages(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t)
	mk := func(owner, vis, name string, edit func(*store.Image)) {
		img := newImage(owner, vis, name)
		if edit != nil {
			edit(img)
		}
		if err := s.CreateImage(ctx, img); err != nil {
			t.Fatal(err)
		}
	}
	mk("p1", "private", "p1-private", func(i *store.Image) { i.Tags = store.Tags{"x", "y"} })
	mk("p1", "shared", "p1-shared", nil)
	mk("p1", "public", "p1-public", func(i *store.Image) { i.Tags = store.Tags{"x"} })
	mk("p1", "community", "p1-community", nil)
	mk("p2", "private", "p2-private", func(i *store.Image) { i.Properties = store.Properties{"os_distro": "alpine"} })
	mk("p2", "community", "p2-community", nil)
	mk("p2", "public", "p2-hidden", func(i *store.Image) { i.Hidden = true })

	p1 := store.Viewer{ProjectID: "p1"}
	asc := []store.SortKey{{Key: "name"}}
	for _, tc := range []struct {
		name string
		f    store.ImageFilter
		want []string
	}{
		{"default for p1", store.ImageFilter{Viewer: p1, Sort: asc},
			[]string{"p1-community", "p1-private", "p1-public", "p1-shared"}},
		{"all for p1", store.ImageFilter{Viewer: p1, Visibility: "all", Sort: asc},
			[]string{"p1-community", "p1-private", "p1-public", "p1-shared", "p2-community"}},
		{"community", store.ImageFilter{Viewer: p1, Visibility: "community", Sort: asc},
			[]string{"p1-community", "p2-community"}},
		{"private is only one's own", store.ImageFilter{Viewer: p1, Visibility: "private", Sort: asc},
			[]string{"p1-private"}},
		{"admin sees all", store.ImageFilter{Viewer: store.Viewer{ProjectID: "p3", Admin: true}, Sort: asc},
			[]string{"p1-community", "p1-private", "p1-public", "p1-shared", "p2-community", "p2-private"}},
		{"hidden", store.ImageFilter{Viewer: p1, Hidden: true, Sort: asc}, []string{"p2-hidden"}},
		{"tags are all-of", store.ImageFilter{Viewer: p1, Tags: []string{"x", "y"}, Sort: asc}, []string{"p1-private"}},
		{"tag", store.ImageFilter{Viewer: p1, Tags: []string{"x"}, Sort: asc}, []string{"p1-private", "p1-public"}},
		{"names in", store.ImageFilter{Viewer: p1, Names: []string{"p1-shared", "p2-private"}, Sort: asc}, []string{"p1-shared"}},
		{"property", store.ImageFilter{Viewer: store.Viewer{Admin: true}, Properties: map[string]string{"os_distro": "alpine"}}, []string{"p2-private"}},
		{"owner", store.ImageFilter{Viewer: p1, Owner: ptr("p1"), Visibility: "public"}, []string{"p1-public"}},
		{"default order is newest first", store.ImageFilter{Viewer: p1},
			[]string{"p1-community", "p1-public", "p1-shared", "p1-private"}},
		{"desc by name", store.ImageFilter{Viewer: p1, Sort: []store.SortKey{{Key: "name", Desc: true}}},
			[]string{"p1-shared", "p1-public", "p1-private", "p1-community"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.FindImages(ctx, tc.f)
			if err != nil {
				t.Fatalf("FindImages: %v", err)
			}
			if diff := cmp.Diff(tc.want, names(got)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}

	t.Run("pages cover everything once", func(t *testing.T) {
		for _, sort := range [][]store.SortKey{nil, asc, {{Key: "status"}, {Key: "name", Desc: true}}, {{Key: "size"}}} {
			all, err := s.FindImages(ctx, store.ImageFilter{Viewer: store.Viewer{Admin: true}, Sort: sort})
			if err != nil {
				t.Fatal(err)
			}
			var paged []*store.Image
			marker := ""
			for i := 0; i < 10; i++ {
				page, err := s.FindImages(ctx, store.ImageFilter{Viewer: store.Viewer{Admin: true}, Sort: sort, Limit: 2, Marker: marker})
				if err != nil {
					t.Fatal(err)
				}
				paged = append(paged, page...)
				if len(page) < 2 {
					break
				}
				marker = page[len(page)-1].ID
			}
			if diff := cmp.Diff(names(all), names(paged)); diff != "" {
				t.Errorf("sort %v: paged listing differs (-all +paged):\n%s", sort, diff)
			}
		}
	})

	t.Run("bad marker and sort key", func(t *testing.T) {
		all, _ := s.FindImages(ctx, store.ImageFilter{Viewer: store.Viewer{Admin: true}, Names: []string{"p2-private"}})
		if _, err := s.FindImages(ctx, store.ImageFilter{Viewer: p1, Marker: all[0].ID}); !apierr.Is(err, apierr.Invalid) {
			t.Errorf("marker of an image p1 cannot see: got %v, want Invalid", err)
		}
		if _, err := s.FindImages(ctx, store.ImageFilter{Viewer: p1, Marker: uuid.NewString()}); !apierr.Is(err, apierr.Invalid) {
			t.Errorf("unknown marker: got %v, want Invalid", err)
		}
		if _, err := s.FindImages(ctx, store.ImageFilter{Viewer: p1, Sort: []store.SortKey{{Key: "owner; DROP TABLE images"}}}); !apierr.Is(err, apierr.Invalid) {
			t.Errorf("bad sort key: got %v, want Invalid", err)
		}
	})
}

func TestLeasesRecoverInterruptedWork(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t) // the clock ticks a second per call
	ok := func(*store.Image) error { return nil }
	saving := newImage("p1", store.VisibilityPrivate, "saving")
	staging := newImage("p1", store.VisibilityPrivate, "staging")
	importing := newImage("p1", store.VisibilityPrivate, "importing")
	fresh := newImage("p1", store.VisibilityPrivate, "fresh")
	for _, img := range []*store.Image{saving, staging, importing, fresh} {
		if err := s.CreateImage(ctx, img); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.StartUpload(ctx, saving.ID, 30*time.Second, ok); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartStage(ctx, staging.ID, 30*time.Second, ok); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartStage(ctx, importing.ID, 30*time.Second, ok); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FinishStage(ctx, importing.ID, "staging/"+importing.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartImport(ctx, importing.ID, 30*time.Second, ok); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartUpload(ctx, fresh.ID, time.Hour, ok); err != nil {
		t.Fatal(err)
	}
	// Only a lease that ran out is recovered.
	if ids, err := s.RecoverExpiredLeases(ctx); err != nil || len(ids) != 0 {
		t.Fatalf("RecoverExpiredLeases right away: %v %v, want none", ids, err)
	}
	if ok, err := s.ExtendLease(ctx, saving.ID, 30*time.Second, store.StatusSaving); err != nil || !ok {
		t.Fatalf("ExtendLease: %v %v", ok, err)
	}
	if ok, _ := s.ExtendLease(ctx, saving.ID, time.Second, store.StatusImporting); ok {
		t.Error("ExtendLease with the wrong status succeeded")
	}
	base := s.Now().Add(10 * time.Minute)
	s.Now = func() time.Time { base = base.Add(time.Second); return base }
	ids, err := s.RecoverExpiredLeases(ctx)
	if err != nil || len(ids) != 3 {
		t.Fatalf("RecoverExpiredLeases later: %v %v, want the 3 images whose lease ran out", ids, err)
	}
	want := map[string]string{saving.ID: store.StatusQueued, staging.ID: store.StatusQueued,
		importing.ID: store.StatusUploading}
	for id, status := range want {
		got, _ := s.FindImageByID(ctx, id)
		if got.Status != status || got.LeaseExpiresAt != nil {
			t.Errorf("%s: got %s (lease %v), want %s without a lease", *got.Name, got.Status, got.LeaseExpiresAt, status)
		}
	}
	if got, _ := s.FindImageByID(ctx, fresh.ID); got.Status != store.StatusSaving {
		t.Errorf("an upload whose lease runs still was recovered: %s", got.Status)
	}
	// The staged data of the interrupted import can be imported again.
	if _, err := s.StartImport(ctx, importing.ID, time.Minute, ok); err != nil {
		t.Errorf("import again after recovery: %v", err)
	}
}

func TestMembersAndSharedVisibility(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t)
	shared := newImage("p1", store.VisibilityShared, "shared")
	private := newImage("p1", store.VisibilityPrivate, "private")
	for _, img := range []*store.Image{shared, private} {
		if err := s.CreateImage(ctx, img); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.AddMember(ctx, shared.ID, "p2", 128); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddMember(ctx, shared.ID, "p2", 128); !apierr.Is(err, apierr.Conflict) {
		t.Errorf("second AddMember: got %v, want Conflict", err)
	}
	if _, err := s.AddMember(ctx, shared.ID, "p3", 1); !apierr.Is(err, apierr.TooLarge) {
		t.Errorf("AddMember past the quota: got %v, want TooLarge", err)
	}
	if _, err := s.AddMember(ctx, private.ID, "p2", 128); err != nil {
		t.Fatal(err)
	}
	p2 := store.Viewer{ProjectID: "p2"}
	list := func(f store.ImageFilter) []string {
		t.Helper()
		f.Viewer = p2
		imgs, err := s.FindImages(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		return names(imgs)
	}
	if ok, _ := s.CanSee(ctx, p2, shared); !ok {
		t.Error("a pending member cannot see the shared image")
	}
	if ok, _ := s.CanSee(ctx, p2, private); ok {
		t.Error("a member of a private image sees it (only shared images have members)")
	}
	if got := list(store.ImageFilter{}); len(got) != 0 {
		t.Errorf("default list while pending: %v, want nothing", got)
	}
	if got := list(store.ImageFilter{MemberStatus: "pending"}); !cmp.Equal(got, []string{"shared"}) {
		t.Errorf("member_status=pending: %v", got)
	}
	if _, err := s.UpdateMember(ctx, shared.ID, "p2", store.MemberAccepted); err != nil {
		t.Fatal(err)
	}
	if got := list(store.ImageFilter{}); !cmp.Equal(got, []string{"shared"}) {
		t.Errorf("default list once accepted: %v", got)
	}
	if got := list(store.ImageFilter{Visibility: "shared"}); !cmp.Equal(got, []string{"shared"}) {
		t.Errorf("visibility=shared: %v", got)
	}
	if got := list(store.ImageFilter{MemberStatus: "rejected"}); len(got) != 0 {
		t.Errorf("member_status=rejected: %v", got)
	}
	ms, err := s.FindMembers(ctx, shared.ID)
	if err != nil || len(ms) != 1 || ms[0].MemberID != "p2" || ms[0].Status != store.MemberAccepted {
		t.Errorf("FindMembers: %+v %v", ms, err)
	}
	if err := s.DeleteMember(ctx, shared.ID, "p2"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMember(ctx, shared.ID, "p2"); !apierr.Is(err, apierr.NotFound) {
		t.Errorf("second DeleteMember: %v", err)
	}
	if ok, _ := s.CanSee(ctx, p2, shared); ok {
		t.Error("a removed member still sees the image")
	}
}

func TestTimeFilters(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t)
	var made []*store.Image
	for _, n := range []string{"a", "b", "c"} {
		img := newImage("p1", store.VisibilityPrivate, n)
		if err := s.CreateImage(ctx, img); err != nil {
			t.Fatal(err)
		}
		made = append(made, img)
	}
	v := store.Viewer{ProjectID: "p1"}
	for _, tc := range []struct {
		f    store.TimeFilter
		want []string
	}{
		{store.TimeFilter{Op: "gte", Time: made[1].CreatedAt}, []string{"c", "b"}},
		{store.TimeFilter{Op: "gt", Time: made[1].CreatedAt}, []string{"c"}},
		{store.TimeFilter{Op: "lt", Time: made[1].CreatedAt}, []string{"a"}},
		{store.TimeFilter{Op: "eq", Time: made[0].CreatedAt}, []string{"a"}},
		{store.TimeFilter{Op: "neq", Time: made[0].CreatedAt}, []string{"c", "b"}},
	} {
		imgs, err := s.FindImages(ctx, store.ImageFilter{Viewer: v, CreatedAt: []store.TimeFilter{tc.f}})
		if err != nil {
			t.Fatal(err)
		}
		if got := names(imgs); !cmp.Equal(got, tc.want) {
			t.Errorf("created_at=%s:%s: got %v, want %v", tc.f.Op, tc.f.Time, got, tc.want)
		}
	}
}

func TestProjectsAndTags(t *testing.T) {
	ctx := context.Background()
	s := mustOpen(t)
	if err := s.NoteProject(ctx, store.Project{ID: "id1", Name: "Demo", DomainID: "default"}); err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"id1", "demo", "DEMO"} {
		if p, err := s.FindProject(ctx, ref); err != nil || p.ID != "id1" {
			t.Errorf("FindProject(%q): %+v %v", ref, p, err)
		}
	}
	// The name moves to a new project (the old one was deleted and a new
	// one made with its name).
	if err := s.NoteProject(ctx, store.Project{ID: "id2", Name: "demo", DomainID: "default"}); err != nil {
		t.Fatal(err)
	}
	if p, err := s.FindProject(ctx, "demo"); err != nil || p.ID != "id2" {
		t.Errorf("FindProject after the name moved: %+v %v", p, err)
	}
	if _, err := s.FindProject(ctx, "nobody"); !apierr.Is(err, apierr.NotFound) {
		t.Errorf("FindProject(nobody): %v", err)
	}
	img := newImage("id2", store.VisibilityShared, "app:1")
	if err := s.CreateImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTag(ctx, store.Tag{ProjectID: "id2", Repository: "app", Tag: "1", ImageID: img.ID}); err != nil {
		t.Fatal(err)
	}
	if tag, err := s.FindTag(ctx, "id2", "app", "1"); err != nil || tag.ImageID != img.ID {
		t.Errorf("FindTag: %+v %v", tag, err)
	}
	if _, err := s.DeleteImage(ctx, img.ID, func(*store.Image) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.FindTag(ctx, "id2", "app", "1"); !apierr.Is(err, apierr.NotFound) {
		t.Errorf("a tag outlived its image: %v", err)
	}
}
