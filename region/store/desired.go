package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"

	"berth/schema"
)

// setPort is a port as the host's data path needs it: addresses, its
// security group rules resolved to CIDRs, and its bandwidth.
func setPort(ctx context.Context, tx *sqlx.Tx, p *Port, bw *schema.SetBandwidth) (schema.SetPort, error) {
	sp := schema.SetPort{
		ID: p.ID, NetworkID: p.NetworkID, MAC: p.MACAddress, IP: p.IPAddress, PrefixLen: prefixLen(p.CIDR),
		Gateway: p.GatewayIP, CIDR: p.CIDR, PortSecurity: p.PortSecurityEnabled, Bandwidth: bw,
	}
	var net struct {
		MTU int `db:"mtu"`
		VNI int `db:"vni"`
	}
	if err := tx.GetContext(ctx, &net, `SELECT mtu, vni FROM networks WHERE id = $1`, p.NetworkID); err != nil {
		return sp, err
	}
	sp.MTU, sp.VNI = net.MTU, net.VNI
	if !p.PortSecurityEnabled {
		return sp, nil
	}
	var rows []struct {
		Direction   string         `db:"direction"`
		Protocol    string         `db:"protocol"`
		Min         int            `db:"port_min"`
		Max         int            `db:"port_max"`
		Prefix      sql.NullString `db:"remote_ip_prefix"`
		RemoteGroup sql.NullString `db:"remote_group_id"`
	}
	if err := tx.SelectContext(ctx, &rows, `SELECT r.direction, coalesce(r.protocol, '') AS protocol,
		coalesce(r.port_range_min, 0) AS port_min, coalesce(r.port_range_max, 0) AS port_max,
		r.remote_ip_prefix::text AS remote_ip_prefix, r.remote_group_id::text AS remote_group_id
		FROM port_security_groups g JOIN security_group_rules r ON r.group_id = g.group_id
		WHERE g.port_id = $1 AND r.ethertype = 'IPv4' ORDER BY r.created_at, r.id`, p.ID); err != nil {
		return sp, err
	}
	members := map[string][]string{}
	for _, r := range rows {
		rule := schema.SetRule{Direction: r.Direction, Protocol: r.Protocol, PortMin: r.Min, PortMax: r.Max}
		switch {
		case r.Prefix.Valid:
			rule.Remote = []string{r.Prefix.String}
		case r.RemoteGroup.Valid:
			ips, ok := members[r.RemoteGroup.String]
			if !ok {
				if err := tx.SelectContext(ctx, &ips, `SELECT DISTINCT host(p.ip_address) || '/32' FROM port_security_groups g
					JOIN ports p ON p.id = g.port_id WHERE g.group_id = $1 AND p.server_id IS NOT NULL
					ORDER BY 1`, r.RemoteGroup.String); err != nil {
					return sp, err
				}
				members[r.RemoteGroup.String] = ips
			}
			// A remote group with no members admits nobody: an empty
			// Remote would mean "anyone", so the rule is left out.
			if len(ips) == 0 {
				continue
			}
			rule.Remote = ips
		}
		sp.Rules = append(sp.Rules, rule)
	}
	return sp, nil
}

// bandwidthOf reads Nova's quota:vif_* and Berth's berth:bw_* extra specs;
// nil when none is set.
func bandwidthOf(specsJSON json.RawMessage) *schema.SetBandwidth {
	specs := map[string]string{}
	_ = json.Unmarshal(specsJSON, &specs)
	var bw schema.SetBandwidth
	set := false
	for key, dst := range map[string]*int{
		"quota:vif_inbound_average": &bw.InboundAverageKBps, "quota:vif_inbound_peak": &bw.InboundPeakKBps,
		"quota:vif_inbound_burst": &bw.InboundBurstKB, "quota:vif_outbound_average": &bw.OutboundAverageKBps,
		"quota:vif_outbound_peak": &bw.OutboundPeakKBps, "quota:vif_outbound_burst": &bw.OutboundBurstKB,
		"berth:bw_guarantee_kbit": &bw.GuaranteeKbit, "berth:bw_priority": &bw.Priority,
	} {
		if v, ok := specs[key]; ok {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				*dst = n
				set = true
			}
		}
	}
	if !set {
		return nil
	}
	return &bw
}

// specIs reports whether extra spec key has value want (case-insensitive).
func specIs(specsJSON json.RawMessage, key, want string) bool {
	specs := map[string]string{}
	_ = json.Unmarshal(specsJSON, &specs)
	return strings.EqualFold(specs[key], want)
}
