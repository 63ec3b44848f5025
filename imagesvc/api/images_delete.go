package api

import (
	"context"
	"net/http"
	"slices"
	"time"

	"github.com/gorilla/mux"

	"berth/imagesvc/store"
	"berth/internal/apierr"
	"berth/internal/httpx"
)

// deleteImage is DELETE /v2/images/{id}: 204; a protected image is 403.
// The record goes first, then its data.
func (s *Server) deleteImage(w http.ResponseWriter, r *http.Request) error {
	id, err := identity(r)
	if err != nil {
		return err
	}
	imageID := mux.Vars(r)["image_id"]
	released, err := s.cfg.Store.ImageBlobs(r.Context(), imageID)
	if err != nil {
		return err
	}
	img, err := s.cfg.Store.DeleteImage(r.Context(), imageID, func(img *store.Image) error {
		if err := s.checkVisible(r.Context(), id, img); err != nil {
			return apierr.NotFoundf("Failed to find image %s to delete", imageID)
		}
		if err := canModify(id, img, "delete_image"); err != nil {
			return err
		}
		if img.Protected {
			return apierr.Forbiddenf("Image %s is protected and cannot be deleted.", imageID)
		}
		return nil
	})
	if apierr.Is(err, apierr.NotFound) {
		return apierr.NotFoundf("Failed to find image %s to delete", imageID)
	}
	if err != nil {
		return err
	}
	// An upload in flight deletes the blob it writes when it finds the
	// record gone; this removes data already there, and the layers and
	// blobs no other image uses.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), time.Minute)
	defer cancel()
	for _, key := range []string{blobKey(img.ID), stagingKey(img.ID)} {
		if err := s.cfg.Blobs.Delete(ctx, key); err != nil {
			s.log.Error("image deleted but its data was not", "image_id", img.ID, "key", key, "err", err,
				"request_id", httpx.RequestID(r.Context()))
		}
	}
	if _, _, err := s.cfg.Content.CollectGarbage(ctx, released); err != nil {
		s.log.Error("image deleted but its layers were not collected", "image_id", img.ID, "err", err,
			"request_id", httpx.RequestID(r.Context()))
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// addTag is PUT /v2/images/{id}/tags/{tag}: 204.
func (s *Server) addTag(w http.ResponseWriter, r *http.Request) error {
	return s.changeTag(w, r, func(img *store.Image, tag string) error {
		if len(tag) > maxStringLen {
			return apierr.Invalidf("Provided object does not match schema 'image': tag is too long (at most %d characters)", maxStringLen)
		}
		if slices.Contains(img.Tags, tag) {
			return nil
		}
		if len(img.Tags) >= maxTags {
			return tooMany("tags", maxTags)
		}
		img.Tags = append(img.Tags, tag)
		return nil
	})
}

// deleteTag is DELETE /v2/images/{id}/tags/{tag}: 204, 404 if absent.
func (s *Server) deleteTag(w http.ResponseWriter, r *http.Request) error {
	return s.changeTag(w, r, func(img *store.Image, tag string) error {
		i := slices.Index(img.Tags, tag)
		if i < 0 {
			return apierr.NotFoundf("Tag %s not found.", tag)
		}
		img.Tags = slices.Delete(img.Tags, i, i+1)
		return nil
	})
}

func (s *Server) changeTag(w http.ResponseWriter, r *http.Request, fn func(img *store.Image, tag string) error) error {
	id, err := identity(r)
	if err != nil {
		return err
	}
	imageID, tag := mux.Vars(r)["image_id"], mux.Vars(r)["tag"]
	_, err = s.cfg.Store.UpdateImage(r.Context(), imageID, func(img *store.Image) error {
		if err := s.checkVisible(r.Context(), id, img); err != nil {
			return err
		}
		if err := canModify(id, img, "modify_image"); err != nil {
			return err
		}
		return fn(img, tag)
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
