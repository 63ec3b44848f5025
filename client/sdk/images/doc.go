// Package images adds streaming to gophercloud's Glance v2 image data
// calls: Upload sends a known Content-Length (so the service can refuse an
// oversized image before any byte moves) and Download reports the size, so
// a caller can draw a progress bar. Image records themselves are managed
// with gophercloud's openstack/image/v2/images.
package images
