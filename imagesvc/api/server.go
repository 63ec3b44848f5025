// Package api is imagesvc's HTTP API: the Glance v2 images API (what
// python-openstackclient, openstacksdk and gophercloud speak), Berth's
// layer extension (/v2/images/{id}/layers, /v2/layers/{chain_id}), and the
// internal endpoints host agents pull image data from and upload
// snapshots to.
//
// Handlers return errors carrying apierr kinds; one wrapper renders them in
// Glance's error body and logs them once.
package api

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"berth/imagesvc/blob"
	"berth/imagesvc/content"
	"berth/imagesvc/store"
	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/internal/keystone"
	"berth/internal/metrics"
	"berth/internal/pgdb"
	"berth/schema"
)

// DefaultMaxImageSize caps an upload (Glance's image_size_cap default, 1 TiB).
const DefaultMaxImageSize = 1 << 40

// DefaultUploadLease is how long an upload's lease runs between renewals:
// an upload whose process died is recovered (back to queued) this long
// after its last renewal.
const DefaultUploadLease = time.Minute

// Config is what the API needs.
type Config struct {
	Store *store.Store
	Blobs blob.Store
	// Content stores docker images as layer blobs (default: over Blobs
	// and Store).
	Content   *content.Store
	Validator *keystone.Validator
	// AgentToken is the shared secret host agents send in
	// X-Berth-Agent-Token on /internal calls. Empty disables them.
	AgentToken string
	// PublicURL is the base URL clients reach imagesvc at, for the version
	// document and Location headers; empty means the request's own host.
	PublicURL string
	// MaxImageSize caps an upload in bytes (0: DefaultMaxImageSize).
	MaxImageSize int64
	// UploadLease is how long an upload's lease runs between renewals
	// (0: DefaultUploadLease).
	UploadLease time.Duration
	Logger      *slog.Logger
}

// Server serves the API.
type Server struct {
	cfg Config
	log *slog.Logger

	// Background work (imports) runs under bg; Close cancels and waits.
	bg     context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a server for cfg.
func New(cfg Config) *Server {
	if cfg.MaxImageSize <= 0 {
		cfg.MaxImageSize = DefaultMaxImageSize
	}
	if cfg.UploadLease <= 0 {
		cfg.UploadLease = DefaultUploadLease
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.Content == nil && cfg.Store != nil {
		cfg.Content = content.New(cfg.Blobs, cfg.Store, log)
	}
	bg, cancel := context.WithCancel(context.Background())
	return &Server{cfg: cfg, log: log.With("component", "imagesvc-api"), bg: bg, cancel: cancel}
}

// Close stops background work (an import in flight is abandoned: its
// lease runs out and recovery puts the image back to uploading).
func (s *Server) Close() {
	s.cancel()
	s.wg.Wait()
}

// handler is an HTTP handler that returns its error for wrap to render.
type handler func(w http.ResponseWriter, r *http.Request) error

// Handler is the whole API with its middleware.
func (s *Server) Handler() http.Handler {
	notFound := s.wrap(func(w http.ResponseWriter, r *http.Request) error {
		return apierr.NotFoundf("The resource could not be found.")
	})
	notAllowed := s.wrap(func(w http.ResponseWriter, r *http.Request) error {
		return &apierr.Error{Kind: apierr.Invalid, Status: http.StatusMethodNotAllowed,
			Message: "The method " + r.Method + " is not allowed for this resource."}
	})
	r := mux.NewRouter()
	r.NotFoundHandler, r.MethodNotAllowedHandler = notFound, notAllowed
	r.Use(metrics.RouteTemplate) // /metrics labels requests by route template

	r.Handle("/", s.wrap(s.versions(http.StatusMultipleChoices))).Methods(http.MethodGet)
	r.Handle("/versions", s.wrap(s.versions(http.StatusOK))).Methods(http.MethodGet)

	// Routes sit on the root router (gorilla/mux subrouters answer a wrong
	// method with 404, not 405); each says how it is authenticated.
	user := func(path string, h handler, method string) {
		r.Handle(path, s.authenticate(s.wrap(h))).Methods(method)
	}
	user("/v2/schemas/image", s.imageSchema, http.MethodGet)
	user("/v2/schemas/images", s.imagesSchema, http.MethodGet)
	user("/v2/images", s.listImages, http.MethodGet)
	user("/v2/images", s.createImage, http.MethodPost)
	user("/v2/images/{image_id}", s.showImage, http.MethodGet)
	user("/v2/images/{image_id}", s.patchImage, http.MethodPatch)
	user("/v2/images/{image_id}", s.deleteImage, http.MethodDelete)
	user("/v2/images/{image_id}/file", s.uploadImage, http.MethodPut)
	user("/v2/images/{image_id}/file", s.downloadImage, http.MethodGet)
	user("/v2/images/{image_id}/tags/{tag}", s.addTag, http.MethodPut)
	user("/v2/images/{image_id}/tags/{tag}", s.deleteTag, http.MethodDelete)
	user("/v2/images/{image_id}/members", s.listMembers, http.MethodGet)
	user("/v2/images/{image_id}/members", s.addMember, http.MethodPost)
	user("/v2/images/{image_id}/members/{member_id}", s.showMember, http.MethodGet)
	user("/v2/images/{image_id}/members/{member_id}", s.updateMember, http.MethodPut)
	user("/v2/images/{image_id}/members/{member_id}", s.deleteMember, http.MethodDelete)
	user("/v2/schemas/member", s.memberSchema, http.MethodGet)
	user("/v2/schemas/members", s.membersSchema, http.MethodGet)
	user("/v2/images/{image_id}/actions/deactivate", s.deactivate, http.MethodPost)
	user("/v2/images/{image_id}/actions/reactivate", s.reactivate, http.MethodPost)
	user("/v2/info/import", s.importInfo, http.MethodGet)
	user("/v2/info/stores", s.storesInfo, http.MethodGet)
	user("/v2/images/{image_id}/stage", s.stageImage, http.MethodPut)
	user("/v2/images/{image_id}/import", s.importImage, http.MethodPost)
	// Berth's extension: layer chains.
	user("/v2/images/{image_id}/layers", s.imageLayers, http.MethodGet)
	user("/v2/layers/{chain_id}", s.showLayer, http.MethodGet)
	user("/v2/layers/{chain_id}", s.deleteLayer, http.MethodDelete)

	agent := func(path string, h handler, method string) {
		r.Handle(path, s.agentOnly(s.wrap(h))).Methods(method)
	}
	agent("/internal/v1/images/{image_id}", s.internalShowImage, http.MethodGet)
	agent("/internal/v1/images/{image_id}/file", s.internalDownload, http.MethodGet)
	agent("/internal/v1/images/{image_id}/file", s.internalUpload, http.MethodPut)
	agent("/internal/v1/images/{image_id}/layers", s.internalLayers, http.MethodGet)

	var h http.Handler = r
	h = httpx.Recover(s.log, s.renderGlance)(h)
	h = httpx.AccessLog(s.log)(h)
	h = httpx.RequestIDs(false)(h)
	return stripIdentityHeaders(h)
}

// stripIdentityHeaders drops client-sent identity headers before anything
// else sees the request.
func stripIdentityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keystone.StripIdentityHeaders(r.Header)
		next.ServeHTTP(w, r)
	})
}

