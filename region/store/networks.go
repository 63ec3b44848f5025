package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"net"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"berth/internal/apierr"
	"berth/internal/pgdb"
)

// Network is a network row.
type Network struct {
	ID        string         `db:"id"`
	Name      string         `db:"name"`
	ProjectID string         `db:"project_id"`
	CIDR      string         `db:"cidr"`
	GatewayIP sql.NullString `db:"gateway_ip"`
	Shared    bool           `db:"shared"`
	IsDefault bool           `db:"is_default"`
}

// Port is a port row, joined with its network's name and CIDR.
type Port struct {
	ID          string `db:"id"`
	NetworkID   string `db:"network_id"`
	ProjectID   string `db:"project_id"`
	ServerID    string `db:"server_id"`
	MACAddress  string `db:"mac_address"`
	IPAddress   string `db:"ip_address"`
	NetworkName string `db:"network_name"`
	CIDR        string `db:"cidr"`
	GatewayIP   string `db:"gateway_ip"`
}

// EnsureDefaultNetwork makes the shared network every server joins when it
// asks for none in particular. The first start fixes its CIDR; a later
// start with another CIDR is refused rather than renumbering live ports.
func (s *Store) EnsureDefaultNetwork(ctx context.Context, name, cidr string) (*Network, error) {
	ip, ipnet, err := net.ParseCIDR(cidr)
	if err != nil || ip.To4() == nil {
		return nil, fmt.Errorf("default network: %q is not an IPv4 CIDR", cidr)
	}
	gw := make(net.IP, 4)
	copy(gw, ipnet.IP.To4())
	gw[3]++
	var n Network
	err = s.tx(ctx, func(tx *sqlx.Tx) error {
		err := tx.GetContext(ctx, &n, `SELECT id, name, project_id, cidr, gateway_ip, shared, is_default
			FROM networks WHERE is_default`)
		if errors.Is(err, sql.ErrNoRows) {
			return tx.GetContext(ctx, &n, `INSERT INTO networks (id, name, cidr, gateway_ip, shared, is_default)
				VALUES ($1, $2, $3, $4, true, true)
				RETURNING id, name, project_id, cidr, gateway_ip, shared, is_default`,
				uuid.NewString(), name, ipnet.String(), gw.String())
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if n.CIDR != ipnet.String() {
		return nil, fmt.Errorf("default network %s already has CIDR %s, not %s", n.Name, n.CIDR, ipnet.String())
	}
	return &n, nil
}

// allocatePort takes the lowest free address of network for a server, in
// tx. The network row lock serializes allocations on one network so two
// boots never get one address; the unique index backs that up.
func allocatePort(ctx context.Context, tx *sqlx.Tx, networkID, projectID, serverID string) (*Port, error) {
	var cidr string
	if err := tx.GetContext(ctx, &cidr, `SELECT cidr FROM networks WHERE id = $1 FOR UPDATE`, networkID); err != nil {
		return nil, pgdb.NotFound(err, fmt.Sprintf("Network %s could not be found.", networkID))
	}
	var ip string
	err := tx.GetContext(ctx, &ip, `
		SELECT host(a) FROM (
			SELECT set_masklen(network(n.cidr)::inet + g, 32) AS a
			FROM networks n, generate_series(2, (2 ^ (32 - masklen(n.cidr)))::bigint - 2) g
			WHERE n.id = $1
		) cand
		WHERE a <> (SELECT gateway_ip FROM networks WHERE id = $1)
		  AND NOT EXISTS (SELECT 1 FROM ports p WHERE p.network_id = $1 AND p.ip_address = cand.a)
		ORDER BY a LIMIT 1`, networkID)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apierr.Conflictf("No more IP addresses available on network %s.", networkID)
	}
	if err != nil {
		return nil, err
	}
	p := &Port{ID: uuid.NewString(), NetworkID: networkID, ProjectID: projectID, ServerID: serverID, IPAddress: ip}
	for attempt := 0; ; attempt++ {
		p.MACAddress = randomMAC()
		_, err = tx.ExecContext(ctx, `SAVEPOINT port_insert`)
		if err != nil {
			return nil, err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO ports (id, network_id, project_id, server_id, mac_address, ip_address)
			VALUES ($1, $2, $3, $4, $5, $6)`, p.ID, networkID, projectID, serverID, p.MACAddress, ip)
		if err == nil {
			_, err = tx.ExecContext(ctx, `RELEASE SAVEPOINT port_insert`)
			return p, err
		}
		if !pgdb.IsUniqueViolation(err) || attempt > 5 {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT port_insert`); err != nil {
			return nil, err
		}
	}
}

// randomMAC makes a MAC in OpenStack's fa:16:3e prefix.
func randomMAC() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("fa:16:3e:%02x:%02x:%02x", b[0], b[1], b[2])
}

const portCols = `p.id, p.network_id, p.project_id, coalesce(p.server_id::text, '') AS server_id,
	p.mac_address::text AS mac_address, host(p.ip_address) AS ip_address, n.name AS network_name,
	n.cidr::text AS cidr, coalesce(host(n.gateway_ip), '') AS gateway_ip`

// portsOf returns the ports of the given servers, keyed by server id.
func portsOf(ctx context.Context, q sqlx.QueryerContext, serverIDs []string) (map[string][]Port, error) {
	out := map[string][]Port{}
	if len(serverIDs) == 0 {
		return out, nil
	}
	query, args, err := sqlx.In(`SELECT `+portCols+` FROM ports p JOIN networks n ON n.id = p.network_id
		WHERE p.server_id::text IN (?) ORDER BY p.created_at, p.id`, serverIDs)
	if err != nil {
		return nil, err
	}
	var ps []Port
	if err := sqlx.SelectContext(ctx, q, &ps, sqlx.Rebind(sqlx.DOLLAR, query), args...); err != nil {
		return nil, err
	}
	for _, p := range ps {
		out[p.ServerID] = append(out[p.ServerID], p)
	}
	return out, nil
}

// DefaultNetwork returns the shared default network.
func (s *Store) DefaultNetwork(ctx context.Context) (*Network, error) {
	var n Network
	err := s.db.GetContext(ctx, &n, `SELECT id, name, project_id, cidr, gateway_ip, shared, is_default
		FROM networks WHERE is_default`)
	if err != nil {
		return nil, pgdb.NotFound(err, "There is no default network.")
	}
	return &n, nil
}
