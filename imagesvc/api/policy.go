package api

import (
	"context"
	"regexp"

	"berth/imagesvc/store"
	"berth/internal/apierr"
	"berth/internal/keystone"
)

var uuidRE = regexp.MustCompile(uuidPattern)

// These follow Glance's default (secure RBAC) policies: anyone may read
// what they can see; creating and changing needs the member role in the
// owning project, or admin; making an image public needs admin.

// canCreate is add_image.
func canCreate(id *keystone.Identity) error {
	if !id.CanWrite() {
		return apierr.Forbiddenf("You are not authorized to complete add_image action.")
	}
	return nil
}

// canModify is modify_image, upload_image and delete_image on an image the
// caller can already see.
func canModify(id *keystone.Identity, img *store.Image, action string) error {
	if id.IsAdmin() {
		return nil
	}
	if !id.HasRole("member") || img.OwnerID() != id.ProjectID {
		return apierr.Forbiddenf("You are not authorized to complete %s action.", action)
	}
	return nil
}

// visibleImage returns the image with imageID if the caller may see it;
// otherwise NotFound, the same as for an image that does not exist.
func (s *Server) visibleImage(ctx context.Context, id *keystone.Identity, imageID string) (*store.Image, error) {
	img, err := s.cfg.Store.FindImageByID(ctx, imageID)
	if err != nil {
		return nil, err
	}
	if err := s.checkVisible(ctx, id, img); err != nil {
		return nil, err
	}
	return img, nil
}

// checkVisible is NotFound unless the caller may see img (as its owner, a
// member of a shared image, or because it is public or community).
func (s *Server) checkVisible(ctx context.Context, id *keystone.Identity, img *store.Image) error {
	ok, err := s.cfg.Store.CanSee(ctx, viewer(id), img)
	if err != nil {
		return err
	}
	if !ok {
		return apierr.NotFoundf("No image found with ID %s", img.ID)
	}
	return nil
}
