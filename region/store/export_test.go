package store

import (
	"context"

	"github.com/jmoiron/sqlx"
)

// SetBatchHook makes fn run in every create batch's transaction, before
// its read-back (nil: none). Set it before the first CreateServer.
func (s *Store) SetBatchHook(fn func(ctx context.Context, tx *sqlx.Tx) error) { s.batcher.hook = fn }
