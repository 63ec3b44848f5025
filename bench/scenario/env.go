// Package scenario holds the bench's scenarios. Each runs against a real
// stack brought up by internal/devstack (and, for the scale scenarios, a
// second region process on a database of its own), measures Berth and a
// baseline side by side in the same run, and adds rows to the report.
package scenario

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/client"
	"github.com/google/uuid"
	_ "github.com/lib/pq" // PostgreSQL driver
	"golang.org/x/sync/errgroup"

	"berth/bench/osapi"
	"berth/bench/report"
	"berth/internal/devstack"
)

// Env is what every scenario shares.
type Env struct {
	Stack  *devstack.Stack
	Quick  bool
	Log    *slog.Logger
	C      *osapi.Client
	Docker *client.Client
	Report *report.Report

	Admin, Demo osapi.Token
	// ImageID is the demo image in Glance; DockerImageID its Docker ID.
	ImageID, DockerImageID string
	// PauseImage is the infra containers' image (known after the warm-up).
	PauseImage string
	// RegionDB is the stack region's database (for the settings a real
	// operator makes in nova.conf and Berth keeps in the hosts table).
	RegionDB *sql.DB
	// Prefix names every server the bench makes, so leftovers are obvious.
	Prefix string
	// BinDir holds the Berth binaries (for the extra region processes).
	BinDir string
	// Sched tunes the scheduler scenario.
	Sched SchedOptions

	regions []*Region

	// TokenCacheBug is set when region's cached token validation loses the
	// token it forwards to imagesvc (a second POST /servers with one token
	// inside the cache TTL is 401). The bench then boots with a fresh,
	// pre-issued token per POST; see Setup.
	TokenCacheBug bool
	// baseNet is the Docker network of the baseline containers.
	baseNet, createdNet string
	poolMu              sync.Mutex
	pool                []string
}

// Close stops the extra region processes and removes baseline containers.
func (e *Env) Close(ctx context.Context) {
	for _, r := range e.regions {
		r.Stop()
	}
	e.CleanupBaselines(ctx)
	if e.RegionDB != nil {
		e.RegionDB.Close()
	}
}

// Compute is the stack's Nova endpoint.
func (e *Env) Compute() string { return e.Stack.ComputeURL() }

// Setup gets tokens, finds the demo image, lifts the demo project's quota
// and the bench host's allocation ratios, and boots one server so the
// image is on the host before anything is timed.
func (e *Env) Setup(ctx context.Context) error {
	ks := e.Stack.KeystoneURL()
	var err error
	if e.Admin, err = e.C.PasswordToken(ctx, ks, devstack.UserAdmin, e.Stack.Password(devstack.UserAdmin), "admin"); err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	if e.Demo, err = e.C.PasswordToken(ctx, ks, devstack.UserDemo, e.Stack.Password(devstack.UserDemo), devstack.ProjectDemo); err != nil {
		return fmt.Errorf("demo token: %w", err)
	}
	var imgs struct {
		Images []map[string]any `json:"images"`
	}
	if _, err := e.C.Do(ctx, osapi.Request{Method: http.MethodGet, Token: e.Demo.Token,
		URL: e.Stack.ImageURL() + "/v2/images?" + url.Values{"name": {devstack.DemoImageName}}.Encode()}, &imgs); err != nil {
		return err
	}
	for _, im := range imgs.Images {
		if im["status"] == "active" {
			e.ImageID, _ = im["id"].(string)
			e.DockerImageID, _ = im["docker_image_id"].(string)
		}
	}
	if e.ImageID == "" {
		return errors.New("demo image not found in Glance")
	}
	if err := e.SetQuota(ctx, e.Compute(), e.Demo.ProjectID); err != nil {
		return err
	}
	if e.RegionDB, err = sql.Open("postgres", e.Stack.RegionDSN()); err != nil {
		return err
	}
	// One host must take 200 m1.tiny sets (1 vCPU, 512 MB each) for the
	// concurrency and footprint scenarios; Nova's default ratios (cpu 16,
	// ram 1.5) allow 32 on 2 CPUs. The operator's knob, as nova.conf's
	// cpu_allocation_ratio is in Nova.
	if _, err := e.RegionDB.ExecContext(ctx, `UPDATE hosts SET cpu_ratio = 128, ram_ratio = 8 WHERE name = $1`,
		e.Stack.HostName()); err != nil {
		return fmt.Errorf("raise allocation ratios: %w", err)
	}

	e.baseNet = e.ensureBaselineNetwork(ctx)

	// Warm-up: the image reaches Docker, the pause image is built, every
	// connection pool is filled. Not timed.
	start := time.Now()
	b, err := e.boot(ctx, e.Prefix+"warmup", nil)
	if err != nil {
		return fmt.Errorf("warm-up boot: %w", err)
	}
	if _, err := e.waitActive(ctx, b.ID, 100*time.Millisecond, 3*time.Minute); err != nil {
		return fmt.Errorf("warm-up boot: %w", err)
	}
	if cs, err := e.setContainers(ctx, b.ID); err == nil {
		for _, c := range cs {
			if c.Role == "infra" {
				e.PauseImage = c.Image
			}
			if c.Role == "app" && e.DockerImageID == "" {
				e.DockerImageID = c.Image
			}
		}
	}
	if err := e.deleteAndWait(ctx, b.ID, 100*time.Millisecond, 2*time.Minute); err != nil {
		return fmt.Errorf("warm-up delete: %w", err)
	}
	// A second boot with the token region has now cached.
	b2, err := e.bootAt(ctx, e.Compute(), e.Demo.Token, e.Prefix+"warmup-2", nil, nil)
	switch {
	case osapi.Code(err) == http.StatusUnauthorized:
		e.TokenCacheBug = true
		e.Report.Note("BUG (internal/keystone): Validator.Validate returns the cached Identity without its Token, so region " +
			"forwards an empty token to imagesvc and every POST /servers after the first with one token (within " +
			"--token-cache-ttl, 30 s) fails 401. The bench works around it: each POST /servers uses a fresh token issued " +
			"(and validated by imagesvc) before the clock starts, so every timed boot also pays one Keystone validation " +
			"in region (4d is its cost); the scale regions run with --token-cache-ttl=1ns for the same reason.")
		e.Log.Warn("region loses the token on cached validations; booting with a fresh token per POST")
	case err != nil:
		return fmt.Errorf("second warm-up boot: %w", err)
	default:
		if err := e.deleteAndWait(ctx, b2.ID, 100*time.Millisecond, 2*time.Minute); err != nil {
			return fmt.Errorf("warm-up delete: %w", err)
		}
	}
	e.Log.Info("warm-up boot and delete done", "took", time.Since(start).Round(time.Millisecond),
		"image", e.ImageID, "docker_image", e.DockerImageID, "pause_image", e.PauseImage)
	return nil
}

