package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"

	"berth/internal/apierr"
	"berth/region/novastate"
	"berth/schema"
)

// The server actions, with the vm_states Nova allows each in
// (nova/compute/api.py check_instance_state).
var (
	Stop = Transition{Action: "stop", Verb: "stop", VMStates: []string{novastate.Active, novastate.Error},
		TaskState: novastate.TaskPoweringOff, Desired: schema.SetStopped, Event: "compute_stop_instance"}
	Start = Transition{Action: "start", Verb: "start", VMStates: []string{novastate.Stopped},
		TaskState: novastate.TaskPoweringOn, Desired: schema.SetRunning, Event: "compute_start_instance"}
	Pause = Transition{Action: "pause", Verb: "pause", VMStates: []string{novastate.Active},
		TaskState: novastate.TaskPausing, Desired: schema.SetPaused, Event: "compute_pause_instance"}
	Unpause = Transition{Action: "unpause", Verb: "unpause", VMStates: []string{novastate.Paused},
		TaskState: novastate.TaskUnpausing, Desired: schema.SetRunning, Event: "compute_unpause_instance"}
	// Suspend freezes the set like pause; region remembers it as suspended.
	Suspend = Transition{Action: "suspend", Verb: "suspend", VMStates: []string{novastate.Active},
		TaskState: novastate.TaskSuspending, Desired: schema.SetPaused, Event: "compute_suspend_instance"}
	Resume = Transition{Action: "resume", Verb: "resume", VMStates: []string{novastate.Suspended},
		TaskState: novastate.TaskResuming, Desired: schema.SetRunning, Event: "compute_resume_instance"}
	Lock = Transition{Action: "lock", Verb: "lock", Immediate: true, NoHost: true,
		Mutate: setColumn("locked", true)}
	Unlock = Transition{Action: "unlock", Verb: "unlock", Immediate: true, NoHost: true,
		Mutate: setColumn("locked", false)}
)

func setColumn(col string, v any) func(ctx context.Context, tx *sqlx.Tx, srv *Server) error {
	return func(ctx context.Context, tx *sqlx.Tx, srv *Server) error {
		_, err := tx.ExecContext(ctx, `UPDATE servers SET `+col+` = $2 WHERE id = $1`, srv.ID, v)
		return err
	}
}

// Reboot restarts the set's app containers; the infra container, and with
// it the address, stays.
func Reboot(hard bool) Transition {
	t := Transition{Action: "reboot", Verb: "reboot", VMStates: []string{novastate.Active},
		TaskState: novastate.TaskRebooting, Desired: schema.SetRunning, Event: "compute_reboot_instance"}
	if hard {
		t.TaskState = novastate.TaskRebootingHard
		t.VMStates = []string{novastate.Active, novastate.Stopped, novastate.Paused, novastate.Suspended, novastate.Error}
	}
	t.Mutate = func(ctx context.Context, tx *sqlx.Tx, srv *Server) error {
		_, err := tx.ExecContext(ctx, `UPDATE servers SET reboot_seq = reboot_seq + 1, reboot_hard = $2
			WHERE id = $1`, srv.ID, hard)
		return err
	}
	return t
}

// Rebuild replaces the app container with one from a new image, keeping
// the server's id, address and volumes (Berth's "deploy").
func Rebuild(imageID, dockerImageID, name string) Transition {
	return Transition{Action: "rebuild", Verb: "rebuild",
		VMStates:  []string{novastate.Active, novastate.Stopped, novastate.Error},
		TaskState: novastate.TaskRebuilding, Event: "compute_rebuild_instance",
		Mutate: func(ctx context.Context, tx *sqlx.Tx, srv *Server) error {
			newName := srv.Name
			if name != "" {
				newName = name
			}
			// An ERROR server is rebuilt into a running one.
			desired := srv.DesiredState
			if srv.VMState == novastate.Error {
				desired = schema.SetRunning
			}
			_, err := tx.ExecContext(ctx, `UPDATE servers SET image_id = $2, docker_image_id = $3, name = $4,
				desired_state = $5, fault = NULL WHERE id = $1`, srv.ID, imageID, dockerImageID, newName, desired)
			return err
		}}
}

