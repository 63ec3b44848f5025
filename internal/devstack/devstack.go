// Package devstack brings a whole Berth stack up on one machine:
// PostgreSQL, Docker, Open vSwitch, Keystone, region, imagesvc and a
// hostagent, with projects, users, a catalog, a demo image and a
// clouds.yaml. `make run` and the end-to-end tests use it.
//
// Everything lives in a run directory and each step reuses what an earlier
// Up left there (passwords, database, Fernet keys). Close stops, in
// reverse order and by PID, exactly the processes Up started.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/docker/docker/client"
	"golang.org/x/sync/errgroup"
)

// Stack is a running stack. Its methods are safe for concurrent use.
type Stack struct {
	cfg     Config
	log     *slog.Logger
	secrets *secrets
	docker  *client.Client
	// userClouds is the user-level clouds.yaml we merged into, if any.
	userClouds string

	mu        sync.Mutex
	teardowns []teardown // in start order
	closed    bool
	tokens    map[string]cachedToken
}

// teardown undoes one step of Up: stops a process or runs fn.
type teardown struct {
	name string
	proc *Process
	fn   func() error
}

type cachedToken struct {
	token   string
	expires time.Time
}

// step names a step's errors and logs its duration.
func (s *Stack) step(name string, fn func() error) func() error {
	return func() error {
		t := time.Now()
		if err := fn(); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		s.log.Debug("step done", "step", name, "took", time.Since(t).Round(time.Millisecond))
		return nil
	}
}

// Up brings the stack up. On error it stops whatever it had started.
func Up(ctx context.Context, cfg Config) (_ *Stack, err error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("devstack: must run as root (dockerd, OVS, and the hostagent's veths need it)")
	}
	s := &Stack{cfg: cfg, log: cfg.Log, tokens: map[string]cachedToken{}}
	defer func() {
		if err != nil {
			if cerr := s.Close(); cerr != nil {
				s.log.Warn("cleanup after failed start", "err", cerr)
			}
		}
	}()
	start := time.Now()
	if err := s.prepareRunDir(); err != nil {
		return nil, err
	}
	if s.secrets, err = loadSecrets(cfg.RunDir); err != nil {
		return nil, err
	}

	// Phase 1 steps are independent of each other; Keystone's key
	// repositories and the demo image archive need nothing running.
	var freshKeystoneDB bool
	g, gctx := errgroup.WithContext(ctx)
	g.Go(s.step("postgres", func() (err error) { freshKeystoneDB, err = s.startPostgres(gctx); return err }))
	g.Go(s.step("docker", func() error { return s.ensureDocker(gctx) }))
	g.Go(s.step("ovs", func() error { return s.ensureOVS(gctx) }))
	g.Go(s.step("keystone keys", func() error { return s.setupKeystoneKeys(gctx) }))
	if !cfg.InfraOnly {
		g.Go(s.step("demo image", func() error { _, err := s.demoImageFile(gctx); return err }))
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if cfg.PurgeOnClose {
		// Runs after the hostagent has stopped, before OVS and Docker go.
		s.addTeardown("purge", s.purge)
	}
	if err := s.step("keystone", func() error { return s.startKeystone(ctx, freshKeystoneDB) })(); err != nil {
		return nil, err
	}
	if !cfg.InfraOnly {
		if err := s.step("daemons", func() error { return s.startDaemons(ctx) })(); err != nil {
			return nil, err
		}
		if err := s.step("seed", func() error { return s.seedDemoImage(ctx) })(); err != nil {
			return nil, err
		}
	}
	if err := s.step("clouds", s.writeClouds)(); err != nil {
		return nil, err
	}
	s.log.Info("stack up", "run_dir", cfg.RunDir, "took", time.Since(start).Round(time.Millisecond))
	return s, nil
}

func (s *Stack) prepareRunDir() error {
	for _, d := range []string{"", "logs", "run", "images", "agent"} {
		if err := os.MkdirAll(filepath.Join(s.cfg.RunDir, d), 0o755); err != nil {
			return err
		}
	}
	// PostgreSQL runs as user postgres and must be able to pass through.
	fi, err := os.Stat(s.cfg.RunDir)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o001 == 0 {
		if err := os.Chmod(s.cfg.RunDir, fi.Mode().Perm()|0o011); err != nil {
			return err
		}
	}
	return nil
}

func (s *Stack) addProcess(spec procSpec) *Process {
	p := newProcess(s.cfg.RunDir, spec, s.log)
	s.mu.Lock()
	s.teardowns = append(s.teardowns, teardown{name: spec.name, proc: p})
	s.mu.Unlock()
	return p
}

func (s *Stack) removeProcess(p *Process) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.teardowns = slices.DeleteFunc(s.teardowns, func(t teardown) bool { return t.proc == p })
}

func (s *Stack) addTeardown(name string, fn func() error) {
	s.mu.Lock()
	s.teardowns = append(s.teardowns, teardown{name: name, fn: fn})
	s.mu.Unlock()
}

// Close stops everything Up started, newest first. It is safe to call
// more than once.
func (s *Stack) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	tds := slices.Clone(s.teardowns)
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	others, err := s.otherStacks(ctx)
	cancel()
	if err != nil {
		s.log.Warn("cannot tell whether other stacks run", "err", err)
	}
	var errs []error
	for _, td := range slices.Backward(tds) {
		var err error
		switch {
		case td.proc != nil && td.proc.spec.keepIfShared && len(others) > 0:
			s.log.Info("leaving running for other stacks", "service", td.name, "pid", td.proc.PID(), "stacks", others)
		case td.proc != nil:
			err = td.proc.stop()
		default:
			err = td.fn()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", td.name, err))
		}
	}
	if s.docker != nil {
		s.docker.Close()
	}
	return errors.Join(errs...)
}

