package session

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
)

// RefreshBefore is how long before its expiry a cached token stops being
// reused.
const RefreshBefore = 5 * time.Minute

// CachedToken is what the cache keeps for one identity: the token, when it
// expires, and the catalog it came with.
type CachedToken struct {
	AuthURL   string                 `json:"auth_url"`
	UserID    string                 `json:"user_id,omitempty"`
	ProjectID string                 `json:"project_id,omitempty"`
	Token     string                 `json:"token"`
	ExpiresAt time.Time              `json:"expires_at"`
	Catalog   *tokens.ServiceCatalog `json:"catalog"`
}

// Usable says whether the token may still be reused at now.
func (t *CachedToken) Usable(now time.Time) bool {
	return t != nil && t.Token != "" && t.Catalog != nil && now.Add(RefreshBefore).Before(t.ExpiresAt)
}

// Cache is a directory of cached tokens, one file per identity:
// token-<hash>.json, mode 0600, where the hash covers the auth URL, the
// user and the scope (never the secret).
type Cache struct {
	Dir string
}

// DefaultCacheDir is $XDG_CACHE_HOME/berth, else ~/.cache/berth.
func DefaultCacheDir(getenv func(string) string) string {
	if d := getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "berth")
	}
	home := getenv("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	if home == "" {
		return ""
	}
	return filepath.Join(home, ".cache", "berth")
}

// Key identifies the identity and scope of ao.
func Key(ao gophercloud.AuthOptions) string {
	parts := []string{
		strings.TrimRight(ao.IdentityEndpoint, "/"),
		"user", ao.UserID, ao.Username, ao.DomainID, ao.DomainName,
		"appcred", ao.ApplicationCredentialID, ao.ApplicationCredentialName,
		"project", ao.TenantID, ao.TenantName,
	}
	if s := ao.Scope; s != nil {
		parts = append(parts, "scope", s.ProjectID, s.ProjectName, s.DomainID, s.DomainName, s.TrustID)
		if s.System {
			parts = append(parts, "system")
		}
	}
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(sum[:16])
}

func (c Cache) path(key string) string { return filepath.Join(c.Dir, "token-"+key+".json") }

// Load returns the cached token for key, or nil when there is none (or it
// cannot be read: a broken cache only costs one authentication).
func (c Cache) Load(key string) *CachedToken {
	if c.Dir == "" {
		return nil
	}
	b, err := os.ReadFile(c.path(key))
	if err != nil {
		return nil
	}
	var t CachedToken
	if json.Unmarshal(b, &t) != nil {
		return nil
	}
	return &t
}

// Store writes t for key atomically with mode 0600 (the directory 0700).
func (c Cache) Store(key string, t *CachedToken) error {
	if c.Dir == "" {
		return nil
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(c.Dir, ".token-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), c.path(key))
}

// Remove forgets the token for key.
func (c Cache) Remove(key string) error {
	if c.Dir == "" {
		return nil
	}
	err := os.Remove(c.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
