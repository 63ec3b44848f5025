package api

import (
	"context"
	"net/http"

	"github.com/gorilla/mux"

	"berth/imagesvc/store"
	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/internal/keystone"
)

// Berth's layer extension to the Glance API.
//
//	GET    /v2/images/{id}/layers   the image's chain, base first
//	GET    /v2/layers/{chain_id}    one layer and the images that use it
//	DELETE /v2/layers/{chain_id}    admin: drop an unused layer (409 in use)
//
// A layer is {"chain_id", "digest" (diff_id: sha256 of the uncompressed
// tar), "parent_chain_id", "blob_digest" (the stored bytes this image's
// data uses, which the registry serves), "media_type", "size" (bytes as
// stored), "created_at", "images" (the ids of the images sharing it that
// the caller can see), "shared" (true when other images use it, seen or
// not)}.

// layerView renders a layer; users are the images using it.
func layerView(l store.Layer, blobDigest, mediaType *string, blobSize *int64, users, visible []string) map[string]any {
	size := l.Size
	if blobSize != nil {
		size = *blobSize
	}
	if visible == nil {
		visible = []string{}
	}
	return map[string]any{
		"chain_id":        l.ChainID,
		"digest":          l.Digest,
		"parent_chain_id": l.ParentChainID,
		"blob_digest":     blobDigest,
		"media_type":      mediaType,
		"size":            size,
		"created_at":      l.CreatedAt.UTC().Format(timeFormat),
		"images":          visible,
		"shared":          len(users) > 1,
	}
}

// visibleIDs keeps the image ids the caller can see.
func (s *Server) visibleIDs(ctx context.Context, id *keystone.Identity, ids []string) ([]string, error) {
	out := []string{}
	for _, iid := range ids {
		img, err := s.cfg.Store.FindImageByID(ctx, iid)
		if apierr.Is(err, apierr.NotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if ok, err := s.cfg.Store.CanSee(ctx, viewer(id), img); err != nil {
			return nil, err
		} else if ok {
			out = append(out, iid)
		}
	}
	return out, nil
}

// imageLayers is GET /v2/images/{id}/layers: {"image_id", "top_layer",
// "layers": [...]} (no layers for an image that is not a docker image).
func (s *Server) imageLayers(w http.ResponseWriter, r *http.Request) error {
	id, err := identity(r)
	if err != nil {
		return err
	}
	img, err := s.visibleImage(r.Context(), id, mux.Vars(r)["image_id"])
	if err != nil {
		return err
	}
	chain, err := s.cfg.Store.ImageLayers(r.Context(), img.ID)
	if err != nil {
		return err
	}
	layers := []map[string]any{}
	for _, l := range chain {
		visible, err := s.visibleIDs(r.Context(), id, l.Images)
		if err != nil {
			return err
		}
		layers = append(layers, layerView(l.Layer, l.BlobDigest, l.MediaType, l.BlobSize, l.Images, visible))
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"image_id": img.ID, "top_layer": img.TopLayer, "layers": layers})
	return nil
}

// showLayer is GET /v2/layers/{chain_id}: the layer if the caller can see
// an image that uses it (admins: any layer).
func (s *Server) showLayer(w http.ResponseWriter, r *http.Request) error {
	id, err := identity(r)
	if err != nil {
		return err
	}
	chainID := mux.Vars(r)["chain_id"]
	users, err := s.cfg.Store.LayerUsers(r.Context(), chainID)
	if err != nil {
		return err
	}
	visible, err := s.visibleIDs(r.Context(), id, users)
	if err != nil {
		return err
	}
	if len(visible) == 0 && !id.IsAdmin() {
		return apierr.NotFoundf("No layer %s", chainID)
	}
	chain, err := s.cfg.Store.LayerChain(r.Context(), chainID)
	if err != nil {
		return err
	}
	l := chain[len(chain)-1]
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"layer": layerView(l, nil, nil, nil, users, visible)})
	return nil
}

// deleteLayer is DELETE /v2/layers/{chain_id} (admin): 204 for a layer no
// image uses (with the unused layers above it), 409 for one in use.
func (s *Server) deleteLayer(w http.ResponseWriter, r *http.Request) error {
	id, err := identity(r)
	if err != nil {
		return err
	}
	if !id.IsAdmin() {
		return apierr.Forbiddenf("You are not authorized to complete delete_layer action.")
	}
	if err := s.cfg.Store.DeleteLayer(r.Context(), mux.Vars(r)["chain_id"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