// purge removes what the hostagent created for this stack's host.
func (s *Stack) purge() error {
	if s.docker == nil {
		return nil
	}
	n, err := purgeContainers(context.Background(), s.docker, s.cfg.HostName)
	if n > 0 {
		s.log.Info("removed leftover containers", "host", s.cfg.HostName, "count", n)
	}
	return err
}

// Service returns a process the stack started, e.g. ServiceHostAgent, or
// nil when it did not start (or only uses) that service.
func (s *Stack) Service(name string) *Process {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, td := range s.teardowns {
		if td.proc != nil && td.proc.Name() == name {
			return td.proc
		}
	}
	return nil
}

// KillService sends sig to a service and, for SIGKILL, SIGTERM and
// SIGINT, waits until it has exited. RestartService starts it again.
func (s *Stack) KillService(name string, sig syscall.Signal) error {
	p := s.Service(name)
	if p == nil {
		return fmt.Errorf("devstack: no service %q", name)
	}
	if err := p.signal(sig); err != nil {
		return err
	}
	switch sig {
	case syscall.SIGKILL, syscall.SIGTERM, syscall.SIGINT:
		if !p.wait(stopGrace + 5*time.Second) {
			return fmt.Errorf("devstack: %s did not exit after %s", name, sig)
		}
	}
	return nil
}

// RestartService stops a service (if it runs) and starts it again with the
// same command line, returning once it is ready.
func (s *Stack) RestartService(ctx context.Context, name string) error {
	p := s.Service(name)
	if p == nil {
		return fmt.Errorf("devstack: no service %q", name)
	}
	if err := p.stop(); err != nil {
		return err
	}
	return p.start(ctx)
}

// Config returns the stack's configuration with paths made absolute.
func (s *Stack) Config() Config { return s.cfg }

// RunDir is the stack's run directory.
func (s *Stack) RunDir() string { return s.cfg.RunDir }

// Bridge is the stack's OVS bridge.
func (s *Stack) Bridge() string { return s.cfg.Bridge }

// HostName is the name the stack's hostagent registers.
func (s *Stack) HostName() string { return s.cfg.HostName }

// CIDR is the default network's subnet, e.g. "10.99.0.0/24".
func (s *Stack) CIDR() string { return s.cfg.CIDR }

// Gateway is the bridge's address, e.g. "10.99.0.1".
func (s *Stack) Gateway() string { return s.cfg.gateway().Addr().String() }

// Password is the Keystone password of one of the stack's users
// (UserAdmin, UserDemo, UserAlt, UserDemoReader, UserService).
func (s *Stack) Password(user string) string { return s.secrets.Passwords[user] }

// AgentToken is the shared secret on region's internal API.
func (s *Stack) AgentToken() string { return s.secrets.AgentToken }

// AdminDSN reaches the "postgres" database as role berth, which may create
// databases (for tests that want one of their own).
func (s *Stack) AdminDSN() string { return s.dsn("postgres") }

// UserCloudsYAML is the user-level clouds.yaml Up merged the clouds into,
// or "" when it did not.
func (s *Stack) UserCloudsYAML() string { return s.userClouds }

// Docker is a client of the Docker daemon the stack uses.
func (s *Stack) Docker() *client.Client { return s.docker }

// projectOf is the project a user's token is scoped to.
func projectOf(user string) string {
	for _, c := range cloudUsers {
		if c.user == user {
			return c.project
		}
	}
	if user == UserService {
		return ProjectService
	}
	return ""
}

// Token returns a project-scoped Keystone token for one of the stack's
// users, cached until shortly before it expires.
func (s *Stack) Token(ctx context.Context, user string) (string, error) {
	s.mu.Lock()
	ct, ok := s.tokens[user]
	s.mu.Unlock()
	if ok && time.Now().Before(ct.expires) {
		return ct.token, nil
	}
	project := projectOf(user)
	if project == "" {
		return "", fmt.Errorf("devstack: unknown user %q", user)
	}
	c := &ksClient{base: s.KeystoneURL(), http: &http.Client{}}
	tok, err := c.passwordAuth(ctx, user, s.secrets.Passwords[user], project)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	s.tokens[user] = cachedToken{token: tok, expires: time.Now().Add(30 * time.Minute)}
	s.mu.Unlock()
	return tok, nil
}

// Env is what a client process needs to use the stack: the clouds.yaml
// path and cloud, plus BERTH_TEST_* variables for tests that talk to the
// infrastructure directly.
func (s *Stack) Env(cloud string) []string {
	env := []string{
		"OS_CLIENT_CONFIG_FILE=" + s.CloudsYAML(),
		"OS_CLOUD=" + cloud,
		"BERTH_TEST_PG_DSN=" + s.AdminDSN(),
		"BERTH_TEST_OVSDB=" + s.OVSDB(),
		"BERTH_TEST_BRIDGE=" + s.cfg.Bridge,
		"BERTH_TEST_KEYSTONE_URL=" + s.KeystoneURL(),
		"BERTH_TEST_CLOUDS_YAML=" + s.CloudsYAML(),
	}
	if !s.cfg.InfraOnly {
		env = append(env,
			"BERTH_TEST_COMPUTE_URL="+s.ComputeURL(),
			"BERTH_TEST_NETWORK_URL="+s.NetworkURL(),
			"BERTH_TEST_IMAGE_URL="+s.ImageURL(),
		)
	}
	return env
}
