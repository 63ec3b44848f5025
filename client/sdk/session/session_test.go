package session

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestResolveFromEnv(t *testing.T) {
	cfg, err := Resolve(Options{Getenv: envOf(map[string]string{
		"OS_AUTH_URL": "http://ks:5000/v3", "OS_USERNAME": "demo", "OS_PASSWORD": "pw",
		"OS_PROJECT_NAME": "demo", "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default",
		"OS_REGION_NAME": "RegionTwo", "OS_INTERFACE": "internal",
	})})
	if err != nil {
		t.Fatal(err)
	}
	want := gophercloud.AuthOptions{
		IdentityEndpoint: "http://ks:5000/v3", Username: "demo", Password: "pw", DomainName: "Default",
		Scope: &gophercloud.AuthScope{ProjectName: "demo", DomainName: "Default"},
	}
	if d := cmp.Diff(want, cfg.Auth, cmp.AllowUnexported(gophercloud.AuthOptions{})); d != "" {
		t.Errorf("auth options (-want +got):\n%s", d)
	}
	if cfg.Endpoint.Region != "RegionTwo" || cfg.Endpoint.Availability != gophercloud.AvailabilityInternal {
		t.Errorf("endpoint options = %+v", cfg.Endpoint)
	}
}

func TestResolveDefaultsDomains(t *testing.T) {
	cfg, err := Resolve(Options{Getenv: envOf(map[string]string{
		"OS_AUTH_URL": "http://ks/v3", "OS_USERNAME": "u", "OS_PASSWORD": "p", "OS_PROJECT_NAME": "p"})})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Auth.DomainID != "default" || cfg.Auth.Scope.DomainID != "default" {
		t.Errorf("domains = %q / %+v, want default", cfg.Auth.DomainID, cfg.Auth.Scope)
	}
}

func TestResolveNothing(t *testing.T) {
	if _, err := Resolve(Options{Getenv: envOf(nil)}); err != ErrNoCloud {
		t.Errorf("err = %v, want ErrNoCloud", err)
	}
}

func TestResolveCloudsYAML(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "clouds.yaml")
	os.WriteFile(p, []byte(`clouds:
  one:
    auth:
      auth_url: http://ks:5000/v3
      username: demo
      password: pw
      project_name: demo
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
`), 0o600)
	cfg, err := Resolve(Options{Cloud: "one", Getenv: envOf(map[string]string{"OS_CLIENT_CONFIG_FILE": p})})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CloudName != "one" || cfg.Auth.Username != "demo" || cfg.Auth.Scope == nil || cfg.Auth.Scope.ProjectName != "demo" ||
		cfg.Endpoint.Region != "RegionOne" || cfg.Endpoint.Availability != gophercloud.AvailabilityPublic {
		t.Errorf("config = %+v / %+v", cfg.Auth, cfg.Endpoint)
	}
	if _, err := Resolve(Options{Cloud: "two", Getenv: envOf(map[string]string{"OS_CLIENT_CONFIG_FILE": p})}); err == nil {
		t.Error("unknown cloud: no error")
	}
}

func TestCloudsYAMLLocations(t *testing.T) {
	locs, err := CloudsYAMLLocations(envOf(map[string]string{"HOME": "/home/u"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(locs) != 3 || locs[1] != "/home/u/.config/openstack/clouds.yaml" || locs[2] != "/etc/openstack/clouds.yaml" {
		t.Errorf("locations = %v", locs)
	}
	locs, _ = CloudsYAMLLocations(envOf(map[string]string{"OS_CLIENT_CONFIG_FILE": "/x/c.yaml", "HOME": "/home/u"}))
	if len(locs) != 1 || locs[0] != "/x/c.yaml" {
		t.Errorf("with OS_CLIENT_CONFIG_FILE: %v", locs)
	}
}

func TestKey(t *testing.T) {
	a := gophercloud.AuthOptions{IdentityEndpoint: "http://ks/v3", Username: "demo", Password: "one",
		Scope: &gophercloud.AuthScope{ProjectName: "demo", DomainName: "Default"}}
	b := a
	b.Password = "two"
	if Key(a) != Key(b) {
		t.Error("the key must not depend on the password")
	}
	c := a
	c.Scope = &gophercloud.AuthScope{ProjectName: "alt", DomainName: "Default"}
	d := a
	d.Username = "admin"
	e := a
	e.IdentityEndpoint = "http://other/v3"
	for _, o := range []gophercloud.AuthOptions{c, d, e} {
		if Key(o) == Key(a) {
			t.Errorf("key of %+v equals the key of another identity", o)
		}
	}
}

func TestCache(t *testing.T) {
	c := Cache{Dir: filepath.Join(t.TempDir(), "berth")}
	if c.Load("k") != nil {
		t.Fatal("empty cache returned a token")
	}
	now := time.Now()
	tok := &CachedToken{AuthURL: "http://ks/v3", Token: "t1", ExpiresAt: now.Add(time.Hour), Catalog: &tokens.ServiceCatalog{}}
	if err := c.Store("k", tok); err != nil {
		t.Fatal(err)
	}
	got := c.Load("k")
	if got == nil || got.Token != "t1" || !got.Usable(now) {
		t.Fatalf("loaded %+v", got)
	}
	if got.Usable(now.Add(56 * time.Minute)) {
		t.Error("a token 4 minutes from expiry must not be reused")
	}
	st, _ := os.Stat(c.path("k"))
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	os.WriteFile(c.path("bad"), []byte("{"), 0o600)
	if c.Load("bad") != nil {
		t.Error("a corrupt cache file must read as no token")
	}
	if err := c.Remove("k"); err != nil || c.Load("k") != nil {
		t.Errorf("remove: %v", err)
	}
}
