package cli

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/spf13/cobra"
)

func cacheFiles(t *testing.T, f *fakeCloud) []string {
	t.Helper()
	m, _ := filepath.Glob(filepath.Join(f.dir, "cache", "berth", "token-*.json"))
	return m
}

func TestTokenCacheReusedAcrossCommands(t *testing.T) {
	f := newFakeCloud(t)
	for i := 0; i < 3; i++ {
		if _, stderr, code := f.run("flavor", "list"); code != 0 {
			t.Fatalf("run %d: exit %d: %s", i, code, stderr)
		}
	}
	if got := f.auths(); got != 1 {
		t.Errorf("Keystone authentications = %d, want 1 (the 2nd and 3rd command must use the cached token)", got)
	}
	files := cacheFiles(t, f)
	if len(files) != 1 {
		t.Fatalf("token cache files = %v, want one", files)
	}
	st, err := os.Stat(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("cache file mode = %v, want 0600", st.Mode().Perm())
	}
	dst, _ := os.Stat(filepath.Dir(files[0]))
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("cache dir mode = %v, want 0700", dst.Mode().Perm())
	}
}

func TestTokenReauthOn401(t *testing.T) {
	f := newFakeCloud(t)
	if _, stderr, code := f.run("flavor", "list"); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	f.rotate() // the cached token is now refused with 401
	out, stderr, code := f.run("flavor", "list", "-f", "value", "-c", "Name")
	if code != 0 {
		t.Fatalf("after revocation: exit %d: %s", code, stderr)
	}
	if !strings.Contains(out, "m1.tiny") {
		t.Errorf("output %q lacks m1.tiny", out)
	}
	if got := f.auths(); got != 2 {
		t.Errorf("authentications = %d, want 2 (one re-auth after the 401)", got)
	}
	// The new token was cached: the next command needs no Keystone call.
	if _, _, code := f.run("flavor", "list"); code != 0 {
		t.Fatal("third run failed")
	}
	if got := f.auths(); got != 2 {
		t.Errorf("authentications after a third run = %d, want still 2", got)
	}
	b, _ := os.ReadFile(cacheFiles(t, f)[0])
	if !strings.Contains(string(b), `"tok-2"`) {
		t.Errorf("cache does not hold the new token: %s", b)
	}
}

func TestTokenNearExpiryIsRenewed(t *testing.T) {
	f := newFakeCloud(t)
	f.expiresIn = 4 * time.Minute // inside the 5-minute margin
	f.run("flavor", "list")
	f.run("flavor", "list")
	if got := f.auths(); got != 2 {
		t.Errorf("authentications = %d, want 2 (a token expiring within 5 minutes is not reused)", got)
	}
}

func TestNoTokenCacheFlag(t *testing.T) {
	f := newFakeCloud(t)
	f.run("--no-token-cache", "flavor", "list")
	f.run("--no-token-cache", "flavor", "list")
	if got := f.auths(); got != 2 {
		t.Errorf("authentications = %d, want 2", got)
	}
	if files := cacheFiles(t, f); len(files) != 0 {
		t.Errorf("cache files written with --no-token-cache: %v", files)
	}
}

func TestWrongPassword(t *testing.T) {
	f := newFakeCloud(t)
	_, stderr, code := f.run("--os-cloud", "wrongpw", "server", "list")
	if code != ExitError {
		t.Errorf("exit = %d, want %d", code, ExitError)
	}
	if !strings.Contains(stderr, "requires authentication. (HTTP 401) (Request-ID: req-") {
		t.Errorf("stderr = %q, want Keystone's message with HTTP status and request id", stderr)
	}
	if strings.Contains(stderr, "goroutine") || strings.Contains(stderr, ".go:") {
		t.Errorf("stderr looks like a Go stack: %q", stderr)
	}
}

func TestOSEnvironmentVariables(t *testing.T) {
	f := newFakeCloud(t)
	env := map[string]string{
		"OS_CLOUD": "", "OS_CLIENT_CONFIG_FILE": "/nonexistent",
		"OS_AUTH_URL": f.srv.URL + "/identity/v3", "OS_USERNAME": "demo", "OS_PASSWORD": "secret",
		"OS_PROJECT_NAME": "demo", "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default",
	}
	out, stderr, code := f.runWith(env, nil, "image", "list", "-f", "value", "-c", "Name")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if out != "demo\nweb-v2\n" {
		t.Errorf("stdout = %q", out)
	}
}

