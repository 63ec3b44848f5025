package store

import (
	"context"
	"errors"
	"strconv"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

type ifRevisionKey struct{}

// WithIfRevision makes the next network, subnet or port update made with
// ctx apply only if the row is still at revision n (Neutron's If-Match:
// revision_number=n); otherwise the update fails and RevisionConflict
// reports it. The check runs in the update's transaction, under its row
// lock (migration 00011's trigger).
func WithIfRevision(ctx context.Context, n int64) context.Context {
	return context.WithValue(ctx, ifRevisionKey{}, n)
}

// applyIfRevision hands ctx's expected revision to the trigger.
func applyIfRevision(ctx context.Context, tx *sqlx.Tx) error {
	n, ok := ctx.Value(ifRevisionKey{}).(int64)
	if !ok {
		return nil
	}
	_, err := tx.ExecContext(ctx, `SELECT set_config('berth.if_revision', $1, true)`, strconv.FormatInt(n, 10))
	return err
}

// RevisionConflict reports whether err is a failed If-Match, with
// Neutron's message ("Constrained to 1, but current revision is 2").
func RevisionConflict(err error) (string, bool) {
	var pe *pq.Error
	if errors.As(err, &pe) && pe.Code == "BR412" {
		return pe.Message, true
	}
	return "", false
}
