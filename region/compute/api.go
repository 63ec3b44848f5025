// Package compute is region's Nova v2.1-compatible compute API: version
// discovery, microversions, flavors, servers and server actions, over the
// store, the scheduler and imagesvc. Handlers return errors; one wrapper
// renders them as Nova faults and logs the internal ones once.
package compute

import (
	"context"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/internal/keystone"
	"berth/internal/pgdb"
	"berth/region/agentclient"
	"berth/region/imageclient"
	"berth/region/scheduler"
	"berth/region/store"
)

// Config wires the API to its dependencies.
type Config struct {
	Store     *store.Store
	Validator *keystone.Validator
	Images    *imageclient.Client
	Agents    *agentclient.Client
	Log       *slog.Logger
	// DefaultNetworkID is the network servers join when they ask for none.
	DefaultNetworkID string
	// HostGrace is how long a host may stay silent and still get new sets.
	HostGrace time.Duration
	// PublicURL, when set, is the base of links (else the request's host).
	PublicURL string
	// RenderCacheBytes bounds the rendered servers kept for lists and
	// shows (rendercache.go): 0 is 64 MiB, below 0 keeps none.
	RenderCacheBytes int
}

// API is the compute API.
type API struct {
	cfg         Config
	log         *slog.Logger
	actionTable map[string]actionFunc
	hosts       hostStatuses
	renders     *renderCache
	// pages admits the detailed lists being built (two per CPU): the
	// rest wait their turn instead of slicing the CPU among all of them.
	// With 32 clients on 2 cores each page is built sooner and the tail
	// shortens (scenario 4: p99 92-108 ms with 4 at once, 150-190 ms with
	// no bound); it also bounds the page buffers held.
	pages chan struct{}
}

