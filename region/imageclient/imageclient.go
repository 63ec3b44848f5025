// Package imageclient is region's client of imagesvc's Glance v2 API. It
// forwards the caller's token, so imagesvc decides what the caller may see
// (another project's private image is simply not found).
package imageclient

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"berth/internal/apierr"
	"berth/internal/httpx"
)

// Image is the part of a Glance image region needs.
type Image struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	Status          string `json:"status"`
	ContainerFormat string `json:"container_format"`
	DiskFormat      string `json:"disk_format"`
	MinRAM          int    `json:"min_ram"`
	MinDisk         int    `json:"min_disk"`
	Size            int64  `json:"size"`
	// DockerImageID is imagesvc's docker_image_id property: the Docker
	// image id inside the image's docker-save archive.
	DockerImageID string `json:"docker_image_id"`
}

// Client talks to imagesvc.
type Client struct {
	base string
	hc   *http.Client
}

// New returns a client for the imagesvc at base (e.g. http://127.0.0.1:9292).
func New(base string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: 15 * time.Second}
	}
	return &Client{base: strings.TrimRight(base, "/"), hc: hc}
}

// Get returns image id as seen with token. Errors: NotFound (missing or not
// visible), Unauthenticated, Unavailable.
func (c *Client) Get(ctx context.Context, token, id string) (*Image, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v2/images/"+url.PathEscape(id), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Auth-Token", token)
	req.Header.Set("Accept", "application/json")
	if rid := httpx.RequestID(ctx); rid != "" {
		req.Header.Set("X-Openstack-Request-Id", rid)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, apierr.Wrap(err, apierr.Unavailable, "The image service is unavailable.")
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound, http.StatusBadRequest:
		return nil, apierr.NotFoundf("Image %s could not be found.", id)
	case http.StatusUnauthorized:
		return nil, apierr.Unauthenticatedf("The request you have made requires authentication.")
	default:
		return nil, apierr.Unavailablef("The image service answered %d for image %s.", resp.StatusCode, id)
	}
	var img Image
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&img); err != nil {
		return nil, apierr.Wrap(err, apierr.Unavailable, "The image service sent an unreadable image.")
	}
	if img.ID == "" {
		return nil, fmt.Errorf("image %s: empty answer", id)
	}
	return &img, nil
}

// NewImage is what Create sends.
type NewImage struct {
	Name            string            `json:"name"`
	ContainerFormat string            `json:"container_format"`
	DiskFormat      string            `json:"disk_format"`
	Visibility      string            `json:"visibility,omitempty"`
	Properties      map[string]string `json:"-"`
}

// Create makes a queued image record with token (so it belongs to the
// caller's project) and returns it.
func (c *Client) Create(ctx context.Context, token string, ni NewImage) (*Image, error) {
	body := map[string]any{"name": ni.Name, "container_format": ni.ContainerFormat, "disk_format": ni.DiskFormat}
	if ni.Visibility != "" {
		body["visibility"] = ni.Visibility
	}
	for k, v := range ni.Properties {
		body[k] = v
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/v2/images", strings.NewReader(string(b)))
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Auth-Token", token)
	req.Header.Set("Content-Type", "application/json")
	if rid := httpx.RequestID(ctx); rid != "" {
		req.Header.Set("X-Openstack-Request-Id", rid)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, apierr.Wrap(err, apierr.Unavailable, "The image service is unavailable.")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		var g struct {
			Message string `json:"message"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&g)
		kind := map[int]apierr.Kind{400: apierr.Invalid, 403: apierr.Forbidden, 409: apierr.Conflict,
			413: apierr.OverLimit}[resp.StatusCode]
		if kind == apierr.Internal {
			kind = apierr.Unavailable
		}
		return nil, &apierr.Error{Kind: kind, Message: "The image service refused the snapshot image: " + g.Message}
	}
	var img Image
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&img); err != nil {
		return nil, apierr.Wrap(err, apierr.Unavailable, "The image service sent an unreadable image.")
	}
	return &img, nil
}

// Delete removes an image (a failed snapshot's record).
func (c *Client) Delete(ctx context.Context, token, id string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.base+"/v2/images/"+url.PathEscape(id), nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Auth-Token", token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// BaseURL is imagesvc's base URL.
func (c *Client) BaseURL() string { return c.base }

// Find returns an image by id or, failing that, by its unique name, as
// the CLIs resolve names. NotFound when none matches; Conflict when the
// name is ambiguous.
func (c *Client) Find(ctx context.Context, token, ref string) (*Image, error) {
	img, err := c.Get(ctx, token, ref)
	if err == nil || !apierr.Is(err, apierr.NotFound) {
		return img, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v2/images?name="+url.QueryEscape(ref), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("X-Auth-Token", token)
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, apierr.Wrap(err, apierr.Unavailable, "The image service is unavailable.")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, apierr.NotFoundf("Image %s could not be found.", ref)
	}
	var list struct {
		Images []Image `json:"images"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&list); err != nil {
		return nil, apierr.Wrap(err, apierr.Unavailable, "The image service sent an unreadable list.")
	}
	switch len(list.Images) {
	case 0:
		return nil, apierr.NotFoundf("Image %s could not be found.", ref)
	case 1:
		return &list.Images[0], nil
	}
	return nil, apierr.Conflictf("More than one image is named %s; use its ID.", ref)
}
