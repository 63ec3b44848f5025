package api

import (
	"net/http"

	"github.com/gorilla/mux"

	"berth/internal/httpx"
)

// The /internal/v1 endpoints serve host agents (authenticated by the
// shared agent token, not Keystone): any image regardless of visibility.

// internalShowImage is GET /internal/v1/images/{id}: the image JSON.
func (s *Server) internalShowImage(w http.ResponseWriter, r *http.Request) error {
	img, err := s.cfg.Store.FindImageByID(r.Context(), mux.Vars(r)["image_id"])
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, imageView(img))
	return nil
}

// internalDownload is GET /internal/v1/images/{id}/file: the image data.
func (s *Server) internalDownload(w http.ResponseWriter, r *http.Request) error {
	img, err := s.cfg.Store.FindImageByID(r.Context(), mux.Vars(r)["image_id"])
	if err != nil {
		return err
	}
	return s.serveData(w, r, img)
}

// internalLayers is GET /internal/v1/images/{id}/layers: the layer chain
// of a docker image, base first: {"layers": [{"chain_id", "digest"
// (diff_id), "parent_chain_id", "size", "created_at", "blob_digest",
// "media_type"}]} (empty for other images). A host pulls the blobs it
// lacks from the registry API (GET /v2/<project>/<repo>/blobs/<digest>).
func (s *Server) internalLayers(w http.ResponseWriter, r *http.Request) error {
	img, err := s.cfg.Store.FindImageByID(r.Context(), mux.Vars(r)["image_id"])
	if err != nil {
		return err
	}
	chain, err := s.cfg.Store.ImageLayers(r.Context(), img.ID)
	if err != nil {
		return err
	}
	layers := []map[string]any{}
	for _, l := range chain {
		size := l.Size
		if l.BlobSize != nil {
			size = *l.BlobSize
		}
		layers = append(layers, map[string]any{
			"chain_id": l.ChainID, "digest": l.Digest, "parent_chain_id": l.ParentChainID, "size": size,
			"created_at": l.CreatedAt, "blob_digest": l.BlobDigest, "media_type": l.MediaType,
		})
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"layers": layers})
	return nil
}
