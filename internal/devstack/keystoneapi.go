package devstack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Projects the stack creates besides Keystone's "admin".
const (
	ProjectDemo    = "demo"
	ProjectAlt     = "alt"
	ProjectService = "service"
)

// errKeystoneStatus carries an unexpected HTTP status.
type errKeystoneStatus struct {
	method, path string
	code         int
	body         string
}

func (e *errKeystoneStatus) Error() string {
	return fmt.Sprintf("keystone: %s %s: status %d: %.300s", e.method, e.path, e.code, e.body)
}

// ksClient is a minimal Keystone v3 client: just the calls provisioning
// needs, each one idempotent from the caller's side.
type ksClient struct {
	base  string // e.g. http://127.0.0.1:5000/v3
	token string
	http  *http.Client
}

func (c *ksClient) do(ctx context.Context, method, path string, in, out any, okCodes ...int) (http.Header, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("X-Auth-Token", c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("keystone: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	ok := false
	for _, c := range okCodes {
		ok = ok || resp.StatusCode == c
	}
	if !ok {
		return nil, &errKeystoneStatus{method: method, path: path, code: resp.StatusCode, body: string(b)}
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return nil, fmt.Errorf("keystone: %s %s: decode: %w", method, path, err)
		}
	}
	return resp.Header, nil
}

// passwordAuth returns a token for user, scoped to project (both in the
// Default domain).
func (c *ksClient) passwordAuth(ctx context.Context, user, password, project string) (string, error) {
	in := map[string]any{"auth": map[string]any{
		"identity": map[string]any{
			"methods": []string{"password"},
			"password": map[string]any{"user": map[string]any{
				"name": user, "password": password, "domain": map[string]string{"id": "default"},
			}},
		},
		"scope": map[string]any{"project": map[string]any{
			"name": project, "domain": map[string]string{"id": "default"},
		}},
	}}
	h, err := c.do(ctx, http.MethodPost, "/auth/tokens?nocatalog", in, nil, http.StatusCreated)
	if err != nil {
		return "", err
	}
	return h.Get("X-Subject-Token"), nil
}

type ksEntity struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Type      string `json:"type,omitempty"`
	Interface string `json:"interface,omitempty"`
	URL       string `json:"url,omitempty"`
	RegionID  string `json:"region_id,omitempty"`
	ServiceID string `json:"service_id,omitempty"`
}

// list GETs a collection such as "projects" with a query.
func (c *ksClient) list(ctx context.Context, collection string, q url.Values) ([]ksEntity, error) {
	var out map[string]json.RawMessage
	if _, err := c.do(ctx, http.MethodGet, "/"+collection+"?"+q.Encode(), nil, &out, http.StatusOK); err != nil {
		return nil, err
	}
	var items []ksEntity
	if err := json.Unmarshal(out[collection], &items); err != nil {
		return nil, fmt.Errorf("keystone: decode %s: %w", collection, err)
	}
	return items, nil
}

// ensure finds the one entity of collection matching q, or creates it
// from body (wrapped as {singular: body}).
func (c *ksClient) ensure(ctx context.Context, collection, singular string, q url.Values, body map[string]any) (string, bool, error) {
	items, err := c.list(ctx, collection, q)
	if err != nil {
		return "", false, err
	}
	if len(items) > 0 {
		return items[0].ID, false, nil
	}
	var out map[string]ksEntity
	if _, err := c.do(ctx, http.MethodPost, "/"+collection, map[string]any{singular: body}, &out, http.StatusCreated); err != nil {
		return "", false, err
	}
	return out[singular].ID, true, nil
}

