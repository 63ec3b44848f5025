package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"
)

// seedDemoImage uploads the demo image through the Glance v2 API as admin
// unless an active image of that name exists. A half-made one (queued,
// killed: an earlier upload was cut short) is deleted and made again.
func (s *Stack) seedDemoImage(ctx context.Context) error {
	token, err := s.Token(ctx, UserAdmin)
	if err != nil {
		return err
	}
	g := &glanceClient{base: s.ImageURL(), token: token}
	var list struct {
		Images []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"images"`
	}
	if err := g.do(ctx, http.MethodGet, "/v2/images?"+url.Values{"name": {DemoImageName}}.Encode(), "", nil, &list, http.StatusOK); err != nil {
		return err
	}
	for _, img := range list.Images {
		if img.Status == "active" {
			return nil
		}
		s.log.Warn("deleting unfinished demo image", "image_id", img.ID, "status", img.Status)
		if err := g.do(ctx, http.MethodDelete, "/v2/images/"+img.ID, "", nil, nil, http.StatusNoContent, http.StatusNotFound); err != nil {
			return err
		}
	}

	path, err := s.demoImageFile(ctx)
	if err != nil {
		return err
	}
	body, err := json.Marshal(map[string]any{
		"name":             DemoImageName,
		"container_format": "docker",
		"disk_format":      "raw",
		"visibility":       "public",
	})
	if err != nil {
		return err
	}
	var created struct {
		ID string `json:"id"`
	}
	if err := g.do(ctx, http.MethodPost, "/v2/images", "application/json", bytes.NewReader(body), &created, http.StatusCreated); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	t := time.Now()
	if err := g.do(ctx, http.MethodPut, "/v2/images/"+created.ID+"/file", "application/octet-stream", f, nil, http.StatusNoContent); err != nil {
		return err
	}
	s.log.Info("seeded demo image", "image_id", created.ID, "took", time.Since(t).Round(time.Millisecond))
	return nil
}

type glanceClient struct {
	base, token string
}

func (g *glanceClient) do(ctx context.Context, method, path, contentType string, body io.Reader, out any, okCodes ...int) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, g.base+path, body)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if f, ok := body.(*os.File); ok {
		if fi, err := f.Stat(); err == nil {
			req.ContentLength = fi.Size()
		}
	}
	req.Header.Set("X-Auth-Token", g.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("glance: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, c := range okCodes {
		if resp.StatusCode == c {
			if out != nil && len(b) > 0 {
				if err := json.Unmarshal(b, out); err != nil {
					return fmt.Errorf("glance: %s %s: decode: %w", method, path, err)
				}
			}
			return nil
		}
	}
	return fmt.Errorf("glance: %s %s: status %d: %.300s", method, path, resp.StatusCode, b)
}
