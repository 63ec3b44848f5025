package layers

import "github.com/gophercloud/gophercloud/v2"

func listURL(c *gophercloud.ServiceClient, imageID string) string {
	return c.ServiceURL("images", imageID, "layers")
}
