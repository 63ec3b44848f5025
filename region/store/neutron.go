package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"berth/internal/apierr"
	"berth/internal/pgdb"
)

// --- networks ---

// NetworkChanges are the updatable fields of a network.
type NetworkChanges struct {
	Name         *string
	Description  *string
	AdminStateUp *bool
	Shared       *bool
	MTU          *int
}

// CreateNetwork adds a network.
func (s *Store) CreateNetwork(ctx context.Context, n Network) (*Network, error) {
	var out *Network
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO networks (id, name, project_id, shared, admin_state_up, mtu, description)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, n.ID, n.Name, n.ProjectID, n.Shared, n.AdminStateUp, n.MTU, n.Description); err != nil {
			return err
		}
		var err error
		out, err = getNetwork(ctx, tx, Scope{AllProjects: true}, n.ID)
		return err
	})
	return out, err
}

// FindNetwork returns a network visible in scope (own or shared).
func (s *Store) FindNetwork(ctx context.Context, sc Scope, id string) (*Network, error) {
	return getNetwork(ctx, s.db, sc, id)
}

// ListNetworks lists the networks visible in scope.
func (s *Store) ListNetworks(ctx context.Context, sc Scope) ([]Network, error) {
	var ids []string
	if err := s.db.SelectContext(ctx, &ids, `SELECT id::text FROM networks n WHERE ($1 OR n.project_id = $2 OR n.shared)
		ORDER BY created_at, id`, sc.AllProjects, sc.ProjectID); err != nil {
		return nil, err
	}
	out := make([]Network, 0, len(ids))
	for _, id := range ids {
		n, err := getNetwork(ctx, s.db, sc, id)
		if err != nil {
			return nil, err
		}
		out = append(out, *n)
	}
	return out, nil
}

// UpdateNetwork changes a network the caller owns (or any, for admin).
func (s *Store) UpdateNetwork(ctx context.Context, sc Scope, id string, ch NetworkChanges) (*Network, error) {
	var out *Network
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		n, err := getNetwork(ctx, tx, sc, id)
		if err != nil {
			return err
		}
		if !sc.AllProjects && n.ProjectID != sc.ProjectID {
			return apierr.Forbiddenf("Policy doesn't allow update_network to be performed.")
		}
		if _, err := tx.ExecContext(ctx, `UPDATE networks SET name = coalesce($2, name), description = coalesce($3, description),
			admin_state_up = coalesce($4, admin_state_up), shared = coalesce($5, shared), mtu = coalesce($6, mtu),
			updated_at = now() WHERE id = $1`, id, ch.Name, ch.Description, ch.AdminStateUp, ch.Shared, ch.MTU); err != nil {
			return err
		}
		out, err = getNetwork(ctx, tx, sc, id)
		return err
	})
	return out, err
}

// DeleteNetwork deletes a network with no ports in use (Conflict otherwise).
func (s *Store) DeleteNetwork(ctx context.Context, sc Scope, id string) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		n, err := getNetwork(ctx, tx, sc, id)
		if err != nil {
			return err
		}
		if n.IsDefault {
			return apierr.Conflictf("Unable to complete operation on network %s. The default network cannot be deleted.", id)
		}
		if !sc.AllProjects && n.ProjectID != sc.ProjectID {
			return apierr.Forbiddenf("Policy doesn't allow delete_network to be performed.")
		}
		var used int
		if err := tx.GetContext(ctx, &used, `SELECT count(*) FROM ports WHERE network_id = $1`, id); err != nil {
			return err
		}
		if used > 0 {
			return apierr.Conflictf("Unable to complete operation on network %s. There are one or more ports still in use on the network.", id)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM subnets WHERE network_id = $1`, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM networks WHERE id = $1`, id)
		return err
	})
}

// --- subnets ---

// Pool is an allocation pool.
type Pool struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// Subnet is a Neutron subnet.
type Subnet struct {
	ID              string          `db:"id"`
	NetworkID       string          `db:"network_id"`
	ProjectID       string          `db:"project_id"`
	Name            string          `db:"name"`
	Description     string          `db:"description"`
	CIDR            string          `db:"cidr"`
	GatewayIP       sql.NullString  `db:"gateway_ip"`
	Pools           json.RawMessage `db:"allocation_pools"`
	DNS             json.RawMessage `db:"dns_nameservers"`
	EnableDHCP      bool            `db:"enable_dhcp"`
	IPVersion       int             `db:"ip_version"`
	CreatedAt       time.Time       `db:"created_at"`
	UpdatedAt       time.Time       `db:"updated_at"`
	NoGateway       bool            `db:"-"`
	AllocationPools []Pool          `db:"-"`
	DNSNameservers  []string        `db:"-"`
	Revision        int64           `db:"revision_number"`
}

const subnetCols = `id, network_id, project_id, name, description, cidr::text AS cidr, host(gateway_ip) AS gateway_ip,
	allocation_pools, dns_nameservers, enable_dhcp, ip_version, created_at, updated_at, revision_number`

// ipAdd adds n to an IPv4 address.
func ipAdd(ip net.IP, n int) net.IP {
	v := ip.To4()
	x := uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
	x += uint32(n)
	return net.IPv4(byte(x>>24), byte(x>>16), byte(x>>8), byte(x))
}

func ipToU32(ip net.IP) uint32 {
	v := ip.To4()
	return uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
}

