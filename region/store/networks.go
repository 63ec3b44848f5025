package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"berth/internal/apierr"
	"berth/internal/pgdb"
)

// Network is a Neutron network.
type Network struct {
	ID           string         `db:"id"`
	Name         string         `db:"name"`
	ProjectID    string         `db:"project_id"`
	CIDR         sql.NullString `db:"cidr"`
	GatewayIP    sql.NullString `db:"gateway_ip"`
	Shared       bool           `db:"shared"`
	IsDefault    bool           `db:"is_default"`
	AdminStateUp bool           `db:"admin_state_up"`
	MTU          int            `db:"mtu"`
	Description  string         `db:"description"`
	CreatedAt    time.Time      `db:"created_at"`
	UpdatedAt    time.Time      `db:"updated_at"`
	Subnets      []string       `db:"-"`
	Revision     int64          `db:"revision_number"`
}

const networkCols = `id, name, project_id, cidr::text AS cidr, host(gateway_ip) AS gateway_ip, shared, is_default,
	admin_state_up, mtu, description, created_at, updated_at, revision_number`

// Port is a Neutron port, joined with its network's name and subnet.
type Port struct {
	ID                  string    `db:"id"`
	NetworkID           string    `db:"network_id"`
	SubnetID            string    `db:"subnet_id"`
	ProjectID           string    `db:"project_id"`
	ServerID            string    `db:"server_id"`
	Name                string    `db:"name"`
	Description         string    `db:"description"`
	DeviceID            string    `db:"device_id"`
	DeviceOwner         string    `db:"device_owner"`
	AdminStateUp        bool      `db:"admin_state_up"`
	PortSecurityEnabled bool      `db:"port_security_enabled"`
	BindingHost         string    `db:"binding_host"`
	AutoDelete          bool      `db:"auto_delete"`
	Slot                int       `db:"slot"`
	MACAddress          string    `db:"mac_address"`
	IPAddress           string    `db:"ip_address"`
	NetworkName         string    `db:"network_name"`
	CIDR                string    `db:"cidr"`
	GatewayIP           string    `db:"gateway_ip"`
	CreatedAt           time.Time `db:"created_at"`
	UpdatedAt           time.Time `db:"updated_at"`
	SecurityGroups      []string  `db:"-"`
	Revision            int64     `db:"revision_number"`
	// BindingProfile (admin) and BindingVNICType are Neutron's port
	// binding attributes; only vnic_type "normal" exists in Berth.
	BindingProfile  json.RawMessage `db:"binding_profile"`
	BindingVNICType string          `db:"binding_vnic_type"`
}

const portCols = `p.id, p.network_id, coalesce(p.subnet_id::text, '') AS subnet_id, p.project_id,
	coalesce(p.server_id::text, '') AS server_id, p.name, p.description, p.device_id, p.device_owner,
	p.admin_state_up, p.port_security_enabled, p.binding_host, p.auto_delete, p.slot,
	p.mac_address::text AS mac_address, host(p.ip_address) AS ip_address, n.name AS network_name,
	coalesce(s.cidr::text, '') AS cidr, coalesce(host(s.gateway_ip), '') AS gateway_ip, p.created_at, p.updated_at,
	p.revision_number, p.binding_profile, p.binding_vnic_type`

const portFrom = ` FROM ports p JOIN networks n ON n.id = p.network_id LEFT JOIN subnets s ON s.id = p.subnet_id`