func TestNoCloudConfigured(t *testing.T) {
	f := newFakeCloud(t)
	_, stderr, code := f.runWith(map[string]string{"OS_CLOUD": ""}, nil, "server", "list")
	if code != ExitError || !strings.Contains(stderr, "no cloud configured") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

// serverSequence serves successive bodies for GET /servers/{id}.
func serverSequence(f *fakeCloud, id string, states []map[string]any) {
	var mu sync.Mutex
	i := 0
	f.handle("GET /compute/v2.1/servers/{id}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if i >= len(states) {
			i = len(states) - 1
		}
		st := states[i]
		i++
		if st == nil {
			novaFault(w, 404, "itemNotFound", "Instance "+id+" could not be found.")
			return
		}
		base := byField(f.collection("servers.json", "servers"), "name", "web1")
		for k, v := range st {
			base[k] = v
		}
		base["id"] = id
		replyJSON(w, 200, map[string]any{"server": base})
	})
}

func st(status string, task any, progress int) map[string]any {
	return map[string]any{"status": status, "OS-EXT-STS:task_state": task, "progress": progress}
}

const newID = "11111111-2222-4333-8444-555555555555"

func TestServerCreateWait(t *testing.T) {
	f := newFakeCloud(t)
	var body []byte
	f.handle("POST /compute/v2.1/servers", func(w http.ResponseWriter, r *http.Request) {
		body, _ = io.ReadAll(r.Body)
		replyJSON(w, 202, map[string]any{"server": map[string]any{"id": newID, "links": []any{}, "OS-DCF:diskConfig": "MANUAL",
			"security_groups": []any{map[string]any{"name": "default"}}}})
	})
	serverSequence(f, newID, []map[string]any{
		st("BUILD", "scheduling", 10), st("BUILD", "spawning", 50), st("BUILD", "spawning", 90), st("ACTIVE", nil, 100),
	})
	out, stderr, code := f.run("server", "create", "--image", "demo", "--flavor", "m1.tiny", "--network", "private",
		"--property", "tier=web", "--wait", "web9", "-f", "value", "-c", "status")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if out != "ACTIVE\n" {
		t.Errorf("stdout = %q, want ACTIVE", out)
	}
	for _, want := range []string{"web9: BUILD (scheduling), progress 10%", "web9: BUILD (spawning), progress 50%", "web9: ACTIVE\n"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	var req struct {
		Server map[string]any `json:"server"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"name": "web9", "imageRef": "8a78b856-9b5e-4ccf-898b-428c7b6bf5c2", "flavorRef": "1"}
	for k, v := range want {
		if req.Server[k] != v {
			t.Errorf("request %s = %v, want %v", k, req.Server[k], v)
		}
	}
	if nets, _ := json.Marshal(req.Server["networks"]); string(nets) != `[{"uuid":"88fddace-bd6a-4ee8-b5ef-f2acd675c4c1"}]` {
		t.Errorf("request networks = %s", nets)
	}
}

func TestServerCreateWaitFailsWithFault(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("POST /compute/v2.1/servers", func(w http.ResponseWriter, r *http.Request) {
		replyJSON(w, 202, map[string]any{"server": map[string]any{"id": newID}})
	})
	errState := st("ERROR", nil, 0)
	errState["fault"] = map[string]any{"code": 500, "message": "No valid host was found. There are not enough hosts available."}
	serverSequence(f, newID, []map[string]any{st("BUILD", "scheduling", 10), errState})
	_, stderr, code := f.run("server", "create", "--image", "demo", "--flavor", "1", "--wait", "web9")
	if code != ExitError {
		t.Errorf("exit = %d, want 1", code)
	}
	if !strings.Contains(stderr, "Error: server "+newID+" went to ERROR: No valid host was found.") {
		t.Errorf("stderr lacks the fault:\n%s", stderr)
	}
}

func TestServerActionsWait(t *testing.T) {
	cases := []struct {
		verb, action string
		args         []string
		states       []map[string]any
		wantBody     string
	}{
		{"stop", "os-stop", nil, []map[string]any{st("ACTIVE", "powering-off", 100), st("SHUTOFF", nil, 100)}, `{"os-stop":null}`},
		{"start", "os-start", nil, []map[string]any{st("SHUTOFF", "powering-on", 100), st("ACTIVE", nil, 100)}, `{"os-start":null}`},
		{"pause", "pause", nil, []map[string]any{st("ACTIVE", "pausing", 100), st("PAUSED", nil, 100)}, `{"pause":null}`},
		{"unpause", "unpause", nil, []map[string]any{st("PAUSED", "unpausing", 100), st("ACTIVE", nil, 100)}, `{"unpause":null}`},
		{"suspend", "suspend", nil, []map[string]any{st("SUSPENDED", nil, 100)}, `{"suspend":null}`},
		{"resume", "resume", nil, []map[string]any{st("ACTIVE", nil, 100)}, `{"resume":null}`},
		{"reboot", "reboot", []string{"--hard"}, []map[string]any{st("HARD_REBOOT", "rebooting_hard", 100), st("ACTIVE", nil, 100)}, `{"reboot":{"type":"HARD"}}`},
		{"rebuild", "rebuild", nil, []map[string]any{st("REBUILD", "rebuilding", 0), st("ACTIVE", nil, 100)}, `{"rebuild":{"imageRef":"8a78b856-9b5e-4ccf-898b-428c7b6bf5c2"}}`},
		{"deploy", "rebuild", []string{"--image", "web-v2"}, []map[string]any{st("REBUILD", "rebuilding", 0), st("ACTIVE", nil, 100)}, `{"rebuild":{"imageRef":"5d0f6e8c-7b1a-4c6e-a0b2-2f9e4c3d1a00"}}`},
	}
	for _, tc := range cases {
		t.Run(tc.verb, func(t *testing.T) {
			f := newFakeCloud(t)
			var got []byte
			f.handle("POST /compute/v2.1/servers/{id}/action", func(w http.ResponseWriter, r *http.Request) {
				got, _ = io.ReadAll(r.Body)
				w.WriteHeader(202)
			})
			// The first GET resolves the name (before the action).
			serverSequence(f, "f34b7cb3-2b6e-4f6c-b1b5-1006f7f3a547", append([]map[string]any{st("ACTIVE", nil, 100)}, tc.states...))
			args := append([]string{"server", tc.verb, "--wait"}, tc.args...)
			args = append(args, "f34b7cb3-2b6e-4f6c-b1b5-1006f7f3a547")
			_, stderr, code := f.run(args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if string(got) != tc.wantBody {
				t.Errorf("action body = %s, want %s", got, tc.wantBody)
			}
		})
	}
}

func TestServerActionNotImplemented(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("POST /compute/v2.1/servers/{id}/action", func(w http.ResponseWriter, r *http.Request) {
		novaFault(w, 501, "notImplemented", "The pause action is not implemented by Berth yet.")
	})
	_, stderr, code := f.run("server", "pause", "web1")
	if code != ExitError {
		t.Errorf("exit = %d, want 1", code)
	}
	if !strings.HasPrefix(stderr, "Error: The pause action is not implemented by Berth yet. (HTTP 501) (Request-ID: req-") {
		t.Errorf("stderr = %q", stderr)
	}
}

func TestServerDeleteWait(t *testing.T) {
	f := newFakeCloud(t)
	deleted := false
	f.handle("DELETE /compute/v2.1/servers/{id}", func(w http.ResponseWriter, r *http.Request) {
		deleted = true
		w.WriteHeader(204)
	})
	serverSequence(f, "f34b7cb3-2b6e-4f6c-b1b5-1006f7f3a547", []map[string]any{st("ACTIVE", "deleting", 100), nil})
	_, stderr, code := f.run("server", "delete", "--wait", "web1")
	if code != 0 || !deleted {
		t.Fatalf("exit %d deleted %v: %s", code, deleted, stderr)
	}
	if !strings.Contains(stderr, "web1: DELETED") {
		t.Errorf("stderr = %q", stderr)
	}
}

func TestResizeConfirm(t *testing.T) {
	f := newFakeCloud(t)
	var actions []string
	var mu sync.Mutex
	f.handle("POST /compute/v2.1/servers/{id}/action", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		actions = append(actions, string(b))
		mu.Unlock()
		w.WriteHeader(202)
	})
	serverSequence(f, "f34b7cb3-2b6e-4f6c-b1b5-1006f7f3a547", []map[string]any{
		st("ACTIVE", nil, 100), st("RESIZE", "resize_prep", 0), st("VERIFY_RESIZE", nil, 100), st("VERIFY_RESIZE", nil, 100), st("ACTIVE", nil, 100)})
	_, stderr, code := f.run("server", "resize", "--flavor", "m1.small", "--wait", "--confirm", "f34b7cb3-2b6e-4f6c-b1b5-1006f7f3a547")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := []string{`{"resize":{"flavorRef":"2"}}`, `{"confirmResize":null}`}
	if strings.Join(actions, " ") != strings.Join(want, " ") {
		t.Errorf("actions = %v, want %v", actions, want)
	}
}

func TestSnapshot(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("POST /compute/v2.1/servers/{id}/action", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if string(b) != `{"createImage":{"name":"web-v2","metadata":{"k":"v"}}}` {
			novaFault(w, 400, "badRequest", "unexpected body "+string(b))
			return
		}
		w.Header().Set("Location", f.srv.URL+"/image/v2/images/5d0f6e8c-7b1a-4c6e-a0b2-2f9e4c3d1a00")
		w.WriteHeader(202)
	})
	out, stderr, code := f.run("server", "snapshot", "--name", "web-v2", "--property", "k=v", "--wait", "web1", "-f", "value", "-c", "id")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if out != "5d0f6e8c-7b1a-4c6e-a0b2-2f9e4c3d1a00\n" {
		t.Errorf("stdout = %q", out)
	}
}

func TestSyncStatusLogsConsole(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("POST /compute/v2.1/servers/{id}/action", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch string(b) {
		case `{"berth-syncStatus":null}`:
			w.WriteHeader(202)
		case `{"os-getConsoleOutput":{"length":2}}`:
			replyJSON(w, 200, map[string]any{"output": "line 9\nline 10\n"})
		default:
			novaFault(w, 400, "badRequest", "unexpected "+string(b))
		}
	})
	f.handle("GET /compute/v2.1/servers/{id}/berth-logs", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "tail="+r.URL.Query().Get("tail")+" follow="+r.URL.Query().Get("follow")+"\n")
	})
	if out, stderr, code := f.run("server", "sync-status", "web1", "-f", "value", "-c", "status"); code != 0 || out != "ACTIVE\n" {
		t.Errorf("sync-status: exit %d out %q err %q", code, out, stderr)
	}
	if out, stderr, code := f.run("server", "console", "--lines", "2", "web1"); code != 0 || out != "line 9\nline 10\n" {
		t.Errorf("console: exit %d out %q err %q", code, out, stderr)
	}
	if out, stderr, code := f.run("server", "logs", "-f", "--tail", "5", "web1"); code != 0 || out != "tail=5 follow=1\n" {
		t.Errorf("logs: exit %d out %q err %q", code, out, stderr)
	}
}

func TestCp(t *testing.T) {
	f := newFakeCloud(t)
	files := map[string][]byte{"/etc/hostname": []byte("web1\n")}
	var putMode string
	f.handle("POST /compute/v2.1/servers/{id}/action", func(w http.ResponseWriter, r *http.Request) {
		var body map[string]map[string]string
		_ = json.NewDecoder(r.Body).Decode(&body)
		if p, ok := body["berth-putFile"]; ok {
			data, err := base64.StdEncoding.DecodeString(p["contents"])
			if err != nil {
				novaFault(w, 400, "badRequest", "contents must be base64.")
				return
			}
			files[p["path"]], putMode = data, p["mode"]
			w.WriteHeader(204)
			return
		}
		if g, ok := body["berth-getFile"]; ok {
			data, ok := files[g["path"]]
			if !ok {
				novaFault(w, 404, "itemNotFound", "No such file: "+g["path"])
				return
			}
			replyJSON(w, 200, map[string]any{"contents": base64.StdEncoding.EncodeToString(data), "size": len(data)})
			return
		}
		novaFault(w, 400, "badRequest", "unexpected action")
	})
	local := filepath.Join(t.TempDir(), "index.html")
	if err := os.WriteFile(local, []byte("<h1>hi</h1>"), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := f.run("server", "cp", local, "web1:/www/"); code != 0 {
		t.Fatalf("cp to: exit %d: %s", code, stderr)
	}
	if string(files["/www/index.html"]) != "<h1>hi</h1>" || putMode != "0640" {
		t.Errorf("server got %q mode %q", files["/www/index.html"], putMode)
	}
	dir := t.TempDir()
	if _, stderr, code := f.run("server", "cp", "web1:/etc/hostname", dir); code != 0 {
		t.Fatalf("cp from: exit %d: %s", code, stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "hostname")); string(b) != "web1\n" {
		t.Errorf("local copy = %q", b)
	}
	out, _, code := f.run("server", "cp", "web1:/etc/hostname", "-")
	if code != 0 || out != "web1\n" {
		t.Errorf("cp to stdout: %d %q", code, out)
	}
	_, stderr, code := f.run("server", "cp", "web1:/nope", dir)
	if code != ExitError || !strings.Contains(stderr, "No such file: /nope (HTTP 404)") {
		t.Errorf("missing file: exit %d stderr %q", code, stderr)
	}
	if _, _, code := f.run("server", "cp", "a", "b"); code != ExitUsage {
		t.Errorf("two local paths: exit %d, want 2", code)
	}
}

func TestSetCreate(t *testing.T) {
	f := newFakeCloud(t)
	var body []byte
	f.handle("POST /compute/v2.1/berth-sets", func(w http.ResponseWriter, r *http.Request) {
		body, _ = io.ReadAll(r.Body)
		var req map[string]map[string]any
		_ = json.Unmarshal(body, &req)
		s := req["set"]
		s["id"], s["status"] = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f", "BUILD"
		replyJSON(w, 202, map[string]any{"set": s})
	})
	out, stderr, code := f.run("set", "create", "-f", filepath.Join("..", "..", "docs", "examples", "set.yaml"), "--format", "value", "-c", "status")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if out != "BUILD\n" {
		t.Errorf("stdout = %q", out)
	}
	var pretty map[string]any
	if err := json.Unmarshal(body, &pretty); err != nil {
		t.Fatal(err)
	}
	b, _ := json.MarshalIndent(pretty, "", "  ")
	checkGolden(t, "set_create_request", string(b)+"\n")

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("name: x\nflavor: m1.tiny\ncontainers:\n  - name: a\n    image: demo\n    imagee: typo\n"), 0o644)
	_, stderr, code = f.run("set", "create", "-f", bad)
	if code != ExitError || !strings.Contains(stderr, "field imagee not found") {
		t.Errorf("typo in set file: exit %d stderr %q", code, stderr)
	}
}

// TestShellPiped runs `server shell` against a websocket test double of
// the serial console: stdin goes out as binary frames, Ctrl-D follows its
// end, output comes back.
func TestShellPiped(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("GET /console", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		var got []byte
		for {
			_, data, err := c.Read(r.Context())
			if err != nil {
				return
			}
			got = append(got, data...)
			if strings.HasSuffix(string(got), "\x04") {
				c.Write(r.Context(), websocket.MessageBinary, []byte("you said: "+strings.TrimSuffix(string(got), "\x04")))
				c.Close(websocket.StatusNormalClosure, "")
				return
			}
		}
	})
	f.handle("POST /compute/v2.1/servers/{id}/action", func(w http.ResponseWriter, r *http.Request) {
		replyJSON(w, 200, map[string]any{"console": map[string]any{"type": "serial", "url": "ws" + strings.TrimPrefix(f.srv.URL, "http") + "/console?token=x"}})
	})
	out, stderr, code := f.runWith(nil, strings.NewReader("hostname\n"), "server", "shell", "web1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if out != "you said: hostname\n" {
		t.Errorf("stdout = %q", out)
	}
}

// TestEveryCommandHasHelpExample walks the command tree.
func TestEveryCommandHasHelpExample(t *testing.T) {
	a := &app{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Hidden || c.Name() == "help" {
			return
		}
		if c.Example == "" {
			t.Errorf("%q has no example in its --help", c.CommandPath())
		}
		if c.Short == "" {
			t.Errorf("%q has no short description", c.CommandPath())
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(a.rootCmd())
}

func TestCompletion(t *testing.T) {
	f := newFakeCloud(t)
	for _, sh := range []string{"bash", "zsh"} {
		out, stderr, code := f.run("completion", sh)
		if code != 0 || !strings.Contains(out, "berth") {
			t.Errorf("%s: exit %d, %d bytes, %s", sh, code, len(out), stderr)
		}
	}
	// Dynamic completion of server names (cobra's hidden __complete).
	out, _, _ := f.run("__complete", "server", "show", "we")
	if !strings.HasPrefix(out, "web1\n") {
		t.Errorf("completion of 'we' = %q", out)
	}
}

func TestUnsupportedEndpointSaysSo(t *testing.T) {
	f := newFakeCloud(t)
	f.handle("GET /compute/v2.1/berth-sets", func(w http.ResponseWriter, r *http.Request) {
		novaFault(w, 404, "itemNotFound", "The resource could not be found.")
	})
	_, stderr, code := f.run("set", "list")
	if code != ExitError || !strings.HasPrefix(stderr, "Error: this cloud does not offer sets (/v2.1/berth-sets) (yet): The resource could not be found. (HTTP 404) (Request-ID: req-") {
		t.Errorf("exit %d stderr %q", code, stderr)
	}
}
