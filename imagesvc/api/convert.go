package api

import (
	"context"

	"berth/imagesvc/store"
)

// ConvertLegacyImages moves docker images stored by earlier versions of
// imagesvc (the whole docker save archive as one blob) to layer blobs, so
// their layers are shared and they can be pulled through the registry.
// The archive is played back byte for byte afterwards, so the checksum
// stays true; an archive whose bytes no longer match it is left alone.
// It returns how many images it converted.
func (s *Server) ConvertLegacyImages(ctx context.Context) (int, error) {
	done := 0
	skip := map[string]bool{}
	for {
		imgs, err := s.cfg.Store.FindLegacyDockerImages(ctx, 20+len(skip))
		if err != nil {
			return done, err
		}
		progress := false
		for _, img := range imgs {
			if skip[img.ID] {
				continue
			}
			progress = true
			if err := s.convert(ctx, img); err != nil {
				if ctx.Err() != nil {
					return done, ctx.Err()
				}
				s.log.Warn("cannot move a docker image to layer blobs; it keeps its archive", "image_id", img.ID, "err", err)
				skip[img.ID] = true
				continue
			}
			done++
		}
		if !progress {
			return done, nil
		}
	}
}

func (s *Server) convert(ctx context.Context, img *store.Image) error {
	key := *img.BlobKey
	rc, _, err := s.cfg.Blobs.Get(ctx, key)
	if err != nil {
		return err
	}
	ing, err := s.cfg.Content.IngestArchive(ctx, rc)
	rc.Close()
	if err != nil {
		return err
	}
	if img.Checksum != nil && *img.Checksum != ing.MD5 {
		return errChecksum
	}
	if err := s.cfg.Store.ConvertToLayers(ctx, img.ID, key, &ing.Data); err != nil {
		return err
	}
	if err := s.cfg.Blobs.Delete(ctx, key); err != nil {
		s.log.Warn("converted image's old archive stays", "image_id", img.ID, "err", err)
	}
	s.log.Info("docker image moved to layer blobs", "image_id", img.ID, "layers", len(ing.Data.Layers))
	return nil
}

type convertError string

func (e convertError) Error() string { return string(e) }

const errChecksum = convertError("the stored archive does not match the image's checksum")
