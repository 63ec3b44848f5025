package compute

import (
	"encoding/json"
	"net/http"
	"path"
	"regexp"
	"strings"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/region/store"
	"berth/schema"
)

// The set API (Berth extension, /v2.1/berth-sets): a server made of several
// containers sharing one network namespace and the set's volumes. A set is
// a server: same id, same lifecycle, same actions; a plain server shows as
// a set with one app container.

type setContainerBody struct {
	Name    string            `json:"name"`
	Image   string            `json:"image"`
	Role    string            `json:"role,omitempty"`
	Command []string          `json:"command,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	Volumes []struct {
		Name     string `json:"name"`
		Path     string `json:"path"`
		ReadOnly bool   `json:"read_only,omitempty"`
	} `json:"volumes,omitempty"`
	Limits *struct {
		VCPUs    float64 `json:"vcpus,omitempty"`
		MemoryMB int     `json:"memory_mb,omitempty"`
	} `json:"limits,omitempty"`
	Restart string `json:"restart,omitempty"`
	Health  *struct {
		Command         []string `json:"command,omitempty"`
		TCPPort         int      `json:"tcp_port,omitempty"`
		IntervalSeconds int      `json:"interval_seconds,omitempty"`
		TimeoutSeconds  int      `json:"timeout_seconds,omitempty"`
		Retries         int      `json:"retries,omitempty"`
	} `json:"health,omitempty"`
}

type setCreateBody struct {
	Set *struct {
		Name       string             `json:"name"`
		FlavorRef  schema.FlexString  `json:"flavorRef"`
		Networks   json.RawMessage    `json:"networks,omitempty"`
		Containers []setContainerBody `json:"containers"`
		Metadata   map[string]string  `json:"metadata,omitempty"`
		KeyName    string             `json:"key_name,omitempty"`
		Hints      map[string]any     `json:"scheduler_hints,omitempty"`
	} `json:"set"`
}

var (
	containerName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
	volumeName    = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,62}$`)
)

// checkMount refuses mount points a tenant must not cover.
func checkMount(p string) error {
	if !strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "/" {
		return apierr.Invalidf("Invalid volume path %q: it must be absolute, clean and not /.", p)
	}
	for _, bad := range []string{"/proc", "/sys", "/dev"} {
		if p == bad || strings.HasPrefix(p, bad+"/") {
			return apierr.Invalidf("Invalid volume path %q: %s is not a place for a volume.", p, bad)
		}
	}
	return nil
}

