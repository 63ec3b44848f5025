package session

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"

	"berth/client/sdk/fault"
)

// Session is an authenticated connection to one cloud. Create it with New;
// no request is made until a service client is asked for.
type Session struct {
	Config   *Config
	Provider *gophercloud.ProviderClient

	cache Cache
	key   string
	now   func() time.Time

	mu       sync.Mutex
	catalog  *tokens.ServiceCatalog
	hasToken bool
	// authCount counts Keystone authentications made by this session.
	authCount int
	fromCache bool
}

// New resolves the configuration (see Resolve) and prepares a session.
func New(o Options) (*Session, error) {
	cfg, err := Resolve(o)
	if err != nil {
		return nil, err
	}
	return NewFromConfig(cfg, o)
}

// NewFromConfig prepares a session for an already resolved configuration;
// o supplies the cache settings and user agent.
func NewFromConfig(cfg *Config, o Options) (*Session, error) {
	p, err := openstack.NewClient(cfg.Auth.IdentityEndpoint)
	if err != nil {
		return nil, fmt.Errorf("auth_url %q: %w", cfg.Auth.IdentityEndpoint, err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.TLS != nil {
		tr.TLSClientConfig = cfg.TLS
	}
	p.HTTPClient = http.Client{Transport: tr}
	if o.UserAgent != "" {
		p.UserAgent.Prepend(o.UserAgent)
	}
	s := &Session{Config: cfg, Provider: p, key: Key(cfg.Auth), now: time.Now}
	if !o.NoCache {
		dir := o.CacheDir
		if dir == "" {
			dir = DefaultCacheDir(o.getenv)
		}
		s.cache = Cache{Dir: dir}
	}
	p.EndpointLocator = s.locate
	p.ReauthFunc = s.reauth
	return s, nil
}

// Authentications is how many times this session asked Keystone for a
// token (0 when the cache served it).
func (s *Session) Authentications() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.authCount
}

// TokenFromCache reports whether the current token came from the cache.
func (s *Session) TokenFromCache() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fromCache
}

// CachePath is the file the token is cached in ("" with no cache).
func (s *Session) CachePath() string {
	if s.cache.Dir == "" {
		return ""
	}
	return s.cache.path(s.key)
}

// Token returns a usable token, from the cache or from Keystone.
func (s *Session) Token(ctx context.Context) (string, error) {
	if err := s.ensureToken(ctx); err != nil {
		return "", err
	}
	return s.Provider.Token(), nil
}

func (s *Session) ensureToken(ctx context.Context) error {
	s.mu.Lock()
	if s.hasToken {
		s.mu.Unlock()
		return nil
	}
	if t := s.cache.Load(s.key); t.Usable(s.now()) {
		s.Provider.SetToken(t.Token)
		s.catalog = t.Catalog
		s.hasToken, s.fromCache = true, true
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	return s.authenticate(ctx)
}

// reauth is the provider's ReauthFunc: a service answered 401, so the
// token (cached or not) is no good.
func (s *Session) reauth(ctx context.Context) error {
	_ = s.cache.Remove(s.key)
	return s.authenticate(ctx)
}

// Authenticate gets a fresh token from Keystone and caches it.
func (s *Session) Authenticate(ctx context.Context) error { return s.authenticate(ctx) }

func (s *Session) authenticate(ctx context.Context) error {
	tmp, err := openstack.NewClient(s.Config.Auth.IdentityEndpoint)
	if err != nil {
		return err
	}
	tmp.HTTPClient = s.Provider.HTTPClient
	tmp.UserAgent = s.Provider.UserAgent
	ao := s.Config.Auth
	ao.AllowReauth = false
	if err := openstack.Authenticate(ctx, tmp, ao); err != nil {
		return fmt.Errorf("authentication at %s failed: %w", ao.IdentityEndpoint, fault.From(err))
	}
	res, ok := tmp.GetAuthResult().(tokens.CreateResult)
	if !ok {
		return fmt.Errorf("authentication at %s: only Keystone v3 is supported", ao.IdentityEndpoint)
	}
	tok, err := res.ExtractToken()
	if err != nil {
		return err
	}
	catalog, err := res.ExtractServiceCatalog()
	if err != nil {
		return err
	}
	ct := &CachedToken{AuthURL: ao.IdentityEndpoint, Token: tok.ID, ExpiresAt: tok.ExpiresAt, Catalog: catalog}
	if u, err := res.ExtractUser(); err == nil && u != nil {
		ct.UserID = u.ID
	}
	if p, err := res.ExtractProject(); err == nil && p != nil {
		ct.ProjectID = p.ID
	}
	s.Provider.CopyTokenFrom(tmp)
	s.mu.Lock()
	s.catalog = catalog
	s.hasToken, s.fromCache = true, false
	s.authCount++
	s.mu.Unlock()
	// A cache that cannot be written only costs the next run a login.
	_ = s.cache.Store(s.key, ct)
	return nil
}

func (s *Session) locate(eo gophercloud.EndpointOpts) (string, error) {
	s.mu.Lock()
	catalog := s.catalog
	s.mu.Unlock()
	if catalog == nil {
		return "", fmt.Errorf("no service catalog (not authenticated)")
	}
	u, err := openstack.V3EndpointURL(catalog, eo)
	if err != nil {
		return "", fmt.Errorf("no %s endpoint (interface %s, region %q) in the service catalog", eo.Type, eo.Availability, eo.Region)
	}
	return u, nil
}

// Compute is a client for the compute service (Nova API, catalog type
// "compute").
func (s *Session) Compute(ctx context.Context) (*gophercloud.ServiceClient, error) {
	if err := s.ensureToken(ctx); err != nil {
		return nil, err
	}
	return openstack.NewComputeV2(s.Provider, s.Config.Endpoint)
}

// Image is a client for the image service (Glance v2, catalog type "image").
func (s *Session) Image(ctx context.Context) (*gophercloud.ServiceClient, error) {
	if err := s.ensureToken(ctx); err != nil {
		return nil, err
	}
	return openstack.NewImageV2(s.Provider, s.Config.Endpoint)
}

// Network is a client for the network service (Neutron v2.0, catalog type
// "network").
func (s *Session) Network(ctx context.Context) (*gophercloud.ServiceClient, error) {
	if err := s.ensureToken(ctx); err != nil {
		return nil, err
	}
	return openstack.NewNetworkV2(s.Provider, s.Config.Endpoint)
}

// Catalog is the service catalog of the current token.
func (s *Session) Catalog(ctx context.Context) (*tokens.ServiceCatalog, error) {
	if err := s.ensureToken(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.catalog, nil
}
