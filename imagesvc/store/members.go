package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"berth/internal/apierr"
	"berth/internal/pgdb"
)

// Member statuses (Glance's).
const (
	MemberPending  = "pending"
	MemberAccepted = "accepted"
	MemberRejected = "rejected"
)

// Member is a project an image is shared with.
type Member struct {
	ImageID   string    `db:"image_id"`
	MemberID  string    `db:"member"`
	Status    string    `db:"status"`
	CreatedAt time.Time `db:"created_at"`
	UpdatedAt time.Time `db:"updated_at"`
}

func memberNotFound(imageID, member string) error {
	return apierr.NotFoundf("%s is not a member of image %s", member, imageID)
}

// AddMember shares image imageID with project member (status pending).
// Conflict if it already is a member, OverLimit (413) past max members.
func (s *Store) AddMember(ctx context.Context, imageID, member string, max int) (*Member, error) {
	now := s.now()
	m := &Member{ImageID: imageID, MemberID: member, Status: MemberPending, CreatedAt: now, UpdatedAt: now}
	err := s.withImageLocked(ctx, imageID, func(q *sqlx.Tx) error {
		var n int
		if err := q.GetContext(ctx, &n, `SELECT count(*) FROM image_members WHERE image_id = $1`, imageID); err != nil {
			return fmt.Errorf("count members: %w", err)
		}
		if n >= max {
			return &apierr.Error{Kind: apierr.TooLarge, Message: fmt.Sprintf("Maximum number of image members exceeded (%d allowed).", max)}
		}
		_, err := q.ExecContext(ctx, `INSERT INTO image_members (image_id, member, status, created_at, updated_at)
			VALUES ($1, $2, $3, $4, $4)`, imageID, member, m.Status, now)
		if pgdb.IsUniqueViolation(err) {
			return apierr.Conflictf("Member %s already exists on image %s", member, imageID)
		}
		if err != nil {
			return fmt.Errorf("add member: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// FindMembers lists the members of image imageID, oldest first.
func (s *Store) FindMembers(ctx context.Context, imageID string) ([]*Member, error) {
	var out []*Member
	err := s.db.SelectContext(ctx, &out, `SELECT image_id, member, status, created_at, updated_at
		FROM image_members WHERE image_id = $1 ORDER BY created_at, member`, imageID)
	if err != nil {
		return nil, fmt.Errorf("list members: %w", err)
	}
	return out, nil
}

// FindMember returns one membership, or NotFound.
func (s *Store) FindMember(ctx context.Context, imageID, member string) (*Member, error) {
	if !validID(imageID) {
		return nil, memberNotFound(imageID, member)
	}
	var m Member
	err := s.db.GetContext(ctx, &m, `SELECT image_id, member, status, created_at, updated_at
		FROM image_members WHERE image_id = $1 AND member = $2`, imageID, member)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, memberNotFound(imageID, member)
	}
	if err != nil {
		return nil, fmt.Errorf("find member: %w", err)
	}
	return &m, nil
}

// UpdateMember sets a membership's status. NotFound if there is none.
func (s *Store) UpdateMember(ctx context.Context, imageID, member, status string) (*Member, error) {
	var m Member
	err := s.db.GetContext(ctx, &m, `UPDATE image_members SET status = $3, updated_at = $4
		WHERE image_id = $1 AND member = $2
		RETURNING image_id, member, status, created_at, updated_at`, imageID, member, status, s.now())
	if errors.Is(err, sql.ErrNoRows) {
		return nil, memberNotFound(imageID, member)
	}
	if err != nil {
		return nil, fmt.Errorf("update member: %w", err)
	}
	return &m, nil
}

// DeleteMember removes a membership. NotFound if there is none.
func (s *Store) DeleteMember(ctx context.Context, imageID, member string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM image_members WHERE image_id = $1 AND member = $2`, imageID, member)
	if err != nil {
		return fmt.Errorf("delete member: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return memberNotFound(imageID, member)
	}
	return nil
}

// IsMember reports whether project is a member (any status) of image.
func (s *Store) IsMember(ctx context.Context, imageID, project string) (bool, error) {
	if project == "" || !validID(imageID) {
		return false, nil
	}
	var ok bool
	err := s.db.GetContext(ctx, &ok, `SELECT EXISTS (SELECT 1 FROM image_members WHERE image_id = $1 AND member = $2)`,
		imageID, project)
	if err != nil {
		return false, fmt.Errorf("find member: %w", err)
	}
	return ok, nil
}
