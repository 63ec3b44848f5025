package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"

	"berth/internal/apierr"
	"berth/region/novastate"
	"berth/schema"
)

// Transition is a server action that changes what the host should do.
type Transition struct {
	// Action is the instance action name, e.g. "stop".
	Action string
	// Verb names the API action in conflict messages, e.g. "stop".
	Verb string
	// VMStates are the vm_states the action is allowed in.
	VMStates []string
	// TaskState is the task the action puts in flight.
	TaskState string
	// Desired is the set state the host must converge to; "" keeps it.
	Desired string
	// Event is the instance action event the agent's work is recorded as.
	Event string
	// Mutate, when set, makes the action's own changes to the server in the
	// same transaction (a new image, a new flavor and its claim, …).
	Mutate func(ctx context.Context, tx *sqlx.Tx, srv *Server) error
	// NoHost lets the action run on a server with no host (reset-state).
	NoHost bool
	// Immediate finishes the action at once: VMState is set, no task stays
	// in flight and the agent is not involved (lock, reset-state).
	Immediate bool
	VMState   string
}

// Caller identifies who asks for an action, for the action record.
type Caller struct {
	Scope     Scope
	UserID    string
	ProjectID string
	RequestID string
	Admin     bool
}

// Act applies t to a server: 409 conflictingRequest when the server is not
// in a state t allows, is locked, or another task is in flight (one
// operation per server at a time); otherwise the task is recorded, the
// desired state and generation change, and the host's agent is woken, all
// in one transaction.
func (s *Store) Act(ctx context.Context, c Caller, id string, t Transition) (*Server, error) {
	var out *Server
	err := s.tx(ctx, func(tx *sqlx.Tx) error {
		srv, err := getServer(ctx, tx, c.Scope, id, true)
		if err != nil {
			return err
		}
		if srv.Locked && !c.Admin && t.Action != "unlock" {
			return apierr.Conflictf("Instance %s is locked", id)
		}
		if srv.TaskState.Valid && !t.Immediate {
			return conflict(t.Verb, id, "task_state", srv.TaskState.String)
		}
		if t.VMStates != nil && !slices.Contains(t.VMStates, srv.VMState) {
			return conflict(t.Verb, id, "vm_state", srv.VMState)
		}
		if !srv.Host.Valid && !t.NoHost {
			return conflict(t.Verb, id, "vm_state", srv.VMState)
		}
		actionID, err := startAction(ctx, tx, id, t.Action, c.RequestID, c.ProjectID, c.UserID)
		if err != nil {
			return err
		}
		if t.Mutate != nil {
			if err := t.Mutate(ctx, tx, srv); err != nil {
				return err
			}
		}
		if t.Immediate {
			if t.VMState != "" {
				if _, err := tx.ExecContext(ctx, `UPDATE servers SET vm_state = $2, task_state = NULL,
					updated_at = now() WHERE id = $1`, id, t.VMState); err != nil {
					return err
				}
			}
			if err := finishAction(ctx, tx, actionID, ""); err != nil {
				return err
			}
		} else {
			if err := openEvent(ctx, tx, actionID, t.Event, srv.Host.String); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE servers SET task_state = $2,
				desired_state = coalesce(NULLIF($3, ''), desired_state),
				generation = generation + 1, updated_at = now() WHERE id = $1`, id, t.TaskState, t.Desired); err != nil {
				return err
			}
			if err := notifyHost(ctx, tx, srv.Host.String); err != nil {
				return err
			}
		}
		out, err = getServer(ctx, tx, c.Scope, id, false)
		return err
	})
	return out, err
}

func conflict(verb, id, attr, state string) error {
	return apierr.Conflictf("Cannot '%s' instance %s while it is in %s %s", verb, id, attr, state)
}

// DeleteServer starts deleting a server. A server never placed on a host,
// or on a host that is down (silent past hostGrace), is gone at once —
// its quota and address are freed, and the host's agent reaps the set as
// an orphan when it returns; otherwise the task is "deleting" (the status
// stays ACTIVE or SHUTOFF, as Nova shows it) until the agent reports the
// set gone. Deleting a server already being deleted is a no-op.
func (s *Store) DeleteServer(ctx context.Context, c Caller, id string, hostGrace time.Duration) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		srv, err := getServer(ctx, tx, c.Scope, id, true)
		if err != nil {
			return err
		}
		if srv.TaskState.String == novastate.TaskDeleting {
			return nil
		}
		if srv.Locked && !c.Admin {
			return apierr.Conflictf("Instance %s is locked", id)
		}
		// Whatever was in flight is superseded by the delete.
		if open, ok, err := openActionOf(ctx, tx, id); err != nil {
			return err
		} else if ok {
			if err := finishAction(ctx, tx, open, "superseded by delete"); err != nil {
				return err
			}
		}
		actionID, err := startAction(ctx, tx, id, "delete", c.RequestID, c.ProjectID, c.UserID)
		if err != nil {
			return err
		}
		if !srv.Host.Valid {
			return finalizeDelete(ctx, tx, srv, actionID)
		}
		if down, err := hostDown(ctx, tx, srv.Host.String, hostGrace); err != nil {
			return err
		} else if down {
			if err := addEvent(ctx, tx, actionID, "compute_terminate_instance_host_down", srv.Host.String, true); err != nil {
				return err
			}
			if err := finalizeDelete(ctx, tx, srv, actionID); err != nil {
				return err
			}
			return notifyHost(ctx, tx, srv.Host.String)
		}
		if err := openEvent(ctx, tx, actionID, "compute_terminate_instance", srv.Host.String); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE servers SET task_state = $2, desired_state = $3,
			generation = generation + 1, updated_at = now() WHERE id = $1`,
			id, novastate.TaskDeleting, schema.SetDeleted); err != nil {
			return err
		}
		return notifyHost(ctx, tx, srv.Host.String)
	})
}

