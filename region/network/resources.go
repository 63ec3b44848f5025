package network

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"berth/internal/apierr"
	"berth/internal/httpx"
	"berth/region/store"
)

// remarshal decodes v's JSON form into out, rejecting unknown attributes
// as Neutron does.
func remarshal(v any, out any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return apierr.Invalidf("Malformed request body.")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		msg := err.Error()
		if strings.HasPrefix(msg, "json: unknown field ") {
			return apierr.Invalidf("Unrecognized attribute(s) '%s'", strings.Trim(strings.TrimPrefix(msg, "json: unknown field "), `"`))
		}
		return apierr.Invalidf("Invalid input for operation: %s.", msg)
	}
	return nil
}

const ts = "2006-01-02T15:04:05Z"

func checkName(field string, s *string) error {
	if s != nil && utf8.RuneCountInString(*s) > 255 {
		return apierr.Invalidf("Invalid input for %s. Reason: '%s' exceeds maximum length of 255.", field, *s)
	}
	return nil
}

func (a *API) writeOne(w http.ResponseWriter, status int, key string, v map[string]any) error {
	httpx.WriteJSON(w, status, map[string]any{key: v})
	return nil
}

func (a *API) writeList(w http.ResponseWriter, r *http.Request, key string, items []map[string]any) error {
	if items == nil {
		items = []map[string]any{}
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{key: filterList(r, items)})
	return nil
}

// --- networks ---

func networkView(n *store.Network) map[string]any {
	subnets := n.Subnets
	if subnets == nil {
		subnets = []string{}
	}
	return map[string]any{
		"id": n.ID, "name": n.Name, "tenant_id": n.ProjectID, "project_id": n.ProjectID,
		"admin_state_up": n.AdminStateUp, "mtu": n.MTU, "status": "ACTIVE", "subnets": subnets,
		"shared": n.Shared, "router:external": false, "port_security_enabled": true,
		"description": n.Description, "tags": []string{}, "revision_number": n.Revision,
		"availability_zone_hints": []string{}, "availability_zones": []string{"nova"},
		"ipv4_address_scope": nil, "ipv6_address_scope": nil, "l2_adjacency": true,
		"created_at": n.CreatedAt.UTC().Format(ts), "updated_at": n.UpdatedAt.UTC().Format(ts),
	}
}

type networkBody struct {
	Name                *string `json:"name"`
	Description         *string `json:"description"`
	AdminStateUp        *bool   `json:"admin_state_up"`
	Shared              *bool   `json:"shared"`
	MTU                 *int    `json:"mtu"`
	TenantID            *string `json:"tenant_id"`
	ProjectID           *string `json:"project_id"`
	PortSecurityEnabled *bool   `json:"port_security_enabled"`
	External            *bool   `json:"router:external"`
	AZHints             []any   `json:"availability_zone_hints"`
}

func (b *networkBody) check(r *http.Request) error {
	if err := checkName("name", b.Name); err != nil {
		return err
	}
	if b.Shared != nil && *b.Shared && !identity(r).IsAdmin() {
		return apierr.Forbiddenf("(rule:create_network and rule:create_network:shared) is disallowed by policy")
	}
	if b.External != nil && *b.External {
		return apierr.Forbiddenf("(rule:create_network and rule:create_network:router:external) is disallowed by policy")
	}
	if b.MTU != nil && (*b.MTU < 68 || *b.MTU > 9000) {
		return apierr.Invalidf("Invalid input for mtu. Reason: '%d' is not in range 68 through 9000.", *b.MTU)
	}
	return nil
}

// ownerOf is the project a new resource belongs to: the caller's, or for an
// admin the tenant_id/project_id given.
func ownerOf(r *http.Request, tenant, project *string) (string, error) {
	id := identity(r)
	want := id.ProjectID
	for _, p := range []*string{tenant, project} {
		if p != nil && *p != "" {
			want = *p
		}
	}
	if want != id.ProjectID && !id.IsAdmin() {
		return "", apierr.Forbiddenf("Specifying 'project_id' or 'tenant_id' other than the authenticated project in request requires admin privileges")
	}
	return want, nil
}

