// Package keystonefake is a TEST DOUBLE of Keystone's token API, not
// Keystone: it answers GET /v3/auth/tokens (token validation) for tokens
// it issued, and POST /v3/auth/tokens with the password method (what the
// registry's docker login uses) for users added with AddUser, in
// Keystone's response shapes. Tests use it so they run without a Keystone;
// the real Keystone is exercised by the end-to-end suite.
package keystonefake

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Keystone is the fake token API server.
type Keystone struct {
	srv       *httptest.Server
	mu        sync.Mutex
	tokens    map[string]token
	calls     int
	passwords int               // password authentications answered
	projects  map[string]string // id → name
	users     map[string]user
}

type token struct {
	project string // "" for an unscoped token
	user    string
	roles   []string
	expires time.Time
}

type user struct {
	password       string
	defaultProject string
	roles          map[string][]string // project id → roles
}

// New starts a fake Keystone, closed when the test ends.
func New(tb testing.TB) *Keystone {
	k := &Keystone{tokens: map[string]token{}, projects: map[string]string{}, users: map[string]user{}}
	k.srv = httptest.NewServer(http.HandlerFunc(k.serve))
	tb.Cleanup(k.srv.Close)
	return k
}

// URL is the Keystone v3 endpoint, e.g. http://127.0.0.1:1234/v3.
func (k *Keystone) URL() string { return k.srv.URL + "/v3" }

// Close stops the server (to test Keystone being unreachable).
func (k *Keystone) Close() { k.srv.Close() }

// Calls is how many validations the fake answered.
func (k *Keystone) Calls() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.calls
}

// Passwords is how many password authentications the fake answered.
func (k *Keystone) Passwords() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.passwords
}

// AddProject names project id (tokens of other projects are named
// "name-<id>").
func (k *Keystone) AddProject(id, name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.projects[id] = name
}

// AddUser adds a user who can log in with password, with roles per
// project id; defaultProject is where an unscoped login lands.
func (k *Keystone) AddUser(name, password, defaultProject string, roles map[string][]string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.users[name] = user{password: password, defaultProject: defaultProject, roles: roles}
}

func (k *Keystone) projectName(id string) string {
	if n, ok := k.projects[id]; ok {
		return n
	}
	return "name-" + id
}

// Issue returns a new token scoped to project with roles, valid an hour.
func (k *Keystone) Issue(project string, roles ...string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.issueLocked(token{project: project, user: "user-" + project, roles: roles})
}

func (k *Keystone) issueLocked(tok token) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	t := "gAAAAA" + hex.EncodeToString(b)
	tok.expires = time.Now().Add(time.Hour).UTC()
	k.tokens[t] = tok
	return t
}

// Revoke makes token invalid.
func (k *Keystone) Revoke(t string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.tokens, t)
}

func (k *Keystone) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/v3/auth/tokens" {
		k.password(w, r)
		return
	}
	if r.Method != http.MethodGet || r.URL.Path != "/v3/auth/tokens" {
		http.NotFound(w, r)
		return
	}
	k.mu.Lock()
	k.calls++
	_, callerOK := k.tokens[r.Header.Get("X-Auth-Token")]
	tok, ok := k.tokens[r.Header.Get("X-Subject-Token")]
	k.mu.Unlock()
	if !callerOK {
		writeErr(w, http.StatusUnauthorized, "The request you have made requires authentication.")
		return
	}
	if !ok {
		writeErr(w, http.StatusNotFound, "Could not find token.")
		return
	}
	k.mu.Lock()
	body := k.tokenBody(tok)
	k.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Subject-Token", r.Header.Get("X-Subject-Token"))
	_ = json.NewEncoder(w).Encode(body)
}

func (k *Keystone) tokenBody(tok token) map[string]any {
	roles := []map[string]string{}
	for _, name := range tok.roles {
		roles = append(roles, map[string]string{"id": "role-" + name, "name": name})
	}
	t := map[string]any{
		"methods":    []string{"password"},
		"expires_at": tok.expires.Format("2006-01-02T15:04:05.000000Z"),
		"issued_at":  time.Now().UTC().Format("2006-01-02T15:04:05.000000Z"),
		"user": map[string]any{"id": tok.user, "name": tok.user,
			"domain": map[string]string{"id": "default", "name": "Default"}},
		"roles": roles,
	}
	if tok.project != "" {
		t["project"] = map[string]any{"id": tok.project, "name": k.projectName(tok.project),
			"domain": map[string]string{"id": "default", "name": "Default"}}
	}
	return map[string]any{"token": t}
}

// password answers POST /v3/auth/tokens with the password method: 201
// with a token scoped to the requested project (by id, or by name in the
// default domain), to the user's default project when no scope is asked
// for, 401 for a wrong password or a project the user has no role on.
func (k *Keystone) password(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Auth struct {
			Identity struct {
				Methods  []string `json:"methods"`
				Password struct {
					User struct {
						Name     string `json:"name"`
						Password string `json:"password"`
					} `json:"user"`
				} `json:"password"`
			} `json:"identity"`
			Scope *struct {
				Project *struct {
					ID   string `json:"id"`
					Name string `json:"name"`
				} `json:"project"`
			} `json:"scope"`
		} `json:"auth"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, "Malformed request body.")
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.passwords++
	pw := req.Auth.Identity.Password.User
	u, ok := k.users[pw.Name]
	if !ok || u.password != pw.Password {
		writeErr(w, http.StatusUnauthorized, "The request you have made requires authentication.")
		return
	}
	project := u.defaultProject
	if sc := req.Auth.Scope; sc != nil && sc.Project != nil {
		project = sc.Project.ID
		if project == "" {
			project = ""
			for id, name := range k.projects {
				if name == sc.Project.Name {
					project = id
				}
			}
		}
		if _, has := u.roles[project]; !has || project == "" {
			writeErr(w, http.StatusUnauthorized, "The request you have made requires authentication.")
			return
		}
	}
	tok := token{project: project, user: pw.Name, roles: u.roles[project]}
	if _, has := u.roles[project]; !has {
		tok.project = ""
	}
	t := k.issueLocked(tok)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Subject-Token", t)
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(k.tokenBody(k.tokens[t]))
}

func writeErr(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code": status, "message": msg, "title": http.StatusText(status)}})
}
