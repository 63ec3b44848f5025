package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"berth/internal/devstack"
)

// transport is shared by the package's HTTP calls so the fd checks can
// close its idle connections before counting.
var transport = &http.Transport{MaxIdleConnsPerHost: 32, IdleConnTimeout: 30 * time.Second}

// httpClient does not follow redirects: the answer to the request sent is
// the one checked (gorilla/mux answers /v2/images/.. with a 301 to /v2,
// which is the registry's base).
var httpClient = &http.Client{Transport: transport, Timeout: 60 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// reply is one HTTP answer, body read.
type reply struct {
	code int
	hdr  http.Header
	body []byte
}

func (r reply) String() string {
	b := r.body
	if len(b) > 400 {
		b = append(b[:400:400], "…"...)
	}
	return fmt.Sprintf("%d %s", r.code, bytes.TrimSpace(b))
}

// call makes one request. body is nil, []byte or string (sent as is) or
// anything else (sent as JSON). hdr adds headers; "Content-Type" defaults
// to application/json when there is a body.
func call(method, url, token string, body any, hdr map[string]string) (reply, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return reply{}, err
		}
		rd = bytes.NewReader(j)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return reply{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	for k, v := range hdr {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return reply{}, err
	}
	return reply{code: resp.StatusCode, hdr: resp.Header, body: b}, nil
}

// api is call that fails the test on a transport error.
func api(t testing.TB, method, url, token string, body any, hdr ...map[string]string) reply {
	t.Helper()
	var h map[string]string
	if len(hdr) > 0 {
		h = hdr[0]
	}
	r, err := call(method, url, token, body, h)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

// expect is api that fails the test unless the status is one of codes.
func expect(t testing.TB, method, url, token string, body any, codes ...int) reply {
	t.Helper()
	r := api(t, method, url, token, body)
	for _, c := range codes {
		if r.code == c {
			return r
		}
	}
	t.Fatalf("%s %s = %s, want %v", method, url, r, codes)
	return r
}

func decode[T any](t testing.TB, r reply) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %s: %v", r, err)
	}
	return v
}

// token is a (cached) project-scoped token of one of the stack's users.
func token(t testing.TB, s *devstack.Stack, user string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok, err := s.Token(ctx, user)
	if err != nil {
		t.Fatalf("token for %s: %v", user, err)
	}
	return tok
}

// projectOf maps the stack's users to their projects' names.
var projectOf = map[string]string{
	devstack.UserAdmin:      "admin",
	devstack.UserDemo:       devstack.ProjectDemo,
	devstack.UserAlt:        devstack.ProjectAlt,
	devstack.UserDemoReader: devstack.ProjectDemo,
}

// freshToken asks Keystone for a new token (never cached by the stack), so
// a test may revoke it.
func freshToken(t testing.TB, s *devstack.Stack, user string) string {
	t.Helper()
	body := map[string]any{"auth": map[string]any{
		"identity": map[string]any{
			"methods": []string{"password"},
			"password": map[string]any{"user": map[string]any{
				"name": user, "password": s.Password(user), "domain": map[string]string{"id": "default"},
			}},
		},
		"scope": map[string]any{"project": map[string]any{
			"name": projectOf[user], "domain": map[string]string{"id": "default"},
		}},
	}}
	r := api(t, http.MethodPost, s.KeystoneURL()+"/auth/tokens?nocatalog", "", body)
	if r.code != http.StatusCreated || r.hdr.Get("X-Subject-Token") == "" {
		t.Fatalf("keystone password auth for %s: %s", user, r)
	}
	return r.hdr.Get("X-Subject-Token")
}

// projectID is the id of the project a token is scoped to.
func projectID(t testing.TB, s *devstack.Stack, tok string) string {
	t.Helper()
	r := api(t, http.MethodGet, s.KeystoneURL()+"/auth/tokens?nocatalog", tok, nil, map[string]string{"X-Subject-Token": tok})
	if r.code != http.StatusOK {
		t.Fatalf("keystone validate: %s", r)
	}
	v := decode[struct {
		Token struct {
			Project struct{ ID string } `json:"project"`
			User    struct{ ID string } `json:"user"`
		} `json:"token"`
	}](t, r)
	return v.Token.Project.ID
}

// Fault shapes. Each returns "" when body is the service's own fault for
// status, else what is wrong.

