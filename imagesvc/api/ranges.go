package api

import (
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"berth/internal/apierr"
)

// byteRange is a Range header as Glance (webob) reads it: start is the
// first byte, or minus the suffix length for "bytes=-N"; end is one past
// the last byte, or -1 when open.
type byteRange struct{ start, end int64 }

// rangeSpec is webob's grammar for a single byte range: the unit, case
// insensitive, then "first-last" with optional blanks around = and -.
// Unlike webob the whole header must match, so a header accepted here is
// never one the server half-reads.
var rangeSpec = regexp.MustCompile(`(?i)^\s*bytes *= *(\d*) *- *(\d*)\s*$`)

// parseRange applies Glance's rules to a download's Range header
// (glance.common.wsgi.Request.get_range_from_request): more than one
// range is 400; a header that does not parse, or whose last byte comes
// before its first, is 416 "Invalid Range header."; a start at or past
// the end of the data is 416 with the valid positions. ok is false when
// there is no Range header.
func parseRange(h string, size int64) (r byteRange, ok bool, err error) {
	if h == "" {
		return byteRange{}, false, nil
	}
	if strings.Contains(h, ",") {
		return byteRange{}, false, apierr.Invalidf("Requests with multiple ranges are not supported in Glance. " +
			"You may make multiple single-range requests instead.")
	}
	m := rangeSpec.FindStringSubmatch(h)
	if m == nil || m[1] == "" && m[2] == "" {
		return byteRange{}, false, rangeNotSatisfiable("Invalid Range header.")
	}
	if m[1] == "" {
		return byteRange{start: -bigInt(m[2]), end: -1}, true, nil
	}
	r = byteRange{start: bigInt(m[1]), end: -1}
	if m[2] != "" {
		last := bigInt(m[2])
		if last < r.start {
			return byteRange{}, false, rangeNotSatisfiable("Invalid Range header.")
		}
		if last < math.MaxInt64 {
			r.end = last + 1
		}
	}
	if r.start >= size {
		return byteRange{}, false, rangeNotSatisfiable(fmt.Sprintf(
			"Invalid start position in Range header. Start position MUST be in the inclusive range [0, %d].", size-1))
	}
	return r, true, nil
}

// contentRangeSpec is webob's grammar for a Content-Range value.
var contentRangeSpec = regexp.MustCompile(`^bytes (?:(\d+)-(\d+)|\*)/(?:(\d+)|\*)$`)

// requestedRange is the part of the data a download asks for: its Range
// header, or else — as Glance still honours it, for old clients — a
// Content-Range header on the request ("bytes first-last/length", length
// may be "*"). ok is false when neither is there.
func requestedRange(h http.Header, size int64) (r byteRange, ok bool, err error) {
	if v := h.Get("Range"); v != "" {
		return parseRange(v, size)
	}
	v := h.Get("Content-Range")
	if v == "" {
		return byteRange{}, false, nil
	}
	invalid := rangeNotSatisfiable("Invalid Content-Range header.")
	m := contentRangeSpec.FindStringSubmatch(strings.TrimSpace(v))
	if m == nil || m[1] == "" {
		// "bytes */N" names no bytes (Glance fails on it).
		return byteRange{}, false, invalid
	}
	r = byteRange{start: bigInt(m[1]), end: bigInt(m[2])}
	if r.end < math.MaxInt64 {
		r.end++
	}
	if r.start >= r.end {
		return byteRange{}, false, invalid
	}
	if m[3] != "" {
		if length := bigInt(m[3]); r.end > length {
			return byteRange{}, false, invalid
		}
	} else if r.end > size {
		return byteRange{}, false, rangeNotSatisfiable(fmt.Sprintf(
			"Invalid stop position in Content-Range header. The stop position MUST be in the inclusive range [0, %d].", size-1))
	}
	if r.start >= size {
		return byteRange{}, false, rangeNotSatisfiable(fmt.Sprintf(
			"Invalid start position in Content-Range header. Start position MUST be in the inclusive range [0, %d].", size-1))
	}
	return r, true, nil
}

// bigInt reads a run of digits, saturating at MaxInt64: a position past
// any image's end needs no more precision than that.
func bigInt(s string) int64 {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return math.MaxInt64
	}
	return n
}

// window is the part of size bytes that r selects, as Glance serves it:
// a suffix longer than the data is the whole data, an end past the data
// stops at its end.
func (r byteRange) window(size int64) (offset, length int64) {
	switch {
	case r.start >= 0:
		offset = r.start
	case -r.start < size:
		offset = size + r.start
	}
	if r.end >= 0 && r.end < size {
		return offset, r.end - offset
	}
	return offset, size - offset
}

func rangeNotSatisfiable(msg string) error {
	return &apierr.Error{Kind: apierr.Invalid, Status: http.StatusRequestedRangeNotSatisfiable, Message: msg}
}
