package compute

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/region/store"
)

// The security-group surface older clients still call on the compute
// endpoint (os-security-groups, os-security-group-rules, and the
// addSecurityGroup/removeSecurityGroup actions). Nova proxies them to
// Neutron; Berth's network API lives in the same store, so they read and
// write it directly. Nova removed them at 2.36; Berth's max is below that.

func novaRule(r *store.Rule, groupName string) map[string]any {
	v := map[string]any{"id": r.ID, "parent_group_id": r.GroupID, "ip_protocol": nil, "from_port": nil,
		"to_port": nil, "ip_range": map[string]any{}, "group": map[string]any{}}
	if r.Protocol.Valid {
		v["ip_protocol"] = r.Protocol.String
	}
	if r.PortRangeMin.Valid {
		v["from_port"] = r.PortRangeMin.Int64
	}
	if r.PortRangeMax.Valid {
		v["to_port"] = r.PortRangeMax.Int64
	}
	if r.RemoteIPPrefix.Valid {
		v["ip_range"] = map[string]any{"cidr": r.RemoteIPPrefix.String}
	}
	if r.RemoteGroupID.Valid {
		v["group"] = map[string]any{"name": groupName, "tenant_id": r.ProjectID}
	}
	return v
}

func novaGroup(g *store.SecurityGroup) map[string]any {
	rules := []map[string]any{}
	for i := range g.Rules {
		// Nova shows ingress rules only.
		if g.Rules[i].Direction == "ingress" {
			rules = append(rules, novaRule(&g.Rules[i], g.Name))
		}
	}
	return map[string]any{"id": g.ID, "name": g.Name, "description": g.Description, "tenant_id": g.ProjectID, "rules": rules}
}

func (a *API) listNovaGroups(w http.ResponseWriter, r *http.Request) error {
	gs, err := a.cfg.Store.ListSecurityGroups(r.Context(), store.Scope{ProjectID: identity(r.Context()).ProjectID})
	if err != nil {
		return err
	}
	out := []map[string]any{}
	for i := range gs {
		out = append(out, novaGroup(&gs[i]))
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"security_groups": out})
	return nil
}

func (a *API) showNovaGroup(w http.ResponseWriter, r *http.Request) error {
	g, err := a.cfg.Store.FindSecurityGroup(r.Context(), store.Scope{ProjectID: identity(r.Context()).ProjectID}, mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"security_group": novaGroup(g)})
	return nil
}

func (a *API) createNovaGroup(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Group *struct {
			Name        string `json:"name"`
			Description string `json:"description"`
		} `json:"security_group"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
		return err
	}
	if body.Group == nil {
		return apierr.Invalidf("Invalid input for field/attribute security_group. 'security_group' is a required property.")
	}
	if err := validName("name", body.Group.Name); err != nil {
		return err
	}
	project := identity(r.Context()).ProjectID
	if err := a.cfg.Store.EnsureDefaultGroup(r.Context(), project); err != nil {
		return err
	}
	g, err := a.cfg.Store.CreateSecurityGroup(r.Context(), store.SecurityGroup{ID: uuid.NewString(), ProjectID: project,
		Name: body.Group.Name, Description: body.Group.Description})
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"security_group": novaGroup(g)})
	return nil
}

// updateNovaGroup is PUT /os-security-groups/{id} {"security_group":
// {"name", "description"}} (both required, as Nova's schema has it).
func (a *API) updateNovaGroup(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Group *struct {
			Name        *string `json:"name"`
			Description *string `json:"description"`
		} `json:"security_group"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
		return err
	}
	if body.Group == nil || body.Group.Name == nil || body.Group.Description == nil {
		return apierr.Invalidf("Invalid input for field/attribute security_group. 'name' and 'description' are required properties.")
	}
	if err := validName("name", *body.Group.Name); err != nil {
		return err
	}
	g, err := a.cfg.Store.UpdateSecurityGroup(r.Context(), store.Scope{ProjectID: identity(r.Context()).ProjectID},
		mux.Vars(r)["id"], body.Group.Name, body.Group.Description)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"security_group": novaGroup(g)})
	return nil
}