func (a *API) createSet(w http.ResponseWriter, r *http.Request) error {
	var body setCreateBody
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
		return err
	}
	sb := body.Set
	if sb == nil {
		return apierr.Invalidf("Invalid input for field/attribute set. 'set' is a required property.")
	}
	if err := validName("name", sb.Name); err != nil {
		return err
	}
	if sb.FlavorRef == "" {
		return apierr.Invalidf("Invalid input for field/attribute flavorRef. 'flavorRef' is a required property.")
	}
	if len(sb.Containers) == 0 || len(sb.Containers) > 16 {
		return apierr.Invalidf("A set has 1 to 16 containers.")
	}
	if err := validMetadata(sb.Metadata); err != nil {
		return err
	}
	id := identity(r.Context())
	flavor, err := a.findFlavorByRef(r, string(sb.FlavorRef))
	if err != nil {
		return err
	}
	networks, err := a.networksOf(r, sb.Networks)
	if err != nil {
		return err
	}
	var containers []schema.SetContainer
	seen := map[string]bool{}
	apps := 0
	for _, cb := range sb.Containers {
		if !containerName.MatchString(cb.Name) || cb.Name == "infra" {
			return apierr.Invalidf("Invalid container name %q: 1-32 of a-z, 0-9 and '-', not 'infra'.", cb.Name)
		}
		if seen[cb.Name] {
			return apierr.Invalidf("Two containers are named %q.", cb.Name)
		}
		seen[cb.Name] = true
		c := schema.SetContainer{Name: cb.Name, Role: cb.Role, Command: cb.Command, Env: cb.Env}
		switch c.Role {
		case "":
			c.Role = schema.RoleApp
		case schema.RoleApp, schema.RoleSidecar:
		default:
			return apierr.Invalidf("Container %q: role must be app or sidecar.", cb.Name)
		}
		if c.Role == schema.RoleApp {
			apps++
		}
		switch cb.Restart {
		case "", schema.RestartNever, schema.RestartOnFailure, schema.RestartAlways:
			c.RestartPolicy = cb.Restart
		default:
			return apierr.Invalidf("Container %q: restart must be never, on-failure or always.", cb.Name)
		}
		for k := range cb.Env {
			if k == "" || strings.ContainsAny(k, "=\x00") {
				return apierr.Invalidf("Container %q: invalid environment variable name %q.", cb.Name, k)
			}
		}
		for _, v := range cb.Volumes {
			if !volumeName.MatchString(v.Name) {
				return apierr.Invalidf("Container %q: invalid volume name %q.", cb.Name, v.Name)
			}
			if err := checkMount(v.Path); err != nil {
				return err
			}
			c.Volumes = append(c.Volumes, schema.SetVolumeMount{Volume: v.Name, Path: v.Path, ReadOnly: v.ReadOnly})
		}
		if l := cb.Limits; l != nil {
			if l.VCPUs < 0 || l.VCPUs > float64(flavor.VCPUs) || l.MemoryMB < 0 || l.MemoryMB > flavor.RAMMB {
				return apierr.Invalidf("Container %q: limits must be within the flavor (%d vCPUs, %d MB).", cb.Name, flavor.VCPUs, flavor.RAMMB)
			}
			c.Limits = &schema.SetLimits{VCPUs: int(l.VCPUs), CPUMillis: int(l.VCPUs * 1000), MemoryMB: l.MemoryMB}
		}
		if h := cb.Health; h != nil {
			if (len(h.Command) == 0) == (h.TCPPort == 0) || h.TCPPort < 0 || h.TCPPort > 65535 {
				return apierr.Invalidf("Container %q: a health probe has either a command or a tcp_port.", cb.Name)
			}
			c.Health = &schema.SetHealthProbe{Command: h.Command, TCPPort: h.TCPPort,
				IntervalSeconds: h.IntervalSeconds, TimeoutSeconds: h.TimeoutSeconds, Retries: h.Retries}
		}
		img, err := a.cfg.Images.Find(r.Context(), id.Token, cb.Image)
		if apierr.Is(err, apierr.NotFound) {
			return apierr.Invalidf("Container %q: image %s could not be found.", cb.Name, cb.Image)
		} else if err != nil {
			return err
		}
		if img.Status != "active" || img.ContainerFormat != "docker" || img.DockerImageID == "" {
			return apierr.Invalidf("Container %q: image %s is not an active container image.", cb.Name, cb.Image)
		}
		c.Image = schema.SetImage{ID: img.ID, DockerImageID: img.DockerImageID}
		containers = append(containers, c)
	}
	if apps == 0 {
		return apierr.Invalidf("A set needs at least one app container.")
	}
	authorizedKeys := ""
	if sb.KeyName != "" {
		k, err := a.cfg.Store.FindKeypair(r.Context(), id.UserID, sb.KeyName)
		if err != nil {
			return apierr.Invalidf("Invalid key_name provided.")
		}
		authorizedKeys = strings.TrimRight(k.PublicKey, "\r\n") + "\n"
	}
	primary := containers[0]
	for _, c := range containers {
		if c.Role == schema.RoleApp {
			primary = c
			break
		}
	}
	srv, err := a.place(r, store.NewServer{
		ID: uuid.NewString(), ProjectID: id.ProjectID, UserID: id.UserID, Name: sb.Name,
		ImageID: primary.Image.ID, DockerImageID: primary.Image.DockerImageID, Flavor: flavor,
		Metadata: sb.Metadata, AvailabilityZone: "nova", Networks: networks,
		RequestID: httpx.RequestID(r.Context()), KeyName: sb.KeyName, AuthorizedKeys: authorizedKeys,
		Containers: containers, ReservationID: reservationID(),
	}, "")
	if err != nil {
		return err
	}
	w.Header().Set("Location", a.baseURL(r)+"/v2.1/berth-sets/"+srv.ID)
	httpx.WriteJSON(w, http.StatusAccepted, map[string]any{"set": a.setView(r, srv)})
	return nil
}

