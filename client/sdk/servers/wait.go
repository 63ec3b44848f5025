package servers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	gservers "github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
)

// State is what a waiter saw at one poll.
type State struct {
	Status    string
	TaskState string
	VMState   string
	// Progress is Nova's 0-100 progress field.
	Progress int
	// Server is the full body of the poll (nil once the server is gone).
	Server *gservers.Server
}

func (s State) String() string {
	if s.TaskState != "" {
		return s.Status + " (" + s.TaskState + ")"
	}
	return s.Status
}

// WaitOpts say what Wait waits for.
type WaitOpts struct {
	// Target are the statuses that end the wait once no task is in flight,
	// e.g. ["ACTIVE"].
	Target []string
	// Gone waits until the server answers 404 instead (delete).
	Gone bool
	// Interval between polls; default 1s.
	Interval time.Duration
	// OnChange is called with the first state and every change of status,
	// task state or progress.
	OnChange func(State)
}

// ErrorStateError says the server went to ERROR while being waited for.
type ErrorStateError struct {
	ID string
	// Fault is the server's fault message ("" when it has none).
	Fault string
	Code  int
}

func (e *ErrorStateError) Error() string {
	if e.Fault == "" {
		return fmt.Sprintf("server %s went to ERROR", e.ID)
	}
	return fmt.Sprintf("server %s went to ERROR: %s", e.ID, e.Fault)
}

// Wait polls the server until it reaches one of opts.Target with no task
// in flight (or is gone, with opts.Gone). It returns an *ErrorStateError if
// the server goes to ERROR (while not deleting), and ctx's error when ctx
// ends first.
func Wait(ctx context.Context, c *gophercloud.ServiceClient, id string, opts WaitOpts) (*gservers.Server, error) {
	interval := opts.Interval
	if interval <= 0 {
		interval = time.Second
	}
	var last *State
	ended := func(ctx context.Context) error {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			seen := "nothing yet"
			if last != nil {
				seen = last.String()
			}
			return fmt.Errorf("timed out waiting for server %s (last seen %s)", id, seen)
		}
		return ctx.Err()
	}
	for {
		srv, err := gservers.Get(ctx, c, id).Extract()
		if err != nil {
			if opts.Gone && gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
				if opts.OnChange != nil {
					opts.OnChange(State{Status: "DELETED", Progress: 100})
				}
				return nil, nil
			}
			if ctx.Err() != nil {
				return nil, ended(ctx)
			}
			return nil, err
		}
		st := State{Status: srv.Status, TaskState: srv.TaskState, VMState: srv.VmState, Progress: srv.Progress, Server: srv}
		if last == nil || last.Status != st.Status || last.TaskState != st.TaskState || last.Progress != st.Progress {
			if opts.OnChange != nil {
				opts.OnChange(st)
			}
			last = &st
		}
		if !opts.Gone {
			if st.Status == "ERROR" {
				return srv, &ErrorStateError{ID: id, Fault: srv.Fault.Message, Code: srv.Fault.Code}
			}
			if st.TaskState == "" && slices.Contains(opts.Target, st.Status) {
				return srv, nil
			}
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return srv, ended(ctx)
		case <-t.C:
		}
	}
}