// oldFlavor is what a resize keeps to revert to.
type oldFlavor struct {
	ID         string          `json:"id"`
	VCPUs      int             `json:"vcpus"`
	RAMMB      int             `json:"ram_mb"`
	DiskGB     int             `json:"disk_gb"`
	ExtraSpecs json.RawMessage `json:"extra_specs,omitempty"`
}

// Resize applies a new flavor to the running set, live. The new flavor is
// claimed on the same host on top of the old one (both are held until the
// resize is confirmed or reverted, as Nova does); no room is 400 with
// Nova's "No valid host" message.
func Resize(f *Flavor) Transition {
	return Transition{Action: "resize", Verb: "resize", VMStates: []string{novastate.Active, novastate.Stopped},
		TaskState: novastate.TaskResizePrep, Event: "compute_resize_instance",
		Mutate: func(ctx context.Context, tx *sqlx.Tx, srv *Server) error {
			if f.ID == srv.FlavorID {
				return apierr.Invalidf("When resizing, instances must change flavor!")
			}
			if f.DiskGB < srv.DiskGB {
				return apierr.Invalidf("Resizing to a smaller disk is not supported.")
			}
			ok, err := claimOn(ctx, tx, srv.Host.String, f.VCPUs, f.RAMMB, f.DiskGB, 0)
			if err != nil {
				return err
			}
			if !ok {
				return apierr.Invalidf("No valid host was found. Host %s lacks room for flavor %s.", srv.Host.String, f.Name)
			}
			old, _ := json.Marshal(oldFlavor{ID: srv.FlavorID, VCPUs: srv.VCPUs, RAMMB: srv.RAMMB, DiskGB: srv.DiskGB,
				ExtraSpecs: srv.ExtraSpecs})
			_, err = tx.ExecContext(ctx, `UPDATE servers SET old_flavor = $2, flavor_id = $3, vcpus = $4,
				ram_mb = $5, disk_gb = $6, extra_specs = $7 WHERE id = $1`, srv.ID, old, f.ID, f.VCPUs, f.RAMMB, f.DiskGB,
				specsOf(f))
			return err
		}}
}

// ConfirmResize keeps the new flavor and frees the old one's claim.
var ConfirmResize = Transition{Action: "confirmResize", Verb: "confirmResize",
	VMStates: []string{novastate.Resized}, Immediate: true,
	Mutate: func(ctx context.Context, tx *sqlx.Tx, srv *Server) error {
		var old oldFlavor
		if err := json.Unmarshal(srv.OldFlavor, &old); err != nil {
			return fmt.Errorf("confirm resize of %s: old flavor: %w", srv.ID, err)
		}
		if err := releaseOn(ctx, tx, srv.Host.String, old.VCPUs, old.RAMMB, old.DiskGB); err != nil {
			return err
		}
		vm := novastate.Active
		if srv.DesiredState == schema.SetStopped {
			vm = novastate.Stopped
		}
		_, err := tx.ExecContext(ctx, `UPDATE servers SET old_flavor = NULL, vm_state = $2 WHERE id = $1`, srv.ID, vm)
		return err
	}}

// RevertResize goes back to the old flavor, live; the new flavor's claim
// is freed when the host has applied the old limits.
var RevertResize = Transition{Action: "revertResize", Verb: "revertResize",
	VMStates: []string{novastate.Resized}, TaskState: novastate.TaskResizeReverting, Event: "compute_revert_resize",
	Mutate: func(ctx context.Context, tx *sqlx.Tx, srv *Server) error {
		var old oldFlavor
		if err := json.Unmarshal(srv.OldFlavor, &old); err != nil {
			return fmt.Errorf("revert resize of %s: old flavor: %w", srv.ID, err)
		}
		cur, _ := json.Marshal(oldFlavor{ID: srv.FlavorID, VCPUs: srv.VCPUs, RAMMB: srv.RAMMB, DiskGB: srv.DiskGB,
			ExtraSpecs: srv.ExtraSpecs})
		specs := old.ExtraSpecs
		if len(specs) == 0 {
			specs = json.RawMessage("{}")
		}
		_, err := tx.ExecContext(ctx, `UPDATE servers SET old_flavor = $2, flavor_id = $3, vcpus = $4,
			ram_mb = $5, disk_gb = $6, extra_specs = $7 WHERE id = $1`, srv.ID, cur, old.ID, old.VCPUs, old.RAMMB,
			old.DiskGB, specs)
		return err
	}}