// createSubnet validates and inserts a subnet: the gateway defaults to the
// first address and the pool to the rest (network and broadcast excluded),
// and subnets of one network may not overlap.
func createSubnet(ctx context.Context, tx *sqlx.Tx, sn Subnet) (*Subnet, error) {
	ip, ipnet, err := net.ParseCIDR(sn.CIDR)
	if err != nil || ip.To4() == nil {
		return nil, apierr.Invalidf("Invalid input for cidr. Reason: '%s' is not a valid IPv4 subnet.", sn.CIDR)
	}
	ones, bits := ipnet.Mask.Size()
	if bits-ones < 2 {
		return nil, apierr.Invalidf("Invalid input for cidr. Reason: the subnet %s is too small.", sn.CIDR)
	}
	size := 1 << (bits - ones)
	base := ipnet.IP.To4()
	if !sn.GatewayIP.Valid && !sn.NoGateway {
		sn.GatewayIP = sql.NullString{String: ipAdd(base, 1).String(), Valid: true}
	}
	if sn.GatewayIP.Valid {
		gw := net.ParseIP(sn.GatewayIP.String)
		if gw == nil || !ipnet.Contains(gw) {
			return nil, apierr.Invalidf("Gateway IP %s is not in subnet %s.", sn.GatewayIP.String, sn.CIDR)
		}
	}
	if len(sn.AllocationPools) == 0 {
		start := ipAdd(base, 1)
		if sn.GatewayIP.Valid && start.Equal(net.ParseIP(sn.GatewayIP.String)) {
			start = ipAdd(base, 2)
		}
		sn.AllocationPools = []Pool{{Start: start.String(), End: ipAdd(base, size-2).String()}}
	}
	for _, p := range sn.AllocationPools {
		a, b := net.ParseIP(p.Start), net.ParseIP(p.End)
		if a == nil || b == nil || !ipnet.Contains(a) || !ipnet.Contains(b) || ipToU32(a) > ipToU32(b) {
			return nil, apierr.Invalidf("The allocation pool %s-%s spans beyond the subnet cidr %s.", p.Start, p.End, sn.CIDR)
		}
		if a.Equal(base) || b.Equal(ipAdd(base, size-1)) {
			return nil, apierr.Invalidf("The allocation pool %s-%s includes the network or broadcast address.", p.Start, p.End)
		}
	}
	pools, _ := json.Marshal(sn.AllocationPools)
	if sn.DNSNameservers == nil {
		sn.DNSNameservers = []string{}
	}
	for _, d := range sn.DNSNameservers {
		if net.ParseIP(d) == nil {
			return nil, apierr.Invalidf("Invalid input for dns_nameservers. Reason: '%s' is not a valid nameserver.", d)
		}
	}
	dns, _ := json.Marshal(sn.DNSNameservers)
	var overlap int
	if err := tx.GetContext(ctx, &overlap, `SELECT count(*) FROM subnets WHERE network_id = $1 AND cidr && $2::cidr`,
		sn.NetworkID, ipnet.String()); err != nil {
		return nil, err
	}
	if overlap > 0 {
		return nil, apierr.Invalidf("Invalid input for operation: Requested subnet with cidr: %s for network: %s overlaps with another subnet.", ipnet.String(), sn.NetworkID)
	}
	var out Subnet
	err = tx.GetContext(ctx, &out, `INSERT INTO subnets (id, network_id, project_id, name, description, cidr, gateway_ip,
			allocation_pools, dns_nameservers, enable_dhcp, ip_version)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 4) RETURNING `+subnetCols,
		sn.ID, sn.NetworkID, sn.ProjectID, sn.Name, sn.Description, ipnet.String(), sn.GatewayIP, pools, dns, sn.EnableDHCP)
	if err != nil {
		return nil, err
	}
	return decodeSubnet(&out), nil
}

func decodeSubnet(s *Subnet) *Subnet {
	_ = json.Unmarshal(s.Pools, &s.AllocationPools)
	_ = json.Unmarshal(s.DNS, &s.DNSNameservers)
	if s.DNSNameservers == nil {
		s.DNSNameservers = []string{}
	}
	return s
}

// CreateSubnet adds a subnet to a network the caller owns (or any, admin).
func (s *Store) CreateSubnet(ctx context.Context, sc Scope, sn Subnet) (*Subnet, error) {
	var out *Subnet
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		n, err := getNetwork(ctx, tx, sc, sn.NetworkID)
		if err != nil {
			return err
		}
		if !sc.AllProjects && n.ProjectID != sc.ProjectID {
			return apierr.NotFoundf("Network %s could not be found.", sn.NetworkID)
		}
		if _, err := tx.ExecContext(ctx, `SELECT 1 FROM networks WHERE id = $1 FOR UPDATE`, sn.NetworkID); err != nil {
			return err
		}
		out, err = createSubnet(ctx, tx, sn)
		return err
	})
	return out, err
}

// subnetVisible: a subnet is visible with its network.
const subnetVisible = ` JOIN networks n ON n.id = sub.network_id WHERE ($1 OR n.project_id = $2 OR n.shared)`

