package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"sort"
	"sync"
	"time"

	"berth/hostagent/ledger"
	"berth/hostagent/observed"
	"berth/hostagent/setspec"
	"berth/schema"
)

// Config tunes a Reconciler.
type Config struct {
	// OrphanGrace is how long a set found on the host but absent from the
	// desired state waits before it is deleted.
	OrphanGrace time.Duration
	// RetryBackoff is the first wait before a failed operation of the same
	// generation is tried again; it doubles up to MaxRetryBackoff.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration
	// DryRunOrphans logs orphans that would be deleted instead of deleting.
	DryRunOrphans bool
	// MaxSteps bounds the operations one worker pass applies to a set
	// before it waits for the next sync.
	MaxSteps int
}

func (c *Config) defaults() {
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = 5 * time.Second
	}
	if c.MaxRetryBackoff <= 0 {
		c.MaxRetryBackoff = 5 * time.Minute
	}
	if c.MaxSteps <= 0 {
		c.MaxSteps = 8
	}
}

// ErrUnknownSet is returned for a set neither desired nor on the host.
var ErrUnknownSet = errors.New("unknown set")

// Reconciler converges a host's sets to the desired state: Sync diffs the
// whole host and hands sets that need work to their worker; one worker per
// set runs at a time, and a newer desired state for a busy set replaces the
// pending one instead of queueing behind it.
type Reconciler struct {
	rt     Runtime
	nw     Network
	img    Images
	ledger Ledger
	prober Prober
	log    *slog.Logger
	cfg    Config
	now    func() time.Time

	kick    chan struct{} // wakes Run to start queued workers
	changed chan struct{} // signalled after any status change
	resync  chan struct{} // asks the agent for a full Sync

	mu      sync.Mutex
	queue   []string // set IDs whose worker must be started
	sets    map[string]*setState
	desired map[string]schema.DesiredSet // from the last Sync
	active  sync.WaitGroup
}

type setState struct {
	running bool // a worker goroutine owns the set
	pending *work

	status    schema.ObservedSet
	hasStatus bool
	// workDone counts finished worker passes. Sync observes without the
	// lock; a worker that finished meanwhile has reported fresher facts
	// than Sync's, which must then not overwrite them.
	workDone uint64

	lastErr     string
	errGen      int64
	failures    int
	retryAt     time.Time
	orphanSince time.Time
	wake        *time.Timer // a held-back restart's due time
	wakeAt      time.Time
}

type work struct {
	desired *schema.DesiredSet // nil: not desired at all
}

// New returns a Reconciler. Call Run to let its workers run. prober may be
// nil (no TCP health probes).
func New(rt Runtime, nw Network, img Images, ledger Ledger, prober Prober, log *slog.Logger, cfg Config) *Reconciler {
	cfg.defaults()
	return &Reconciler{
		rt: rt, nw: nw, img: img, ledger: ledger, prober: prober, log: log, cfg: cfg,
		now:     time.Now,
		kick:    make(chan struct{}, 1),
		changed: make(chan struct{}, 1),
		resync:  make(chan struct{}, 1),
		sets:    map[string]*setState{},
		desired: map[string]schema.DesiredSet{},
	}
}

// Changed is signalled (coalesced) whenever a set's reported status changes.
func (r *Reconciler) Changed() <-chan struct{} { return r.changed }

// Resync is signalled (coalesced) when the reconciler wants a full Sync
// soon: a restart backoff ran out, Docker reported an event, a probe
// result changed.
func (r *Reconciler) Resync() <-chan struct{} { return r.resync }

// RequestSync asks for a full Sync soon (see Resync).
func (r *Reconciler) RequestSync() {
	select {
	case r.resync <- struct{}{}:
	default:
	}
}

// Run starts workers for dispatched sets until ctx ends, then waits for the
// running workers to finish their current step.
func (r *Reconciler) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			r.active.Wait()
			r.mu.Lock()
			for _, st := range r.sets {
				if st.wake != nil {
					st.wake.Stop()
				}
			}
			r.mu.Unlock()
			return nil
		case <-r.kick:
			r.mu.Lock()
			ids := r.queue
			r.queue = nil
			r.active.Add(len(ids))
			r.mu.Unlock()
			for _, id := range ids {
				go func() {
					defer r.active.Done()
					r.runWorker(ctx, id)
				}()
			}
		}
	}
}