// provisionKeystone makes the projects, users, role assignments, services
// and endpoints a stack needs. Every step looks before it creates, so it
// runs on every Up; endpoint URLs follow port changes.
func (s *Stack) provisionKeystone(ctx context.Context) error {
	c := &ksClient{base: s.KeystoneURL(), http: &http.Client{}}
	token, err := c.passwordAuth(ctx, UserAdmin, s.secrets.Passwords[UserAdmin], "admin")
	if err != nil {
		return fmt.Errorf("keystone: admin login: %w", err)
	}
	c.token = token

	projects := map[string]string{}
	for _, name := range []string{ProjectDemo, ProjectAlt, ProjectService} {
		id, _, err := c.ensure(ctx, "projects", "project", url.Values{"name": {name}, "domain_id": {"default"}},
			map[string]any{"name": name, "domain_id": "default", "description": "Berth " + name + " project", "enabled": true})
		if err != nil {
			return err
		}
		projects[name] = id
	}
	roles := map[string]string{}
	for _, name := range []string{"admin", "member", "reader"} {
		items, err := c.list(ctx, "roles", url.Values{"name": {name}})
		if err != nil {
			return err
		}
		if len(items) == 0 {
			return fmt.Errorf("keystone: role %q missing after bootstrap", name)
		}
		roles[name] = items[0].ID
	}

	users := []struct {
		name, project string
		roles         []string
	}{
		{UserDemo, ProjectDemo, []string{"member", "reader"}},
		{UserAlt, ProjectAlt, []string{"member", "reader"}},
		{UserDemoReader, ProjectDemo, []string{"reader"}},
		{UserService, ProjectService, []string{"admin"}},
	}
	for _, u := range users {
		pw := s.secrets.Passwords[u.name]
		id, created, err := c.ensure(ctx, "users", "user", url.Values{"name": {u.name}, "domain_id": {"default"}},
			map[string]any{"name": u.name, "domain_id": "default", "password": pw, "default_project_id": projects[u.project], "enabled": true})
		if err != nil {
			return err
		}
		for _, r := range u.roles {
			path := fmt.Sprintf("/projects/%s/users/%s/roles/%s", projects[u.project], id, roles[r])
			if _, err := c.do(ctx, http.MethodPut, path, nil, nil, http.StatusNoContent); err != nil {
				return err
			}
		}
		if !created {
			if err := s.syncPassword(ctx, c, id, u.name, pw, u.project); err != nil {
				return err
			}
		}
	}

	for _, svc := range s.catalog() {
		id, _, err := c.ensure(ctx, "services", "service", url.Values{"type": {svc.typ}},
			map[string]any{"name": svc.name, "type": svc.typ, "description": svc.description, "enabled": true})
		if err != nil {
			return err
		}
		if err := c.ensureEndpoints(ctx, id, svc.url); err != nil {
			return err
		}
	}
	return nil
}

// syncPassword resets an existing user's password when it no longer
// matches secrets.json (the database outlived the secrets file).
func (s *Stack) syncPassword(ctx context.Context, c *ksClient, id, name, pw, project string) error {
	_, err := c.passwordAuth(ctx, name, pw, project)
	var st *errKeystoneStatus
	if err == nil || !errors.As(err, &st) || st.code != http.StatusUnauthorized {
		return err
	}
	s.log.Warn("resetting keystone password", "user", name)
	_, err = c.do(ctx, http.MethodPatch, "/users/"+id, map[string]any{"user": map[string]any{"password": pw}}, nil, http.StatusOK)
	return err
}

// ensureEndpoints gives a service exactly one public, internal and admin
// endpoint in RegionOne, all at u.
func (c *ksClient) ensureEndpoints(ctx context.Context, serviceID, u string) error {
	eps, err := c.list(ctx, "endpoints", url.Values{"service_id": {serviceID}})
	if err != nil {
		return err
	}
	for _, iface := range []string{"public", "internal", "admin"} {
		var found *ksEntity
		for i := range eps {
			e := &eps[i]
			if e.Interface != iface || (e.RegionID != RegionName && e.RegionID != "") {
				continue
			}
			if found != nil { // a duplicate: keep the first
				if _, err := c.do(ctx, http.MethodDelete, "/endpoints/"+e.ID, nil, nil, http.StatusNoContent); err != nil {
					return err
				}
				continue
			}
			found = e
		}
		switch {
		case found == nil:
			body := map[string]any{"endpoint": map[string]any{"service_id": serviceID, "interface": iface, "url": u, "region_id": RegionName, "enabled": true}}
			if _, err := c.do(ctx, http.MethodPost, "/endpoints", body, nil, http.StatusCreated); err != nil {
				return err
			}
		case found.URL != u || found.RegionID != RegionName:
			body := map[string]any{"endpoint": map[string]any{"url": u, "region_id": RegionName}}
			if _, err := c.do(ctx, http.MethodPatch, "/endpoints/"+found.ID, body, nil, http.StatusOK); err != nil {
				return err
			}
		}
	}
	return nil
}

type catalogService struct {
	name, typ, description, url string
}

func (s *Stack) catalog() []catalogService {
	return []catalogService{
		{"nova", "compute", "Berth compute (region)", s.ComputeURL()},
		{"glance", "image", "Berth image service (imagesvc)", s.ImageURL()},
		{"neutron", "network", "Berth networking (region)", s.NetworkURL()},
	}
}
