package api

import (
	"encoding/json"
	"net/http"
	"sort"

	"github.com/google/uuid"

	"berth/imagesvc/store"
	"berth/internal/apierr"
	"berth/internal/httpx"
)

// createImage is POST /v2/images: a queued image record, 201.
func (s *Server) createImage(w http.ResponseWriter, r *http.Request) error {
	id, err := identity(r)
	if err != nil {
		return err
	}
	var body map[string]json.RawMessage
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, false, &body); err != nil {
		return err
	}
	if body == nil {
		return apierr.Invalidf("Body expected in request.")
	}
	owner := id.ProjectID
	img := &store.Image{
		ID:         uuid.NewString(),
		Owner:      &owner,
		Status:     store.StatusQueued,
		Visibility: store.VisibilityShared, // Glance's default since Ocata
		Tags:       store.Tags{},
		Properties: store.Properties{},
	}
	// Base attributes first, in a fixed order, so errors are deterministic.
	keys := make([]string, 0, len(body))
	for k := range body {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		bi, bj := baseAttrs[keys[i]], baseAttrs[keys[j]]
		if bi != bj {
			return bi
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		if err := setAttr(img, id, k, body[k], true); err != nil {
			return err
		}
	}
	if err := canCreate(id); err != nil {
		return err
	}
	if err := s.cfg.Store.CreateImage(r.Context(), img); err != nil {
		return err
	}
	w.Header().Set("Location", s.publicBase(r)+"/v2/images/"+img.ID)
	importHeaders(w)
	httpx.WriteJSON(w, http.StatusCreated, imageView(img))
	return nil
}
