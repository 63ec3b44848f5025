package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"berth/internal/apierr"
	"berth/internal/pgdb"
)

// ServerGroup is an os-server-groups record with its members.
type ServerGroup struct {
	ID        string          `db:"id"`
	ProjectID string          `db:"project_id"`
	UserID    string          `db:"user_id"`
	Name      string          `db:"name"`
	Policy    string          `db:"policy"`
	Rules     json.RawMessage `db:"rules"`
	CreatedAt time.Time       `db:"created_at"`
	Members   []string        `db:"-"`
}

const groupCols = `id, project_id, user_id, name, policy, rules, created_at`

// CreateServerGroup stores a group, within the project's server_groups quota.
func (s *Store) CreateServerGroup(ctx context.Context, g ServerGroup) (*ServerGroup, error) {
	if g.Rules == nil {
		g.Rules = json.RawMessage("{}")
	}
	var out ServerGroup
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('quota:' || $1))`, g.ProjectID); err != nil {
			return err
		}
		limits, err := quotas(ctx, tx, g.ProjectID)
		if err != nil {
			return err
		}
		var n int
		if err := tx.GetContext(ctx, &n, `SELECT count(*) FROM server_groups WHERE project_id = $1`, g.ProjectID); err != nil {
			return err
		}
		if lim := limits["server_groups"]; lim >= 0 && n+1 > lim {
			return apierr.OverLimitf("Quota exceeded, too many server groups.")
		}
		return tx.GetContext(ctx, &out, `INSERT INTO server_groups (id, project_id, user_id, name, policy, rules)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING `+groupCols, g.ID, g.ProjectID, g.UserID, g.Name, g.Policy, g.Rules)
	})
	out.Members = []string{}
	return &out, err
}

func groupMembers(ctx context.Context, q sqlx.QueryerContext, id string) ([]string, error) {
	out := []string{}
	err := sqlx.SelectContext(ctx, q, &out, `SELECT m.server_id::text FROM server_group_members m
		JOIN servers s ON s.id = m.server_id WHERE m.group_id = $1 AND s.deleted_at IS NULL ORDER BY s.created_at`, id)
	return out, err
}

// FindServerGroup returns a group visible in scope.
func (s *Store) FindServerGroup(ctx context.Context, sc Scope, id string) (*ServerGroup, error) {
	if !validUUID(id) {
		return nil, apierr.NotFoundf("Instance group %s could not be found.", id)
	}
	var g ServerGroup
	err := s.db.GetContext(ctx, &g, `SELECT `+groupCols+` FROM server_groups WHERE id = $1 AND ($2 OR project_id = $3)`,
		id, sc.AllProjects, sc.ProjectID)
	if err != nil {
		return nil, pgdb.NotFound(err, fmt.Sprintf("Instance group %s could not be found.", id))
	}
	g.Members, err = groupMembers(ctx, s.db, id)
	return &g, err
}

// ListServerGroups lists a project's groups (or all, for an admin asking).
func (s *Store) ListServerGroups(ctx context.Context, sc Scope) ([]ServerGroup, error) {
	var out []ServerGroup
	if err := s.db.SelectContext(ctx, &out, `SELECT `+groupCols+` FROM server_groups WHERE $1 OR project_id = $2
		ORDER BY created_at, id`, sc.AllProjects, sc.ProjectID); err != nil {
		return nil, err
	}
	for i := range out {
		m, err := groupMembers(ctx, s.db, out[i].ID)
		if err != nil {
			return nil, err
		}
		out[i].Members = m
	}
	return out, nil
}

// DeleteServerGroup deletes a group; its members stay.
func (s *Store) DeleteServerGroup(ctx context.Context, sc Scope, id string) error {
	if _, err := s.FindServerGroup(ctx, sc, id); err != nil {
		return err
	}
	_, err := s.db.ExecContext(ctx, `DELETE FROM server_groups WHERE id = $1`, id)
	return err
}
