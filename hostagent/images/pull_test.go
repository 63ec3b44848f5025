package images_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"testing"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"berth/hostagent/images"
	"berth/hostagent/testenv"
	"berth/imagesvc/dockerarchive/archivetest"
	"berth/imagesvc/imagesvctest"
	"berth/internal/pgtest"
	"berth/schema"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// TestEnsurePullsOnlyMissingLayers runs the agent's real pull path (the
// Loader with registry pulls, as berth-hostagent runs it) against a real
// imagesvc (PostgreSQL, blob store, registry) and the machine's Docker
// engine, and measures the bytes that crossed imagesvc's listener: a
// first pull moves its image's layers, and a host that already has an
// image's base then moves at most 1.05 × the new layer for an image on top
// of it (issue #5's goal), not the archive; on a host with neither, the
// two-layer image moves both layers.
func TestEnsurePullsOnlyMissingLayers(t *testing.T) {
	cli := testenv.Docker(t)
	env := imagesvctest.Start(t, imagesvctest.Options{})
	env.KS.AddProject("p-demo", "demo")
	tok := env.KS.Issue("p-demo", "member")
	// Random layers: no engine has them, and they do not compress.
	base := archivetest.RandomLayer(6 << 20)
	top := archivetest.RandomLayer(4 << 20)
	baseArc := archivetest.Build(archivetest.Legacy, "agentpull:base", base)
	appArc := archivetest.Build(archivetest.Legacy, "agentpull:app", base, top)
	baseImg := schema.SetImage{ID: uploadArchive(t, env, tok, "agentpull-base", baseArc.Data), DockerImageID: baseArc.ImageID}
	appImg := schema.SetImage{ID: uploadArchive(t, env, tok, "agentpull-app", appArc.Data), DockerImageID: appArc.ImageID}
	removeImages(t, cli, appArc.ImageID, baseArc.ImageID)

	l := images.New(cli, slog.New(slog.NewTextHandler(io.Discard, nil)),
		images.Config{ImageURL: env.URL, Token: imagesvctest.AgentToken, Registry: true})
	ctx := context.Background()
	reg := env.Registry.Stats()

	// pull ensures img and checks the bytes that crossed imagesvc's
	// listener against the layers it lacked: they must all have come as
	// registry blobs (an archive load would serve none), with no more than
	// 5% on top for the protocol.
	pull := func(what string, img schema.SetImage, missing int64) {
		t.Helper()
		env.Wire.Reset()
		served := reg.BlobBytesServed.Load()
		if err := l.Ensure(ctx, img); err != nil {
			t.Fatalf("%s: Ensure: %v", what, err)
		}
		wire, blobs := env.Wire.Total(), reg.BlobBytesServed.Load()-served
		t.Logf("%s: %d bytes on the wire, %d blob bytes, missing layers %d bytes (%.3fx)",
			what, wire, blobs, missing, float64(wire)/float64(missing))
		if blobs < missing {
			t.Errorf("%s: registry served %d blob bytes, want the missing layers' %d (did the archive fallback run?)", what, blobs, missing)
		}
		if max := missing * 105 / 100; wire > max {
			t.Errorf("%s: moved %d bytes, want at most 1.05 × the missing layers = %d", what, wire, max)
		}
	}
	// A host without the base: the base image's one layer travels.
	pull("first pull", baseImg, int64(len(base)))
	// The same host boots an image on top of that base: only the new layer.
	pull("pull on top of a present base", appImg, int64(len(top)))
	if _, err := cli.ImageInspect(ctx, appArc.ImageID); err != nil {
		t.Errorf("app image not in Docker after Ensure: %v", err)
	}
	// A host with neither (both images and their layers removed): the
	// two-layer image's first pull moves both layers.
	for _, id := range []string{appArc.ImageID, baseArc.ImageID} {
		if _, err := cli.ImageRemove(ctx, id, image.RemoveOptions{Force: true, PruneChildren: true}); err != nil {
			t.Fatalf("remove %s: %v", id, err)
		}
	}
	pull("first pull of the two-layer image", appImg, int64(len(base)+len(top)))

	// Docker re-reads a manifest by the digest the pull by image id
	// answered: the agent may, though its repository is no project's.
	req, _ := http.NewRequest(http.MethodHead, env.URL+"/v2/berth/image/manifests/"+appImg.ID, nil)
	req.SetBasicAuth("berth-agent", imagesvctest.AgentToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	d := resp.Header.Get("Docker-Content-Digest")
	req, _ = http.NewRequest(http.MethodGet, env.URL+"/v2/berth/image/manifests/"+d, nil)
	req.SetBasicAuth("berth-agent", imagesvctest.AgentToken)
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if d == "" || resp.StatusCode != http.StatusOK {
		t.Errorf("agent GET manifest by digest %q: %d, want 200", d, resp.StatusCode)
	}
}

// uploadArchive makes a docker-format Glance image holding archive and
// returns its id.
func uploadArchive(t *testing.T, env *imagesvctest.Env, token, name string, archive []byte) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"name": name, "container_format": "docker", "disk_format": "raw"})
	var img struct{ ID string }
	glance(t, http.MethodPost, env.URL+"/v2/images", token, "application/json", body, http.StatusCreated, &img)
	glance(t, http.MethodPut, env.URL+"/v2/images/"+img.ID+"/file", token, "application/octet-stream", archive, http.StatusNoContent, nil)
	return img.ID
}

func glance(t *testing.T, method, url, token, ct string, body []byte, want int, out any) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", token)
	req.Header.Set("Content-Type", ct)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatal(err)
		}
	}
}

// removeImages removes the images (and their layers) from Docker when the
// test ends, so runs do not pile up on the shared engine.
func removeImages(t *testing.T, cli *client.Client, ids ...string) {
	t.Cleanup(func() {
		for _, id := range ids {
			_, _ = cli.ImageRemove(context.Background(), id, image.RemoveOptions{Force: true, PruneChildren: true})
		}
	})
}
