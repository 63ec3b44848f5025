package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"berth/imagesvc/keystonefake"
	"berth/imagesvc/store"
	"berth/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// mustRunMain runs the real Main on a free port against a fresh database
// and a fake Keystone token API.
func mustRunMain(t *testing.T, ks *keystonefake.Keystone, extra ...string) *Main {
	t.Helper()
	return mustRunMainOn(t, ks, pgtest.DSN(t), extra...)
}

func mustRunMainOn(t *testing.T, ks *keystonefake.Keystone, dsn string, extra ...string) *Main {
	t.Helper()
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "agent-token")
	if err := os.WriteFile(tokFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := NewMain()
	args := append([]string{"--listen", "127.0.0.1:0", "--db", dsn,
		"--keystone-url", ks.URL(), "--data-dir", filepath.Join(dir, "data"),
		"--agent-token-file", tokFile, "--public-url", "http://images.example:9292/"}, extra...)
	if err := m.ParseFlags(args, io.Discard); err != nil {
		t.Fatal(err)
	}
	m.Logger = slog.New(slog.DiscardHandler)
	if err := m.Run(t.Context()); err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return m
}

func TestRunMain(t *testing.T) {
	ks := keystonefake.New(t)
	m := mustRunMain(t, ks)
	base := "http://" + m.Addr()
	tok := ks.Issue("p1", "member")

	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 300 || !strings.Contains(string(body), `"href":"http://images.example:9292/v2/"`) {
		t.Errorf("GET /: %d %s", resp.StatusCode, body)
	}

	req, _ := http.NewRequest("POST", base+"/v2/images", strings.NewReader(`{"name": "x", "container_format": "bare", "disk_format": "raw"}`))
	req.Header.Set("X-Auth-Token", tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != 201 || !strings.HasPrefix(loc, "http://images.example:9292/v2/images/") {
		t.Fatalf("create: %d Location %q", resp.StatusCode, loc)
	}
	id := strings.TrimPrefix(loc, "http://images.example:9292/v2/images/")

	req, _ = http.NewRequest("PUT", base+"/v2/images/"+id+"/file", bytes.NewReader([]byte("data")))
	req.Header.Set("X-Auth-Token", tok)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("upload: %d", resp.StatusCode)
	}

	// The agent token is read from the file (trailing newline trimmed).
	req, _ = http.NewRequest("GET", base+"/internal/v1/images/"+id+"/file", nil)
	req.Header.Set("X-Berth-Agent-Token", "s3cret")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "data" {
		t.Errorf("internal download: %d %q", resp.StatusCode, body)
	}
}

func TestRunNeedsRequiredFlags(t *testing.T) {
	m := NewMain()
	m.Logger = slog.New(slog.DiscardHandler)
	if err := m.ParseFlags(nil, io.Discard); err != nil {
		t.Fatal(err)
	}
	err := m.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "--db") || !strings.Contains(err.Error(), "--agent-token-file") {
		t.Errorf("Run without flags: got %v, want missing --db, --data-dir, --agent-token-file", err)
	}
	m.Close()
}

func TestEmptyAgentTokenFileIsRejected(t *testing.T) {
	f := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(f, []byte("\n"), 0o600)
	if _, err := readToken(f); err == nil {
		t.Error("an empty agent token file was accepted")
	}
}

func TestRegistryAndGlanceShareTheListener(t *testing.T) {
	ks := keystonefake.New(t)
	ks.AddProject("p1", "demo")
	ks.AddUser("alice", "pw", "p1", map[string][]string{"p1": {"member"}})
	m := mustRunMain(t, ks, "--max-image-bytes", "1000")
	base := "http://" + m.Addr()
	resp, err := http.Get(base + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" ||
		!strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
		t.Errorf("GET /v2/: %d %v", resp.StatusCode, resp.Header)
	}
	req, _ := http.NewRequest("GET", base+"/v2/", nil)
	req.SetBasicAuth("alice", "pw")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /v2/ as alice: %d", resp.StatusCode)
	}
	// --max-image-bytes holds for registry uploads too.
	req, _ = http.NewRequest("POST", base+"/v2/demo/x/blobs/uploads/?digest=sha256:"+strings.Repeat("0", 64),
		bytes.NewReader(make([]byte, 2000)))
	req.SetBasicAuth("alice", "pw")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("blob over --max-image-bytes: %d, want 413", resp.StatusCode)
	}
}

func TestUploadsLeftSavingAreRecovered(t *testing.T) {
	ks := keystonefake.New(t)
	dsn := pgtest.DSN(t)
	// A previous run died while uploading two images: one lease ran out
	// already, the other has a little left.
	db, err := store.Open(t.Context(), dsn, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(db)
	var ids []string
	for i, lease := range []time.Duration{time.Millisecond, 2 * time.Second} {
		owner, f := "p1", "raw"
		img := &store.Image{ID: uuid.NewString(), Owner: &owner, Status: store.StatusQueued, Visibility: "private",
			ContainerFormat: &f, DiskFormat: &f, Name: &[]string{"expired", "running"}[i]}
		if err := st.CreateImage(t.Context(), img); err != nil {
			t.Fatal(err)
		}
		if _, err := st.StartUpload(t.Context(), img.ID, lease, func(*store.Image) error { return nil }); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, img.ID)
	}
	time.Sleep(20 * time.Millisecond)
	mustRunMainOn(t, ks, dsn, "--upload-lease", "2s")
	status := func(id string) string {
		img, err := st.FindImageByID(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		return img.Status
	}
	if s := status(ids[0]); s != store.StatusQueued {
		t.Errorf("an image left saving by a dead upload is %s on start, want queued", s)
	}
	deadline := time.Now().Add(10 * time.Second)
	for status(ids[1]) != store.StatusQueued {
		if time.Now().After(deadline) {
			t.Fatalf("the image whose lease ran out after start is still %s", status(ids[1]))
		}
		time.Sleep(100 * time.Millisecond)
	}
	db.Close()
}
