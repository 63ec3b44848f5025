// Package registry is imagesvc's Docker registry: the OCI distribution
// (Docker registry HTTP API v2) read/write API, so `docker push` and
// `docker pull` work against imagesvc with Keystone credentials.
//
// Repository names are "<project>/<repository>", the first component
// naming the Keystone project (by name or id) whose images the repository
// holds. A pushed image becomes a Glance image of that project
// (container_format docker, named "<repository>:<tag>") made of the same
// layer blobs, and an image uploaded through Glance as a docker archive
// can be pulled: "<project>/<repo>:<tag>" resolves to the registry tag of
// that name, else to the project's newest docker image named
// "<repo>:<tag>" (or "<repo>" for latest), and the tag may also be an
// image id. Layers are content-addressed and shared, so a pull of an
// image whose base the daemon already has moves only the new layers.
package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"berth/imagesvc/content"
	"berth/imagesvc/store"
	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/internal/keystone"
)

// DefaultMaxImageSize caps a blob and a pushed image (1 TiB).
const DefaultMaxImageSize = 1 << 40

// uploadIdle is how long an upload may sit without a request before it is
// dropped.
const uploadIdle = time.Hour

// Config is what the registry needs.
type Config struct {
	Store   *store.Store
	Content *content.Store
	Auth    Authenticator
	// PublicURL is the base URL clients reach imagesvc at ("" uses the
	// request's host); used in the Basic realm only.
	PublicURL string
	// MaxImageSize caps a blob and a pushed image, in bytes.
	MaxImageSize int64
	Logger       *slog.Logger
}

// Registry serves the registry API.
type Registry struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	uploads map[string]*upload

	stats Stats
}

// Stats count what the registry moved, for measurements and tests.
type Stats struct {
	// BlobBytesServed counts blob bytes sent (GET blobs).
	BlobBytesServed atomic.Int64
	// BlobBytesReceived counts blob bytes received (uploads).
	BlobBytesReceived atomic.Int64
	// BlobsServed counts blob GETs answered 200 or 206.
	BlobsServed atomic.Int64
}

// New returns a registry for cfg.
func New(cfg Config) *Registry {
	if cfg.MaxImageSize <= 0 {
		cfg.MaxImageSize = DefaultMaxImageSize
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Registry{cfg: cfg, log: log.With("component", "imagesvc-registry"), uploads: map[string]*upload{}}
}

// Stats returns the registry's counters.
func (g *Registry) Stats() *Stats { return &g.stats }

// Close drops every upload in flight.
func (g *Registry) Close() {
	g.mu.Lock()
	all := g.uploads
	g.uploads = map[string]*upload{}
	g.mu.Unlock()
	for _, u := range all {
		u.discard()
	}
}

// ExpireUploads drops uploads idle for longer than an hour.
func (g *Registry) ExpireUploads() {
	var idle []*upload
	g.mu.Lock()
	for id, u := range g.uploads {
		if u.idleSince() > uploadIdle {
			idle = append(idle, u)
			delete(g.uploads, id)
		}
	}
	g.mu.Unlock()
	for _, u := range idle {
		u.discard()
		g.log.Info("dropped an idle blob upload", "upload", u.id, "repository", u.name)
	}
}

// Handler is the registry API with its middleware.
func (g *Registry) Handler() http.Handler {
	var h http.Handler = http.HandlerFunc(g.serve)
	h = httpx.Recover(g.log, renderError)(h)
	h = httpx.AccessLog(g.log)(h)
	h = httpx.RequestIDs(false)(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keystone.StripIdentityHeaders(r.Header)
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		h.ServeHTTP(w, r)
	})
}

// regError is a registry error: an HTTP status and an OCI error code.
type regError struct {
	status  int
	code    string
	message string
	detail  any
	err     error // cause, for logs
}

func (e *regError) Error() string {
	if e.err != nil {
		return e.code + ": " + e.message + ": " + e.err.Error()
	}
	return e.code + ": " + e.message
}

func (e *regError) Unwrap() error { return e.err }

func newErr(status int, code, format string, args ...any) *regError {
	msg := format
	if len(args) > 0 {
		msg = fmt.Sprintf(format, args...)
	}
	return &regError{status: status, code: code, message: msg}
}

// asRegError maps an error to a registry error: apierr kinds keep their
// status with a generic code, anything else is a 500.
func asRegError(err error) *regError {
	var re *regError
	if errors.As(err, &re) {
		return re
	}
	e := apierr.As(err)
	status := e.HTTPStatus()
	code := "UNKNOWN"
	switch e.Kind {
	case apierr.Unauthenticated:
		code = "UNAUTHORIZED"
	case apierr.Forbidden:
		code = "DENIED"
	case apierr.NotFound:
		code = "NAME_UNKNOWN"
	case apierr.Invalid:
		code = "UNSUPPORTED"
	case apierr.TooLarge:
		code = "SIZE_INVALID"
	case apierr.Conflict:
		code = "UNSUPPORTED"
	}
	msg := e.Message
	if e.Kind == apierr.Internal {
		msg = "internal error"
	}
	return &regError{status: status, code: code, message: msg, err: err}
}

