package imageclient

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"

	"berth/internal/apierr"
)

// List returns the images visible with token that match q (Glance's list
// filters; any other key filters on an image property), in the order q
// asks for. One page of at most 1000 images.
func (c *Client) List(ctx context.Context, token string, q url.Values) ([]Image, error) {
	q2 := url.Values{"limit": {"1000"}}
	for k, v := range q {
		q2[k] = v
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v2/images?"+q2.Encode(), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Auth-Token", token)
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, apierr.Wrap(err, apierr.Unavailable, "The image service is unavailable.")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, apierr.Wrap(nil, apierr.Unavailable, "The image service answered %s to a list.", resp.Status)
	}
	var list struct {
		Images []Image `json:"images"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&list); err != nil {
		return nil, apierr.Wrap(err, apierr.Unavailable, "The image service sent an unreadable list.")
	}
	return list.Images, nil
}
