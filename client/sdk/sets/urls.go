package sets

import "github.com/gophercloud/gophercloud/v2"

const resource = "berth-sets"

func rootURL(c *gophercloud.ServiceClient) string { return c.ServiceURL(resource) }

func resourceURL(c *gophercloud.ServiceClient, id string) string { return c.ServiceURL(resource, id) }
