package store

import (
	"context"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"

	"berth/internal/apierr"
	"berth/region/novastate"
	"berth/schema"
)

// Offload ends a shelve whose snapshot (imageID, dockerImageID) is
// stored: the server becomes SHELVED_OFFLOADED, its host claim is
// released and the host is told, so its agent removes the set. The
// server keeps its id and ports (so its addresses); its image becomes the
// snapshot, which is what unshelve boots. Nova's default
// shelved_offload_time of 0 offloads at once; so does Berth, always.
func (s *Store) Offload(ctx context.Context, id, imageID, dockerImageID string) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		srv, err := getServer(ctx, tx, Scope{AllProjects: true}, id, true)
		if err != nil {
			return err
		}
		if srv.TaskState.String != novastate.TaskImageSnapshot || !srv.Host.Valid {
			return apierr.Conflictf("Server %s is no longer being shelved (task %q).", id, srv.TaskState.String)
		}
		host := srv.Host.String
		if err := releaseOn(ctx, tx, host, srv.VCPUs, srv.RAMMB, srv.DiskGB); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE servers SET vm_state = $2, task_state = NULL, power_state = $3,
			host = NULL, image_id = $4, docker_image_id = $5, generation = generation + 1, updated_at = now()
			WHERE id = $1`, id, novastate.ShelvedOffloaded, novastate.PowerNoState, imageID, dockerImageID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE ports SET binding_host = '' WHERE server_id = $1`, id); err != nil {
			return err
		}
		if actionID, ok, err := openActionOf(ctx, tx, id); err != nil {
			return err
		} else if ok {
			if err := addEvent(ctx, tx, actionID, "compute_shelve_offload_instance", host, true); err != nil {
				return err
			}
			if err := finishAction(ctx, tx, actionID, ""); err != nil {
				return err
			}
		}
		return notifyHost(ctx, tx, host)
	})
}

// Unshelve places a SHELVED_OFFLOADED server again: the first candidate
// with room is claimed, the set is built there from the shelve snapshot
// with the same id and ports (so the same addresses), and the server is
// ACTIVE once that host reports it running.
func (s *Store) Unshelve(ctx context.Context, c Caller, id string, candidates []string, grace time.Duration) (*Server, error) {
	var out *Server
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		srv, err := getServer(ctx, tx, c.Scope, id, true)
		if err != nil {
			return err
		}
		if srv.Locked && !c.Admin {
			return apierr.Conflictf("Instance %s is locked", id)
		}
		if srv.TaskState.Valid {
			return conflict("unshelve", id, "task_state", srv.TaskState.String)
		}
		if !slices.Contains([]string{novastate.Shelved, novastate.ShelvedOffloaded}, srv.VMState) {
			return conflict("unshelve", id, "vm_state", srv.VMState)
		}
		target := ""
		for _, h := range candidates {
			ok, err := claimOn(ctx, tx, h, srv.VCPUs, srv.RAMMB, srv.DiskGB, grace)
			if err != nil {
				return err
			}
			if ok {
				target = h
				break
			}
		}
		if target == "" {
			return apierr.Invalidf("No valid host was found. There is no host with room for server %s.", id)
		}
		actionID, err := startAction(ctx, tx, id, "unshelve", c.RequestID, c.ProjectID, c.UserID)
		if err != nil {
			return err
		}
		if err := openEvent(ctx, tx, actionID, "compute_unshelve_instance", target); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE servers SET host = $2, task_state = $3, desired_state = $4,
			generation = generation + 1, updated_at = now() WHERE id = $1`,
			id, target, novastate.TaskUnshelving, schema.SetRunning); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE ports SET binding_host = $2 WHERE server_id = $1`, id, target); err != nil {
			return err
		}
		if err := notifyHost(ctx, tx, target); err != nil {
			return err
		}
		out, err = getServer(ctx, tx, c.Scope, id, false)
		return err
	})
	return out, err
}
