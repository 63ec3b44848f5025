package layers

import (
	"context"

	"github.com/gophercloud/gophercloud/v2"
)

// List returns the layers of an image, root first.
func List(ctx context.Context, c *gophercloud.ServiceClient, imageID string) (r ListResult) {
	resp, err := c.Get(ctx, listURL(c, imageID), &r.Body, nil)
	_, r.Header, r.Err = gophercloud.ParseResponse(resp, err)
	return
}
