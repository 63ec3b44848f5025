package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"berth/imagesvc/content"
	"berth/imagesvc/digest"
	"berth/internal/apierr"
	"berth/internal/httpx"
)

func blobUnknown(d string) error {
	return &regError{status: http.StatusNotFound, code: "BLOB_UNKNOWN", message: "blob unknown to registry",
		detail: map[string]string{"digest": d}}
}

// blobAccessible reports whether the caller may use blob d: its project
// uploaded it, or an image it can see (and pull) is made of it. Knowing a
// digest is not enough, so one project cannot fetch another's private
// layers by digest; a project that uploads bytes it already has elsewhere
// stores nothing new (the blob is stored once), it only proves possession.
func (g *Registry) blobAccessible(ctx context.Context, req *request, d string) (bool, error) {
	return g.cfg.Store.BlobAccessible(ctx, req.caller.viewer(), d)
}

// getBlob is GET and HEAD /v2/<name>/blobs/<digest>.
func (g *Registry) getBlob(w http.ResponseWriter, r *http.Request, req *request) error {
	d := req.ref
	if !digest.Valid(d) {
		return &regError{status: http.StatusBadRequest, code: "DIGEST_INVALID", message: "invalid digest",
			detail: map[string]string{"digest": d}}
	}
	ok, err := g.blobAccessible(r.Context(), req, d)
	if err != nil {
		return err
	}
	if !ok {
		return blobUnknown(d)
	}
	h := w.Header()
	h.Set("Docker-Content-Digest", d)
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Etag", `"`+d+`"`)
	h.Set("Cache-Control", "max-age=31536000")
	if r.Method == http.MethodHead {
		b, err := g.cfg.Content.Stat(r.Context(), d)
		if apierr.Is(err, apierr.NotFound) {
			return blobUnknown(d)
		}
		if err != nil {
			return err
		}
		// A push that finds the blob here will reference it soon: keep it
		// from garbage collection meanwhile.
		_, _ = g.cfg.Store.TouchBlob(r.Context(), d)
		setLength(w, b.Size)
		w.WriteHeader(http.StatusOK)
		return nil
	}
	br, err := g.cfg.Content.Open(r.Context(), d)
	if apierr.Is(err, apierr.NotFound) {
		return blobUnknown(d)
	}
	if err != nil {
		return err
	}
	defer br.Close()
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, "", time.Time{}, br)
	g.stats.BlobBytesServed.Add(cw.n)
	if cw.status == http.StatusOK || cw.status == http.StatusPartialContent {
		g.stats.BlobsServed.Add(1)
	}
	return nil
}

// countingWriter counts body bytes written.
type countingWriter struct {
	http.ResponseWriter
	n      int64
	status int
}

