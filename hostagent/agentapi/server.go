// Package agentapi is the host agent's own HTTP API (schema/agentops.go),
// called by region with the shared agent token: the operations on a set
// that are not desired state — console log, password, files, snapshot,
// diagnostics, an immediate sync and an interactive shell. Errors are Nova
// fault bodies, so region passes their kind on.
package agentapi

import (
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"

	"berth/hostagent/observed"
	"berth/hostagent/reconcile"
	"berth/hostagent/setspec"
	"berth/internal/apierr"
	"berth/schema"
)

// Sets is the reconciler as the API uses it.
type Sets interface {
	Lookup(ctx context.Context, setID string) (reconcile.SetView, error)
	SyncSet(ctx context.Context, setID string) (schema.ObservedSet, error)
}

// NICs reads a set port's counters.
type NICs interface {
	Counters(ctx context.Context, port observed.Port) (schema.NICStats, error)
}

// Files writes a file into a container (making missing parent
// directories).
type Files interface {
	WriteFile(ctx context.Context, id, path string, mode int64, data []byte) error
}

// Docker is the part of the Docker client the API uses.
type Docker interface {
	ContainerLogs(ctx context.Context, id string, options container.LogsOptions) (io.ReadCloser, error)
	ContainerExecCreate(ctx context.Context, id string, options container.ExecOptions) (container.ExecCreateResponse, error)
	ContainerExecAttach(ctx context.Context, execID string, config container.ExecAttachOptions) (types.HijackedResponse, error)
	ContainerExecInspect(ctx context.Context, execID string) (container.ExecInspect, error)
	ContainerExecResize(ctx context.Context, execID string, options container.ResizeOptions) error
	ContainerStatPath(ctx context.Context, id, path string) (container.PathStat, error)
	CopyFromContainer(ctx context.Context, id, srcPath string) (io.ReadCloser, container.PathStat, error)
	ContainerCommit(ctx context.Context, id string, options container.CommitOptions) (container.CommitResponse, error)
	ContainerStatsOneShot(ctx context.Context, id string) (container.StatsResponseReader, error)
	ContainerInspectWithRaw(ctx context.Context, id string, getSize bool) (container.InspectResponse, []byte, error)
	ImageSave(ctx context.Context, imageIDs []string, opts ...client.ImageSaveOption) (io.ReadCloser, error)
	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
}

// Config configures a Server.
type Config struct {
	// Token is the shared agent secret expected in schema.AgentTokenHeader.
	Token string
	Sets  Sets
	NICs  NICs
	Files Files
	// Docker is the Docker client.
	Docker Docker
	// CallTimeout bounds each short Docker call (default 30s);
	// CommitTimeout a whole commit, save and upload (default 15m).
	CallTimeout   time.Duration
	CommitTimeout time.Duration
	// HTTP uploads snapshots to imagesvc (default: a plain client).
	HTTP *http.Client
}

// Server serves the agent API.
type Server struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux
}

// New returns a Server.
func New(log *slog.Logger, cfg Config) *Server {
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.CommitTimeout <= 0 {
		cfg.CommitTimeout = 15 * time.Minute
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{}
	}
	s := &Server{cfg: cfg, log: log, mux: http.NewServeMux()}
	const base = "/agent/v1/sets/{set_id}/"
	s.handle("GET "+base+"logs", s.logs)
	s.handle("POST "+base+"password", s.password)
	s.handle("PUT "+base+"files", s.putFile)
	s.handle("GET "+base+"files", s.getFile)
	s.handle("POST "+base+"commit", s.commit)
	s.handle("GET "+base+"diagnostics", s.diagnostics)
	s.handle("POST "+base+"sync", s.sync)
	s.handle("GET "+base+"exec", s.exec)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, apierr.NotFoundf("No such agent API path: %s %s", r.Method, r.URL.Path))
	})
	return s
}