// EnsureDefaultNetwork makes the shared network (and its subnet) every
// server joins when it asks for none in particular. The first start fixes
// its CIDR; a later start with another CIDR is refused rather than
// renumbering live ports.
func (s *Store) EnsureDefaultNetwork(ctx context.Context, name, cidr string) (*Network, error) {
	ip, ipnet, err := net.ParseCIDR(cidr)
	if err != nil || ip.To4() == nil {
		return nil, fmt.Errorf("default network: %q is not an IPv4 CIDR", cidr)
	}
	var n *Network
	err = s.tx(ctx, func(tx *sqlx.Tx) error {
		var id string
		err := tx.GetContext(ctx, &id, `SELECT id FROM networks WHERE is_default`)
		if errors.Is(err, sql.ErrNoRows) {
			id = uuid.NewString()
			if _, err := tx.ExecContext(ctx, `INSERT INTO networks (id, name, cidr, shared, is_default)
				VALUES ($1, $2, $3, true, true)`, id, name, ipnet.String()); err != nil {
				return err
			}
			if _, err := createSubnet(ctx, tx, Subnet{ID: uuid.NewString(), NetworkID: id, Name: name + "-subnet",
				CIDR: ipnet.String(), EnableDHCP: true}); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		var subnetCIDR string
		if err := tx.GetContext(ctx, &subnetCIDR, `SELECT cidr::text FROM subnets WHERE network_id = $1
			ORDER BY created_at LIMIT 1`, id); err != nil {
			return fmt.Errorf("default network %s has no subnet: %w", id, err)
		}
		if subnetCIDR != ipnet.String() {
			return fmt.Errorf("default network already has CIDR %s, not %s", subnetCIDR, ipnet.String())
		}
		n, err = getNetwork(ctx, tx, Scope{AllProjects: true}, id)
		return err
	})
	return n, err
}

// DefaultNetwork returns the shared default network.
func (s *Store) DefaultNetwork(ctx context.Context) (*Network, error) {
	var id string
	if err := s.db.GetContext(ctx, &id, `SELECT id FROM networks WHERE is_default`); err != nil {
		return nil, pgdb.NotFound(err, "There is no default network.")
	}
	return getNetwork(ctx, s.db, Scope{AllProjects: true}, id)
}

// networkVisible: a project sees its own networks and shared ones.
const networkVisible = `($2 OR n.project_id = $3 OR n.shared)`

func getNetwork(ctx context.Context, q sqlx.QueryerContext, sc Scope, id string) (*Network, error) {
	if !validUUID(id) {
		return nil, apierr.NotFoundf("Network %s could not be found.", id)
	}
	var n Network
	err := sqlx.GetContext(ctx, q, &n, `SELECT `+networkCols+` FROM networks n WHERE id = $1 AND `+networkVisible,
		id, sc.AllProjects, sc.ProjectID)
	if err != nil {
		return nil, pgdb.NotFound(err, fmt.Sprintf("Network %s could not be found.", id))
	}
	if err := sqlx.SelectContext(ctx, q, &n.Subnets, `SELECT id::text FROM subnets WHERE network_id = $1
		ORDER BY created_at, id`, id); err != nil {
		return nil, err
	}
	return &n, nil
}

// createPort inserts a port, choosing its subnet and address unless
// subnetID/fixedIP name them, and a MAC unless p.MACAddress is set.
func createPort(ctx context.Context, tx *sqlx.Tx, p Port, subnetID, fixedIP string) (*Port, error) {
	sid, ip, err := chooseAddress(ctx, tx, p.NetworkID, subnetID, fixedIP)
	if err != nil {
		return nil, err
	}
	p.SubnetID, p.IPAddress = sid, ip
	return insertPort(ctx, tx, p)
}

// chooseAddress picks a port's subnet and address on network: fixedIP
// on subnetID (or on the first subnet holding it), else the lowest free
// address of subnetID's (or the first subnet with room's) pools.
func chooseAddress(ctx context.Context, tx *sqlx.Tx, network, subnetID, fixedIP string) (string, string, error) {
	var subnets []string
	if subnetID != "" && !validUUID(subnetID) {
		return "", "", apierr.NotFoundf("Subnet %s could not be found.", subnetID)
	}
	p := Port{NetworkID: network}
	if subnetID != "" {
		subnets = []string{subnetID}
	} else if err := tx.SelectContext(ctx, &subnets, `SELECT id::text FROM subnets WHERE network_id = $1
		ORDER BY created_at, id`, p.NetworkID); err != nil {
		return "", "", err
	}
	for _, sid := range subnets {
		var pools json.RawMessage
		if err := tx.GetContext(ctx, &pools, `SELECT allocation_pools FROM subnets WHERE id = $1 AND network_id = $2
			FOR UPDATE`, sid, p.NetworkID); err != nil {
			return "", "", pgdb.NotFound(err, fmt.Sprintf("Subnet %s could not be found.", sid))
		}
		var ip string
		var err error
		if fixedIP != "" {
			err = tx.GetContext(ctx, &ip, `SELECT host($2::inet) FROM subnets s WHERE s.id = $1
				AND $2::inet << s.cidr AND $2::inet <> coalesce(s.gateway_ip, '0.0.0.0'::inet)`, sid, fixedIP)
			if errors.Is(err, sql.ErrNoRows) {
				return "", "", apierr.Invalidf("IP address %s is not a valid IP for the specified subnet.", fixedIP)
			}
		} else {
			err = tx.GetContext(ctx, &ip, `
				SELECT host(a) FROM (
					SELECT set_masklen((pool->>'start')::inet + g, 32) AS a
					FROM jsonb_array_elements($2::jsonb) pool,
					     generate_series(0, (pool->>'end')::inet - (pool->>'start')::inet) g
				) cand
				WHERE NOT EXISTS (SELECT 1 FROM ports x WHERE x.network_id = $1 AND x.ip_address = cand.a)
				ORDER BY a LIMIT 1`, p.NetworkID, string(pools))
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
		}
		if err != nil {
			return "", "", err
		}
		return sid, ip, nil
	}
	return "", "", apierr.Conflictf("No more IP addresses available on network %s.", p.NetworkID)
}

func insertPort(ctx context.Context, tx *sqlx.Tx, p Port) (*Port, error) {
	mac := p.MACAddress
	for attempt := 0; ; attempt++ {
		if p.MACAddress == "" {
			mac = randomMAC()
		}
		if _, err := tx.ExecContext(ctx, `SAVEPOINT port_insert`); err != nil {
			return nil, err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO ports (id, network_id, subnet_id, project_id, server_id, name,
				description, device_id, device_owner, admin_state_up, port_security_enabled, mac_address, ip_address,
				auto_delete, slot)
			VALUES ($1, $2, $3, $4, NULLIF($5, '')::uuid, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
			p.ID, p.NetworkID, p.SubnetID, p.ProjectID, p.ServerID, p.Name, p.Description, p.DeviceID,
			p.DeviceOwner, p.AdminStateUp, p.PortSecurityEnabled, mac, p.IPAddress, p.AutoDelete, p.Slot)
		if err == nil {
			if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT port_insert`); err != nil {
				return nil, err
			}
			break
		}
		var pe *pq.Error
		if errors.As(err, &pe) && pe.Code == "23505" && pe.Constraint == "ports_network_id_ip_address_key" {
			return nil, apierr.Conflictf("Unable to complete operation for network %s. The IP address %s is in use.", p.NetworkID, p.IPAddress)
		}
		if !pgdb.IsUniqueViolation(err) || p.MACAddress != "" || attempt > 5 {
			if pgdb.IsUniqueViolation(err) {
				return nil, apierr.Conflictf("Unable to complete operation for network %s. The mac address %s is in use.", p.NetworkID, mac)
			}
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT port_insert`); err != nil {
			return nil, err
		}
	}
	if err := setPortGroups(ctx, tx, &p); err != nil {
		return nil, err
	}
	return getPort(ctx, tx, Scope{AllProjects: true}, p.ID)
}

// randomMAC makes a MAC in OpenStack's fa:16:3e prefix.
func randomMAC() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", b[0], b[1], b[2])
}

// portsOf returns the ports of the given servers, keyed by server id.
func portsOf(ctx context.Context, q sqlx.QueryerContext, serverIDs []string) (map[string][]Port, error) {
	out := map[string][]Port{}
	if len(serverIDs) == 0 {
		return out, nil
	}
	var ps []Port
	if err := sqlx.SelectContext(ctx, q, &ps, `SELECT `+portCols+portFrom+`
		WHERE p.server_id = ANY($1::uuid[]) ORDER BY p.slot, p.created_at, p.id`, pq.Array(serverIDs)); err != nil {
		return nil, err
	}
	for _, p := range ps {
		out[p.ServerID] = append(out[p.ServerID], p)
	}
	return out, nil
}

func getPort(ctx context.Context, q sqlx.QueryerContext, sc Scope, id string) (*Port, error) {
	if !validUUID(id) {
		return nil, apierr.NotFoundf("Port %s could not be found.", id)
	}
	var p Port
	err := sqlx.GetContext(ctx, q, &p, `SELECT `+portCols+portFrom+` WHERE p.id = $1 AND ($2 OR p.project_id = $3)`,
		id, sc.AllProjects, sc.ProjectID)
	if err != nil {
		return nil, pgdb.NotFound(err, fmt.Sprintf("Port %s could not be found.", id))
	}
	if err := sqlx.SelectContext(ctx, q, &p.SecurityGroups, `SELECT group_id::text FROM port_security_groups
		WHERE port_id = $1 ORDER BY group_id`, id); err != nil {
		return nil, err
	}
	return &p, nil
}