// ListSubnets lists subnets visible in scope, optionally of one network.
func (s *Store) ListSubnets(ctx context.Context, sc Scope, networkID string) ([]Subnet, error) {
	var out []Subnet
	q := `SELECT sub.id, sub.network_id, sub.project_id, sub.name, sub.description, sub.cidr::text AS cidr,
		host(sub.gateway_ip) AS gateway_ip, sub.allocation_pools, sub.dns_nameservers, sub.enable_dhcp,
		sub.ip_version, sub.created_at, sub.updated_at, sub.revision_number FROM subnets sub` + subnetVisible +
		` AND ($3 = '' OR sub.network_id::text = $3) ORDER BY sub.created_at, sub.id`
	if err := s.db.SelectContext(ctx, &out, q, sc.AllProjects, sc.ProjectID, networkID); err != nil {
		return nil, err
	}
	for i := range out {
		decodeSubnet(&out[i])
	}
	return out, nil
}

// FindSubnet returns a subnet visible in scope.
func (s *Store) FindSubnet(ctx context.Context, sc Scope, id string) (*Subnet, error) {
	all, err := s.ListSubnets(ctx, sc, "")
	if err != nil {
		return nil, err
	}
	for i := range all {
		if all[i].ID == id {
			return &all[i], nil
		}
	}
	return nil, apierr.NotFoundf("Subnet %s could not be found.", id)
}

// SubnetChanges are the updatable fields of a subnet.
type SubnetChanges struct {
	Name, Description *string
	DNS               []string
	// Gateway, when set, replaces the gateway (Valid=false removes it).
	Gateway    *sql.NullString
	EnableDHCP *bool
}

// UpdateSubnet changes a subnet's name, description, DNS servers, gateway
// or DHCP flag.
func (s *Store) UpdateSubnet(ctx context.Context, sc Scope, id string, ch SubnetChanges) (*Subnet, error) {
	name, desc, dns := ch.Name, ch.Description, ch.DNS
	sn, err := s.FindSubnet(ctx, sc, id)
	if err != nil {
		return nil, err
	}
	if !sc.AllProjects && sn.ProjectID != sc.ProjectID {
		return nil, apierr.Forbiddenf("Policy doesn't allow update_subnet to be performed.")
	}
	var dnsJSON []byte
	if dns != nil {
		for _, d := range dns {
			if net.ParseIP(d) == nil {
				return nil, apierr.Invalidf("Invalid input for dns_nameservers. Reason: '%s' is not a valid nameserver.", d)
			}
		}
		dnsJSON, _ = json.Marshal(dns)
	}
	if ch.Gateway != nil && ch.Gateway.Valid {
		_, n, _ := net.ParseCIDR(sn.CIDR)
		if n == nil || !n.Contains(net.ParseIP(ch.Gateway.String)) {
			return nil, apierr.Invalidf("Gateway IP %s is not in subnet %s.", ch.Gateway.String, sn.CIDR)
		}
		var used int
		if err := s.db.GetContext(ctx, &used, `SELECT count(*) FROM ports WHERE subnet_id = $1 AND ip_address = $2::inet`,
			id, ch.Gateway.String); err != nil {
			return nil, err
		}
		if used > 0 {
			return nil, apierr.Conflictf("Gateway ip %s conflicts with allocation pool or a port.", ch.Gateway.String)
		}
	}
	var gw any
	if ch.Gateway != nil {
		gw = *ch.Gateway
	}
	// In a transaction of its own so an If-Match revision (s.tx) holds it.
	if err := s.tx(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE subnets SET name = coalesce($2, name), description = coalesce($3, description),
			dns_nameservers = coalesce($4, dns_nameservers), enable_dhcp = coalesce($5, enable_dhcp),
			gateway_ip = CASE WHEN $6 THEN $7::inet ELSE gateway_ip END, updated_at = now() WHERE id = $1`,
			id, name, desc, dnsJSON, ch.EnableDHCP, ch.Gateway != nil, gw)
		return err
	}); err != nil {
		return nil, err
	}
	return s.FindSubnet(ctx, sc, id)
}

// DeleteSubnet deletes a subnet with no ports (Conflict otherwise).
func (s *Store) DeleteSubnet(ctx context.Context, sc Scope, id string) error {
	sn, err := s.FindSubnet(ctx, sc, id)
	if err != nil {
		return err
	}
	if !sc.AllProjects && sn.ProjectID != sc.ProjectID {
		return apierr.Forbiddenf("Policy doesn't allow delete_subnet to be performed.")
	}
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		var used int
		if err := tx.GetContext(ctx, &used, `SELECT count(*) FROM ports WHERE subnet_id = $1`, id); err != nil {
			return err
		}
		if used > 0 {
			return apierr.Conflictf("Unable to complete operation on subnet %s: One or more ports have an IP allocation from this subnet.", id)
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM subnets WHERE id = $1`, id)
		return err
	})
}

// --- ports ---

// NewPort is what CreatePort needs.
type NewPort struct {
	Port
	FixedSubnet string
	FixedIP     string
	// Groups nil means "the project's default group".
	Groups []string
	// Profile and VNICType are the binding attributes, when given.
	Profile  json.RawMessage
	VNICType string
}

