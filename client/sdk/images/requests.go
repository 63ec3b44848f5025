package images

import (
	"context"
	"io"
	"net/http"
	"strconv"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
)

// Upload streams size bytes of data (size < 0: unknown, sent chunked) into
// the image: PUT /v2/images/{id}/file, 204. If the token was rejected and
// data can seek, it re-authenticates and sends it again once.
func Upload(ctx context.Context, c *gophercloud.ServiceClient, id string, data io.Reader, size int64) error {
	start := int64(-1)
	if s, ok := data.(io.Seeker); ok {
		if off, err := s.Seek(0, io.SeekCurrent); err == nil {
			start = off
		}
	}
	for attempt := 0; ; attempt++ {
		token := c.ProviderClient.Token()
		resp, err := put(ctx, c, fileURL(c, id), data, size)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK:
			return nil
		case resp.StatusCode == http.StatusUnauthorized && attempt == 0 && start >= 0 && c.ProviderClient.ReauthFunc != nil:
			if err := c.ProviderClient.Reauthenticate(ctx, token); err != nil {
				return err
			}
			if _, err := data.(io.Seeker).Seek(start, io.SeekStart); err != nil {
				return err
			}
			continue
		}
		return gophercloud.ErrUnexpectedResponseCode{
			URL: fileURL(c, id), Method: http.MethodPut, Expected: []int{204},
			Actual: resp.StatusCode, Body: body, ResponseHeader: resp.Header,
		}
	}
}

func put(ctx context.Context, c *gophercloud.ServiceClient, url string, data io.Reader, size int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, io.NopCloser(data))
	if err != nil {
		return nil, err
	}
	if size >= 0 {
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("User-Agent", c.ProviderClient.UserAgent.Join())
	for k, v := range c.ProviderClient.AuthenticatedHeaders() {
		req.Header.Set(k, v)
	}
	for k, v := range c.MoreHeaders {
		req.Header.Set(k, v)
	}
	return c.ProviderClient.HTTPClient.Do(req)
}

// Download opens the image's data and returns it with its size (-1 when
// the service does not say). The caller closes the reader.
func Download(ctx context.Context, c *gophercloud.ServiceClient, id string) (io.ReadCloser, int64, error) {
	r := imagedata.Download(ctx, c, id)
	body, err := r.Extract()
	if err != nil {
		return nil, 0, err
	}
	size := int64(-1)
	if v := r.Header.Get("Content-Length"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			size = n
		}
	}
	return body, size, nil
}
