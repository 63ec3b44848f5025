package agent

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

	"berth/schema"
)

// Client speaks region's internal host API (/internal/v1/hosts/{host}/…).
type Client struct {
	base  string
	host  string
	token string
	http  *http.Client
	// CallTimeout bounds register and report calls; a desired-state poll
	// gets its wait plus this.
	CallTimeout time.Duration
}

// NewClient returns a client for host at region's base URL.
func NewClient(regionURL, host, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{}
	}
	return &Client{
		base:        strings.TrimRight(regionURL, "/") + "/internal/v1/hosts/" + url.PathEscape(host),
		host:        host,
		token:       token,
		http:        hc,
		CallTimeout: 15 * time.Second,
	}
}

// StatusError is a non-success answer from region.
type StatusError struct {
	Method string
	Path   string
	Code   int
	Body   string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("region %s %s: %d %s: %s", e.Method, e.Path, e.Code, http.StatusText(e.Code), e.Body)
}

// Register joins the host (PUT /internal/v1/hosts/{host}).
func (c *Client) Register(ctx context.Context, reg schema.HostRegister) (schema.Host, error) {
	var h schema.Host
	err := c.do(ctx, c.CallTimeout, http.MethodPut, "", reg, &h, http.StatusOK)
	return h, err
}

// Desired fetches the host's desired state, blocking on region's side until
// its index exceeds index or wait runs out.
func (c *Client) Desired(ctx context.Context, index int64, wait time.Duration) (schema.DesiredState, error) {
	var ds schema.DesiredState
	q := url.Values{}
	q.Set("index", strconv.FormatInt(index, 10))
	q.Set("wait", wait.String())
	err := c.do(ctx, wait+c.CallTimeout, http.MethodGet, "/desired?"+q.Encode(), nil, &ds, http.StatusOK)
	return ds, err
}

// Report posts the observed state; it is also the heartbeat.
func (c *Client) Report(ctx context.Context, rep schema.HostReport) error {
	return c.do(ctx, c.CallTimeout, http.MethodPost, "/report", rep, nil, http.StatusNoContent, http.StatusOK)
}

func (c *Client) do(ctx context.Context, timeout time.Duration, method, path string, in, out any, ok ...int) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set(schema.AgentTokenHeader, c.token)
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("region %s %s: %w", method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	for _, code := range ok {
		if resp.StatusCode == code {
			if out == nil {
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
				return nil
			}
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				return fmt.Errorf("region %s %s: decode answer: %w", method, req.URL.Path, err)
			}
			return nil
		}
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	return &StatusError{Method: method, Path: req.URL.Path, Code: resp.StatusCode, Body: strings.TrimSpace(string(msg))}
}