// BootToken is the token for one POST /servers as demo: demo's token, or
// under TokenCacheBug a fresh one imagesvc has already validated.
func (e *Env) BootToken(ctx context.Context) (string, error) {
	if !e.TokenCacheBug {
		return e.Demo.Token, nil
	}
	e.poolMu.Lock()
	if n := len(e.pool); n > 0 {
		t := e.pool[n-1]
		e.pool = e.pool[:n-1]
		e.poolMu.Unlock()
		return t, nil
	}
	e.poolMu.Unlock()
	if err := e.FillTokens(ctx, 1); err != nil {
		return "", err
	}
	return e.BootToken(ctx)
}

// FillTokens pre-issues n boot tokens (only under TokenCacheBug).
func (e *Env) FillTokens(ctx context.Context, n int) error {
	if !e.TokenCacheBug {
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for range n {
		g.Go(func() error {
			t, err := e.C.PasswordToken(gctx, e.Stack.KeystoneURL(), devstack.UserDemo, e.Stack.Password(devstack.UserDemo), devstack.ProjectDemo)
			if err != nil {
				return err
			}
			if _, err := e.C.Do(gctx, osapi.Request{Method: http.MethodGet, Token: t.Token,
				URL: e.Stack.ImageURL() + "/v2/images/" + e.ImageID}, nil); err != nil {
				return err
			}
			e.poolMu.Lock()
			e.pool = append(e.pool, t.Token)
			e.poolMu.Unlock()
			return nil
		})
	}
	return g.Wait()
}

// SetQuota makes a project's instances, cores and ram unlimited, and its
// server groups (the scheduler scenario mixes anti-affinity groups in).
func (e *Env) SetQuota(ctx context.Context, compute, project string) error {
	_, err := e.C.Do(ctx, osapi.Request{Method: http.MethodPut, URL: compute + "/os-quota-sets/" + project,
		Token: e.Admin.Token, Body: map[string]any{"quota_set": map[string]int{
			"instances": -1, "cores": -1, "ram": -1, "server_groups": -1, "server_group_members": -1}}}, nil)
	if err != nil {
		return fmt.Errorf("raise quota of %s: %w", project, err)
	}
	return nil
}

// booted is one accepted POST /servers.
type booted struct {
	ID        string
	RequestID string
	Sent      time.Time // request written
	Accepted  time.Time // 202 read
}

// boot POSTs one m1.tiny server of the demo image as demo; extra keys go
// into the server body (e.g. "networks").
func (e *Env) boot(ctx context.Context, name string, extra map[string]any) (booted, error) {
	tok, err := e.BootToken(ctx)
	if err != nil {
		return booted{}, err
	}
	return e.bootAt(ctx, e.Compute(), tok, name, extra, nil)
}

func (e *Env) bootAt(ctx context.Context, compute, token, name string, extra map[string]any, hints map[string]any) (booted, error) {
	srv := map[string]any{"name": name, "imageRef": e.ImageID, "flavorRef": "1"}
	for k, v := range extra {
		srv[k] = v
	}
	body := map[string]any{"server": srv}
	if hints != nil {
		body["os:scheduler_hints"] = hints
	}
	b := booted{RequestID: "req-" + uuid.NewString()}
	var out struct {
		Server struct {
			ID string `json:"id"`
		} `json:"server"`
	}
	b.Sent = time.Now()
	_, err := e.C.Do(ctx, osapi.Request{Method: http.MethodPost, URL: compute + "/servers", Token: token, Body: body,
		Header: map[string]string{"X-Openstack-Request-Id": b.RequestID}, OK: []int{202}}, &out)
	b.Accepted = time.Now()
	b.ID = out.Server.ID
	return b, err
}

// getServer reads one server as demo.
func (e *Env) getServer(ctx context.Context, id string) (osapi.Server, error) {
	var out struct {
		Server osapi.Server `json:"server"`
	}
	_, err := e.C.Do(ctx, osapi.Request{Method: http.MethodGet, URL: e.Compute() + "/servers/" + id, Token: e.Demo.Token}, &out)
	return out.Server, err
}

// waitActive polls GET /servers/{id} every interval until ACTIVE and
// returns when the poll first saw it.
func (e *Env) waitActive(ctx context.Context, id string, interval, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		s, err := e.getServer(ctx, id)
		now := time.Now()
		if err != nil {
			return now, err
		}
		switch s.Status {
		case "ACTIVE":
			return now, nil
		case "ERROR":
			msg := ""
			if s.Fault != nil {
				msg = s.Fault.Message
			}
			return now, fmt.Errorf("server %s went to ERROR: %s", id, msg)
		}
		if now.After(deadline) {
			return now, fmt.Errorf("server %s still %s after %s", id, s.Status, timeout)
		}
		if err := e.agentAlive(); err != nil {
			return now, err
		}
		select {
		case <-ctx.Done():
			return now, ctx.Err()
		case <-time.After(interval):
		}
	}
}