// CreatePort makes a port on a network visible to the caller.
func (s *Store) CreatePort(ctx context.Context, sc Scope, np NewPort) (*Port, error) {
	var out *Port
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		if _, err := getNetwork(ctx, tx, sc, np.NetworkID); err != nil {
			return err
		}
		np.Port.SecurityGroups = np.Groups
		var err error
		if out, err = createPort(ctx, tx, np.Port, np.FixedSubnet, np.FixedIP); err != nil {
			return err
		}
		if np.Profile == nil && np.VNICType == "" {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE ports SET binding_profile = coalesce($2, binding_profile),
			binding_vnic_type = coalesce(NULLIF($3, ''), binding_vnic_type) WHERE id = $1`,
			out.ID, []byte(np.Profile), np.VNICType); err != nil {
			return err
		}
		out, err = getPort(ctx, tx, sc, out.ID)
		return err
	})
	return out, err
}

// PortFilter narrows ListPorts.
type PortFilter struct {
	Scope     Scope
	NetworkID string
	DeviceID  string
}

// ListPorts lists ports visible in scope.
func (s *Store) ListPorts(ctx context.Context, f PortFilter) ([]Port, error) {
	var ids []string
	if err := s.db.SelectContext(ctx, &ids, `SELECT p.id::text FROM ports p WHERE ($1 OR p.project_id = $2)
		AND ($3 = '' OR p.network_id::text = $3) AND ($4 = '' OR p.device_id = $4) ORDER BY p.created_at, p.id`,
		f.Scope.AllProjects, f.Scope.ProjectID, f.NetworkID, f.DeviceID); err != nil {
		return nil, err
	}
	out := make([]Port, 0, len(ids))
	for _, id := range ids {
		p, err := getPort(ctx, s.db, f.Scope, id)
		if err != nil {
			return nil, err
		}
		out = append(out, *p)
	}
	return out, nil
}

// FindPort returns a port visible in scope.
func (s *Store) FindPort(ctx context.Context, sc Scope, id string) (*Port, error) {
	return getPort(ctx, s.db, sc, id)
}

// PortChanges are the updatable fields of a port.
type PortChanges struct {
	Name                *string
	Description         *string
	AdminStateUp        *bool
	PortSecurityEnabled *bool
	Groups              []string
	SetGroups           bool
	// MACAddress and Fixed re-address a port no server holds (Fixed: a
	// subnet and/or an address; empty fields are chosen as on create).
	MACAddress *string
	Fixed      *FixedIP
	// Profile (admin) and VNICType are the binding attributes.
	Profile  json.RawMessage
	VNICType *string
}

// FixedIP is a port's requested subnet and address.
type FixedIP struct{ SubnetID, IPAddress string }

// UpdatePort changes a port; a change of its security groups wakes the
// host of the server it is attached to.
func (s *Store) UpdatePort(ctx context.Context, sc Scope, id string, ch PortChanges) (*Port, error) {
	var out *Port
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		p, err := getPort(ctx, tx, sc, id)
		if err != nil {
			return err
		}
		if (ch.MACAddress != nil && *ch.MACAddress != p.MACAddress) || ch.Fixed != nil {
			// The set's interface is plumbed with this address; moving a
			// live one is not done (Neutron refuses MAC changes of bound
			// ports the same way).
			if p.ServerID != "" {
				return apierr.Conflictf("Unable to complete operation on port %s, port is already bound to server %s: its addresses cannot change.", id, p.ServerID)
			}
		}
		mac, subnet, ip := p.MACAddress, p.SubnetID, p.IPAddress
		if ch.MACAddress != nil {
			mac = *ch.MACAddress
		}
		if f := ch.Fixed; f != nil && !(f.IPAddress == "" && (f.SubnetID == "" || f.SubnetID == p.SubnetID)) &&
			!(f.IPAddress == p.IPAddress && (f.SubnetID == "" || f.SubnetID == p.SubnetID)) {
			if subnet, ip, err = chooseAddress(ctx, tx, p.NetworkID, f.SubnetID, f.IPAddress); err != nil {
				return err
			}
		}
		profile := ch.Profile
		if profile == nil {
			profile = p.BindingProfile
		}
		if _, err := tx.ExecContext(ctx, `UPDATE ports SET name = coalesce($2, name), description = coalesce($3, description),
			admin_state_up = coalesce($4, admin_state_up), port_security_enabled = coalesce($5, port_security_enabled),
			mac_address = $6, subnet_id = NULLIF($7, '')::uuid, ip_address = $8, binding_profile = $9,
			binding_vnic_type = coalesce($10, binding_vnic_type), updated_at = now() WHERE id = $1`,
			id, ch.Name, ch.Description, ch.AdminStateUp, ch.PortSecurityEnabled, mac, subnet, ip, []byte(profile),
			ch.VNICType); err != nil {
			var pe *pq.Error
			if errors.As(err, &pe) && pe.Code == "23505" && strings.Contains(pe.Constraint, "ip_address") {
				return apierr.Conflictf("Unable to complete operation for network %s. The IP address %s is in use.", p.NetworkID, ip)
			}
			if pgdb.IsUniqueViolation(err) {
				return apierr.Conflictf("Unable to complete operation for network %s. The mac address %s is in use.", p.NetworkID, mac)
			}
			return err
		}
		if ch.SetGroups {
			if _, err := tx.ExecContext(ctx, `DELETE FROM port_security_groups WHERE port_id = $1`, id); err != nil {
				return err
			}
			if p.ServerID != "" {
				// The groups the port leaves lose a member; the ones it
				// joins are found through the port below.
				if err := wakeGroupHosts(ctx, tx, []string{p.ServerID}, p.SecurityGroups); err != nil {
					return err
				}
			}
			p.SecurityGroups = ch.Groups
			if p.SecurityGroups == nil {
				p.SecurityGroups = []string{}
			}
			if err := setPortGroups(ctx, tx, p); err != nil {
				return err
			}
		}
		if ch.SetGroups && p.ServerID != "" {
			if err := wakeGroupHosts(ctx, tx, []string{p.ServerID}, nil); err != nil {
				return err
			}
		}
		if err := touchServerOfPort(ctx, tx, p.ServerID); err != nil {
			return err
		}
		out, err = getPort(ctx, tx, sc, id)
		return err
	})
	return out, err
}

// DeletePort deletes a port not attached to a server (Conflict otherwise,
// as Neutron refuses to delete a port a compute instance owns only via Nova).
func (s *Store) DeletePort(ctx context.Context, sc Scope, id string) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		p, err := getPort(ctx, tx, sc, id)
		if err != nil {
			return err
		}
		if p.ServerID != "" {
			return apierr.Conflictf("Port %s is attached to server %s; delete or detach the server first.", id, p.ServerID)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM ports WHERE id = $1`, id)
		return err
	})
}

