// Package setspec turns a desired set into the containers the agent runs
// for it: a plain server (no SetContainer list) becomes one app named
// "app"; the set API's containers are normalized (limits, restart policy)
// and hashed, so that a change that needs a new container can be told
// from one that is applied live. It also validates what region sent, so
// that no field can reach the host (paths, names, namespaces). Pure: no I/O.
package setspec

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"berth/schema"
)

// PlainApp is the member name of a plain server's app container.
const PlainApp = "app"

// Member is one non-infra container of a set, as the agent runs it.
type Member struct {
	Name    string
	Role    string
	Image   schema.SetImage
	Command []string
	Env     map[string]string
	Volumes []schema.SetVolumeMount
	// Limits are the container's own limits or the set's.
	Limits schema.SetLimits
	// RestartPolicy is never empty.
	RestartPolicy string
	Health        *schema.SetHealthProbe
	// NetRaw is the set's NetRaw.
	NetRaw bool
	// Primary marks the set's first app.
	Primary bool
	// Spec is the hash of everything that needs a new container to change
	// (not Limits, applied live, nor RestartPolicy, which the agent runs).
	Spec string
}

// Members lists the set's containers besides infra, in desired order.
func Members(d *schema.DesiredSet) []Member {
	if d == nil {
		return nil
	}
	var out []Member
	if len(d.Containers) == 0 {
		out = []Member{{Name: PlainApp, Role: schema.RoleApp, Image: d.Image, Limits: d.Limits, RestartPolicy: schema.RestartNever}}
	} else {
		for _, c := range d.Containers {
			m := Member{
				Name: c.Name, Role: c.Role, Image: c.Image, Command: c.Command, Env: c.Env,
				Volumes: c.Volumes, Limits: d.Limits, RestartPolicy: c.RestartPolicy, Health: c.Health,
			}
			if c.Limits != nil {
				m.Limits = *c.Limits
			}
			if m.RestartPolicy == "" {
				m.RestartPolicy = schema.RestartNever
			}
			out = append(out, m)
		}
	}
	primary := false
	for i := range out {
		out[i].NetRaw = d.NetRaw
		if !primary && out[i].Role == schema.RoleApp {
			out[i].Primary, primary = true, true
		}
		out[i].Spec = hash(out[i])
	}
	return out
}

// Primary returns the set's primary app (the first app), or false.
func Primary(ms []Member) (Member, bool) {
	for _, m := range ms {
		if m.Primary {
			return m, true
		}
	}
	return Member{}, false
}

// PrimaryName is the member name of d's primary app ("app" when d is nil).
func PrimaryName(d *schema.DesiredSet) string {
	if p, ok := Primary(Members(d)); ok {
		return p.Name
	}
	return PlainApp
}

// specVersion changes when the meaning of a hashed field changes.
const specVersion = "1"

func hash(m Member) string {
	h := sha256.New()
	_ = json.NewEncoder(h).Encode(struct {
		V       string
		Image   string
		Role    string
		Command []string
		Env     map[string]string
		Volumes []schema.SetVolumeMount
		Health  *schema.SetHealthProbe
		NetRaw  bool
	}{specVersion, m.Image.DockerImageID, m.Role, m.Command, m.Env, m.Volumes, m.Health, m.NetRaw})
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// VolumeNames lists the set volumes d's containers mount, sorted.
func VolumeNames(d *schema.DesiredSet) []string {
	seen := map[string]bool{}
	var out []string
	for _, c := range d.Containers {
		for _, v := range c.Volumes {
			if !seen[v.Volume] {
				seen[v.Volume] = true
				out = append(out, v.Volume)
			}
		}
	}
	slices.Sort(out)
	return out
}

var (
	memberName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	volumeName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)
	envKey     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)
)

