package httpx

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"berth/internal/apierr"
)

// FuzzDecodeJSON feeds DecodeJSON, the decoder every Berth API reads
// request bodies with, arbitrary bodies, content types and limits. It must
// never panic, and it either accepts exactly one valid JSON document no
// longer than the limit, or fails with a client error (400, 413 or 415)
// whose message is safe to show — never an Internal (500) error.
func FuzzDecodeJSON(f *testing.F) {
	for _, s := range []struct {
		body, ct string
		strict   bool
		limit    uint32
	}{
		{`{"name": "a", "n": 1, "tags": ["x"], "meta": {"k": "v"}, "on": true}`, "application/json", true, 1 << 20},
		{`{"name": "a", "extra": 1}`, "application/json", true, 1 << 20},
		{`{"name": "a", "extra": 1}`, "application/json", false, 1 << 20},
		{`{"name": 5}`, "application/json; charset=utf-8", true, 1 << 20},
		{`{"n": "5"}`, "", true, 1 << 20},
		{`{"n": 1e400}`, "application/json", true, 1 << 20},
		{`{"n": 9223372036854775808}`, "application/json", true, 1 << 20},
		{`{"name": "a"} {"name": "b"}`, "application/json", true, 1 << 20},
		{`{"name": "a"}   ` + "\n\t", "application/json", true, 1 << 20},
		{`{"name": "a"`, "application/json", true, 1 << 20},
		{`{"name": "` + strings.Repeat("x", 100) + `"}`, "application/json", true, 64},
		{"", "application/json", true, 1 << 20},
		{"null", "application/json", true, 1 << 20},
		{"[1, 2]", "application/json", true, 1 << 20},
		{`{"name": "\ud800"}`, "application/json", true, 1 << 20},
		{"{\"name\": \"\xff\"}", "application/json", true, 1 << 20},
		{strings.Repeat("[", 20000), "application/json", true, 1 << 20},
		{`{"name": "a"}`, "text/plain", true, 1 << 20},
		{`{"name": "a"}`, "application/openstack-images-v2.1-json-patch", true, 1 << 20},
		{`{"name": "a"}`, "application/merge-patch+json", true, 1 << 20},
		{`{"name": "a"}`, ";;", true, 1 << 20},
		{`{"Name": "case"}`, "application/json", true, 1 << 20},
		{`{"name": "a", "name": "b"}`, "application/json", true, 1 << 20},
	} {
		f.Add([]byte(s.body), s.ct, s.strict, s.limit)
	}
	f.Fuzz(func(t *testing.T, body []byte, ct string, strict bool, limit uint32) {
		if limit == 0 {
			limit = 1
		}
		if limit > 4<<20 {
			limit = 4 << 20
		}
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		if ct != "" {
			// Header values cannot hold CR/LF; the server would never see them.
			r.Header.Set("Content-Type", strings.Map(func(c rune) rune {
				if c == '\r' || c == '\n' {
					return -1
				}
				return c
			}, ct))
		}
		w := httptest.NewRecorder()
		var v struct {
			Name string            `json:"name"`
			N    int               `json:"n"`
			Tags []string          `json:"tags"`
			Meta map[string]string `json:"meta"`
			On   *bool             `json:"on"`
			Any  any               `json:"any"`
		}
		err := DecodeJSON(w, r, int64(limit), strict, &v)
		if err == nil {
			if int64(len(body)) > int64(limit) {
				t.Fatalf("accepted %d bytes with a limit of %d", len(body), limit)
			}
			if !json.Valid(body) {
				t.Fatalf("accepted a body that is not one valid JSON document: %q", body)
			}
			if got := r.Header.Get("Content-Type"); got != "" {
				mt, _, perr := mime.ParseMediaType(got)
				if perr != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
					t.Fatalf("accepted content type %q", got)
				}
			}
			return
		}
		e := apierr.As(err)
		switch e.HTTPStatus() {
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
		default:
			t.Fatalf("DecodeJSON(%q, %q) = %v (status %d), want 400, 413 or 415", body, ct, err, e.HTTPStatus())
		}
		if e.Message == "" || strings.Contains(e.Message, "goroutine") {
			t.Fatalf("message %q is empty or shows internals", e.Message)
		}
	})
}
