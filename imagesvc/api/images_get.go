package api

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"berth/imagesvc/store"
	"berth/internal/apierr"
	"berth/internal/httpx"
)

// Glance's [DEFAULT] limit_param_default and api_limit_max.
const (
	defaultLimit = 25
	maxLimit     = 1000
)

func (s *Server) showImage(w http.ResponseWriter, r *http.Request) error {
	id, err := identity(r)
	if err != nil {
		return err
	}
	img, err := s.visibleImage(r.Context(), id, mux.Vars(r)["image_id"])
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, imageView(img))
	return nil
}

// listImages is GET /v2/images with Glance's filters, sorting and
// marker/limit paging.
func (s *Server) listImages(w http.ResponseWriter, r *http.Request) error {
	id, err := identity(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	f, err := parseListQuery(q)
	if err != nil {
		return err
	}
	f.Viewer = viewer(id)
	imgs, err := s.cfg.Store.FindImages(r.Context(), f)
	if err != nil {
		return err
	}
	views := make([]map[string]any, 0, len(imgs))
	for _, img := range imgs {
		views = append(views, imageView(img))
	}
	body := map[string]any{"images": views, "schema": "/v2/schemas/images", "first": "/v2/images"}
	rest := cloneValues(q)
	rest.Del("marker")
	if len(rest) > 0 {
		body["first"] = "/v2/images?" + rest.Encode()
	}
	if len(imgs) > 0 && len(imgs) == f.Limit {
		rest.Set("marker", imgs[len(imgs)-1].ID)
		body["next"] = "/v2/images?" + rest.Encode()
	}
	httpx.WriteJSON(w, http.StatusOK, body)
	return nil
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}
	return out
}

// inList parses Glance's "in:a,b" list syntax (or a single value).
func inList(v string) []string {
	if rest, ok := strings.CutPrefix(v, "in:"); ok {
		var out []string
		for _, p := range strings.Split(rest, ",") {
			out = append(out, strings.TrimSpace(p))
		}
		return out
	}
	return []string{v}
}

func parseBoolParam(name, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, apierr.Invalidf("Invalid value '%s' for '%s' filter. Valid values are 'true' or 'false'.", v, name)
}

func parseListQuery(q url.Values) (store.ImageFilter, error) {
	f := store.ImageFilter{Limit: defaultLimit, Properties: map[string]string{}}
	sorts, err := parseSort(q)
	if err != nil {
		return f, err
	}
	f.Sort = sorts
	for key, vals := range q {
		v := vals[0]
		switch key {
		case "sort", "sort_key", "sort_dir":
		case "limit":
			n, err := strconv.Atoi(v)
			if err != nil {
				return f, apierr.Invalidf("limit param must be an integer")
			}
			if n < 0 {
				return f, apierr.Invalidf("limit param must be positive")
			}
			f.Limit = min(n, maxLimit)
		case "marker":
			f.Marker = v
		case "member_status":
			if !slices.Contains([]string{"pending", "accepted", "rejected", "all"}, v) {
				return f, apierr.Invalidf("Invalid status: %s", v)
			}
			f.MemberStatus = v
		case "tag":
			for _, t := range vals {
				f.Tags = append(f.Tags, strings.TrimSpace(t))
			}
		case "visibility":
			if !slices.Contains(append([]string{"all"}, visibilities...), v) {
				return f, apierr.Invalidf("Invalid visibility value: %s", v)
			}
			f.Visibility = v
		case "os_hidden":
			b, err := parseBoolParam(key, v)
			if err != nil {
				return f, err
			}
			f.Hidden = b
		case "protected":
			b, err := parseBoolParam(key, v)
			if err != nil {
				return f, err
			}
			f.Protected = &b
		case "id":
			f.IDs = inList(v)
		case "name":
			f.Names = inList(v)
		case "status":
			f.Statuses = inList(v)
		case "container_format":
			f.ContainerFormats = inList(v)
		case "disk_format":
			f.DiskFormats = inList(v)
		case "owner":
			f.Owner = &v
		case "size_min", "size_max":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return f, apierr.Invalidf("Unable to filter using the specified range: %s must be an integer.", key)
			}
			if key == "size_min" {
				f.SizeMin = &n
			} else {
				f.SizeMax = &n
			}
		case "changes-since":
			return f, apierr.Invalidf("The \"changes-since\" filter is no longer available on v2.")
		case "created_at", "updated_at":
			for _, v := range vals {
				tf, err := parseTimeFilter(key, v)
				if err != nil {
					return f, err
				}
				if key == "created_at" {
					f.CreatedAt = append(f.CreatedAt, tf)
				} else {
					f.UpdatedAt = append(f.UpdatedAt, tf)
				}
			}
		default:
			f.Properties[key] = v
		}
	}
	return f, nil
}

