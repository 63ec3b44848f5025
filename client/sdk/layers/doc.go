// Package layers is the SDK for the layer chain of Berth images
// (GET /v2/images/{id}/layers on the image service): every layer of an
// image, root first, with its parent, size and the images sharing it.
//
// Example:
//
//	ls, err := layers.List(ctx, imageClient, imageID).Extract()
package layers
