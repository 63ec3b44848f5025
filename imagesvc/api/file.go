package api

import (
	"context"
	"crypto/md5"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"berth/imagesvc/blob"
	"berth/imagesvc/digest"
	"berth/imagesvc/dockerarchive"
	"berth/imagesvc/store"
	"berth/internal/apierr"
	"berth/internal/httpx"
)

// blobKey is where the data of a plain (non-docker) image is stored; a
// docker image's data is its layers (content-addressed blobs).
func blobKey(imageID string) string { return "images/" + imageID }

// stagingKey is where data staged for import waits.
func stagingKey(imageID string) string { return "staging/" + imageID }

// uploadImage is PUT /v2/images/{id}/file: the image goes queued → saving,
// the body streams to storage (hashed on the way; a docker archive is
// also unpacked into layer blobs on the way), and the image becomes
// active, 204. Any failure puts the image back to queued with no data
// visible.
func (s *Server) uploadImage(w http.ResponseWriter, r *http.Request) error {
	id, err := identity(r)
	if err != nil {
		return err
	}
	imageID := mux.Vars(r)["image_id"]
	return s.receiveData(w, r, imageID, func(img *store.Image) error {
		if err := s.checkVisible(r.Context(), id, img); err != nil {
			return err
		}
		return canModify(id, img, "upload_image")
	})
}

// internalUpload is PUT /internal/v1/images/{id}/file: the same upload for
// host agents (a snapshot's docker save archive), for any image.
func (s *Server) internalUpload(w http.ResponseWriter, r *http.Request) error {
	return s.receiveData(w, r, mux.Vars(r)["image_id"], func(*store.Image) error { return nil })
}

// checkOctetStream insists on Glance's media type for image data.
func checkOctetStream(r *http.Request) error {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/octet-stream" {
		return &apierr.Error{Kind: apierr.UnsupportedMedia,
			Message: fmt.Sprintf("Content type %q is not supported; image data must be sent as application/octet-stream.",
				r.Header.Get("Content-Type"))}
	}
	return nil
}

// wantMD5 reads an optional Content-MD5 request header (hex, as Glance
// sends it, or base64 as RFC 1864 has it) as hex.
func wantMD5(r *http.Request) (string, error) {
	v := strings.TrimSpace(r.Header.Get("Content-MD5"))
	if v == "" {
		return "", nil
	}
	if b, err := hex.DecodeString(v); err == nil && len(b) == md5.Size {
		return strings.ToLower(v), nil
	}
	if b, err := base64.StdEncoding.DecodeString(v); err == nil && len(b) == md5.Size {
		return hex.EncodeToString(b), nil
	}
	return "", apierr.Invalidf("Content-MD5 %q is not an MD5 digest in hex or base64.", v)
}

