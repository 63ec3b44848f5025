// Package images makes a set's image available to Docker: when Docker lacks
// the image's ID, the image's docker-save archive is streamed from imagesvc
// and loaded. Concurrent requests for one image share one load.
package images

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
	"golang.org/x/sync/singleflight"

	"berth/hostagent/internal/dockerjson"
	"berth/schema"
)

// Docker is the part of the Docker client the loader needs.
type Docker interface {
	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImageLoad(ctx context.Context, input io.Reader, opts ...client.ImageLoadOption) (image.LoadResponse, error)
	ImagePull(ctx context.Context, ref string, opts image.PullOptions) (io.ReadCloser, error)
}

// Config configures a Loader.
type Config struct {
	// ImageURL is imagesvc's base URL, e.g. "http://127.0.0.1:9292".
	ImageURL string
	// Token is the shared agent secret sent as schema.AgentTokenHeader.
	Token string
	// InspectTimeout bounds an image inspect; LoadTimeout a whole download
	// and load.
	InspectTimeout time.Duration
	LoadTimeout    time.Duration
	// HTTP is the client used for imagesvc; nil uses a default client.
	HTTP *http.Client
	// Registry, when true, pulls through imagesvc's registry API (Docker
	// fetches only the layers it lacks) and falls back to the archive.
	// Docker must reach the registry: loopback registries are insecure-OK
	// by default, others need TLS or an insecure-registries entry.
	Registry bool
}

// Loader implements the reconciler's Images.
type Loader struct {
	docker Docker
	cfg    Config
	log    *slog.Logger
	group  singleflight.Group
}

// New returns a Loader.
func New(docker Docker, log *slog.Logger, cfg Config) *Loader {
	if cfg.InspectTimeout <= 0 {
		cfg.InspectTimeout = 30 * time.Second
	}
	if cfg.LoadTimeout <= 0 {
		cfg.LoadTimeout = 15 * time.Minute
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{}
	}
	cfg.ImageURL = strings.TrimRight(cfg.ImageURL, "/")
	return &Loader{docker: docker, cfg: cfg, log: log}
}

// Ensure makes img.DockerImageID present in Docker, loading it from imagesvc
// if needed.
func (l *Loader) Ensure(ctx context.Context, img schema.SetImage) error {
	if img.DockerImageID == "" {
		return errors.New("image has no docker image id")
	}
	ok, err := l.present(ctx, img.DockerImageID)
	if err != nil || ok {
		return err
	}
	ch := l.group.DoChan(img.DockerImageID, func() (any, error) {
		// The shared load outlives any single caller's cancellation.
		lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.LoadTimeout)
		defer cancel()
		return nil, l.load(lctx, img)
	})
	select {
	case <-ctx.Done():
		return ctx.Err()
	case res := <-ch:
		return res.Err
	}
}

func (l *Loader) present(ctx context.Context, id string) (bool, error) {
	ictx, cancel := context.WithTimeout(ctx, l.cfg.InspectTimeout)
	defer cancel()
	_, err := l.docker.ImageInspect(ictx, id)
	switch {
	case err == nil:
		return true, nil
	case cerrdefs.IsNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("inspect image %s: %w", id, err)
	}
}

func (l *Loader) load(ctx context.Context, img schema.SetImage) error {
	if ok, err := l.present(ctx, img.DockerImageID); err != nil || ok {
		return err // loaded by a previous flight meanwhile
	}
	start := time.Now()
	if l.cfg.Registry {
		err := l.pull(ctx, img)
		if err == nil {
			l.log.Info("pulled image", "image_id", img.ID, "docker_image_id", img.DockerImageID, "duration", time.Since(start))
			return nil
		}
		l.log.Warn("registry pull failed; loading the archive", "image_id", img.ID, "err", err)
	}
	u := l.cfg.ImageURL + "/internal/v1/images/" + url.PathEscape(img.ID) + "/file"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set(schema.AgentTokenHeader, l.cfg.Token)
	resp, err := l.cfg.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("fetch image %s: %w", img.ID, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("fetch image %s: imagesvc answered %s: %s", img.ID, resp.Status, strings.TrimSpace(string(body)))
	}
	lr, err := l.docker.ImageLoad(ctx, resp.Body, client.ImageLoadWithQuiet(true))
	if err != nil {
		return fmt.Errorf("load image %s: %w", img.ID, err)
	}
	defer lr.Body.Close()
	if err := dockerjson.CheckProgress(lr.Body); err != nil {
		return fmt.Errorf("load image %s: %w", img.ID, err)
	}
	ok, err := l.present(ctx, img.DockerImageID)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("image %s: archive from imagesvc does not hold docker image %s", img.ID, img.DockerImageID)
	}
	l.log.Info("loaded image", "image_id", img.ID, "docker_image_id", img.DockerImageID, "duration", time.Since(start))
	return nil
}

// pull fetches an image by id through imagesvc's registry API, logged in
// as the agent: Docker asks only for the layers it does not have.
func (l *Loader) pull(ctx context.Context, img schema.SetImage) error {
	u, err := url.Parse(l.cfg.ImageURL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("registry address from %q: %v", l.cfg.ImageURL, err)
	}
	auth, _ := json.Marshal(map[string]string{"username": "berth-agent", "password": l.cfg.Token,
		"serveraddress": u.Host})
	ref := u.Host + "/berth/image:" + img.ID
	rc, err := l.docker.ImagePull(ctx, ref, image.PullOptions{RegistryAuth: base64.URLEncoding.EncodeToString(auth)})
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	defer rc.Close()
	if err := dockerjson.CheckProgress(rc); err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	ok, err := l.present(ctx, img.DockerImageID)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("pull %s did not yield docker image %s", ref, img.DockerImageID)
	}
	return nil
}
