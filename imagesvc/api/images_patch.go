package api

import (
	"encoding/json"
	"mime"
	"net/http"
	"regexp"
	"strings"

	"github.com/gorilla/mux"

	"berth/imagesvc/store"
	"berth/internal/apierr"
	"berth/internal/httpx"
)

// The PATCH media types Glance accepts and the JSON-schema draft of each
// (v2.0 is draft 4 {"replace": "/name"}, v2.1 draft 10 {"op", "path"}).
var patchTypes = map[string]int{
	"application/openstack-images-v2.0-json-patch": 4,
	"application/openstack-images-v2.1-json-patch": 10,
}

const acceptPatch = "application/openstack-images-v2.0-json-patch, application/openstack-images-v2.1-json-patch"

type change struct {
	op    string // add, remove, replace
	path  string // top-level attribute
	value json.RawMessage
}

// patchImage is PATCH /v2/images/{id}: add/replace/remove of attributes
// and properties, as one transaction.
func (s *Server) patchImage(w http.ResponseWriter, r *http.Request) error {
	id, err := identity(r)
	if err != nil {
		return err
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	draft, ok := patchTypes[mt]
	if !ok {
		w.Header().Set("Accept-Patch", acceptPatch)
		return &apierr.Error{Kind: apierr.UnsupportedMedia,
			Message: "Image PATCH expects Content-Type one of: " + acceptPatch}
	}
	// The media type is checked; DecodeJSON only knows JSON types.
	r.Header.Del("Content-Type")
	var raw []json.RawMessage
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, false, &raw); err != nil {
		if apierr.Is(err, apierr.Invalid) && !strings.HasPrefix(apierr.As(err).Message, "Malformed") {
			return apierr.Invalidf("Request body must be a JSON array of operation objects.")
		}
		return err
	}
	changes, err := parseChanges(raw, draft)
	if err != nil {
		return err
	}
	imageID := mux.Vars(r)["image_id"]
	if len(changes) == 0 {
		img, err := s.visibleImage(r.Context(), id, imageID)
		if err != nil {
			return err
		}
		if err := canModify(id, img, "modify_image"); err != nil {
			return err
		}
		httpx.WriteJSON(w, http.StatusOK, imageView(img))
		return nil
	}
	img, err := s.cfg.Store.UpdateImage(r.Context(), imageID, func(img *store.Image) error {
		if err := s.checkVisible(r.Context(), id, img); err != nil {
			return err
		}
		if err := canModify(id, img, "modify_image"); err != nil {
			return err
		}
		for _, c := range changes {
			if err := applyChange(img, c, func(key string, v json.RawMessage) error {
				return setAttr(img, id, key, v, false)
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, imageView(img))
	return nil
}

func applyChange(img *store.Image, c change, set func(key string, v json.RawMessage) error) error {
	_, isProp := img.Properties[c.path]
	switch c.op {
	case "remove":
		if baseAttrs[c.path] {
			return apierr.Forbiddenf("Property %s may not be removed.", c.path)
		}
		if !isProp {
			return apierr.Conflictf("Property %s does not exist.", c.path)
		}
		delete(img.Properties, c.path)
		return nil
	case "replace":
		if !baseAttrs[c.path] && !isProp {
			return apierr.Conflictf("Property %s does not exist.", c.path)
		}
	}
	return set(c.path, c.value)
}

var (
	adjacentSlashes = regexp.MustCompile(`/\s*?/`)
	badTilde        = regexp.MustCompile(`~[^01]`)
)

// parseChanges validates the operations before anything is touched.
func parseChanges(raw []json.RawMessage, draft int) ([]change, error) {
	if raw == nil {
		return nil, apierr.Invalidf("Request body must be a JSON array of operation objects.")
	}
	var out []change
	for _, item := range raw {
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(item, &obj); err != nil || obj == nil {
			return nil, apierr.Invalidf("Operations must be JSON objects.")
		}
		var c change
		var pointer string
		if draft == 10 {
			op, ok := obj["op"]
			if !ok {
				return nil, apierr.Invalidf("Unable to find `op` in JSON Schema change. It must be one of the following: add, remove, replace.")
			}
			if err := json.Unmarshal(op, &c.op); err != nil || (c.op != "add" && c.op != "remove" && c.op != "replace") {
				return nil, apierr.Invalidf("Invalid operation: `%s`. It must be one of the following: add, remove, replace.", compact(op))
			}
			p, ok := obj["path"]
			if !ok {
				return nil, apierr.Invalidf("Unable to find 'path' in JSON Schema change")
			}
			if err := json.Unmarshal(p, &pointer); err != nil {
				return nil, apierr.Invalidf("Invalid JSON pointer: %s", compact(p))
			}
		} else {
			for _, op := range []string{"add", "remove", "replace"} {
				if p, ok := obj[op]; ok {
					if c.op != "" {
						return nil, apierr.Invalidf(`Operation objects must contain only one member named "add", "remove", or "replace".`)
					}
					c.op = op
					if err := json.Unmarshal(p, &pointer); err != nil {
						return nil, apierr.Invalidf("Invalid JSON pointer: %s", compact(p))
					}
				}
			}
			if c.op == "" {
				return nil, apierr.Invalidf(`Operation objects must contain exactly one member named "add", "remove", or "replace".`)
			}
		}
		path, err := decodePointer(pointer)
		if err != nil {
			return nil, err
		}
		if len(path) != 1 {
			return nil, apierr.Invalidf("Invalid JSON pointer for this resource: '/%s'", strings.Join(path, "/"))
		}
		c.path = path[0]
		if c.op != "remove" {
			v, ok := obj["value"]
			if !ok {
				return nil, apierr.Invalidf(`Operation "%s" requires a member named "value".`, c.op)
			}
			c.value = v
		}
		if err := checkWritable(c.path); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// decodePointer parses the limited JSON pointers Glance accepts.
func decodePointer(p string) ([]string, error) {
	switch {
	case !strings.HasPrefix(p, "/"):
		return nil, apierr.Invalidf("Pointer `%s` does not start with \"/\".", p)
	case adjacentSlashes.MatchString(p[1:]):
		return nil, apierr.Invalidf("Pointer `%s` contains adjacent \"/\".", p)
	case len(p) > 1 && strings.HasSuffix(p, "/"):
		return nil, apierr.Invalidf("Pointer `%s` end with \"/\".", p)
	case strings.TrimSpace(p[1:]) == "":
		return nil, apierr.Invalidf("Pointer `%s` does not contains valid token.", p)
	case badTilde.MatchString(p) || strings.HasSuffix(p, "~"):
		return nil, apierr.Invalidf("Pointer `%s` contains \"~\" not part of a recognized escape sequence.", p)
	}
	var out []string
	for _, part := range strings.Split(strings.TrimPrefix(p, "/"), "/") {
		out = append(out, strings.TrimSpace(strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")))
	}
	return out, nil
}
