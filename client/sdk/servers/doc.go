// Package servers adds what Berth's compute API offers beyond Nova to
// gophercloud's openstack/compute/v2/servers: sync-status, file transfer
// (berth-putFile / berth-getFile), log streaming (berth-logs), deploy
// (rebuild with a new image, keeping id and address), the serial console
// URL, and a waiter that reports every status/task/progress change.
//
// Everything Nova already defines (create, list, start, stop, pause,
// reboot, resize, createImage, …) is called through gophercloud's own
// servers package; this one only fills the gaps, in the same style:
// requests.go builds calls, results.go extracts them, urls.go names paths.
//
// Example:
//
//	compute, _ := sess.Compute(ctx)
//	if err := servers.SyncStatus(ctx, compute, id).ExtractErr(); err != nil { … }
//	data, err := servers.GetFile(ctx, compute, id, "/etc/hostname").Extract()
package servers
