package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"

	"berth/imagesvc/store"
	"berth/internal/apierr"
	"berth/internal/keystone"
)

// Glance's limits ([DEFAULT] image_property_quota, image_tag_quota).
const (
	maxProperties = 128
	maxTags       = 128
	maxStringLen  = 255
)

// Properties imagesvc sets on a docker image: the Docker image id (its
// config's digest) and the digest of its registry manifest.
const (
	propDockerImageID        = "docker_image_id"
	propDockerManifestDigest = "docker_manifest_digest"
)

// readOnly attributes may not be set by clients (403), as in Glance's
// RequestDeserializer (_disallowed_properties, _readonly_properties), plus
// the properties imagesvc itself manages.
var readOnly = map[string]bool{
	"created_at": true, "updated_at": true, "status": true, "checksum": true, "size": true,
	"virtual_size": true, "direct_url": true, "self": true, "file": true, "schema": true,
	"os_hash_algo": true, "os_hash_value": true, "stores": true, "locations": true,
	propDockerImageID: true, propDockerManifestDigest: true, "docker_repository": true,
}

// reserved attributes may not be used as properties (403).
var reserved = map[string]bool{"location": true, "deleted": true, "deleted_at": true}

// baseAttrs are the image attributes that are not extra properties.
var baseAttrs = map[string]bool{
	"id": true, "name": true, "visibility": true, "protected": true, "os_hidden": true,
	"container_format": true, "disk_format": true, "min_disk": true, "min_ram": true,
	"tags": true, "owner": true,
}

// checkWritable is Glance's read-only/reserved check for a top-level key.
func checkWritable(key string) error {
	if readOnly[key] {
		return apierr.Forbiddenf("Attribute '%s' is read-only.", key)
	}
	if reserved[key] || strings.HasPrefix(key, "os_glance") {
		return apierr.Forbiddenf("Attribute '%s' is reserved.", key)
	}
	return nil
}

func schemaErr(key string, raw json.RawMessage, want string) error {
	return apierr.Invalidf("Provided object does not match schema 'image': %s is not of type %s (%s)",
		compact(raw), want, key)
}

func compact(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil || b.Len() > 80 {
		if len(raw) > 80 {
			return string(raw[:80]) + "..."
		}
		return string(raw)
	}
	return b.String()
}

func isNull(raw json.RawMessage) bool { return string(bytes.TrimSpace(raw)) == "null" }

func decodeString(key string, raw json.RawMessage, nullable bool) (*string, error) {
	if isNull(raw) {
		if nullable {
			return nil, nil
		}
		return nil, schemaErr(key, raw, "'string'")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		if nullable {
			return nil, schemaErr(key, raw, "'null', 'string'")
		}
		return nil, schemaErr(key, raw, "'string'")
	}
	if len(s) > maxStringLen {
		return nil, apierr.Invalidf("Provided object does not match schema 'image': %s is too long (%s, at most %d characters)",
			compact(raw), key, maxStringLen)
	}
	return &s, nil
}

func decodeEnum(key string, raw json.RawMessage, nullable bool, allowed []string) (*string, error) {
	s, err := decodeString(key, raw, nullable)
	if err != nil || s == nil {
		return s, err
	}
	if !slices.Contains(allowed, *s) {
		return nil, apierr.Invalidf("Provided object does not match schema 'image': '%s' is not one of %s (%s)",
			*s, strings.Join(allowed, ", "), key)
	}
	return s, nil
}

func decodeBool(key string, raw json.RawMessage) (bool, error) {
	var b bool
	if isNull(raw) || json.Unmarshal(raw, &b) != nil {
		return false, schemaErr(key, raw, "'boolean'")
	}
	return b, nil
}

func decodeNonNegInt(key string, raw json.RawMessage) (int, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return 0, schemaErr(key, raw, "'integer'")
	}
	n, ok := v.(json.Number)
	if !ok {
		return 0, schemaErr(key, raw, "'integer'")
	}
	i, err := n.Int64()
	if err != nil {
		return 0, schemaErr(key, raw, "'integer'")
	}
	if i < 0 {
		return 0, apierr.Invalidf("Cannot set %s to a negative value.", key)
	}
	if i > math.MaxInt32 {
		return 0, apierr.Invalidf("Value of %s is too large.", key)
	}
	return int(i), nil
}

