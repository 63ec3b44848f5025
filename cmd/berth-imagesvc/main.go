// Command berth-imagesvc is Berth's image service: the Glance v2 images API
// and a Docker registry (OCI distribution) API on one listener, over
// PostgreSQL and a blob store where every layer is stored once, plus the
// internal endpoints host agents pull image data from and upload
// snapshots to.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"

	"berth/imagesvc/api"
	"berth/imagesvc/blob"
	"berth/imagesvc/content"
	"berth/imagesvc/registry"
	"berth/imagesvc/store"
	"berth/internal/keystone"
	"berth/internal/metrics"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	m := NewMain()
	if err := m.ParseFlags(os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "berth-imagesvc:", err)
		os.Exit(2)
	}
	if err := m.Run(ctx); err != nil {
		m.Logger.Error("cannot start", "err", err)
		m.Close()
		os.Exit(1)
	}
	<-ctx.Done()
	m.Logger.Info("shutting down")
	if err := m.Close(); err != nil {
		m.Logger.Error("shutdown", "err", err)
		os.Exit(1)
	}
}

// Main is the program: configuration in, a running service out.
type Main struct {
	Listen         string
	DSN            string
	KeystoneURL    string
	DataDir        string
	AgentTokenFile string
	PublicURL      string
	TokenCacheTTL  time.Duration
	// MaxImageBytes caps an image's data (Glance upload, stage, registry
	// push); past it the answer is 413.
	MaxImageBytes int64
	// UploadLease is how long an upload's lease lasts between renewals;
	// an upload whose process died goes back to queued after it.
	UploadLease time.Duration
	// GCGrace keeps unreferenced blobs this long after their last use;
	// GCInterval is how often a full garbage collection runs.
	GCGrace    time.Duration
	GCInterval time.Duration
	// DBWait is how long to wait for PostgreSQL to answer at start.
	DBWait time.Duration
	Logger *slog.Logger

	ln      net.Listener
	srv     *http.Server
	db      *sqlx.DB
	api     *api.Server
	reg     *registry.Registry
	janitor *janitor
}

// NewMain returns a Main with the defaults.
func NewMain() *Main {
	return &Main{
		Listen:        "127.0.0.1:9292",
		KeystoneURL:   "http://127.0.0.1:5000/v3",
		TokenCacheTTL: 30 * time.Second,
		MaxImageBytes: api.DefaultMaxImageSize,
		UploadLease:   api.DefaultUploadLease,
		GCGrace:       content.DefaultGCGrace,
		GCInterval:    10 * time.Minute,
		DBWait:        30 * time.Second,
		Logger:        slog.New(slog.NewTextHandler(os.Stderr, nil)),
	}
}

// ParseFlags reads the command line into m.
func (m *Main) ParseFlags(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("berth-imagesvc", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&m.Listen, "listen", m.Listen, "address to serve the API on")
	fs.StringVar(&m.DSN, "db", m.DSN, "PostgreSQL DSN (required)")
	fs.StringVar(&m.KeystoneURL, "keystone-url", m.KeystoneURL, "Keystone v3 endpoint tokens are validated against")
	fs.StringVar(&m.DataDir, "data-dir", m.DataDir, "directory for image data (required)")
	fs.StringVar(&m.AgentTokenFile, "agent-token-file", m.AgentTokenFile, "file holding the shared host-agent token (required)")
	fs.StringVar(&m.PublicURL, "public-url", m.PublicURL, "URL clients reach this service at (default: the request's host)")
	fs.DurationVar(&m.TokenCacheTTL, "token-cache-ttl", m.TokenCacheTTL, "how long a validated token (or registry password) is trusted (a revoked token lives this long)")
	fs.Int64Var(&m.MaxImageBytes, "max-image-bytes", m.MaxImageBytes, "largest image data accepted, in bytes (413 past it)")
	fs.DurationVar(&m.UploadLease, "upload-lease", m.UploadLease, "an upload whose process died is put back to queued this long after its last renewal")
	fs.DurationVar(&m.GCGrace, "gc-grace", m.GCGrace, "unreferenced layer blobs are kept this long after their last use")
	fs.DurationVar(&m.GCInterval, "gc-interval", m.GCInterval, "how often a full garbage collection of unused layers runs")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	m.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	return nil
}

