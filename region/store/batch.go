package store

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"

	"berth/internal/apierr"
	"berth/internal/pgdb"
)

// PlacementBatch tunes how concurrent creates share transactions.
//
// Every create costs PostgreSQL a BEGIN and a COMMIT, a dozen statements
// and as many round trips; at 10,000 hosts that was ~2.3 ms of database
// CPU per placement, which caps two cores near 400 placements/s. So
// CreateServer does not run its own transaction: it queues the request,
// and a batcher commits the requests that arrived together in one
// transaction (group commit) whose statements each cover the whole batch
// (createBatch). Claims stay in SQL and are re-checked per host, so the
// batch never overcommits.
type PlacementBatch struct {
	// Max is the most creates committed in one transaction.
	Max int
	// Linger is how long a batch that is not full waits, after its first
	// create arrived, for more to join it. Under load the queue fills
	// while the previous batches commit, so a batch rarely waits the
	// whole time; a lone create waits it once.
	Linger time.Duration
	// InFlight is how many batches may be committing at once: one
	// collects while another commits, and PostgreSQL gets work for more
	// than one core.
	InFlight int
}

// DefaultPlacementBatch is what Open sets.
var DefaultPlacementBatch = PlacementBatch{Max: 32, Linger: 300 * time.Microsecond, InFlight: 3}

// batchTimeout bounds one batch's transaction, retries included. It is not
// the caller's context: a create whose caller gives up must not abort the
// others of its batch.
const batchTimeout = 60 * time.Second

// createReq is one CreateServer call waiting for its batch.
type createReq struct {
	ctx          context.Context
	ns           NewServer
	candidates   []string
	grace        time.Duration
	noHostReason string
	// rest, if set, ranks every candidate once candidates (the first
	// few) are all taken; it returns them and the "No valid host" detail.
	rest func(ctx context.Context) ([]string, string, error)
	done chan createResult // buffered: the batcher never blocks on it
}

type createResult struct {
	srv *Server
	err error
}

func (r *createReq) answer(srv *Server, err error) { r.done <- createResult{srv, err} }

// batcher collects concurrent creates and commits them in batches.
type batcher struct {
	s     *Store
	cfg   PlacementBatch
	queue chan *createReq
	stop  chan struct{}
	start sync.Once
	wg    sync.WaitGroup
	done  sync.Once

	// Transactions committed and creates in them (tests and the bench
	// read these).
	batches, members atomic.Int64
	// hook, when set (tests), runs in each batch's transaction before its
	// read-back; an error from it is the transaction's.
	hook func(ctx context.Context, tx *sqlx.Tx) error
}

func newBatcher(s *Store, cfg PlacementBatch) *batcher {
	cfg.Max = max(cfg.Max, 1)
	cfg.InFlight = max(cfg.InFlight, 1)
	return &batcher{s: s, cfg: cfg, queue: make(chan *createReq, 4*cfg.Max*cfg.InFlight), stop: make(chan struct{})}
}

// SetPlacementBatch changes how creates are batched; call it before the
// first CreateServer. Max 1 makes every create a transaction of its own.
func (s *Store) SetPlacementBatch(cfg PlacementBatch) {
	old := s.batcher
	s.batcher = newBatcher(s, cfg)
	old.close()
}

var errStoreClosed = apierr.Unavailablef("The service is shutting down. Try again.")

// submit queues r and waits for its answer or for ctx to end. A create
// whose caller went away before its batch began is left out of it; one
// that was in a batch already may still commit (as a transaction whose
// client vanished after COMMIT was sent does), and a retry with the same
// request id then finds it.
func (b *batcher) submit(ctx context.Context, r *createReq) (*Server, error) {
	b.start.Do(func() {
		for range b.cfg.InFlight {
			b.wg.Add(1)
			go b.run()
		}
	})
	select {
	case b.queue <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.stop:
		return nil, errStoreClosed
	}
	select {
	case res := <-r.done:
		return res.srv, res.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// PlacementStats reports how many create transactions the store committed
// and how many creates they held (their ratio is the mean batch size).
func (s *Store) PlacementStats() (batches, creates int64) {
	return s.batcher.batches.Load(), s.batcher.members.Load()
}

// close stops the workers after their current batch and answers whatever
// is still queued.
func (b *batcher) close() {
	b.done.Do(func() { close(b.stop) })
	b.wg.Wait()
	for {
		select {
		case r := <-b.queue:
			r.answer(nil, errStoreClosed)
		default:
			return
		}
	}
}

func (b *batcher) run() {
	defer b.wg.Done()
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	batch := make([]*createReq, 0, b.cfg.Max)
	for {
		batch = batch[:0]
		select {
		case <-b.stop:
			return
		case r := <-b.queue:
			batch = append(batch, r)
		}
		linger.Reset(b.cfg.Linger)
	fill:
		for len(batch) < b.cfg.Max {
			select {
			case r := <-b.queue:
				batch = append(batch, r)
			case <-linger.C:
				break fill
			}
		}
		linger.Stop()
		b.s.commitCreates(batch)
	}
}

// errRerun rolls a batch back because some members failed after rows of
// theirs were written; the rest run again without them.
var errRerun = errors.New("store: batch members failed")

// commitCreates places and records reqs, in as few transactions as it can,
// and answers each. A member that fails (quota, a missing group, a port
// that cannot be made, a duplicate id) gets its own error and the others
// are committed without it: the transaction is rolled back and run again
// without the failed members (their rows may have been written). A
// serialization failure or deadlock re-runs the whole batch (pgdb.Tx). An
// error that no member owns splits the batch, so it reaches only the
// create that caused it.
func (s *Store) commitCreates(reqs []*createReq) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	pending := make([]*createReq, 0, len(reqs))
	for _, r := range reqs {
		if err := r.ctx.Err(); err != nil {
			r.answer(nil, err)
			continue
		}
		pending = append(pending, r)
	}
	for len(pending) > 0 {
		// Two creates with one retry key in a batch: the later waits for
		// the next round, where it finds the first one's server (as it
		// would have waited on the key's row lock).
		batch, later := splitRetryKeys(pending)
		var out []createResult
		err := pgdb.Tx(ctx, s.db, nil, func(tx *sqlx.Tx) error {
			var err error
			out, err = s.createBatch(ctx, tx, batch)
			if err == nil {
				for _, o := range out {
					if o.err != nil {
						return errRerun
					}
				}
			}
			return err
		})
		switch {
		case errors.Is(err, errRerun):
			for i, o := range out {
				if o.err != nil {
					batch[i].answer(nil, o.err)
				} else {
					later = append(later, batch[i])
				}
			}
		case err != nil && len(batch) > 1 && !pgdb.Unavailable(err) && ctx.Err() == nil:
			for _, r := range batch {
				s.commitCreates([]*createReq{r})
			}
		case err != nil:
			for _, r := range batch {
				r.answer(nil, err)
			}
		default:
			s.batcher.batches.Add(1)
			s.batcher.members.Add(int64(len(batch)))
			for i, o := range out {
				batch[i].answer(o.srv, nil)
			}
		}
		pending = later
	}
}

// splitRetryKeys keeps the first create of each retry key in batch and
// puts the others in later.
func splitRetryKeys(reqs []*createReq) (batch, later []*createReq) {
	type key struct{ project, user, key string }
	seen := map[key]bool{}
	for _, r := range reqs {
		if r.ns.RetryKey != "" {
			k := key{r.ns.ProjectID, r.ns.UserID, r.ns.RetryKey}
			if seen[k] {
				later = append(later, r)
				continue
			}
			seen[k] = true
		}
		batch = append(batch, r)
	}
	return batch, later
}
