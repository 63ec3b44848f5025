package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"berth/imagesvc/dockerarchive/archivetest"
	"berth/imagesvc/imagesvctest"
	"berth/imagesvc/registry"
	"berth/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// dockerCLI runs the docker CLI against the machine's Docker engine with a
// private client config (so logins do not touch the user's).
type dockerCLI struct {
	t      *testing.T
	config string
}

// needDocker returns a docker CLI, skipping the test when there is no
// Docker engine (failing under BERTH_REQUIRE_REAL=1).
func needDocker(t *testing.T) *dockerCLI {
	t.Helper()
	d := &dockerCLI{t: t, config: t.TempDir()}
	if _, err := exec.LookPath("docker"); err == nil {
		if _, err := d.run("version", "--format", "{{.Server.Version}}"); err == nil {
			return d
		}
	}
	if os.Getenv(pgtest.EnvRequireReal) == "1" {
		t.Fatalf("no Docker engine answers (and %s=1)", pgtest.EnvRequireReal)
	}
	t.Skip("no Docker engine answers; start dockerd to run the push/pull tests")
	return nil
}

func (d *dockerCLI) run(args ...string) (string, error) {
	return d.runIn(nil, args...)
}

func (d *dockerCLI) runIn(stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+d.config)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

func (d *dockerCLI) must(args ...string) string {
	d.t.Helper()
	out, err := d.run(args...)
	if err != nil {
		d.t.Fatal(err)
	}
	return out
}

// load loads an archive into the engine and removes it when the test ends.
func (d *dockerCLI) load(a archivetest.Archive, tags ...string) {
	d.t.Helper()
	if _, err := d.runIn(a.Data, "load", "-q"); err != nil {
		d.t.Fatal(err)
	}
	d.cleanup(a.ImageID, tags...)
}

// cleanup removes the image (and tags) from the engine at the end.
func (d *dockerCLI) cleanup(id string, tags ...string) {
	d.t.Cleanup(func() {
		for _, tag := range tags {
			d.run("rmi", tag)
		}
		d.run("rmi", "-f", id)
	})
}

func (d *dockerCLI) imageID(ref string) string {
	d.t.Helper()
	return d.must("image", "inspect", "--format", "{{.Id}}", ref)
}

// setup starts imagesvc with a user alice (member of project "demo",
// whose default project it is) and logs the docker CLI in.
func setup(t *testing.T) (*imagesvctest.Env, *dockerCLI) {
	d := needDocker(t)
	env := imagesvctest.Start(t, imagesvctest.Options{})
	env.KS.AddProject("p-demo", "demo")
	env.KS.AddProject("p-alt", "alt")
	env.KS.AddUser("alice", "alice-pw", "p-demo", map[string][]string{"p-demo": {"member", "reader"}})
	env.KS.AddUser("bob", "bob-pw", "p-alt", map[string][]string{"p-alt": {"member", "reader"}})
	if out, err := d.run("login", env.Host, "-u", "alice", "-p", "wrong"); err == nil {
		t.Fatalf("docker login with a wrong password succeeded: %s", out)
	}
	d.must("login", env.Host, "-u", "alice", "-p", "alice-pw")
	t.Cleanup(func() { d.run("logout", env.Host) })
	return env, d
}