// New returns the compute API handler. extra, when non-nil, is called to
// mount more routes (the agents' internal API) outside Keystone auth.
func New(cfg Config, extra func(r *mux.Router)) http.Handler {
	a := &API{cfg: cfg, log: cfg.Log}
	if cfg.RenderCacheBytes == 0 {
		cfg.RenderCacheBytes = defaultRenderCacheBytes
	}
	a.renders = newRenderCache(cfg.RenderCacheBytes, renderCacheMaxAge, time.Now)
	a.pages = make(chan struct{}, 2*runtime.GOMAXPROCS(0))
	a.actionTable = a.actions()
	root := mux.NewRouter()
	root.NotFoundHandler = a.wrap(func(w http.ResponseWriter, r *http.Request) error {
		return apierr.NotFoundf("The resource could not be found.")
	})
	root.MethodNotAllowedHandler = a.wrap(func(w http.ResponseWriter, r *http.Request) error {
		return &apierr.Error{Kind: apierr.Invalid, Status: http.StatusMethodNotAllowed,
			Message: "The method " + r.Method + " is not allowed for this resource."}
	})
	if extra != nil {
		extra(root)
	}

	// Version discovery needs no token, as in Nova.
	root.Handle("/", a.wrap(a.versions)).Methods(http.MethodGet)
	root.Handle("/v2.1", a.wrap(a.version)).Methods(http.MethodGet)
	root.Handle("/v2.1/", a.wrap(a.version)).Methods(http.MethodGet)
	// The serial console's websocket authenticates with its own token.
	root.Handle("/berth-console/", a.wrap(a.consoleProxy)).Methods(http.MethodGet)

	v := root.PathPrefix("/v2.1").Subrouter()
	// Unknown paths under /v2.1 still authenticate and negotiate first, as
	// Nova does: no token is 401, an unsupported version 406, then 404.
	v.NotFoundHandler = a.authenticate(a.microversion(root.NotFoundHandler))
	v.MethodNotAllowedHandler = root.MethodNotAllowedHandler
	v.Use(a.authenticate, a.microversion)

	v.Handle("/flavors", a.wrap(a.listFlavors(false))).Methods(http.MethodGet)
	v.Handle("/flavors/detail", a.wrap(a.listFlavors(true))).Methods(http.MethodGet)
	v.Handle("/flavors/{id}", a.wrap(a.showFlavor)).Methods(http.MethodGet)
	v.Handle("/flavors", a.wrap(a.adminOnly(a.createFlavor))).Methods(http.MethodPost)
	v.Handle("/flavors/{id}", a.wrap(a.adminOnly(a.deleteFlavor))).Methods(http.MethodDelete)
	v.Handle("/flavors/{id}", a.wrap(a.adminOnly(a.updateFlavor))).Methods(http.MethodPut)
	v.Handle("/flavors/{id}/action", a.wrap(a.adminOnly(a.flavorAction))).Methods(http.MethodPost)
	v.Handle("/flavors/{id}/os-flavor-access", a.wrap(a.adminOnly(a.flavorAccessList))).Methods(http.MethodGet)
	v.Handle("/flavors/{id}/os-extra_specs", a.wrap(a.getExtraSpecs)).Methods(http.MethodGet)
	v.Handle("/flavors/{id}/os-extra_specs", a.wrap(a.adminOnly(a.setExtraSpecs))).Methods(http.MethodPost)
	v.Handle("/flavors/{id}/os-extra_specs/{key}", a.wrap(a.getExtraSpecs)).Methods(http.MethodGet)
	v.Handle("/flavors/{id}/os-extra_specs/{key}", a.wrap(a.adminOnly(a.setExtraSpec))).Methods(http.MethodPut)
	v.Handle("/flavors/{id}/os-extra_specs/{key}", a.wrap(a.adminOnly(a.deleteExtraSpec))).Methods(http.MethodDelete)

	v.Handle("/servers", a.wrap(a.listServers(false))).Methods(http.MethodGet)
	v.Handle("/servers", a.wrap(a.write(a.createServer))).Methods(http.MethodPost)
	v.Handle("/servers/detail", a.wrap(a.listServers(true))).Methods(http.MethodGet)
	v.Handle("/servers/{id}", a.wrap(a.showServer)).Methods(http.MethodGet)
	v.Handle("/servers/{id}", a.wrap(a.write(a.deleteServer))).Methods(http.MethodDelete)
	v.Handle("/servers/{id}", a.wrap(a.write(a.updateServer))).Methods(http.MethodPut)
	v.Handle("/servers/{id}/metadata", a.wrap(a.getMetadata)).Methods(http.MethodGet)
	v.Handle("/servers/{id}/metadata", a.wrap(a.write(a.setMetadata(true)))).Methods(http.MethodPut)
	v.Handle("/servers/{id}/metadata", a.wrap(a.write(a.setMetadata(false)))).Methods(http.MethodPost)
	v.Handle("/servers/{id}/metadata/{key}", a.wrap(a.getMetadata)).Methods(http.MethodGet)
	v.Handle("/servers/{id}/metadata/{key}", a.wrap(a.write(a.setMetadataItem))).Methods(http.MethodPut)
	v.Handle("/servers/{id}/metadata/{key}", a.wrap(a.write(a.deleteMetadataItem))).Methods(http.MethodDelete)
	v.Handle("/servers/{id}/action", a.wrap(a.write(a.serverAction))).Methods(http.MethodPost)
	v.Handle("/servers/{id}/ips", a.wrap(a.serverIPs)).Methods(http.MethodGet)
	v.Handle("/servers/{id}/ips/{network}", a.wrap(a.serverIPs)).Methods(http.MethodGet)
	v.Handle("/servers/{id}/os-interface", a.wrap(a.interfaces)).Methods(http.MethodGet)
	v.Handle("/servers/{id}/os-interface/{port}", a.wrap(a.interfaces)).Methods(http.MethodGet)
	v.Handle("/servers/{id}/berth-logs", a.wrap(a.logs)).Methods(http.MethodGet)
	v.Handle("/servers/{id}/os-instance-actions", a.wrap(a.listInstanceActions)).Methods(http.MethodGet)
	v.Handle("/servers/{id}/os-instance-actions/{req}", a.wrap(a.showInstanceAction)).Methods(http.MethodGet)
	v.Handle("/servers/{id}/tags", a.wrap(since(v226, a.listTags))).Methods(http.MethodGet)
	v.Handle("/servers/{id}/tags", a.wrap(since(v226, a.write(a.replaceTags)))).Methods(http.MethodPut)
	v.Handle("/servers/{id}/tags", a.wrap(since(v226, a.write(a.deleteTags)))).Methods(http.MethodDelete)
	v.Handle("/servers/{id}/tags/{tag}", a.wrap(since(v226, a.checkTag))).Methods(http.MethodGet)
	v.Handle("/servers/{id}/tags/{tag}", a.wrap(since(v226, a.write(a.addTag)))).Methods(http.MethodPut)
	v.Handle("/servers/{id}/tags/{tag}", a.wrap(since(v226, a.write(a.deleteTags)))).Methods(http.MethodDelete)

	v.Handle("/os-keypairs", a.wrap(a.listKeypairs)).Methods(http.MethodGet)
	v.Handle("/os-keypairs", a.wrap(a.write(a.createKeypair))).Methods(http.MethodPost)
	v.Handle("/os-keypairs/{name}", a.wrap(a.showKeypair)).Methods(http.MethodGet)
	v.Handle("/os-keypairs/{name}", a.wrap(a.write(a.deleteKeypair))).Methods(http.MethodDelete)

	v.Handle("/os-security-groups", a.wrap(until(v236, a.listNovaGroups))).Methods(http.MethodGet)
	v.Handle("/os-security-groups", a.wrap(until(v236, a.write(a.createNovaGroup)))).Methods(http.MethodPost)
	v.Handle("/os-security-groups/{id}", a.wrap(until(v236, a.showNovaGroup))).Methods(http.MethodGet)
	v.Handle("/os-security-groups/{id}", a.wrap(until(v236, a.write(a.deleteNovaGroup)))).Methods(http.MethodDelete)
	v.Handle("/os-security-groups/{id}", a.wrap(until(v236, a.write(a.updateNovaGroup)))).Methods(http.MethodPut)
	v.Handle("/os-security-group-rules", a.wrap(until(v236, a.write(a.createNovaRule)))).Methods(http.MethodPost)
	v.Handle("/os-security-group-rules/{id}", a.wrap(until(v236, a.write(a.deleteNovaRule)))).Methods(http.MethodDelete)
	v.Handle("/servers/{id}/os-security-groups", a.wrap(a.serverGroups)).Methods(http.MethodGet)
	v.Handle("/servers/{id}/diagnostics", a.wrap(a.adminOnly(a.diagnostics))).Methods(http.MethodGet)

	v.Handle("/os-server-groups", a.wrap(a.listServerGroups)).Methods(http.MethodGet)
	v.Handle("/os-server-groups", a.wrap(a.write(a.createServerGroup))).Methods(http.MethodPost)
	v.Handle("/os-server-groups/{id}", a.wrap(a.showServerGroup)).Methods(http.MethodGet)
	v.Handle("/os-server-groups/{id}", a.wrap(a.write(a.deleteServerGroup))).Methods(http.MethodDelete)

	v.Handle("/limits", a.wrap(a.limits)).Methods(http.MethodGet)
	v.Handle("/os-quota-sets/{project}", a.wrap(a.showQuotas(false, false))).Methods(http.MethodGet)
	v.Handle("/os-quota-sets/{project}", a.wrap(a.updateQuotas)).Methods(http.MethodPut)
	v.Handle("/os-quota-sets/{project}", a.wrap(a.deleteQuotas)).Methods(http.MethodDelete)
	v.Handle("/os-quota-sets/{project}/detail", a.wrap(a.showQuotas(true, false))).Methods(http.MethodGet)
	v.Handle("/os-quota-sets/{project}/defaults", a.wrap(a.showQuotas(false, true))).Methods(http.MethodGet)

	v.Handle("/os-hypervisors", a.wrap(a.listHypervisors(false))).Methods(http.MethodGet)
	v.Handle("/os-hypervisors/detail", a.wrap(a.listHypervisors(true))).Methods(http.MethodGet)
	v.Handle("/os-hypervisors/statistics", a.wrap(a.hypervisorStatistics)).Methods(http.MethodGet)
	v.Handle("/os-hypervisors/{id}", a.wrap(a.showHypervisor)).Methods(http.MethodGet)
	v.Handle("/os-services", a.wrap(a.services)).Methods(http.MethodGet)
	v.Handle("/os-services/{action}", a.wrap(a.updateService)).Methods(http.MethodPut)
	v.Handle("/servers/{id}/remote-consoles", a.wrap(a.write(a.remoteConsole))).Methods(http.MethodPost)
	v.Handle("/os-availability-zone", a.wrap(a.availabilityZones(false))).Methods(http.MethodGet)
	v.Handle("/os-availability-zone/detail", a.wrap(a.availabilityZones(true))).Methods(http.MethodGet)
	v.Handle("/berth-sets", a.wrap(a.listSets)).Methods(http.MethodGet)
	v.Handle("/berth-sets", a.wrap(a.write(a.createSet))).Methods(http.MethodPost)
	v.Handle("/berth-sets/{id}", a.wrap(a.showSet)).Methods(http.MethodGet)
	v.Handle("/berth-sets/{id}", a.wrap(a.write(a.deleteServer))).Methods(http.MethodDelete)
	v.Handle("/berth-hosts", a.wrap(a.berthHosts)).Methods(http.MethodGet)
	v.Handle("/berth-hosts/{name}", a.wrap(a.berthHosts)).Methods(http.MethodGet)

	var h http.Handler = root
	h = stripIdentity(h)
	h = httpx.AccessLog(a.log)(h)
	h = httpx.Recover(a.log, apierr.RenderNova)(h)
	h = httpx.RequestIDs(true)(h)
	return h
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// wrap renders a handler's error as a Nova fault; internal errors are
// logged with the request id and shown as a generic computeFault.
func (a *API) wrap(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := pgdb.Classify(h(w, r))
		if err == nil {
			return
		}
		e := apierr.As(err)
		if e.Kind == apierr.Internal {
			a.log.Error("compute api", "method", r.Method, "path", r.URL.Path, "err", err,
				"request_id", httpx.RequestID(r.Context()))
		}
		if e.Kind == apierr.Unauthenticated {
			w.Header().Set("WWW-Authenticate", `Keystone uri="`+a.keystoneURI()+`"`)
		}
		apierr.RenderNova(w, err)
	})
}

