package api

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"berth/imagesvc/dockerarchive"
	"berth/imagesvc/store"
	"berth/internal/apierr"
	"berth/internal/httpx"
)

// Glance's interoperable image import with the glance-direct method:
// PUT /v2/images/{id}/stage puts the data aside (queued → uploading), and
// POST /v2/images/{id}/import turns it into the image's data in the
// background (uploading → importing → active; 202 at once). openstacksdk
// (`openstack image create --import`) learns that glance-direct is
// available from the OpenStack-image-import-methods header of image
// create, gophercloud from GET /v2/info/import.

const importMethodsHeader = "OpenStack-image-import-methods"

// importMethods are the import methods this service offers.
var importMethods = []string{"glance-direct"}

// importInfo is GET /v2/info/import.
func (s *Server) importInfo(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"import-methods": map[string]any{
		"description": "Import methods available.",
		"type":        "array",
		"value":       importMethods,
	}})
	return nil
}

// storesInfo is GET /v2/info/stores: the one store, the blob store.
func (s *Server) storesInfo(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"stores": []map[string]any{{
		"id": "berth", "description": "Berth blob store (layers stored once, content-addressed)", "default": true,
	}}})
	return nil
}

// stageImage is PUT /v2/images/{id}/stage: 204 once the data is staged.
func (s *Server) stageImage(w http.ResponseWriter, r *http.Request) error {
	id, err := identity(r)
	if err != nil {
		return err
	}
	if err := checkOctetStream(r); err != nil {
		return err
	}
	if r.ContentLength > s.cfg.MaxImageSize {
		return imageTooLarge(s.cfg.MaxImageSize)
	}
	imageID := mux.Vars(r)["image_id"]
	img, err := s.cfg.Store.StartStage(r.Context(), imageID, s.cfg.UploadLease, func(img *store.Image) error {
		if err := s.checkVisible(r.Context(), id, img); err != nil {
			return err
		}
		return canModify(id, img, "upload_image")
	})
	if err != nil {
		return err
	}
	log := s.log.With("image_id", img.ID, "request_id", httpx.RequestID(r.Context()))
	stopLease := s.keepLease(img.ID, store.StatusUploading)
	defer stopLease()
	key := stagingKey(img.ID)
	body := &bodyReader{r: http.MaxBytesReader(w, r.Body, s.cfg.MaxImageSize)}
	if _, err := s.cfg.Blobs.Put(r.Context(), key, body); err != nil {
		s.abortUpload(r.Context(), img.ID, log)
		return uploadError(err, s.cfg.MaxImageSize)
	}
	ctx, cancel := detached(r.Context())
	defer cancel()
	if _, err := s.cfg.Store.FinishStage(ctx, img.ID, key); err != nil {
		_ = s.cfg.Blobs.Delete(ctx, key)
		s.abortUpload(ctx, img.ID, log)
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// importImage is POST /v2/images/{id}/import {"method": {"name":
// "glance-direct"}}: 202, the import runs in the background.
func (s *Server) importImage(w http.ResponseWriter, r *http.Request) error {
	id, err := identity(r)
	if err != nil {
		return err
	}
	var body struct {
		Method *struct {
			Name string `json:"name"`
			URI  string `json:"uri"`
		} `json:"method"`
		Stores                []string `json:"stores"`
		AllStores             *bool    `json:"all_stores"`
		AllStoresMustSucceed  *bool    `json:"all_stores_must_succeed"`
		ImportFromImage       *string  `json:"glance_image_id"`
		ImportFromRegion      *string  `json:"glance_region"`
		ImportServiceInterace *string  `json:"glance_service_interface"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, false, &body); err != nil {
		return err
	}
	if body.Method == nil || body.Method.Name == "" {
		return apierr.Invalidf("Import request requires a 'method' field.")
	}
	if body.Method.Name != "glance-direct" {
		return apierr.Invalidf("Import method %s is not supported; this cloud supports: glance-direct.", body.Method.Name)
	}
	for _, st := range body.Stores {
		if st != "berth" {
			return apierr.Invalidf("Unknown store %s.", st)
		}
	}
	imageID := mux.Vars(r)["image_id"]
	img, err := s.cfg.Store.StartImport(r.Context(), imageID, s.cfg.UploadLease, func(img *store.Image) error {
		if err := s.checkVisible(r.Context(), id, img); err != nil {
			return err
		}
		if err := canModify(id, img, "import_image"); err != nil {
			return err
		}
		return checkFormats(img)
	})
	if err != nil {
		return err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.runImport(s.bg, img, httpx.RequestID(r.Context()))
	}()
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// runImport turns staged data into the image's data, as an upload would.
func (s *Server) runImport(ctx context.Context, img *store.Image, requestID string) {
	log := s.log.With("image_id", img.ID, "request_id", requestID)
	stopLease := s.keepLease(img.ID, store.StatusImporting)
	defer stopLease()
	fail := func(msg string, err error) {
		log.Error(msg, "err", err)
		s.abortUpload(ctx, img.ID, log)
	}
	rc, _, err := s.cfg.Blobs.Get(ctx, *img.StagingKey)
	if err != nil {
		fail("import: cannot read the staged data", err)
		return
	}
	up, cleanup, err := s.storeData(ctx, img, rc, "")
	rc.Close()
	var fe *dockerarchive.FormatError
	if errors.As(err, &fe) {
		// The staged data is bad: drop it, the image can be staged again.
		log.Warn("import: the staged data is not a valid docker archive", "err", err)
		dctx, cancel := detached(ctx)
		defer cancel()
		if err := s.cfg.Store.DropStaged(dctx, img.ID); err != nil {
			log.Error("import: cannot reset the image", "err", err)
		}
		_ = s.cfg.Blobs.Delete(dctx, *img.StagingKey)
		return
	}
	if err != nil {
		fail("import failed", err)
		return
	}
	fctx, cancel := detached(ctx)
	defer cancel()
	if _, err := s.cfg.Store.FinishUpload(fctx, img.ID, up); err != nil {
		cleanup()
		fail("import: cannot record the image data", err)
		return
	}
	if err := s.cfg.Blobs.Delete(fctx, *img.StagingKey); err != nil {
		log.Warn("imported, but the staged data stays", "err", err)
	}
	log.Info("image imported", "size", up.Size, "docker", up.Docker != nil)
}

// importHeaders adds the import methods header (to image create).
func importHeaders(w http.ResponseWriter) {
	w.Header().Set(importMethodsHeader, strings.Join(importMethods, ","))
}
