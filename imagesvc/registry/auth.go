package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"berth/imagesvc/store"
	"berth/internal/apierr"
	"berth/internal/keystone"
)

// Caller is who sent a registry request.
type Caller struct {
	// Identity is the Keystone identity (nil for a host agent).
	Identity *keystone.Identity
	// Agent is set for a host agent (the shared agent token as password):
	// it may pull any image and push none.
	Agent bool
}

func (c *Caller) viewer() store.Viewer {
	if c.Agent {
		return store.Viewer{Admin: true}
	}
	return store.Viewer{ProjectID: c.Identity.ProjectID, Admin: c.Identity.IsAdmin()}
}

// Authenticator tells who sent a request; scope is the project (name or
// id) the request's repository belongs to, "" for /v2/ and _catalog.
type Authenticator interface {
	Authenticate(ctx context.Context, r *http.Request, scope string) (*Caller, error)
}

// AgentUser is the user name host agents log in with (the password is the
// shared agent token).
const AgentUser = "berth-agent"

// KeystoneAuth authenticates registry requests with Keystone:
//
//   - HTTP basic auth with a Keystone user name and password (what
//     `docker login` stores): imagesvc asks Keystone for a token scoped to
//     the repository's project (POST /v3/auth/tokens, password method,
//     user and project in the Default domain); when the user has no role
//     there (pulling another project's public image), for a token scoped
//     to the user's default project. Answers are cached for the TTL, so a
//     changed password or removed role takes effect within it.
//   - X-Auth-Token: a Keystone token, validated as the Glance API does.
//   - basic auth as AgentUser with the agent token: a host agent.
type KeystoneAuth struct {
	url        string
	ttl        time.Duration
	hc         *http.Client
	validator  *keystone.Validator
	agentToken string
	now        func() time.Time

	group singleflight.Group
	mu    sync.Mutex
	cache map[[32]byte]authEntry
}

type authEntry struct {
	id    *keystone.Identity
	err   error
	until time.Time
}

// negativeTTL bounds how long a refused password is remembered.
const negativeTTL = 5 * time.Second

// NewKeystoneAuth returns an authenticator for the Keystone v3 endpoint
// url; validator checks X-Auth-Token; ttl is how long answers are cached.
func NewKeystoneAuth(url string, ttl time.Duration, validator *keystone.Validator, agentToken string, hc *http.Client) *KeystoneAuth {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &KeystoneAuth{url: strings.TrimRight(url, "/"), ttl: ttl, hc: hc, validator: validator,
		agentToken: agentToken, now: time.Now, cache: map[[32]byte]authEntry{}}
}

// Authenticate implements Authenticator.
func (a *KeystoneAuth) Authenticate(ctx context.Context, r *http.Request, scope string) (*Caller, error) {
	if tok := r.Header.Get("X-Auth-Token"); tok != "" && a.validator != nil {
		id, err := a.validator.Validate(ctx, tok)
		if err != nil {
			return nil, err
		}
		return &Caller{Identity: id}, nil
	}
	user, pass, ok := r.BasicAuth()
	if !ok || user == "" {
		return nil, apierr.Unauthenticatedf("authentication required")
	}
	if user == AgentUser {
		if a.agentToken == "" || subtle.ConstantTimeCompare([]byte(pass), []byte(a.agentToken)) != 1 {
			return nil, apierr.Unauthenticatedf("authentication required")
		}
		return &Caller{Agent: true}, nil
	}
	id, err := a.password(ctx, user, pass, scope)
	if err != nil {
		return nil, err
	}
	return &Caller{Identity: id}, nil
}

func (a *KeystoneAuth) password(ctx context.Context, user, pass, scope string) (*keystone.Identity, error) {
	key := sha256.Sum256([]byte(user + "\x00" + pass + "\x00" + scope))
	a.mu.Lock()
	e, ok := a.cache[key]
	a.mu.Unlock()
	if ok && a.now().Before(e.until) {
		return e.id, e.err
	}
	res, err, _ := a.group.Do(string(key[:]), func() (any, error) {
		id, err := a.authenticate(ctx, user, pass, scope)
		if err != nil && !apierr.Is(err, apierr.Unauthenticated) {
			return nil, err // Keystone trouble: not cached
		}
		until := a.now().Add(a.ttl)
		if err != nil {
			until = a.now().Add(min(a.ttl, negativeTTL))
		} else if !id.ExpiresAt.IsZero() && id.ExpiresAt.Before(until) {
			until = id.ExpiresAt
		}
		a.mu.Lock()
		if len(a.cache) > 10000 {
			a.cache = map[[32]byte]authEntry{}
		}
		a.cache[key] = authEntry{id: id, err: err, until: until}
		a.mu.Unlock()
		return id, err
	})
	if err != nil {
		return nil, err
	}
	return res.(*keystone.Identity), nil
}

var projectIDRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

// authenticate asks Keystone for a token scoped to scope (then to the
// user's default project).
func (a *KeystoneAuth) authenticate(ctx context.Context, user, pass, scope string) (*keystone.Identity, error) {
	if scope != "" {
		project := map[string]any{"name": scope, "domain": map[string]string{"id": "default"}}
		if projectIDRE.MatchString(scope) {
			project = map[string]any{"id": scope}
		}
		id, err := a.issue(ctx, user, pass, map[string]any{"project": project})
		if err == nil || !apierr.Is(err, apierr.Unauthenticated) {
			return id, err
		}
	}
	return a.issue(ctx, user, pass, nil)
}

// issue is POST /v3/auth/tokens with the password method.
func (a *KeystoneAuth) issue(ctx context.Context, user, pass string, scope map[string]any) (*keystone.Identity, error) {
	auth := map[string]any{"identity": map[string]any{
		"methods": []string{"password"},
		"password": map[string]any{"user": map[string]any{
			"name": user, "domain": map[string]string{"id": "default"}, "password": pass,
		}},
	}}
	if scope != nil {
		auth["scope"] = scope
	}
	body, _ := json.Marshal(map[string]any{"auth": auth})
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url+"/auth/tokens?nocatalog", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := a.hc.Do(req)
	if err != nil {
		return nil, apierr.Wrap(err, apierr.Unavailable, "The identity service is unavailable.")
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden ||
		resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusBadRequest:
		return nil, apierr.Unauthenticatedf("authentication required")
	default:
		return nil, apierr.Unavailablef("The identity service answered %d.", resp.StatusCode)
	}
	var tb tokenBody
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tb); err != nil {
		return nil, apierr.Wrap(err, apierr.Unavailable, "The identity service sent an unreadable token.")
	}
	id := &keystone.Identity{
		Token:     resp.Header.Get("X-Subject-Token"),
		UserID:    tb.Token.User.ID,
		UserName:  tb.Token.User.Name,
		ExpiresAt: tb.Token.ExpiresAt,
	}
	if p := tb.Token.Project; p != nil {
		id.ProjectID, id.ProjectName, id.DomainID = p.ID, p.Name, p.Domain.ID
	}
	for _, r := range tb.Token.Roles {
		id.Roles = append(id.Roles, r.Name)
	}
	return id, nil
}

// tokenBody is the part of Keystone's token response imagesvc reads.
type tokenBody struct {
	Token struct {
		ExpiresAt time.Time `json:"expires_at"`
		User      struct {
			ID   string `json:"id"`
			Name string `json:"name"`
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

var _ Authenticator = (*KeystoneAuth)(nil)

// String describes the authenticator for logs.
func (a *KeystoneAuth) String() string { return fmt.Sprintf("keystone %s", a.url) }
