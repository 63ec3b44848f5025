package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"berth/internal/pgdb"
	"berth/region/scheduler"
	"berth/schema"
)

// Host is a host row.
type Host struct {
	ID            int64           `db:"id"`
	Name          string          `db:"name"`
	VCPUs         int             `db:"vcpus"`
	MemoryMB      int             `db:"memory_mb"`
	DiskGB        int             `db:"disk_gb"`
	CPURatio      float64         `db:"cpu_ratio"`
	RAMRatio      float64         `db:"ram_ratio"`
	DiskRatio     float64         `db:"disk_ratio"`
	VCPUsUsed     int             `db:"vcpus_used"`
	MemoryMBUsed  int             `db:"memory_mb_used"`
	DiskGBUsed    int             `db:"disk_gb_used"`
	Labels        json.RawMessage `db:"labels"`
	AgentVersion  string          `db:"agent_version"`
	AgentURL      string          `db:"agent_url"`
	Disabled      bool            `db:"disabled"`
	ForcedDown    bool            `db:"forced_down"`
	DisabledWhy   *string         `db:"disabled_reason"`
	DesiredIndex  int64           `db:"desired_index"`
	LastHeartbeat time.Time       `db:"last_heartbeat"`
	CreatedAt     time.Time       `db:"created_at"`
}

const hostCols = `id, name, vcpus, memory_mb, disk_gb, cpu_ratio, ram_ratio, disk_ratio, vcpus_used,
	memory_mb_used, disk_gb_used, labels, agent_version, agent_url, disabled, forced_down, disabled_reason, desired_index, last_heartbeat, created_at`

// RegisterHost creates or refreshes a host with the capacity its agent
// reports; usage counters are kept (they belong to region's claims).
func (s *Store) RegisterHost(ctx context.Context, name string, r schema.HostRegister) error {
	labels, _ := json.Marshal(r.Labels)
	if r.Labels == nil {
		labels = []byte("{}")
	}
	defer s.hostView.invalidate()
	return s.tx(ctx, func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, `
			INSERT INTO hosts (name, vcpus, memory_mb, disk_gb, labels, agent_version, agent_url, tunnel_ip, last_heartbeat)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
			ON CONFLICT (name) DO UPDATE SET vcpus = $2, memory_mb = $3, disk_gb = $4,
				labels = $5, agent_version = $6, agent_url = $7, tunnel_ip = $8, last_heartbeat = now()`,
			name, r.VCPUs, r.MemoryMB, r.DiskGB, labels, r.AgentVersion, r.AgentURL, r.TunnelIP)
		if err != nil {
			return err
		}
		// Every other host with a tunnel learns about this one (and about a
		// changed address) through its desired state.
		_, err = tx.ExecContext(ctx, `UPDATE hosts SET desired_index = desired_index + 1 WHERE name <> $1 AND tunnel_ip <> ''`, name)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `SELECT pg_notify('berth_desired', name) FROM hosts WHERE name <> $1 AND tunnel_ip <> ''`, name)
		return err
	})
}

// FindHost returns a host by name.
func (s *Store) FindHost(ctx context.Context, name string) (*Host, error) {
	var h Host
	err := s.db.GetContext(ctx, &h, `SELECT `+hostCols+` FROM hosts WHERE name = $1`, name)
	if err != nil {
		return nil, pgdb.NotFound(err, fmt.Sprintf("Host %s could not be found.", name))
	}
	return &h, nil
}

// ListHosts lists every host by name.
func (s *Store) ListHosts(ctx context.Context) ([]Host, error) {
	var hs []Host
	err := s.db.SelectContext(ctx, &hs, `SELECT `+hostCols+` FROM hosts ORDER BY name`)
	return hs, err
}