// ServeHTTP authorizes the request and routes it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	got := r.Header.Get(schema.AgentTokenHeader)
	if s.cfg.Token == "" || subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.Token)) != 1 {
		w.Header().Set("WWW-Authenticate", `Berth-Agent-Token realm="hostagent"`)
		s.fail(w, r, apierr.Unauthenticatedf("Missing or wrong %s.", schema.AgentTokenHeader))
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) handle(pattern string, h func(http.ResponseWriter, *http.Request) error) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		tw := &trackingWriter{ResponseWriter: w}
		if err := h(tw, r); err != nil {
			if tw.wrote {
				// A stream had begun: its status is sent; only log.
				s.log.Warn("agent api stream ended", "method", r.Method, "path", r.URL.Path,
					"set_id", r.PathValue("set_id"), "err", err)
				return
			}
			s.fail(w, r, err)
			return
		}
		s.log.Debug("agent api", "method", r.Method, "path", r.URL.Path, "set_id", r.PathValue("set_id"),
			"request_id", r.Header.Get("X-Openstack-Request-Id"), "duration", time.Since(start))
	})
}

// fail renders err as a Nova fault and logs it once: 4xx at Debug, 5xx
// at Error with the detail (the client sees a generic message).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := apierr.As(err)
	attrs := []any{"method", r.Method, "path", r.URL.Path, "set_id", r.PathValue("set_id"),
		"request_id", r.Header.Get("X-Openstack-Request-Id"), "status", e.HTTPStatus(), "err", err}
	if e.HTTPStatus() >= 500 {
		s.log.Error("agent api failed", attrs...)
	} else {
		s.log.Debug("agent api refused", attrs...)
	}
	apierr.RenderNova(w, err)
}

// trackingWriter notes whether a response has begun; Unwrap lets
// http.ResponseController and the websocket upgrade reach the original.
type trackingWriter struct {
	http.ResponseWriter
	wrote bool
}

func (t *trackingWriter) WriteHeader(code int) {
	t.wrote = true
	t.ResponseWriter.WriteHeader(code)
}

func (t *trackingWriter) Write(b []byte) (int, error) {
	t.wrote = true
	return t.ResponseWriter.Write(b)
}

func (t *trackingWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }

func (s *Server) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.cfg.CallTimeout)
}

// target resolves the container an operation acts on: ?container=NAME or
// the set's primary app.
func (s *Server) target(r *http.Request) (reconcile.SetView, *observed.Container, error) {
	id := r.PathValue("set_id")
	v, err := s.cfg.Sets.Lookup(r.Context(), id)
	if errors.Is(err, reconcile.ErrUnknownSet) {
		return v, nil, apierr.NotFoundf("Set %s could not be found on this host.", id)
	}
	if err != nil {
		return v, nil, err
	}
	name := r.URL.Query().Get("container")
	if name == "" {
		name = setspec.PrimaryName(v.Desired)
	}
	c := v.Observed.Member(name)
	if c == nil {
		return v, nil, apierr.Conflictf("Set %s has no %s container on this host.", id, name)
	}
	return v, c, nil
}

func mustRun(c *observed.Container) error {
	if !c.Running || c.Paused {
		state := c.State
		if c.Paused {
			state = "paused"
		}
		return apierr.Conflictf("The %s container is %s, not running.", c.Member, state)
	}
	return nil
}

// dockerErr gives a Docker error its kind.
func dockerErr(err error, what string) error {
	switch {
	case err == nil:
		return nil
	case cerrdefs.IsNotFound(err):
		return apierr.Wrap(err, apierr.NotFound, "%s: not found", what)
	case cerrdefs.IsInvalidArgument(err):
		return apierr.Wrap(err, apierr.Invalid, "%s: invalid", what)
	case cerrdefs.IsConflict(err):
		return apierr.Wrap(err, apierr.Conflict, "%s: conflict", what)
	}
	return err
}
