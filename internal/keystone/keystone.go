// Package keystone validates Keystone v3 tokens for Berth's services, with a
// short cache, and carries the resulting identity in a request's context.
//
// A token validates itself (X-Auth-Token and X-Subject-Token are the same),
// which Keystone's default policy allows for the token's own subject, so the
// services need no credentials of their own. The cache bounds how long a
// revoked token is still accepted: at most TTL (see docs/api.md).
package keystone

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"berth/internal/apierr"
)

// Identity is who a validated token speaks for.
type Identity struct {
	Token       string    `json:"-"`
	UserID      string    `json:"user_id"`
	UserName    string    `json:"user_name"`
	ProjectID   string    `json:"project_id"`
	ProjectName string    `json:"project_name"`
	DomainID    string    `json:"domain_id"`
	Roles       []string  `json:"roles"`
	ExpiresAt   time.Time `json:"expires_at"`
}

// HasRole reports whether the identity holds role (case-insensitive).
func (id *Identity) HasRole(role string) bool {
	for _, r := range id.Roles {
		if strings.EqualFold(r, role) {
			return true
		}
	}
	return false
}

// IsAdmin reports whether the identity holds the admin role.
func (id *Identity) IsAdmin() bool { return id.HasRole("admin") }

// CanWrite reports whether the identity may create or change resources of
// its project: Nova's default policy gives that to member (and admin), not
// to reader.
func (id *Identity) CanWrite() bool { return id.IsAdmin() || id.HasRole("member") }

// Validator checks tokens against Keystone and caches the answers.
type Validator struct {
	baseURL string // e.g. http://127.0.0.1:5000/v3
	ttl     time.Duration
	hc      *http.Client
	now     func() time.Time

	group singleflight.Group
	mu    sync.Mutex
	cache map[[32]byte]cached
}

type cached struct {
	id    *Identity
	until time.Time
}

// maxCached bounds the cache; past it, expired entries are dropped, and if
// that is not enough the cache starts over.
const maxCached = 50000

// NewValidator returns a validator for the Keystone v3 endpoint baseURL.
// ttl is how long a validation is trusted (a revoked token lives that long).
func NewValidator(baseURL string, ttl time.Duration, hc *http.Client) *Validator {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &Validator{
		baseURL: strings.TrimRight(baseURL, "/"),
		ttl:     ttl,
		hc:      hc,
		now:     time.Now,
		cache:   map[[32]byte]cached{},
	}
}

// BaseURL is the Keystone v3 URL, for WWW-Authenticate headers.
func (v *Validator) BaseURL() string { return v.baseURL }

// TTL is how long a validation is cached.
func (v *Validator) TTL() time.Duration { return v.ttl }

// Validate returns the identity of token. Errors are apierr kinds:
// Unauthenticated (missing, invalid, expired or revoked token), Forbidden
// (not project-scoped), Unavailable (Keystone unreachable or failing).
func (v *Validator) Validate(ctx context.Context, token string) (*Identity, error) {
	if token == "" {
		return nil, apierr.Unauthenticatedf("The request you have made requires authentication.")
	}
	key := sha256.Sum256([]byte(token))
	now := v.now()
	v.mu.Lock()
	c, ok := v.cache[key]
	v.mu.Unlock()
	if ok && now.Before(c.until) {
		id := *c.id
		id.Token = token
		return &id, nil
	}
	res, err, _ := v.group.Do(string(key[:]), func() (any, error) {
		id, err := v.fetch(ctx, token)
		if err != nil {
			return nil, err
		}
		until := v.now().Add(v.ttl)
		if id.ExpiresAt.Before(until) {
			until = id.ExpiresAt
		}
		v.store(key, cached{id: id, until: until})
		return id, nil
	})
	if err != nil {
		return nil, err
	}
	id := *res.(*Identity)
	id.Token = token
	return &id, nil
}

func (v *Validator) store(key [32]byte, c cached) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.cache) >= maxCached {
		now := v.now()
		for k, e := range v.cache {
			if !now.Before(e.until) {
				delete(v.cache, k)
			}
		}
		if len(v.cache) >= maxCached {
			v.cache = map[[32]byte]cached{}
		}
	}
	v.cache[key] = c
}

type tokenBody struct {
	Token struct {
		ExpiresAt time.Time `json:"expires_at"`
		User      struct {
			ID     string `json:"id"`
			Name   string `json:"name"`
			Domain struct {
				ID string `json:"id"`
			} `json:"domain"`
		} `json:"user"`
		Project *struct {
			ID     string `json:"id"`
			Name   string `json:"name"`
			Domain struct {
				ID string `json:"id"`
			} `json:"domain"`
		} `json:"project"`
		Roles []struct {
			Name string `json:"name"`
		} `json:"roles"`
	} `json:"token"`
}

func (v *Validator) fetch(ctx context.Context, token string) (*Identity, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.baseURL+"/auth/tokens?nocatalog", nil)
	if err != nil {
		return nil, fmt.Errorf("keystone request: %w", err)
	}
	req.Header.Set("X-Auth-Token", token)
	req.Header.Set("X-Subject-Token", token)
	req.Header.Set("Accept", "application/json")
	resp, err := v.hc.Do(req)
	if err != nil {
		return nil, apierr.Wrap(err, apierr.Unavailable, "The identity service is unavailable.")
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusUnauthorized, resp.StatusCode == http.StatusNotFound,
		resp.StatusCode == http.StatusForbidden:
		return nil, apierr.Unauthenticatedf("The request you have made requires authentication.")
	default:
		return nil, apierr.Unavailablef("The identity service answered %d.", resp.StatusCode)
	}
	var tb tokenBody
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tb); err != nil {
		return nil, apierr.Wrap(err, apierr.Unavailable, "The identity service sent an unreadable token.")
	}
	if tb.Token.Project == nil {
		return nil, apierr.Forbiddenf("The token is not scoped to a project.")
	}
	id := &Identity{
		UserID:      tb.Token.User.ID,
		UserName:    tb.Token.User.Name,
		ProjectID:   tb.Token.Project.ID,
		ProjectName: tb.Token.Project.Name,
		DomainID:    tb.Token.Project.Domain.ID,
		ExpiresAt:   tb.Token.ExpiresAt,
	}
	for _, r := range tb.Token.Roles {
		id.Roles = append(id.Roles, r.Name)
	}
	if !id.ExpiresAt.IsZero() && !v.now().Before(id.ExpiresAt) {
		return nil, apierr.Unauthenticatedf("The request you have made requires authentication.")
	}
	return id, nil
}

type ctxKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity in ctx, if any.
func FromContext(ctx context.Context) (*Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(*Identity)
	return id, ok
}

// identityHeaders are the headers keystonemiddleware sets for services
// behind it. A client must never be able to set them, so every service
// strips them from incoming requests before anything reads headers.
var identityHeaders = []string{
	"X-Identity-Status", "X-Service-Identity-Status", "X-Domain-Id", "X-Domain-Name",
	"X-Project-Id", "X-Project-Name", "X-Project-Domain-Id", "X-Project-Domain-Name",
	"X-User-Id", "X-User-Name", "X-User-Domain-Id", "X-User-Domain-Name",
	"X-Roles", "X-Service-Roles", "X-Is-Admin-Project", "X-Tenant-Id", "X-Tenant-Name",
	"X-Tenant", "X-User", "X-Role", "X-Service-Catalog", "X-Auth-Project-Id",
}

// StripIdentityHeaders removes client-sent identity headers from h.
func StripIdentityHeaders(h http.Header) {
	for _, k := range identityHeaders {
		h.Del(k)
	}
}
