package agentapi

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"berth/hostagent/observed"
	"berth/hostagent/reconcile"
	"berth/hostagent/setspec"
	"berth/internal/apierr"
	"berth/schema"
)

// logs: GET /logs?tail=N[&follow=1] — the container's console log
// (stdout and stderr), text/plain; with follow, streamed until the client
// hangs up or the container stops.
func (s *Server) logs(w http.ResponseWriter, r *http.Request) error {
	_, c, err := s.target(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	tail := "all"
	if t := q.Get("tail"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return apierr.Invalidf("tail must be a whole number, got %q.", t)
		}
		if n > 0 {
			tail = strconv.Itoa(n)
		}
	}
	follow := q.Get("follow") == "1" || q.Get("follow") == "true"
	ctx := r.Context()
	if !follow {
		var cancel context.CancelFunc
		ctx, cancel = s.call(ctx)
		defer cancel()
	}
	rc, err := s.cfg.Docker.ContainerLogs(ctx, c.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: tail, Follow: follow})
	if err != nil {
		return dockerErr(err, "container log")
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	out := io.Writer(w)
	if follow {
		out = flushWriter{w: w, rc: http.NewResponseController(w)}
		_ = http.NewResponseController(w).Flush()
	}
	// Members never have a TTY: the log is multiplexed.
	if _, err := stdcopy.StdCopy(out, out, rc); err != nil && ctx.Err() == nil {
		return fmt.Errorf("copy container log: %w", err)
	}
	return nil
}

