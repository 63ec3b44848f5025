package compute

import (
	"encoding/json"
	"net/http"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/region/scheduler"
	"berth/region/store"
)

func (a *API) groupView(r *http.Request, g *store.ServerGroup) map[string]any {
	v := map[string]any{"id": g.ID, "name": g.Name, "policies": []string{g.Policy},
		"members": g.Members, "metadata": map[string]string{}}
	if versionOf(r.Context()).AtLeast(Microversion{2, 13}) {
		v["project_id"], v["user_id"] = g.ProjectID, g.UserID
	}
	if versionOf(r.Context()).AtLeast(v264) {
		// 2.64: one "policy" and its "rules"; no policies, no metadata.
		rules := map[string]any{}
		_ = json.Unmarshal(g.Rules, &rules)
		delete(v, "policies")
		delete(v, "metadata")
		v["policy"], v["rules"] = g.Policy, rules
	}
	return v
}

func (a *API) createServerGroup(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Group *struct {
			Name     string          `json:"name"`
			Policies []string        `json:"policies"`
			Policy   *string         `json:"policy"`
			Rules    json.RawMessage `json:"rules"`
		} `json:"server_group"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
		return err
	}
	g := body.Group
	if g == nil {
		return apierr.Invalidf("Invalid input for field/attribute server_group. 'server_group' is a required property.")
	}
	if err := validName("name", g.Name); err != nil {
		return err
	}
	var rules []byte
	if versionOf(r.Context()).AtLeast(v264) {
		if g.Policies != nil || g.Policy == nil {
			return apierr.Invalidf("Invalid input for field/attribute server_group. 'policy' is a required property (and 'policies' is not allowed).")
		}
		g.Policies = []string{*g.Policy}
		var err error
		if rules, err = groupRules(*g.Policy, g.Rules); err != nil {
			return err
		}
	} else if g.Policy != nil || g.Rules != nil {
		return apierr.Invalidf("Additional properties are not allowed ('policy', 'rules' are for microversion 2.64 and later)")
	}
	if len(g.Policies) != 1 {
		return apierr.Invalidf("Invalid input for field/attribute policies. It must hold exactly one policy.")
	}
	allowed := map[string]bool{scheduler.Affinity: true, scheduler.AntiAffinity: true}
	if versionOf(r.Context()).AtLeast(Microversion{2, 15}) {
		allowed[scheduler.SoftAffinity], allowed[scheduler.SoftAntiAffinity] = true, true
	}
	if !allowed[g.Policies[0]] {
		return apierr.Invalidf("Invalid input for field/attribute 0. Value: %s. It is not one of the allowed policies.", g.Policies[0])
	}
	id := identity(r.Context())
	out, err := a.cfg.Store.CreateServerGroup(r.Context(), store.ServerGroup{
		ID: uuid.NewString(), ProjectID: id.ProjectID, UserID: id.UserID, Name: g.Name, Policy: g.Policies[0],
		Rules: rules})
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"server_group": a.groupView(r, out)})
	return nil
}

func (a *API) listServerGroups(w http.ResponseWriter, r *http.Request) error {
	id := identity(r.Context())
	sc := store.Scope{ProjectID: id.ProjectID}
	if _, ok := r.URL.Query()["all_projects"]; ok && id.IsAdmin() {
		sc.AllProjects = true
	}
	gs, err := a.cfg.Store.ListServerGroups(r.Context(), sc)
	if err != nil {
		return err
	}
	out := make([]map[string]any, len(gs))
	for i := range gs {
		out[i] = a.groupView(r, &gs[i])
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"server_groups": out})
	return nil
}

func (a *API) showServerGroup(w http.ResponseWriter, r *http.Request) error {
	g, err := a.cfg.Store.FindServerGroup(r.Context(), caller(r).Scope, mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"server_group": a.groupView(r, g)})
	return nil
}

func (a *API) deleteServerGroup(w http.ResponseWriter, r *http.Request) error {
	if err := a.cfg.Store.DeleteServerGroup(r.Context(), caller(r).Scope, mux.Vars(r)["id"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// groupRules checks 2.64's rules: only anti-affinity has one,
// max_server_per_host, a positive integer (the scheduler lets that many
// members share a host).
func groupRules(policy string, raw json.RawMessage) ([]byte, error) {
	if len(raw) == 0 || string(raw) == "null" || string(raw) == "{}" {
		return nil, nil
	}
	if policy != scheduler.AntiAffinity {
		return nil, apierr.Invalidf("Only anti-affinity policy supports rules.")
	}
	var rules map[string]json.RawMessage
	if json.Unmarshal(raw, &rules) != nil {
		return nil, apierr.Invalidf("Invalid input for field/attribute rules. It must be an object.")
	}
	for k, v := range rules {
		var n int
		if k != "max_server_per_host" || json.Unmarshal(v, &n) != nil || n < 1 {
			return nil, apierr.Invalidf("Invalid input for field/attribute rules. Only max_server_per_host, a positive integer, is allowed.")
		}
	}
	return raw, nil
}
