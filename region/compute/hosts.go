package compute

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/region/store"
)

// adminOnly guards the operator APIs (hypervisors, services, hosts).
func (a *API) adminOnly(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if !identity(r.Context()).IsAdmin() {
			return apierr.Forbiddenf("Policy doesn't allow this operation to be performed.")
		}
		return h(w, r)
	}
}

func (a *API) hostUp(h *store.Host) bool {
	return !h.ForcedDown && time.Since(h.LastHeartbeat) <= a.cfg.HostGrace
}

func state(up bool) string {
	if up {
		return "up"
	}
	return "down"
}

// hostUUID is a host's id from microversion 2.53 (hypervisor and
// service uuids): derived from the host name, so it is stable for the
// host's life without another column.
func hostUUID(name string) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("berth:host:"+name)).String()
}

// hostRef is a host's id as the request's microversion shows it.
func hostRef(r *http.Request, h *store.Host) any {
	if versionOf(r.Context()).AtLeast(v253) {
		return hostUUID(h.Name)
	}
	return h.ID
}

func (a *API) hypervisorView(r *http.Request, h *store.HostSummary, detail bool) map[string]any {
	v := map[string]any{
		"id": hostRef(r, &h.Host), "hypervisor_hostname": h.Name, "state": state(a.hostUp(&h.Host)),
		"status": map[bool]string{true: "disabled", false: "enabled"}[h.Disabled],
	}
	if detail {
		v["vcpus"], v["vcpus_used"] = h.VCPUs, h.VCPUsUsed
		v["memory_mb"], v["memory_mb_used"], v["free_ram_mb"] = h.MemoryMB, h.MemoryMBUsed, h.MemoryMB-h.MemoryMBUsed
		v["local_gb"], v["local_gb_used"], v["free_disk_gb"] = h.DiskGB, h.DiskGBUsed, h.DiskGB-h.DiskGBUsed
		v["disk_available_least"] = h.DiskGB - h.DiskGBUsed
		v["running_vms"], v["current_workload"] = h.Servers, 0
		v["hypervisor_type"], v["hypervisor_version"] = "docker", 1
		v["host_ip"], v["cpu_info"] = "127.0.0.1", "{}"
		if versionOf(r.Context()).AtLeast(Microversion{2, 28}) {
			v["cpu_info"] = map[string]any{} // an object from 2.28
		}
		v["service"] = map[string]any{"host": h.Name, "id": hostRef(r, &h.Host), "disabled_reason": h.DisabledWhy}
	}
	return v
}

func (a *API) listHypervisors(detail bool) handlerFunc {
	return a.adminOnly(func(w http.ResponseWriter, r *http.Request) error {
		hs, err := a.cfg.Store.ListHostSummaries(r.Context())
		if err != nil {
			return err
		}
		q := r.URL.Query()
		mv := versionOf(r.Context())
		if p := q.Get("hypervisor_hostname_pattern"); p != "" && mv.AtLeast(v253) {
			hs = slices.DeleteFunc(hs, func(h store.HostSummary) bool { return !strings.Contains(h.Name, p) })
			if len(hs) == 0 {
				return apierr.NotFoundf("No hypervisor matching '%s' could be found.", p)
			}
		}
		body := map[string]any{}
		// 2.33: limit and marker (a hypervisor id), in id order.
		if mv.AtLeast(Microversion{2, 33}) {
			limit, marker, err := pageParams(q)
			if err != nil {
				return err
			}
			if marker != "" {
				i := slices.IndexFunc(hs, func(h store.HostSummary) bool { return fmt.Sprint(hostRef(r, &h.Host)) == marker })
				if i < 0 {
					return apierr.Invalidf("marker [%s] not found", marker)
				}
				hs = hs[i+1:]
			}
			if len(hs) > limit {
				hs = hs[:limit]
			}
			if len(hs) > 0 && len(hs) == limit && q.Get("limit") != "" {
				body["hypervisors_links"] = nextLink(a.baseURL(r), r.URL.Path, q, fmt.Sprint(hostRef(r, &hs[len(hs)-1].Host)))
			}
		}
		out := make([]map[string]any, len(hs))
		for i := range hs {
			out[i] = a.hypervisorView(r, &hs[i], detail)
			if err := a.withServers(r, &hs[i], out[i]); err != nil {
				return err
			}
		}
		body["hypervisors"] = out
		httpx.WriteJSON(w, http.StatusOK, body)
		return nil
	})
}

func (a *API) showHypervisor(w http.ResponseWriter, r *http.Request) error {
	return a.adminOnly(func(w http.ResponseWriter, r *http.Request) error {
		hs, err := a.cfg.Store.ListHostSummaries(r.Context())
		if err != nil {
			return err
		}
		id := mux.Vars(r)["id"]
		v253 := versionOf(r.Context()).AtLeast(v253)
		if v253 && uuid.Validate(id) != nil {
			return apierr.Invalidf("Invalid uuid %s", id)
		}
		for i := range hs {
			if !v253 && (strconv.FormatInt(hs[i].ID, 10) == id || hs[i].Name == id) || v253 && hostUUID(hs[i].Name) == id {
				v := a.hypervisorView(r, &hs[i], true)
				if err := a.withServers(r, &hs[i], v); err != nil {
					return err
				}
				httpx.WriteJSON(w, http.StatusOK, map[string]any{"hypervisor": v})
				return nil
			}
		}
		return apierr.NotFoundf("Hypervisor with ID %s could not be found.", id)
	})(w, r)
}

