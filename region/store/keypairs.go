package store

import (
	"context"
	"fmt"
	"time"

	"berth/internal/apierr"
	"berth/internal/pgdb"
)

// Keypair is an os-keypairs record; Nova scopes keypairs to their user.
type Keypair struct {
	ID          int64     `db:"id"`
	UserID      string    `db:"user_id"`
	Name        string    `db:"name"`
	Type        string    `db:"type"`
	PublicKey   string    `db:"public_key"`
	Fingerprint string    `db:"fingerprint"`
	CreatedAt   time.Time `db:"created_at"`
}

const keypairCols = `id, user_id, name, type, public_key, fingerprint, created_at`

// CreateKeypair stores a keypair; Conflict when the user has one by that name.
func (s *Store) CreateKeypair(ctx context.Context, k Keypair) (*Keypair, error) {
	var out Keypair
	err := s.db.GetContext(ctx, &out, `INSERT INTO keypairs (user_id, name, type, public_key, fingerprint)
		VALUES ($1, $2, $3, $4, $5) RETURNING `+keypairCols, k.UserID, k.Name, k.Type, k.PublicKey, k.Fingerprint)
	if pgdb.IsUniqueViolation(err) {
		return nil, apierr.Conflictf("Key pair '%s' already exists.", k.Name)
	}
	return &out, err
}

// ListKeypairs lists a user's keypairs by name.
func (s *Store) ListKeypairs(ctx context.Context, userID string) ([]Keypair, error) {
	var out []Keypair
	err := s.db.SelectContext(ctx, &out, `SELECT `+keypairCols+` FROM keypairs WHERE user_id = $1 ORDER BY name`, userID)
	return out, err
}

// CountKeypairs counts a user's keypairs (for the key_pairs quota).
func (s *Store) CountKeypairs(ctx context.Context, userID string) (int, error) {
	var n int
	err := s.db.GetContext(ctx, &n, `SELECT count(*) FROM keypairs WHERE user_id = $1`, userID)
	return n, err
}

// FindKeypair returns a user's keypair by name.
func (s *Store) FindKeypair(ctx context.Context, userID, name string) (*Keypair, error) {
	var k Keypair
	err := s.db.GetContext(ctx, &k, `SELECT `+keypairCols+` FROM keypairs WHERE user_id = $1 AND name = $2`, userID, name)
	if err != nil {
		return nil, pgdb.NotFound(err, fmt.Sprintf("Keypair %s not found for user %s", name, userID))
	}
	return &k, nil
}

// DeleteKeypair deletes a user's keypair by name.
func (s *Store) DeleteKeypair(ctx context.Context, userID, name string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM keypairs WHERE user_id = $1 AND name = $2`, userID, name)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return apierr.NotFoundf("Keypair %s not found for user %s", name, userID)
	}
	return nil
}
