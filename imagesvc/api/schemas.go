package api

import (
	"net/http"

	"berth/internal/httpx"
)

// Allowed values, as Glance's defaults ([image_format] container_formats
// and disk_formats).
var (
	containerFormats = []string{"ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"}
	diskFormats      = []string{"ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"}
	visibilities     = []string{"community", "public", "private", "shared"}
	statuses         = []string{"queued", "saving", "active", "killed", "deleted", "uploading", "importing", "pending_delete", "deactivated"}
)

const uuidPattern = "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"

func nullableEnum(vals []string) []any {
	out := []any{nil}
	for _, v := range vals {
		out = append(out, v)
	}
	return out
}

// imageSchemaDoc is GET /v2/schemas/image: Glance's image schema (base
// properties plus the common custom ones Glance ships), permissive: extra
// properties must be strings.
func imageSchemaDoc() map[string]any {
	ro := func(typ any, desc string) map[string]any {
		return map[string]any{"type": typ, "readOnly": true, "description": desc}
	}
	custom := func(desc string) map[string]any {
		return map[string]any{"type": "string", "is_base": false, "description": desc}
	}
	props := map[string]any{
		"id":               map[string]any{"type": "string", "description": "An identifier for the image", "pattern": uuidPattern},
		"name":             map[string]any{"type": []any{"null", "string"}, "description": "Descriptive name for the image", "maxLength": 255},
		"status":           map[string]any{"type": "string", "readOnly": true, "description": "Status of the image", "enum": statuses},
		"visibility":       map[string]any{"type": "string", "description": "Scope of image accessibility", "enum": visibilities},
		"protected":        map[string]any{"type": "boolean", "description": "If true, image will not be deletable."},
		"os_hidden":        map[string]any{"type": "boolean", "description": "If true, image will not appear in default image list response."},
		"checksum":         map[string]any{"type": []any{"null", "string"}, "readOnly": true, "description": "md5 hash of image contents.", "maxLength": 32},
		"os_hash_algo":     map[string]any{"type": []any{"null", "string"}, "readOnly": true, "description": "Algorithm to calculate the os_hash_value", "maxLength": 64},
		"os_hash_value":    map[string]any{"type": []any{"null", "string"}, "readOnly": true, "description": "Hexdigest of the image contents using the algorithm specified by the os_hash_algo", "maxLength": 128},
		"owner":            map[string]any{"type": []any{"null", "string"}, "description": "Owner of the image", "maxLength": 255},
		"size":             ro([]any{"null", "integer"}, "Size of image file in bytes"),
		"virtual_size":     ro([]any{"null", "integer"}, "Virtual size of image in bytes"),
		"container_format": map[string]any{"type": []any{"null", "string"}, "description": "Format of the container", "enum": nullableEnum(containerFormats)},
		"disk_format":      map[string]any{"type": []any{"null", "string"}, "description": "Format of the disk", "enum": nullableEnum(diskFormats)},
		"created_at":       ro("string", "Date and time of image registration"),
		"updated_at":       ro("string", "Date and time of the last image modification"),
		"tags": map[string]any{"type": "array", "description": "List of strings related to the image",
			"items": map[string]any{"type": "string", "maxLength": 255}},
		"direct_url": ro("string", "URL to access the image file kept in external store"),
		"min_ram":    map[string]any{"type": "integer", "description": "Amount of ram (in MB) required to boot image."},
		"min_disk":   map[string]any{"type": "integer", "description": "Amount of disk space (in GB) required to boot image."},
		"self":       ro("string", "An image self url"),
		"file":       ro("string", "An image file url"),
		"schema":     ro("string", "An image schema url"),
		"locations": map[string]any{"type": "array", "description": "A set of URLs to access the image file kept in external store",
			"items": map[string]any{"type": "object", "required": []string{"url", "metadata"},
				"properties": map[string]any{"url": map[string]any{"type": "string", "maxLength": 255}, "metadata": map[string]any{"type": "object"}}}},

		"architecture":  custom("Operating system architecture as specified in https://docs.openstack.org/python-glanceclient/latest/cli/property-keys.html"),
		"os_distro":     custom("Common name of operating system distribution as specified in https://docs.openstack.org/python-glanceclient/latest/cli/property-keys.html"),
		"os_version":    custom("Operating system version as specified by the distributor"),
		"instance_uuid": custom("Metadata which can be used to record which instance this image is associated with. (Informational only, does not create an instance snapshot.)"),
		"kernel_id": map[string]any{"type": []any{"null", "string"}, "is_base": false, "pattern": uuidPattern,
			"description": "ID of image stored in Glance that should be used as the kernel when booting an AMI-style image."},
		"ramdisk_id": map[string]any{"type": []any{"null", "string"}, "is_base": false, "pattern": uuidPattern,
			"description": "ID of image stored in Glance that should be used as the ramdisk when booting an AMI-style image."},
		propDockerImageID: map[string]any{"type": "string", "is_base": false, "readOnly": true,
			"description": "Docker image ID (sha256:<config digest>) of a container_format=docker image, set when its data is uploaded."},
	}
	return map[string]any{
		"name":                 "image",
		"properties":           props,
		"additionalProperties": map[string]any{"type": "string"},
		"links": []map[string]string{
			{"rel": "self", "href": "{self}"},
			{"rel": "enclosure", "href": "{file}"},
			{"rel": "describedby", "href": "{schema}"},
		},
	}
}

func (s *Server) imageSchema(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, imageSchemaDoc())
	return nil
}

// imagesSchema is GET /v2/schemas/images: the collection schema.
func (s *Server) imagesSchema(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, map[string]any{
		"name": "images",
		"properties": map[string]any{
			"images": map[string]any{"type": "array", "items": imageSchemaDoc()},
			"first":  map[string]any{"type": "string"},
			"next":   map[string]any{"type": "string"},
			"schema": map[string]any{"type": "string"},
		},
		"links": []map[string]string{
			{"rel": "first", "href": "{first}"},
			{"rel": "next", "href": "{next}"},
			{"rel": "describedby", "href": "{schema}"},
		},
	})
	return nil
}