func (a *API) deleteNovaGroup(w http.ResponseWriter, r *http.Request) error {
	if err := a.cfg.Store.DeleteSecurityGroup(r.Context(), store.Scope{ProjectID: identity(r.Context()).ProjectID}, mux.Vars(r)["id"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (a *API) createNovaRule(w http.ResponseWriter, r *http.Request) error {
	var body struct {
		Rule *struct {
			ParentGroupID string `json:"parent_group_id"`
			IPProtocol    string `json:"ip_protocol"`
			FromPort      any    `json:"from_port"`
			ToPort        any    `json:"to_port"`
			CIDR          string `json:"cidr"`
			GroupID       string `json:"group_id"`
		} `json:"security_group_rule"`
	}
	if err := httpx.DecodeJSON(w, r, httpx.MaxBodyBytes, true, &body); err != nil {
		return err
	}
	b := body.Rule
	if b == nil || b.ParentGroupID == "" {
		return apierr.Invalidf("Invalid input for field/attribute security_group_rule. 'parent_group_id' is required.")
	}
	port := func(v any) (int64, bool, error) {
		switch x := v.(type) {
		case nil:
			return 0, false, nil
		case float64:
			return int64(x), true, nil
		case string:
			n, err := strconv.ParseInt(x, 10, 64)
			return n, err == nil, err
		}
		return 0, false, apierr.Invalidf("Invalid port.")
	}
	rule := store.Rule{ID: uuid.NewString(), GroupID: b.ParentGroupID, Direction: "ingress", Ethertype: "IPv4"}
	if b.IPProtocol != "" {
		// Nova takes the protocol in any case ("TCP").
		p, ok := map[string]string{"tcp": "tcp", "udp": "udp", "icmp": "icmp"}[strings.ToLower(b.IPProtocol)]
		if !ok {
			return apierr.Invalidf("Invalid IP protocol %s.", b.IPProtocol)
		}
		rule.Protocol.String, rule.Protocol.Valid = p, true
		from, okf, err := port(b.FromPort)
		if err != nil {
			return apierr.Invalidf("Invalid port range.")
		}
		to, okt, err := port(b.ToPort)
		if err != nil {
			return apierr.Invalidf("Invalid port range.")
		}
		if p != "icmp" && (!okf || !okt || from < 1 || to > 65535 || from > to) {
			return apierr.Invalidf("Invalid port range %v:%v.", b.FromPort, b.ToPort)
		}
		if okf && from >= 0 {
			rule.PortRangeMin.Int64, rule.PortRangeMin.Valid = from, true
		}
		if okt && to >= 0 {
			rule.PortRangeMax.Int64, rule.PortRangeMax.Valid = to, true
		}
	}
	switch {
	case b.GroupID != "":
		rule.RemoteGroupID.String, rule.RemoteGroupID.Valid = b.GroupID, true
	case b.CIDR != "":
		rule.RemoteIPPrefix.String, rule.RemoteIPPrefix.Valid = b.CIDR, true
	default:
		rule.RemoteIPPrefix.String, rule.RemoteIPPrefix.Valid = "0.0.0.0/0", true
	}
	out, err := a.cfg.Store.CreateRule(r.Context(), store.Scope{ProjectID: identity(r.Context()).ProjectID}, rule)
	if err != nil {
		return err
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"security_group_rule": novaRule(out, "")})
	return nil
}

func (a *API) deleteNovaRule(w http.ResponseWriter, r *http.Request) error {
	if err := a.cfg.Store.DeleteRule(r.Context(), store.Scope{ProjectID: identity(r.Context()).ProjectID}, mux.Vars(r)["id"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

func (a *API) serverGroups(w http.ResponseWriter, r *http.Request) error {
	c := caller(r)
	srv, err := a.cfg.Store.FindServer(r.Context(), c.Scope, mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	gs, err := a.cfg.Store.ServerSecurityGroups(r.Context(), srv.ID)
	if err != nil {
		return err
	}
	out := []map[string]any{}
	for i := range gs {
		out = append(out, novaGroup(&gs[i]))
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"security_groups": out})
	return nil
}

// changeServerGroup is addSecurityGroup / removeSecurityGroup {"name"}:
// the group goes onto (or off) every port of the server.
func (a *API) changeServerGroup(add bool) actionFunc {
	return func(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
		var body struct {
			Name string `json:"name"`
		}
		if err := decodeArg("addSecurityGroup", arg, &body); err != nil {
			return err
		}
		if body.Name == "" {
			return apierr.Invalidf("Security group name cannot be empty")
		}
		srv, err := a.cfg.Store.FindServer(r.Context(), c.Scope, id)
		if err != nil {
			return err
		}
		if err := a.cfg.Store.SetServerSecurityGroup(r.Context(), srv.ID, srv.ProjectID, body.Name, add); err != nil {
			return err
		}
		w.WriteHeader(http.StatusAccepted)
		return nil
	}
}