// glanceImages lists project's images through the Glance API.
func glanceImages(t *testing.T, env *imagesvctest.Env, token, query string) []map[string]any {
	t.Helper()
	req, _ := http.NewRequest("GET", env.URL+"/v2/images?"+query, nil)
	req.Header.Set("X-Auth-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Images []map[string]any `json:"images"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body.Images
}

func TestDockerPushBecomesAGlanceImageAndPullsBack(t *testing.T) {
	env, d := setup(t)
	base := archivetest.RandomLayer(2 << 20)
	app := archivetest.RandomLayer(512 << 10)
	ref := env.Host + "/demo/app:v1"
	v1 := archivetest.Build(archivetest.Legacy, ref, base, app)
	d.load(v1, ref)
	d.must("push", ref)

	tok := env.KS.Issue("p-demo", "member")
	imgs := glanceImages(t, env, tok, "name=app:v1")
	if len(imgs) != 1 {
		t.Fatalf("Glance images named app:v1: %v", imgs)
	}
	img := imgs[0]
	if img["container_format"] != "docker" || img["status"] != "active" || img["owner"] != "p-demo" ||
		img["docker_image_id"] != v1.ImageID {
		t.Errorf("pushed image in Glance: %v", img)
	}

	// A second version: only its new layer travels.
	before := env.Registry.Stats().BlobBytesReceived.Load()
	extra := archivetest.RandomLayer(3 << 20)
	ref2 := env.Host + "/demo/app:v2"
	v2 := archivetest.Build(archivetest.Legacy, ref2, base, app, extra)
	d.load(v2, ref2)
	d.must("push", ref2)
	pushed := env.Registry.Stats().BlobBytesReceived.Load() - before
	t.Logf("push of v2 sent %d blob bytes for a new layer of %d bytes", pushed, len(extra))
	if limit := int64(float64(len(extra))*1.05) + 4096; pushed > limit {
		t.Errorf("push of v2 sent %d blob bytes, want at most %d (the new layer)", pushed, limit)
	}

	// Pull back what was pushed.
	d.must("rmi", ref, ref2)
	d.run("rmi", v1.ImageID, v2.ImageID)
	d.must("pull", ref)
	if got := d.imageID(ref); got != v1.ImageID {
		t.Errorf("pulled image id %s, want %s", got, v1.ImageID)
	}
	// The Glance download of a pushed image is a docker archive that loads.
	id := img["id"].(string)
	req, _ := http.NewRequest("GET", env.URL+"/v2/images/"+id+"/file", nil)
	req.Header.Set("X-Auth-Token", tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var arc bytes.Buffer
	arc.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-MD5") != img["checksum"] {
		t.Fatalf("download: %d, Content-MD5 %q vs checksum %v", resp.StatusCode, resp.Header.Get("Content-MD5"), img["checksum"])
	}
	d.must("rmi", ref)
	d.run("rmi", v1.ImageID)
	if out, err := d.runIn(arc.Bytes(), "load"); err != nil || !strings.Contains(out, v1.ImageID) {
		t.Errorf("docker load of the Glance download: %v %s", err, out)
	}
}

func TestDockerPullMovesOnlyNewLayers(t *testing.T) {
	env, d := setup(t)
	tok := env.KS.Issue("p-demo", "member")
	base := archivetest.RandomLayer(4 << 20)
	top := archivetest.RandomLayer(4 << 20)
	baseArc := archivetest.Build(archivetest.Legacy, "pulltest:base", base)
	appArc := archivetest.Build(archivetest.Legacy, "pulltest:v2", base, top)
	upload := func(name string, data []byte) {
		t.Helper()
		req, _ := http.NewRequest("POST", env.URL+"/v2/images", strings.NewReader(
			`{"name": "`+name+`", "container_format": "docker", "disk_format": "raw"}`))
		req.Header.Set("X-Auth-Token", tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var img map[string]any
		json.NewDecoder(resp.Body).Decode(&img)
		resp.Body.Close()
		req, _ = http.NewRequest("PUT", env.URL+"/v2/images/"+img["id"].(string)+"/file", bytes.NewReader(data))
		req.Header.Set("X-Auth-Token", tok)
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err = http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 204 {
			t.Fatalf("upload %s: %v %v", name, err, resp.Status)
		}
		resp.Body.Close()
	}
	upload("pulltest:base", baseArc.Data)
	upload("pulltest:v2", appArc.Data)

	baseRef, appRef := env.Host+"/demo/pulltest:base", env.Host+"/demo/pulltest:v2"
	d.cleanup(baseArc.ImageID, baseRef)
	d.cleanup(appArc.ImageID, appRef)
	d.must("pull", baseRef)
	if got := d.imageID(baseRef); got != baseArc.ImageID {
		t.Fatalf("pulled base id %s, want %s", got, baseArc.ImageID)
	}

	env.Wire.Reset()
	served := env.Registry.Stats().BlobBytesServed.Load()
	d.must("pull", appRef)
	if got := d.imageID(appRef); got != appArc.ImageID {
		t.Fatalf("pulled app id %s, want %s", got, appArc.ImageID)
	}
	blobBytes := env.Registry.Stats().BlobBytesServed.Load() - served
	wire := env.Wire.Written.Load() + env.Wire.Read.Load()
	newLayer := int64(len(top))
	t.Logf("second pull: %d blob bytes, %d bytes on the wire, new layer %d bytes (%.3fx)",
		blobBytes, wire, newLayer, float64(wire)/float64(newLayer))
	if blobBytes > newLayer*105/100 {
		t.Errorf("second pull served %d blob bytes, want at most 1.05 × the new layer's %d", blobBytes, newLayer)
	}
	if wire > newLayer*105/100 {
		t.Errorf("second pull moved %d bytes on the wire, want at most 1.05 × the new layer's %d", wire, newLayer)
	}

	// A host agent pulls by image id with the agent token.
	imgs := glanceImages(t, env, tok, "name=pulltest:v2")
	if len(imgs) != 1 {
		t.Fatalf("pulltest:v2 in Glance: %v", imgs)
	}
	agent := &dockerCLI{t: t, config: t.TempDir()}
	agent.must("login", env.Host, "-u", registry.AgentUser, "-p", imagesvctest.AgentToken)
	ref := env.Host + "/berth/image:" + imgs[0]["id"].(string)
	d.cleanup(appArc.ImageID, ref)
	agent.must("pull", ref)
	if got := agent.imageID(ref); got != appArc.ImageID || got != imgs[0]["docker_image_id"] {
		t.Errorf("agent pull by image id: %s, want %s", got, appArc.ImageID)
	}
}