func novaFaultProblem(status int, body []byte) string {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return "not a JSON object: " + err.Error()
	}
	if len(m) != 1 {
		return fmt.Sprintf("want exactly one top-level key, got %d", len(m))
	}
	want := novaFaultName(status)
	raw, ok := m[want]
	if !ok {
		for k := range m {
			return fmt.Sprintf("top-level key %q, want %q", k, want)
		}
	}
	var f struct {
		Code    *int    `json:"code"`
		Message *string `json:"message"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		return "fault is not an object: " + err.Error()
	}
	if f.Code == nil || *f.Code != status {
		return fmt.Sprintf("code %v, want %d", f.Code, status)
	}
	if f.Message == nil || *f.Message == "" {
		return "no message"
	}
	return ""
}

// novaFaultName follows Nova's wsgi.Fault names.
func novaFaultName(status int) string {
	switch status {
	case 400:
		return "badRequest"
	case 401:
		return "unauthorized"
	case 403:
		return "forbidden"
	case 404:
		return "itemNotFound"
	case 405:
		return "badMethod"
	case 406:
		return "notAcceptable"
	case 409:
		return "conflictingRequest"
	case 413, 429:
		return "overLimit"
	case 415:
		return "badMediaType"
	case 501:
		return "notImplemented"
	case 503:
		return "serviceUnavailable"
	}
	return "computeFault"
}

func glanceFaultProblem(status int, body []byte) string {
	var f struct {
		Message *string `json:"message"`
		Code    *string `json:"code"`
		Title   *string `json:"title"`
	}
	if err := json.Unmarshal(body, &f); err != nil {
		return "not a JSON object: " + err.Error()
	}
	if f.Message == nil || f.Title == nil || f.Code == nil {
		return "want message, code and title"
	}
	if !strings.HasPrefix(*f.Code, strconv.Itoa(status)+" ") {
		return fmt.Sprintf("code %q, want %d …", *f.Code, status)
	}
	return ""
}

func neutronFaultProblem(status int, body []byte) string {
	var f struct {
		E *struct {
			Type    *string `json:"type"`
			Message *string `json:"message"`
			Detail  *string `json:"detail"`
		} `json:"NeutronError"`
	}
	if err := json.Unmarshal(body, &f); err != nil {
		return "not a JSON object: " + err.Error()
	}
	if f.E == nil || f.E.Type == nil || f.E.Message == nil || f.E.Detail == nil {
		return "want {NeutronError: {type, message, detail}}"
	}
	return ""
}

// ociFaultProblem checks the registry's {"errors": [{"code", "message"}]}.
func ociFaultProblem(status int, body []byte) string {
	var f struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &f); err != nil {
		return "not a JSON object: " + err.Error()
	}
	if len(f.Errors) == 0 || f.Errors[0].Code == "" {
		return "want {errors: [{code, message}]}"
	}
	return ""
}

// server is the part of a Nova server body the tests read.
type server struct {
	ID       string         `json:"id"`
	Name     string         `json:"name"`
	Status   string         `json:"status"`
	TaskS    *string        `json:"OS-EXT-STS:task_state"`
	Power    int            `json:"OS-EXT-STS:power_state"`
	Host     string         `json:"OS-EXT-SRV-ATTR:host"`
	Fault    map[string]any `json:"fault"`
	TenantID string         `json:"tenant_id"`
}

// getServer returns the server, or ok=false on 404.
func getServer(t testing.TB, s *devstack.Stack, tok, id string) (server, bool) {
	t.Helper()
	r := api(t, http.MethodGet, s.ComputeURL()+"/servers/"+id, tok, nil)
	switch r.code {
	case http.StatusOK:
		return decode[struct{ Server server }](t, r).Server, true
	case http.StatusNotFound:
		return server{}, false
	}
	t.Fatalf("GET /servers/%s = %s", id, r)
	return server{}, false
}

// demoImageID is the id of the stack's seeded public image.
func demoImageID(t testing.TB, s *devstack.Stack) string {
	t.Helper()
	r := expect(t, http.MethodGet, s.ImageURL()+"/v2/images?name="+devstack.DemoImageName, token(t, s, devstack.UserDemo), nil, 200)
	imgs := decode[struct{ Images []struct{ ID, Status string } }](t, r).Images
	for _, i := range imgs {
		if i.Status == "active" {
			return i.ID
		}
	}
	t.Fatalf("no active %s image: %s", devstack.DemoImageName, r)
	return ""
}

// createServer boots a server and returns its id (202 expected).
func createServer(t testing.TB, s *devstack.Stack, tok, name, image, flavor string) string {
	t.Helper()
	r := api(t, http.MethodPost, s.ComputeURL()+"/servers", tok, map[string]any{
		"server": map[string]any{"name": name, "imageRef": image, "flavorRef": flavor},
	})
	if r.code != http.StatusAccepted {
		t.Fatalf("create server %s: %s", name, r)
	}
	return decode[struct{ Server struct{ ID string } }](t, r).Server.ID
}

// waitServer polls until done(server, exists) or the timeout passes, and
// returns the last view.
func waitServer(t testing.TB, s *devstack.Stack, tok, id string, timeout time.Duration, what string, done func(server, bool) bool) (server, bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		srv, ok := getServer(t, s, tok, id)
		if done(srv, ok) {
			return srv, ok
		}
		if time.Now().After(deadline) {
			t.Fatalf("server %s: not %s after %s (status %s, task %v, exists %v)", id, what, timeout, srv.Status, deref(srv.TaskS), ok)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func deref(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

func isStatus(want ...string) func(server, bool) bool {
	return func(s server, ok bool) bool {
		if !ok {
			return false
		}
		for _, w := range want {
			if s.Status == w && s.TaskS == nil {
				return true
			}
		}
		return false
	}
}

func isGone(_ server, ok bool) bool { return !ok }

// action posts a server action.
func action(t testing.TB, s *devstack.Stack, tok, id string, body any) reply {
	t.Helper()
	return api(t, http.MethodPost, s.ComputeURL()+"/servers/"+id+"/action", tok, body)
}

// raiseQuota lets project run n servers (admin).
func raiseQuota(t testing.TB, s *devstack.Stack, project string, n int) {
	t.Helper()
	expect(t, http.MethodPut, s.ComputeURL()+"/os-quota-sets/"+project, token(t, s, devstack.UserAdmin),
		map[string]any{"quota_set": map[string]any{"instances": n, "cores": 4 * n, "ram": 1024 * n}}, 200)
}
