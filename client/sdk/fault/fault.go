// Package fault turns the error responses of Berth's APIs (and of any
// OpenStack service) into one error type that carries the HTTP status, the
// service's own fault message and the request id, so a client can print
// "No server with ID x exists (HTTP 404) (Request-ID: req-…)" instead of a
// wall of JSON.
//
// It understands Nova's `{"itemNotFound": {"code": 404, "message": "…"}}`,
// Glance's `{"message": "…", "code": "404 Not Found", "title": "…"}`,
// Neutron's `{"NeutronError": {"type", "message", "detail"}}` and
// Keystone's `{"error": {"code", "title", "message"}}`.
package fault

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
)

// Error is an API error response.
type Error struct {
	// Status is the HTTP status code, e.g. 404.
	Status int
	// Name is the fault's name where the service gives one, e.g.
	// "itemNotFound" (Nova) or "NetworkNotFound" (Neutron).
	Name string
	// Message is the service's human-readable message.
	Message string
	// RequestID is the X-Openstack-Request-Id (or X-Compute-Request-Id) of
	// the failed request, e.g. "req-5f0c…".
	RequestID string
	// Method and URL of the failed request.
	Method, URL string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Message != "" {
		b.WriteString(e.Message)
	} else {
		b.WriteString(http.StatusText(e.Status))
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.Status)
	}
	if e.RequestID != "" {
		fmt.Fprintf(&b, " (Request-ID: %s)", e.RequestID)
	}
	return b.String()
}

// From converts err into an *Error when it is (or wraps) a gophercloud
// unexpected-response error, and returns it unchanged otherwise (nil stays
// nil).
func From(err error) error {
	if err == nil {
		return nil
	}
	var fe *Error
	if errors.As(err, &fe) {
		return err
	}
	var ue gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &ue) {
		return FromResponse(ue.Actual, ue.ResponseHeader, ue.Body, ue.Method, ue.URL)
	}
	var up *gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &up) && up != nil {
		return FromResponse(up.Actual, up.ResponseHeader, up.Body, up.Method, up.URL)
	}
	return err
}

// FromResponse builds an *Error from a failed response's status, headers
// and body.
func FromResponse(status int, h http.Header, body []byte, method, url string) *Error {
	e := &Error{Status: status, Method: method, URL: url}
	if h != nil {
		e.RequestID = h.Get("X-Openstack-Request-Id")
		if e.RequestID == "" {
			e.RequestID = h.Get("X-Compute-Request-Id")
		}
	}
	e.Name, e.Message = parseBody(body)
	return e
}

// Is lets errors.Is(err, fault.ErrNotFound) and friends work.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrNotImplemented:
		return e.Status == http.StatusNotImplemented
	case ErrConflict:
		return e.Status == http.StatusConflict
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	}
	return false
}

// Sentinels to test an *Error's status with errors.Is.
var (
	ErrNotFound       = errors.New("not found")
	ErrNotImplemented = errors.New("not implemented")
	ErrConflict       = errors.New("conflict")
	ErrUnauthorized   = errors.New("unauthorized")
	ErrForbidden      = errors.New("forbidden")
)

// StatusOf returns the HTTP status of err if it is an API error, else 0.
func StatusOf(err error) int {
	var fe *Error
	if errors.As(From(err), &fe) {
		return fe.Status
	}
	return 0
}

func parseBody(body []byte) (name, msg string) {
	body = []byte(strings.TrimSpace(string(body)))
	if len(body) == 0 {
		return "", ""
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		// Plain text (some proxies, Glance's webob pages): first line.
		s := strings.TrimSpace(string(body))
		if i := strings.IndexByte(s, '\n'); i > 0 {
			s = strings.TrimSpace(s[:i])
		}
		if len(s) > 300 {
			s = s[:300] + "…"
		}
		return "", s
	}
	// Glance: {"message": "...", "code": "404 Not Found", "title": "Not Found"}
	if raw, ok := top["message"]; ok {
		var m string
		if json.Unmarshal(raw, &m) == nil {
			var title string
			if t, ok := top["title"]; ok {
				_ = json.Unmarshal(t, &title)
			}
			return title, glanceMessage(m)
		}
	}
	// Neutron: {"NeutronError": {"type", "message", "detail"}}
	if raw, ok := top["NeutronError"]; ok {
		var ne struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		}
		if json.Unmarshal(raw, &ne) == nil {
			return ne.Type, ne.Message
		}
	}
	// Nova / Keystone: {"<name>": {"code": N, "message": "..."}}
	for k, raw := range top {
		var f struct {
			Message string `json:"message"`
			Title   string `json:"title"`
		}
		if json.Unmarshal(raw, &f) == nil && f.Message != "" {
			return k, f.Message
		}
	}
	return "", strings.TrimSpace(string(body))
}

// glanceMessage strips the "404 Not Found\n\n" preamble real Glance puts in
// its messages.
func glanceMessage(m string) string {
	m = strings.TrimSpace(m)
	parts := strings.Split(m, "\n\n")
	if len(parts) > 1 {
		var keep []string
		for _, p := range parts[1:] {
			if p = strings.TrimSpace(p); p != "" {
				keep = append(keep, p)
			}
		}
		if len(keep) > 0 {
			return strings.Join(keep, " ")
		}
	}
	return m
}
