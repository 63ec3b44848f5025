package keystone

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"berth/internal/apierr"
)

// fakeKeystone is a test double of Keystone's GET /v3/auth/tokens: tokens
// in valid are accepted (and can be revoked by deleting them).
type fakeKeystone struct {
	valid map[string]string // token -> project id
	calls atomic.Int32
	down  atomic.Bool
}

func (f *fakeKeystone) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.calls.Add(1)
	if f.down.Load() {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	tok := r.Header.Get("X-Subject-Token")
	proj, ok := f.valid[tok]
	if !ok || r.Header.Get("X-Auth-Token") != tok {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if proj == "" {
		_, _ = w.Write([]byte(`{"token": {"expires_at": "` + exp + `", "user": {"id": "u1", "name": "demo"}, "roles": []}}`))
		return
	}
	_, _ = w.Write([]byte(`{"token": {"expires_at": "` + exp + `", "user": {"id": "u1", "name": "demo", "domain": {"id": "default"}},
		"project": {"id": "` + proj + `", "name": "demo", "domain": {"id": "default"}},
		"roles": [{"name": "member"}, {"name": "reader"}]}}`))
}

func TestValidate(t *testing.T) {
	fk := &fakeKeystone{valid: map[string]string{"good": "p1", "unscoped": ""}}
	srv := httptest.NewServer(fk)
	defer srv.Close()
	v := NewValidator(srv.URL+"/v3", time.Minute, nil)
	ctx := context.Background()

	tests := []struct {
		name  string
		token string
		kind  apierr.Kind
	}{
		{"missing token", "", apierr.Unauthenticated},
		{"garbage token", "garbage", apierr.Unauthenticated},
		{"unscoped token", "unscoped", apierr.Forbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := v.Validate(ctx, tt.token)
			if got := apierr.KindOf(err); got != tt.kind || err == nil {
				t.Fatalf("Validate(%q) err = %v (kind %d), want kind %d", tt.token, err, got, tt.kind)
			}
		})
	}

	id, err := v.Validate(ctx, "good")
	if err != nil {
		t.Fatalf("Validate(good): %v", err)
	}
	if id.ProjectID != "p1" || !id.HasRole("member") || id.IsAdmin() || !id.CanWrite() {
		t.Errorf("identity = %+v, want project p1 with member role, not admin", id)
	}
	calls := fk.calls.Load()
	again, err := v.Validate(ctx, "good")
	if err != nil {
		t.Fatal(err)
	}
	// Services forward the caller's token (region → imagesvc), so a cached
	// identity must carry it as well as a fresh one.
	if id.Token != "good" || again.Token != "good" {
		t.Errorf("tokens on identities: fresh %q, cached %q; want both \"good\"", id.Token, again.Token)
	}
	if fk.calls.Load() != calls {
		t.Errorf("second validation called Keystone again; want it cached")
	}
}

func TestRevokedTokenLivesAtMostTTL(t *testing.T) {
	fk := &fakeKeystone{valid: map[string]string{"tok": "p1"}}
	srv := httptest.NewServer(fk)
	defer srv.Close()
	now := time.Now()
	v := NewValidator(srv.URL+"/v3", 30*time.Second, nil)
	v.now = func() time.Time { return now }
	ctx := context.Background()
	if _, err := v.Validate(ctx, "tok"); err != nil {
		t.Fatal(err)
	}
	delete(fk.valid, "tok") // revoked in Keystone
	now = now.Add(29 * time.Second)
	if _, err := v.Validate(ctx, "tok"); err != nil {
		t.Fatalf("within TTL: %v, want still accepted from cache", err)
	}
	now = now.Add(2 * time.Second)
	if _, err := v.Validate(ctx, "tok"); !apierr.Is(err, apierr.Unauthenticated) {
		t.Fatalf("after TTL: err = %v, want unauthenticated", err)
	}
}

func TestKeystoneDown(t *testing.T) {
	fk := &fakeKeystone{valid: map[string]string{}}
	fk.down.Store(true)
	srv := httptest.NewServer(fk)
	v := NewValidator(srv.URL+"/v3", time.Minute, nil)
	if _, err := v.Validate(context.Background(), "x"); !apierr.Is(err, apierr.Unavailable) {
		t.Errorf("keystone 500: err = %v, want unavailable", err)
	}
	srv.Close()
	if _, err := v.Validate(context.Background(), "x"); !apierr.Is(err, apierr.Unavailable) {
		t.Errorf("keystone unreachable: err = %v, want unavailable", err)
	}
}
