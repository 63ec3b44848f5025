package compute

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/schema"
)

// Microversion is a compute API microversion, e.g. 2.1.
type Microversion struct{ Major, Minor int }

func (v Microversion) String() string { return fmt.Sprintf("%d.%d", v.Major, v.Minor) }

// Less reports whether v is older than o.
func (v Microversion) Less(o Microversion) bool {
	return v.Major < o.Major || v.Major == o.Major && v.Minor < o.Minor
}

// AtLeast reports whether v is o or newer.
func (v Microversion) AtLeast(o Microversion) bool { return !v.Less(o) }

// The range Berth implements. MaxVersion only grows when the behaviour of
// every microversion up to it is really implemented (docs/api.md).
var (
	MinVersion = Microversion{2, 1}
	MaxVersion = Microversion{2, 66}
)

const versionUpdated = "2013-07-23T11:33:21Z"

type mvKey struct{}

// versionOf is the microversion a request asked for.
func versionOf(ctx context.Context) Microversion {
	if v, ok := ctx.Value(mvKey{}).(Microversion); ok {
		return v
	}
	return MinVersion
}

// parseMicroversion reads "2.5" or "latest".
func parseMicroversion(s string) (Microversion, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "latest") {
		return MaxVersion, nil
	}
	maj, min, ok := strings.Cut(s, ".")
	a, err1 := strconv.Atoi(maj)
	b, err2 := strconv.Atoi(min)
	if !ok || err1 != nil || err2 != nil || a < 0 || b < 0 {
		return Microversion{}, apierr.Invalidf("API Version String %s is of invalid format. Must be of format MajorNum.MinorNum.", s)
	}
	return Microversion{a, b}, nil
}

// requestedVersion finds the compute microversion in the headers: the
// standard OpenStack-API-Version ("compute 2.5", possibly among other
// services) wins over the legacy X-OpenStack-Nova-API-Version.
func requestedVersion(h http.Header) (string, bool) {
	for _, v := range h.Values("OpenStack-API-Version") {
		for _, part := range strings.Split(v, ",") {
			f := strings.Fields(part)
			if len(f) == 2 && strings.EqualFold(f[0], "compute") {
				return f[1], true
			}
		}
	}
	if v := h.Get("X-OpenStack-Nova-API-Version"); v != "" {
		return v, true
	}
	return "", false
}

// microversion negotiates the version, echoes it in both headers with Vary,
// and answers 406 for versions outside the range.
func (a *API) microversion(next http.Handler) http.Handler {
	return a.wrapMiddleware(next, func(w http.ResponseWriter, r *http.Request) (*http.Request, error) {
		v := MinVersion
		if s, ok := requestedVersion(r.Header); ok {
			var err error
			if v, err = parseMicroversion(s); err != nil {
				return nil, err
			}
		}
		hdr := w.Header()
		hdr.Set("OpenStack-API-Version", "compute "+v.String())
		hdr.Set("X-OpenStack-Nova-API-Version", v.String())
		hdr.Add("Vary", "OpenStack-API-Version")
		hdr.Add("Vary", "X-OpenStack-Nova-API-Version")
		if v.Less(MinVersion) || MaxVersion.Less(v) {
			return nil, &apierr.Error{Kind: apierr.NotAcceptable, Message: fmt.Sprintf(
				"Version %s is not supported by the API. Minimum is %s and maximum is %s.", v, MinVersion, MaxVersion)}
		}
		return r.WithContext(context.WithValue(r.Context(), mvKey{}, v)), nil
	})
}

func (a *API) versionDoc(r *http.Request) schema.Version {
	base := a.baseURL(r)
	v := schema.Version{
		ID: "v2.1", Status: "CURRENT", Version: MaxVersion.String(), MinVersion: MinVersion.String(),
		Updated: versionUpdated,
		Links: []schema.Link{
			{Href: base + "/v2.1/", Rel: "self"},
			{Href: "http://docs.openstack.org/", Rel: "describedby", Type: "text/html"},
		},
	}
	v.MediaTypes = append(v.MediaTypes, struct {
		Base string `json:"base"`
		Type string `json:"type"`
	}{"application/json", "application/vnd.openstack.compute+json;version=2.1"})
	return v
}

// versions is GET /: the list of API versions (Nova lists v2.0 too; Berth
// serves only v2.1, so only v2.1 is listed).
func (a *API) versions(w http.ResponseWriter, r *http.Request) error {
	v := a.versionDoc(r)
	v.Links = v.Links[:1]
	v.MediaTypes = nil
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"versions": []schema.Version{v}})
	return nil
}

// version is GET /v2.1/.
func (a *API) version(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"version": a.versionDoc(r)})
	return nil
}

// Microversions that change routes.
var (
	v226 = Microversion{2, 26}
	v236 = Microversion{2, 36}
	v253 = Microversion{2, 53}
	v257 = Microversion{2, 57}
	v264 = Microversion{2, 64}
)
