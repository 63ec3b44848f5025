package servers

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strconv"

	"github.com/gophercloud/gophercloud/v2"
)

// MaxFileSize is the largest file PutFile and GetFile move (16 MiB).
const MaxFileSize = 16 << 20

// SyncStatus asks region to re-read the server's real state from its host
// now instead of at the next sync interval ({"berth-syncStatus": null},
// 202).
func SyncStatus(ctx context.Context, c *gophercloud.ServiceClient, id string) (r ActionResult) {
	resp, err := c.Post(ctx, actionURL(c, id), map[string]any{"berth-syncStatus": nil}, nil, &gophercloud.RequestOpts{
		OkCodes: []int{202, 204},
	})
	_, r.Header, r.Err = gophercloud.ParseResponse(resp, err)
	return
}

// PutFileOpts describe a file written into the server's app container.
type PutFileOpts struct {
	// Path is absolute and clean, e.g. "/etc/motd".
	Path string
	// Contents are the file's bytes, at most MaxFileSize.
	Contents []byte
	// Mode is the octal permission string, e.g. "0644"; empty keeps the
	// server's default.
	Mode string
}

// ToPutFileMap builds the berth-putFile action body.
func (o PutFileOpts) ToPutFileMap() (map[string]any, error) {
	if o.Path == "" {
		return nil, fmt.Errorf("missing path")
	}
	if len(o.Contents) > MaxFileSize {
		return nil, fmt.Errorf("file is %d bytes; at most %d (16 MiB) can be copied", len(o.Contents), MaxFileSize)
	}
	b := map[string]any{"path": o.Path, "contents": base64.StdEncoding.EncodeToString(o.Contents)}
	if o.Mode != "" {
		b["mode"] = o.Mode
	}
	return map[string]any{"berth-putFile": b}, nil
}

// PutFile writes a file into the server's app container (204).
func PutFile(ctx context.Context, c *gophercloud.ServiceClient, id string, opts PutFileOpts) (r ActionResult) {
	b, err := opts.ToPutFileMap()
	if err != nil {
		r.Err = err
		return
	}
	resp, err := c.Post(ctx, actionURL(c, id), b, nil, &gophercloud.RequestOpts{OkCodes: []int{200, 202, 204}})
	_, r.Header, r.Err = gophercloud.ParseResponse(resp, err)
	return
}

// GetFile reads a file from the server's app container.
func GetFile(ctx context.Context, c *gophercloud.ServiceClient, id, path string) (r GetFileResult) {
	b := map[string]any{"berth-getFile": map[string]string{"path": path}}
	resp, err := c.Post(ctx, actionURL(c, id), b, &r.Body, &gophercloud.RequestOpts{OkCodes: []int{200}})
	_, r.Header, r.Err = gophercloud.ParseResponse(resp, err)
	return
}

// Deploy replaces the server's app container with one from a new image,
// keeping the server's id, address and volumes (Nova's rebuild with only
// an imageRef; 202).
func Deploy(ctx context.Context, c *gophercloud.ServiceClient, id, imageRef string) (r ActionResult) {
	return Rebuild(ctx, c, id, RebuildOpts{ImageRef: imageRef})
}