func (a *API) listNetworks(w http.ResponseWriter, r *http.Request) error {
	ns, err := a.store.ListNetworks(r.Context(), scope(r))
	if err != nil {
		return err
	}
	var out []map[string]any
	for i := range ns {
		out = append(out, networkView(&ns[i]))
	}
	return a.writeList(w, r, "networks", out)
}

func (a *API) showNetwork(w http.ResponseWriter, r *http.Request) error {
	n, err := a.store.FindNetwork(r.Context(), scope(r), mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	return a.writeOne(w, http.StatusOK, "network", networkView(n))
}

func (a *API) createNetwork(w http.ResponseWriter, r *http.Request) error {
	var b networkBody
	if err := decode(w, r, "network", &b); err != nil {
		return err
	}
	if err := b.check(r); err != nil {
		return err
	}
	owner, err := ownerOf(r, b.TenantID, b.ProjectID)
	if err != nil {
		return err
	}
	n := store.Network{ID: uuid.NewString(), ProjectID: owner, AdminStateUp: true, MTU: 1450}
	if b.Name != nil {
		n.Name = *b.Name
	}
	if b.Description != nil {
		n.Description = *b.Description
	}
	if b.AdminStateUp != nil {
		n.AdminStateUp = *b.AdminStateUp
	}
	if b.Shared != nil {
		n.Shared = *b.Shared
	}
	if b.MTU != nil {
		n.MTU = *b.MTU
	}
	out, err := a.store.CreateNetwork(r.Context(), n)
	if err != nil {
		return err
	}
	return a.writeOne(w, http.StatusCreated, "network", networkView(out))
}

func (a *API) updateNetwork(w http.ResponseWriter, r *http.Request) error {
	var b networkBody
	if err := decode(w, r, "network", &b); err != nil {
		return err
	}
	if err := b.check(r); err != nil {
		return err
	}
	if b.TenantID != nil || b.ProjectID != nil {
		return apierr.Invalidf("Cannot update read-only attribute project_id")
	}
	ctx, err := ifMatch(r)
	if err != nil {
		return err
	}
	n, err := a.store.UpdateNetwork(ctx, scope(r), mux.Vars(r)["id"], store.NetworkChanges{
		Name: b.Name, Description: b.Description, AdminStateUp: b.AdminStateUp, Shared: b.Shared, MTU: b.MTU})
	if err != nil {
		return err
	}
	return a.writeOne(w, http.StatusOK, "network", networkView(n))
}

func (a *API) deleteNetwork(w http.ResponseWriter, r *http.Request) error {
	if err := a.store.DeleteNetwork(r.Context(), scope(r), mux.Vars(r)["id"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- subnets ---

func subnetView(s *store.Subnet) map[string]any {
	var gw any
	if s.GatewayIP.Valid {
		gw = s.GatewayIP.String
	}
	return map[string]any{
		"id": s.ID, "name": s.Name, "network_id": s.NetworkID, "tenant_id": s.ProjectID, "project_id": s.ProjectID,
		"cidr": s.CIDR, "gateway_ip": gw, "allocation_pools": s.AllocationPools, "dns_nameservers": s.DNSNameservers,
		"host_routes": []any{}, "enable_dhcp": s.EnableDHCP, "ip_version": s.IPVersion, "ipv6_address_mode": nil,
		"ipv6_ra_mode": nil, "subnetpool_id": nil, "description": s.Description, "tags": []string{},
		"service_types": []string{}, "revision_number": s.Revision,
		"created_at": s.CreatedAt.UTC().Format(ts), "updated_at": s.UpdatedAt.UTC().Format(ts),
	}
}

func (a *API) listSubnets(w http.ResponseWriter, r *http.Request) error {
	ss, err := a.store.ListSubnets(r.Context(), scope(r), "")
	if err != nil {
		return err
	}
	var out []map[string]any
	for i := range ss {
		out = append(out, subnetView(&ss[i]))
	}
	return a.writeList(w, r, "subnets", out)
}

func (a *API) showSubnet(w http.ResponseWriter, r *http.Request) error {
	s, err := a.store.FindSubnet(r.Context(), scope(r), mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	return a.writeOne(w, http.StatusOK, "subnet", subnetView(s))
}

func (a *API) createSubnet(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		Name            *string      `json:"name"`
		Description     *string      `json:"description"`
		NetworkID       string       `json:"network_id"`
		CIDR            string       `json:"cidr"`
		IPVersion       *int         `json:"ip_version"`
		GatewayIP       *any         `json:"gateway_ip"`
		AllocationPools []store.Pool `json:"allocation_pools"`
		DNSNameservers  []string     `json:"dns_nameservers"`
		EnableDHCP      *bool        `json:"enable_dhcp"`
		TenantID        *string      `json:"tenant_id"`
		ProjectID       *string      `json:"project_id"`
		HostRoutes      []any        `json:"host_routes"`
	}
	raw := map[string]json.RawMessage{}
	if err := decode(w, r, "subnet", &raw); err != nil {
		return err
	}
	if err := remarshal(raw, &b); err != nil {
		return err
	}
	if err := checkName("name", b.Name); err != nil {
		return err
	}
	if g, ok := raw["gateway_ip"]; ok && string(g) == "null" {
		noGateway := any(nil)
		b.GatewayIP = &noGateway
	}
	if b.IPVersion != nil && *b.IPVersion != 4 {
		return apierr.Invalidf("Invalid input for ip_version. Reason: only IPv4 subnets are supported by Berth.")
	}
	if b.NetworkID == "" || b.CIDR == "" {
		return apierr.Invalidf("Failed to parse request. Required attributes network_id and cidr.")
	}
	if len(b.HostRoutes) > 0 {
		return apierr.Invalidf("host_routes are not supported by Berth.")
	}
	owner, err := ownerOf(r, b.TenantID, b.ProjectID)
	if err != nil {
		return err
	}
	sn := store.Subnet{ID: uuid.NewString(), NetworkID: b.NetworkID, ProjectID: owner, CIDR: b.CIDR,
		EnableDHCP: true, AllocationPools: b.AllocationPools, DNSNameservers: b.DNSNameservers}
	if b.Name != nil {
		sn.Name = *b.Name
	}
	if b.Description != nil {
		sn.Description = *b.Description
	}
	if b.EnableDHCP != nil {
		sn.EnableDHCP = *b.EnableDHCP
	}
	if b.GatewayIP != nil {
		switch g := (*b.GatewayIP).(type) {
		case nil:
			sn.NoGateway = true
		case string:
			if net.ParseIP(g).To4() == nil {
				return apierr.Invalidf("Invalid input for gateway_ip. Reason: '%s' is not a valid IP address.", g)
			}
			sn.GatewayIP = sql.NullString{String: g, Valid: true}
		default:
			return apierr.Invalidf("Invalid input for gateway_ip.")
		}
	}
	out, err := a.store.CreateSubnet(r.Context(), scope(r), sn)
	if err != nil {
		return err
	}
	return a.writeOne(w, http.StatusCreated, "subnet", subnetView(out))
}

func (a *API) updateSubnet(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		Name           *string  `json:"name"`
		Description    *string  `json:"description"`
		DNSNameservers []string `json:"dns_nameservers"`
		GatewayIP      *string  `json:"gateway_ip"`
		EnableDHCP     *bool    `json:"enable_dhcp"`
	}
	raw := map[string]json.RawMessage{}
	if err := decode(w, r, "subnet", &raw); err != nil {
		return err
	}
	if err := remarshal(raw, &b); err != nil {
		return err
	}
	if err := checkName("name", b.Name); err != nil {
		return err
	}
	var gw *sql.NullString
	if g, ok := raw["gateway_ip"]; ok {
		gw = &sql.NullString{}
		if string(g) != "null" {
			if b.GatewayIP == nil || net.ParseIP(*b.GatewayIP).To4() == nil {
				return apierr.Invalidf("Invalid input for gateway_ip. Reason: '%s' is not a valid IP address.", string(g))
			}
			*gw = sql.NullString{String: *b.GatewayIP, Valid: true}
		}
	}
	ctx, err := ifMatch(r)
	if err != nil {
		return err
	}
	s, err := a.store.UpdateSubnet(ctx, scope(r), mux.Vars(r)["id"], store.SubnetChanges{Name: b.Name,
		Description: b.Description, DNS: b.DNSNameservers, Gateway: gw, EnableDHCP: b.EnableDHCP})
	if err != nil {
		return err
	}
	return a.writeOne(w, http.StatusOK, "subnet", subnetView(s))
}

func (a *API) deleteSubnet(w http.ResponseWriter, r *http.Request) error {
	if err := a.store.DeleteSubnet(r.Context(), scope(r), mux.Vars(r)["id"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- ports ---

func portView(r *http.Request, p *store.Port) map[string]any {
	groups := p.SecurityGroups
	if groups == nil {
		groups = []string{}
	}
	status := "DOWN"
	if p.ServerID != "" {
		status = "ACTIVE"
	}
	v := map[string]any{
		"id": p.ID, "name": p.Name, "network_id": p.NetworkID, "tenant_id": p.ProjectID, "project_id": p.ProjectID,
		"mac_address": p.MACAddress, "admin_state_up": p.AdminStateUp, "status": status,
		"device_id": p.DeviceID, "device_owner": p.DeviceOwner,
		"fixed_ips":       []map[string]string{{"subnet_id": p.SubnetID, "ip_address": p.IPAddress}},
		"security_groups": groups, "port_security_enabled": p.PortSecurityEnabled,
		"allowed_address_pairs": []any{}, "extra_dhcp_opts": []any{}, "description": p.Description,
		"binding:vnic_type": p.BindingVNICType, "tags": []string{}, "revision_number": p.Revision,
		"created_at": p.CreatedAt.UTC().Format(ts), "updated_at": p.UpdatedAt.UTC().Format(ts),
	}
	if identity(r).IsAdmin() {
		v["binding:host_id"], v["binding:vif_type"], v["binding:vif_details"] = p.BindingHost, "ovs", map[string]any{}
		profile := map[string]any{}
		_ = json.Unmarshal(p.BindingProfile, &profile)
		v["binding:profile"] = profile
	}
	return v
}

func (a *API) listPorts(w http.ResponseWriter, r *http.Request) error {
	ps, err := a.store.ListPorts(r.Context(), store.PortFilter{Scope: scope(r),
		NetworkID: r.URL.Query().Get("network_id"), DeviceID: r.URL.Query().Get("device_id")})
	if err != nil {
		return err
	}
	var out []map[string]any
	for i := range ps {
		out = append(out, portView(r, &ps[i]))
	}
	return a.writeList(w, r, "ports", out)
}

func (a *API) showPort(w http.ResponseWriter, r *http.Request) error {
	p, err := a.store.FindPort(r.Context(), scope(r), mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	return a.writeOne(w, http.StatusOK, "port", portView(r, p))
}

type portBody struct {
	Name                *string  `json:"name"`
	Description         *string  `json:"description"`
	NetworkID           string   `json:"network_id"`
	MACAddress          string   `json:"mac_address"`
	AdminStateUp        *bool    `json:"admin_state_up"`
	DeviceID            *string  `json:"device_id"`
	DeviceOwner         *string  `json:"device_owner"`
	PortSecurityEnabled *bool    `json:"port_security_enabled"`
	SecurityGroups      []string `json:"security_groups"`
	FixedIPs            []struct {
		SubnetID  string `json:"subnet_id"`
		IPAddress string `json:"ip_address"`
	} `json:"fixed_ips"`
	TenantID  *string         `json:"tenant_id"`
	ProjectID *string         `json:"project_id"`
	VNICType  *string         `json:"binding:vnic_type"`
	HostID    *string         `json:"binding:host_id"`
	Profile   json.RawMessage `json:"binding:profile"`
}

// checkBinding validates the binding attributes: binding:profile is an
// admin's object (Nova writes it; Berth keeps and shows it), and the only
// vnic_type a container set's veth can be is "normal".
func checkBinding(r *http.Request, b *portBody) error {
	if b.Profile != nil {
		if !identity(r).IsAdmin() {
			return apierr.Forbiddenf("(rule:update_port and rule:update_port:binding:profile) is disallowed by policy")
		}
		var m map[string]any
		if json.Unmarshal(b.Profile, &m) != nil {
			return apierr.Invalidf("Invalid input for binding:profile. Reason: it must be a dictionary.")
		}
	}
	if b.VNICType != nil && *b.VNICType != "normal" {
		return apierr.Invalidf("Invalid input for binding:vnic_type. Reason: '%s' is not supported: a Berth port is a veth, vnic_type normal.", *b.VNICType)
	}
	return nil
}

// fixedOf reads one requested fixed IP (Berth ports have one address).
func fixedOf(b *portBody) (*store.FixedIP, error) {
	if b.FixedIPs == nil {
		return nil, nil
	}
	if len(b.FixedIPs) != 1 {
		return nil, apierr.Invalidf("Berth ports have exactly one fixed IP.")
	}
	f := store.FixedIP{SubnetID: b.FixedIPs[0].SubnetID, IPAddress: b.FixedIPs[0].IPAddress}
	if f.IPAddress != "" && net.ParseIP(f.IPAddress).To4() == nil {
		return nil, apierr.Invalidf("Invalid input for fixed_ips. Reason: '%s' is not a valid IP address.", f.IPAddress)
	}
	return &f, nil
}

func parseMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", apierr.Invalidf("Invalid input for mac_address. Reason: '%s' is not a valid MAC address.", s)
	}
	return hw.String(), nil
}

func (a *API) createPort(w http.ResponseWriter, r *http.Request) error {
	var b portBody
	raw := map[string]json.RawMessage{}
	if err := decode(w, r, "port", &raw); err != nil {
		return err
	}
	if err := remarshal(raw, &b); err != nil {
		return err
	}
	if err := checkName("name", b.Name); err != nil {
		return err
	}
	if b.NetworkID == "" {
		return apierr.Invalidf("Failed to parse request. Required attribute 'network_id' not specified")
	}
	if b.HostID != nil && !identity(r).IsAdmin() {
		return apierr.Forbiddenf("(rule:create_port and rule:create_port:binding:host_id) is disallowed by policy")
	}
	if err := checkBinding(r, &b); err != nil {
		return err
	}
	if len(b.FixedIPs) > 1 {
		return apierr.Invalidf("Berth ports have one fixed IP.")
	}
	owner, err := ownerOf(r, b.TenantID, b.ProjectID)
	if err != nil {
		return err
	}
	np := store.NewPort{Port: store.Port{ID: uuid.NewString(), NetworkID: b.NetworkID, ProjectID: owner,
		AdminStateUp: true, PortSecurityEnabled: true}}
	if b.MACAddress != "" {
		if np.MACAddress, err = parseMAC(b.MACAddress); err != nil {
			return err
		}
	}
	np.Profile = b.Profile
	if b.VNICType != nil {
		np.VNICType = *b.VNICType
	}
	for dst, src := range map[*string]*string{&np.Name: b.Name, &np.Description: b.Description,
		&np.DeviceID: b.DeviceID, &np.DeviceOwner: b.DeviceOwner} {
		if src != nil {
			*dst = *src
		}
	}
	if b.AdminStateUp != nil {
		np.AdminStateUp = *b.AdminStateUp
	}
	if b.PortSecurityEnabled != nil {
		np.PortSecurityEnabled = *b.PortSecurityEnabled
	}
	if _, set := raw["security_groups"]; set {
		np.Groups = b.SecurityGroups
		if np.Groups == nil {
			np.Groups = []string{}
		}
	}
	if !np.PortSecurityEnabled && len(np.Groups) > 0 {
		return apierr.Conflictf("Port has security group associated. Cannot disable port security or ip address until security group is removed")
	}
	if len(b.FixedIPs) == 1 {
		np.FixedSubnet, np.FixedIP = b.FixedIPs[0].SubnetID, b.FixedIPs[0].IPAddress
		if np.FixedIP != "" && net.ParseIP(np.FixedIP).To4() == nil {
			return apierr.Invalidf("Invalid input for fixed_ips. Reason: '%s' is not a valid IP address.", np.FixedIP)
		}
	}
	p, err := a.store.CreatePort(r.Context(), scope(r), np)
	if err != nil {
		return err
	}
	return a.writeOne(w, http.StatusCreated, "port", portView(r, p))
}

func (a *API) updatePort(w http.ResponseWriter, r *http.Request) error {
	var b portBody
	raw := map[string]json.RawMessage{}
	if err := decode(w, r, "port", &raw); err != nil {
		return err
	}
	if err := remarshal(raw, &b); err != nil {
		return err
	}
	if b.NetworkID != "" {
		return apierr.Invalidf("Cannot update read-only attribute network_id")
	}
	if err := checkName("name", b.Name); err != nil {
		return err
	}
	if err := checkBinding(r, &b); err != nil {
		return err
	}
	ch := store.PortChanges{Name: b.Name, Description: b.Description, AdminStateUp: b.AdminStateUp,
		PortSecurityEnabled: b.PortSecurityEnabled, Groups: b.SecurityGroups, Profile: b.Profile, VNICType: b.VNICType}
	_, ch.SetGroups = raw["security_groups"]
	if b.MACAddress != "" {
		mac, err := parseMAC(b.MACAddress)
		if err != nil {
			return err
		}
		ch.MACAddress = &mac
	}
	var err error
	if ch.Fixed, err = fixedOf(&b); err != nil {
		return err
	}
	ctx, err := ifMatch(r)
	if err != nil {
		return err
	}
	p, err := a.store.UpdatePort(ctx, scope(r), mux.Vars(r)["id"], ch)
	if err != nil {
		return err
	}
	return a.writeOne(w, http.StatusOK, "port", portView(r, p))
}

func (a *API) deletePort(w http.ResponseWriter, r *http.Request) error {
	if err := a.store.DeletePort(r.Context(), scope(r), mux.Vars(r)["id"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// --- security groups ---

func ruleView(x *store.Rule) map[string]any {
	var proto, min, max, prefix, remote any
	if x.Protocol.Valid {
		proto = x.Protocol.String
	}
	if x.PortRangeMin.Valid {
		min = x.PortRangeMin.Int64
	}
	if x.PortRangeMax.Valid {
		max = x.PortRangeMax.Int64
	}
	if x.RemoteIPPrefix.Valid {
		prefix = x.RemoteIPPrefix.String
	}
	if x.RemoteGroupID.Valid {
		remote = x.RemoteGroupID.String
	}
	return map[string]any{
		"id": x.ID, "security_group_id": x.GroupID, "direction": x.Direction, "ethertype": x.Ethertype,
		"protocol": proto, "port_range_min": min, "port_range_max": max, "remote_ip_prefix": prefix,
		"remote_group_id": remote, "remote_address_group_id": nil, "tenant_id": x.ProjectID, "project_id": x.ProjectID,
		"description": x.Description, "revision_number": 0, "normalized_cidr": prefix,
		"created_at": x.CreatedAt.UTC().Format(ts), "updated_at": x.CreatedAt.UTC().Format(ts),
	}
}

func groupView(g *store.SecurityGroup) map[string]any {
	rules := []map[string]any{}
	for i := range g.Rules {
		rules = append(rules, ruleView(&g.Rules[i]))
	}
	return map[string]any{
		"id": g.ID, "name": g.Name, "description": g.Description, "tenant_id": g.ProjectID, "project_id": g.ProjectID,
		"security_group_rules": rules, "tags": []string{}, "stateful": true, "shared": false, "revision_number": 0,
		"created_at": g.CreatedAt.UTC().Format(ts), "updated_at": g.UpdatedAt.UTC().Format(ts),
	}
}

func (a *API) listGroups(w http.ResponseWriter, r *http.Request) error {
	gs, err := a.store.ListSecurityGroups(r.Context(), scope(r))
	if err != nil {
		return err
	}
	var out []map[string]any
	for i := range gs {
		out = append(out, groupView(&gs[i]))
	}
	return a.writeList(w, r, "security_groups", out)
}

func (a *API) showGroup(w http.ResponseWriter, r *http.Request) error {
	g, err := a.store.FindSecurityGroup(r.Context(), scope(r), mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	return a.writeOne(w, http.StatusOK, "security_group", groupView(g))
}

func (a *API) createGroup(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		Name        string  `json:"name"`
		Description string  `json:"description"`
		TenantID    *string `json:"tenant_id"`
		ProjectID   *string `json:"project_id"`
		Stateful    *bool   `json:"stateful"`
	}
	if err := decode(w, r, "security_group", &b); err != nil {
		return err
	}
	if err := checkName("name", &b.Name); err != nil {
		return err
	}
	if b.Stateful != nil && !*b.Stateful {
		return apierr.Invalidf("Stateless security groups are not supported by Berth.")
	}
	owner, err := ownerOf(r, b.TenantID, b.ProjectID)
	if err != nil {
		return err
	}
	if err := a.store.EnsureDefaultGroup(r.Context(), owner); err != nil {
		return err
	}
	g, err := a.store.CreateSecurityGroup(r.Context(), store.SecurityGroup{ID: uuid.NewString(), ProjectID: owner,
		Name: b.Name, Description: b.Description})
	if err != nil {
		return err
	}
	return a.writeOne(w, http.StatusCreated, "security_group", groupView(g))
}

func (a *API) updateGroup(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		Name        *string `json:"name"`
		Description *string `json:"description"`
	}
	if err := decode(w, r, "security_group", &b); err != nil {
		return err
	}
	if err := checkName("name", b.Name); err != nil {
		return err
	}
	g, err := a.store.UpdateSecurityGroup(r.Context(), scope(r), mux.Vars(r)["id"], b.Name, b.Description)
	if err != nil {
		return err
	}
	return a.writeOne(w, http.StatusOK, "security_group", groupView(g))
}

func (a *API) deleteGroup(w http.ResponseWriter, r *http.Request) error {
	if err := a.store.DeleteSecurityGroup(r.Context(), scope(r), mux.Vars(r)["id"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) listRules(w http.ResponseWriter, r *http.Request) error {
	if err := a.store.EnsureDefaultGroup(r.Context(), identity(r).ProjectID); err != nil {
		return err
	}
	rs, err := a.store.ListRules(r.Context(), scope(r))
	if err != nil {
		return err
	}
	var out []map[string]any
	for i := range rs {
		out = append(out, ruleView(&rs[i]))
	}
	return a.writeList(w, r, "security_group_rules", out)
}

func (a *API) showRule(w http.ResponseWriter, r *http.Request) error {
	x, err := a.store.FindRule(r.Context(), scope(r), mux.Vars(r)["id"])
	if err != nil {
		return err
	}
	return a.writeOne(w, http.StatusOK, "security_group_rule", ruleView(x))
}

// protocols Neutron accepts by name, and their numbers.
var protocols = map[string]string{"tcp": "tcp", "udp": "udp", "icmp": "icmp", "6": "tcp", "17": "udp", "1": "icmp"}

func (a *API) createRule(w http.ResponseWriter, r *http.Request) error {
	var b struct {
		GroupID        string  `json:"security_group_id"`
		Direction      string  `json:"direction"`
		Ethertype      string  `json:"ethertype"`
		Protocol       *string `json:"protocol"`
		PortRangeMin   *int64  `json:"port_range_min"`
		PortRangeMax   *int64  `json:"port_range_max"`
		RemoteIPPrefix *string `json:"remote_ip_prefix"`
		RemoteGroupID  *string `json:"remote_group_id"`
		Description    string  `json:"description"`
		TenantID       *string `json:"tenant_id"`
		ProjectID      *string `json:"project_id"`
	}
	if err := decode(w, r, "security_group_rule", &b); err != nil {
		return err
	}
	x := store.Rule{ID: uuid.NewString(), GroupID: b.GroupID, Direction: b.Direction, Ethertype: b.Ethertype,
		Description: b.Description, CreatedAt: time.Now()}
	if x.Ethertype == "" {
		x.Ethertype = "IPv4"
	}
	switch {
	case x.GroupID == "":
		return apierr.Invalidf("Failed to parse request. Required attribute 'security_group_id' not specified")
	case x.Direction != "ingress" && x.Direction != "egress":
		return apierr.Invalidf("Invalid input for direction. Reason: '%s' is not in ['ingress', 'egress'].", b.Direction)
	case x.Ethertype != "IPv4":
		return apierr.Invalidf("Invalid input for ethertype. Reason: only IPv4 is supported by Berth.")
	case b.RemoteIPPrefix != nil && b.RemoteGroupID != nil:
		return apierr.Invalidf("Only remote_ip_prefix or remote_group_id may be provided.")
	}
	if b.Protocol != nil && *b.Protocol != "" && *b.Protocol != "any" {
		p, ok := protocols[strings.ToLower(*b.Protocol)]
		if !ok {
			return apierr.Invalidf("Security group rule protocol %s not supported. Only protocol values [tcp, udp, icmp] and integer representations [6, 17, 1] are supported.", *b.Protocol)
		}
		x.Protocol = sql.NullString{String: p, Valid: true}
	}
	if b.PortRangeMin != nil || b.PortRangeMax != nil {
		if x.Protocol.String != "tcp" && x.Protocol.String != "udp" && x.Protocol.String != "icmp" {
			return apierr.Invalidf("Must also specify protocol if port range is given.")
		}
		min, max := b.PortRangeMin, b.PortRangeMax
		if min == nil {
			min = max
		}
		if max == nil {
			max = min
		}
		limit := int64(65535)
		if x.Protocol.String == "icmp" {
			limit = 255
		}
		if *min < 0 || *max > limit || (x.Protocol.String != "icmp" && (*min < 1 || *min > *max)) {
			return apierr.Invalidf("Invalid value for port range %d-%d.", *min, *max)
		}
		x.PortRangeMin = sql.NullInt64{Int64: *min, Valid: true}
		x.PortRangeMax = sql.NullInt64{Int64: *max, Valid: true}
	}
	if b.RemoteIPPrefix != nil {
		_, n, err := net.ParseCIDR(*b.RemoteIPPrefix)
		if err != nil {
			if ip := net.ParseIP(*b.RemoteIPPrefix); ip != nil && ip.To4() != nil {
				_, n, _ = net.ParseCIDR(*b.RemoteIPPrefix + "/32")
			} else {
				return apierr.Invalidf("Invalid input for remote_ip_prefix. Reason: '%s' is not a valid IP subnet.", *b.RemoteIPPrefix)
			}
		}
		x.RemoteIPPrefix = sql.NullString{String: n.String(), Valid: true}
	}
	if b.RemoteGroupID != nil {
		x.RemoteGroupID = sql.NullString{String: *b.RemoteGroupID, Valid: true}
	}
	out, err := a.store.CreateRule(r.Context(), scope(r), x)
	if err != nil {
		return err
	}
	return a.writeOne(w, http.StatusCreated, "security_group_rule", ruleView(out))
}

func (a *API) deleteRule(w http.ResponseWriter, r *http.Request) error {
	if err := a.store.DeleteRule(r.Context(), scope(r), mux.Vars(r)["id"]); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