// finalizeDelete marks a server deleted, frees its ports and its claim,
// and closes the delete action.
func finalizeDelete(ctx context.Context, tx *sqlx.Tx, srv *Server, actionID int64) error {
	if _, err := tx.ExecContext(ctx, `UPDATE servers SET vm_state = $2, task_state = NULL, power_state = 0,
		deleted_at = now(), terminated_at = now(), updated_at = now() WHERE id = $1`,
		srv.ID, novastate.Deleted); err != nil {
		return err
	}
	// Its addresses leave the member lists of its ports' groups.
	if err := wakeGroupHosts(ctx, tx, []string{srv.ID}, nil); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM ports WHERE server_id = $1 AND auto_delete`, srv.ID); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE ports SET server_id = NULL, device_id = '', device_owner = '',
		binding_host = '', updated_at = now() WHERE server_id = $1`, srv.ID); err != nil {
		return err
	}
	if srv.Host.Valid {
		if err := releaseOn(ctx, tx, srv.Host.String, srv.VCPUs, srv.RAMMB, srv.DiskGB); err != nil {
			return err
		}
	}
	return finishAction(ctx, tx, actionID, "")
}

// DesiredForHost returns a host's index, every set placed on it and its
// tunnel peers: the other hosts with a tunnel endpoint that are up (not
// forced down, heard from within peerGrace; any registered host when
// peerGrace is 0). A host that departs (deleted, forced down or silent
// past peerGrace) leaves the others' peers, and their agents remove its
// tunnels.
func (s *Store) DesiredForHost(ctx context.Context, host string, peerGrace time.Duration) (*schema.DesiredState, error) {
	out := &schema.DesiredState{Sets: []schema.DesiredSet{}}
	err := s.readTx(ctx, func(tx *sqlx.Tx) error {
		if err := tx.GetContext(ctx, &out.Index, `SELECT desired_index FROM hosts WHERE name = $1`, host); err != nil {
			return apierr.NotFoundf("Host %s is not registered.", host)
		}
		var srvs []Server
		if err := tx.SelectContext(ctx, &srvs, `SELECT `+serverCols+` FROM servers
			WHERE host = $1 AND deleted_at IS NULL ORDER BY created_at, id`, host); err != nil {
			return err
		}
		var peers []struct {
			Host     string `db:"name"`
			TunnelIP string `db:"tunnel_ip"`
		}
		if err := tx.SelectContext(ctx, &peers, `SELECT name, tunnel_ip FROM hosts
			WHERE name <> $1 AND tunnel_ip <> '' AND ($2 <= 0
				OR (NOT forced_down AND last_heartbeat >= now() - make_interval(secs => $2)))
			ORDER BY name`, host, peerGrace.Seconds()); err != nil {
			return err
		}
		for _, p := range peers {
			out.Peers = append(out.Peers, schema.Peer{Host: p.Host, TunnelIP: p.TunnelIP})
		}
		ports, err := portsOf(ctx, tx, serverIDs(srvs))
		if err != nil {
			return err
		}
		var all []Port
		for _, ps := range ports {
			all = append(all, ps...)
		}
		setPorts, groups, err := desiredPorts(ctx, tx, all)
		if err != nil {
			return err
		}
		out.Groups = groups
		for _, srv := range srvs {
			ds := schema.DesiredSet{
				ID: srv.ID, ProjectID: srv.ProjectID, Name: srv.Name, Hostname: HostnameOf(srv.Name),
				State: srv.DesiredState, Generation: srv.Generation,
				Image:     schema.SetImage{ID: srv.ImageID, DockerImageID: srv.DockerImageID},
				Limits:    schema.SetLimits{VCPUs: srv.VCPUs, MemoryMB: srv.RAMMB, DiskGB: srv.DiskGB},
				Ports:     []schema.SetPort{},
				RebootSeq: srv.RebootSeq, RebootHard: srv.RebootHard,
				AuthorizedKeys: srv.AuthorizedKeys.String, UserData: srv.UserData.String,
				NetRaw: specIs(srv.ExtraSpecs, "berth:net_raw", "true"),
			}
			_ = json.Unmarshal(srv.Personality, &ds.Files)
			if len(srv.SetSpec) > 0 {
				_ = json.Unmarshal(srv.SetSpec, &ds.Containers)
			}
			bw := bandwidthOf(srv.ExtraSpecs)
			for _, p := range ports[srv.ID] {
				sp := setPorts[p.ID]
				sp.Bandwidth = bw
				ds.Ports = append(ds.Ports, sp)
			}
			out.Sets = append(out.Sets, ds)
		}
		return nil
	})
	return out, err
}

