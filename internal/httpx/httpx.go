// Package httpx holds the HTTP plumbing every Berth API shares: request ids,
// body limits, strict JSON decoding and access logging. Fault rendering is
// per service (Nova, Glance, Neutron each have their own shape), so the
// helpers here return apierr errors and leave rendering to the caller.
package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"

	"berth/internal/apierr"
)

type ctxKey int

const (
	requestIDKey ctxKey = iota
	clientRequestIDKey
)

// RequestID returns the request id carried by ctx ("" when none).
func RequestID(ctx context.Context) string {
	s, _ := ctx.Value(requestIDKey).(string)
	return s
}

// ClientRequestID returns the request id when the client sent it (a
// well-formed X-Openstack-Request-Id), "" when the server made it up: only
// a client's own id can mark a retry of the same request.
func ClientRequestID(ctx context.Context) string {
	if sent, _ := ctx.Value(clientRequestIDKey).(bool); sent {
		return RequestID(ctx)
	}
	return ""
}

// WithRequestID returns ctx carrying id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey, id)
}

var reqIDPattern = regexp.MustCompile(`^req-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// NewRequestID makes a request id in OpenStack's form, req-<uuid>.
func NewRequestID() string { return "req-" + uuid.NewString() }

// RequestIDs gives every request an id: a well-formed client-sent
// X-Openstack-Request-Id is kept (for tracing across services, as
// oslo.middleware does for global ids), otherwise a new one is made. The id
// is echoed in both X-Openstack-Request-Id and X-Compute-Request-Id headers.
func RequestIDs(computeHeader bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := r.Header.Get("X-Openstack-Request-Id")
			ctx := r.Context()
			if reqIDPattern.MatchString(id) {
				ctx = context.WithValue(ctx, clientRequestIDKey, true)
			} else {
				id = NewRequestID()
			}
			w.Header().Set("X-Openstack-Request-Id", id)
			if computeHeader {
				w.Header().Set("X-Compute-Request-Id", id)
			}
			next.ServeHTTP(w, r.WithContext(WithRequestID(ctx, id)))
		})
	}
}

// statusRecorder remembers the status a handler wrote, for the access log.
type statusRecorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += int64(n)
	return n, err
}

// Flush lets streaming handlers flush through the recorder.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// AccessLog logs one line per request: 5xx at Error, 4xx at Debug, the
// rest at Info, with the request id.
func AccessLog(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rec := &statusRecorder{ResponseWriter: w}
			next.ServeHTTP(rec, r)
			level := slog.LevelInfo
			switch {
			case rec.status >= 500:
				level = slog.LevelError
			case rec.status >= 400:
				level = slog.LevelDebug
			}
			log.Log(r.Context(), level, "request",
				"method", r.Method, "path", r.URL.Path, "status", rec.status,
				"bytes", rec.bytes, "duration_ms", time.Since(start).Milliseconds(),
				"request_id", RequestID(r.Context()))
		})
	}
}

// Recover turns a panic in a handler into a 500 rendered by render, logged
// with its request id, instead of a dropped connection.
func Recover(log *slog.Logger, render func(http.ResponseWriter, error)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if v := recover(); v != nil {
					if v == http.ErrAbortHandler {
						panic(v)
					}
					log.Error("panic in handler", "err", fmt.Sprint(v), "path", r.URL.Path,
						"request_id", RequestID(r.Context()))
					render(w, fmt.Errorf("panic: %v", v))
				}
			}()
			next.ServeHTTP(w, r)
		})
	}
}

// MaxBodyBytes is the default cap on JSON request bodies.
const MaxBodyBytes = 1 << 20

// DecodeJSON reads a JSON body into v. It insists on a JSON content type
// (415 otherwise), caps the body at limit bytes (413 past it), and rejects
// malformed JSON, trailing data and, when strict, unknown fields (400).
func DecodeJSON(w http.ResponseWriter, r *http.Request, limit int64, strict bool, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !(mt == "application/json" || strings.HasSuffix(mt, "+json")) {
			return &apierr.Error{Kind: apierr.UnsupportedMedia,
				Message: fmt.Sprintf("The media type %q is not supported, use application/json.", ct)}
		}
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return decodeError(err)
		}
		return apierr.Invalidf("Malformed request body: unexpected data after the JSON document.")
	}
	return nil
}

func decodeError(err error) error {
	var mbe *http.MaxBytesError
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &mbe):
		return &apierr.Error{Kind: apierr.TooLarge, Message: "Request is too large."}
	case errors.Is(err, io.EOF):
		return apierr.Invalidf("The request body is empty; a JSON document is required.")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return apierr.Invalidf("Malformed request body: truncated JSON.")
	case errors.As(err, &se):
		return apierr.Invalidf("Malformed request body: %s at offset %d.", se.Error(), se.Offset)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "the body"
		}
		return apierr.Invalidf("Invalid input for field/attribute %s. Value of type %s is not valid here, expected %s.", field, te.Value, te.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return apierr.Invalidf("Additional properties are not allowed (%s was unexpected).", strings.TrimPrefix(err.Error(), "json: unknown field "))
	default:
		return apierr.Invalidf("Malformed request body: %v.", err)
	}
}

// WriteJSON writes v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