// Sync runs one level-triggered pass: list everything Berth owns on the
// host, diff it against desired and dispatch every set that needs work.
// It also refreshes the status of idle sets, so drift is reported.
func (r *Reconciler) Sync(ctx context.Context, desired []schema.DesiredSet) error {
	r.mu.Lock()
	done := make(map[string]uint64, len(r.sets))
	for id, st := range r.sets {
		done[id] = st.workDone
	}
	r.mu.Unlock()
	octx := ctx
	if pn, ok := r.nw.(passNetwork); ok {
		octx = pn.Pass(ctx)
	}
	all, err := r.observe(octx, "", desired)
	if err != nil {
		return err
	}
	want := map[string]*schema.DesiredSet{}
	for i := range desired {
		want[desired[i].ID] = &desired[i]
	}
	applied := map[string]ledger.Entry{}
	for _, d := range desired {
		applied[d.ID] = r.applied(d.ID, all[d.ID])
	}
	for id, o := range all {
		applied[id] = r.applied(id, o)
	}
	now := r.now()
	actions := Diff(desired, all, applied, now)
	r.track(desired, all)

	r.mu.Lock()
	defer r.mu.Unlock()
	r.desired = make(map[string]schema.DesiredSet, len(desired))
	for _, d := range desired {
		r.desired[d.ID] = d
	}
	notify := false
	seen := map[string]bool{}
	for _, a := range actions {
		seen[a.SetID] = true
		d, o := want[a.SetID], all[a.SetID]
		st := r.state(a.SetID)
		if d != nil {
			st.orphanSince = time.Time{}
		}
		idle := func() {
			// Not while a worker owns the set, nor after one finished
			// since this pass observed: its report is newer.
			if !st.running && st.pending == nil && st.workDone == done[a.SetID] {
				notify = r.setStatusLocked(st, r.statusLocked(a.SetID, st, d, o, applied[a.SetID])) || notify
			}
		}
		switch {
		case a.Op == OpNone:
			idle()
			r.wakeLocked(a.SetID, st, a.RetryAt)
			if d != nil && d.Generation > applied[a.SetID].Generation {
				r.dispatchLocked(a.SetID, d) // record the generation
			}
			continue
		case a.Orphan:
			idle()
			if st.orphanSince.IsZero() {
				st.orphanSince = now
			}
			if now.Sub(st.orphanSince) < r.cfg.OrphanGrace {
				continue
			}
			if r.cfg.DryRunOrphans {
				r.log.Info("dry run: would delete orphan set", "set_id", a.SetID)
				continue
			}
		case r.backingOffLocked(st, d, now):
			idle()
			continue
		}
		// Sets that need work are reported by their worker once it has
		// acted: a transient state (a set stopped by a Docker restart that
		// is about to start again) never reaches region.
		r.dispatchLocked(a.SetID, d)
	}
	for id, st := range r.sets {
		if !seen[id] && !st.running && st.pending == nil {
			if st.wake != nil {
				st.wake.Stop()
			}
			delete(r.sets, id)
			if err := r.ledger.Forget(id); err != nil {
				r.log.Warn("forget set", "set_id", id, "err", err)
			}
			notify = true
		}
	}
	if notify {
		r.notify()
	}
	return nil
}

// backingOffLocked: the set's last operation failed for this generation
// and its retry time has not come.
func (r *Reconciler) backingOffLocked(st *setState, d *schema.DesiredSet, now time.Time) bool {
	return st.failures > 0 && d != nil && st.errGen == d.Generation && now.Before(st.retryAt)
}

// wakeLocked arranges a Resync at t (zero: none).
func (r *Reconciler) wakeLocked(id string, st *setState, t time.Time) {
	if t.IsZero() || (!st.wakeAt.IsZero() && !t.Before(st.wakeAt) && st.wakeAt.After(r.now())) {
		return
	}
	if st.wake != nil {
		st.wake.Stop()
	}
	st.wakeAt = t
	st.wake = time.AfterFunc(max(t.Sub(r.now()), 0)+10*time.Millisecond, r.RequestSync)
}

// track hands the TCP probes of running members to the prober.
func (r *Reconciler) track(desired []schema.DesiredSet, all map[string]*observed.Set) {
	if r.prober == nil {
		return
	}
	var targets []ProbeTarget
	for i := range desired {
		d := &desired[i]
		o := all[d.ID]
		if o == nil || !running(o.Infra) || o.Infra.Pid <= 0 {
			continue
		}
		for _, m := range setspec.Members(d) {
			c := o.Member(m.Name)
			if m.Health == nil || m.Health.TCPPort == 0 || !running(c) || c.Spec != m.Spec {
				continue
			}
			iv, to, retries := setspec.ProbeTimings(m.Health)
			targets = append(targets, ProbeTarget{
				Key: c.ID, Pid: o.Infra.Pid, Port: m.Health.TCPPort,
				Interval: time.Duration(iv) * time.Second, Timeout: time.Duration(to) * time.Second, Retries: retries,
			})
		}
	}
	r.prober.Track(targets)
}