// renderError writes err as the OCI error body.
func renderError(w http.ResponseWriter, err error) {
	e := asRegError(err)
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="Berth registry (Keystone credentials)"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Del("Content-Length") // never a stale length set before the failure
	w.WriteHeader(e.status)
	body := map[string]any{"errors": []map[string]any{{"code": e.code, "message": e.message, "detail": e.detail}}}
	_ = json.NewEncoder(w).Encode(body)
}

// fail logs err once (5xx at Error, the rest at Debug) and renders it.
func (g *Registry) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := asRegError(err)
	level := slog.LevelDebug
	if e.status >= 500 {
		level = slog.LevelError
	}
	g.log.Log(r.Context(), level, "registry request failed", "method", r.Method, "path", r.URL.Path,
		"status", e.status, "err", err, "request_id", httpx.RequestID(r.Context()))
	renderError(w, err)
}

func (g *Registry) serve(w http.ResponseWriter, r *http.Request) {
	if err := g.dispatch(w, r); err != nil {
		g.fail(w, r, err)
	}
}

// request is one authenticated repository request.
type request struct {
	route
	caller *Caller
	// project is the repository's project part as written; owner the id
	// of that project (the owner of the repository's images).
	project, repo, owner string
}

func (g *Registry) dispatch(w http.ResponseWriter, r *http.Request) error {
	rt, ok := parse(r.Method, r.URL.Path)
	if !ok {
		return newErr(http.StatusNotFound, "NAME_UNKNOWN", "not a registry path")
	}
	switch rt.kind {
	case kindBase:
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			return methodNotAllowed()
		}
		if _, err := g.cfg.Auth.Authenticate(r.Context(), r, ""); err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write([]byte("{}\n"))
		}
		return nil
	case kindCatalog:
		return g.catalog(w, r)
	}
	project, repo, why := splitName(rt.name)
	if why != "" {
		return &regError{status: http.StatusBadRequest, code: "NAME_INVALID", message: why,
			detail: map[string]string{"name": rt.name}}
	}
	caller, err := g.cfg.Auth.Authenticate(r.Context(), r, project)
	if err != nil {
		return err
	}
	if caller.Identity != nil && caller.Identity.ProjectID != "" {
		_ = g.cfg.Store.NoteProject(r.Context(), store.Project{ID: caller.Identity.ProjectID,
			Name: caller.Identity.ProjectName, DomainID: caller.Identity.DomainID})
	}
	req := &request{route: rt, caller: caller, project: project, repo: repo}
	if id := caller.Identity; id != nil && id.ProjectID != "" && (id.ProjectID == project || eqFold(id.ProjectName, project)) {
		req.owner = id.ProjectID
	} else {
		// A project no token has named yet is taken as a project id.
		p, err := g.cfg.Store.FindProject(r.Context(), project)
		switch {
		case err == nil:
			req.owner = p.ID
		case apierr.Is(err, apierr.NotFound):
			req.owner = project
		default:
			return err
		}
	}
	switch rt.kind {
	case kindTags:
		return g.tags(w, r, req)
	case kindManifest:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			return g.getManifest(w, r, req)
		case http.MethodPut:
			return g.putManifest(w, r, req)
		case http.MethodDelete:
			return g.deleteManifest(w, r, req)
		}
	case kindBlob:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			return g.getBlob(w, r, req)
		case http.MethodDelete:
			return newErr(http.StatusMethodNotAllowed, "UNSUPPORTED",
				"blobs are deleted by garbage collection once no image uses them")
		}
	case kindUploadStart:
		if r.Method == http.MethodPost {
			return g.startUpload(w, r, req)
		}
	case kindUpload:
		switch r.Method {
		case http.MethodGet:
			return g.uploadStatus(w, r, req)
		case http.MethodPatch:
			return g.patchUpload(w, r, req)
		case http.MethodPut:
			return g.finishUpload(w, r, req)
		case http.MethodDelete:
			return g.cancelUpload(w, r, req)
		}
	case kindReferrers:
		return newErr(http.StatusNotFound, "UNSUPPORTED", "the referrers API is not supported")
	}
	return methodNotAllowed()
}

func methodNotAllowed() error {
	return newErr(http.StatusMethodNotAllowed, "UNSUPPORTED", "the operation is unsupported")
}

// canPush is nil if the caller may push to the request's repository: its
// token is scoped to the repository's project and it may write there.
func (req *request) canPush() error {
	id := req.caller.Identity
	if req.caller.Agent || id == nil || id.ProjectID == "" || id.ProjectID != req.owner {
		return newErr(http.StatusForbidden, "DENIED",
			"requested access to the resource is denied: push to %s/ needs credentials of a member of project %s", req.project, req.project)
	}
	if !id.CanWrite() {
		return newErr(http.StatusForbidden, "DENIED", "requested access to the resource is denied: the member role is needed to push")
	}
	return nil
}

func eqFold(a, b string) bool { return a != "" && strings.EqualFold(a, b) }

func setLength(w http.ResponseWriter, n int64) {
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
}