// ResetState is the admin's os-resetState: it sets vm_state and clears
// the task, touching nothing on the host.
func ResetState(vm string) Transition {
	return Transition{Action: "resetState", Verb: "os-resetState", Immediate: true, NoHost: true, VMState: vm}
}

// Snapshot marks a server as being imaged (createImage).
var Snapshot = Transition{Action: "createImage", Verb: "createImage",
	VMStates:  []string{novastate.Active, novastate.Stopped, novastate.Paused, novastate.Suspended},
	TaskState: novastate.TaskImageSnapshot, Event: "compute_snapshot_instance"}

// FinishTask ends a task region ran itself (a snapshot): it clears the
// task and closes the open action, failed when errMsg is set.
func (s *Store) FinishTask(ctx context.Context, id, task, errMsg string) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE servers SET task_state = NULL, updated_at = now()
			WHERE id = $1 AND task_state = $2 AND deleted_at IS NULL`, id, task)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		actionID, ok, err := openActionOf(ctx, tx, id)
		if err != nil || !ok {
			return err
		}
		return finishAction(ctx, tx, actionID, errMsg)
	})
}

// Move re-places a server on another host, keeping its id, ports and
// addresses: the new host is claimed and the old one released in one
// transaction, and both hosts are woken — the new one builds the set, the
// old one finds it no longer desired and removes its copy. migrate moves
// a server off a live host (task "migrating"); evacuate moves it off a
// host that is down (task "rebuilding", as Nova shows an evacuation).
func (s *Store) Move(ctx context.Context, c Caller, id string, candidates []string, evacuate bool, grace time.Duration) (*Server, error) {
	var out *Server
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		srv, err := getServer(ctx, tx, c.Scope, id, true)
		if err != nil {
			return err
		}
		verb, task := "migrate", novastate.TaskMigrating
		allowed := []string{novastate.Active, novastate.Stopped}
		if evacuate {
			verb, task = "evacuate", novastate.TaskRebuilding
		}
		if srv.TaskState.Valid {
			return conflict(verb, id, "task_state", srv.TaskState.String)
		}
		if !slices.Contains(allowed, srv.VMState) {
			return conflict(verb, id, "vm_state", srv.VMState)
		}
		if !srv.Host.Valid {
			return conflict(verb, id, "vm_state", srv.VMState)
		}
		old := srv.Host.String
		down, err := hostDown(ctx, tx, old, grace)
		if err != nil {
			return err
		}
		if evacuate && !down {
			return apierr.Invalidf("Compute service of %s is still in use.", old)
		}
		if !evacuate && down {
			return apierr.Conflictf("Compute service of %s is unavailable at this time.", old)
		}
		target := ""
		for _, h := range candidates {
			if h == old {
				continue
			}
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
			return apierr.Invalidf("No valid host was found. There is no other host with room for server %s.", id)
		}
		if err := releaseOn(ctx, tx, old, srv.VCPUs, srv.RAMMB, srv.DiskGB); err != nil {
			return err
		}
		actionID, err := startAction(ctx, tx, id, verb, c.RequestID, c.ProjectID, c.UserID)
		if err != nil {
			return err
		}
		if err := openEvent(ctx, tx, actionID, "compute_"+verb+"_instance", target); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE servers SET host = $2, task_state = $3, power_state = 0,
			generation = generation + 1, updated_at = now() WHERE id = $1`, id, target, task); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE ports SET binding_host = $2 WHERE server_id = $1`, id, target); err != nil {
			return err
		}
		for _, h := range []string{old, target} {
			if err := notifyHost(ctx, tx, h); err != nil {
				return err
			}
		}
		out, err = getServer(ctx, tx, c.Scope, id, false)
		return err
	})
	return out, err
}
