package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"slices"
	"strconv"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"berth/schema"
)

// desiredPorts turns the ports of a host's sets into what its data path
// needs: addresses, network (MTU, VNI) and security group rules, and the
// remote groups those rules name with their members, listed once for the
// host (DesiredState.Groups) instead of expanded into every rule. Three
// queries, whatever the number of ports.
func desiredPorts(ctx context.Context, tx *sqlx.Tx, ports []Port) (map[string]schema.SetPort, []schema.SetGroup, error) {
	out := make(map[string]schema.SetPort, len(ports))
	if len(ports) == 0 {
		return out, nil, nil
	}
	var netIDs, secure []string
	seenNet := map[string]bool{}
	for _, p := range ports {
		if !seenNet[p.NetworkID] {
			seenNet[p.NetworkID] = true
			netIDs = append(netIDs, p.NetworkID)
		}
		if p.PortSecurityEnabled {
			secure = append(secure, p.ID)
		}
	}
	var nets []struct {
		ID  string `db:"id"`
		MTU int    `db:"mtu"`
		VNI int    `db:"vni"`
	}
	if err := tx.SelectContext(ctx, &nets, `SELECT id::text AS id, mtu, vni FROM networks WHERE id = ANY($1::uuid[])`,
		pq.Array(netIDs)); err != nil {
		return nil, nil, err
	}
	type netInfo struct{ mtu, vni int }
	netOf := make(map[string]netInfo, len(nets))
	for _, n := range nets {
		netOf[n.ID] = netInfo{n.MTU, n.VNI}
	}
	var rules []struct {
		PortID      string         `db:"port_id"`
		Direction   string         `db:"direction"`
		Protocol    string         `db:"protocol"`
		Min         int            `db:"port_min"`
		Max         int            `db:"port_max"`
		Prefix      sql.NullString `db:"remote_ip_prefix"`
		RemoteGroup sql.NullString `db:"remote_group_id"`
		Tag         sql.NullInt64  `db:"tag"`
	}
	if len(secure) > 0 {
		if err := tx.SelectContext(ctx, &rules, `SELECT g.port_id::text AS port_id, r.direction,
			coalesce(r.protocol, '') AS protocol, coalesce(r.port_range_min, 0) AS port_min,
			coalesce(r.port_range_max, 0) AS port_max, r.remote_ip_prefix::text AS remote_ip_prefix,
			r.remote_group_id::text AS remote_group_id, rg.tag
			FROM port_security_groups g JOIN security_group_rules r ON r.group_id = g.group_id
			LEFT JOIN security_groups rg ON rg.id = r.remote_group_id
			WHERE g.port_id = ANY($1::uuid[]) AND r.ethertype = 'IPv4'
			ORDER BY g.port_id, r.created_at, r.id`, pq.Array(secure)); err != nil {
			return nil, nil, err
		}
	}
	rulesOf := map[string][]schema.SetRule{}
	var groupIDs []string
	tags := map[string]int{}
	for _, r := range rules {
		rule := schema.SetRule{Direction: r.Direction, Protocol: r.Protocol, PortMin: r.Min, PortMax: r.Max}
		switch {
		case r.Prefix.Valid:
			rule.Remote = []string{r.Prefix.String}
		case r.RemoteGroup.Valid:
			rule.RemoteGroup, rule.RemoteGroupTag = r.RemoteGroup.String, int(r.Tag.Int64)
			if _, ok := tags[r.RemoteGroup.String]; !ok {
				groupIDs = append(groupIDs, r.RemoteGroup.String)
			}
			tags[r.RemoteGroup.String] = rule.RemoteGroupTag
		}
		rulesOf[r.PortID] = append(rulesOf[r.PortID], rule)
	}
	for _, p := range ports {
		n := netOf[p.NetworkID]
		sp := schema.SetPort{
			ID: p.ID, NetworkID: p.NetworkID, MAC: p.MACAddress, IP: p.IPAddress, PrefixLen: prefixLen(p.CIDR),
			Gateway: p.GatewayIP, CIDR: p.CIDR, PortSecurity: p.PortSecurityEnabled, MTU: n.mtu, VNI: n.vni,
		}
		if p.PortSecurityEnabled {
			sp.Rules = rulesOf[p.ID]
		}
		out[p.ID] = sp
	}
	if len(groupIDs) == 0 {
		return out, nil, nil
	}
	// Members only on the networks of the host's ports: no other address
	// can reach them (isolation is by network).
	var members []struct {
		GroupID   string `db:"group_id"`
		NetworkID string `db:"network_id"`
		VNI       int    `db:"vni"`
		IP        string `db:"ip"`
	}
	if err := tx.SelectContext(ctx, &members, `SELECT DISTINCT g.group_id::text AS group_id,
		p.network_id::text AS network_id, n.vni, host(p.ip_address) AS ip
		FROM port_security_groups g JOIN ports p ON p.id = g.port_id JOIN networks n ON n.id = p.network_id
		WHERE g.group_id = ANY($1::uuid[]) AND p.server_id IS NOT NULL AND p.network_id = ANY($2::uuid[])
		ORDER BY 1, 2, 4`, pq.Array(groupIDs), pq.Array(netIDs)); err != nil {
		return nil, nil, err
	}
	byGroup := map[string][]schema.SetGroupMember{}
	for _, m := range members {
		byGroup[m.GroupID] = append(byGroup[m.GroupID], schema.SetGroupMember{NetworkID: m.NetworkID, VNI: m.VNI, IP: m.IP})
	}
	slices.Sort(groupIDs)
	groups := make([]schema.SetGroup, 0, len(groupIDs))
	for _, id := range groupIDs {
		ms := byGroup[id]
		if ms == nil {
			ms = []schema.SetGroupMember{}
		}
		groups = append(groups, schema.SetGroup{ID: id, Tag: tags[id], Members: ms})
	}
	return out, groups, nil
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
