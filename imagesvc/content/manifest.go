package content

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"

	"berth/imagesvc/digest"
)

// Manifest and blob media types of the registry API.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeOCIManifest        = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex           = "application/vnd.oci.image.index.v1+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	MediaTypeOCIConfig          = "application/vnd.oci.image.config.v1+json"
	MediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerForeign      = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
	MediaTypeOCILayer           = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeOCILayerGzip       = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeOCILayerZstd       = "application/vnd.oci.image.layer.v1.tar+zstd"
)

// MaxManifestSize bounds a manifest (the OCI spec asks for at least 4 MiB).
const MaxManifestSize = 4 << 20

// Descriptor points at a blob.
type Descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	// URLs marks a foreign layer, which imagesvc does not hold.
	URLs []string `json:"urls,omitempty"`
}

// Manifest is an image manifest: Docker's schema 2 or OCI's (they have the
// same shape).
type Manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType,omitempty"`
	Config        Descriptor   `json:"config"`
	Layers        []Descriptor `json:"layers"`
}

// ManifestError says why a manifest was refused; Unsupported marks valid
// kinds of manifests imagesvc does not take (lists and indexes).
type ManifestError struct {
	Reason      string
	Unsupported bool
}

func (e *ManifestError) Error() string { return e.Reason }

func manifestErr(format string, args ...any) error {
	return &ManifestError{Reason: fmt.Sprintf(format, args...)}
}

// ParseManifest reads an image manifest sent with contentType and returns
// it with its media type. It must be Docker schema 2 or OCI, with a
// config and valid digests; a manifest list or image index is refused as
// Unsupported (push single-platform images).
func ParseManifest(body []byte, contentType string) (*Manifest, string, error) {
	var m Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, "", manifestErr("manifest is not valid JSON: %v", err)
	}
	mt := m.MediaType
	if ct, _, err := mime.ParseMediaType(contentType); err == nil && ct != "" && ct != "application/json" {
		if mt != "" && mt != ct {
			return nil, "", manifestErr("manifest mediaType %s does not match Content-Type %s", mt, ct)
		}
		mt = ct
	}
	if mt == "" {
		mt = MediaTypeOCIManifest // OCI allows leaving it out
	}
	switch mt {
	case MediaTypeDockerManifest, MediaTypeOCIManifest:
	case MediaTypeDockerManifestList, MediaTypeOCIIndex:
		return nil, "", &ManifestError{Reason: "manifest lists and image indexes are not supported; push a single-platform image", Unsupported: true}
	default:
		return nil, "", &ManifestError{Reason: fmt.Sprintf("manifest media type %q is not supported", mt), Unsupported: true}
	}
	if m.SchemaVersion != 2 {
		return nil, "", manifestErr("schemaVersion %d is not supported, want 2", m.SchemaVersion)
	}
	if !digest.Valid(m.Config.Digest) || m.Config.Size < 0 {
		return nil, "", manifestErr("config descriptor is not valid")
	}
	for i, l := range m.Layers {
		if !digest.Valid(l.Digest) || l.Size < 0 {
			return nil, "", manifestErr("layer %d descriptor is not valid", i)
		}
		if len(l.URLs) > 0 || l.MediaType == MediaTypeDockerForeign {
			return nil, "", manifestErr("layer %d is a foreign layer, which this registry does not hold", i)
		}
		if l.MediaType == MediaTypeOCILayerZstd {
			return nil, "", &ManifestError{Reason: fmt.Sprintf("layer %d is zstd-compressed, which is not supported", i), Unsupported: true}
		}
	}
	return &m, mt, nil
}

// LayerMediaType is the media type of a layer blob, compressed or not.
func LayerMediaType(compressed bool) string {
	if compressed {
		return MediaTypeOCILayerGzip
	}
	return MediaTypeOCILayer
}

// GenerateManifest writes an OCI image manifest for an image stored from
// a docker archive, so it can be pulled.
func GenerateManifest(config Desc, layers []Descriptor) ([]byte, string, error) {
	if layers == nil {
		layers = []Descriptor{}
	}
	m := Manifest{
		SchemaVersion: 2,
		MediaType:     MediaTypeOCIManifest,
		Config:        Descriptor{MediaType: MediaTypeOCIConfig, Digest: config.Digest, Size: config.Size},
		Layers:        layers,
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "   ")
	if err := enc.Encode(m); err != nil {
		return nil, "", err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), MediaTypeOCIManifest, nil
}