func (c *countingWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// upload is a blob upload in flight. Uploads live in this process: a
// deployment with several imagesvc replicas routes /blobs/uploads/<id>
// to the replica that started it (the id is in the path, so a
// consistent-hash load balancer rule does it).
//
// Lock order: Registry.mu is never held while taking upload.mu.
type upload struct {
	id, name, owner string
	touched         atomic.Int64 // unix nanoseconds of the last request

	mu   sync.Mutex
	w    *content.Writer
	d    *digest.Digester
	done bool
}

func (u *upload) touch() { u.touched.Store(time.Now().UnixNano()) }

func (u *upload) idleSince() time.Duration {
	return time.Since(time.Unix(0, u.touched.Load()))
}

// discard drops the upload (it must not be locked).
func (u *upload) discard() {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.drop()
}

// drop ends the upload (u locked): the data goes, the digester stops.
func (u *upload) drop() {
	if !u.done {
		u.done = true
		u.w.Discard()
		u.d.Close()
	}
}

func uploadUnknown(id string) error {
	return &regError{status: http.StatusNotFound, code: "BLOB_UPLOAD_UNKNOWN", message: "blob upload unknown to registry",
		detail: map[string]string{"uuid": id}}
}

func (req *request) uploadLocation(id string) string {
	return "/v2/" + req.name + "/blobs/uploads/" + id
}

// uploadHeaders are the headers of an upload in progress.
func uploadHeaders(w http.ResponseWriter, req *request, u *upload) {
	end := u.w.Size() - 1
	if end < 0 {
		end = 0
	}
	w.Header().Set("Location", req.uploadLocation(u.id))
	w.Header().Set("Range", "0-"+strconv.FormatInt(end, 10))
	w.Header().Set("Docker-Upload-UUID", u.id)
}

// startUpload is POST /v2/<name>/blobs/uploads/: 202 and an upload
// location; with ?mount=<digest>&from=<name>, 201 when the caller may use
// that blob; with ?digest=<digest> and a body, the whole blob at once.
func (g *Registry) startUpload(w http.ResponseWriter, r *http.Request, req *request) error {
	if err := req.canPush(); err != nil {
		return err
	}
	q := r.URL.Query()
	if d := q.Get("mount"); d != "" && digest.Valid(d) {
		ok, err := g.blobAccessible(r.Context(), req, d)
		if err != nil {
			return err
		}
		if exists, _ := g.cfg.Store.TouchBlob(r.Context(), d); ok && exists {
			if err := g.cfg.Store.GrantBlob(r.Context(), req.owner, d); err != nil {
				return err
			}
			w.Header().Set("Location", "/v2/"+req.name+"/blobs/"+d)
			w.Header().Set("Docker-Content-Digest", d)
			setLength(w, 0)
			w.WriteHeader(http.StatusCreated)
			return nil
		}
	}
	cw, err := g.cfg.Content.NewWriter(r.Context())
	if err != nil {
		return err
	}
	u := &upload{id: uuid.NewString(), name: req.name, owner: req.owner, w: cw, d: digest.New(true)}
	u.touch()
	if d := q.Get("digest"); d != "" {
		// Monolithic upload: the body is the blob.
		u.mu.Lock()
		defer u.mu.Unlock()
		if err := g.receive(w, r, u); err != nil {
			u.drop()
			return err
		}
		return g.commit(w, r, req, u, d)
	}
	g.mu.Lock()
	g.uploads[u.id] = u
	g.mu.Unlock()
	uploadHeaders(w, req, u)
	setLength(w, 0)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// session returns the caller's upload named in the path, locked.
func (g *Registry) session(req *request) (*upload, error) {
	g.mu.Lock()
	u, ok := g.uploads[req.ref]
	g.mu.Unlock()
	if !ok || u.name != req.name || u.owner != req.owner {
		return nil, uploadUnknown(req.ref)
	}
	u.touch()
	u.mu.Lock()
	if u.done {
		u.mu.Unlock()
		return nil, uploadUnknown(req.ref)
	}
	return u, nil
}

func (g *Registry) forget(u *upload) {
	g.mu.Lock()
	delete(g.uploads, u.id)
	g.mu.Unlock()
}

// uploadStatus is GET /v2/<name>/blobs/uploads/<id>: 204 with the range
// received so far.
func (g *Registry) uploadStatus(w http.ResponseWriter, r *http.Request, req *request) error {
	if err := req.canPush(); err != nil {
		return err
	}
	u, err := g.session(req)
	if err != nil {
		return err
	}
	defer u.mu.Unlock()
	uploadHeaders(w, req, u)
	setLength(w, 0)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

var contentRangeRE = regexp.MustCompile(`^(?:bytes )?([0-9]+)-([0-9]+)$`)

// receive appends the request body to the upload, checking Content-Range
// (chunks must come in order: 416 otherwise) and the size cap.
func (g *Registry) receive(w http.ResponseWriter, r *http.Request, u *upload) error {
	if cr := r.Header.Get("Content-Range"); cr != "" {
		m := contentRangeRE.FindStringSubmatch(strings.TrimSpace(cr))
		if m == nil {
			return newErr(http.StatusBadRequest, "BLOB_UPLOAD_INVALID", "Content-Range %q is not valid", cr)
		}
		start, _ := strconv.ParseInt(m[1], 10, 64)
		if start != u.w.Size() {
			end := u.w.Size() - 1
			if end < 0 {
				end = 0
			}
			w.Header().Set("Range", "0-"+strconv.FormatInt(end, 10))
			return &regError{status: http.StatusRequestedRangeNotSatisfiable, code: "BLOB_UPLOAD_INVALID",
				message: fmt.Sprintf("chunk starts at %d but %d bytes were received", start, u.w.Size())}
		}
	}
	limit := g.cfg.MaxImageSize - u.w.Size()
	if r.ContentLength > limit {
		return tooLarge(g.cfg.MaxImageSize)
	}
	n, err := io.Copy(io.MultiWriter(u.w, u.d), http.MaxBytesReader(w, r.Body, limit))
	g.stats.BlobBytesReceived.Add(n)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return tooLarge(g.cfg.MaxImageSize)
	}
	if err != nil {
		return newErr(http.StatusBadRequest, "BLOB_UPLOAD_INVALID", "reading the blob failed: %v", err)
	}
	return nil
}

func tooLarge(max int64) error {
	return &regError{status: http.StatusRequestEntityTooLarge, code: "SIZE_INVALID",
		message: fmt.Sprintf("blob exceeds the size limit of %d bytes", max)}
}

// patchUpload is PATCH /v2/<name>/blobs/uploads/<id>: a chunk, 202.
func (g *Registry) patchUpload(w http.ResponseWriter, r *http.Request, req *request) error {
	if err := req.canPush(); err != nil {
		return err
	}
	u, err := g.session(req)
	if err != nil {
		return err
	}
	defer u.mu.Unlock()
	if err := g.receive(w, r, u); err != nil {
		if re, ok := err.(*regError); !ok || re.status != http.StatusRequestedRangeNotSatisfiable {
			u.drop()
			g.forget(u)
		}
		return err
	}
	uploadHeaders(w, req, u)
	setLength(w, 0)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// finishUpload is PUT /v2/<name>/blobs/uploads/<id>?digest=<digest>, with
// an optional last chunk: the blob is checked against the digest (400
// DIGEST_INVALID and the upload is gone if it differs) and stored, 201.
func (g *Registry) finishUpload(w http.ResponseWriter, r *http.Request, req *request) error {
	if err := req.canPush(); err != nil {
		return err
	}
	u, err := g.session(req)
	if err != nil {
		return err
	}
	defer u.mu.Unlock()
	defer g.forget(u)
	if err := g.receive(w, r, u); err != nil {
		u.drop()
		return err
	}
	return g.commit(w, r, req, u, r.URL.Query().Get("digest"))
}

// commit stores a received upload (u locked) as blob want.
func (g *Registry) commit(w http.ResponseWriter, r *http.Request, req *request, u *upload, want string) error {
	diffID := u.d.Close()
	got := u.d.Digest()
	size := u.w.Size()
	defer u.drop()
	if !digest.Valid(want) || want != got {
		return &regError{status: http.StatusBadRequest, code: "DIGEST_INVALID",
			message: "provided digest did not match uploaded content",
			detail:  map[string]string{"digest": want, "received": got}}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), time.Minute)
	defer cancel()
	if err := u.w.Commit(ctx, content.Desc{Digest: got, Size: size, DiffID: diffID}); err != nil {
		return err
	}
	if err := g.cfg.Store.GrantBlob(ctx, req.owner, got); err != nil {
		return err
	}
	g.log.Debug("blob stored", "digest", got, "size", size, "repository", req.name,
		"request_id", httpx.RequestID(r.Context()))
	w.Header().Set("Location", "/v2/"+req.name+"/blobs/"+got)
	w.Header().Set("Docker-Content-Digest", got)
	setLength(w, 0)
	w.WriteHeader(http.StatusCreated)
	return nil
}

// cancelUpload is DELETE /v2/<name>/blobs/uploads/<id>: 204.
func (g *Registry) cancelUpload(w http.ResponseWriter, r *http.Request, req *request) error {
	if err := req.canPush(); err != nil {
		return err
	}
	u, err := g.session(req)
	if err != nil {
		return err
	}
	u.drop()
	u.mu.Unlock()
	g.forget(u)
	w.WriteHeader(http.StatusNoContent)
	return nil
}