// agentAlive fails once the stack's hostagent has exited (a crash would
// otherwise look like a very slow boot).
func (e *Env) agentAlive() error {
	if p := e.Stack.Service(devstack.ServiceHostAgent); p != nil && !p.Running() {
		return fmt.Errorf("hostagent exited; see %s", p.LogPath())
	}
	return nil
}

// deleteServer sends DELETE /servers/{id}.
func (e *Env) deleteServer(ctx context.Context, id string) error {
	_, err := e.C.Do(ctx, osapi.Request{Method: http.MethodDelete, URL: e.Compute() + "/servers/" + id,
		Token: e.Demo.Token, OK: []int{204, 404}}, nil)
	return err
}

// waitGone polls until GET /servers/{id} is 404.
func (e *Env) waitGone(ctx context.Context, id string, interval, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		_, err := e.getServer(ctx, id)
		now := time.Now()
		if osapi.Code(err) == http.StatusNotFound {
			return now, nil
		}
		if err != nil {
			return now, err
		}
		if now.After(deadline) {
			return now, fmt.Errorf("server %s still there after %s", id, timeout)
		}
		select {
		case <-ctx.Done():
			return now, ctx.Err()
		case <-time.After(interval):
		}
	}
}

func (e *Env) deleteAndWait(ctx context.Context, id string, interval, timeout time.Duration) error {
	if err := e.deleteServer(ctx, id); err != nil {
		return err
	}
	_, err := e.waitGone(ctx, id, interval, timeout)
	return err
}

// createAction reads the "create" instance action of a server with events.
func (e *Env) action(ctx context.Context, id, requestID string) (osapi.Action, error) {
	var out struct {
		Action osapi.Action `json:"instanceAction"`
	}
	// Events are shown to a project member from microversion 2.51 on.
	_, err := e.C.Do(ctx, osapi.Request{Method: http.MethodGet, Token: e.Demo.Token,
		URL:    e.Compute() + "/servers/" + id + "/os-instance-actions/" + requestID,
		Header: map[string]string{"OpenStack-API-Version": "compute 2.51"}}, &out)
	return out.Action, err
}

// RSS is a process's resident set in MB (VmRSS of /proc/PID/status).
func RSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, err := strconv.Atoi(f[0])
				return float64(kb) / 1024, err
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// ServiceRSS is the RSS of one of the stack's services, in MB.
func (e *Env) ServiceRSS(name string) (float64, error) {
	p := e.Stack.Service(name)
	if p == nil || p.PID() == 0 {
		return 0, fmt.Errorf("service %s not running under this stack", name)
	}
	return RSS(p.PID())
}