// attachPort hands a user-made port to a new server, in the create tx.
func attachPort(ctx context.Context, tx *sqlx.Tx, projectID, portID, serverID string, slot int) error {
	res, err := tx.ExecContext(ctx, `UPDATE ports SET server_id = $3::uuid, device_id = $3::text, device_owner = 'compute:nova',
		slot = $4, updated_at = now() WHERE id = $1 AND project_id = $2 AND server_id IS NULL`, portID, projectID, serverID, slot)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return apierr.Conflictf("Port %s is still in use or does not exist.", portID)
	}
	return nil
}

// touchServerOfPort bumps the generation of a port's server so its host
// re-reads the port (security groups changed).
func touchServerOfPort(ctx context.Context, tx *sqlx.Tx, serverID string) error {
	if serverID == "" {
		return nil
	}
	var host sql.NullString
	if err := tx.GetContext(ctx, &host, `UPDATE servers SET generation = generation + 1 WHERE id = $1 RETURNING host`, serverID); err != nil {
		return nil
	}
	return notifyHost(ctx, tx, host.String)
}

// setPortGroups records a port's security groups: the ones given (each
// must be the port's project's), or the project's default group when nil.
func setPortGroups(ctx context.Context, tx *sqlx.Tx, p *Port) error {
	groups := p.SecurityGroups
	if groups == nil {
		if !p.PortSecurityEnabled {
			return nil
		}
		def, err := ensureDefaultGroup(ctx, tx, p.ProjectID)
		if err != nil {
			return err
		}
		groups = []string{def}
	}
	for _, g := range groups {
		var n int
		if !validUUID(g) {
			return apierr.NotFoundf("Security group %s does not exist", g)
		}
		if err := tx.GetContext(ctx, &n, `SELECT count(*) FROM security_groups WHERE id = $1 AND project_id = $2`, g, p.ProjectID); err != nil {
			return err
		}
		if n == 0 {
			return apierr.NotFoundf("Security group %s does not exist", g)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO port_security_groups (port_id, group_id) VALUES ($1, $2)
			ON CONFLICT DO NOTHING`, p.ID, g); err != nil {
			return err
		}
	}
	return nil
}

// --- security groups ---

// SecurityGroup is a Neutron security group with its rules.
type SecurityGroup struct {
	ID          string    `db:"id"`
	ProjectID   string    `db:"project_id"`
	Name        string    `db:"name"`
	Description string    `db:"description"`
	CreatedAt   time.Time `db:"created_at"`
	UpdatedAt   time.Time `db:"updated_at"`
	Rules       []Rule    `db:"-"`
}

// Rule is a security group rule.
type Rule struct {
	ID             string         `db:"id"`
	GroupID        string         `db:"group_id"`
	ProjectID      string         `db:"project_id"`
	Direction      string         `db:"direction"`
	Ethertype      string         `db:"ethertype"`
	Protocol       sql.NullString `db:"protocol"`
	PortRangeMin   sql.NullInt64  `db:"port_range_min"`
	PortRangeMax   sql.NullInt64  `db:"port_range_max"`
	RemoteIPPrefix sql.NullString `db:"remote_ip_prefix"`
	RemoteGroupID  sql.NullString `db:"remote_group_id"`
	Description    string         `db:"description"`
	CreatedAt      time.Time      `db:"created_at"`
}

const ruleCols = `id, group_id, project_id, direction, ethertype, protocol, port_range_min, port_range_max,
	remote_ip_prefix::text AS remote_ip_prefix, remote_group_id::text AS remote_group_id, description, created_at`

// ensureDefaultGroup returns the project's "default" group, making it
// with Neutron's rules (all egress; ingress only from members of the
// group) on first use.
func ensureDefaultGroup(ctx context.Context, tx *sqlx.Tx, projectID string) (string, error) {
	var id string
	err := tx.GetContext(ctx, &id, `SELECT id FROM security_groups WHERE project_id = $1 AND name = 'default'`, projectID)
	if err == nil {
		return id, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return "", err
	}
	id = uuid.NewString()
	res, err := tx.ExecContext(ctx, `INSERT INTO security_groups (id, project_id, name, description)
		VALUES ($1, $2, 'default', 'Default security group') ON CONFLICT DO NOTHING`, id, projectID)
	if err != nil {
		return "", err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		// Another transaction made it first.
		err := tx.GetContext(ctx, &id, `SELECT id FROM security_groups WHERE project_id = $1 AND name = 'default'`, projectID)
		return id, err
	}
	for _, r := range []struct{ dir, remote string }{{"egress", ""}, {"ingress", id}} {
		if _, err := tx.ExecContext(ctx, `INSERT INTO security_group_rules (id, group_id, project_id, direction, ethertype,
			remote_group_id) VALUES ($1, $2, $3, $4, 'IPv4', NULLIF($5, '')::uuid)`, uuid.NewString(), id, projectID, r.dir, r.remote); err != nil {
			return "", err
		}
	}
	return id, nil
}

// EnsureDefaultGroup makes sure a project has its default group.
func (s *Store) EnsureDefaultGroup(ctx context.Context, projectID string) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		_, err := ensureDefaultGroup(ctx, tx, projectID)
		return err
	})
}

func loadGroup(ctx context.Context, q sqlx.QueryerContext, sc Scope, id string) (*SecurityGroup, error) {
	if !validUUID(id) {
		return nil, apierr.NotFoundf("Security group %s does not exist", id)
	}
	var g SecurityGroup
	if err := sqlx.GetContext(ctx, q, &g, `SELECT id, project_id, name, description, created_at, updated_at
		FROM security_groups WHERE id = $1 AND ($2 OR project_id = $3)`, id, sc.AllProjects, sc.ProjectID); err != nil {
		return nil, pgdb.NotFound(err, fmt.Sprintf("Security group %s does not exist", id))
	}
	if err := sqlx.SelectContext(ctx, q, &g.Rules, `SELECT `+ruleCols+` FROM security_group_rules WHERE group_id = $1
		ORDER BY created_at, id`, id); err != nil {
		return nil, err
	}
	return &g, nil
}

// FindSecurityGroup returns a group visible in scope.
func (s *Store) FindSecurityGroup(ctx context.Context, sc Scope, id string) (*SecurityGroup, error) {
	return loadGroup(ctx, s.db, sc, id)
}

// ListSecurityGroups lists groups visible in scope (making the caller's
// default group first, as Neutron does on first access).
func (s *Store) ListSecurityGroups(ctx context.Context, sc Scope) ([]SecurityGroup, error) {
	if err := s.EnsureDefaultGroup(ctx, sc.ProjectID); err != nil {
		return nil, err
	}
	var ids []string
	if err := s.db.SelectContext(ctx, &ids, `SELECT id::text FROM security_groups WHERE $1 OR project_id = $2
		ORDER BY created_at, id`, sc.AllProjects, sc.ProjectID); err != nil {
		return nil, err
	}
	out := make([]SecurityGroup, 0, len(ids))
	for _, id := range ids {
		g, err := loadGroup(ctx, s.db, sc, id)
		if err != nil {
			return nil, err
		}
		out = append(out, *g)
	}
	return out, nil
}

// CreateSecurityGroup makes a group with Neutron's default egress rule.
func (s *Store) CreateSecurityGroup(ctx context.Context, g SecurityGroup) (*SecurityGroup, error) {
	if g.Name == "default" {
		return nil, apierr.Conflictf("Default security group already exists.")
	}
	var out *SecurityGroup
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO security_groups (id, project_id, name, description) VALUES ($1, $2, $3, $4)`,
			g.ID, g.ProjectID, g.Name, g.Description); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO security_group_rules (id, group_id, project_id, direction, ethertype)
			VALUES ($1, $2, $3, 'egress', 'IPv4')`, uuid.NewString(), g.ID, g.ProjectID); err != nil {
			return err
		}
		var err error
		out, err = loadGroup(ctx, tx, Scope{AllProjects: true}, g.ID)
		return err
	})
	return out, err
}

// DeleteSecurityGroup deletes a group no port uses; "default" stays.
func (s *Store) DeleteSecurityGroup(ctx context.Context, sc Scope, id string) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		g, err := loadGroup(ctx, tx, sc, id)
		if err != nil {
			return err
		}
		if g.Name == "default" && !sc.AllProjects {
			return apierr.Conflictf("Insufficient rights for removing default security group.")
		}
		var used int
		if err := tx.GetContext(ctx, &used, `SELECT count(*) FROM port_security_groups WHERE group_id = $1`, id); err != nil {
			return err
		}
		if used > 0 {
			return apierr.Conflictf("Security Group %s in use.", id)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM security_groups WHERE id = $1`, id)
		return err
	})
}

