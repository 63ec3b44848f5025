package api

import "berth/imagesvc/store"

// timeFormat is how Glance writes timestamps: "2026-11-22T15:14:53Z".
const timeFormat = "2006-01-02T15:04:05Z"

// imageView is an image as Glance v2 shows it: the extra properties as
// top-level keys, then the base attributes (which win over a property of
// the same name), with nulls where Glance has them.
func imageView(img *store.Image) map[string]any {
	v := make(map[string]any, len(img.Properties)+22)
	for k, val := range img.Properties {
		v[k] = val
	}
	tags := []string(img.Tags)
	if tags == nil {
		tags = []string{}
	}
	v["id"] = img.ID
	v["name"] = img.Name
	v["status"] = img.Status
	v["visibility"] = img.Visibility
	v["protected"] = img.Protected
	v["os_hidden"] = img.Hidden
	v["checksum"] = img.Checksum
	v["os_hash_algo"] = img.OSHashAlgo
	v["os_hash_value"] = img.OSHashValue
	v["size"] = img.Size
	v["virtual_size"] = img.VirtualSize
	v["container_format"] = img.ContainerFormat
	v["disk_format"] = img.DiskFormat
	v["min_disk"] = img.MinDisk
	v["min_ram"] = img.MinRAM
	v["owner"] = img.Owner
	v["tags"] = tags
	v["created_at"] = img.CreatedAt.UTC().Format(timeFormat)
	v["updated_at"] = img.UpdatedAt.UTC().Format(timeFormat)
	if img.ManifestDigest != nil {
		v[propDockerManifestDigest] = *img.ManifestDigest
	}
	v["self"] = "/v2/images/" + img.ID
	v["file"] = "/v2/images/" + img.ID + "/file"
	v["schema"] = "/v2/schemas/image"
	return v
}