// Report returns the latest status of every set the agent knows about.
func (r *Reconciler) Report() schema.HostReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := schema.HostReport{Sets: []schema.ObservedSet{}}
	for _, id := range slices.Sorted(maps.Keys(r.sets)) {
		if st := r.sets[id]; st.hasStatus {
			rep.Sets = append(rep.Sets, st.status)
		}
	}
	return rep
}

// SetView is one set as observed now.
type SetView struct {
	// Observed is what exists of the set (never nil).
	Observed *observed.Set
	// Desired is its last desired state; nil when region no longer lists it.
	Desired *schema.DesiredSet
	// Status is the set's report entry as of this observation.
	Status schema.ObservedSet
}

// Lookup observes one set now, or returns ErrUnknownSet for a set neither
// desired nor on the host.
func (r *Reconciler) Lookup(ctx context.Context, id string) (SetView, error) {
	v, _, err := r.lookup(ctx, id)
	return v, err
}

func (r *Reconciler) lookup(ctx context.Context, id string) (SetView, ledger.Entry, error) {
	r.mu.Lock()
	d, known := r.desired[id]
	r.mu.Unlock()
	var want []schema.DesiredSet
	var dp *schema.DesiredSet
	if known {
		want, dp = []schema.DesiredSet{d}, &d
	}
	obs, err := r.observe(ctx, id, want)
	if err != nil {
		return SetView{}, ledger.Entry{}, err
	}
	o := obs[id]
	if !known && !o.Exists() {
		return SetView{}, ledger.Entry{}, fmt.Errorf("set %s: %w", id, ErrUnknownSet)
	}
	if o == nil {
		o = &observed.Set{ID: id, Members: map[string]*observed.Container{}}
	}
	applied := r.applied(id, o)
	r.mu.Lock()
	s := r.statusLocked(id, r.state(id), dp, o, applied)
	r.mu.Unlock()
	return SetView{Observed: o, Desired: dp, Status: s}, applied, nil
}

// SyncSet re-observes one set now, reports it (to region too, through
// Changed), hands it to its worker if it needs work, and returns the
// status.
func (r *Reconciler) SyncSet(ctx context.Context, id string) (schema.ObservedSet, error) {
	r.mu.Lock()
	var done uint64
	if st, ok := r.sets[id]; ok {
		done = st.workDone
	}
	r.mu.Unlock()
	v, applied, err := r.lookup(ctx, id)
	if err != nil {
		return schema.ObservedSet{}, err
	}
	a := Decide(v.Desired, v.Observed, applied, r.now())
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.state(id)
	if !st.running && st.pending == nil && st.workDone == done { // see Sync
		r.setStatusLocked(st, v.Status)
	}
	r.notify()
	if a.Op != OpNone && !a.Orphan && !r.backingOffLocked(st, v.Desired, r.now()) {
		r.dispatchLocked(id, v.Desired)
	}
	return v.Status, nil
}

func (r *Reconciler) statusLocked(id string, st *setState, d *schema.DesiredSet, o *observed.Set, applied ledger.Entry) schema.ObservedSet {
	var health func(string) string
	if r.prober != nil {
		health = r.prober.Health
	}
	return Status(id, d, o, applied, r.reportedGen(st, d, applied.Generation), st.lastErr, health)
}

func (r *Reconciler) state(id string) *setState {
	st, ok := r.sets[id]
	if !ok {
		st = &setState{}
		r.sets[id] = st
	}
	return st
}

func (r *Reconciler) dispatchLocked(id string, d *schema.DesiredSet) {
	st := r.state(id)
	var cp *schema.DesiredSet
	if d != nil {
		c := *d
		cp = &c
	}
	st.pending = &work{desired: cp}
	if st.running {
		return // the busy worker picks up the newest pending work next
	}
	st.running = true
	r.queue = append(r.queue, id)
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Reconciler) notify() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// setStatusLocked stores s and reports whether it differs from before.
func (r *Reconciler) setStatusLocked(st *setState, s schema.ObservedSet) bool {
	changed := !st.hasStatus || !reflect.DeepEqual(st.status, s)
	st.status, st.hasStatus = s, true
	return changed
}

// reportedGen is the generation a status speaks for: the failed one while
// an error stands, else the applied one.
func (r *Reconciler) reportedGen(st *setState, d *schema.DesiredSet, applied int64) int64 {
	if st.lastErr != "" && d != nil {
		return st.errGen
	}
	return applied
}

// applied is the ledger's entry, with the generation raised to the
// containers' creation generation when the ledger lost it.
func (r *Reconciler) applied(id string, o *observed.Set) ledger.Entry {
	e := r.ledger.Get(id)
	if o != nil && o.Generation() > e.Generation {
		e.Generation = o.Generation()
	}
	return e
}

