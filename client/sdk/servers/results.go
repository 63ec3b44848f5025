package servers

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"path"

	"github.com/gophercloud/gophercloud/v2"
)

// ActionResult is the result of an action with no body; call ExtractErr.
type ActionResult struct {
	gophercloud.ErrResult
}

// GetFileResult is the result of GetFile; call Extract.
type GetFileResult struct {
	gophercloud.Result
}

// Extract returns the file's bytes.
func (r GetFileResult) Extract() ([]byte, error) {
	var s struct {
		Contents string `json:"contents"`
		Size     int    `json:"size"`
	}
	if err := r.ExtractInto(&s); err != nil {
		return nil, err
	}
	b, err := base64.StdEncoding.DecodeString(s.Contents)
	if err != nil {
		return nil, fmt.Errorf("berth-getFile: contents are not base64: %w", err)
	}
	if s.Size != 0 && s.Size != len(b) {
		return nil, fmt.Errorf("berth-getFile: size says %d bytes, contents have %d", s.Size, len(b))
	}
	return b, nil
}

// ConsoleOutputResult is the result of ConsoleOutput; call Extract.
type ConsoleOutputResult struct {
	gophercloud.Result
}

// Extract returns the console output.
func (r ConsoleOutputResult) Extract() (string, error) {
	var s struct {
		Output string `json:"output"`
	}
	err := r.ExtractInto(&s)
	return s.Output, err
}

// Console is a remote console: its protocol type and URL.
type Console struct {
	Type string `json:"type"`
	URL  string `json:"url"`
}

// SerialConsoleResult is the result of SerialConsole; call Extract.
type SerialConsoleResult struct {
	gophercloud.Result
}

// Extract returns the console.
func (r SerialConsoleResult) Extract() (*Console, error) {
	var s struct {
		Console Console `json:"console"`
	}
	if err := r.ExtractInto(&s); err != nil {
		return nil, err
	}
	if s.Console.URL == "" {
		return nil, fmt.Errorf("os-getSerialConsole: the answer has no console url")
	}
	return &s.Console, nil
}

// SnapshotResult is the result of Snapshot; call Extract.
type SnapshotResult struct {
	gophercloud.HeaderResult
	imageID string
}

// Extract returns the new image's id.
func (r SnapshotResult) Extract() (string, error) {
	if r.Err != nil {
		return "", r.Err
	}
	if r.imageID != "" {
		return r.imageID, nil
	}
	loc := r.Header.Get("Location")
	if loc == "" {
		return "", fmt.Errorf("createImage: the answer names no image (no Location, no image_id)")
	}
	u, err := url.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("createImage: bad Location %q: %w", loc, err)
	}
	id := path.Base(u.Path)
	if id == "." || id == "/" || id == "" {
		return "", fmt.Errorf("createImage: bad Location %q", loc)
	}
	return id, nil
}