func (a *API) hypervisorStatistics(w http.ResponseWriter, r *http.Request) error {
	return a.adminOnly(func(w http.ResponseWriter, r *http.Request) error {
		hs, err := a.cfg.Store.ListHostSummaries(r.Context())
		if err != nil {
			return err
		}
		st := map[string]int{}
		for _, h := range hs {
			st["count"]++
			st["vcpus"] += h.VCPUs
			st["vcpus_used"] += h.VCPUsUsed
			st["memory_mb"] += h.MemoryMB
			st["memory_mb_used"] += h.MemoryMBUsed
			st["free_ram_mb"] += h.MemoryMB - h.MemoryMBUsed
			st["local_gb"] += h.DiskGB
			st["local_gb_used"] += h.DiskGBUsed
			st["free_disk_gb"] += h.DiskGB - h.DiskGBUsed
			st["disk_available_least"] += h.DiskGB - h.DiskGBUsed
			st["running_vms"] += h.Servers
		}
		st["current_workload"] += 0
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"hypervisor_statistics": st})
		return nil
	})(w, r)
}

// services is os-services: one nova-compute per host, up/down from its
// heartbeats.
func (a *API) services(w http.ResponseWriter, r *http.Request) error {
	return a.adminOnly(func(w http.ResponseWriter, r *http.Request) error {
		hs, err := a.cfg.Store.ListHostSummaries(r.Context())
		if err != nil {
			return err
		}
		out := []map[string]any{}
		q := r.URL.Query()
		for i := range hs {
			if (q.Get("binary") != "" && q.Get("binary") != "nova-compute") || (q.Get("host") != "" && q.Get("host") != hs[i].Name) {
				continue
			}
			out = append(out, a.serviceView(r, &hs[i].Host))
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"services": out})
		return nil
	})(w, r)
}

// berthHosts is GET /berth-hosts[/{name}]: capacity, use, heartbeat age
// and set count per host (admin).
func (a *API) berthHosts(w http.ResponseWriter, r *http.Request) error {
	return a.adminOnly(func(w http.ResponseWriter, r *http.Request) error {
		hs, err := a.cfg.Store.ListHostSummaries(r.Context())
		if err != nil {
			return err
		}
		name := mux.Vars(r)["name"]
		out := []map[string]any{}
		for _, h := range hs {
			if name != "" && h.Name != name {
				continue
			}
			out = append(out, map[string]any{
				"name": h.Name, "vcpus": h.VCPUs, "vcpus_used": h.VCPUsUsed, "memory_mb": h.MemoryMB,
				"memory_mb_used": h.MemoryMBUsed, "disk_gb": h.DiskGB, "disk_gb_used": h.DiskGBUsed,
				"cpu_allocation_ratio": h.CPURatio, "ram_allocation_ratio": h.RAMRatio,
				"state": state(a.hostUp(&h.Host)), "disabled": h.Disabled,
				"heartbeat_age_seconds": int(time.Since(h.LastHeartbeat).Seconds()),
				"last_heartbeat":        h.LastHeartbeat.UTC().Format(timeFormat), "sets": h.Servers,
				"agent_version": h.AgentVersion, "agent_url": h.AgentURL,
			})
		}
		if name != "" {
			if len(out) == 0 {
				return apierr.NotFoundf("Host %s could not be found.", name)
			}
			httpx.WriteJSON(w, http.StatusOK, map[string]any{"host": out[0]})
			return nil
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"hosts": out})
		return nil
	})(w, r)
}

// availabilityZones is os-availability-zone: Berth has one zone, "nova".
func (a *API) availabilityZones(detail bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		zone := map[string]any{"zoneName": "nova", "zoneState": map[string]bool{"available": true}, "hosts": nil}
		if detail {
			if !identity(r.Context()).IsAdmin() {
				return apierr.Forbiddenf("Policy doesn't allow os_compute_api:os-availability-zone:detail to be performed.")
			}
			hs, err := a.cfg.Store.ListHostSummaries(r.Context())
			if err != nil {
				return err
			}
			hosts := map[string]any{}
			for _, h := range hs {
				hosts[h.Name] = map[string]any{"nova-compute": map[string]any{
					"available": a.hostUp(&h.Host), "active": !h.Disabled,
					"updated_at": h.LastHeartbeat.UTC().Format(usageFormat)}}
			}
			zone["hosts"] = hosts
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"availabilityZoneInfo": []any{zone}})
		return nil
	}
}

