package hosts

import "github.com/gophercloud/gophercloud/v2"

func rootURL(c *gophercloud.ServiceClient) string { return c.ServiceURL("berth-hosts") }

func resourceURL(c *gophercloud.ServiceClient, name string) string {
	return c.ServiceURL("berth-hosts", name)
}
