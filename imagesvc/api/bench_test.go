package api_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net/http"
	"testing"

	"berth/imagesvc/dockerarchive/archivetest"
)

// Upload and download throughput of the Glance API on loopback, real
// PostgreSQL and the filesystem blob store:
//
//	go test -run '^$' -bench . -benchtime 10x ./imagesvc/api/
//
// Each op moves benchSize bytes; MB/s is the throughput.

const benchSize = 64 << 20

func benchPut(b *testing.B, e *env, tok, id string, data []byte) {
	req, _ := http.NewRequest("PUT", e.srv.URL+"/v2/images/"+id+"/file", bytes.NewReader(data))
	req.Header.Set("X-Auth-Token", tok)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 204 {
		b.Fatalf("upload: %d", resp.StatusCode)
	}
}

func benchGet(b *testing.B, e *env, tok, id string) int64 {
	req, _ := http.NewRequest("GET", e.srv.URL+"/v2/images/"+id+"/file", nil)
	req.Header.Set("X-Auth-Token", tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("download: %d %v", resp.StatusCode, err)
	}
	return n
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// dockerArchive is a docker save archive of about benchSize bytes in two
// fresh random layers (so nothing dedups against an earlier op).
func dockerArchive() []byte {
	return archivetest.Build(archivetest.Legacy, "bench:1",
		archivetest.RandomLayer(benchSize/2), archivetest.RandomLayer(benchSize/2-8<<10)).Data
}

func BenchmarkUploadPlain(b *testing.B) {
	e := newEnv(b)
	tok := e.ks.Issue("p1", "member")
	data := randomBytes(benchSize)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		id := e.create(tok, `{"name": "bench", "container_format": "bare", "disk_format": "raw"}`)["id"].(string)
		b.StartTimer()
		benchPut(b, e, tok, id, data)
	}
}

func BenchmarkUploadDocker(b *testing.B) {
	e := newEnv(b)
	tok := e.ks.Issue("p1", "member")
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		data := dockerArchive()
		b.SetBytes(int64(len(data)))
		id := e.create(tok, `{"name": "bench", "container_format": "docker", "disk_format": "raw"}`)["id"].(string)
		b.StartTimer()
		benchPut(b, e, tok, id, data)
	}
}

func BenchmarkDownloadPlain(b *testing.B) {
	e := newEnv(b)
	tok := e.ks.Issue("p1", "member")
	id := e.create(tok, `{"name": "bench", "container_format": "bare", "disk_format": "raw"}`)["id"].(string)
	benchPut(b, e, tok, id, randomBytes(benchSize))
	b.SetBytes(benchSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		benchGet(b, e, tok, id)
	}
}

// BenchmarkDownloadDocker plays the archive back from its layer blobs
// (checking each layer's digest on the way).
func BenchmarkDownloadDocker(b *testing.B) {
	e := newEnv(b)
	tok := e.ks.Issue("p1", "member")
	id := e.create(tok, `{"name": "bench", "container_format": "docker", "disk_format": "raw"}`)["id"].(string)
	data := dockerArchive()
	benchPut(b, e, tok, id, data)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		benchGet(b, e, tok, id)
	}
}
