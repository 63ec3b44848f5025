package compute

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/gorilla/mux"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/region/store"
)

// checkKeypairQuota refuses a keypair over the key_pairs quota.
func (a *API) checkKeypairQuota(r *http.Request, userID, projectID string) error {
	limits, err := a.cfg.Store.Quotas(r.Context(), projectID)
	if err != nil {
		return err
	}
	n, err := a.cfg.Store.CountKeypairs(r.Context(), userID)
	if err != nil {
		return err
	}
	if lim := limits["key_pairs"]; lim >= 0 && n+1 > lim {
		return apierr.OverLimitf("Quota exceeded, too many key pairs.")
	}
	return nil
}

// networkQuota are the quotas Nova dropped from its API at 2.36 (they
// belong to the network API).
var networkQuota = map[string]bool{"fixed_ips": true, "floating_ips": true, "security_groups": true,
	"security_group_rules": true, "networks": true}

// droppedQuota: the network quotas are gone from 2.36, the injected-file
// ones (personality) from 2.57.
func droppedQuota(r *http.Request, k string) bool {
	mv := versionOf(r.Context())
	return networkQuota[k] && mv.AtLeast(v236) ||
		strings.HasPrefix(k, "injected_file") && mv.AtLeast(v257)
}

// limits is GET /limits: Nova's absolute limits with the project's usage.
func (a *API) limits(w http.ResponseWriter, r *http.Request) error {
	id := identity(r.Context())
	project := id.ProjectID
	if p := r.URL.Query().Get("tenant_id"); p != "" && id.IsAdmin() {
		project = p
	}
	q, err := a.cfg.Store.Quotas(r.Context(), project)
	if err != nil {
		return err
	}
	u, err := a.cfg.Store.ProjectUsage(r.Context(), project)
	if err != nil {
		return err
	}
	abs := map[string]int{
		"maxTotalInstances": q["instances"], "maxTotalCores": q["cores"], "maxTotalRAMSize": q["ram"],
		"maxTotalKeypairs": q["key_pairs"], "maxServerMeta": q["metadata_items"], "maxImageMeta": 128,
		"maxPersonality": q["injected_files"], "maxPersonalitySize": q["injected_file_content_bytes"],
		"maxServerGroups": q["server_groups"], "maxServerGroupMembers": q["server_group_members"],
		"maxSecurityGroups": -1, "maxSecurityGroupRules": -1, "maxTotalFloatingIps": -1,
		"totalInstancesUsed": u.Instances, "totalCoresUsed": u.Cores, "totalRAMUsed": u.RAM,
		"totalServerGroupsUsed": u.ServerGroups, "totalSecurityGroupsUsed": 0, "totalFloatingIpsUsed": 0,
	}
	mv := versionOf(r.Context())
	if mv.AtLeast(v236) {
		for _, k := range []string{"maxSecurityGroups", "maxSecurityGroupRules", "maxTotalFloatingIps",
			"totalSecurityGroupsUsed", "totalFloatingIpsUsed"} {
			delete(abs, k)
		}
	}
	if mv.AtLeast(Microversion{2, 39}) {
		delete(abs, "maxImageMeta")
	}
	if mv.AtLeast(v257) {
		delete(abs, "maxPersonality")
		delete(abs, "maxPersonalitySize")
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"limits": map[string]any{"rate": []any{}, "absolute": abs}})
	return nil
}

// quotaProject is the project a quota call is about; members may only
// look at their own.
func quotaProject(r *http.Request) (string, error) {
	id := identity(r.Context())
	p := mux.Vars(r)["project"]
	if p != id.ProjectID && !id.IsAdmin() {
		return "", apierr.Forbiddenf("Policy doesn't allow os_compute_api:os-quota-sets:show to be performed.")
	}
	return p, nil
}

func (a *API) showQuotas(detail, defaults bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		p, err := quotaProject(r)
		if err != nil {
			return err
		}
		q := store.DefaultQuotas
		if !defaults {
			if q, err = a.cfg.Store.Quotas(r.Context(), p); err != nil {
				return err
			}
		}
		out := map[string]any{"id": p}
		var u *store.Usage
		if detail {
			if u, err = a.cfg.Store.ProjectUsage(r.Context(), p); err != nil {
				return err
			}
		}
		used := map[string]int{}
		if u != nil {
			used = map[string]int{"instances": u.Instances, "cores": u.Cores, "ram": u.RAM, "server_groups": u.ServerGroups}
		}
		for k, v := range q {
			if droppedQuota(r, k) {
				continue
			}
			if detail {
				out[k] = map[string]int{"limit": v, "in_use": used[k], "reserved": 0}
			} else {
				out[k] = v
			}
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]any{"quota_set": out})
		return nil
	}
}

func (a *API) updateQuotas(w http.ResponseWriter, r *http.Request) error {
	if !identity(r.Context()).IsAdmin() {
		return apierr.Forbiddenf("Policy doesn't allow os_compute_api:os-quota-sets:update to be performed.")
	}
	var body struct {
		QuotaSet map[string]any `json:"quota_set"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
		return err
	}
	limits := map[string]int{}
	for k, v := range body.QuotaSet {
		if k == "force" {
			continue
		}
		if droppedQuota(r, k) {
			return apierr.Invalidf("Invalid input for field/attribute quota_set. Additional properties are not allowed ('%s' was unexpected)", k)
		}
		f, ok := v.(float64)
		if !ok || f < -1 || f != float64(int(f)) {
			return apierr.Invalidf("Invalid input for field/attribute %s. It must be an integer of -1 or more.", k)
		}
		limits[k] = int(f)
	}
	p := mux.Vars(r)["project"]
	if err := a.cfg.Store.SetQuotas(r.Context(), p, limits); err != nil {
		return err
	}
	// Nova's PUT answers the quota set without its "id".
	rec := httptest.NewRecorder()
	if err := a.showQuotas(false, false)(rec, r); err != nil {
		return err
	}
	var out struct {
		QuotaSet map[string]any `json:"quota_set"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		return err
	}
	delete(out.QuotaSet, "id")
	httpx.WriteJSON(w, http.StatusOK, out)
	return nil
}

// deleteQuotas is DELETE /os-quota-sets/{project} (admin): the project's
// limits go back to the defaults; 202 as in Nova.
func (a *API) deleteQuotas(w http.ResponseWriter, r *http.Request) error {
	if !identity(r.Context()).IsAdmin() {
		return apierr.Forbiddenf("Policy doesn't allow os_compute_api:os-quota-sets:delete to be performed.")
	}
	if err := a.cfg.Store.ResetQuotas(r.Context(), mux.Vars(r)["project"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}
