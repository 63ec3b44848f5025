package reconcile

import (
	"context"
	"errors"
	"time"
)

// undoTimeout bounds the whole undo of a failed operation.
const undoTimeout = 2 * time.Minute

// reverter collects undo steps of a multi-step operation and runs them in
// reverse order unless the operation succeeds.
type reverter struct {
	steps []func(context.Context) error
	done  bool
}

func (r *reverter) add(step func(context.Context) error) { r.steps = append(r.steps, step) }

func (r *reverter) success() { r.done = true }

// fail runs the undo steps. It detaches from ctx's cancellation so that an
// agent shutting down mid-create still leaves nothing half-made behind.
func (r *reverter) fail(ctx context.Context) error {
	if r.done {
		return nil
	}
	r.done = true
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), undoTimeout)
	defer cancel()
	var errs []error
	for i := len(r.steps) - 1; i >= 0; i-- {
		if err := r.steps[i](ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
