package sets

import (
	"context"
	"fmt"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// Container roles.
const (
	RoleApp     = "app"
	RoleSidecar = "sidecar"
)

// Restart policies.
const (
	RestartNever     = "never"
	RestartOnFailure = "on-failure"
	RestartAlways    = "always"
)

// Network is one network of a set, by id.
type Network struct {
	UUID string `json:"uuid"`
}

// VolumeMount mounts one of the set's volumes into a container.
type VolumeMount struct {
	// Name of the volume, shared by every container that mounts it, e.g. "data".
	Name string `json:"name"`
	// Path inside the container, e.g. "/var/lib/data".
	Path string `json:"path"`
}

// Limits cap one container within the set's flavor.
type Limits struct {
	VCPUs    float64 `json:"vcpus,omitempty"`
	MemoryMB int     `json:"memory_mb,omitempty"`
}

// Container is one container of a set.
type Container struct {
	// Name, unique in the set, e.g. "app".
	Name string `json:"name"`
	// Image is an image id or name, e.g. "demo".
	Image string `json:"image"`
	// Role is RoleApp (default) or RoleSidecar.
	Role string `json:"role,omitempty"`
	// Command overrides the image's entrypoint+cmd, e.g. ["httpd", "-f"].
	Command []string `json:"command,omitempty"`
	// Env are environment variables, e.g. {"PORT": "80"}.
	Env     map[string]string `json:"env,omitempty"`
	Volumes []VolumeMount     `json:"volumes,omitempty"`
	Limits  *Limits           `json:"limits,omitempty"`
	// Restart is RestartNever, RestartOnFailure or RestartAlways.
	Restart string `json:"restart,omitempty"`
}

// CreateOptsBuilder builds the body of a create.
type CreateOptsBuilder interface {
	ToSetCreateMap() (map[string]any, error)
}

// CreateOpts are the fields of a new set.
type CreateOpts struct {
	// Name of the set (and its server), e.g. "web".
	Name string `json:"name"`
	// FlavorRef is the flavor id, e.g. "1".
	FlavorRef string `json:"flavorRef"`
	// Networks by id; empty means the default network.
	Networks   []Network   `json:"networks,omitempty"`
	Containers []Container `json:"containers"`
}

// ToSetCreateMap checks the options and wraps them in {"set": …}.
func (o CreateOpts) ToSetCreateMap() (map[string]any, error) {
	if o.Name == "" {
		return nil, fmt.Errorf("a set needs a name")
	}
	if o.FlavorRef == "" {
		return nil, fmt.Errorf("set %q needs a flavor", o.Name)
	}
	if len(o.Containers) == 0 {
		return nil, fmt.Errorf("set %q needs at least one container", o.Name)
	}
	seen := map[string]bool{}
	for i, c := range o.Containers {
		if c.Name == "" || c.Image == "" {
			return nil, fmt.Errorf("container %d of set %q needs a name and an image", i+1, o.Name)
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("set %q has two containers named %q", o.Name, c.Name)
		}
		seen[c.Name] = true
		switch c.Role {
		case "", RoleApp, RoleSidecar:
		default:
			return nil, fmt.Errorf("container %q: role %q must be %q or %q", c.Name, c.Role, RoleApp, RoleSidecar)
		}
		switch c.Restart {
		case "", RestartNever, RestartOnFailure, RestartAlways:
		default:
			return nil, fmt.Errorf("container %q: restart %q must be never, on-failure or always", c.Name, c.Restart)
		}
	}
	return gophercloud.BuildRequestBody(o, "set")
}

// Create creates a set (202). The set, like a server, starts in BUILD.
func Create(ctx context.Context, c *gophercloud.ServiceClient, opts CreateOptsBuilder) (r CreateResult) {
	b, err := opts.ToSetCreateMap()
	if err != nil {
		r.Err = err
		return
	}
	resp, err := c.Post(ctx, rootURL(c), b, &r.Body, &gophercloud.RequestOpts{OkCodes: []int{200, 201, 202}})
	_, r.Header, r.Err = gophercloud.ParseResponse(resp, err)
	return
}

// Get shows one set.
func Get(ctx context.Context, c *gophercloud.ServiceClient, id string) (r GetResult) {
	resp, err := c.Get(ctx, resourceURL(c, id), &r.Body, nil)
	_, r.Header, r.Err = gophercloud.ParseResponse(resp, err)
	return
}

// ListOpts filter a list.
type ListOpts struct {
	// Name filters by exact name.
	Name string `q:"name"`
	// AllTenants lists every project's sets (admin).
	AllTenants bool `q:"all_tenants"`
}

// ToSetListQuery builds the query string.
func (o ListOpts) ToSetListQuery() (string, error) {
	q, err := gophercloud.BuildQueryString(o)
	if err != nil {
		return "", err
	}
	return q.String(), nil
}

// List lists sets.
func List(c *gophercloud.ServiceClient, opts *ListOpts) pagination.Pager {
	u := rootURL(c)
	if opts != nil {
		q, err := opts.ToSetListQuery()
		if err != nil {
			return pagination.Pager{Err: err}
		}
		u += q
	}
	return pagination.NewPager(c, u, func(r pagination.PageResult) pagination.Page {
		return SetPage{pagination.SinglePageBase(r)}
	})
}

// Delete deletes a set and its server (202/204).
func Delete(ctx context.Context, c *gophercloud.ServiceClient, id string) (r DeleteResult) {
	resp, err := c.Delete(ctx, resourceURL(c, id), &gophercloud.RequestOpts{OkCodes: []int{202, 204}})
	_, r.Header, r.Err = gophercloud.ParseResponse(resp, err)
	return
}
