// Package apierr defines the handful of error kinds Berth's services return
// and the HTTP status each becomes. Errors are created where they happen,
// wrapped with %w as they travel up, and translated to a wire fault only at
// the HTTP edge of each service (Nova, Glance and Neutron each have their own
// fault body shape; see the Render* functions).
package apierr

import (
	"errors"
	"fmt"
	"net/http"
)

// Kind is the class of an error; it decides the HTTP status.
type Kind int

const (
	// Internal is any error with no kind: 500, details logged, not shown.
	Internal Kind = iota
	Invalid
	Unauthenticated
	Forbidden
	NotFound
	NotAcceptable
	Conflict
	TooLarge
	UnsupportedMedia
	OverLimit
	NotImplemented
	Unavailable
)

var statusOf = map[Kind]int{
	Internal:         http.StatusInternalServerError,
	Invalid:          http.StatusBadRequest,
	Unauthenticated:  http.StatusUnauthorized,
	Forbidden:        http.StatusForbidden,
	NotFound:         http.StatusNotFound,
	NotAcceptable:    http.StatusNotAcceptable,
	Conflict:         http.StatusConflict,
	TooLarge:         http.StatusRequestEntityTooLarge,
	UnsupportedMedia: http.StatusUnsupportedMediaType,
	OverLimit:        http.StatusForbidden, // Nova: quota exceeded is 403 overLimit
	NotImplemented:   http.StatusNotImplemented,
	Unavailable:      http.StatusServiceUnavailable,
}

// Error is an error with a kind and a message that is safe to show a client.
type Error struct {
	Kind    Kind
	Message string
	// Status overrides the kind's default HTTP status when non-zero
	// (e.g. 413 for overLimit on a rate limit).
	Status int
	// RetryAfter, in seconds, is sent as Retry-After / retryAfter when > 0.
	RetryAfter int
	// Err is the underlying cause, for logs only.
	Err error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// HTTPStatus is the status code this error becomes.
func (e *Error) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	return statusOf[e.Kind]
}

func newf(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Message: fmt.Sprintf(format, args...)}
}

func Invalidf(format string, args ...any) *Error   { return newf(Invalid, format, args...) }
func NotFoundf(format string, args ...any) *Error  { return newf(NotFound, format, args...) }
func Conflictf(format string, args ...any) *Error  { return newf(Conflict, format, args...) }
func Forbiddenf(format string, args ...any) *Error { return newf(Forbidden, format, args...) }
func OverLimitf(format string, args ...any) *Error { return newf(OverLimit, format, args...) }
func Unauthenticatedf(format string, args ...any) *Error {
	return newf(Unauthenticated, format, args...)
}
func Unavailablef(format string, args ...any) *Error {
	return newf(Unavailable, format, args...)
}
func NotImplementedf(format string, args ...any) *Error {
	return newf(NotImplemented, format, args...)
}

// Wrap gives err a kind and a client-safe message, keeping err as the cause.
func Wrap(err error, k Kind, format string, args ...any) *Error {
	e := newf(k, format, args...)
	e.Err = err
	return e
}

// As returns the *Error in err's chain, or an Internal error wrapping err.
func As(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Kind: Internal, Message: "internal error", Err: err}
}

// KindOf is the kind of err (Internal when it has none).
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// Is reports whether err has kind k.
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }
