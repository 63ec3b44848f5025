package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
)

// CreateRetryWindow is how long a client's request id keeps naming the
// server its create made: a retry within it returns that server. Clients
// retry a lost answer within seconds; an id reused later is a new request.
const CreateRetryWindow = time.Hour

// RetryKey is the key of the i-th server (from 1) of a create that the
// client sent with request id clientID ("" when the client sent none: a
// server-made id can never be retried). The servers of one multi-create
// get a key each, so a retry finds every one of them.
func RetryKey(clientID string, i int) string {
	if clientID == "" || i == 1 {
		return clientID
	}
	return fmt.Sprintf("%s#%d", clientID, i)
}

// claimCreate records that the create of ns (its RetryKey set) makes
// ns.ID, unless the same project and user already made a server with that
// key within CreateRetryWindow that still exists: then it returns that
// server's id and nothing must be created. A concurrent create with the
// same key waits on the row's unique index until the first commits, and
// then sees its server. (Under READ COMMITTED each statement sees what
// committed before it began, which is why the first server's existence is
// checked by a statement of its own, after the insert has waited.)
func claimCreate(ctx context.Context, tx *sqlx.Tx, ns NewServer) (prior string, err error) {
	window := fmt.Sprintf("%d seconds", int(CreateRetryWindow.Seconds()))
	// Rows of this user past the window are dead weight.
	if _, err := tx.ExecContext(ctx, `DELETE FROM server_create_requests WHERE project_id = $1 AND user_id = $2
		AND created_at < now() - $3::interval`, ns.ProjectID, ns.UserID, window); err != nil {
		return "", err
	}
	var claimed []string
	if err := tx.SelectContext(ctx, &claimed, `INSERT INTO server_create_requests AS c (project_id, user_id, request_id, server_id)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (project_id, user_id, request_id) DO UPDATE SET server_id = excluded.server_id, created_at = now()
		WHERE c.created_at < now() - $5::interval
		RETURNING server_id::text`, ns.ProjectID, ns.UserID, ns.RetryKey, ns.ID, window); err != nil {
		return "", err
	}
	if len(claimed) == 1 {
		return "", nil
	}
	// The row is ours to read and update now (the conflict locked it).
	var live bool
	if err := tx.GetContext(ctx, &prior, `SELECT server_id::text FROM server_create_requests
		WHERE project_id = $1 AND user_id = $2 AND request_id = $3`, ns.ProjectID, ns.UserID, ns.RetryKey); err != nil {
		return "", err
	}
	if err := tx.GetContext(ctx, &live, `SELECT EXISTS (SELECT 1 FROM servers WHERE id = $1 AND deleted_at IS NULL)`,
		prior); err != nil {
		return "", err
	}
	if live {
		return prior, nil
	}
	// The first server is deleted already: the id makes a new one.
	_, err = tx.ExecContext(ctx, `UPDATE server_create_requests SET server_id = $4, created_at = now()
		WHERE project_id = $1 AND user_id = $2 AND request_id = $3`, ns.ProjectID, ns.UserID, ns.RetryKey, ns.ID)
	return "", err
}
