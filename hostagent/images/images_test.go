package images_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/docker/docker/api/types/image"

	"berth/hostagent/images"
	"berth/hostagent/testenv"
	"berth/schema"
)

func TestEnsureLoadsOnceFromImagesvc(t *testing.T) {
	cli := testenv.Docker(t)
	svc := testenv.NewImageService(t)
	dockerID, _ := testenv.UniqueBusyboxImage(t, cli)
	svc.Add(t, cli, "img-1", dockerID)
	ctx := context.Background()
	if _, err := cli.ImageRemove(ctx, dockerID, image.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	l := images.New(cli, slog.New(slog.NewTextHandler(io.Discard, nil)), images.Config{ImageURL: svc.URL, Token: svc.Token})

	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.Ensure(ctx, schema.SetImage{ID: "img-1", DockerImageID: dockerID})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Ensure #%d: %v", i, err)
		}
	}
	if got := svc.Fetches.Load(); got != 1 {
		t.Errorf("imagesvc fetches = %d, want 1 (concurrent loads deduplicated)", got)
	}
	if _, err := cli.ImageInspect(ctx, dockerID); err != nil {
		t.Errorf("image not in docker after Ensure: %v", err)
	}
	// Present now: no further download.
	if err := l.Ensure(ctx, schema.SetImage{ID: "img-1", DockerImageID: dockerID}); err != nil {
		t.Fatal(err)
	}
	if got := svc.Fetches.Load(); got != 1 {
		t.Errorf("imagesvc fetches after a present image = %d, want 1", got)
	}
}

func TestEnsureErrors(t *testing.T) {
	cli := testenv.Docker(t)
	svc := testenv.NewImageService(t)
	ctx := context.Background()
	missing := schema.SetImage{ID: "nope", DockerImageID: "sha256:" + testenv.RandomHex(32)}

	l := images.New(cli, slog.New(slog.NewTextHandler(io.Discard, nil)), images.Config{ImageURL: svc.URL, Token: svc.Token})
	if err := l.Ensure(ctx, missing); err == nil {
		t.Error("Ensure of an image imagesvc lacks succeeded")
	}
	bad := images.New(cli, slog.New(slog.NewTextHandler(io.Discard, nil)), images.Config{ImageURL: svc.URL, Token: "wrong"})
	if err := bad.Ensure(ctx, missing); err == nil {
		t.Error("Ensure with a wrong token succeeded")
	}
	// An archive that does not hold the promised ID.
	other, _ := testenv.UniqueBusyboxImage(t, cli)
	svc.Add(t, cli, "liar", other)
	if err := l.Ensure(ctx, schema.SetImage{ID: "liar", DockerImageID: missing.DockerImageID}); err == nil {
		t.Error("Ensure accepted an archive without the promised image")
	}
	if err := l.Ensure(ctx, schema.SetImage{ID: "x"}); err == nil {
		t.Error("Ensure without a docker image id succeeded")
	}
}
