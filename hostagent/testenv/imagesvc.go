package testenv

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"berth/schema"
)

// ImageService is a test double of imagesvc's internal image-file endpoint
// (X-Berth-Agent-Token): GET /internal/v1/images/{id}/file streams
// `docker save` of the Docker image registered under an image ID; PUT
// stores an uploaded archive (a snapshot), which Upload returns.
type ImageService struct {
	URL   string
	Token string
	// Fetches counts successful downloads.
	Fetches atomic.Int64

	mu      sync.Mutex
	images  map[string][]byte
	uploads map[string]Upload
}

// Upload is one archive PUT to the double.
type Upload struct {
	ContentType string
	Body        []byte
}

// Upload returns what was uploaded as imageID.
func (s *ImageService) Upload(imageID string) (Upload, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.uploads[imageID]
	return u, ok
}

// NewImageService starts the double; it is closed when the test ends.
func NewImageService(t testing.TB) *ImageService {
	s := &ImageService{Token: "image-token-" + RandomHex(4), images: map[string][]byte{}, uploads: map[string]Upload{}}
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// Add saves dockerImageID from cli now and serves it as imageID.
func (s *ImageService) Add(t testing.TB, cli *client.Client, imageID, dockerImageID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rc, err := cli.ImageSave(ctx, []string{dockerImageID})
	if err != nil {
		t.Fatalf("docker save %s: %v", dockerImageID, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("docker save %s: %v", dockerImageID, err)
	}
	s.mu.Lock()
	s.images[imageID] = b
	s.mu.Unlock()
}

func (s *ImageService) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(schema.AgentTokenHeader) != s.Token {
		http.Error(w, `{"message":"bad agent token"}`, http.StatusUnauthorized)
		return
	}
	id, ok := strings.CutPrefix(r.URL.Path, "/internal/v1/images/")
	id, ok2 := strings.CutSuffix(id, "/file")
	if !ok || !ok2 {
		http.NotFound(w, r)
		return
	}
	if r.Method == http.MethodPut {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.uploads[id] = Upload{ContentType: r.Header.Get("Content-Type"), Body: b}
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	b, found := s.images[id]
	s.mu.Unlock()
	if !found {
		http.Error(w, `{"message":"no such image"}`, http.StatusNotFound)
		return
	}
	time.Sleep(50 * time.Millisecond) // widen the window for concurrent loads
	w.Header().Set("Content-Type", "application/x-tar")
	_, _ = w.Write(b)
	s.Fetches.Add(1)
}