func (r *Reconciler) runWorker(ctx context.Context, id string) {
	for {
		r.mu.Lock()
		st := r.state(id)
		w := st.pending
		st.pending = nil
		if w == nil || ctx.Err() != nil {
			st.running = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
		r.process(ctx, id, w.desired)
	}
}

// process re-observes one set, decides on fresh facts and acts, step by
// step, until the set needs nothing more (or MaxSteps).
func (r *Reconciler) process(ctx context.Context, id string, d *schema.DesiredSet) {
	log := r.log.With("set_id", id)
	var want []schema.DesiredSet
	if d != nil {
		want = []schema.DesiredSet{*d}
	}
	var (
		opErr   error
		acted   bool
		last    Action
		entry   ledger.Entry
		retryAt time.Time
		// settled is the observation that found nothing left to do, when
		// the loop ended on it: it is what the set is, and the report
		// below uses it instead of observing again.
		settled map[string]*observed.Set
	)
	if d != nil {
		opErr = setspec.Validate(d)
	}
	for step := 0; opErr == nil && step < r.cfg.MaxSteps; step++ {
		obs, err := r.observe(ctx, id, want)
		if err != nil {
			log.Warn("observe set", "err", err)
			return // the next sync tries again
		}
		o := obs[id]
		entry = r.applied(id, o)
		a := Decide(d, o, entry, r.now())
		if step == 0 {
			r.mu.Lock()
			backoff := r.backingOffLocked(r.state(id), d, r.now())
			r.mu.Unlock()
			if backoff {
				return
			}
		}
		if a.Op == OpNone {
			retryAt = a.RetryAt
			settled = obs
			break
		}
		if step > 0 && a.Op == last.Op && slices.Equal(a.Targets, last.Targets) {
			// The step did not stick (a container that exits at once):
			// report what is there; region or a restart policy decides.
			log.Info("set did not settle", "op", a.Op, "reason", a.Reason)
			break
		}
		start := r.now()
		log.Info("reconcile set", "op", a.Op, "reason", a.Reason, "targets", a.Targets, "generation", genOf(d))
		opErr = r.apply(ctx, a, d, o, &entry)
		if opErr != nil {
			log.Error("reconcile set failed", "op", a.Op, "err", opErr, "duration", r.now().Sub(start))
			break
		}
		log.Info("reconciled set", "op", a.Op, "duration", r.now().Sub(start))
		acted, last = true, a
		if d != nil {
			if err := r.ledger.Put(id, entry); err != nil {
				log.Warn("record applied state", "err", err)
			}
		}
	}
	if opErr == nil && d != nil {
		entry = r.applied(id, nil)
		if d.Generation > entry.Generation {
			entry.Generation = d.Generation
		}
		if d.State == schema.SetStopped && d.RebootSeq > entry.RebootSeq {
			entry.RebootSeq = d.RebootSeq // nothing runs: nothing to reboot
		}
		if err := r.ledger.Put(id, entry); err != nil {
			log.Warn("record applied state", "err", err)
		}
	}
	if opErr == nil && d == nil && acted && last.Op == OpDelete {
		if err := r.ledger.Forget(id); err != nil {
			log.Warn("forget set", "err", err)
		}
	}

	after, obsErr := settled, error(nil)
	if after == nil {
		after, obsErr = r.observe(ctx, id, want)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.state(id)
	st.workDone++
	switch {
	case opErr != nil && ctx.Err() != nil:
		// Shutting down: not the set's fault; the next agent run retries.
	case opErr != nil:
		st.lastErr = opErr.Error()
		st.errGen = genOf(d)
		st.failures++
		st.retryAt = r.now().Add(r.backoff(st.failures))
	case acted || (d != nil && st.errGen != d.Generation):
		st.lastErr, st.errGen, st.failures = "", 0, 0
	}
	r.wakeLocked(id, st, retryAt)
	if obsErr == nil {
		if r.setStatusLocked(st, r.statusLocked(id, st, d, after[id], r.applied(id, after[id]))) {
			r.notify()
		}
	}
}

func (r *Reconciler) backoff(failures int) time.Duration {
	b := r.cfg.RetryBackoff
	for i := 1; i < failures && b < r.cfg.MaxRetryBackoff; i++ {
		b *= 2
	}
	return min(b, r.cfg.MaxRetryBackoff)
}

func genOf(d *schema.DesiredSet) int64 {
	if d == nil {
		return 0
	}
	return d.Generation
}

// observe lists containers, volumes and ports (of one set, or all when
// setID is "") and checks, for each running infra, whether its desired
// ports are attached.
func (r *Reconciler) observe(ctx context.Context, setID string, desired []schema.DesiredSet) (map[string]*observed.Set, error) {
	cs, err := r.rt.List(ctx, setID)
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	vs, err := r.rt.ListVolumes(ctx, setID)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	ps, err := r.nw.List(ctx, setID)
	if err != nil {
		return nil, fmt.Errorf("list ports: %w", err)
	}
	sets := observed.Group(cs, ps, vs...)
	for _, d := range desired {
		o := sets[d.ID]
		if o == nil || !running(o.Infra) || o.Infra.Pid <= 0 {
			continue
		}
		for i, p := range d.Ports {
			op := o.Port(p.ID)
			if op == nil {
				continue
			}
			ok, err := r.nw.Attached(ctx, i, p, o.Infra.Pid)
			if err != nil {
				return nil, fmt.Errorf("check port %s: %w", p.ID, err)
			}
			op.Attached = ok
			if ok && op.InSwitch {
				if op.Policy, err = r.nw.Policy(ctx, i, p, o.Infra.Pid); err != nil {
					return nil, fmt.Errorf("check policy of port %s: %w", p.ID, err)
				}
			}
		}
	}
	return sets, nil
}

// apply carries out one action; it updates entry with what it applied.
func (r *Reconciler) apply(ctx context.Context, a Action, d *schema.DesiredSet, o *observed.Set, entry *ledger.Entry) error {
	switch a.Op {
	case OpCreate:
		if err := r.create(ctx, d, o); err != nil {
			return err
		}
		if d.State != schema.SetStopped {
			entry.RebootSeq = max(entry.RebootSeq, d.RebootSeq)
		}
		return nil
	case OpReplace:
		return r.replace(ctx, d, o, a.Targets)
	case OpStart:
		whole := !running(o.Infra)
		if err := r.start(ctx, d, o); err != nil {
			return err
		}
		if whole {
			entry.RebootSeq = max(entry.RebootSeq, d.RebootSeq)
		}
		return nil
	case OpRestart:
		return r.restart(ctx, d, o, a.Targets, entry)
	case OpUpdate:
		return r.update(ctx, d, o, a.Targets)
	case OpNetwork:
		return r.network(ctx, d, o)
	case OpReboot:
		if err := r.reboot(ctx, d, o); err != nil {
			return err
		}
		entry.RebootSeq = d.RebootSeq
		return nil
	case OpPause:
		return r.pause(ctx, d, o)
	case OpUnpause:
		return r.unpause(ctx, o)
	case OpStop:
		return r.stop(ctx, d, o)
	case OpDelete:
		return r.teardown(ctx, d, o, true)
	case OpNone:
		return nil
	default:
		return fmt.Errorf("unknown op %q", a.Op)
	}
}

func grace(d *schema.DesiredSet) time.Duration {
	if d == nil || d.StopGraceSeconds <= 0 {
		return 0
	}
	return time.Duration(d.StopGraceSeconds) * time.Second
}

// ensureImages makes the images of the named members (all when names is
// nil) available, each once.
func (r *Reconciler) ensureImages(ctx context.Context, ms []setspec.Member, names []string) error {
	seen := map[string]bool{}
	for _, m := range ms {
		if names != nil && !slices.Contains(names, m.Name) {
			continue
		}
		if seen[m.Image.DockerImageID] {
			continue
		}
		seen[m.Image.DockerImageID] = true
		if err := r.img.Ensure(ctx, m.Image); err != nil {
			return fmt.Errorf("image %s: %w", m.Image.ID, err)
		}
	}
	return nil
}

// create builds the set from nothing. Leftover containers and ports are
// removed first (set volumes are kept: they hold data); if a step fails,
// everything made so far is undone.
func (r *Reconciler) create(ctx context.Context, d *schema.DesiredSet, o *observed.Set) (err error) {
	ms := setspec.Members(d)
	if err := r.ensureImages(ctx, ms, nil); err != nil {
		return err
	}
	if o.Exists() {
		if err := r.teardown(ctx, d, o, false); err != nil {
			return fmt.Errorf("remove leftovers: %w", err)
		}
	}
	var rv reverter
	defer func() {
		if err != nil {
			if uerr := rv.fail(ctx); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undo: %w", uerr))
			}
		}
	}()
	infraID, err := r.rt.CreateInfra(ctx, *d)
	if err != nil {
		return fmt.Errorf("create infra container: %w", err)
	}
	rv.add(func(ctx context.Context) error { return r.rt.Remove(ctx, infraID) })
	if err := r.ensureVolumes(ctx, d, &rv); err != nil {
		return err
	}
	ids := map[string]string{}
	for _, m := range ms {
		id, err := r.rt.CreateMember(ctx, *d, m, infraID)
		if err != nil {
			return fmt.Errorf("create %s container: %w", m.Name, err)
		}
		rv.add(func(ctx context.Context) error { return r.rt.Remove(ctx, id) })
		ids[m.Name] = id
	}
	if d.State != schema.SetStopped {
		if err := r.startContainers(ctx, d, infraID, ids, nil, &rv); err != nil {
			return err
		}
	}
	rv.success()
	return nil
}

// ensureVolumes makes the set's volumes; rv (may be nil) undoes the ones
// made here.
func (r *Reconciler) ensureVolumes(ctx context.Context, d *schema.DesiredSet, rv *reverter) error {
	for _, v := range setspec.VolumeNames(d) {
		created, err := r.rt.EnsureVolume(ctx, *d, v)
		if err != nil {
			return fmt.Errorf("volume %s: %w", v, err)
		}
		if created && rv != nil {
			vols, err := r.rt.ListVolumes(ctx, d.ID)
			if err != nil {
				return err
			}
			for _, x := range vols {
				if x.Volume == v {
					name := x.Name
					rv.add(func(ctx context.Context) error { return r.rt.RemoveVolume(ctx, name) })
				}
			}
		}
	}
	return nil
}

// startContainers starts infra, plumbs every desired port into its netns
// and starts the members in ids that do not run. plugged lists ports
// already attached to this infra netns.
func (r *Reconciler) startContainers(ctx context.Context, d *schema.DesiredSet, infraID string, ids map[string]string, plugged map[string]bool, rv *reverter) error {
	if err := r.rt.Start(ctx, infraID); err != nil {
		return fmt.Errorf("start infra container: %w", err)
	}
	infra, err := r.rt.Inspect(ctx, infraID)
	if err != nil {
		return fmt.Errorf("inspect infra container: %w", err)
	}
	if !infra.Running || infra.Pid <= 0 {
		return fmt.Errorf("infra container %s is %s after start", infraID, infra.State)
	}
	for i, p := range d.Ports {
		if plugged[p.ID] {
			continue
		}
		if err := r.nw.Plumb(ctx, d.ID, i, p, infra.Pid); err != nil {
			return fmt.Errorf("plumb port %s: %w", p.ID, err)
		}
		if rv != nil {
			port := observed.Port{SetID: d.ID, PortID: p.ID}
			rv.add(func(ctx context.Context) error { return r.nw.Unplumb(ctx, port) })
		}
	}
	for _, m := range setspec.Members(d) {
		id, ok := ids[m.Name]
		if !ok {
			continue
		}
		if err := r.startMember(ctx, m, id); err != nil {
			return err
		}
	}
	return nil
}

// startMember starts one member; the primary app then runs its user data
// (once per container; a failure to launch it is logged, not fatal).
func (r *Reconciler) startMember(ctx context.Context, m setspec.Member, id string) error {
	if err := r.rt.Start(ctx, id); err != nil {
		return fmt.Errorf("start %s container: %w", m.Name, err)
	}
	if m.Primary {
		if err := r.rt.RunUserData(ctx, id); err != nil {
			r.log.Warn("run user data", "container_id", id, "err", err)
		}
	}
	return nil
}

// start brings a complete set to running and repairs its plumbing. Members
// running without their infra have lost their network; they are
// restarted inside a fresh infra netns.
func (r *Reconciler) start(ctx context.Context, d *schema.DesiredSet, o *observed.Set) error {
	ms := setspec.Members(d)
	infraUp := running(o.Infra)
	ids := map[string]string{}
	for _, m := range ms {
		c := o.Member(m.Name)
		if c == nil {
			continue
		}
		if c.Running && !infraUp {
			if c.Paused {
				if err := r.rt.Unpause(ctx, c.ID); err != nil {
					return fmt.Errorf("unpause %s container: %w", m.Name, err)
				}
			}
			if err := r.rt.Stop(ctx, c.ID, grace(d)); err != nil {
				return fmt.Errorf("stop %s container: %w", m.Name, err)
			}
			ids[m.Name] = c.ID
		} else if !c.Running {
			ids[m.Name] = c.ID
		}
	}
	want := map[string]bool{}
	for _, p := range d.Ports {
		want[p.ID] = true
	}
	for _, p := range o.Ports {
		if !want[p.PortID] {
			if err := r.nw.Unplumb(ctx, p); err != nil {
				return fmt.Errorf("unplumb port %s: %w", p.PortID, err)
			}
		}
	}
	plugged := map[string]bool{}
	if infraUp {
		for _, p := range o.Ports {
			plugged[p.PortID] = p.InSwitch && p.LinkPresent && p.Attached
		}
	}
	return r.startContainers(ctx, d, o.Infra.ID, ids, plugged, nil)
}

// replace recreates the target members inside the running infra (a
// rebuild keeps IP, MAC, port and volumes), removes containers no longer
// desired and duplicates.
func (r *Reconciler) replace(ctx context.Context, d *schema.DesiredSet, o *observed.Set, targets []string) error {
	ms := setspec.Members(d)
	if err := r.ensureImages(ctx, ms, targets); err != nil {
		return err
	}
	for _, c := range o.Extra {
		if err := r.removeContainer(ctx, d, c); err != nil {
			return err
		}
	}
	desired := map[string]setspec.Member{}
	for _, m := range ms {
		desired[m.Name] = m
	}
	for _, t := range targets {
		if old := o.Member(t); old != nil {
			if err := r.removeContainer(ctx, d, *old); err != nil {
				return err
			}
		}
	}
	if err := r.ensureVolumes(ctx, d, nil); err != nil {
		return err
	}
	for _, m := range ms {
		if !slices.Contains(targets, m.Name) {
			continue
		}
		id, err := r.rt.CreateMember(ctx, *d, m, o.Infra.ID)
		if err != nil {
			return fmt.Errorf("create %s container: %w", m.Name, err)
		}
		if d.State != schema.SetStopped && running(o.Infra) {
			if err := r.startMember(ctx, m, id); err != nil {
				return err
			}
		}
	}
	return nil
}

func (r *Reconciler) removeContainer(ctx context.Context, d *schema.DesiredSet, c observed.Container) error {
	if c.Paused {
		if err := r.rt.Unpause(ctx, c.ID); err != nil {
			return fmt.Errorf("unpause %s container: %w", c.Member, err)
		}
	}
	if c.Running {
		if err := r.rt.Stop(ctx, c.ID, grace(d)); err != nil {
			return fmt.Errorf("stop %s container: %w", c.Member, err)
		}
	}
	if err := r.rt.Remove(ctx, c.ID); err != nil {
		return fmt.Errorf("remove %s container: %w", c.Member, err)
	}
	return nil
}

// restart starts exited members by their restart policy and counts it.
func (r *Reconciler) restart(ctx context.Context, d *schema.DesiredSet, o *observed.Set, targets []string, entry *ledger.Entry) error {
	for _, m := range setspec.Members(d) {
		c := o.Member(m.Name)
		if c == nil || !slices.Contains(targets, m.Name) {
			continue
		}
		streak := EffectiveStreak(c, entry.Restarts[m.Name])
		if err := r.startMember(ctx, m, c.ID); err != nil {
			return err
		}
		if entry.Restarts == nil {
			entry.Restarts = map[string]ledger.Restarts{}
		}
		rs := entry.Restarts[m.Name]
		rs.Count++
		rs.Streak = streak + 1
		entry.Restarts[m.Name] = rs
		r.log.Info("restarted container by policy", "set_id", d.ID, "container", m.Name, "policy", m.RestartPolicy,
			"exit_code", c.ExitCode, "oom_killed", c.OOMKilled, "restarts", rs.Count)
	}
	return nil
}

// update applies desired limits live.
func (r *Reconciler) update(ctx context.Context, d *schema.DesiredSet, o *observed.Set, targets []string) error {
	for _, m := range setspec.Members(d) {
		c := o.Member(m.Name)
		if c == nil || !slices.Contains(targets, m.Name) {
			continue
		}
		if err := r.rt.Update(ctx, c.ID, m.Limits); err != nil {
			return fmt.Errorf("update %s container: %w", m.Name, err)
		}
	}
	return nil
}

// network re-applies the policy (flows, shaping, MTU) of plugged ports
// whose data path differs from desired, live.
func (r *Reconciler) network(ctx context.Context, d *schema.DesiredSet, o *observed.Set) error {
	for i, p := range d.Ports {
		op := o.Port(p.ID)
		if op == nil || op.Policy || !running(o.Infra) {
			continue
		}
		if err := r.nw.ApplyPolicy(ctx, d.ID, i, p, o.Infra.Pid); err != nil {
			return fmt.Errorf("apply policy of port %s: %w", p.ID, err)
		}
	}
	return nil
}

// reboot restarts every member (TERM + grace, or KILL for a hard reboot);
// infra, and with it IP and plumbing, stays.
func (r *Reconciler) reboot(ctx context.Context, d *schema.DesiredSet, o *observed.Set) error {
	if err := r.unpause(ctx, o); err != nil {
		return err
	}
	ms := setspec.Members(d)
	for i := len(ms) - 1; i >= 0; i-- {
		c := o.Member(ms[i].Name)
		if c == nil || !c.Running {
			continue
		}
		var err error
		if d.RebootHard {
			err = r.rt.Kill(ctx, c.ID)
		} else {
			err = r.rt.Stop(ctx, c.ID, grace(d))
		}
		if err != nil {
			return fmt.Errorf("stop %s container: %w", ms[i].Name, err)
		}
	}
	for _, m := range ms {
		if c := o.Member(m.Name); c != nil {
			if err := r.startMember(ctx, m, c.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

// pause freezes the members, then infra.
func (r *Reconciler) pause(ctx context.Context, d *schema.DesiredSet, o *observed.Set) error {
	cs := o.Containers()
	for i := len(cs) - 1; i >= 0; i-- { // infra is first: paused last
		c := cs[i]
		if c.Running && !c.Paused {
			if err := r.rt.Pause(ctx, c.ID); err != nil {
				return fmt.Errorf("pause %s container: %w", c.Member, err)
			}
		}
	}
	return nil
}

// unpause thaws infra, then the members.
func (r *Reconciler) unpause(ctx context.Context, o *observed.Set) error {
	for _, c := range o.Containers() {
		if c.Paused {
			if err := r.rt.Unpause(ctx, c.ID); err != nil {
				return fmt.Errorf("unpause %s container: %w", c.Member, err)
			}
		}
	}
	return nil
}

// stop stops the members (apps before sidecars, TERM then KILL after the
// grace period), then the infra, then unplugs the ports (their veths died
// with the infra netns).
func (r *Reconciler) stop(ctx context.Context, d *schema.DesiredSet, o *observed.Set) error {
	if err := r.unpause(ctx, o); err != nil {
		return err
	}
	for _, c := range membersFirst(o) {
		if c.Running {
			if err := r.rt.Stop(ctx, c.ID, grace(d)); err != nil {
				return fmt.Errorf("stop %s container: %w", c.Member, err)
			}
		}
	}
	for _, p := range o.Ports {
		if err := r.nw.Unplumb(ctx, p); err != nil {
			return fmt.Errorf("unplumb port %s: %w", p.PortID, err)
		}
	}
	return nil
}

// membersFirst orders a set's containers for stopping: apps, then
// sidecars and extras, infra last.
func membersFirst(o *observed.Set) []observed.Container {
	cs := o.Containers()
	rank := func(c observed.Container) int {
		switch c.Role {
		case observed.RoleApp:
			return 0
		case observed.RoleInfra:
			return 2
		}
		return 1
	}
	sort.SliceStable(cs, func(i, j int) bool { return rank(cs[i]) < rank(cs[j]) })
	return cs
}

// teardown removes the set's ports, then its containers one by one
// (infra last). deleting: the set goes for good, so ports and containers
// go all at once, each container killed at once
// (Nova's delete powers an instance off, it does not shut it down; a
// guest that ignores TERM would otherwise hold the delete for the whole
// grace) and its volumes go too. Otherwise (leftovers of a set being
// built again) each container gets TERM and its grace first.
func (r *Reconciler) teardown(ctx context.Context, d *schema.DesiredSet, o *observed.Set, deleting bool) error {
	if o == nil {
		return nil
	}
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	// A set being deleted loses its ports and all its containers at the
	// same time: nothing waits for anything else. Infra goes with the
	// members, not after them: a forced remove kills at once, and a
	// member outliving its infra for a moment keeps the namespaces alive
	// by itself (Docker removes a pause container and the containers in
	// its namespaces in parallel without complaint); waiting for the
	// members first doubled the time a delete spends in Docker.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, p := range o.Ports {
			if err := r.nw.Unplumb(ctx, p); err != nil {
				fail(fmt.Errorf("unplumb port %s: %w", p.PortID, err))
			}
		}
	}()
	if !deleting {
		wg.Wait() // a set built again: its old ports go first, as before
	}
	remove := func(c observed.Container) {
		if c.Paused {
			if err := r.rt.Unpause(ctx, c.ID); err != nil {
				fail(fmt.Errorf("unpause %s container: %w", c.Member, err))
			}
		}
		// Deleting: Remove forces, which is a KILL at once (no separate
		// kill-and-wait call first).
		if c.Running && !deleting {
			if err := r.rt.Stop(ctx, c.ID, grace(d)); err != nil {
				fail(fmt.Errorf("stop %s container: %w", c.Member, err))
			}
		}
		if err := r.rt.Remove(ctx, c.ID); err != nil {
			fail(fmt.Errorf("remove %s container: %w", c.Member, err))
		}
	}
	var members sync.WaitGroup
	for _, c := range membersFirst(o) {
		if !deleting {
			remove(c) // one by one, infra (which holds the namespaces) last
			continue
		}
		members.Add(1)
		go func() {
			defer members.Done()
			remove(c)
		}()
	}
	members.Wait()
	wg.Wait()
	if deleting && len(errs) == 0 {
		for _, v := range o.Volumes {
			if err := r.rt.RemoveVolume(ctx, v.Name); err != nil {
				errs = append(errs, fmt.Errorf("remove volume %s: %w", v.Volume, err))
			}
		}
	}
	return errors.Join(errs...)
}