// HostStates is the scheduler's snapshot of every host. It reads only the
// columns the scheduler uses: at 10,000 hosts this runs every HostViewTTL.
func (s *Store) HostStates(ctx context.Context) ([]scheduler.HostState, error) {
	var hs []Host
	err := s.db.SelectContext(ctx, &hs, `SELECT name, vcpus, memory_mb, disk_gb, cpu_ratio, ram_ratio, disk_ratio,
		vcpus_used, memory_mb_used, disk_gb_used, labels, disabled, forced_down, last_heartbeat FROM hosts ORDER BY name`)
	if err != nil {
		return nil, err
	}
	out := make([]scheduler.HostState, len(hs))
	for i, h := range hs {
		var labels map[string]string
		if len(h.Labels) > 2 { // not "{}"
			_ = json.Unmarshal(h.Labels, &labels)
		}
		out[i] = scheduler.HostState{
			Name: h.Name, VCPUs: h.VCPUs, MemoryMB: h.MemoryMB, DiskGB: h.DiskGB,
			CPURatio: h.CPURatio, RAMRatio: h.RAMRatio, DiskRatio: h.DiskRatio,
			VCPUsUsed: h.VCPUsUsed, MemoryMBUsed: h.MemoryMBUsed, DiskGBUsed: h.DiskGBUsed,
			Disabled: h.Disabled || h.ForcedDown, LastHeartbeat: h.LastHeartbeat, Labels: labels,
		}
	}
	return out, nil
}

// HostViewTTL is how old region's in-memory host view may get before a
// placement re-reads the hosts table. The view only orders candidates: the
// claim in the create transaction re-checks capacity and liveness against
// the committed row, so a stale view can cost a retry on the next
// candidate, never an overcommitted or dead host.
var HostViewTTL = time.Second

// hostView is region's copy of the hosts table for ranking. Re-reading
// every host for every POST /servers cost ~70 ms of region CPU per
// placement at 10,000 hosts. Between reads the view is kept close to the
// truth the way Nova's HostState is: each ranking debits its first
// candidate at once, so concurrent placements spread instead of all racing
// for the same row lock; writes through this Store that change a host's
// capacity or flags drop the view.
type hostView struct {
	mu      sync.Mutex
	hosts   []scheduler.HostState
	index   map[string]int
	order   []int // indexes of hosts, heaviest first (scheduler.Heavier)
	pos     []int // pos[i] is host i's place in order
	at      time.Time
	loading bool   // one placement is re-reading the table; the rest use the old view meanwhile
	gen     uint64 // bumped by invalidate, so a read that started before is not installed
}

func (v *hostView) invalidate() {
	v.mu.Lock()
	v.hosts, v.index, v.order, v.pos, v.at = nil, nil, nil, nil, time.Time{}
	v.gen++
	v.mu.Unlock()
}

// setLocked installs a fresh copy of the table; v.mu is held.
func (v *hostView) setLocked(hs []scheduler.HostState, at time.Time) {
	idx := make(map[string]int, len(hs))
	for i, h := range hs {
		idx[h.Name] = i
	}
	order := make([]int, len(hs))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		if scheduler.Heavier(&hs[a], &hs[b]) {
			return -1
		}
		return 1
	})
	pos := make([]int, len(hs))
	for p, i := range order {
		pos[i] = p
	}
	v.hosts, v.index, v.order, v.pos, v.at = hs, idx, order, pos, at
}

// debitLocked takes r's needs from host i in the view and moves the host
// down the weight order to its new place; v.mu is held.
func (v *hostView) debitLocked(i int, r scheduler.Request) {
	h := &v.hosts[i]
	h.VCPUsUsed += r.VCPUs
	h.MemoryMBUsed += r.MemoryMB
	h.DiskGBUsed += r.DiskGB
	p := v.pos[i]
	// The first host after p that is not heavier than i: i goes just
	// before it.
	q := p + 1 + sort.Search(len(v.order)-p-1, func(k int) bool {
		return !scheduler.Heavier(&v.hosts[v.order[p+1+k]], h)
	})
	copy(v.order[p:q-1], v.order[p+1:q])
	v.order[q-1] = i
	for k := p; k < q; k++ {
		v.pos[v.order[k]] = k
	}
}