func decodeTags(raw json.RawMessage) (store.Tags, error) {
	var tags []string
	if isNull(raw) || json.Unmarshal(raw, &tags) != nil {
		return nil, schemaErr("tags", raw, "'array' of 'string'")
	}
	out := store.Tags{}
	for _, t := range tags {
		if len(t) > maxStringLen {
			return nil, apierr.Invalidf("Provided object does not match schema 'image': tag '%.40s...' is too long", t)
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	if len(out) > maxTags {
		return nil, tooMany("tags", maxTags)
	}
	return out, nil
}

func tooMany(what string, n int) error {
	return &apierr.Error{Kind: apierr.TooLarge,
		Message: fmt.Sprintf("Maximum number of %s exceeded (%d allowed).", what, n)}
}

// setAttr sets one top-level attribute or extra property of img from a
// client value, enforcing Glance's schema and policies. creating is true
// for POST /v2/images (where id and owner may be given).
func setAttr(img *store.Image, id *keystone.Identity, key string, raw json.RawMessage, creating bool) error {
	if err := checkWritable(key); err != nil {
		return err
	}
	switch key {
	case "id":
		if !creating {
			return apierr.Forbiddenf("Attribute 'id' is read-only.")
		}
		s, err := decodeString(key, raw, false)
		if err != nil {
			return err
		}
		if !uuidRE.MatchString(*s) {
			return apierr.Invalidf("Provided object does not match schema 'image': '%s' does not match '%s' (id)", *s, uuidPattern)
		}
		img.ID = strings.ToLower(*s)
	case "name":
		s, err := decodeString(key, raw, true)
		if err != nil {
			return err
		}
		img.Name = s
	case "visibility":
		s, err := decodeEnum(key, raw, false, visibilities)
		if err != nil {
			return err
		}
		if *s == store.VisibilityPublic && !id.IsAdmin() {
			return apierr.Forbiddenf("You are not authorized to complete publicize_image action.")
		}
		img.Visibility = *s
	case "protected":
		b, err := decodeBool(key, raw)
		if err != nil {
			return err
		}
		img.Protected = b
	case "os_hidden":
		b, err := decodeBool(key, raw)
		if err != nil {
			return err
		}
		img.Hidden = b
	case "container_format", "disk_format":
		allowed := containerFormats
		if key == "disk_format" {
			allowed = diskFormats
		}
		s, err := decodeEnum(key, raw, true, allowed)
		if err != nil {
			return err
		}
		if !creating && img.Status != store.StatusQueued {
			return apierr.Forbiddenf("Attribute %s can be only replaced for a queued image.", key)
		}
		if key == "container_format" {
			img.ContainerFormat = s
		} else {
			img.DiskFormat = s
		}
	case "min_disk", "min_ram":
		n, err := decodeNonNegInt(key, raw)
		if err != nil {
			return err
		}
		if key == "min_disk" {
			img.MinDisk = n
		} else {
			img.MinRAM = n
		}
	case "tags":
		tags, err := decodeTags(raw)
		if err != nil {
			return err
		}
		img.Tags = tags
	case "owner":
		s, err := decodeString(key, raw, true)
		if err != nil {
			return err
		}
		if !id.IsAdmin() {
			if !creating {
				return apierr.Forbiddenf("Owner can't be updated by non admin.")
			}
			if s == nil || *s != id.ProjectID {
				return apierr.Forbiddenf("You are not authorized to complete add_image action.")
			}
		}
		img.Owner = s
	default:
		if len(key) > maxStringLen {
			return apierr.Invalidf("Custom property should not be greater than 255 characters.")
		}
		if key == "" {
			return apierr.Invalidf("Custom property names may not be empty.")
		}
		var v string
		if isNull(raw) || json.Unmarshal(raw, &v) != nil {
			return schemaErr(key, raw, "'string'")
		}
		if img.Properties == nil {
			img.Properties = store.Properties{}
		}
		if _, exists := img.Properties[key]; !exists && len(img.Properties) >= maxProperties {
			return tooMany("image properties", maxProperties)
		}
		img.Properties[key] = v
	}
	return nil
}