// Run opens the database and blob store and starts serving; it returns
// once the listener is up (Addr tells where). Close stops it.
func (m *Main) Run(ctx context.Context) error {
	var missing []string
	for flag, v := range map[string]string{"--db": m.DSN, "--data-dir": m.DataDir, "--agent-token-file": m.AgentTokenFile} {
		if v == "" {
			missing = append(missing, flag)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing required flags: %s", strings.Join(missing, ", "))
	}
	token, err := readToken(m.AgentTokenFile)
	if err != nil {
		return err
	}
	blobs, err := blob.NewFS(m.DataDir)
	if err != nil {
		return err
	}
	if m.MaxImageBytes <= 0 || m.UploadLease <= 0 || m.GCInterval <= 0 || m.GCGrace < 0 {
		return errors.New("--max-image-bytes, --upload-lease and --gc-interval must be positive, --gc-grace not negative")
	}
	m.db, err = store.Open(ctx, m.DSN, m.DBWait)
	if err != nil {
		return err
	}
	st := store.New(m.db)
	cs := content.New(blobs, st, m.Logger)
	cs.GCGrace = m.GCGrace
	validator := keystone.NewValidator(m.KeystoneURL, m.TokenCacheTTL, nil)
	m.api = api.New(api.Config{
		Store:        st,
		Blobs:        blobs,
		Content:      cs,
		Validator:    validator,
		AgentToken:   token,
		PublicURL:    m.PublicURL,
		MaxImageSize: m.MaxImageBytes,
		UploadLease:  m.UploadLease,
		Logger:       m.Logger,
	})
	m.reg = registry.New(registry.Config{
		Store:        st,
		Content:      cs,
		Auth:         registry.NewKeystoneAuth(m.KeystoneURL, m.TokenCacheTTL, validator, token, nil),
		PublicURL:    m.PublicURL,
		MaxImageSize: m.MaxImageBytes,
		Logger:       m.Logger,
	})
	// Images left saving by a previous run come back to queued now (or,
	// if their lease has not run out yet, at the janitor's next pass).
	m.janitor = startJanitor(st, cs, m.api, m.reg, m.UploadLease, m.GCInterval, m.Logger)
	m.ln, err = net.Listen("tcp", m.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	m.srv = &http.Server{
		// /metrics sits outside the Glance and registry handlers (no token,
		// no fault rendering): process-level and aggregate figures only.
		Handler:           metrics.New().Wrap("image", registry.Route(m.reg.Handler(), m.api.Handler())),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(m.Logger.Handler(), slog.LevelWarn),
	}
	go func() {
		if err := m.srv.Serve(m.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.Logger.Error("serve", "err", err)
		}
	}()
	m.Logger.Info("imagesvc listening", "addr", m.ln.Addr().String(), "keystone", m.KeystoneURL, "data_dir", m.DataDir)
	return nil
}

// Addr is the address the service listens on (after Run).
func (m *Main) Addr() string {
	if m.ln == nil {
		return ""
	}
	return m.ln.Addr().String()
}

// Close stops serving, letting requests in flight finish for a while, and
// closes the database.
func (m *Main) Close() error {
	var errs []error
	if m.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := m.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		}
	} else if m.ln != nil {
		m.ln.Close()
	}
	if m.janitor != nil {
		m.janitor.stop()
	}
	if m.api != nil {
		m.api.Close()
	}
	if m.reg != nil {
		m.reg.Close()
	}
	if m.db != nil {
		errs = append(errs, m.db.Close())
	}
	return errors.Join(errs...)
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("agent token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("agent token file %s is empty", path)
	}
	return t, nil
}
