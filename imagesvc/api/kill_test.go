package api_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"berth/imagesvc/keystonefake"
	"berth/internal/pgtest"
)

// TestKilledUploadLeavesNothing kills the real berth-imagesvc process
// (SIGKILL, no chance to clean up) in the middle of an upload: nothing of
// the partial data is ever visible under the image's key, and once a
// process runs again the image goes back to queued when its upload lease
// runs out, downloads nothing, and takes a complete upload.
func TestKilledUploadLeavesNothing(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "berth-imagesvc")
	if out, err := exec.Command("go", "build", "-o", bin, "berth/cmd/berth-imagesvc").CombinedOutput(); err != nil {
		t.Fatalf("build berth-imagesvc: %v\n%s", err, out)
	}
	ks := keystonefake.New(t)
	dataDir := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "agent-token")
	if err := os.WriteFile(tokenFile, []byte(agentToken), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	args := []string{"--listen", addr, "--db", pgtest.DSN(t), "--keystone-url", ks.URL(), "--data-dir", dataDir,
		"--agent-token-file", tokenFile, "--upload-lease", "3s", "--log-level", "warn"}
	base := "http://" + addr
	start := func() *exec.Cmd {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Stderr = testWriter{t}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
			if resp, err := http.Get(base + "/versions"); err == nil {
				resp.Body.Close()
				return cmd
			}
			if time.Now().After(deadline) {
				t.Fatal("berth-imagesvc did not answer within a minute")
			}
		}
	}
	proc := start()
	tok := ks.Issue("p1", "member")
	call := func(method, path string, body io.Reader, ct string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, body)
		req.Header.Set("X-Auth-Token", tok)
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	status := func(id string) string {
		t.Helper()
		code, b := call("GET", "/v2/images/"+id, nil, "")
		if code != 200 {
			t.Fatalf("show: %d %s", code, b)
		}
		_, rest, _ := strings.Cut(string(b), `"status":"`)
		st, _, _ := strings.Cut(rest, `"`)
		return st
	}
	code, b := call("POST", "/v2/images", strings.NewReader(`{"name": "k", "container_format": "bare", "disk_format": "raw"}`), "application/json")
	if code != 201 {
		t.Fatalf("create: %d %s", code, b)
	}
	_, rest, _ := strings.Cut(string(b), `"id":"`)
	id, _, _ := strings.Cut(rest, `"`)

	// Promise 64 MiB, send 8 MiB, and kill the service while it waits for
	// the rest.
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("PUT", base+"/v2/images/"+id+"/file", pr)
	req.ContentLength = 64 << 20
	req.Header.Set("X-Auth-Token", tok)
	req.Header.Set("Content-Type", "application/octet-stream")
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("upload answered %s", resp.Status)
		}
		done <- err
	}()
	if _, err := pw.Write(bytes.Repeat([]byte("partial!"), 1<<20)); err != nil {
		t.Fatal(err)
	}
	// The bytes may sit in socket buffers before the handler starts.
	for deadline := time.Now().Add(time.Minute); status(id) != "saving"; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("image is %s during the upload, want saving", status(id))
		}
	}
	if err := proc.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = proc.Wait()
	pw.CloseWithError(errors.New("service gone"))
	if err := <-done; err == nil {
		t.Fatal("the upload succeeded although the service was killed")
	}
	visible := filepath.Join(dataDir, "blobs", "images", id)
	if _, err := os.Stat(visible); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("partial data visible under the image's key after the kill: %v", err)
	}

	// A new process puts the image back once the lease runs out.
	start()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		st := status(id)
		if st == "queued" {
			break
		}
		if st != "saving" || time.Now().After(deadline) {
			t.Fatalf("image is %s after the kill, want saving and then queued", st)
		}
	}
	if code, b := call("GET", "/v2/images/"+id+"/file", nil, ""); code != http.StatusNoContent {
		t.Errorf("download after the kill: %d (%d bytes), want 204", code, len(b))
	}
	if _, err := os.Stat(visible); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("data under the image's key after recovery: %v", err)
	}
	data := []byte("the whole image")
	if code, b := call("PUT", "/v2/images/"+id+"/file", bytes.NewReader(data), "application/octet-stream"); code != 204 {
		t.Fatalf("upload after recovery: %d %s", code, b)
	}
	if code, b := call("GET", "/v2/images/"+id+"/file", nil, ""); code != 200 || !bytes.Equal(b, data) {
		t.Errorf("download after a good upload: %d %q", code, b)
	}
}

// testWriter sends a child process's log lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("imagesvc: %s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}
