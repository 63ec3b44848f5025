// Package network is region's Neutron v2.0-compatible network API:
// networks, subnets, ports, security groups and their rules, with
// Neutron's fault body and project scoping (another project's resources
// are 404; shared networks are visible to all).
package network

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"

	"github.com/gorilla/mux"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/internal/keystone"
	"berth/internal/metrics"
	"berth/internal/pgdb"
	"berth/region/store"
)

// API is the network API.
type API struct {
	store     *store.Store
	validator *keystone.Validator
	log       *slog.Logger
}

// New returns the network API handler.
func New(st *store.Store, v *keystone.Validator, log *slog.Logger) http.Handler {
	a := &API{store: st, validator: v, log: log}
	r := mux.NewRouter()
	r.Use(metrics.RouteTemplate) // /metrics labels requests by route template
	r.NotFoundHandler = a.wrap("", func(w http.ResponseWriter, r *http.Request) error {
		return apierr.NotFoundf("The resource could not be found.")
	})
	r.MethodNotAllowedHandler = a.wrap("", func(w http.ResponseWriter, r *http.Request) error {
		return &apierr.Error{Kind: apierr.Invalid, Status: http.StatusMethodNotAllowed, Message: "The method is not allowed for this resource."}
	})
	r.Handle("/", a.wrap("", a.versions)).Methods(http.MethodGet)
	r.Handle("/v2.0", a.wrap("", a.auth(a.v2root))).Methods(http.MethodGet)
	r.Handle("/v2.0/", a.wrap("", a.auth(a.v2root))).Methods(http.MethodGet)
	r.Handle("/v2.0/extensions", a.wrap("", a.auth(a.extensions))).Methods(http.MethodGet)
	r.Handle("/v2.0/extensions/{alias}", a.wrap("", a.auth(a.extension))).Methods(http.MethodGet)

	for _, res := range []struct {
		path, notFound               string
		list, create, show, upd, del handlerFunc
	}{
		{"networks", "NetworkNotFound", a.listNetworks, a.createNetwork, a.showNetwork, a.updateNetwork, a.deleteNetwork},
		{"subnets", "SubnetNotFound", a.listSubnets, a.createSubnet, a.showSubnet, a.updateSubnet, a.deleteSubnet},
		{"ports", "PortNotFound", a.listPorts, a.createPort, a.showPort, a.updatePort, a.deletePort},
		{"security-groups", "SecurityGroupNotFound", a.listGroups, a.createGroup, a.showGroup, a.updateGroup, a.deleteGroup},
		{"security-group-rules", "SecurityGroupRuleNotFound", a.listRules, a.createRule, a.showRule, nil, a.deleteRule},
	} {
		base := "/v2.0/" + res.path
		r.Handle(base, a.wrap(res.notFound, a.auth(res.list))).Methods(http.MethodGet)
		r.Handle(base, a.wrap(res.notFound, a.auth(a.write(a.bulk(res.path, res.create))))).Methods(http.MethodPost)
		r.Handle(base+"/{id}", a.wrap(res.notFound, a.auth(res.show))).Methods(http.MethodGet)
		if res.upd != nil {
			r.Handle(base+"/{id}", a.wrap(res.notFound, a.auth(a.write(res.upd)))).Methods(http.MethodPut)
		}
		r.Handle(base+"/{id}", a.wrap(res.notFound, a.auth(a.write(res.del)))).Methods(http.MethodDelete)
	}
	var h http.Handler = r
	h = httpx.AccessLog(log)(h)
	h = httpx.Recover(log, func(w http.ResponseWriter, err error) { apierr.RenderNeutron(w, err, "") })(h)
	return httpx.RequestIDs(false)(h)
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// wrap renders errors as Neutron faults; notFound names the exception a
// 404 on this resource is (e.g. NetworkNotFound).
func (a *API) wrap(notFound string, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keystone.StripIdentityHeaders(r.Header)
		err := h(w, r)
		if msg, ok := store.RevisionConflict(err); ok {
			apierr.RenderNeutron(w, &apierr.Error{Kind: apierr.Conflict, Status: http.StatusPreconditionFailed, Message: msg},
				"RevisionNumberConstraintFailed")
			return
		}
		err = pgdb.Classify(err)
		if err == nil {
			return
		}
		e := apierr.As(err)
		if e.Kind == apierr.Internal {
			a.log.Error("network api", "path", r.URL.Path, "err", err, "request_id", httpx.RequestID(r.Context()))
		}
		if e.Kind == apierr.Unauthenticated {
			w.Header().Set("WWW-Authenticate", `Keystone uri="`+strings.TrimSuffix(a.validator.BaseURL(), "/v3")+`"`)
		}
		typ := map[apierr.Kind]string{apierr.Invalid: "HTTPBadRequest", apierr.Conflict: "Conflict",
			apierr.Forbidden: "PolicyNotAuthorized"}[e.Kind]
		if e.Kind == apierr.NotFound && mux.Vars(r)["id"] != "" {
			typ = notFound
		}
		apierr.RenderNeutron(w, err, typ)
	})
}