func (a *API) serviceView(r *http.Request, h *store.Host) map[string]any {
	v := map[string]any{
		"id": hostRef(r, h), "binary": "nova-compute", "host": h.Name, "zone": "nova",
		"status": map[bool]string{true: "disabled", false: "enabled"}[h.Disabled],
		"state":  state(a.hostUp(h)), "updated_at": h.LastHeartbeat.UTC().Format(usageFormat),
		"disabled_reason": h.DisabledWhy,
	}
	if versionOf(r.Context()).AtLeast(Microversion{2, 11}) {
		v["forced_down"] = h.ForcedDown
	}
	return v
}

// updateService is PUT /os-services/{enable,disable,disable-log-reason,
// force-down} (the 2.1–2.52 forms).
func (a *API) updateService(w http.ResponseWriter, r *http.Request) error {
	if versionOf(r.Context()).AtLeast(v253) {
		return a.adminOnly(a.updateServiceByID)(w, r)
	}
	return a.adminOnly(func(w http.ResponseWriter, r *http.Request) error {
		var body struct {
			Host       string  `json:"host"`
			Binary     string  `json:"binary"`
			Reason     *string `json:"disabled_reason"`
			ForcedDown *bool   `json:"forced_down"`
		}
		if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
			return err
		}
		if body.Host == "" || body.Binary != "nova-compute" {
			return apierr.Invalidf("Invalid input: host and binary nova-compute are required.")
		}
		var disabled *bool
		action := mux.Vars(r)["action"]
		switch action {
		case "enable", "disable", "disable-log-reason":
			d := action != "enable"
			disabled = &d
			body.ForcedDown = nil
		case "force-down":
			if versionOf(r.Context()).Less(Microversion{2, 11}) || body.ForcedDown == nil {
				return apierr.NotFoundf("Unknown action")
			}
		default:
			return apierr.NotFoundf("Unknown action")
		}
		h, err := a.cfg.Store.SetHostService(r.Context(), body.Host, disabled, body.Reason, body.ForcedDown)
		if err != nil {
			return err
		}
		v := map[string]any{"host": h.Name, "binary": "nova-compute",
			"status": map[bool]string{true: "disabled", false: "enabled"}[h.Disabled]}
		if action == "disable-log-reason" {
			v["disabled_reason"] = h.DisabledWhy
		}
		if action == "force-down" {
			v = map[string]any{"host": h.Name, "binary": "nova-compute", "forced_down": h.ForcedDown}
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"service": v})
		return nil
	})(w, r)
}

// updateServiceByID is 2.53's PUT /os-services/{service_uuid} {"status",
// "disabled_reason", "forced_down"}; it answers the whole service.
func (a *API) updateServiceByID(w http.ResponseWriter, r *http.Request) error {
	id := mux.Vars(r)["action"]
	if uuid.Validate(id) != nil {
		return apierr.Invalidf("Invalid uuid %s", id)
	}
	var body struct {
		Status     *string `json:"status"`
		Reason     *string `json:"disabled_reason"`
		ForcedDown *bool   `json:"forced_down"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
		return err
	}
	var disabled *bool
	switch {
	case body.Status == nil && body.ForcedDown == nil:
		return apierr.Invalidf("At least one of 'status' or 'forced_down' must be specified in the request body.")
	case body.Status != nil && *body.Status != "enabled" && *body.Status != "disabled":
		return apierr.Invalidf("Invalid input for field/attribute status. Value: %s. It must be enabled or disabled.", *body.Status)
	case body.Reason != nil && (body.Status == nil || *body.Status != "disabled"):
		return apierr.Invalidf("Specifying 'disabled_reason' with status 'enabled' is invalid.")
	case body.Status != nil:
		d := *body.Status == "disabled"
		disabled = &d
	}
	hs, err := a.cfg.Store.ListHosts(r.Context())
	if err != nil {
		return err
	}
	i := slices.IndexFunc(hs, func(h store.Host) bool { return hostUUID(h.Name) == id })
	if i < 0 {
		return apierr.NotFoundf("Service %s could not be found.", id)
	}
	h, err := a.cfg.Store.SetHostService(r.Context(), hs[i].Name, disabled, body.Reason, body.ForcedDown)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"service": a.serviceView(r, h)})
	return nil
}

// withServers adds 2.53's "servers" (name and uuid of each server on the
// host) when the request asks with_servers=true.
func (a *API) withServers(r *http.Request, h *store.HostSummary, v map[string]any) error {
	if versionOf(r.Context()).Less(v253) || !strings.EqualFold(r.URL.Query().Get("with_servers"), "true") {
		return nil
	}
	srvs, err := a.cfg.Store.ListServers(r.Context(), store.ServerFilter{Scope: store.Scope{AllProjects: true}, Host: h.Name})
	if err != nil {
		return err
	}
	list := make([]map[string]string, len(srvs))
	for i := range srvs {
		list[i] = map[string]string{"name": "instance-" + srvs[i].ID, "uuid": srvs[i].ID}
	}
	v["servers"] = list
	return nil
}
