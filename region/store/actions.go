package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"time"

	"github.com/jmoiron/sqlx"

	"berth/internal/apierr"
	"berth/internal/pgdb"
)

// Action is an os-instance-actions record.
type Action struct {
	ID         int64          `db:"id"`
	ServerID   string         `db:"server_id"`
	Action     string         `db:"action"`
	RequestID  string         `db:"request_id"`
	ProjectID  string         `db:"project_id"`
	UserID     string         `db:"user_id"`
	Message    sql.NullString `db:"message"`
	StartTime  time.Time      `db:"start_time"`
	FinishTime *time.Time     `db:"finish_time"`
	UpdatedAt  time.Time      `db:"updated_at"`
	Events     []ActionEvent  `db:"-"`
}

// ActionEvent is one step of an action.
type ActionEvent struct {
	Event      string         `db:"event"`
	Host       sql.NullString `db:"host"`
	Result     sql.NullString `db:"result"`
	Traceback  sql.NullString `db:"traceback"`
	StartTime  time.Time      `db:"start_time"`
	FinishTime *time.Time     `db:"finish_time"`
}

func startAction(ctx context.Context, tx *sqlx.Tx, serverID, action, requestID, projectID, userID string) (int64, error) {
	var id int64
	err := tx.GetContext(ctx, &id, `INSERT INTO instance_actions (server_id, action, request_id, project_id, user_id)
		VALUES ($1, $2, $3, $4, $5) RETURNING id`, serverID, action, requestID, projectID, userID)
	return id, err
}

// finishAction closes an action and its open events; a non-empty message
// marks it failed ("Error" in Nova's terms) with that message.
func finishAction(ctx context.Context, tx *sqlx.Tx, actionID int64, errMsg string) error {
	result := "Success"
	if errMsg != "" {
		result = "Error"
	}
	if _, err := tx.ExecContext(ctx, `UPDATE instance_action_events SET finish_time = now(), result = $2,
		traceback = NULLIF($3, '') WHERE action_id = $1 AND finish_time IS NULL`, actionID, result, errMsg); err != nil {
		return err
	}
	msg := sql.NullString{String: "Error", Valid: errMsg != ""}
	_, err := tx.ExecContext(ctx, `UPDATE instance_actions SET finish_time = coalesce(finish_time, now()),
		message = coalesce($2, message), updated_at = now() WHERE id = $1`, actionID, msg)
	return err
}

// addEvent records a finished event.
func addEvent(ctx context.Context, tx *sqlx.Tx, actionID int64, event, host string, ok bool) error {
	result := "Success"
	if !ok {
		result = "Error"
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO instance_action_events (action_id, event, host, result, finish_time)
		VALUES ($1, $2, NULLIF($3, ''), $4, now())`, actionID, event, host, result)
	return err
}

// openEvent records an event that the host agent will finish.
func openEvent(ctx context.Context, tx *sqlx.Tx, actionID int64, event, host string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO instance_action_events (action_id, event, host)
		VALUES ($1, $2, NULLIF($3, ''))`, actionID, event, host)
	return err
}

// openActionOf returns the newest unfinished action of a server, if any.
func openActionOf(ctx context.Context, tx *sqlx.Tx, serverID string) (int64, bool, error) {
	var id int64
	err := tx.GetContext(ctx, &id, `SELECT id FROM instance_actions WHERE server_id = $1 AND finish_time IS NULL
		ORDER BY start_time DESC, id DESC LIMIT 1`, serverID)
	if err == sql.ErrNoRows {
		return 0, false, nil
	}
	return id, err == nil, err
}

// ListActions lists a server's actions, newest first, with their events.
// The server must be live unless withDeleted (microversion 2.21: actions
// outlive their server).
func (s *Store) ListActions(ctx context.Context, sc Scope, serverID string, withDeleted bool) ([]Action, error) {
	var out []Action
	err := s.readTx(ctx, func(tx *sqlx.Tx) error {
		if withDeleted {
			n := 0
			if validUUID(serverID) {
				if err := tx.GetContext(ctx, &n, `SELECT count(*) FROM servers WHERE id = $1 AND ($2 OR project_id = $3)`,
					serverID, sc.AllProjects, sc.ProjectID); err != nil {
					return err
				}
			}
			if n == 0 {
				return apierr.NotFoundf("Instance %s could not be found.", serverID)
			}
		} else if _, err := getServer(ctx, tx, sc, serverID, false); err != nil {
			return err
		}
		if err := tx.SelectContext(ctx, &out, `SELECT id, server_id, action, request_id, project_id, user_id,
			message, start_time, finish_time, updated_at FROM instance_actions WHERE server_id = $1
			ORDER BY start_time DESC, id DESC`, serverID); err != nil {
			return err
		}
		for i := range out {
			if err := tx.SelectContext(ctx, &out[i].Events, `SELECT event, host, result, traceback, start_time,
				finish_time FROM instance_action_events WHERE action_id = $1 ORDER BY id`, out[i].ID); err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// CreateConsoleToken records a single-use console token for a server; only
// its hash is stored.
func (s *Store) CreateConsoleToken(ctx context.Context, serverID, token string, ttl time.Duration) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO console_tokens (token_hash, server_id, expires_at)
		VALUES ($1, $2, now() + make_interval(secs => $3))`, hashToken(token), serverID, ttl.Seconds())
	if err == nil {
		// Expired tokens are dropped as new ones are made.
		_, err = s.db.ExecContext(ctx, `DELETE FROM console_tokens WHERE expires_at < now()`)
	}
	return err
}

// ConsumeConsoleToken returns the server a token opens and deletes the
// token; NotFound when it is unknown, used or expired.
func (s *Store) ConsumeConsoleToken(ctx context.Context, token string) (string, error) {
	var id string
	err := s.db.GetContext(ctx, &id, `DELETE FROM console_tokens WHERE token_hash = $1 AND expires_at > now()
		RETURNING server_id::text`, hashToken(token))
	if err != nil {
		return "", pgdb.NotFound(err, "The console token is invalid, used or expired.")
	}
	return id, nil
}

func hashToken(t string) string {
	sum := sha256.Sum256([]byte(t))
	return hex.EncodeToString(sum[:])
}