// loadLocked re-reads the hosts table with v.mu held (no view yet, or a
// view that found no candidate).
func (v *hostView) loadLocked(ctx context.Context, s *Store) error {
	at := time.Now()
	hs, err := s.HostStates(ctx)
	if err != nil {
		return err
	}
	v.setLocked(hs, at)
	return nil
}

// RankHosts ranks the hosts for a request from region's host view (see
// hostView) and debits the request from the best candidate in the view. A
// view that yields no candidate is re-read once before the answer stands,
// so "No valid host" is never decided on stale data. hosts is how many
// hosts the view holds.
func (s *Store) RankHosts(ctx context.Context, r scheduler.Request) (names []string, rejected map[string]int, hosts int, err error) {
	v := &s.hostView
	v.mu.Lock()
	defer v.mu.Unlock()
	fresh, err := v.viewLocked(ctx, s)
	if err != nil {
		return nil, nil, 0, err
	}
	names, rejected = scheduler.Rank(v.hosts, r)
	if len(names) == 0 && !fresh {
		if err := v.loadLocked(ctx, s); err != nil {
			return nil, nil, 0, err
		}
		names, rejected = scheduler.Rank(v.hosts, r)
	}
	if len(names) > 0 {
		v.debitLocked(v.index[names[0]], r)
	}
	return names, rejected, len(v.hosts), nil
}

// viewLocked returns a view fresh enough to rank from (see RankHosts),
// with v.mu held on return whatever the error; fresh reports a re-read.
func (v *hostView) viewLocked(ctx context.Context, s *Store) (fresh bool, err error) {
	switch {
	case v.hosts == nil:
		return true, v.loadLocked(ctx, s)
	case time.Since(v.at) > HostViewTTL && !v.loading:
		// Re-read without holding the lock (10,000 hosts take tens of
		// milliseconds), so other placements go on with the old view.
		v.loading = true
		gen := v.gen
		v.mu.Unlock()
		at := time.Now()
		hs, err := s.HostStates(ctx)
		v.mu.Lock()
		v.loading = false
		if err != nil {
			return false, err
		}
		if v.gen == gen { // else a host changed meanwhile, and the next read decides
			v.setLocked(hs, at)
			return true, nil
		}
	}
	return false, nil
}

// rankFirst ranks the first scheduler.Best hosts for r from the view,
// walking it in weight order, and debits r from the best one. complete
// says names are every candidate; otherwise rest ranks them all when the
// batch has tried these. Like RankHosts, a view that yields no candidate
// is re-read before the answer stands. reason is the "No valid host"
// detail of a complete ranking.
func (s *Store) rankFirst(ctx context.Context, r scheduler.Request) (names []string, reason string, complete bool, err error) {
	v := &s.hostView
	v.mu.Lock()
	defer v.mu.Unlock()
	fresh, err := v.viewLocked(ctx, s)
	if err != nil {
		return nil, "", false, err
	}
	names, rejected, complete := scheduler.RankFirst(v.hosts, v.order, r, scheduler.Best)
	if len(names) == 0 && !fresh {
		if err := v.loadLocked(ctx, s); err != nil {
			return nil, "", false, err
		}
		names, rejected, complete = scheduler.RankFirst(v.hosts, v.order, r, scheduler.Best)
	}
	if len(names) > 0 {
		v.debitLocked(v.index[names[0]], r)
	}
	return names, NoHostReason(rejected, len(v.hosts)), complete, nil
}

// rankAll ranks every candidate for r from the view, without a debit:
// the rest of a ranking whose first hosts were all taken.
func (s *Store) rankAll(ctx context.Context, r scheduler.Request) ([]string, string, error) {
	v := &s.hostView
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, err := v.viewLocked(ctx, s); err != nil {
		return nil, "", err
	}
	r.Now = time.Now()
	names, rejected := scheduler.Rank(v.hosts, r)
	return names, NoHostReason(rejected, len(v.hosts)), nil
}

