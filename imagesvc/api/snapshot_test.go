package api_test

import (
	"net/http"
	"testing"

	"berth/imagesvc/dockerarchive/archivetest"
)

// TestSnapshotUploadByAgent is the host agent's side of createImage: the
// docker save archive of a committed container arrives on the internal
// upload endpoint, and its new top layer sits on the source image's chain.
func TestSnapshotUploadByAgent(t *testing.T) {
	e := newEnv(t)
	tok := e.ks.Issue("p1", "member")
	base := archivetest.LayerTar(map[string]string{"etc/os-release": "ID=berth\n"})
	app := archivetest.LayerTar(map[string]string{"srv/app": "v1\n"})
	committed := archivetest.LayerTar(map[string]string{"root/.ash_history": "ls\n"})

	source := archivetest.Build(archivetest.Legacy, "app:1", base, app)
	srcID := e.create(tok, `{"name": "app", "container_format": "docker", "disk_format": "raw"}`)["id"].(string)
	if r := e.do("PUT", "/v2/images/"+srcID+"/file", tok, source.Data, "Content-Type", "application/octet-stream"); r.status != 204 {
		t.Fatalf("source upload: %d %s", r.status, r.body)
	}

	snap := archivetest.Build(archivetest.Legacy, "", base, app, committed)
	snapID := e.create(tok, `{"name": "app-snap", "container_format": "docker", "disk_format": "raw"}`)["id"].(string)
	path := "/internal/v1/images/" + snapID + "/file"
	octet := []string{"Content-Type", "application/octet-stream"}

	glanceError(t, e.do("PUT", path, "", snap.Data, octet...), http.StatusUnauthorized)
	glanceError(t, e.do("PUT", path, tok, snap.Data, octet...), http.StatusUnauthorized) // a Keystone token is not enough
	glanceError(t, e.do("PUT", path, "", snap.Data, "Content-Type", "application/octet-stream",
		"X-Berth-Agent-Token", "wrong"), http.StatusUnauthorized)

	agent := append([]string{"X-Berth-Agent-Token", agentToken}, octet...)
	if r := e.do("PUT", path, "", snap.Data, agent...); r.status != http.StatusNoContent {
		t.Fatalf("agent upload: got %d %s, want 204", r.status, r.body)
	}
	img := e.do("GET", "/v2/images/"+snapID, tok, nil).json(t)
	if img["status"] != "active" || img["docker_image_id"] != snap.ImageID || img["size"] != float64(len(snap.Data)) {
		t.Errorf("snapshot: got status %v docker_image_id %v size %v, want active %s %d",
			img["status"], img["docker_image_id"], img["size"], snap.ImageID, len(snap.Data))
	}

	// The chain is the source's chain plus one layer whose parent is the
	// source's top layer.
	r := e.do("GET", "/internal/v1/images/"+snapID+"/layers", "", nil, "X-Berth-Agent-Token", agentToken)
	layers := r.json(t)["layers"].([]any)
	if len(layers) != 3 {
		t.Fatalf("snapshot chain: got %d layers, want 3: %s", len(layers), r.body)
	}
	top := layers[2].(map[string]any)
	if top["chain_id"] != snap.ChainIDs[2] || top["parent_chain_id"] != source.ChainIDs[1] {
		t.Errorf("snapshot top layer: got chain %v parent %v, want %s on %s",
			top["chain_id"], top["parent_chain_id"], snap.ChainIDs[2], source.ChainIDs[1])
	}

	// Same rules as the public upload: an active image takes no more data,
	// and an unknown image is 404.
	glanceError(t, e.do("PUT", path, "", snap.Data, agent...), http.StatusConflict)
	glanceError(t, e.do("PUT", "/internal/v1/images/6c4a3b2d-0000-4000-8000-000000000000/file", "", snap.Data, agent...), http.StatusNotFound)
	bad := e.create(tok, `{"name": "bad", "container_format": "docker", "disk_format": "raw"}`)["id"].(string)
	glanceError(t, e.do("PUT", "/internal/v1/images/"+bad+"/file", "", snap.Data[:len(snap.Data)/2], agent...), http.StatusBadRequest)
	if got := e.do("GET", "/v2/images/"+bad, tok, nil).json(t)["status"]; got != "queued" {
		t.Errorf("after a truncated agent upload: status %v, want queued", got)
	}
}