// CreateRule adds a rule to a group of the caller's; Conflict for a
// duplicate, and the servers using the group are re-read by their hosts.
func (s *Store) CreateRule(ctx context.Context, sc Scope, r Rule) (*Rule, error) {
	// Checked before SQL: PostgreSQL would echo a bad value in full.
	if _, err := netip.ParsePrefix(r.RemoteIPPrefix.String); r.RemoteIPPrefix.Valid && err != nil {
		return nil, apierr.Invalidf("%s is not a valid IP network.", r.RemoteIPPrefix.String)
	}
	var out Rule
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		g, err := loadGroup(ctx, tx, sc, r.GroupID)
		if err != nil {
			return err
		}
		if r.RemoteGroupID.Valid {
			if _, err := loadGroup(ctx, tx, sc, r.RemoteGroupID.String); err != nil {
				return err
			}
		}
		for _, x := range g.Rules {
			if x.Direction == r.Direction && x.Ethertype == r.Ethertype && x.Protocol == r.Protocol &&
				x.PortRangeMin == r.PortRangeMin && x.PortRangeMax == r.PortRangeMax &&
				x.RemoteIPPrefix == r.RemoteIPPrefix && x.RemoteGroupID == r.RemoteGroupID {
				return apierr.Conflictf("Security group rule already exists. Rule id is %s.", x.ID)
			}
		}
		if err := tx.GetContext(ctx, &out, `INSERT INTO security_group_rules (id, group_id, project_id, direction, ethertype,
				protocol, port_range_min, port_range_max, remote_ip_prefix, remote_group_id, description)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::cidr, $10::uuid, $11) RETURNING `+ruleCols,
			r.ID, r.GroupID, g.ProjectID, r.Direction, r.Ethertype, r.Protocol, r.PortRangeMin, r.PortRangeMax,
			r.RemoteIPPrefix, r.RemoteGroupID, r.Description); err != nil {
			return err
		}
		return touchGroupServers(ctx, tx, r.GroupID)
	})
	return &out, err
}

