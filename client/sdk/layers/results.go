package layers

import (
	"encoding/json"

	"github.com/gophercloud/gophercloud/v2"
)

// Layer is one layer of an image's chain.
type Layer struct {
	// Digest is the layer's diff id (sha256 of the uncompressed tar),
	// e.g. "sha256:…".
	Digest string `json:"digest"`
	// ChainID identifies the layer together with all layers below it.
	ChainID string `json:"chain_id"`
	// Parent is the chain id of the layer below ("" for the root). The
	// service sends it as "parent_chain_id" ("parent" is accepted too).
	Parent string `json:"parent_chain_id"`
	// Size in bytes as stored.
	Size int64 `json:"size"`
	// SharedBy are the ids of the images (that the caller can see) whose
	// chain holds this layer. Sent as "images" ("shared_by" is accepted too).
	SharedBy []string `json:"images"`
	// Shared is true when other images use the layer, seen or not.
	Shared bool `json:"shared"`
	// BlobDigest is the digest of the stored bytes the registry serves.
	BlobDigest string `json:"blob_digest,omitempty"`
	// MediaType of the stored blob.
	MediaType string `json:"media_type,omitempty"`
	// CreatedAt, e.g. "2026-11-22T16:01:30Z".
	CreatedAt string `json:"created_at,omitempty"`
}

// UnmarshalJSON accepts both names of the parent and sharing fields and a
// null blob digest or media type.
func (l *Layer) UnmarshalJSON(b []byte) error {
	var raw struct {
		Digest        string   `json:"digest"`
		ChainID       string   `json:"chain_id"`
		ParentChainID *string  `json:"parent_chain_id"`
		Parent        *string  `json:"parent"`
		Size          int64    `json:"size"`
		Images        []string `json:"images"`
		SharedBy      []string `json:"shared_by"`
		Shared        *bool    `json:"shared"`
		BlobDigest    *string  `json:"blob_digest"`
		MediaType     *string  `json:"media_type"`
		CreatedAt     string   `json:"created_at"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	deref := func(ps ...*string) string {
		for _, p := range ps {
			if p != nil && *p != "" {
				return *p
			}
		}
		return ""
	}
	*l = Layer{Digest: raw.Digest, ChainID: raw.ChainID, Parent: deref(raw.ParentChainID, raw.Parent), Size: raw.Size,
		SharedBy: raw.Images, BlobDigest: deref(raw.BlobDigest), MediaType: deref(raw.MediaType), CreatedAt: raw.CreatedAt}
	if l.SharedBy == nil {
		l.SharedBy = raw.SharedBy
	}
	if raw.Shared != nil {
		l.Shared = *raw.Shared
	} else {
		l.Shared = len(l.SharedBy) > 1
	}
	return nil
}

// ListResult is the result of List.
type ListResult struct{ gophercloud.Result }

// Extract returns the layers, root first.
func (r ListResult) Extract() ([]Layer, error) {
	var s struct {
		Layers []Layer `json:"layers"`
	}
	err := r.ExtractInto(&s)
	return s.Layers, err
}

// ExtractTopLayer returns the chain id of the image's top layer ("" when
// the service does not say).
func (r ListResult) ExtractTopLayer() (string, error) {
	var s struct {
		TopLayer *string `json:"top_layer"`
	}
	err := r.ExtractInto(&s)
	if s.TopLayer == nil {
		return "", err
	}
	return *s.TopLayer, err
}