// RebuildOpts are the fields of Nova's rebuild Berth acts on.
type RebuildOpts struct {
	// ImageRef is the image id to rebuild from.
	ImageRef string `json:"imageRef"`
	// Name renames the server too, when set.
	Name string `json:"name,omitempty"`
	// Metadata replaces the server's metadata, when set.
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Rebuild rebuilds the server from opts.ImageRef. Unlike gophercloud's
// Rebuild it does not require the 202 to carry a server body.
func Rebuild(ctx context.Context, c *gophercloud.ServiceClient, id string, opts RebuildOpts) (r ActionResult) {
	if opts.ImageRef == "" {
		r.Err = fmt.Errorf("missing imageRef")
		return
	}
	resp, err := c.Post(ctx, actionURL(c, id), map[string]any{"rebuild": opts}, nil, &gophercloud.RequestOpts{
		OkCodes: []int{202},
	})
	_, r.Header, r.Err = gophercloud.ParseResponse(resp, err)
	return
}

// ConsoleOutput returns the last length lines of the server's console log
// (0 or less: all of it).
func ConsoleOutput(ctx context.Context, c *gophercloud.ServiceClient, id string, length int) (r ConsoleOutputResult) {
	arg := map[string]any{}
	if length > 0 {
		arg["length"] = length
	}
	resp, err := c.Post(ctx, actionURL(c, id), map[string]any{"os-getConsoleOutput": arg}, &r.Body, &gophercloud.RequestOpts{
		OkCodes: []int{200},
	})
	_, r.Header, r.Err = gophercloud.ParseResponse(resp, err)
	return
}

// SerialConsole asks for a serial console URL (os-getSerialConsole). The
// URL is a websocket that embeds a short-lived token; see package console.
func SerialConsole(ctx context.Context, c *gophercloud.ServiceClient, id string) (r SerialConsoleResult) {
	b := map[string]any{"os-getSerialConsole": map[string]string{"type": "serial"}}
	resp, err := c.Post(ctx, actionURL(c, id), b, &r.Body, &gophercloud.RequestOpts{OkCodes: []int{200}})
	_, r.Header, r.Err = gophercloud.ParseResponse(resp, err)
	return
}

// LogsOpts select what Logs streams.
type LogsOpts struct {
	// Tail is how many of the last lines to start with (0: all).
	Tail int
	// Follow keeps the stream open and sends new lines as they come.
	Follow bool
}

// ToLogsQuery builds the query string.
func (o LogsOpts) ToLogsQuery() string {
	q := url.Values{}
	if o.Tail > 0 {
		q.Set("tail", strconv.Itoa(o.Tail))
	}
	if o.Follow {
		q.Set("follow", "1")
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

// Logs streams the app container's log (GET /servers/{id}/berth-logs) as
// plain text. The caller closes the reader; with Follow it ends when ctx
// is cancelled or the server closes it.
func Logs(ctx context.Context, c *gophercloud.ServiceClient, id string, opts LogsOpts) (io.ReadCloser, error) {
	resp, err := c.Get(ctx, logsURL(c, id)+opts.ToLogsQuery(), nil, &gophercloud.RequestOpts{
		KeepResponseBody: true,
		OkCodes:          []int{200},
		MoreHeaders:      map[string]string{"Accept": "text/plain"},
	})
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// SnapshotOpts name the image a snapshot makes.
type SnapshotOpts struct {
	// Name of the new image, e.g. "web1-2026-01-01".
	Name string `json:"name"`
	// Metadata become properties of the image.
	Metadata map[string]string `json:"metadata,omitempty"`
}

// Snapshot commits the server's app container into a new image (Nova's
// createImage; 202). The image id is read from the 2.45+ body or, before
// that, from the Location header, whichever the server sends.
func Snapshot(ctx context.Context, c *gophercloud.ServiceClient, id string, opts SnapshotOpts) (r SnapshotResult) {
	if opts.Name == "" {
		r.Err = fmt.Errorf("a snapshot needs a name")
		return
	}
	resp, err := c.Post(ctx, actionURL(c, id), map[string]any{"createImage": opts}, nil, &gophercloud.RequestOpts{
		OkCodes:          []int{202},
		KeepResponseBody: true,
	})
	if err == nil {
		defer resp.Body.Close()
		var body struct {
			ImageID string `json:"image_id"`
		}
		if b, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20)); rerr == nil && len(b) > 0 {
			_ = json.Unmarshal(b, &body)
		}
		r.imageID = body.ImageID
	}
	_, r.Header, r.Err = gophercloud.ParseResponse(resp, err)
	return
}
