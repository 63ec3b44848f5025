package store

import (
	"context"

	"github.com/jmoiron/sqlx"

	"berth/internal/apierr"
)

// DefaultQuotas are Nova's defaults.
// fixed_ips, floating_ips, security_groups and security_group_rules are
// the network quotas Nova still shows below microversion 2.36; Berth keeps
// them for those clients and enforces none of them (Nova proxies them to
// Neutron, which Berth does not limit yet).
var DefaultQuotas = map[string]int{
	"instances": 10, "cores": 20, "ram": 51200, "key_pairs": 100, "server_groups": 10,
	"server_group_members": 10, "metadata_items": 128, "injected_files": 5,
	"injected_file_content_bytes": 10240, "injected_file_path_bytes": 255,
	"fixed_ips": -1, "floating_ips": 10, "security_groups": 10, "security_group_rules": 20,
}

// Quotas returns a project's limits: the defaults with its overrides.
// -1 means unlimited.
func (s *Store) Quotas(ctx context.Context, projectID string) (map[string]int, error) {
	return quotas(ctx, s.db, projectID)
}

func quotas(ctx context.Context, q sqlx.QueryerContext, projectID string) (map[string]int, error) {
	out := map[string]int{}
	for k, v := range DefaultQuotas {
		out[k] = v
	}
	var rows []struct {
		Resource  string `db:"resource"`
		HardLimit int    `db:"hard_limit"`
	}
	if err := sqlx.SelectContext(ctx, q, &rows, `SELECT resource, hard_limit FROM quotas WHERE project_id = $1`, projectID); err != nil {
		return nil, err
	}
	for _, r := range rows {
		out[r.Resource] = r.HardLimit
	}
	return out, nil
}

// ResetQuotas drops a project's overrides: its limits are the defaults again.
func (s *Store) ResetQuotas(ctx context.Context, projectID string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM quotas WHERE project_id = $1`, projectID)
	return err
}

// SetQuotas overrides a project's limits (admin).
func (s *Store) SetQuotas(ctx context.Context, projectID string, limits map[string]int) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		for k, v := range limits {
			if _, ok := DefaultQuotas[k]; !ok {
				return apierr.Invalidf("Bad key(s) %s in quota_set", k)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO quotas (project_id, resource, hard_limit) VALUES ($1, $2, $3)
				ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = $3`, projectID, k, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Usage is what a project has in use.
type Usage struct {
	Instances    int `db:"instances"`
	Cores        int `db:"cores"`
	RAM          int `db:"ram"`
	ServerGroups int `db:"server_groups"`
}

// ProjectUsage counts a project's live servers and their resources.
func (s *Store) ProjectUsage(ctx context.Context, projectID string) (*Usage, error) {
	return projectUsage(ctx, s.db, projectID)
}

func projectUsage(ctx context.Context, q sqlx.QueryerContext, projectID string) (*Usage, error) {
	var u Usage
	err := sqlx.GetContext(ctx, q, &u, `SELECT count(*) AS instances, coalesce(sum(vcpus), 0) AS cores,
		coalesce(sum(ram_mb), 0) AS ram,
		(SELECT count(*) FROM server_groups WHERE project_id = $1) AS server_groups
		FROM servers WHERE project_id = $1 AND deleted_at IS NULL`, projectID)
	return &u, err
}

// overQuota refuses a boot of vcpus and ramMB that would take a project
// using u over its instances, cores or ram limit (-1: unlimited). The
// create path calls it under the project's quota lock (checkQuotas).
func overQuota(limits map[string]int, u *Usage, vcpus, ramMB int) error {
	for _, c := range []struct {
		name       string
		used, want int
	}{{"instances", u.Instances, 1}, {"cores", u.Cores, vcpus}, {"ram", u.RAM, ramMB}} {
		if lim := limits[c.name]; lim >= 0 && c.used+c.want > lim {
			return apierr.OverLimitf("Quota exceeded for %s: Requested %d, but already used %d of %d %s",
				c.name, c.want, c.used, lim, c.name)
		}
	}
	return nil
}