// NoHostReason is the detail of Nova's "No valid host" fault: how many
// hosts each filter rejected, or that there are none.
func NoHostReason(rejected map[string]int, hosts int) string {
	if hosts == 0 {
		return "There are no registered hosts."
	}
	var why []string
	for reason, n := range rejected {
		why = append(why, fmt.Sprintf("%s: %d", reason, n))
	}
	if len(why) == 0 {
		return ""
	}
	slices.Sort(why)
	return "Hosts rejected (" + strings.Join(why, ", ") + ")."
}

// HostIndex returns a host's desired index (NotFound for unknown hosts).
func (s *Store) HostIndex(ctx context.Context, name string) (int64, error) {
	var idx int64
	err := s.db.GetContext(ctx, &idx, `SELECT desired_index FROM hosts WHERE name = $1`, name)
	if err != nil {
		return 0, pgdb.NotFound(err, fmt.Sprintf("Host %s could not be found.", name))
	}
	return idx, nil
}

// claimOn adds a set's needs to a host's usage if it still has room and is
// up, in tx; it reports whether the claim was made. The row lock taken by
// the UPDATE serializes concurrent claims on one host, and the WHERE clause
// re-checks capacity against the committed usage, so no host overcommits.
func claimOn(ctx context.Context, tx *sqlx.Tx, host string, vcpus, ramMB, diskGB int, grace time.Duration) (bool, error) {
	res, err := tx.ExecContext(ctx, `
		UPDATE hosts SET vcpus_used = vcpus_used + $2, memory_mb_used = memory_mb_used + $3,
			disk_gb_used = disk_gb_used + $4
		WHERE name = $1 AND NOT disabled AND NOT forced_down
		  AND vcpus_used + $2 <= floor(vcpus * cpu_ratio)
		  AND memory_mb_used + $3 <= floor(memory_mb * ram_ratio)
		  AND disk_gb_used + $4 <= floor(disk_gb * disk_ratio)
		  AND ($5 <= 0 OR last_heartbeat > now() - make_interval(secs => $5))`,
		host, vcpus, ramMB, diskGB, grace.Seconds())
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// releaseOn gives a set's claim back to its host.
func releaseOn(ctx context.Context, tx *sqlx.Tx, host string, vcpus, ramMB, diskGB int) error {
	_, err := tx.ExecContext(ctx, `
		UPDATE hosts SET vcpus_used = greatest(vcpus_used - $2, 0),
			memory_mb_used = greatest(memory_mb_used - $3, 0),
			disk_gb_used = greatest(disk_gb_used - $4, 0)
		WHERE name = $1`, host, vcpus, ramMB, diskGB)
	return err
}

// HostSummary is a host with its live server count.
type HostSummary struct {
	Host
	Servers int `db:"servers"`
}

// ListHostSummaries lists hosts with how many live servers each holds.
func (s *Store) ListHostSummaries(ctx context.Context) ([]HostSummary, error) {
	var out []HostSummary
	err := s.db.SelectContext(ctx, &out, `SELECT `+hostCols+`,
		(SELECT count(*) FROM servers s WHERE s.host = hosts.name AND s.deleted_at IS NULL) AS servers
		FROM hosts ORDER BY id`)
	return out, err
}

// SetHostService changes an operator flag of a host (os-services):
// disabled (with a reason) keeps new servers off it; forced_down marks it
// down at once, without waiting for its heartbeats to stop.
func (s *Store) SetHostService(ctx context.Context, name string, disabled *bool, reason *string, forcedDown *bool) (*Host, error) {
	defer s.hostView.invalidate()
	var h Host
	err := s.db.GetContext(ctx, &h, `UPDATE hosts SET disabled = coalesce($2, disabled),
		disabled_reason = CASE WHEN $2 IS NULL THEN disabled_reason WHEN $2 THEN $3 ELSE NULL END,
		forced_down = coalesce($4, forced_down) WHERE name = $1 RETURNING `+hostCols, name, disabled, reason, forcedDown)
	if err != nil {
		return nil, pgdb.NotFound(err, fmt.Sprintf("Host %s could not be found.", name))
	}
	return &h, nil
}
