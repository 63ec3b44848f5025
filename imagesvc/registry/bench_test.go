package registry_test

import (
	"crypto/rand"
	"io"
	"net/http"
	"testing"

	"berth/imagesvc/digest"
	"berth/imagesvc/imagesvctest"
)

// Registry blob push and pull throughput on loopback:
//
//	go test -run '^$' -bench . -benchtime 10x ./imagesvc/registry/

const benchBlob = 64 << 20

func benchEnv(b *testing.B) (*imagesvctest.Env, *http.Request) {
	env := imagesvctest.Start(b, imagesvctest.Options{})
	env.KS.AddProject("p-demo", "demo")
	env.KS.AddUser("alice", "pw", "p-demo", map[string][]string{"p-demo": {"member"}})
	req, _ := http.NewRequest("GET", env.URL+"/v2/", nil)
	req.SetBasicAuth("alice", "pw")
	return env, req
}

func BenchmarkRegistryBlobPush(b *testing.B) {
	env, _ := benchEnv(b)
	b.SetBytes(benchBlob)
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		data := make([]byte, benchBlob)
		rand.Read(data)
		b.StartTimer()
		req, _ := http.NewRequest("POST", env.URL+"/v2/demo/bench/blobs/uploads/?digest="+digest.Of(data), newReader(data))
		req.SetBasicAuth("alice", "pw")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 201 {
			b.Fatalf("push: %v %v", err, resp.Status)
		}
		resp.Body.Close()
	}
}

func BenchmarkRegistryBlobPull(b *testing.B) {
	env, _ := benchEnv(b)
	data := make([]byte, benchBlob)
	rand.Read(data)
	d := digest.Of(data)
	req, _ := http.NewRequest("POST", env.URL+"/v2/demo/bench/blobs/uploads/?digest="+d, newReader(data))
	req.SetBasicAuth("alice", "pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 201 {
		b.Fatalf("push: %v", err)
	}
	resp.Body.Close()
	b.SetBytes(benchBlob)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req, _ := http.NewRequest("GET", env.URL+"/v2/demo/bench/blobs/"+d, nil)
		req.SetBasicAuth("alice", "pw")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("pull: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

type sliceReader struct {
	b []byte
}

func newReader(b []byte) *sliceReader { return &sliceReader{b: b} }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