// parseTimeFilter reads Glance's <op>:<ISO 8601 time> (op defaults to eq).
func parseTimeFilter(key, v string) (store.TimeFilter, error) {
	op, ts := "eq", v
	if o, rest, ok := strings.Cut(v, ":"); ok && store.ValidTimeOp(o) {
		op, ts = o, rest
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04:05.999999", "2006-01-02"} {
		if t, err := time.Parse(layout, ts); err == nil {
			return store.TimeFilter{Op: op, Time: t}, nil
		}
	}
	return store.TimeFilter{}, apierr.Invalidf("Unable to filter on a range with a nonsensical value: %s=%s. The value must be <op>:<ISO 8601 time>, op one of gt, gte, lt, lte, eq, neq.", key, v)
}

// parseSort reads both of Glance's sort syntaxes: sort=name:asc,size:desc
// and sort_key=name&sort_dir=asc (repeatable).
func parseSort(q url.Values) ([]store.SortKey, error) {
	validKey := func(k string) error {
		if !slices.Contains(store.SortKeys, k) {
			return apierr.Invalidf("Invalid sort key: %s. It must be one of the following: %s.",
				k, strings.Join(store.SortKeys, ", "))
		}
		return nil
	}
	validDir := func(d string) error {
		if d != "asc" && d != "desc" {
			return apierr.Invalidf("Invalid sort direction: %s", d)
		}
		return nil
	}
	var out []store.SortKey
	if sort, ok := q["sort"]; ok {
		if q.Has("sort_key") || q.Has("sort_dir") {
			return nil, apierr.Invalidf("Old and new sorting syntax cannot be combined")
		}
		for _, part := range strings.Split(strings.TrimSpace(sort[0]), ",") {
			k, d, _ := strings.Cut(part, ":")
			k, d = strings.TrimSpace(k), strings.TrimSpace(d)
			if d == "" {
				d = "desc"
			}
			if err := validKey(k); err != nil {
				return nil, err
			}
			if err := validDir(d); err != nil {
				return nil, err
			}
			out = append(out, store.SortKey{Key: k, Desc: d == "desc"})
		}
		return out, nil
	}
	keys, dirs := q["sort_key"], q["sort_dir"]
	for _, k := range keys {
		if err := validKey(strings.TrimSpace(k)); err != nil {
			return nil, err
		}
	}
	for _, d := range dirs {
		if err := validDir(strings.TrimSpace(d)); err != nil {
			return nil, err
		}
	}
	if len(dirs) > 1 && len(dirs) != len(keys) {
		return nil, apierr.Invalidf("Number of sort dirs does not match the number of sort keys")
	}
	if len(keys) == 0 {
		keys = []string{"created_at"}
	}
	for i, k := range keys {
		d := "desc"
		switch {
		case len(dirs) == 1:
			d = dirs[0]
		case len(dirs) > 1:
			d = dirs[i]
		}
		out = append(out, store.SortKey{Key: strings.TrimSpace(k), Desc: strings.TrimSpace(d) == "desc"})
	}
	return out, nil
}
