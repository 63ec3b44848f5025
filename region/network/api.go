// Package network is region's Neutron v2.0-compatible network API. For now
// it serves version discovery and the shared default network every server
// joins; tenant networks, subnets, ports and security groups follow.
package network

import (
	"context"
	"log/slog"
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/internal/keystone"
	"berth/region/store"
)

// Store is what the network API reads.
type Store interface {
	DefaultNetwork(ctx context.Context) (*store.Network, error)
}

// API is the network API.
type API struct {
	store     Store
	validator *keystone.Validator
	log       *slog.Logger
}

// New returns the network API handler.
func New(st Store, v *keystone.Validator, log *slog.Logger) http.Handler {
	a := &API{store: st, validator: v, log: log}
	r := mux.NewRouter()
	r.NotFoundHandler = a.wrap(func(w http.ResponseWriter, r *http.Request) error {
		return apierr.NotFoundf("The resource could not be found.")
	})
	r.Handle("/", a.wrap(a.versions)).Methods(http.MethodGet)
	sub := r.PathPrefix("/v2.0").Subrouter()
	sub.NotFoundHandler = r.NotFoundHandler
	sub.Handle("/networks", a.wrap(a.auth(a.listNetworks))).Methods(http.MethodGet)
	sub.Handle("/networks/{id}", a.wrap(a.auth(a.showNetwork))).Methods(http.MethodGet)
	var h http.Handler = r
	h = httpx.AccessLog(log)(h)
	h = httpx.Recover(log, func(w http.ResponseWriter, err error) { apierr.RenderNeutron(w, err, "") })(h)
	return httpx.RequestIDs(false)(h)
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (a *API) wrap(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keystone.StripIdentityHeaders(r.Header)
		if err := h(w, r); err != nil {
			e := apierr.As(err)
			if e.Kind == apierr.Internal {
				a.log.Error("network api", "path", r.URL.Path, "err", err, "request_id", httpx.RequestID(r.Context()))
			}
			if e.Kind == apierr.Unauthenticated {
				w.Header().Set("WWW-Authenticate", `Keystone uri="`+strings.TrimSuffix(a.validator.BaseURL(), "/v3")+`"`)
			}
			typ := ""
			if e.Kind == apierr.NotFound && strings.Contains(r.URL.Path, "/networks/") {
				typ = "NetworkNotFound"
			}
			apierr.RenderNeutron(w, err, typ)
		}
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

func (a *API) versions(w http.ResponseWriter, r *http.Request) error {
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"versions": []map[string]any{{
		"id": "v2.0", "status": "CURRENT",
		"links": []map[string]string{{"href": "http://" + r.Host + "/v2.0/", "rel": "self"}},
	}}})
	return nil
}

func (a *API) view(n *store.Network) map[string]any {
	return map[string]any{
		"id": n.ID, "name": n.Name, "tenant_id": n.ProjectID, "project_id": n.ProjectID,
		"shared": n.Shared, "status": "ACTIVE", "admin_state_up": true, "subnets": []string{},
		"router:external": false, "mtu": 1450, "description": "", "tags": []string{},
		"availability_zones": []string{"nova"}, "port_security_enabled": true,
	}
}

func (a *API) listNetworks(w http.ResponseWriter, r *http.Request) error {
	n, err := a.store.DefaultNetwork(r.Context())
	if err != nil {
		return err
	}
	out := []map[string]any{}
	q := r.URL.Query()
	if (q.Get("name") == "" || q.Get("name") == n.Name) && (q.Get("id") == "" || q.Get("id") == n.ID) {
		out = append(out, a.view(n))
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"networks": out})
	return nil
}

func (a *API) showNetwork(w http.ResponseWriter, r *http.Request) error {
	n, err := a.store.DefaultNetwork(r.Context())
	if err != nil {
		return err
	}
	if id := mux.Vars(r)["id"]; id != n.ID {
		return apierr.NotFoundf("Network %s could not be found.", id)
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"network": a.view(n)})
	return nil
}