// findFlavorByRef takes a flavor id or, failing that, a flavor name.
func (a *API) findFlavorByRef(r *http.Request, ref string) (*store.Flavor, error) {
	f, err := a.findFlavor(r, refID(ref))
	if err == nil || !apierr.Is(err, apierr.NotFound) {
		return f, err
	}
	all, lerr := a.cfg.Store.ListFlavors(r.Context(), store.FlavorFilter{ProjectID: identity(r.Context()).ProjectID})
	if lerr != nil {
		return nil, lerr
	}
	for i := range all {
		if all[i].Name == ref {
			return &all[i], nil
		}
	}
	return nil, apierr.Invalidf("Flavor %s could not be found.", ref)
}

// setView shows a server as a set: its containers as asked for, with what
// the host observed of each.
func (a *API) setView(r *http.Request, s *store.Server) map[string]any {
	var spec []schema.SetContainer
	if len(s.SetSpec) > 0 {
		_ = json.Unmarshal(s.SetSpec, &spec)
	} else {
		spec = []schema.SetContainer{{Name: "app", Role: schema.RoleApp,
			Image: schema.SetImage{ID: s.ImageID, DockerImageID: s.DockerImageID}}}
	}
	var observed []schema.ObservedContainer
	_ = json.Unmarshal(s.Containers, &observed)
	containers := []map[string]any{}
	for _, c := range spec {
		v := map[string]any{"name": c.Name, "role": c.Role, "image": c.Image.ID, "image_id": c.Image.ID}
		if len(c.Command) > 0 {
			v["command"] = c.Command
		}
		if len(c.Env) > 0 {
			v["env"] = c.Env
		}
		if len(c.Volumes) > 0 {
			vols := []map[string]any{}
			for _, m := range c.Volumes {
				vols = append(vols, map[string]any{"name": m.Volume, "path": m.Path, "read_only": m.ReadOnly})
			}
			v["volumes"] = vols
		}
		if c.Limits != nil {
			v["limits"] = map[string]any{"vcpus": float64(c.Limits.CPUMillis) / 1000, "memory_mb": c.Limits.MemoryMB}
		}
		if c.RestartPolicy != "" {
			v["restart"] = c.RestartPolicy
		}
		for _, o := range observed {
			if o.Name == c.Name || (o.Name == "" && o.Role == c.Role) {
				v["state"], v["restart_count"], v["container_id"] = o.State, o.RestartCount, o.ID
				if o.Health != "" {
					v["health"] = o.Health
				}
			}
		}
		containers = append(containers, v)
	}
	nets := []map[string]string{}
	seenNet := map[string]bool{}
	for _, p := range s.Ports {
		if !seenNet[p.NetworkID] {
			seenNet[p.NetworkID] = true
			nets = append(nets, map[string]string{"uuid": p.NetworkID})
		}
	}
	sv := a.serverView(r, s)
	return map[string]any{
		"id": s.ID, "name": s.Name, "status": sv.Status, "flavorRef": s.FlavorID, "project_id": s.ProjectID,
		"host_id": sv.HostID, "networks": nets, "addresses": sv.Addresses, "containers": containers,
		"created": sv.Created, "updated": sv.Updated, "links": []schema.Link{
			{Href: a.baseURL(r) + "/v2.1/berth-sets/" + s.ID, Rel: "self"}},
	}
}

func (a *API) showSet(w http.ResponseWriter, r *http.Request) error {
	srv, err := a.cfg.Store.FindServer(r.Context(), caller(r).Scope, mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"set": a.setView(r, srv)})
	return nil
}

func (a *API) listSets(w http.ResponseWriter, r *http.Request) error {
	limit, marker, err := pageParams(r.URL.Query())
	if err != nil {
		return err
	}
	srvs, err := a.cfg.Store.ListServers(r.Context(), store.ServerFilter{
		Scope: store.Scope{ProjectID: identity(r.Context()).ProjectID}, Marker: marker, Limit: limit})
	if err != nil {
		return err
	}
	out := make([]map[string]any, len(srvs))
	for i := range srvs {
		out[i] = a.setView(r, &srvs[i])
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"sets": out})
	return nil
}
