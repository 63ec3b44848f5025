package servers

import "github.com/gophercloud/gophercloud/v2"

func actionURL(c *gophercloud.ServiceClient, id string) string {
	return c.ServiceURL("servers", id, "action")
}

func getURL(c *gophercloud.ServiceClient, id string) string {
	return c.ServiceURL("servers", id)
}

func logsURL(c *gophercloud.ServiceClient, id string) string {
	return c.ServiceURL("servers", id, "berth-logs")
}
