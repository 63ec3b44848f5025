package agentapi_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/docker/docker/api/types/image"

	"berth/hostagent/agentapi"
	"berth/hostagent/observed"
	"berth/hostagent/testenv"
	"berth/schema"
)

type apiEnv struct {
	*testenv.Host
	srv   *httptest.Server
	token string
}

func newAPIEnv(t *testing.T) *apiEnv {
	t.Helper()
	h := testenv.NewHost(t, testenv.HostOptions{})
	e := &apiEnv{Host: h, token: h.Images.Token}
	log := slog.New(slog.NewTextHandler(testenv.TestWriter{T: t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.srv = httptest.NewServer(agentapi.New(log, agentapi.Config{
		Token: e.token, Sets: h.Rec, NICs: h.Net, Files: h.Runtime, Docker: h.Cli,
		CallTimeout: 3 * time.Second, // short: a shell must outlive it
	}))
	t.Cleanup(e.srv.Close)
	return e
}

// do calls the API and returns status and body.
func (e *apiEnv) do(t *testing.T, method, setID, op string, q url.Values, body io.Reader, ctype string) (int, []byte) {
	t.Helper()
	u := e.srv.URL + "/agent/v1/sets/" + setID + "/" + op
	if q != nil {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(schema.AgentTokenHeader, e.token)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (e *apiEnv) json(t *testing.T, method, setID, op string, in any) (int, []byte) {
	t.Helper()
	b, _ := json.Marshal(in)
	return e.do(t, method, setID, op, nil, bytes.NewReader(b), "application/json")
}

// fault checks a Nova fault body.
func fault(t *testing.T, code int, body []byte, wantCode int, wantName string) {
	t.Helper()
	var f map[string]struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if code != wantCode || json.Unmarshal(body, &f) != nil || f[wantName].Code != wantCode || f[wantName].Message == "" {
		t.Errorf("got %d %s, want %d with a %s fault", code, body, wantCode, wantName)
	}
}

func TestAgentAPI(t *testing.T) {
	e := newAPIEnv(t)
	a, b := testenv.NewSet(t, e.Cli, 31), testenv.NewSet(t, e.Cli, 32)
	a.Containers = []schema.SetContainer{{Name: "app", Role: schema.RoleApp, Image: a.Image,
		Command: []string{"/bin/sh", "-c", "echo first line; echo second line >&2; trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"}}}
	// A disk cap: the storage driver enforces it where it can (overlay2
	// on xfs with pquota...); elsewhere (overlay2 on ext4) it is measured.
	a.Limits.DiskGB = 1
	stopped := testenv.NewSet(t, e.Cli, 33)
	stopped.State = schema.SetStopped
	all := []schema.DesiredSet{a, b, stopped}
	rep := e.Converge(t, all, "sets up", func(r map[string]schema.ObservedSet) bool {
		return testenv.Running(a.ID)(r) && testenv.Running(b.ID)(r) && r[stopped.ID].PowerState == schema.PowerShutdown
	})
	appA := testenv.ContainerOf(t, rep[a.ID], "app").ID

	t.Run("auth and unknown set", func(t *testing.T) {
		resp, err := http.Get(e.srv.URL + "/agent/v1/sets/" + a.ID + "/logs")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fault(t, resp.StatusCode, body, 401, "unauthorized")
		code, body := e.do(t, "GET", "no-such-set", "logs", nil, nil, "")
		fault(t, code, body, 404, "itemNotFound")
		code, body = e.do(t, "GET", a.ID, "nope", nil, nil, "")
		fault(t, code, body, 404, "itemNotFound")
	})

	t.Run("logs", func(t *testing.T) {
		code, body := e.do(t, "GET", a.ID, "logs", url.Values{"tail": {"0"}}, nil, "")
		if code != 200 || !strings.Contains(string(body), "first line\n") || !strings.Contains(string(body), "second line\n") {
			t.Errorf("logs = %d %q", code, body)
		}
		code, body = e.do(t, "GET", a.ID, "logs", url.Values{"tail": {"1"}}, nil, "")
		if code != 200 || strings.Count(string(body), "\n") != 1 {
			t.Errorf("logs tail=1 = %d %q, want one line", code, body)
		}
		code, body = e.do(t, "GET", a.ID, "logs", url.Values{"tail": {"-3"}}, nil, "")
		fault(t, code, body, 400, "badRequest")

		// Follow: a line written later arrives on the open stream.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/agent/v1/sets/"+a.ID+"/logs?follow=1&tail=1", nil)
		req.Header.Set(schema.AgentTokenHeader, e.token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		lines := bufio.NewScanner(resp.Body)
		if !lines.Scan() {
			t.Fatalf("follow: no first line: %v", lines.Err())
		}
		testenv.Exec(t, e.Cli, appA, "/bin/sh", "-c", "echo followed-line > /proc/1/fd/1")
		if !lines.Scan() || lines.Text() != "followed-line" {
			t.Errorf("follow: got %q (%v), want followed-line", lines.Text(), lines.Err())
		}
	})

	t.Run("files round trip", func(t *testing.T) {
		data := []byte("hello\x00binary\n")
		code, body := e.do(t, "PUT", a.ID, "files", url.Values{"path": {"/opt/new/dir/hello.bin"}, "mode": {"0600"}}, bytes.NewReader(data), "application/octet-stream")
		if code != 204 {
			t.Fatalf("put = %d %s", code, body)
		}
		code, body = e.do(t, "GET", a.ID, "files", url.Values{"path": {"/opt/new/dir/hello.bin"}}, nil, "")
		if code != 200 || !bytes.Equal(body, data) {
			t.Errorf("get = %d %q, want %q", code, body, data)
		}
		if out, _ := testenv.Exec(t, e.Cli, appA, "stat", "-c", "%a", "/opt/new/dir/hello.bin"); out != "600\n" {
			t.Errorf("mode = %q, want 600", out)
		}
		testenv.Exec(t, e.Cli, appA, "ln", "-s", "/opt/new/dir/hello.bin", "/tmp/link")
		if code, body = e.do(t, "GET", a.ID, "files", url.Values{"path": {"/tmp/link"}}, nil, ""); code != 200 || !bytes.Equal(body, data) {
			t.Errorf("get through symlink = %d %q", code, body)
		}
		// A symlink pointing out of the container resolves inside it.
		testenv.Exec(t, e.Cli, appA, "ln", "-s", "/../../../../etc/hostname", "/tmp/escape")
		code, body = e.do(t, "GET", a.ID, "files", url.Values{"path": {"/tmp/escape"}}, nil, "")
		if host, _ := testenv.Exec(t, e.Cli, appA, "cat", "/etc/hostname"); code != 200 || string(body) != host {
			t.Errorf("symlink escape = %d %q, want the container's own /etc/hostname %q", code, body, host)
		}
		for _, p := range []string{"relative/path", "/etc/../etc/passwd", "/", "/tmp/./x", "/a//b", ""} {
			code, body := e.do(t, "GET", a.ID, "files", url.Values{"path": {p}}, nil, "")
			fault(t, code, body, 400, "badRequest")
			code, body = e.do(t, "PUT", a.ID, "files", url.Values{"path": {p}}, strings.NewReader("x"), "")
			fault(t, code, body, 400, "badRequest")
		}
		code, body = e.do(t, "GET", a.ID, "files", url.Values{"path": {"/no/such/file"}}, nil, "")
		fault(t, code, body, 404, "itemNotFound")
		code, body = e.do(t, "GET", a.ID, "files", url.Values{"path": {"/opt"}}, nil, "")
		fault(t, code, body, 400, "badRequest")
		code, body = e.do(t, "PUT", a.ID, "files", url.Values{"path": {"/tmp/big"}}, bytes.NewReader(make([]byte, schema.MaxFileBytes+1)), "")
		fault(t, code, body, 400, "badRequest")
		code, body = e.do(t, "PUT", a.ID, "files", url.Values{"path": {"/tmp/m"}, "mode": {"999"}}, strings.NewReader("x"), "")
		fault(t, code, body, 400, "badRequest")
	})

	t.Run("password", func(t *testing.T) {
		code, body := e.json(t, "POST", a.ID, "password", schema.SetPassword{Password: "s3cret"})
		fault(t, code, body, 409, "conflictingRequest") // busybox has no chpasswd
		// A chpasswd that records what it was given.
		script := "#!/bin/sh\ncat > /tmp/chpasswd.in\n"
		if code, body := e.do(t, "PUT", a.ID, "files", url.Values{"path": {"/usr/sbin/chpasswd"}, "mode": {"0755"}}, strings.NewReader(script), ""); code != 204 {
			t.Fatalf("put chpasswd = %d %s", code, body)
		}
		if code, body := e.json(t, "POST", a.ID, "password", schema.SetPassword{Password: "s3cret"}); code != 204 {
			t.Fatalf("password = %d %s", code, body)
		}
		if code, body := e.do(t, "GET", a.ID, "files", url.Values{"path": {"/tmp/chpasswd.in"}}, nil, ""); code != 200 || string(body) != "root:s3cret\n" {
			t.Errorf("chpasswd got %d %q, want root:s3cret", code, body)
		}
		code, body = e.json(t, "POST", a.ID, "password", map[string]string{"password": "x", "bogus": "y"})
		fault(t, code, body, 400, "badRequest")
		code, body = e.json(t, "POST", a.ID, "password", schema.SetPassword{User: "a:b", Password: "x"})
		fault(t, code, body, 400, "badRequest")
		code, body = e.json(t, "POST", stopped.ID, "password", schema.SetPassword{Password: "x"})
		fault(t, code, body, 409, "conflictingRequest")
	})

	t.Run("commit", func(t *testing.T) {
		if code, body := e.do(t, "PUT", a.ID, "files", url.Values{"path": {"/snapshot-marker"}}, strings.NewReader("in the snapshot"), ""); code != 204 {
			t.Fatalf("put = %d %s", code, body)
		}
		code, body := e.json(t, "POST", a.ID, "commit", schema.CommitRequest{ImageID: "snap-1", ImageURL: e.Images.URL})
		if code != 200 {
			t.Fatalf("commit = %d %s", code, body)
		}
		var res schema.CommitResult
		if err := json.Unmarshal(body, &res); err != nil || !strings.HasPrefix(res.DockerImageID, "sha256:") || res.Size <= 0 {
			t.Fatalf("commit result = %s (%v)", body, err)
		}
		t.Cleanup(func() {
			_, _ = e.Cli.ImageRemove(context.Background(), res.DockerImageID, image.RemoveOptions{Force: true})
		})
		up, ok := e.Images.Upload("snap-1")
		if !ok || up.ContentType != "application/octet-stream" {
			t.Fatalf("upload = %v %q", ok, up.ContentType)
		}
		cfg, layers := readSave(t, up.Body)
		if "sha256:"+strings.TrimSuffix(cfg, ".json") != res.DockerImageID {
			t.Errorf("archive config %s, want image %s", cfg, res.DockerImageID)
		}
		base, err := e.Cli.ImageInspect(context.Background(), a.Image.DockerImageID)
		if err != nil {
			t.Fatal(err)
		}
		if len(layers) != len(base.RootFS.Layers)+1 {
			t.Fatalf("archive has %d layers, want the base's %d + 1", len(layers), len(base.RootFS.Layers))
		}
		if got := layers[len(layers)-1]["snapshot-marker"]; got != "in the snapshot" {
			t.Errorf("top layer snapshot-marker = %q; top layer files: %v", got, keys(layers[len(layers)-1]))
		}
		code, body = e.json(t, "POST", a.ID, "commit", schema.CommitRequest{ImageID: "x", ImageURL: "ftp://nope"})
		fault(t, code, body, 400, "badRequest")
	})

	t.Run("exec websocket", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		dial := func(q string) *websocket.Conn {
			ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(e.srv.URL, "http")+"/agent/v1/sets/"+a.ID+"/exec?"+q,
				&websocket.DialOptions{HTTPHeader: http.Header{schema.AgentTokenHeader: {e.token}}})
			if err != nil {
				t.Fatal(err)
			}
			return ws
		}
		// Echo through cat, no TTY.
		ws := dial("cmd=/bin/cat")
		if err := ws.Write(ctx, websocket.MessageBinary, []byte("echo me\n")); err != nil {
			t.Fatal(err)
		}
		if got, _ := readUntil(t, ctx, ws, "echo me\n"); !strings.Contains(got, "echo me\n") {
			t.Errorf("cat echoed %q", got)
		}
		ws.Close(websocket.StatusNormalClosure, "")

		// A shell on a TTY: resize, run, exit; the agent closes with the exit code.
		ws = dial("cmd=/bin/sh&tty=1")
		if err := ws.Write(ctx, websocket.MessageText, []byte(`{"resize":[123,45]}`)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3500 * time.Millisecond) // longer than the API's call timeout
		if err := ws.Write(ctx, websocket.MessageBinary, []byte("stty size; echo $((6*7)); exit 3\n")); err != nil {
			t.Fatal(err)
		}
		got, err := readUntil(t, ctx, ws, "")
		if !strings.Contains(got, "45 123") || !strings.Contains(got, "42") {
			t.Errorf("shell output %q, want the tty size 45 123 and 42", got)
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusNormalClosure || ce.Reason != "exit 3" {
			t.Errorf("close = %v, want normal closure with reason exit 3", err)
		}
		// Not running: 409 before the upgrade.
		code, body := e.do(t, "GET", stopped.ID, "exec", nil, nil, "")
		fault(t, code, body, 409, "conflictingRequest")
	})

	t.Run("diagnostics", func(t *testing.T) {
		out, code := testenv.Exec(t, e.Cli, appA, "ping", "-c", "3", "-i", "0.2", "-W", "2", b.Ports[0].IP)
		if code != 0 {
			t.Fatalf("ping: %s", out)
		}
		// 4 MiB in the writable layer: the disk report counts them.
		if out, code := testenv.Exec(t, e.Cli, appA, "dd", "if=/dev/zero", "of=/tmp/fill", "bs=1048576", "count=4"); code != 0 {
			t.Fatalf("dd: %s", out)
		}
		code, body := e.do(t, "GET", a.ID, "diagnostics", nil, nil, "")
		var d schema.Diagnostics
		if code != 200 || json.Unmarshal(body, &d) != nil {
			t.Fatalf("diagnostics = %d %s", code, body)
		}
		t.Logf("diagnostics: %s", body)
		if d.State != schema.PowerRunning || d.CPUTimeNS == 0 || d.MemoryBytes == 0 || d.MemoryLimit != 64<<20 || d.Pids == 0 || len(d.Containers) != 2 || d.DiskBytes == 0 {
			t.Errorf("diagnostics = %+v", d)
		}
		j, err := e.Cli.ContainerInspect(context.Background(), appA)
		if err != nil {
			t.Fatal(err)
		}
		if size := j.HostConfig.StorageOpt["size"]; size != "" && size != "1G" {
			t.Errorf("writable layer cap = %q, want the flavor's 1G", size)
		} else {
			t.Logf("writable layer: cap %q (empty: the storage driver cannot cap, measured only), disk_bytes %d", size, d.DiskBytes)
		}
		if d.DiskBytes < 4<<20 {
			t.Errorf("disk_bytes = %d, want at least the 4 MiB written", d.DiskBytes)
		}
		if len(d.NICs) != 1 || d.NICs[0].MAC != a.Ports[0].MAC || d.NICs[0].RxPackets < 3 || d.NICs[0].TxPackets < 3 || d.NICs[0].RxOctets == 0 {
			t.Errorf("nics = %+v, want the ping's packets both ways", d.NICs)
		}
		code, body = e.do(t, "GET", stopped.ID, "diagnostics", nil, nil, "")
		if code != 200 || !strings.Contains(string(body), `"state":"shutdown"`) {
			t.Errorf("diagnostics of a stopped set = %d %s", code, body)
		}
	})

	t.Run("sync", func(t *testing.T) {
		code, body := e.do(t, "POST", b.ID, "sync", nil, nil, "")
		var s schema.ObservedSet
		if code != 200 || json.Unmarshal(body, &s) != nil || s.ID != b.ID || s.PowerState != schema.PowerRunning || len(s.Containers) != 2 {
			t.Errorf("sync = %d %s", code, body)
		}
		code, body = e.do(t, "POST", "no-such-set", "sync", nil, nil, "")
		fault(t, code, body, 404, "itemNotFound")
	})
}

// readUntil reads binary messages until their text contains want (or,
// with want "", until the socket closes).
func readUntil(t *testing.T, ctx context.Context, ws *websocket.Conn, want string) (string, error) {
	t.Helper()
	var got strings.Builder
	for want == "" || !strings.Contains(got.String(), want) {
		typ, b, err := ws.Read(ctx)
		if err != nil {
			if want != "" {
				t.Errorf("read: %v (so far %q)", err, got.String())
			}
			return got.String(), err
		}
		if typ == websocket.MessageBinary {
			got.Write(b)
		}
	}
	return got.String(), nil
}

// readSave parses a docker-save archive: the config file name and, per
// layer in order, its regular files and their contents (small ones).
func readSave(t *testing.T, archive []byte) (string, []map[string]string) {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			files[h.Name] = b
		}
	}
	var manifest []struct {
		Config string
		Layers []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("manifest.json: %v %s", err, files["manifest.json"])
	}
	var layers []map[string]string
	for _, l := range manifest[0].Layers {
		content := map[string]string{}
		lr := tar.NewReader(bytes.NewReader(files[l]))
		for {
			h, err := lr.Next()
			if err != nil {
				break
			}
			if h.Typeflag == tar.TypeReg && h.Size < 1024 {
				b, _ := io.ReadAll(lr)
				content[path.Clean(h.Name)] = string(b)
			} else {
				content[path.Clean(h.Name)] = fmt.Sprintf("<%c %d>", h.Typeflag, h.Size)
			}
		}
		layers = append(layers, content)
	}
	return path.Base(manifest[0].Config), layers
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// stopDuringCounters is the host's real counter reader, except that the
// first read first has the set stopped (its port torn down) and waits for
// it: the race of a diagnostics call with a stop, made deterministic.
type stopDuringCounters struct {
	agentapi.NICs
	once sync.Once
	stop func()
}

func (n *stopDuringCounters) Counters(ctx context.Context, port observed.Port) (schema.NICStats, error) {
	n.once.Do(n.stop)
	return n.NICs.Counters(ctx, port)
}

// TestDiagnosticsRacingStop: diagnostics whose set is stopped while its
// counters are read answer 409, as Nova does for an instance that is not
// running, never a 500 (known bug B11 of the faults suite).
func TestDiagnosticsRacingStop(t *testing.T) {
	h := testenv.NewHost(t, testenv.HostOptions{})
	s := testenv.NewSet(t, h.Cli, 41)
	h.Converge(t, []schema.DesiredSet{s}, "set up", testenv.Running(s.ID))
	nics := &stopDuringCounters{NICs: h.Net}
	nics.stop = func() {
		stopped := s
		stopped.State = schema.SetStopped
		h.Converge(t, []schema.DesiredSet{stopped}, "set stopped", func(r map[string]schema.ObservedSet) bool {
			return r[s.ID].PowerState == schema.PowerShutdown
		})
	}
	log := slog.New(slog.NewTextHandler(testenv.TestWriter{T: t}, nil))
	srv := httptest.NewServer(agentapi.New(log, agentapi.Config{
		Token: h.Images.Token, Sets: h.Rec, NICs: nics, Files: h.Runtime, Docker: h.Cli,
	}))
	t.Cleanup(srv.Close)
	e := &apiEnv{Host: h, srv: srv, token: h.Images.Token}
	code, body := e.do(t, "GET", s.ID, "diagnostics", nil, nil, "")
	fault(t, code, body, 409, "conflictingRequest")
	// Once stopped, the same call is an answer about a stopped set.
	code, body = e.do(t, "GET", s.ID, "diagnostics", nil, nil, "")
	if code != 200 || !strings.Contains(string(body), `"state":"shutdown"`) {
		t.Errorf("diagnostics of the stopped set = %d %s", code, body)
	}
}
