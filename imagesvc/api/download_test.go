package api_test

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestDownloadRanges: a download's Range header is served as Glance
// serves it (webob's single byte range, zero-indexed, end inclusive), and
// a bad one is refused with Glance's fault and status: 400 for several
// ranges, 416 "Invalid Range header." for one that does not parse, 416
// with the valid start positions for a start past the data (C1, bug B2).
// A Content-Range header on the request is read as Glance reads it when
// there is no Range.
func TestDownloadRanges(t *testing.T) {
	e := newEnv(t)
	tok := e.ks.Issue("p1", "member")
	img := e.create(tok, `{"name": "abc", "container_format": "bare", "disk_format": "raw"}`)
	id := img["id"].(string)
	data := []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
	if r := e.do("PUT", "/v2/images/"+id+"/file", tok, data, "Content-Type", "application/octet-stream"); r.status != 204 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	show := e.do("GET", "/v2/images/"+id, tok, nil).json(t)
	checksum, _ := show["checksum"].(string)
	for _, c := range []struct {
		rng          string
		header       string // default Range
		status       int
		body, cRange string // for 200/206
		message      string // for faults
	}{
		{rng: "", status: 200, body: string(data)},
		{rng: "bytes=3-10", status: 206, body: "DEFGHIJK", cRange: "bytes 3-10/26"},
		{rng: "bytes=0-0", status: 206, body: "A", cRange: "bytes 0-0/26"},
		{rng: "bytes=20-", status: 206, body: "UVWXYZ", cRange: "bytes 20-25/26"},
		{rng: "bytes=20-1000", status: 206, body: "UVWXYZ", cRange: "bytes 20-25/26"},
		{rng: "bytes=-3", status: 206, body: "XYZ", cRange: "bytes 23-25/26"},
		{rng: "bytes=-100", status: 206, body: string(data), cRange: "bytes 0-25/26"},
		{rng: "BYTES = 1 - 2", status: 206, body: "BC", cRange: "bytes 1-2/26"},
		{rng: "bytes=10-5", status: 416, message: "Invalid Range header."},
		{rng: "bytes=abc", status: 416, message: "Invalid Range header."},
		{rng: "bytes=-", status: 416, message: "Invalid Range header."},
		{rng: "items=0-5", status: 416, message: "Invalid Range header."},
		{rng: "bytes=1-2junk", status: 416, message: "Invalid Range header."},
		{rng: "bytes=26-", status: 416, message: "Invalid start position in Range header. Start position MUST be in the inclusive range [0, 25]."},
		{rng: "bytes=99999999999-", status: 416, message: "Invalid start position in Range header. Start position MUST be in the inclusive range [0, 25]."},
		{rng: "bytes=99999999999999999999999-", status: 416, message: "Invalid start position in Range header. Start position MUST be in the inclusive range [0, 25]."},
		{rng: "bytes=0-1,3-4", status: 400, message: "Requests with multiple ranges are not supported in Glance. You may make multiple single-range requests instead."},
		// Content-Range on a request, which Glance still honours.
		{header: "Content-Range", rng: "bytes 3-10/26", status: 206, body: "DEFGHIJK", cRange: "bytes 3-10/26"},
		{header: "Content-Range", rng: "bytes 3-10/*", status: 206, body: "DEFGHIJK", cRange: "bytes 3-10/26"},
		{header: "Content-Range", rng: "bytes 20-25/*", status: 206, body: "UVWXYZ", cRange: "bytes 20-25/26"},
		{header: "Content-Range", rng: "bytes 5-3/26", status: 416, message: "Invalid Content-Range header."},
		{header: "Content-Range", rng: "bytes 3-10/5", status: 416, message: "Invalid Content-Range header."},
		{header: "Content-Range", rng: "bytes */26", status: 416, message: "Invalid Content-Range header."},
		{header: "Content-Range", rng: "3-10", status: 416, message: "Invalid Content-Range header."},
		{header: "Content-Range", rng: "bytes 20-26/*", status: 416, message: "Invalid stop position in Content-Range header. The stop position MUST be in the inclusive range [0, 25]."},
		{header: "Content-Range", rng: "bytes 26-30/100", status: 416, message: "Invalid start position in Content-Range header. Start position MUST be in the inclusive range [0, 25]."},
	} {
		if c.header == "" {
			c.header = "Range"
		}
		t.Run(c.header+": "+c.rng, func(t *testing.T) {
			var hdr []string
			if c.rng != "" {
				hdr = []string{c.header, c.rng}
			}
			r := e.do("GET", "/v2/images/"+id+"/file", tok, nil, hdr...)
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			if c.status >= 400 {
				var f struct{ Message, Code, Title string }
				if err := json.Unmarshal(r.body, &f); err != nil || r.header.Get("Content-Type") != "application/json" {
					t.Fatalf("fault is not Glance's JSON (%v, %s): %s", err, r.header.Get("Content-Type"), r.body)
				}
				text := http.StatusText(c.status)
				if code := strconv.Itoa(c.status) + " " + text; f.Message != c.message || f.Code != code || f.Title != text {
					t.Errorf("fault %+v, want message %q code %q", f, c.message, code)
				}
				return
			}
			if string(r.body) != c.body || r.header.Get("Content-Range") != c.cRange {
				t.Errorf("body %q Content-Range %q, want %q %q", r.body, r.header.Get("Content-Range"), c.body, c.cRange)
			}
			if checksum == "" || r.header.Get("Content-MD5") != checksum {
				t.Errorf("Content-MD5 %q is not the image's checksum", r.header.Get("Content-MD5"))
			}
		})
	}
}