// receiveData stores the request body as the data of image imageID once
// authorize (which sees the image locked) allows it.
func (s *Server) receiveData(w http.ResponseWriter, r *http.Request, imageID string, authorize func(img *store.Image) error) error {
	if err := checkOctetStream(r); err != nil {
		return err
	}
	md5want, err := wantMD5(r)
	if err != nil {
		return err
	}
	if r.ContentLength > s.cfg.MaxImageSize {
		return imageTooLarge(s.cfg.MaxImageSize)
	}
	img, err := s.cfg.Store.StartUpload(r.Context(), imageID, s.cfg.UploadLease, func(img *store.Image) error {
		if err := authorize(img); err != nil {
			return err
		}
		return checkFormats(img)
	})
	if err != nil {
		return err
	}
	log := s.log.With("image_id", img.ID, "request_id", httpx.RequestID(r.Context()))
	// From here on the image is saving: every way out must finish or undo.
	stopLease := s.keepLease(img.ID, store.StatusSaving)
	defer stopLease()
	body := &bodyReader{r: http.MaxBytesReader(w, r.Body, s.cfg.MaxImageSize)}
	up, cleanup, err := s.storeData(r.Context(), img, body, md5want)
	if err != nil {
		s.abortUpload(r.Context(), img.ID, log)
		return uploadError(err, s.cfg.MaxImageSize)
	}
	ctx, cancel := detached(r.Context())
	defer cancel()
	if _, err := s.cfg.Store.FinishUpload(ctx, img.ID, up); err != nil {
		cleanup()
		if apierr.Is(err, apierr.NotFound) {
			return &apierr.Error{Kind: apierr.Conflict, Status: http.StatusGone, Err: err,
				Message: fmt.Sprintf("Image %s could not be found after upload. The image may have been deleted during the upload, cleaning up the chunks uploaded.", img.ID)}
		}
		s.abortUpload(ctx, img.ID, log)
		return err
	}
	log.Info("image uploaded", "size", up.Size, "docker", up.Docker != nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// checkFormats is Glance's rule for storing data.
func checkFormats(img *store.Image) error {
	if img.ContainerFormat == nil || img.DiskFormat == nil {
		return apierr.Invalidf("Properties disk_format, container_format must be set prior to saving data.")
	}
	return nil
}

// detached is a context for finishing work after the client is gone.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
}

// abortUpload puts the image back to where it was before the upload.
func (s *Server) abortUpload(ctx context.Context, id string, log interface{ Error(string, ...any) }) {
	ctx, cancel := detached(ctx)
	defer cancel()
	if err := s.cfg.Store.AbortUpload(ctx, id); err != nil {
		log.Error("failed upload: cannot put the image back", "err", err)
	}
}

// keepLease renews the image's lease while work is in flight; call the
// returned func when done.
func (s *Server) keepLease(id string, status string) func() {
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(s.cfg.UploadLease / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				ctx, cancel := context.WithTimeout(context.Background(), s.cfg.UploadLease/3)
				ok, err := s.cfg.Store.ExtendLease(ctx, id, s.cfg.UploadLease, status)
				cancel()
				if err != nil {
					s.log.Warn("cannot renew an upload lease", "image_id", id, "err", err)
				} else if !ok {
					return
				}
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// storeData stores image data read from r: a docker archive is unpacked
// into layer blobs, other data is one blob. It returns what to record and
// a cleanup that removes what was stored, should recording fail.
func (s *Server) storeData(ctx context.Context, img *store.Image, r io.Reader, md5want string) (store.Upload, func(), error) {
	if img.ContainerFormat != nil && *img.ContainerFormat == "docker" {
		ing, err := s.cfg.Content.IngestArchive(ctx, r)
		if err != nil {
			return store.Upload{}, nil, err
		}
		if md5want != "" && md5want != ing.MD5 {
			return store.Upload{}, nil, checksumMismatch(md5want, ing.MD5)
		}
		up := store.Upload{Size: ing.Size, Checksum: ing.MD5, OSHashAlgo: "sha512", OSHashValue: ing.SHA512,
			Properties: map[string]string{propDockerImageID: ing.ImageID}, Docker: &ing.Data}
		// Blobs of a failed finish are unreferenced: garbage collection
		// takes them.
		return up, func() {}, nil
	}
	md5h, sha := md5.New(), sha512.New()
	bw, err := s.cfg.Blobs.NewWriter(ctx)
	if err != nil {
		return store.Upload{}, nil, err
	}
	defer bw.Discard()
	hashes := digest.NewParallel(md5h, sha)
	n, err := io.Copy(io.MultiWriter(bw, hashes), r)
	hashes.Close()
	if err != nil {
		return store.Upload{}, nil, err
	}
	sum := hex.EncodeToString(md5h.Sum(nil))
	if md5want != "" && md5want != sum {
		return store.Upload{}, nil, checksumMismatch(md5want, sum)
	}
	key := blobKey(img.ID)
	if _, err := bw.Commit(ctx, key); err != nil {
		return store.Upload{}, nil, err
	}
	cleanup := func() {
		ctx, cancel := detached(ctx)
		defer cancel()
		if err := s.cfg.Blobs.Delete(ctx, key); err != nil {
			s.log.Error("cannot remove the data of an image whose upload failed", "image_id", img.ID, "err", err)
		}
	}
	return store.Upload{BlobKey: key, Size: n, Checksum: sum, OSHashAlgo: "sha512",
		OSHashValue: hex.EncodeToString(sha.Sum(nil))}, cleanup, nil
}

func checksumMismatch(want, got string) error {
	return apierr.Invalidf("The image data does not match its Content-MD5: got %s, expected %s.", got, want)
}

func imageTooLarge(max int64) error {
	return &apierr.Error{Kind: apierr.TooLarge,
		Message: fmt.Sprintf("Image exceeds the size limit of %d bytes.", max)}
}

// uploadError turns why storing data failed into what the client sees.
func uploadError(err error, max int64) error {
	var fe *dockerarchive.FormatError
	var be *bodyError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return imageTooLarge(max)
	case errors.As(err, &fe):
		return apierr.Wrap(err, apierr.Invalid, "The image data is not a valid docker save archive: %s.", fe.Error())
	case errors.As(err, &be), errors.Is(err, context.Canceled):
		return apierr.Wrap(err, apierr.Invalid, "Failed to read the image data from the request; the upload was not completed.")
	}
	return err
}

// bodyError marks an error reading the request body, so it can be told
// from a storage failure.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "read request body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

type bodyReader struct{ r io.Reader }

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = &bodyError{err: err}
	}
	return n, err
}