func (a *API) auth(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id, err := a.validator.Validate(r.Context(), r.Header.Get("X-Auth-Token"))
		if err != nil {
			return err
		}
		return h(w, r.WithContext(keystone.WithIdentity(r.Context(), id)))
	}
}

func (a *API) write(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if !identity(r).CanWrite() {
			return apierr.Forbiddenf("rule:%s_%s is disallowed by policy", strings.ToLower(r.Method), "resource")
		}
		return h(w, r)
	}
}

func identity(r *http.Request) *keystone.Identity {
	id, _ := keystone.FromContext(r.Context())
	if id == nil {
		return &keystone.Identity{}
	}
	return id
}

func scope(r *http.Request) store.Scope {
	id := identity(r)
	return store.Scope{ProjectID: id.ProjectID, AllProjects: id.IsAdmin()}
}

// decode reads {"<key>": {...}} strictly.
func decode(w http.ResponseWriter, r *http.Request, key string, v any) error {
	var env map[string]any
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, false, &env); err != nil {
		return err
	}
	inner, ok := env[key]
	if !ok || len(env) != 1 {
		return apierr.Invalidf("Resource body required: '%s'.", key)
	}
	return remarshal(inner, v)
}

func (a *API) versions(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"versions": []map[string]any{{
		"id": "v2.0", "status": "CURRENT",
		"links": []map[string]string{{"href": "http://" + r.Host + "/v2.0/", "rel": "self"}},
	}}})
	return nil
}

func (a *API) v2root(w http.ResponseWriter, r *http.Request) error {
	var res []map[string]any
	for _, n := range []string{"network", "subnet", "port", "security_group", "security_group_rule"} {
		coll := n + "s"
		path := strings.ReplaceAll(coll, "_", "-")
		res = append(res, map[string]any{"name": n, "collection": coll,
			"links": []map[string]string{{"href": "http://" + r.Host + "/v2.0/" + path, "rel": "self"}}})
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"resources": res})
	return nil
}

// extensionList is what Berth implements of Neutron's extensions.
var extensionList = []map[string]string{
	{"alias": "security-group", "name": "security-group", "description": "The security groups extension."},
	{"alias": "port-security", "name": "Port Security", "description": "Provides port security"},
	{"alias": "binding", "name": "Port Binding", "description": "Expose port bindings of a virtual port to external application"},
	{"alias": "net-mtu", "name": "Network MTU", "description": "Provides MTU attribute for a network resource."},
	{"alias": "project-id", "name": "project_id field enabled", "description": "Extension that indicates that project_id field is enabled."},
	{"alias": "standard-attr-description", "name": "standard-attr-description", "description": "Extension to add descriptions to standard attributes"},
	{"alias": "standard-attr-timestamp", "name": "Resource timestamps", "description": "Adds created_at and updated_at fields to all Neutron resources that have Neutron standard attributes."},
}

func (a *API) extensions(w http.ResponseWriter, r *http.Request) error {
	out := []map[string]any{}
	for _, e := range extensionList {
		out = append(out, map[string]any{"alias": e["alias"], "name": e["name"], "description": e["description"],
			"links": []any{}, "updated": "2013-01-01T10:00:00-00:00"})
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"extensions": out})
	return nil
}

