package setspec

import (
	"errors"
	"strings"
	"testing"

	"berth/schema"
)

func plain() *schema.DesiredSet {
	return &schema.DesiredSet{ID: "s1", State: schema.SetRunning, Image: schema.SetImage{DockerImageID: "sha256:a"},
		Limits: schema.SetLimits{VCPUs: 1, MemoryMB: 64}}
}

func withContainers(cs ...schema.SetContainer) *schema.DesiredSet {
	d := plain()
	d.Containers = cs
	return d
}

func app(name string) schema.SetContainer {
	return schema.SetContainer{Name: name, Role: schema.RoleApp, Image: schema.SetImage{DockerImageID: "sha256:a"}}
}

func TestMembers(t *testing.T) {
	ms := Members(plain())
	if len(ms) != 1 || ms[0].Name != PlainApp || !ms[0].Primary || ms[0].RestartPolicy != schema.RestartNever || ms[0].Limits.MemoryMB != 64 {
		t.Errorf("plain members = %+v", ms)
	}
	side := schema.SetContainer{Name: "logs", Role: schema.RoleSidecar, Image: schema.SetImage{DockerImageID: "sha256:b"},
		Limits: &schema.SetLimits{VCPUs: 1, MemoryMB: 16}}
	d := withContainers(side, app("web"), app("worker"))
	ms = Members(d)
	if ms[0].Primary || !ms[1].Primary || ms[2].Primary || ms[0].Limits.MemoryMB != 16 || ms[1].Limits.MemoryMB != 64 {
		t.Errorf("members = %+v, want web primary, logs with its own limits", ms)
	}
	if PrimaryName(d) != "web" || PrimaryName(nil) != PlainApp {
		t.Errorf("PrimaryName = %q", PrimaryName(d))
	}

	// The spec hash changes with what needs a new container, not with
	// limits or restart policy.
	base := Members(plain())[0].Spec
	for name, change := range map[string]func(*schema.DesiredSet){
		"limits":  func(d *schema.DesiredSet) { d.Limits.MemoryMB = 128 },
		"reboot":  func(d *schema.DesiredSet) { d.RebootSeq++ },
		"keys":    func(d *schema.DesiredSet) { d.AuthorizedKeys = "ssh-ed25519 x" },
		"state":   func(d *schema.DesiredSet) { d.State = schema.SetPaused },
		"created": func(d *schema.DesiredSet) { d.Generation = 9 },
	} {
		d := plain()
		change(d)
		if got := Members(d)[0].Spec; got != base {
			t.Errorf("changing %s changed the spec", name)
		}
	}
	for name, change := range map[string]func(*schema.DesiredSet){
		"image":   func(d *schema.DesiredSet) { d.Image.DockerImageID = "sha256:b" },
		"net_raw": func(d *schema.DesiredSet) { d.NetRaw = true },
	} {
		d := plain()
		change(d)
		if got := Members(d)[0].Spec; got == base {
			t.Errorf("changing %s kept the spec", name)
		}
	}
}

func TestValidate(t *testing.T) {
	vol := func(name, path string) schema.SetContainer {
		c := app("web")
		c.Volumes = []schema.SetVolumeMount{{Volume: name, Path: path}}
		return c
	}
	probe := func(h schema.SetHealthProbe) schema.SetContainer {
		c := app("web")
		c.Health = &h
		return c
	}
	tests := []struct {
		name string
		d    *schema.DesiredSet
		bad  string // "" when valid
	}{
		{"plain", plain(), ""},
		{"deleted needs nothing", &schema.DesiredSet{State: schema.SetDeleted}, ""},
		{"plain without image", &schema.DesiredSet{State: schema.SetRunning}, "image"},
		{"containers", withContainers(app("web"), schema.SetContainer{Name: "logs", Role: schema.RoleSidecar, Image: schema.SetImage{DockerImageID: "x"}}), ""},
		{"no app", withContainers(schema.SetContainer{Name: "logs", Role: schema.RoleSidecar, Image: schema.SetImage{DockerImageID: "x"}}), "role app"},
		{"name infra", withContainers(app("infra")), "name"},
		{"name with slash", withContainers(app("a/b")), "name"},
		{"name upper", withContainers(app("Web")), "name"},
		{"duplicate name", withContainers(app("web"), app("web")), "twice"},
		{"bad role", withContainers(schema.SetContainer{Name: "x", Role: "privileged", Image: schema.SetImage{DockerImageID: "x"}}), "role"},
		{"bad policy", withContainers(func() schema.SetContainer { c := app("web"); c.RestartPolicy = "sometimes"; return c }()), "restart policy"},
		{"volume ok", withContainers(vol("data", "/data")), ""},
		{"volume as host path", withContainers(vol("/etc", "/data")), "volume name"},
		{"volume name with dots up", withContainers(vol("..", "/data")), "volume name"},
		{"mount at root", withContainers(vol("data", "/")), "root"},
		{"mount relative", withContainers(vol("data", "data")), "absolute"},
		{"mount traversal", withContainers(vol("data", "/data/../etc")), "clean"},
		{"mount over proc", withContainers(vol("data", "/proc/sys")), "/proc"},
		{"mount over dev", withContainers(vol("data", "/dev")), "/dev"},
		{"env name", withContainers(func() schema.SetContainer { c := app("web"); c.Env = map[string]string{"A=B": "x"}; return c }()), "env"},
		{"probe both", withContainers(probe(schema.SetHealthProbe{Command: []string{"true"}, TCPPort: 80})), "exactly one"},
		{"probe none", withContainers(probe(schema.SetHealthProbe{})), "exactly one"},
		{"probe port", withContainers(probe(schema.SetHealthProbe{TCPPort: 70000})), "range"},
		{"file path", func() *schema.DesiredSet {
			d := plain()
			d.Files = []schema.SetFile{{Path: "/etc/../root/x", Contents: ""}}
			return d
		}(), "file"},
		{"user data", func() *schema.DesiredSet { d := plain(); d.UserData = "not base64!"; return d }(), "user_data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.d)
			switch {
			case tt.bad == "" && err != nil:
				t.Errorf("Validate() = %v, want ok", err)
			case tt.bad != "" && (err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.bad)):
				t.Errorf("Validate() = %v, want an invalid-set error about %q", err, tt.bad)
			}
		})
	}
}
