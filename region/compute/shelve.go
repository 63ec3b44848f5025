package compute

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"berth/internal/apierr"
	"berth/region/scheduler"
	"berth/region/store"
)

// shelve commits the app container into a snapshot image "<name>-shelved"
// and then offloads the server: the set leaves its host and the host's
// claim is released, the server keeps its id, ports and addresses
// (SHELVED_OFFLOADED). Nova's default shelved_offload_time is 0, so Nova
// offloads at once too; Berth has no SHELVED step in between.
func (a *API) shelve(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	if !isNullArg(arg) {
		return apierr.Invalidf("Invalid input for field/attribute shelve. Value: %s. None is required.", string(arg))
	}
	srv, err := a.cfg.Store.FindServer(r.Context(), c.Scope, id)
	if err != nil {
		return err
	}
	if srv.Locked && !c.Admin {
		return apierr.Conflictf("Instance %s is locked", id)
	}
	_, err = a.snapshot(r, c, id, "shelve", srv.Name+"-shelved", nil, map[string]string{"image_type": "snapshot"},
		func(ctx context.Context, _, imageID, dockerImageID string) {
			if err := a.cfg.Store.Offload(ctx, id, imageID, dockerImageID); err != nil {
				a.log.Error("shelve offload", "server_id", id, "image_id", imageID, "err", err, "request_id", c.RequestID)
				return
			}
			a.log.Info("server shelved", "server_id", id, "image_id", imageID, "request_id", c.RequestID)
		})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// unshelve schedules a SHELVED_OFFLOADED server again and builds it from
// its shelve snapshot with the same id and addresses.
func (a *API) unshelve(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	if !isNullArg(arg) {
		return apierr.Invalidf("Invalid input for field/attribute unshelve. Value: %s. None is required.", string(arg))
	}
	srv, err := a.cfg.Store.FindServer(r.Context(), c.Scope, id)
	if err != nil {
		return err
	}
	candidates, _, err := a.rank(r.Context(), scheduler.Request{VCPUs: srv.VCPUs, MemoryMB: srv.RAMMB,
		DiskGB: srv.DiskGB, Now: time.Now(), Grace: a.cfg.HostGrace})
	if err != nil {
		return err
	}
	moved, err := a.cfg.Store.Unshelve(r.Context(), c, id, candidates, a.cfg.HostGrace)
	if err != nil {
		return err
	}
	a.log.Info("server unshelving", "server_id", id, "host", moved.Host.String, "request_id", c.RequestID)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// shelveOffload applies to SHELVED servers only, which Berth never leaves
// a server in (it offloads at once): Nova's 409 for any other state.
func (a *API) shelveOffload(w http.ResponseWriter, r *http.Request, c store.Caller, id string, arg json.RawMessage) error {
	if !isNullArg(arg) {
		return apierr.Invalidf("Invalid input for field/attribute shelveOffload. Value: %s. None is required.", string(arg))
	}
	srv, err := a.cfg.Store.FindServer(r.Context(), c.Scope, id)
	if err != nil {
		return err
	}
	return apierr.Conflictf("Cannot 'shelveOffload' instance %s while it is in vm_state %s", id, srv.VMState)
}
