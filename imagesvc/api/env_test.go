package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"

	"berth/imagesvc/api"
	"berth/imagesvc/blob"
	"berth/imagesvc/content"
	"berth/imagesvc/keystonefake"
	"berth/imagesvc/store"
	"berth/internal/keystone"
	"berth/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const agentToken = "agent-secret-for-tests"

// env is an imagesvc API on httptest, over a fresh database, a temp blob
// store and a fake Keystone token API.
type env struct {
	t       testing.TB
	ks      *keystonefake.Keystone
	srv     *httptest.Server
	store   *store.Store
	blobs   *blob.FS
	content *content.Store
	api     *api.Server
	dataDir string
}

func newEnv(t testing.TB, o ...envOpts) *env {
	t.Helper()
	var opts envOpts
	if len(o) > 0 {
		opts = o[0]
	}
	db, err := store.Open(t.Context(), pgtest.DSN(t), 10*time.Second)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	dir := t.TempDir()
	blobs, err := blob.NewFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	ks := keystonefake.New(t)
	level := slog.LevelError + 4 // quiet unless -v
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	st := store.New(db)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cs := content.New(blobs, st, log)
	cs.GCGrace = 0 // tests delete what they just uploaded
	a := api.New(api.Config{
		Store:        st,
		Blobs:        blobs,
		Content:      cs,
		Validator:    keystone.NewValidator(ks.URL(), 0, nil),
		AgentToken:   agentToken,
		MaxImageSize: opts.maxImageSize,
		UploadLease:  opts.lease,
		Logger:       log,
	})
	srv := httptest.NewServer(a.Handler())
	t.Cleanup(func() { srv.Close(); a.Close() })
	return &env{t: t, ks: ks, srv: srv, store: st, blobs: blobs, content: cs, api: a, dataDir: dir}
}

// envOpts changes newEnv's defaults.
type envOpts struct {
	maxImageSize int64
	lease        time.Duration
}

// blobFiles counts the files and bytes under the blob store's blobs dir.
func (e *env) blobFiles(prefix string) (files int, bytes int64) {
	e.t.Helper()
	root := filepath.Join(e.dataDir, "blobs", prefix)
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			fi, _ := d.Info()
			files++
			bytes += fi.Size()
		}
		return nil
	})
	return files, bytes
}

// client is a gophercloud image v2 client for project with roles, shaped
// as openstack.NewImageV2 makes it.
func (e *env) client(project string, roles ...string) *gophercloud.ServiceClient {
	pc := &gophercloud.ProviderClient{}
	pc.SetToken(e.ks.Issue(project, roles...))
	return &gophercloud.ServiceClient{ProviderClient: pc, Endpoint: e.srv.URL + "/", ResourceBase: e.srv.URL + "/v2/"}
}

// response is a raw HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response body is not a JSON object: %v\n%s", err, r.body)
	}
	return m
}

// do sends a raw request with token (if any) and headers (pairs).
func (e *env) do(method, path, token string, body []byte, headers ...string) response {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// create makes an image with a raw POST and returns its JSON.
func (e *env) create(token string, body string) map[string]any {
	e.t.Helper()
	r := e.do("POST", "/v2/images", token, []byte(body), "Content-Type", "application/json")
	if r.status != http.StatusCreated {
		e.t.Fatalf("create %s: got %d %s", body, r.status, r.body)
	}
	return r.json(e.t)
}

// download GETs an image's data and reads it to the end; readErr reports a
// body cut short (which e.do would hide).
func (e *env) download(id, token string) (resp *http.Response, body []byte, readErr error) {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.srv.URL+"/v2/images/"+id+"/file", nil)
	req.Header.Set("X-Auth-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, readErr = io.ReadAll(resp.Body)
	return resp, body, readErr
}