// ErrInvalid marks a desired set the agent refuses to run.
var ErrInvalid = errors.New("invalid desired set")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Validate checks d before anything is made for it: names, roles,
// policies, probes, mount points, files and user data.
func Validate(d *schema.DesiredSet) error {
	if d.State == schema.SetDeleted {
		return nil
	}
	if d.Limits.Pids < 0 || d.Limits.VCPUs < 0 || d.Limits.MemoryMB < 0 {
		return invalid("negative limits")
	}
	for _, f := range d.Files {
		if err := CheckPath(f.Path); err != nil {
			return invalid("file %q: %v", f.Path, err)
		}
		if _, err := base64.StdEncoding.DecodeString(f.Contents); err != nil {
			return invalid("file %q: contents are not base64", f.Path)
		}
	}
	if d.UserData != "" {
		if _, err := base64.StdEncoding.DecodeString(d.UserData); err != nil {
			return invalid("user_data is not base64")
		}
	}
	if len(d.Containers) == 0 {
		if d.Image.DockerImageID == "" {
			return invalid("no docker image id")
		}
		return nil
	}
	names := map[string]bool{}
	apps := 0
	for _, c := range d.Containers {
		if !memberName.MatchString(c.Name) || c.Name == schema.RoleInfra {
			return invalid("container name %q", c.Name)
		}
		if names[c.Name] {
			return invalid("container name %q used twice", c.Name)
		}
		names[c.Name] = true
		switch c.Role {
		case schema.RoleApp:
			apps++
		case schema.RoleSidecar:
		default:
			return invalid("container %s: role %q", c.Name, c.Role)
		}
		if c.Image.DockerImageID == "" {
			return invalid("container %s: no docker image id", c.Name)
		}
		switch c.RestartPolicy {
		case "", schema.RestartNever, schema.RestartOnFailure, schema.RestartAlways:
		default:
			return invalid("container %s: restart policy %q", c.Name, c.RestartPolicy)
		}
		for k := range c.Env {
			if !envKey.MatchString(k) {
				return invalid("container %s: env name %q", c.Name, k)
			}
		}
		if l := c.Limits; l != nil && (l.Pids < 0 || l.VCPUs < 0 || l.MemoryMB < 0) {
			return invalid("container %s: negative limits", c.Name)
		}
		mounts := map[string]bool{}
		for _, v := range c.Volumes {
			if !volumeName.MatchString(v.Volume) {
				return invalid("container %s: volume name %q", c.Name, v.Volume)
			}
			if err := CheckMountPoint(v.Path); err != nil {
				return invalid("container %s: volume %s at %q: %v", c.Name, v.Volume, v.Path, err)
			}
			if mounts[v.Path] {
				return invalid("container %s: two volumes at %s", c.Name, v.Path)
			}
			mounts[v.Path] = true
		}
		if h := c.Health; h != nil {
			if (len(h.Command) > 0) == (h.TCPPort != 0) {
				return invalid("container %s: a health probe has exactly one of command and tcp_port", c.Name)
			}
			if h.TCPPort < 0 || h.TCPPort > 65535 || h.IntervalSeconds < 0 || h.TimeoutSeconds < 0 || h.Retries < 0 {
				return invalid("container %s: health probe values out of range", c.Name)
			}
		}
	}
	if apps == 0 {
		return invalid("no container has role app")
	}
	return nil
}

// CheckPath accepts an absolute, clean path other than "/" without "..".
func CheckPath(p string) error {
	switch {
	case !strings.HasPrefix(p, "/"):
		return errors.New("path is not absolute")
	case p == "/":
		return errors.New("path is the root directory")
	case path.Clean(p) != p:
		return errors.New("path is not clean")
	case slices.Contains(strings.Split(p, "/"), ".."):
		return errors.New("path has ..")
	case strings.ContainsRune(p, 0):
		return errors.New("path has a NUL byte")
	}
	return nil
}

// CheckMountPoint is CheckPath that also refuses the kernel's pseudo
// filesystems.
func CheckMountPoint(p string) error {
	if err := CheckPath(p); err != nil {
		return err
	}
	for _, bad := range []string{"/proc", "/sys", "/dev"} {
		if p == bad || strings.HasPrefix(p, bad+"/") {
			return fmt.Errorf("mount point under %s", bad)
		}
	}
	return nil
}

// Probe defaults.
const (
	DefaultProbeInterval = 10
	DefaultProbeTimeout  = 5
	DefaultProbeRetries  = 3
)

// ProbeTimings returns a probe's interval, timeout (seconds) and retries
// with defaults filled in.
func ProbeTimings(h *schema.SetHealthProbe) (interval, timeout, retries int) {
	interval, timeout, retries = h.IntervalSeconds, h.TimeoutSeconds, h.Retries
	if interval <= 0 {
		interval = DefaultProbeInterval
	}
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	if retries <= 0 {
		retries = DefaultProbeRetries
	}
	return interval, timeout, retries
}