func (a *API) keystoneURI() string {
	if a.cfg.Validator == nil {
		return ""
	}
	return strings.TrimSuffix(a.cfg.Validator.BaseURL(), "/v3")
}

func stripIdentity(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keystone.StripIdentityHeaders(r.Header)
		next.ServeHTTP(w, r)
	})
}

// authenticate validates the Keystone token and puts the identity in the
// request context.
func (a *API) authenticate(next http.Handler) http.Handler {
	return a.wrapMiddleware(next, func(w http.ResponseWriter, r *http.Request) (*http.Request, error) {
		id, err := a.cfg.Validator.Validate(r.Context(), r.Header.Get("X-Auth-Token"))
		if err != nil {
			return nil, err
		}
		return r.WithContext(keystone.WithIdentity(r.Context(), id)), nil
	})
}

func (a *API) wrapMiddleware(next http.Handler, fn func(w http.ResponseWriter, r *http.Request) (*http.Request, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var r2 *http.Request
		a.wrap(func(w http.ResponseWriter, r *http.Request) error {
			var err error
			r2, err = fn(w, r)
			return err
		}).ServeHTTP(w, r)
		if r2 != nil {
			next.ServeHTTP(w, r2)
		}
	})
}

// write guards handlers that change state: Nova's default policy lets
// member and admin do that, not reader.
func (a *API) write(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if !identity(r.Context()).CanWrite() {
			return apierr.Forbiddenf("Policy doesn't allow this operation to be performed.")
		}
		return h(w, r)
	}
}

func identity(ctx context.Context) *keystone.Identity {
	id, ok := keystone.FromContext(ctx)
	if !ok {
		return &keystone.Identity{}
	}
	return id
}

// caller is the store's view of who is acting.
func caller(r *http.Request) store.Caller {
	id := identity(r.Context())
	return store.Caller{
		Scope:     store.Scope{ProjectID: id.ProjectID, AllProjects: id.IsAdmin()},
		UserID:    id.UserID,
		ProjectID: id.ProjectID,
		RequestID: httpx.RequestID(r.Context()),
		Admin:     id.IsAdmin(),
	}
}

// baseURL is the scheme://host links are made from.
func (a *API) baseURL(r *http.Request) string {
	if a.cfg.PublicURL != "" {
		return strings.TrimRight(a.cfg.PublicURL, "/")
	}
	scheme := "http"
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// hostsSnapshot feeds the scheduler.
func (a *API) rank(ctx context.Context, req scheduler.Request) ([]string, string, error) {
	names, rejected, hosts, err := a.cfg.Store.RankHosts(ctx, req)
	if err != nil {
		return nil, "", err
	}
	reason := store.NoHostReason(rejected, hosts)
	return names, reason, nil
}
