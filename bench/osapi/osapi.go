// Package osapi is the bench's small HTTP client for the OpenStack APIs
// Berth serves (Keystone, Nova, Glance) and region's agent API. It speaks
// plain JSON over one pooled transport so the client itself adds as little
// as possible to what is measured; it is not an SDK.
package osapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"berth/schema"
)

// Client sends requests over a keep-alive pool sized for the bench's
// concurrency.
type Client struct {
	HTTP *http.Client
}

// New returns a client whose pool keeps up to conns idle connections per
// host, so concurrent workers do not pay a TCP handshake each.
func New(conns int) *Client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns * 2,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &Client{HTTP: &http.Client{Transport: tr, Timeout: 5 * time.Minute}}
}

// StatusError is a response outside the expected codes.
type StatusError struct {
	Method, URL string
	Code        int
	Body        string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: status %d: %.300s", e.Method, e.URL, e.Code, e.Body)
}

// Request describes one call.
type Request struct {
	Method string
	URL    string
	Token  string // X-Auth-Token
	// AgentToken is sent as X-Berth-Agent-Token (region's internal API).
	AgentToken string
	Body       any // JSON-encoded unless it is an io.Reader
	// ContentType defaults to application/json when Body is set.
	ContentType   string
	ContentLength int64
	Header        map[string]string
	// OK lists accepted status codes; any 2xx when empty.
	OK []int
}

// Do sends r and decodes a JSON answer into out (when non-nil and the
// answer has a body). It returns the response header.
func (c *Client) Do(ctx context.Context, r Request, out any) (http.Header, error) {
	var body io.Reader
	ct := r.ContentType
	switch b := r.Body.(type) {
	case nil:
	case io.Reader:
		body = b
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(enc)
		if ct == "" {
			ct = "application/json"
		}
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, r.URL, body)
	if err != nil {
		return nil, err
	}
	if r.ContentLength > 0 {
		req.ContentLength = r.ContentLength
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	req.Header.Set("Accept", "application/json")
	if r.Token != "" {
		req.Header.Set("X-Auth-Token", r.Token)
	}
	if r.AgentToken != "" {
		req.Header.Set(schema.AgentTokenHeader, r.AgentToken)
	}
	for k, v := range r.Header {
		req.Header.Set(k, v)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	ok := len(r.OK) == 0 && resp.StatusCode/100 == 2
	for _, code := range r.OK {
		ok = ok || resp.StatusCode == code
	}
	if !ok {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.Header, &StatusError{Method: r.Method, URL: r.URL, Code: resp.StatusCode, Body: string(b)}
	}
	if w, isWriter := out.(io.Writer); isWriter {
		_, err = io.Copy(w, resp.Body)
		return resp.Header, err
	}
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return resp.Header, err
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil || len(b) == 0 {
		return resp.Header, err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return resp.Header, fmt.Errorf("%s %s: decode: %w", r.Method, r.URL, err)
	}
	return resp.Header, nil
}

// Code is the HTTP status of err when it is a StatusError, else 0.
func Code(err error) int {
	if se, ok := err.(*StatusError); ok {
		return se.Code
	}
	return 0
}

// Token is a project-scoped Keystone token and the project it is for.
type Token struct {
	Token     string
	ProjectID string
	UserID    string
}

// PasswordToken asks Keystone (base ends in /v3) for a token of user
// scoped to project, both in the default domain.
func (c *Client) PasswordToken(ctx context.Context, base, user, password, project string) (Token, error) {
	in := map[string]any{"auth": map[string]any{
		"identity": map[string]any{
			"methods": []string{"password"},
			"password": map[string]any{"user": map[string]any{
				"name": user, "password": password, "domain": map[string]string{"id": "default"},
			}},
		},
		"scope": map[string]any{"project": map[string]any{
			"name": project, "domain": map[string]string{"id": "default"},
		}},
	}}
	var out struct {
		Token struct {
			Project struct {
				ID string `json:"id"`
			} `json:"project"`
			User struct {
				ID string `json:"id"`
			} `json:"user"`
		} `json:"token"`
	}
	h, err := c.Do(ctx, Request{Method: http.MethodPost, URL: base + "/auth/tokens?nocatalog", Body: in, OK: []int{201}}, &out)
	if err != nil {
		return Token{}, err
	}
	return Token{Token: h.Get("X-Subject-Token"), ProjectID: out.Token.Project.ID, UserID: out.Token.User.ID}, nil
}

// Server is the part of a Nova server the bench reads.
type Server struct {
	ID         string  `json:"id"`
	Name       string  `json:"name"`
	Status     string  `json:"status"`
	TaskState  *string `json:"OS-EXT-STS:task_state"`
	Created    string  `json:"created"`
	LaunchedAt *string `json:"OS-SRV-USG:launched_at"`
	Addresses  map[string][]struct {
		Addr string `json:"addr"`
	} `json:"addresses"`
	Fault *struct {
		Message string `json:"message"`
	} `json:"fault"`
}

// Action is an os-instance-actions record with events.
type Action struct {
	Action    string  `json:"action"`
	RequestID string  `json:"request_id"`
	StartTime string  `json:"start_time"`
	Message   *string `json:"message"`
	Events    []struct {
		Event      string  `json:"event"`
		StartTime  string  `json:"start_time"`
		FinishTime *string `json:"finish_time"`
		Result     *string `json:"result"`
	} `json:"events"`
}

// UsageTime parses Nova's instance-action and usage timestamps
// ("2006-01-02T15:04:05.000000", UTC).
func UsageTime(s string) (time.Time, error) {
	return time.ParseInLocation("2006-01-02T15:04:05.999999", s, time.UTC)
}
