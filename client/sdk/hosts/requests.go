package hosts

import (
	"context"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// List lists every host (admin).
func List(c *gophercloud.ServiceClient) pagination.Pager {
	return pagination.NewPager(c, rootURL(c), func(r pagination.PageResult) pagination.Page {
		return HostPage{pagination.SinglePageBase(r)}
	})
}

// Get shows one host by name.
func Get(ctx context.Context, c *gophercloud.ServiceClient, name string) (r GetResult) {
	resp, err := c.Get(ctx, resourceURL(c, name), &r.Body, nil)
	_, r.Header, r.Err = gophercloud.ParseResponse(resp, err)
	return
}