func (s *Server) wrap(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			s.fail(w, r, err)
		}
	})
}

// fail logs err once (5xx at Error, the rest at Debug) and renders it.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	err = pgdb.Classify(err)
	e := apierr.As(err)
	level := slog.LevelDebug
	if e.HTTPStatus() >= 500 {
		level = slog.LevelError
	}
	s.log.Log(r.Context(), level, "request failed", "method", r.Method, "path", r.URL.Path,
		"status", e.HTTPStatus(), "err", err, "request_id", httpx.RequestID(r.Context()))
	s.renderGlance(w, err)
}

func (s *Server) renderGlance(w http.ResponseWriter, err error) {
	if apierr.As(err).HTTPStatus() == http.StatusUnauthorized && s.cfg.Validator != nil {
		w.Header().Set("WWW-Authenticate", `Keystone uri="`+s.cfg.Validator.BaseURL()+`"`)
	}
	apierr.RenderGlance(w, err)
}

// authenticate validates X-Auth-Token with Keystone and puts the identity
// in the request's context.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := s.cfg.Validator.Validate(r.Context(), r.Header.Get("X-Auth-Token"))
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if id.ProjectID != "" && s.cfg.Store != nil {
			// Registry names start with project names: remember them.
			_ = s.cfg.Store.NoteProject(r.Context(), store.Project{ID: id.ProjectID, Name: id.ProjectName, DomainID: id.DomainID})
		}
		next.ServeHTTP(w, r.WithContext(keystone.WithIdentity(r.Context(), id)))
	})
}

// agentOnly admits requests carrying the shared agent token.
func (s *Server) agentOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get(schema.AgentTokenHeader)
		want := s.cfg.AgentToken
		if want == "" || got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			s.fail(w, r, apierr.Unauthenticatedf("A valid %s header is required.", schema.AgentTokenHeader))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// identity is the caller's identity; authenticate guarantees one.
func identity(r *http.Request) (*keystone.Identity, error) {
	id, ok := keystone.FromContext(r.Context())
	if !ok {
		return nil, errors.New("no identity in request context")
	}
	return id, nil
}

func viewer(id *keystone.Identity) store.Viewer {
	return store.Viewer{ProjectID: id.ProjectID, Admin: id.IsAdmin()}
}

// publicBase is the URL clients reach us at, without a trailing slash.
func (s *Server) publicBase(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		return strings.TrimRight(s.cfg.PublicURL, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