type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flushWriter) Write(b []byte) (int, error) {
	n, err := f.w.Write(b)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

// chpasswdPaths are where images keep chpasswd.
var chpasswdPaths = []string{"/usr/sbin/chpasswd", "/sbin/chpasswd", "/usr/bin/chpasswd", "/bin/chpasswd"}

// password: POST /password — chpasswd inside the running container.
func (s *Server) password(w http.ResponseWriter, r *http.Request) error {
	var p schema.SetPassword
	if err := decodeJSON(r, &p); err != nil {
		return err
	}
	if p.User == "" {
		p.User = "root"
	}
	if strings.ContainsAny(p.User, ":\n\r \t") || len(p.User) > 64 {
		return apierr.Invalidf("Invalid user name.")
	}
	if p.Password == "" || strings.ContainsAny(p.Password, "\n\r") || len(p.Password) > 1024 {
		return apierr.Invalidf("The password must be 1-1024 characters without line breaks.")
	}
	_, c, err := s.target(r)
	if err != nil {
		return err
	}
	if err := mustRun(c); err != nil {
		return err
	}
	bin := ""
	for _, path := range chpasswdPaths {
		ctx, cancel := s.call(r.Context())
		_, err := s.cfg.Docker.ContainerStatPath(ctx, c.ID, path)
		cancel()
		if err == nil {
			bin = path
			break
		}
	}
	if bin == "" {
		return apierr.Conflictf("The image has no chpasswd: its password cannot be set.")
	}
	out, code, err := s.run(r.Context(), c.ID, []string{bin}, p.User+":"+p.Password+"\n")
	if err != nil {
		return err
	}
	if code != 0 {
		return apierr.Conflictf("chpasswd failed (exit %d): %s", code, truncate(strings.TrimSpace(out), 300))
	}
	s.log.Info("password set", "set_id", r.PathValue("set_id"), "container_id", c.ID, "user", p.User)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// run executes cmd as root in a container with stdin, and returns its
// output and exit code.
func (s *Server) run(ctx context.Context, id string, cmd []string, stdin string) (string, int, error) {
	ctx, cancel := s.call(ctx)
	defer cancel()
	ex, err := s.cfg.Docker.ContainerExecCreate(ctx, id, container.ExecOptions{
		User: "0", Cmd: cmd, AttachStdin: true, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return "", 0, dockerErr(err, "exec")
	}
	att, err := s.cfg.Docker.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return "", 0, dockerErr(err, "exec")
	}
	defer att.Close()
	if _, err := io.WriteString(att.Conn, stdin); err != nil {
		return "", 0, fmt.Errorf("exec stdin: %w", err)
	}
	if err := att.CloseWrite(); err != nil {
		return "", 0, fmt.Errorf("exec stdin: %w", err)
	}
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, io.LimitReader(att.Reader, 1<<20)); err != nil {
		return "", 0, fmt.Errorf("exec output: %w", err)
	}
	ins, err := s.cfg.Docker.ContainerExecInspect(ctx, ex.ID)
	if err != nil {
		return "", 0, dockerErr(err, "exec")
	}
	return out.String(), ins.ExitCode, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func filePath(r *http.Request) (string, error) {
	p := r.URL.Query().Get("path")
	if err := setspec.CheckPath(p); err != nil {
		return "", apierr.Invalidf("Bad path %q: %v.", p, err)
	}
	return p, nil
}

// putFile: PUT /files?path=/abs&mode=0644 — body is the file.
func (s *Server) putFile(w http.ResponseWriter, r *http.Request) error {
	p, err := filePath(r)
	if err != nil {
		return err
	}
	mode := int64(0o644)
	if m := r.URL.Query().Get("mode"); m != "" {
		v, err := strconv.ParseInt(m, 8, 32)
		if err != nil || v < 0 || v > 0o7777 {
			return apierr.Invalidf("Bad mode %q: want octal, e.g. 0644.", m)
		}
		mode = v
	}
	if r.ContentLength > schema.MaxFileBytes {
		return apierr.Invalidf("The file is larger than %d bytes.", schema.MaxFileBytes)
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, schema.MaxFileBytes+1))
	if err != nil {
		return apierr.Wrap(err, apierr.Invalid, "Reading the request body failed.")
	}
	if len(data) > schema.MaxFileBytes {
		return apierr.Invalidf("The file is larger than %d bytes.", schema.MaxFileBytes)
	}
	_, c, err := s.target(r)
	if err != nil {
		return err
	}
	if err := s.cfg.Files.WriteFile(r.Context(), c.ID, p, mode, data); err != nil {
		return dockerErr(err, "write "+p)
	}
	s.log.Info("file written", "set_id", r.PathValue("set_id"), "container_id", c.ID, "path", p, "bytes", len(data))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// getFile: GET /files?path=/abs — the file's bytes (a symlink is
// followed inside the container).
func (s *Server) getFile(w http.ResponseWriter, r *http.Request) error {
	p, err := filePath(r)
	if err != nil {
		return err
	}
	_, c, err := s.target(r)
	if err != nil {
		return err
	}
	ctx, cancel := s.call(r.Context())
	defer cancel()
	st, err := s.cfg.Docker.ContainerStatPath(ctx, c.ID, p)
	for hops := 0; err == nil && st.Mode&os.ModeSymlink != 0 && hops < 8; hops++ {
		if st.LinkTarget == "" {
			break
		}
		p = st.LinkTarget
		st, err = s.cfg.Docker.ContainerStatPath(ctx, c.ID, p)
	}
	switch {
	case err != nil:
		return dockerErr(err, "file "+r.URL.Query().Get("path"))
	case st.Mode.IsDir():
		return apierr.Invalidf("%s is a directory.", r.URL.Query().Get("path"))
	case !st.Mode.IsRegular():
		return apierr.Invalidf("%s is not a regular file.", r.URL.Query().Get("path"))
	case st.Size > schema.MaxFileBytes:
		return apierr.Invalidf("The file is larger than %d bytes.", schema.MaxFileBytes)
	}
	rc, _, err := s.cfg.Docker.CopyFromContainer(ctx, c.ID, p)
	if err != nil {
		return dockerErr(err, "file "+p)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	h, err := tr.Next()
	if err != nil {
		return fmt.Errorf("read archive of %s: %w", p, err)
	}
	if h.Typeflag != tar.TypeReg || h.Size > schema.MaxFileBytes {
		return apierr.Invalidf("%s is not a regular file of at most %d bytes.", p, schema.MaxFileBytes)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(h.Size, 10))
	w.WriteHeader(http.StatusOK)
	_, err = io.Copy(w, io.LimitReader(tr, h.Size))
	return err
}

// commit: POST /commit — docker commit of the container, then its
// docker-save archive uploaded to imagesvc's internal upload endpoint.
func (s *Server) commit(w http.ResponseWriter, r *http.Request) error {
	var req schema.CommitRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	u, err := url.Parse(req.ImageURL)
	if req.ImageID == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return apierr.Invalidf("image_id and an http(s) image_url are required.")
	}
	_, c, err := s.target(r)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.CommitTimeout)
	defer cancel()
	log := s.log.With("set_id", r.PathValue("set_id"), "container_id", c.ID, "image_id", req.ImageID)
	start := time.Now()
	cctx, ccancel := s.call(ctx)
	res, err := s.cfg.Docker.ContainerCommit(cctx, c.ID, container.CommitOptions{Pause: true, Comment: "berth snapshot " + req.ImageID})
	ccancel()
	if err != nil {
		return dockerErr(err, "commit")
	}
	rc, err := s.cfg.Docker.ImageSave(ctx, []string{res.ID})
	if err != nil {
		return dockerErr(err, "save "+res.ID)
	}
	defer rc.Close()
	upload := strings.TrimRight(req.ImageURL, "/") + "/internal/v1/images/" + url.PathEscape(req.ImageID) + "/file"
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPut, upload, rc)
	if err != nil {
		return err
	}
	hreq.Header.Set(schema.AgentTokenHeader, s.cfg.Token)
	hreq.Header.Set("Content-Type", "application/octet-stream")
	if rid := r.Header.Get("X-Openstack-Request-Id"); rid != "" {
		hreq.Header.Set("X-Openstack-Request-Id", rid)
	}
	resp, err := s.cfg.HTTP.Do(hreq)
	if err != nil {
		return apierr.Wrap(err, apierr.Unavailable, "Uploading the snapshot to the image service failed.")
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		kind := apierr.Unavailable
		if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusConflict {
			kind = apierr.Conflict
		}
		return &apierr.Error{Kind: kind, Message: fmt.Sprintf("The image service refused the snapshot (%d): %s",
			resp.StatusCode, truncate(strings.TrimSpace(string(body)), 300))}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	ictx, icancel := s.call(ctx)
	img, err := s.cfg.Docker.ImageInspect(ictx, res.ID)
	icancel()
	if err != nil {
		return dockerErr(err, "inspect "+res.ID)
	}
	log.Info("snapshot uploaded", "docker_image_id", res.ID, "size", img.Size, "duration", time.Since(start))
	return writeJSON(w, http.StatusOK, schema.CommitResult{DockerImageID: res.ID, Size: img.Size})
}

// diagnostics: GET /diagnostics — CPU, memory and pids of the set's
// members (summed), the primary app's state and uptime, per-port counters.
//
// A read that fails while the set is being stopped, paused or deleted
// (its port torn down, a container gone between two calls) is a 409, as
// Nova answers diagnostics of an instance that is not running; only a
// failure on a set that still should and does run is the agent's own.
func (s *Server) diagnostics(w http.ResponseWriter, r *http.Request) error {
	v, app, err := s.target(r)
	if err != nil && !apierr.Is(err, apierr.Conflict) {
		return err
	}
	d, err := s.readDiagnostics(r.Context(), v, app)
	if err != nil {
		if now, napp, terr := s.target(r); terr != nil || !stillRunning(now, napp) || napp.ID != appID(app) {
			return apierr.Wrap(err, apierr.Conflict, "The set changed state while its diagnostics were read; it is not running now")
		}
		return err
	}
	return writeJSON(w, http.StatusOK, d)
}

// stillRunning: the set should run and its primary app does.
func stillRunning(v reconcile.SetView, app *observed.Container) bool {
	return v.Desired != nil && v.Desired.State == schema.SetRunning && app != nil && app.Running && !app.Paused
}

func appID(c *observed.Container) string {
	if c == nil {
		return ""
	}
	return c.ID
}

// readDiagnostics gathers the counters of one view of the set.
func (s *Server) readDiagnostics(ctx context.Context, v reconcile.SetView, app *observed.Container) (schema.Diagnostics, error) {
	d := schema.Diagnostics{
		State:      reconcile.PowerState(v.Desired, v.Observed),
		NICs:       []schema.NICStats{},
		Containers: v.Status.Containers,
	}
	if d.Containers == nil {
		d.Containers = []schema.ObservedContainer{}
	}
	if app != nil && app.Running && !app.StartedAt.IsZero() {
		d.Uptime = int64(time.Since(app.StartedAt).Seconds())
	}
	for _, c := range v.Observed.Containers() {
		if c.Role == schema.RoleInfra {
			continue
		}
		ictx, cancel := s.call(ctx)
		j, _, err := s.cfg.Docker.ContainerInspectWithRaw(ictx, c.ID, true)
		cancel()
		if err != nil {
			return d, dockerErr(err, "inspect "+c.Member)
		}
		if j.SizeRw != nil && *j.SizeRw > 0 {
			d.DiskBytes += uint64(*j.SizeRw)
		}
		if !c.Running {
			continue
		}
		st, err := s.stats(ctx, c.ID)
		if err != nil {
			return d, err
		}
		d.CPUTimeNS += st.CPUStats.CPUUsage.TotalUsage
		d.MemoryBytes += st.MemoryStats.Usage
		d.Pids += st.PidsStats.Current
		if app != nil && c.ID == app.ID {
			d.MemoryLimit = st.MemoryStats.Limit
		}
	}
	if v.Desired != nil {
		for _, p := range v.Desired.Ports {
			nic := schema.NICStats{MAC: p.MAC}
			if op := v.Observed.Port(p.ID); op != nil && op.LinkPresent {
				ctx, cancel := s.call(ctx)
				got, err := s.cfg.NICs.Counters(ctx, *op)
				cancel()
				if err != nil {
					return d, fmt.Errorf("counters of port %s: %w", p.ID, err)
				}
				got.MAC = p.MAC
				nic = got
			}
			d.NICs = append(d.NICs, nic)
		}
	}
	return d, nil
}

func (s *Server) stats(ctx context.Context, id string) (container.StatsResponse, error) {
	ctx, cancel := s.call(ctx)
	defer cancel()
	var st container.StatsResponse
	rd, err := s.cfg.Docker.ContainerStatsOneShot(ctx, id)
	if err != nil {
		return st, dockerErr(err, "stats")
	}
	defer rd.Body.Close()
	if err := json.NewDecoder(rd.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("decode stats of %s: %w", id, err)
	}
	return st, nil
}

// sync: POST /sync — re-read the set now, report it, return it.
func (s *Server) sync(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("set_id")
	st, err := s.cfg.Sets.SyncSet(r.Context(), id)
	if errors.Is(err, reconcile.ErrUnknownSet) {
		return apierr.NotFoundf("Set %s could not be found on this host.", id)
	}
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, st)
}

func decodeJSON(r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return &apierr.Error{Kind: apierr.UnsupportedMedia, Message: "The body must be application/json."}
		}
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apierr.Wrap(err, apierr.Invalid, "Malformed request body: %v", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	return json.NewEncoder(w).Encode(v)
}
