// Package agentclient is region's client of a host agent's own API
// (schema/agentops.go): the operations that are not desired state —
// logs, files, passwords, snapshots, diagnostics, a shell. Errors the agent
// returns keep their kind (the agent answers with Nova fault bodies).
package agentclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/schema"
)

// Client calls agents with the shared agent token.
type Client struct {
	token string
	hc    *http.Client
}

// New returns a client; token is the agents' shared secret.
func New(token string) *Client {
	// No overall timeout: log follows and shells are long-lived; callers
	// bound short calls with their context.
	return &Client{token: token, hc: &http.Client{}}
}

// Token is the shared secret (the console proxy dials agents with it).
func (c *Client) Token() string { return c.token }

func setURL(agentURL, setID, op string, q url.Values) string {
	u := strings.TrimRight(agentURL, "/") + "/agent/v1/sets/" + url.PathEscape(setID) + "/" + op
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u
}

// do sends a request and returns the response when it is 2xx; other
// statuses become apierr errors carrying the agent's message.
func (c *Client) do(ctx context.Context, method, u string, body io.Reader, ctype string) (*http.Response, error) {
	if u == "" || strings.HasPrefix(u, "/") {
		return nil, apierr.Unavailablef("The host agent has no API address; is it up to date?")
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set(schema.AgentTokenHeader, c.token)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if rid := httpx.RequestID(ctx); rid != "" {
		req.Header.Set("X-Openstack-Request-Id", rid)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, apierr.Wrap(err, apierr.Unavailable, "The server's host is unreachable.")
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	var fault map[string]struct {
		Message string `json:"message"`
	}
	msg := fmt.Sprintf("The host agent answered %d.", resp.StatusCode)
	if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&fault) == nil {
		for _, f := range fault {
			if f.Message != "" {
				msg = f.Message
			}
		}
	}
	kind := map[int]apierr.Kind{400: apierr.Invalid, 404: apierr.NotFound, 409: apierr.Conflict,
		413: apierr.TooLarge, 501: apierr.NotImplemented}[resp.StatusCode]
	if kind == apierr.Internal {
		kind = apierr.Unavailable
	}
	return nil, &apierr.Error{Kind: kind, Message: msg}
}

func (c *Client) doJSON(ctx context.Context, method, u string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	resp, err := c.do(ctx, method, u, body, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(out)
}

// Logs returns the last tail lines of the app's log (0 = all).
func (c *Client) Logs(ctx context.Context, agentURL, setID string, tail int) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := c.do(ctx, http.MethodGet, setURL(agentURL, setID, "logs", url.Values{"tail": {strconv.Itoa(tail)}}), nil, "")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	return string(b), err
}

// FollowLogs streams the app's log until ctx ends; the caller closes it.
func (c *Client) FollowLogs(ctx context.Context, agentURL, setID string, tail int) (io.ReadCloser, error) {
	resp, err := c.do(ctx, http.MethodGet, setURL(agentURL, setID, "logs",
		url.Values{"tail": {strconv.Itoa(tail)}, "follow": {"1"}}), nil, "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// SetPassword sets a user's password inside the app container.
func (c *Client) SetPassword(ctx context.Context, agentURL, setID string, p schema.SetPassword) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return c.doJSON(ctx, http.MethodPost, setURL(agentURL, setID, "password", nil), p, nil)
}

// PutFile writes a file into the app container.
func (c *Client) PutFile(ctx context.Context, agentURL, setID, path, mode string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	q := url.Values{"path": {path}}
	if mode != "" {
		q.Set("mode", mode)
	}
	resp, err := c.do(ctx, http.MethodPut, setURL(agentURL, setID, "files", q), bytes.NewReader(data), "application/octet-stream")
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

// GetFile reads a file from the app container.
func (c *Client) GetFile(ctx context.Context, agentURL, setID, path string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	resp, err := c.do(ctx, http.MethodGet, setURL(agentURL, setID, "files", url.Values{"path": {path}}), nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, schema.MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > schema.MaxFileBytes {
		return nil, &apierr.Error{Kind: apierr.TooLarge, Message: "The file is larger than 16 MiB."}
	}
	return b, nil
}

// Commit snapshots the app container into imagesvc image req.ImageID.
func (c *Client) Commit(ctx context.Context, agentURL, setID string, req schema.CommitRequest) (*schema.CommitResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	var out schema.CommitResult
	err := c.doJSON(ctx, http.MethodPost, setURL(agentURL, setID, "commit", nil), req, &out)
	return &out, err
}

// Diagnostics returns the set's counters.
func (c *Client) Diagnostics(ctx context.Context, agentURL, setID string) (*schema.Diagnostics, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out schema.Diagnostics
	err := c.doJSON(ctx, http.MethodGet, setURL(agentURL, setID, "diagnostics", nil), nil, &out)
	return &out, err
}

// Sync makes the agent re-read the set now and returns what it found.
func (c *Client) Sync(ctx context.Context, agentURL, setID string) (*schema.ObservedSet, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out schema.ObservedSet
	err := c.doJSON(ctx, http.MethodPost, setURL(agentURL, setID, "sync", nil), nil, &out)
	return &out, err
}

// ExecURL is the websocket URL of an interactive shell in the app.
func ExecURL(agentURL, setID string) string {
	u := setURL(agentURL, setID, "exec", url.Values{"cmd": {"/bin/sh"}, "tty": {"1"}})
	return "ws" + strings.TrimPrefix(u, "http")
}
