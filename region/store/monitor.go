package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/jmoiron/sqlx"

	"berth/region/novastate"
)

// MarkSilentHosts sets the power state of every server on a host silent
// for longer than grace to NOSTATE (unknown), as Nova does for a compute
// node that stops reporting; the next report of the host sets it again.
// It returns how many servers changed.
func (s *Store) MarkSilentHosts(ctx context.Context, grace time.Duration) (int64, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE servers SET power_state = 0
		WHERE deleted_at IS NULL AND power_state <> 0 AND host IN (
			SELECT name FROM hosts WHERE forced_down OR last_heartbeat < now() - make_interval(secs => $1))`,
		grace.Seconds())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// FailStaleBuilds puts servers that have been building for longer than
// timeout into ERROR with a fault: the backstop that keeps a lost agent,
// a crashed region or a wedged host from leaving a server in BUILD
// forever. The agent removes what it made once it sees the set deleted.
func (s *Store) FailStaleBuilds(ctx context.Context, timeout time.Duration) (int, error) {
	var ids []string
	if err := s.db.SelectContext(ctx, &ids, `SELECT id::text FROM servers WHERE deleted_at IS NULL AND vm_state = $1
		AND created_at < now() - make_interval(secs => $2)`, novastate.Building, timeout.Seconds()); err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		err := s.tx(ctx, func(tx *sqlx.Tx) error {
			var srv Server
			if err := tx.GetContext(ctx, &srv, `SELECT `+serverCols+` FROM servers WHERE id = $1 AND vm_state = $2
				FOR UPDATE`, id, novastate.Building); err != nil {
				return nil // finished meanwhile
			}
			msg := "Build of instance " + id + " timed out after " + timeout.String() + "."
			fault, _ := json.Marshal(FaultBody{Code: 500, Message: msg, Created: s.now().UTC()})
			if _, err := tx.ExecContext(ctx, `UPDATE servers SET vm_state = $2, task_state = NULL, fault = $3,
				desired_state = 'deleted', generation = generation + 1, updated_at = now() WHERE id = $1`,
				id, novastate.Error, fault); err != nil {
				return err
			}
			if actionID, ok, err := openActionOf(ctx, tx, id); err != nil {
				return err
			} else if ok {
				if err := finishAction(ctx, tx, actionID, msg); err != nil {
					return err
				}
			}
			n++
			return notifyHost(ctx, tx, srv.Host.String)
		})
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// hostDown reports whether a host has been silent for longer than grace.
func hostDown(ctx context.Context, tx *sqlx.Tx, host string, grace time.Duration) (bool, error) {
	var down bool
	err := tx.GetContext(ctx, &down, `SELECT forced_down OR last_heartbeat < now() - make_interval(secs => $2)
		FROM hosts WHERE name = $1`, host, grace.Seconds())
	return down, err
}
