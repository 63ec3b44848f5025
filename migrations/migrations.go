// Package migrations embeds the SQL migrations of each component. They are
// plain goose SQL files, applied by each service on start (internal/pgdb).
package migrations

import "embed"

// Region holds region's schema (servers, flavors, hosts, ports, actions).
//
//go:embed region/*.sql
var Region embed.FS

// ImageSvc holds imagesvc's schema (images, layers, blobs).
//
//go:embed imagesvc/*.sql
var ImageSvc embed.FS
