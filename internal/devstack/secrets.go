package devstack

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// secrets are generated on the first Up and kept in RUNDIR/secrets.json,
// so a second Up finds the database and Keystone it left behind usable.
type secrets struct {
	// Passwords maps a Keystone user name to its password.
	Passwords map[string]string `json:"passwords"`
	// PGPasswords maps a PostgreSQL role to its password.
	PGPasswords map[string]string `json:"pg_passwords"`
	// AgentToken is the shared secret of region, imagesvc and hostagent.
	AgentToken string `json:"agent_token"`
}

// Keystone users the stack creates, and the PostgreSQL roles.
const (
	UserAdmin      = "admin"
	UserDemo       = "demo"
	UserAlt        = "alt"
	UserDemoReader = "demo-reader"
	// UserService is the service user Berth daemons may use to validate
	// tokens (admin role on project "service").
	UserService = "berth"

	pgRoleBerth    = "berth"
	pgRoleKeystone = "keystone"
)

func loadSecrets(runDir string) (*secrets, error) {
	path := filepath.Join(runDir, "secrets.json")
	s := &secrets{}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if err := json.Unmarshal(b, s); err != nil {
			return nil, fmt.Errorf("parse %s: %w", path, err)
		}
	}
	changed := false
	fill := func(m *map[string]string, keys ...string) {
		if *m == nil {
			*m = map[string]string{}
		}
		for _, k := range keys {
			if (*m)[k] == "" {
				(*m)[k] = randomHex(12)
				changed = true
			}
		}
	}
	fill(&s.Passwords, UserAdmin, UserDemo, UserAlt, UserDemoReader, UserService)
	fill(&s.PGPasswords, pgRoleBerth, pgRoleKeystone)
	if s.AgentToken == "" {
		s.AgentToken = randomHex(32)
		changed = true
	}
	if changed {
		b, err := json.MarshalIndent(s, "", "  ")
		if err != nil {
			return nil, err
		}
		if err := writeFileAtomic(path, b, 0o600); err != nil {
			return nil, err
		}
	}
	// The daemons read the agent token from a file of its own.
	tokenPath := filepath.Join(runDir, "agent-token")
	if cur, err := os.ReadFile(tokenPath); err != nil || strings.TrimSpace(string(cur)) != s.AgentToken {
		if err := writeFileAtomic(tokenPath, []byte(s.AgentToken+"\n"), 0o600); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// writeFileAtomic writes through a temporary file and a rename, so a
// reader never sees half a file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