func (a *API) extension(w http.ResponseWriter, r *http.Request) error {
	alias := mux.Vars(r)["alias"]
	for _, e := range extensionList {
		if e["alias"] == alias {
			httpx.WriteJSON(w, http.StatusOK, map[string]any{"extension": map[string]any{"alias": alias,
				"name": e["name"], "description": e["description"], "links": []any{}, "updated": "2013-01-01T10:00:00-00:00"}})
			return nil
		}
	}
	return apierr.NotFoundf("Extension with alias %s does not exist", alias)
}

// filterList keeps the items whose top-level fields match every query
// parameter that names one (Neutron accepts any attribute as a filter;
// fields, sort and paging parameters are not filters).
func filterList(r *http.Request, items []map[string]any) []map[string]any {
	q := r.URL.Query()
	out := items[:0]
next:
	for _, it := range items {
		for k, vs := range q {
			switch k {
			case "fields", "sort_key", "sort_dir", "limit", "marker", "page_reverse":
				continue
			}
			if k == "fixed_ips" {
				if !fixedIPsMatch(it[k], vs) {
					continue next
				}
				continue
			}
			v, ok := it[k]
			if !ok {
				continue
			}
			match := false
			for _, want := range vs {
				if fmt.Sprint(v) == want || (fmt.Sprint(v) == "true" && strings.EqualFold(want, "true")) ||
					(fmt.Sprint(v) == "false" && strings.EqualFold(want, "false")) {
					match = true
				}
			}
			if !match {
				continue next
			}
		}
		out = append(out, it)
	}
	return out
}

// bulk lets POST /<collection> take {"<plural>": [...]} (Neutron's bulk
// create): each item is created in turn through the single-item handler;
// a failure stops the batch and the items created so far are reported in
// the error message (Neutron rolls back; Berth does not yet).
func (a *API) bulk(collection string, create handlerFunc) handlerFunc {
	plural := strings.ReplaceAll(collection, "-", "_")
	singular := strings.TrimSuffix(plural, "s")
	return func(w http.ResponseWriter, r *http.Request) error {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, httpx.MaxBodyBytes))
		if err != nil {
			return &apierr.Error{Kind: apierr.TooLarge, Message: "Request is too large."}
		}
		var env map[string]json.RawMessage
		if json.Unmarshal(body, &env) != nil || env[plural] == nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
			return create(w, r)
		}
		var items []json.RawMessage
		if err := json.Unmarshal(env[plural], &items); err != nil || len(items) == 0 || len(items) > 100 {
			return apierr.Invalidf("Invalid input: %s must be a list of 1 to 100 items.", plural)
		}
		var out []any
		for _, it := range items {
			one, _ := json.Marshal(map[string]json.RawMessage{singular: it})
			rec := httptest.NewRecorder()
			r2 := r.Clone(r.Context())
			r2.Body = io.NopCloser(bytes.NewReader(one))
			r2.ContentLength = int64(len(one))
			if err := create(rec, r2); err != nil {
				return err
			}
			var got map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				return err
			}
			out = append(out, got[singular])
		}
		httpx.WriteJSON(w, http.StatusCreated, map[string]any{plural: out})
		return nil
	}
}

// ifMatch reads Neutron's conditional update header, "If-Match:
// revision_number=N": the update then applies only while the resource is
// still at revision N (else 412 RevisionNumberConstraintFailed).
func ifMatch(r *http.Request) (context.Context, error) {
	h := strings.TrimSpace(r.Header.Get("If-Match"))
	if h == "" {
		return r.Context(), nil
	}
	v, ok := strings.CutPrefix(h, "revision_number=")
	n, err := strconv.ParseInt(v, 10, 64)
	if !ok || err != nil || n < 0 {
		return nil, apierr.Invalidf("If-Match header must be revision_number=<number>, got %q.", h)
	}
	return store.WithIfRevision(r.Context(), n), nil
}

// fixedIPsMatch is Neutron's fixed_ips filter: every "subnet_id=X" or
// "ip_address=Y" asked for must hold for one of the port's fixed IPs.
func fixedIPsMatch(v any, wants []string) bool {
	ips, ok := v.([]map[string]string)
	if !ok {
		return false
	}
	for _, want := range wants {
		key, val, _ := strings.Cut(want, "=")
		found := false
		for _, ip := range ips {
			found = found || ip[key] == val
		}
		if !found {
			return false
		}
	}
	return true
}
