package images

import "github.com/gophercloud/gophercloud/v2"

func fileURL(c *gophercloud.ServiceClient, id string) string {
	return c.ServiceURL("images", id, "file")
}