// downloadImage is GET /v2/images/{id}/file: 200 with the data, Content-MD5
// (the hex checksum, as Glance sends it) and Content-Length; 204 when the
// image has no data.
func (s *Server) downloadImage(w http.ResponseWriter, r *http.Request) error {
	id, err := identity(r)
	if err != nil {
		return err
	}
	img, err := s.visibleImage(r.Context(), id, mux.Vars(r)["image_id"])
	if err != nil {
		return err
	}
	if img.Status == store.StatusDeactivated && !id.IsAdmin() {
		return apierr.Forbiddenf("The requested image has been deactivated. Image data download is forbidden.")
	}
	return s.serveData(w, r, img)
}

// serveData sends an image's data: a docker image's archive is played
// back from its layer blobs (byte for byte what was uploaded, so
// Content-MD5 is the image's checksum), other data is its blob. A range
// is answered as Glance does (see requestedRange): 206 with the window,
// and a bad range is a Glance fault before any data is sent.
func (s *Server) serveData(w http.ResponseWriter, r *http.Request, img *store.Image) error {
	if img.Status != store.StatusActive && img.Status != store.StatusDeactivated ||
		img.BlobKey == nil && img.RecipeDigest == nil {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	var data io.Reader
	var size int64
	if img.RecipeDigest != nil {
		rr, err := s.cfg.Content.OpenRecipe(r.Context(), *img.RecipeDigest)
		if err != nil {
			return err
		}
		defer rr.Close()
		if size, err = rr.Seek(0, io.SeekEnd); err != nil {
			return err
		}
		data = rr
	} else {
		rc, info, err := s.cfg.Blobs.Get(r.Context(), *img.BlobKey)
		if errors.Is(err, blob.ErrNotFound) {
			s.log.Error("active image has no data", "image_id", img.ID, "request_id", httpx.RequestID(r.Context()))
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		if err != nil {
			return err
		}
		defer rc.Close()
		data, size = rc, info.Size
	}
	rg, partial, err := requestedRange(r.Header, size)
	if err != nil {
		return err
	}
	offset, length := int64(0), size
	if partial {
		offset, length = rg.window(size)
	}
	if err := skipTo(data, offset); err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(length, 10))
	if img.Checksum != nil {
		h.Set("Content-MD5", *img.Checksum)
	}
	status := http.StatusOK
	if partial {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", offset, offset+length-1, size))
		status = http.StatusPartialContent
	}
	w.WriteHeader(status)
	if !partial && img.BlobKey != nil && img.Checksum != nil && length > 0 {
		s.copyVerified(w, r, data, length, img)
		return nil
	}
	if _, err := io.CopyN(w, data, length); err != nil {
		// Headers are out: all that is left is to cut the response short.
		s.log.Warn("image download interrupted", "image_id", img.ID, "err", err,
			"request_id", httpx.RequestID(r.Context()))
	}
	return nil
}

// copyVerified sends the whole of a plain image's data, checking it
// against the image's checksum on the way: the last byte goes out only
// if the rest matches, so a blob corrupted at rest reaches the client as
// a download cut short (the connection closes before Content-Length),
// never as a complete, wrong image. (A docker image's layers are checked
// by content.BlobReader the same way.)
func (s *Server) copyVerified(w http.ResponseWriter, r *http.Request, data io.Reader, length int64, img *store.Image) {
	log := s.log.With("image_id", img.ID, "request_id", httpx.RequestID(r.Context()))
	h := md5.New()
	if _, err := io.CopyN(w, io.TeeReader(data, h), length-1); err != nil {
		log.Warn("image download interrupted", "err", err)
		return
	}
	var last [1]byte
	if _, err := io.ReadFull(data, last[:]); err != nil {
		log.Warn("image download interrupted", "err", err)
		return
	}
	h.Write(last[:])
	if got := hex.EncodeToString(h.Sum(nil)); got != *img.Checksum {
		log.Error("stored image data does not match its checksum; download cut short", "md5", got, "checksum", *img.Checksum)
		return
	}
	_, _ = w.Write(last[:])
}

// skipTo positions data at offset: a seek where the store can, reading
// past the bytes otherwise.
func skipTo(data io.Reader, offset int64) error {
	if sk, ok := data.(io.Seeker); ok {
		_, err := sk.Seek(offset, io.SeekStart)
		return err
	}
	_, err := io.CopyN(io.Discard, data, offset)
	return err
}