// TestCorruptPlainImageIsNotServedAsGood: the data of a plain image,
// changed at rest behind the service's back, is not served as a complete
// download: the response stops short of its Content-Length (checksums
// are verified on read, not only on the way in).
func TestCorruptPlainImageIsNotServedAsGood(t *testing.T) {
	e := newEnv(t)
	tok := e.ks.Issue("p1", "member")
	img := e.create(tok, `{"name": "raw", "container_format": "bare", "disk_format": "raw"}`)
	id := img["id"].(string)
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10)
	if r := e.do("PUT", "/v2/images/"+id+"/file", tok, data, "Content-Type", "application/octet-stream"); r.status != 204 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	// Intact: served whole.
	if r := e.do("GET", "/v2/images/"+id+"/file", tok, nil); r.status != 200 || !bytes.Equal(r.body, data) {
		t.Fatalf("intact download: %d, %d bytes", r.status, len(r.body))
	}
	path := filepath.Join(e.dataDir, "blobs", "images", id)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	resp, got, rerr := e.download(id, tok)
	if rerr == nil {
		t.Errorf("corrupted data served as a complete download (%d of %d bytes, status %d)", len(got), resp.ContentLength, resp.StatusCode)
	}
	if bytes.Equal(got, b) {
		t.Error("the corrupted bytes were served in full")
	}
}

// TestChunkedUpload: data sent without a Content-Length (chunked transfer
// encoding, as a streaming client sends it) is stored whole, with the
// checksums of what arrived.
func TestChunkedUpload(t *testing.T) {
	e := newEnv(t)
	tok := e.ks.Issue("p1", "member")
	id := e.create(tok, `{"name": "chunked", "container_format": "bare", "disk_format": "raw"}`)["id"].(string)
	data := bytes.Repeat([]byte("streamed "), 300_000)
	req, _ := http.NewRequest("PUT", e.srv.URL+"/v2/images/"+id+"/file", nil)
	req.Body = readerOnly{bytes.NewReader(data)}
	req.ContentLength = -1 // chunked
	req.Header.Set("X-Auth-Token", tok)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("chunked upload: %s", resp.Status)
	}
	img := e.do("GET", "/v2/images/"+id, tok, nil).json(t)
	sum := md5.Sum(data)
	if img["status"] != "active" || img["size"] != float64(len(data)) || img["checksum"] != hex.EncodeToString(sum[:]) {
		t.Errorf("after a chunked upload: status %v size %v checksum %v", img["status"], img["size"], img["checksum"])
	}
	if r := e.do("GET", "/v2/images/"+id+"/file", tok, nil); !bytes.Equal(r.body, data) {
		t.Errorf("download after a chunked upload: %d bytes, want %d", len(r.body), len(data))
	}
}