// ListRules lists the rules visible in scope.
func (s *Store) ListRules(ctx context.Context, sc Scope) ([]Rule, error) {
	var out []Rule
	err := s.db.SelectContext(ctx, &out, `SELECT `+ruleCols+` FROM security_group_rules WHERE $1 OR project_id = $2
		ORDER BY created_at, id`, sc.AllProjects, sc.ProjectID)
	return out, err
}

// FindRule returns a rule visible in scope.
func (s *Store) FindRule(ctx context.Context, sc Scope, id string) (*Rule, error) {
	if !validUUID(id) {
		return nil, apierr.NotFoundf("Security group rule %s does not exist", id)
	}
	var r Rule
	err := s.db.GetContext(ctx, &r, `SELECT `+ruleCols+` FROM security_group_rules WHERE id = $1 AND ($2 OR project_id = $3)`,
		id, sc.AllProjects, sc.ProjectID)
	if err != nil {
		return nil, pgdb.NotFound(err, fmt.Sprintf("Security group rule %s does not exist", id))
	}
	return &r, nil
}

// DeleteRule deletes a rule and wakes the hosts of the group's servers.
func (s *Store) DeleteRule(ctx context.Context, sc Scope, id string) error {
	r, err := s.FindRule(ctx, sc, id)
	if err != nil {
		return err
	}
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM security_group_rules WHERE id = $1`, id); err != nil {
			return err
		}
		return touchGroupServers(ctx, tx, r.GroupID)
	})
}

// wakeGroupHosts wakes the agents of the hosts whose ports have rules
// naming, as their remote group, one of groups or a group of the servers'
// ports: those groups' members (DesiredState.Groups) changed. Member lists
// are not part of any set, so no generation moves; only the hosts' desired
// index does. The rows are locked in name order, as claims lock them.
func wakeGroupHosts(ctx context.Context, tx *sqlx.Tx, serverIDs, groups []string) error {
	if len(serverIDs) == 0 && len(groups) == 0 {
		return nil
	}
	_, err := tx.ExecContext(ctx, `WITH g AS (
			SELECT pg.group_id FROM port_security_groups pg JOIN ports p ON p.id = pg.port_id
			WHERE p.server_id = ANY($1::uuid[])
			UNION SELECT unnest($2::uuid[])),
		h AS (SELECT name FROM hosts WHERE name IN (
			SELECT s.host FROM security_group_rules r
			JOIN port_security_groups pg ON pg.group_id = r.group_id
			JOIN ports p ON p.id = pg.port_id JOIN servers s ON s.id = p.server_id
			WHERE r.remote_group_id IN (SELECT group_id FROM g) AND s.host IS NOT NULL AND s.deleted_at IS NULL)
			ORDER BY name FOR UPDATE),
		u AS (UPDATE hosts SET desired_index = desired_index + 1 WHERE name IN (SELECT name FROM h) RETURNING name)
		SELECT pg_notify('berth_desired', name) FROM u`, pq.Array(serverIDs), pq.Array(groups))
	return err
}

func touchGroupServers(ctx context.Context, tx *sqlx.Tx, groupID string) error {
	var servers []string
	if err := tx.SelectContext(ctx, &servers, `SELECT DISTINCT p.server_id::text FROM port_security_groups g
		JOIN ports p ON p.id = g.port_id WHERE g.group_id = $1 AND p.server_id IS NOT NULL`, groupID); err != nil {
		return err
	}
	for _, id := range servers {
		if err := touchServerOfPort(ctx, tx, id); err != nil {
			return err
		}
	}
	return nil
}

// ServerSecurityGroups lists the groups on any port of a server.
func (s *Store) ServerSecurityGroups(ctx context.Context, serverID string) ([]SecurityGroup, error) {
	var ids []string
	if err := s.db.SelectContext(ctx, &ids, `SELECT DISTINCT g.group_id::text FROM port_security_groups g
		JOIN ports p ON p.id = g.port_id WHERE p.server_id = $1 ORDER BY 1`, serverID); err != nil {
		return nil, err
	}
	out := make([]SecurityGroup, 0, len(ids))
	for _, id := range ids {
		g, err := loadGroup(ctx, s.db, Scope{AllProjects: true}, id)
		if err != nil {
			return nil, err
		}
		out = append(out, *g)
	}
	return out, nil
}

// SetServerSecurityGroup adds the project's group called name to every
// port of a server (or removes it), as Nova's add/removeSecurityGroup do.
func (s *Store) SetServerSecurityGroup(ctx context.Context, serverID, projectID, name string, add bool) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		gid, err := groupNamed(ctx, tx, projectID, name)
		if err != nil {
			return err
		}
		ids := []string{gid}
		var ports []string
		if err := tx.SelectContext(ctx, &ports, `SELECT id::text FROM ports WHERE server_id = $1`, serverID); err != nil {
			return err
		}
		if len(ports) == 0 {
			return apierr.Invalidf("Server %s has no ports.", serverID)
		}
		for _, p := range ports {
			if add {
				if _, err := tx.ExecContext(ctx, `INSERT INTO port_security_groups (port_id, group_id) VALUES ($1, $2)
					ON CONFLICT DO NOTHING`, p, ids[0]); err != nil {
					return err
				}
			} else {
				res, err := tx.ExecContext(ctx, `DELETE FROM port_security_groups WHERE port_id = $1 AND group_id = $2`, p, ids[0])
				if err != nil {
					return err
				}
				if n, _ := res.RowsAffected(); n == 0 {
					return apierr.NotFoundf("Security group %s not associated with the instance %s", name, serverID)
				}
			}
		}
		if err := wakeGroupHosts(ctx, tx, nil, ids); err != nil {
			return err
		}
		return touchServerOfPort(ctx, tx, serverID)
	})
}

// UpdateSecurityGroup renames or re-describes a group; "default" keeps
// its name.
func (s *Store) UpdateSecurityGroup(ctx context.Context, sc Scope, id string, name, desc *string) (*SecurityGroup, error) {
	g, err := loadGroup(ctx, s.db, sc, id)
	if err != nil {
		return nil, err
	}
	if name != nil && g.Name == "default" && *name != "default" {
		return nil, apierr.Conflictf("Insufficient rights for renaming the default security group.")
	}
	if name != nil && *name == "default" && g.Name != "default" {
		return nil, apierr.Conflictf("Default security group already exists.")
	}
	if _, err := s.db.ExecContext(ctx, `UPDATE security_groups SET name = coalesce($2, name),
		description = coalesce($3, description), updated_at = now() WHERE id = $1`, id, name, desc); err != nil {
		return nil, err
	}
	return loadGroup(ctx, s.db, sc, id)
}

// groupNamesOf returns the names of the security groups on the ports of
// the given servers, keyed by server id, de-duplicated and sorted: one
// query for a whole page of servers.
func groupNamesOf(ctx context.Context, q sqlx.QueryerContext, serverIDs []string) (map[string][]string, error) {
	out := map[string][]string{}
	if len(serverIDs) == 0 {
		return out, nil
	}
	var rows []struct {
		ServerID string `db:"server_id"`
		Name     string `db:"name"`
	}
	if err := sqlx.SelectContext(ctx, q, &rows, `SELECT DISTINCT p.server_id::text AS server_id, g.name
		FROM ports p JOIN port_security_groups pg ON pg.port_id = p.id JOIN security_groups g ON g.id = pg.group_id
		WHERE p.server_id = ANY($1::uuid[]) ORDER BY 1, 2`, pq.Array(serverIDs)); err != nil {
		return nil, err
	}
	for _, r := range rows {
		out[r.ServerID] = append(out[r.ServerID], r.Name)
	}
	return out, nil
}

// ResolveSecurityGroups turns the names (or ids) of a server create's
// security_groups into the project's group ids, creating the default
// group if it is named. A missing name is NotFound; a name several
// groups share is a Conflict, as Nova reports them.
func (s *Store) ResolveSecurityGroups(ctx context.Context, projectID string, names []string) ([]string, error) {
	var out []string
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		out = out[:0]
		for _, name := range names {
			id, err := groupNamed(ctx, tx, projectID, name)
			if err != nil {
				return err
			}
			if !slices.Contains(out, id) {
				out = append(out, id)
			}
		}
		return nil
	})
	return out, err
}

// groupNamed finds the project's group by name or id (making the default
// group first if that is the one named): NotFound if none, Conflict if
// several share the name.
func groupNamed(ctx context.Context, tx *sqlx.Tx, projectID, name string) (string, error) {
	if name == "default" {
		if _, err := ensureDefaultGroup(ctx, tx, projectID); err != nil {
			return "", err
		}
	}
	var ids []string
	if err := tx.SelectContext(ctx, &ids, `SELECT id::text FROM security_groups WHERE project_id = $1
		AND (name = $2 OR id::text = $2)`, projectID, name); err != nil {
		return "", err
	}
	switch len(ids) {
	case 0:
		return "", apierr.NotFoundf("Security group %s not found for project %s.", name, projectID)
	case 1:
		return ids[0], nil
	}
	return "", apierr.Conflictf("Multiple security groups are named %s; use the group's id.", name)
}