func prefixLen(cidr string) int {
	for i := len(cidr) - 1; i >= 0; i-- {
		if cidr[i] == '/' {
			n, _ := strconv.Atoi(cidr[i+1:])
			return n
		}
	}
	return 32
}

// HostnameOf makes a valid hostname from a server name, as Nova's
// sanitize_hostname does: lower case, [a-z0-9-], at most 63 characters.
func HostnameOf(name string) string {
	b := make([]byte, 0, len(name))
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			b = append(b, byte(r))
		case r >= 'A' && r <= 'Z':
			b = append(b, byte(r-'A'+'a'))
		case r == ' ' || r == '_' || r == '.':
			b = append(b, '-')
		}
	}
	for len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) > 63 {
		b = b[:63]
	}
	for len(b) > 0 && b[len(b)-1] == '-' {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return "server"
	}
	return string(b)
}

// Heartbeat records that a host's agent is alive.
func (s *Store) Heartbeat(ctx context.Context, host string) error {
	res, err := s.db.ExecContext(ctx, `UPDATE hosts SET last_heartbeat = now() WHERE name = $1`, host)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return apierr.NotFoundf("Host %s is not registered.", host)
	}
	return nil
}

// ApplyObserved folds what an agent observed of one set into the server's
// state, in its own transaction. It is how tasks finish: a build becomes
// ACTIVE (or ERROR with the agent's fault), a stop SHUTOFF, a start ACTIVE,
// and a delete completes once the set is gone. Reports for a generation
// older than the server's current one only refresh the power state, so a
// stale report can never finish a newer task.
func (s *Store) ApplyObserved(ctx context.Context, host string, obs schema.ObservedSet) error {
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		if !validUUID(obs.ID) {
			return nil // not a set of ours
		}
		var srv Server
		// id = $1 (not id::text) so the primary key index serves the
		// lookup: this runs for every set in every report of every host.
		err := tx.GetContext(ctx, &srv, `SELECT `+serverCols+` FROM servers
			WHERE id = $1 AND host = $2 AND deleted_at IS NULL FOR UPDATE`, obs.ID, host)
		if err != nil {
			return nil // not ours (any more): the agent reaps sets it has no desire for
		}
		power := novastate.PowerStateOf(obs.PowerState)
		if !obs.Exists {
			power = novastate.PowerNoState
		}
		containers, _ := json.Marshal(obs.Containers)
		if obs.Containers == nil {
			containers = []byte("[]")
		}
		// Only a change is written: agents report every set every few
		// seconds, and rewriting an unchanged row would renew its version
		// (xmin), which region's render cache goes by.
		if _, err := tx.ExecContext(ctx, `UPDATE servers SET power_state = $2, containers = $3,
			observed_generation = greatest(observed_generation, $4) WHERE id = $1
			AND (power_state, containers, observed_generation) IS DISTINCT FROM ($2, $3::jsonb, greatest(observed_generation, $4))`,
			srv.ID, power, containers, obs.Generation); err != nil {
			return err
		}
		if obs.Generation < srv.Generation {
			return nil
		}
		actionID, hasAction, err := openActionOf(ctx, tx, srv.ID)
		if err != nil {
			return err
		}
		finish := func(errMsg string) error {
			if !hasAction {
				return nil
			}
			return finishAction(ctx, tx, actionID, errMsg)
		}
		task := srv.TaskState.String

		if srv.DesiredState == schema.SetDeleted {
			if !obs.Exists && task == novastate.TaskDeleting {
				return finalizeDelete(ctx, tx, &srv, actionID)
			}
			return nil
		}
		if obs.Error != "" {
			if srv.VMState == novastate.Building {
				fault, _ := json.Marshal(FaultBody{Code: 500, Message: obs.Error, Created: s.now().UTC()})
				// The agent has undone the half-made set; keep it gone.
				if _, err := tx.ExecContext(ctx, `UPDATE servers SET vm_state = $2, task_state = NULL,
					fault = $3, desired_state = $4, generation = generation + 1, updated_at = now()
					WHERE id = $1`, srv.ID, novastate.Error, fault, schema.SetDeleted); err != nil {
					return err
				}
				if err := notifyHost(ctx, tx, host); err != nil {
					return err
				}
				return finish(obs.Error)
			}
			// A snapshot's task belongs to the region's commit call, which
			// finishes it (and a shelve offloads on it): an agent error
			// meanwhile must not end it under that call.
			if task != "" && task != novastate.TaskImageSnapshot {
				if _, err := tx.ExecContext(ctx, `UPDATE servers SET task_state = NULL, updated_at = now()
					WHERE id = $1`, srv.ID); err != nil {
					return err
				}
				return finish(obs.Error)
			}
			return nil
		}
		if vm, done := completes(&srv, &obs, power); done {
			if vm == novastate.Active && srv.VMState == novastate.Building {
				_, err = tx.ExecContext(ctx, `UPDATE servers SET vm_state = $2, task_state = NULL, progress = 100,
					launched_at = now(), updated_at = now() WHERE id = $1`, srv.ID, vm)
			} else {
				_, err = tx.ExecContext(ctx, `UPDATE servers SET vm_state = $2, task_state = NULL,
					updated_at = now() WHERE id = $1`, srv.ID, vm)
			}
			if err != nil {
				return err
			}
			if task == novastate.TaskResizeReverting {
				if err := releaseReverted(ctx, tx, &srv); err != nil {
					return err
				}
			}
			return finish("")
		}
		if task == "" && srv.DesiredState == schema.SetRunning && srv.VMState == novastate.Active &&
			(power == novastate.PowerShutdown || power == novastate.PowerCrashed) {
			// The set stopped behind Berth's back. Like Nova's power state
			// sync, take the normal stop path so the status is SHUTOFF and
			// the host keeps it stopped until someone starts it.
			actionID, err := startAction(ctx, tx, srv.ID, "stop", "req-sync-power-state", srv.ProjectID, "")
			if err != nil {
				return err
			}
			if err := addEvent(ctx, tx, actionID, "compute_sync_power_state", host, true); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE servers SET vm_state = $2, desired_state = $3,
				generation = generation + 1, updated_at = now() WHERE id = $1`,
				srv.ID, novastate.Stopped, schema.SetStopped); err != nil {
				return err
			}
			if err := finishAction(ctx, tx, actionID, ""); err != nil {
				return err
			}
			return notifyHost(ctx, tx, host)
		}
		return nil
	})
}

// completes decides whether an observation finishes the server's build or
// task, and the vm_state it finishes in. The caller has checked that the
// observation is of the current generation.
func completes(srv *Server, obs *schema.ObservedSet, power int) (vm string, done bool) {
	running := power == novastate.PowerRunning
	stopped := power == novastate.PowerShutdown || power == novastate.PowerCrashed
	paused := power == novastate.PowerPaused
	settled := vmFor(srv.DesiredState)
	switch {
	case srv.VMState == novastate.Building:
		return novastate.Active, running
	}
	switch srv.TaskState.String {
	case novastate.TaskPoweringOff:
		return novastate.Stopped, stopped
	case novastate.TaskPoweringOn, novastate.TaskUnpausing, novastate.TaskResuming:
		return novastate.Active, running
	case novastate.TaskPausing:
		return novastate.Paused, paused
	case novastate.TaskSuspending:
		return novastate.Suspended, paused
	case novastate.TaskRebooting, novastate.TaskRebootingHard:
		return novastate.Active, running && obs.RebootSeq >= srv.RebootSeq
	case novastate.TaskRebuilding:
		return settled, obs.DockerImageID == srv.DockerImageID && (running || stopped) && matches(settled, power)
	case novastate.TaskResizePrep, novastate.TaskResizeFinish:
		return novastate.Resized, limitsApplied(srv, obs) && matches(settled, power)
	case novastate.TaskResizeReverting:
		return settled, limitsApplied(srv, obs) && matches(settled, power)
	case novastate.TaskMigrating:
		// The report comes from the new host (ApplyObserved matches the
		// server's host), so the set runs there now.
		return settled, obs.Exists && matches(settled, power)
	case novastate.TaskUnshelving:
		// Built again from the shelve snapshot on its new host.
		return novastate.Active, obs.Exists && obs.DockerImageID == srv.DockerImageID && running
	}
	return "", false
}

// vmFor is the vm_state a set settles in for a desired state.
func vmFor(desired string) string {
	switch desired {
	case schema.SetStopped:
		return novastate.Stopped
	case schema.SetPaused:
		return novastate.Paused
	}
	return novastate.Active
}

func matches(vm string, power int) bool {
	switch vm {
	case novastate.Stopped:
		return power == novastate.PowerShutdown || power == novastate.PowerCrashed
	case novastate.Paused:
		return power == novastate.PowerPaused
	}
	return power == novastate.PowerRunning
}

// limitsApplied reports whether the host runs the set with the server's
// current flavor. A stopped set has nothing to apply limits to until it
// starts, so any report of it counts.
func limitsApplied(srv *Server, obs *schema.ObservedSet) bool {
	if obs.Limits == nil {
		return obs.PowerState == schema.PowerShutdown
	}
	return obs.Limits.VCPUs == srv.VCPUs && obs.Limits.MemoryMB == srv.RAMMB
}

// releaseReverted frees the claim of the flavor a revert went back from.
func releaseReverted(ctx context.Context, tx *sqlx.Tx, srv *Server) error {
	var from oldFlavor
	if err := json.Unmarshal(srv.OldFlavor, &from); err != nil {
		return fmt.Errorf("revert resize of %s: %w", srv.ID, err)
	}
	if err := releaseOn(ctx, tx, srv.Host.String, from.VCPUs, from.RAMMB, from.DiskGB); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `UPDATE servers SET old_flavor = NULL WHERE id = $1`, srv.ID)
	return err
}

// String describes a transition for logs.
func (t Transition) String() string { return fmt.Sprintf("%s→%s", t.Action, t.Desired) }
