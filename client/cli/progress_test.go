package cli

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// ptyCapture opens a pseudo-terminal for stderr and returns the slave
// end and a function that, once the command is done, collects everything
// drawn on it. (Closing the slave while the master has unread data may
// drop that data on Linux, so finish drains first.)
func ptyCapture(t *testing.T, cols, rows uint16) (*os.File, func() string) {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal available: %v", err)
	}
	if cols > 0 {
		if err := pty.Setsize(ptmx, &pty.Winsize{Rows: rows, Cols: cols}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 4096)
		for {
			n, err := ptmx.Read(b)
			mu.Lock()
			buf.Write(b[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return tty, func() string {
		// Wait until the terminal has been quiet for 100ms.
		last := -1
		for i := 0; i < 50; i++ {
			time.Sleep(100 * time.Millisecond)
			mu.Lock()
			n := buf.Len()
			mu.Unlock()
			if n == last {
				break
			}
			last = n
		}
		tty.Close()
		ptmx.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return buf.String()
	}
}

const uploadID = "99999999-8888-4777-8666-555555555555"

// uploadFake adds image create + upload (slow enough for a bar to draw) to f
// and records the uploaded size and Content-Length.
func uploadFake(f *fakeCloud, got *int64, contentLength *int64) {
	img := func() map[string]any {
		return map[string]any{"id": uploadID, "name": "big", "status": "active", "container_format": "docker",
			"disk_format": "raw", "visibility": "private", "tags": []string{}, "size": *got}
	}
	f.handle("POST /image/v2/images", func(w http.ResponseWriter, r *http.Request) {
		m := img()
		m["status"] = "queued"
		replyJSON(w, 201, m)
	})
	f.handle("PUT /image/v2/images/{id}/file", func(w http.ResponseWriter, r *http.Request) {
		*contentLength = r.ContentLength
		buf := make([]byte, 256<<10)
		for {
			n, err := r.Body.Read(buf)
			*got += int64(n)
			if err != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		w.WriteHeader(204)
	})
	f.handle("GET /image/v2/images/{id}", func(w http.ResponseWriter, r *http.Request) { replyJSON(w, 200, img()) })
}

func bigFile(t *testing.T, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "big.tar")
	if err := os.WriteFile(p, bytes.Repeat([]byte("x"), size), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUploadProgressBarOnTerminal runs an upload with stderr on a
// pseudo-terminal: the bar (name, bytes, rate) must be drawn there.
func TestUploadProgressBarOnTerminal(t *testing.T) {
	tty, finish := ptyCapture(t, 120, 24)

	f := newFakeCloud(t)
	var got, cl int64
	uploadFake(f, &got, &cl)
	const size = 3 << 20
	file := bigFile(t, size)
	var out bytes.Buffer
	env := f.env()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := Main(ctx, []string{"image", "upload", "--name", "big", file, "-f", "value", "-c", "id"}, Env{
		Stdin: strings.NewReader(""), Stdout: &out, Stderr: tty, Getenv: func(k string) string { return env[k] },
	})
	s := finish()
	if code != 0 {
		t.Fatalf("exit %d; terminal:\n%s", code, s)
	}
	if got != size || cl != size {
		t.Errorf("server got %d bytes with Content-Length %d, want %d", got, cl, size)
	}
	if out.String() != uploadID+"\n" {
		t.Errorf("stdout = %q", out.String())
	}
	for _, want := range []string{"big", "3.0 MiB", "[", "="} {
		if !strings.Contains(s, want) {
			t.Errorf("terminal output lacks %q:\n%q", want, s)
		}
	}
	if !strings.Contains(s, "/s") && !strings.Contains(s, "done") {
		t.Errorf("terminal output shows neither a rate nor done:\n%q", s)
	}
}

// TestUploadQuietWhenPiped: the same upload with stderr piped prints
// nothing on stderr.
func TestUploadQuietWhenPiped(t *testing.T) {
	f := newFakeCloud(t)
	var got, cl int64
	uploadFake(f, &got, &cl)
	const size = 1 << 20
	out, stderr, code := f.run("image", "upload", "--name", "big", bigFile(t, size), "-f", "value", "-c", "id")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if stderr != "" {
		t.Errorf("stderr = %q, want nothing when piped", stderr)
	}
	if out != uploadID+"\n" || got != size {
		t.Errorf("stdout %q, uploaded %d", out, got)
	}
}

// TestUploadFromStdinIsChunked: size unknown, still streamed.
func TestUploadFromStdinIsChunked(t *testing.T) {
	f := newFakeCloud(t)
	var got, cl int64
	uploadFake(f, &got, &cl)
	_, stderr, code := f.runWith(nil, strings.NewReader(strings.Repeat("y", 12345)), "image", "upload", "--name", "big", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if got != 12345 || cl != -1 {
		t.Errorf("uploaded %d bytes, Content-Length %d; want 12345, -1 (chunked)", got, cl)
	}
}

// TestSaveProgressBarOnTerminal: image save draws its bar on a terminal
// stderr and writes the bytes to the file.
func TestSaveProgressBarOnTerminal(t *testing.T) {
	tty, finish := ptyCapture(t, 0, 0) // a terminal that reports no size
	f := newFakeCloud(t)
	const size = 2 << 20
	f.handle("GET /image/v2/images/{id}/file", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(size))
		chunk := bytes.Repeat([]byte("z"), 256<<10)
		for i := 0; i < size/len(chunk); i++ {
			w.Write(chunk)
			w.(http.Flusher).Flush()
			time.Sleep(20 * time.Millisecond)
		}
	})
	dst := filepath.Join(t.TempDir(), "demo.tar")
	env := f.env()
	var out bytes.Buffer
	code := Main(context.Background(), []string{"image", "save", "demo", "-o", dst}, Env{
		Stdin: strings.NewReader(""), Stdout: &out, Stderr: tty, Getenv: func(k string) string { return env[k] },
	})
	s := finish()
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, s)
	}
	if st, err := os.Stat(dst); err != nil || st.Size() != size {
		t.Errorf("saved file: %v %v", st, err)
	}
	if !strings.Contains(s, "demo") || !strings.Contains(s, "2.0 MiB") {
		t.Errorf("terminal output lacks the bar:\n%q", s)
	}
}

// TestWaitBarOnTerminal: --wait draws a bar with the status on a terminal
// instead of one line per change.
func TestWaitBarOnTerminal(t *testing.T) {
	tty, finish := ptyCapture(t, 0, 0) // a terminal that reports no size
	f := newFakeCloud(t)
	f.handle("POST /compute/v2.1/servers/{id}/action", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(202) })
	serverSequence(f, "f34b7cb3-2b6e-4f6c-b1b5-1006f7f3a547", []map[string]any{st("ACTIVE", nil, 100),
		st("ACTIVE", "powering-off", 100), st("ACTIVE", "powering-off", 100), st("SHUTOFF", nil, 100)})
	env := f.env()
	code := Main(context.Background(), []string{"server", "stop", "--wait", "f34b7cb3-2b6e-4f6c-b1b5-1006f7f3a547"}, Env{
		Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: tty, Getenv: func(k string) string { return env[k] },
		WaitInterval: 150 * time.Millisecond,
	})
	s := finish()
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, s)
	}
	if !strings.Contains(s, "powering-off") || !strings.Contains(s, "100 %") {
		t.Errorf("terminal output lacks the status bar:\n%q", s)
	}
}
