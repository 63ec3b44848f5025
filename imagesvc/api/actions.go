package api

import (
	"net/http"

	"github.com/gorilla/mux"

	"berth/imagesvc/store"
	"berth/internal/apierr"
)

// deactivate is POST /v2/images/{id}/actions/deactivate (admin): an active
// image becomes deactivated, 204; its data can then be downloaded only by
// admins. Deactivating a deactivated image does nothing.
func (s *Server) deactivate(w http.ResponseWriter, r *http.Request) error {
	return s.setActivation(w, r, "deactivate", store.StatusDeactivated)
}

// reactivate is POST /v2/images/{id}/actions/reactivate (admin): back to
// active, 204.
func (s *Server) reactivate(w http.ResponseWriter, r *http.Request) error {
	return s.setActivation(w, r, "reactivate", store.StatusActive)
}

func (s *Server) setActivation(w http.ResponseWriter, r *http.Request, action, to string) error {
	id, err := identity(r)
	if err != nil {
		return err
	}
	imageID := mux.Vars(r)["image_id"]
	_, err = s.cfg.Store.UpdateImage(r.Context(), imageID, func(img *store.Image) error {
		if err := s.checkVisible(r.Context(), id, img); err != nil {
			return err
		}
		if !id.IsAdmin() {
			return apierr.Forbiddenf("You are not authorized to complete %s action.", action)
		}
		switch img.Status {
		case to:
			return nil
		case store.StatusActive, store.StatusDeactivated:
			img.Status = to
			return nil
		}
		return apierr.Invalidf("Not allowed to %s image in status '%s'", action, img.Status)
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
