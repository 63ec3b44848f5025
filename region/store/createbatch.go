package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"berth/internal/apierr"
	"berth/internal/pgdb"
	"berth/region/novastate"
	"berth/region/scheduler"
)

// member is one create of a batch while createBatch works on it.
type member struct {
	i     int // index in the batch
	ns    *NewServer
	cands []string
	grace time.Duration
	why   string // noHostReason
	rest  func(ctx context.Context) ([]string, string, error)
	// prior is the live server an earlier create with ns.RetryKey made;
	// nothing is created for the member then.
	prior string
	group *batchGroup

	// Placement state (placeMembers).
	host   string          // the host claimed for it
	noHost bool            // every candidate was tried
	tried  map[string]bool // hosts whose claim failed for it
	pos    int             // cands[:pos] are all tried
	sure   string          // a host whose locked row has room for it
}

// batchGroup is a server group with members in the batch: its policy and
// where its members run (committed ones plus those placed by the batch).
type batchGroup struct {
	policy     string
	maxPerHost int
	limit      int            // server_group_members quota of its project
	total      int            // members with a host
	hosts      map[string]int // host → members (no zero counts)
}

// createBatch runs one attempt of a batch of creates in tx and returns a
// result per request: the server, or the member's own error. Any member
// error means the transaction must be rolled back (rows of the member may
// have been written) and the others run again without it; an error
// returned is the whole batch's. Every statement covers the whole batch,
// so a batch of 32 costs about as many statements as one create did.
//
// What each create gets is what it got from a transaction of its own, as
// if the batch's creates had run one after another in batch order: a
// retry key naming a live server returns that server; the server row, its
// "create" action and events, its group membership and ports; a claim on
// the first candidate with room (re-checked in SQL against the committed
// row, so no host overcommits), or ERROR with "No valid host"; the host's
// desired index bumped and its agent woken; and the project's quota
// checked last, under its lock.
func (s *Store) createBatch(ctx context.Context, tx *sqlx.Tx, reqs []*createReq) ([]createResult, error) {
	out := make([]createResult, len(reqs))
	ms := make([]*member, len(reqs))
	for i, r := range reqs {
		ms[i] = &member{i: i, ns: &r.ns, cands: r.candidates, grace: r.grace, why: r.noHostReason, rest: r.rest}
	}
	failed := func() bool {
		return slices.ContainsFunc(out, func(o createResult) bool { return o.err != nil })
	}
	if err := claimRetryKeys(ctx, tx, ms); err != nil {
		return nil, err
	}
	var create []*member
	for _, m := range ms {
		if m.prior == "" {
			create = append(create, m)
		}
	}
	if err := loadGroups(ctx, tx, create, out); err != nil || failed() {
		return out, err
	}
	if err := placeMembers(ctx, tx, create); err != nil {
		return nil, err
	}
	checkGroupLimits(create, out)
	if failed() {
		return out, nil
	}
	if err := s.insertServers(ctx, tx, create, out); err != nil || failed() {
		return out, err
	}
	if err := recordCreates(ctx, tx, create); err != nil {
		return nil, err
	}
	for _, m := range create {
		if m.host == "" {
			continue
		}
		for slot, nr := range m.ns.Networks {
			if err := nr.apply(ctx, tx, m.ns.ProjectID, m.ns.ID, slot); err != nil {
				if pgdb.Retryable(err) || pgdb.Unavailable(err) {
					return nil, err
				}
				// A failed statement aborts tx: stop here, and run the
				// rest again without this member.
				out[m.i].err = err
				return out, nil
			}
		}
	}
	// The new servers' addresses join their groups' member lists.
	var placed []string
	for _, m := range create {
		if m.host != "" {
			placed = append(placed, m.ns.ID)
		}
	}
	if err := wakeGroupHosts(ctx, tx, placed, nil); err != nil {
		return nil, err
	}
	// Last, so the projects' quota locks are held only to commit.
	if err := checkQuotas(ctx, tx, create, out); err != nil || failed() {
		return out, err
	}
	if hook := s.batcher.hook; hook != nil {
		if err := hook(ctx, tx); err != nil {
			return nil, err
		}
	}
	return out, readBack(ctx, tx, ms, out)
}

// claimRetryKeys does what claimCreate does for every member with a retry
// key, in three statements: drop the users' expired keys, claim the keys,
// and look up the servers of the keys already taken. A member whose key
// names a live server gets prior set. Keys are claimed in sorted order,
// so two batches wait on each other's keys without deadlocking.
func claimRetryKeys(ctx context.Context, tx *sqlx.Tx, ms []*member) error {
	var keyed []*member
	for _, m := range ms {
		if m.ns.RetryKey != "" {
			keyed = append(keyed, m)
		}
	}
	if len(keyed) == 0 {
		return nil
	}
	slices.SortFunc(keyed, func(a, b *member) int {
		return strings.Compare(a.ns.ProjectID+"\x00"+a.ns.UserID+"\x00"+a.ns.RetryKey,
			b.ns.ProjectID+"\x00"+b.ns.UserID+"\x00"+b.ns.RetryKey)
	})
	window := fmt.Sprintf("%d seconds", int(CreateRetryWindow.Seconds()))
	var projects, users, keys, ids []string
	for _, m := range keyed {
		projects = append(projects, m.ns.ProjectID)
		users = append(users, m.ns.UserID)
		keys = append(keys, m.ns.RetryKey)
		ids = append(ids, m.ns.ID)
	}
	// Rows of these users past the window are dead weight.
	if _, err := tx.ExecContext(ctx, `DELETE FROM server_create_requests c
		USING unnest($1::text[], $2::text[]) AS u(p, us)
		WHERE c.project_id = u.p AND c.user_id = u.us AND c.created_at < now() - $3::interval`,
		pq.Array(projects), pq.Array(users), window); err != nil {
		return err
	}
	var claimed []string
	if err := tx.SelectContext(ctx, &claimed, `INSERT INTO server_create_requests AS c (project_id, user_id, request_id, server_id)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[])
		ON CONFLICT (project_id, user_id, request_id) DO UPDATE SET server_id = excluded.server_id, created_at = now()
		WHERE c.created_at < now() - $5::interval
		RETURNING server_id::text`, pq.Array(projects), pq.Array(users), pq.Array(keys), pq.Array(ids), window); err != nil {
		return err
	}
	if len(claimed) == len(keyed) {
		return nil
	}
	// The keys not claimed are taken (and locked by the conflict): read
	// their servers in one statement that starts after the wait, so it
	// sees the first create's commit.
	mine := map[string]bool{}
	for _, id := range claimed {
		mine[id] = true
	}
	var taken []*member
	projects, users, keys = projects[:0], users[:0], keys[:0]
	for _, m := range keyed {
		if !mine[m.ns.ID] {
			taken = append(taken, m)
			projects, users, keys = append(projects, m.ns.ProjectID), append(users, m.ns.UserID), append(keys, m.ns.RetryKey)
		}
	}
	var rows []struct {
		I        int    `db:"i"`
		ServerID string `db:"server_id"`
		Live     bool   `db:"live"`
	}
	if err := tx.SelectContext(ctx, &rows, `SELECT u.i, r.server_id::text AS server_id,
			EXISTS (SELECT 1 FROM servers s WHERE s.id = r.server_id AND s.deleted_at IS NULL) AS live
		FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(p, us, k, i)
		JOIN server_create_requests r ON r.project_id = u.p AND r.user_id = u.us AND r.request_id = u.k`,
		pq.Array(projects), pq.Array(users), pq.Array(keys)); err != nil {
		return err
	}
	for _, r := range rows {
		m := taken[r.I-1]
		if r.Live {
			m.prior = r.ServerID
			continue
		}
		// The first server is deleted already: the id makes a new one.
		if _, err := tx.ExecContext(ctx, `UPDATE server_create_requests SET server_id = $4, created_at = now()
			WHERE project_id = $1 AND user_id = $2 AND request_id = $3`,
			m.ns.ProjectID, m.ns.UserID, m.ns.RetryKey, m.ns.ID); err != nil {
			return err
		}
	}
	return nil
}

// loadGroups locks the server groups the members join (in id order, as
// groupCandidates locks one: boots into one group are serialized) and
// reads where their members run. A member naming a missing group fails.
func loadGroups(ctx context.Context, tx *sqlx.Tx, ms []*member, out []createResult) error {
	var ids []string
	for _, m := range ms {
		if g := m.ns.GroupID; g != "" {
			if !validUUID(g) {
				out[m.i].err = apierr.NotFoundf("Instance group %s could not be found.", g)
			} else if !slices.Contains(ids, g) {
				ids = append(ids, g)
			}
		}
	}
	if len(ids) == 0 {
		return nil
	}
	var rows []struct {
		ID     string          `db:"id"`
		Policy string          `db:"policy"`
		Rules  json.RawMessage `db:"rules"`
		Limit  int             `db:"member_limit"`
	}
	if err := tx.SelectContext(ctx, &rows, `SELECT g.id::text AS id, g.policy, g.rules,
			coalesce(q.hard_limit, $2) AS member_limit
		FROM server_groups g LEFT JOIN quotas q ON q.project_id = g.project_id AND q.resource = 'server_group_members'
		WHERE g.id = ANY($1::uuid[]) ORDER BY g.id FOR UPDATE OF g`,
		pq.Array(ids), DefaultQuotas["server_group_members"]); err != nil {
		return err
	}
	groups := map[string]*batchGroup{}
	for _, r := range rows {
		var rules struct {
			MaxPerHost int `json:"max_server_per_host"`
		}
		_ = json.Unmarshal(r.Rules, &rules)
		g := &batchGroup{policy: r.Policy, limit: r.Limit, hosts: map[string]int{}}
		if r.Policy == scheduler.AntiAffinity {
			g.maxPerHost = rules.MaxPerHost
		}
		groups[r.ID] = g
	}
	var counts []struct {
		GroupID string `db:"group_id"`
		Host    string `db:"host"`
		N       int    `db:"n"`
	}
	// Each lookup is an equality on an indexed column behind a fence
	// (OFFSET 0), its other conditions outside, so the plan stays index
	// lookups even while the statistics still describe an empty table (a
	// new region's first minute): a join over the arrays, or a partial
	// index matching a condition, let the planner scan every server.
	if err := tx.SelectContext(ctx, &counts, `SELECT g.id::text AS group_id, s.host, count(*) AS n
		FROM unnest($1::uuid[]) AS g(id),
		LATERAL (SELECT m.server_id FROM server_group_members m WHERE m.group_id = g.id OFFSET 0) m,
		LATERAL (SELECT s.host, s.deleted_at FROM servers s WHERE s.id = m.server_id OFFSET 0) s
		WHERE s.deleted_at IS NULL AND s.host IS NOT NULL
		GROUP BY 1, 2`, pq.Array(ids)); err != nil {
		return err
	}
	for _, c := range counts {
		if g := groups[c.GroupID]; g != nil {
			g.hosts[c.Host] += c.N
			g.total += c.N
		}
	}
	for _, m := range ms {
		if m.ns.GroupID == "" || out[m.i].err != nil {
			continue
		}
		if m.group = groups[m.ns.GroupID]; m.group == nil {
			out[m.i].err = apierr.NotFoundf("Instance group %s could not be found.", m.ns.GroupID)
		}
	}
	return nil
}

// checkGroupLimits fails the members that take their group past its
// server_group_members quota, counting the group's members with a host
// and those the batch placed before them (as one create after another
// would have).
func checkGroupLimits(ms []*member, out []createResult) {
	count := map[*batchGroup]int{}
	for g := range groupsOf(ms) {
		count[g] = g.total
	}
	for _, m := range ms {
		if m.group != nil && m.host != "" {
			count[m.group]-- // the members with a host before the batch
		}
	}
	for _, m := range ms {
		g := m.group
		if g == nil {
			continue
		}
		if g.limit >= 0 && count[g]+1 > g.limit {
			out[m.i].err = apierr.OverLimitf("Quota exceeded, too many servers in group")
			continue
		}
		if m.host != "" {
			count[g]++
		}
	}
}

func groupsOf(ms []*member) map[*batchGroup]bool {
	out := map[*batchGroup]bool{}
	for _, m := range ms {
		if m.group != nil {
			out[m.group] = true
		}
	}
	return out
}

// hostRoom is a locked host row's room, as the claim's WHERE clause
// computes it.
type hostRoom struct {
	Name  string `db:"name"`
	VCPUs int    `db:"free_vcpus"`
	RAMMB int    `db:"free_ram"`
	Disk  int    `db:"free_disk"`
	Up    bool   `db:"up"`
}

// placeMembers claims a host for each member, in rounds of one statement:
// each member takes its best untried candidate that its group allows,
// and one UPDATE claims every chosen host for the sum of its members'
// needs, re-checking capacity and liveness against the committed row. A
// host with room for all its members is theirs; a host that refused a
// lone member is tried no more for it; a host that refused several is
// locked and read, and they are fitted onto it in batch order (those that
// fit claim it in the next round, while no one else may choose it). A
// member with no candidate left gets no host (ERROR, "No valid host").
// Rounds end when every member is placed or out of candidates; usually
// the first round places them all.
func placeMembers(ctx context.Context, tx *sqlx.Tx, ms []*member) error {
	for {
		more := false // a member got the rest of its ranking
		assigned := map[string][]*member{}
		var hosts []string
		assign := func(m *member, h string) {
			if assigned[h] == nil {
				hosts = append(hosts, h)
			}
			assigned[h] = append(assigned[h], m)
		}
		// This round's choices count as members for the groups' policies.
		tent := map[*batchGroup]map[string]int{}
		choose := func(m *member, h string) {
			assign(m, h)
			if g := m.group; g != nil {
				if tent[g] == nil {
					tent[g] = maps.Clone(g.hosts)
				}
				tent[g][h]++
			}
		}
		for _, m := range ms {
			if m.sure != "" && m.host == "" {
				choose(m, m.sure)
			}
		}
		for _, m := range ms {
			if m.host != "" || m.noHost || m.sure != "" {
				continue
			}
			for m.pos < len(m.cands) && m.tried[m.cands[m.pos]] {
				m.pos++
			}
			policy, perHost, members := "", 0, map[string]int(nil)
			if g := m.group; g != nil {
				policy, perHost, members = g.policy, g.maxPerHost, g.hosts
				if t := tent[g]; t != nil {
					members = t
				}
			}
			waiting := false
			h, ok := scheduler.GroupPick(m.cands[m.pos:], policy, perHost, members, func(h string) bool {
				if m.tried[h] {
					return true
				}
				// A host with members sure of it is theirs this round.
				if held := assigned[h]; len(held) > 0 && held[0].sure != "" {
					waiting = true
					return true
				}
				return false
			})
			switch {
			case ok:
				choose(m, h)
			case waiting:
			case m.rest != nil:
				// Its first candidates are taken: rank them all (the
				// tried ones stay tried) and choose next round.
				cands, why, err := m.rest(ctx)
				if err != nil {
					return err
				}
				m.cands, m.why, m.pos, m.rest = cands, why, 0, nil
				more = true
			default:
				m.noHost = true
			}
		}
		if len(hosts) == 0 {
			if more {
				continue
			}
			return nil
		}
		slices.Sort(hosts) // rows are locked in name order
		claimed, err := claimHosts(ctx, tx, hosts, assigned)
		if err != nil {
			return err
		}
		var recheck []string
		for _, h := range hosts {
			mh := assigned[h]
			switch {
			case claimed[h]:
				for _, m := range mh {
					m.host, m.sure = h, ""
					if g := m.group; g != nil {
						g.hosts[h]++
						g.total++
					}
				}
			case len(mh) == 1:
				mh[0].refused(h)
			default:
				recheck = append(recheck, h)
			}
		}
		if len(recheck) == 0 {
			continue
		}
		rooms, err := lockHosts(ctx, tx, recheck, assigned)
		if err != nil {
			return err
		}
		for _, h := range recheck {
			room := rooms[h]
			for _, m := range assigned[h] {
				f := m.ns.Flavor
				if room.Up && f.VCPUs <= room.VCPUs && f.RAMMB <= room.RAMMB && f.DiskGB <= room.Disk {
					room.VCPUs, room.RAMMB, room.Disk = room.VCPUs-f.VCPUs, room.RAMMB-f.RAMMB, room.Disk-f.DiskGB
					m.sure = h
				} else {
					m.refused(h)
				}
			}
		}
	}
}

func (m *member) refused(h string) {
	if m.tried == nil {
		m.tried = map[string]bool{}
	}
	m.tried[h] = true
	m.sure = ""
}

// graceOf is the strictest liveness window of a host's members (0: none).
func graceOf(ms []*member) float64 {
	g := 0.0
	for _, m := range ms {
		if s := m.grace.Seconds(); s > 0 && (g == 0 || s < g) {
			g = s
		}
	}
	return g
}

// claimHosts adds each host's members' needs to its usage where it still
// has room and is up, bumps the desired index of each host claimed and
// queues the NOTIFY that wakes its agent (delivered at commit): claimOn
// and notifyHost for a whole round in one statement. It returns the hosts
// claimed. The rows are locked in name order first (l: every row the
// UPDATE changes has been locked by it, so whatever plan the UPDATE gets,
// two batches take their common hosts in one order and cannot deadlock
// on them within a round).
func claimHosts(ctx context.Context, tx *sqlx.Tx, hosts []string, assigned map[string][]*member) (map[string]bool, error) {
	v, m, d := make([]int64, len(hosts)), make([]int64, len(hosts)), make([]int64, len(hosts))
	grace := make([]float64, len(hosts))
	for i, h := range hosts {
		for _, mb := range assigned[h] {
			f := mb.ns.Flavor
			v[i], m[i], d[i] = v[i]+int64(f.VCPUs), m[i]+int64(f.RAMMB), d[i]+int64(f.DiskGB)
		}
		grace[i] = graceOf(assigned[h])
	}
	var names []string
	err := tx.SelectContext(ctx, &names, `
		WITH c AS MATERIALIZED (SELECT * FROM unnest($1::text[], $2::int[], $3::int[], $4::int[], $5::float8[]) AS c(name, v, m, d, grace)),
		l AS MATERIALIZED (SELECT h.name FROM hosts h WHERE h.name = ANY($1) ORDER BY h.name FOR UPDATE),
		u AS (
			UPDATE hosts h SET vcpus_used = h.vcpus_used + c.v, memory_mb_used = h.memory_mb_used + c.m,
				disk_gb_used = h.disk_gb_used + c.d, desired_index = h.desired_index + 1
			FROM c
			WHERE h.name = c.name AND h.name IN (SELECT name FROM l) AND NOT h.disabled AND NOT h.forced_down
			  AND h.vcpus_used + c.v <= floor(h.vcpus * h.cpu_ratio)
			  AND h.memory_mb_used + c.m <= floor(h.memory_mb * h.ram_ratio)
			  AND h.disk_gb_used + c.d <= floor(h.disk_gb * h.disk_ratio)
			  AND (c.grace <= 0 OR h.last_heartbeat > now() - make_interval(secs => c.grace))
			RETURNING h.name)
		SELECT u.name FROM u, LATERAL (SELECT pg_notify('berth_desired', u.name)) n`,
		pq.Array(hosts), pq.Array(v), pq.Array(m), pq.Array(d), pq.Array(grace))
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out, nil
}

// lockHosts locks host rows (in name order) and reads their room and
// whether they are up, by the claim's own rules.
func lockHosts(ctx context.Context, tx *sqlx.Tx, hosts []string, assigned map[string][]*member) (map[string]*hostRoom, error) {
	var all []*member
	for _, h := range hosts {
		all = append(all, assigned[h]...)
	}
	var rows []hostRoom
	if err := tx.SelectContext(ctx, &rows, `SELECT name,
			floor(vcpus * cpu_ratio)::int - vcpus_used AS free_vcpus,
			floor(memory_mb * ram_ratio)::int - memory_mb_used AS free_ram,
			floor(disk_gb * disk_ratio)::int - disk_gb_used AS free_disk,
			NOT disabled AND NOT forced_down
				AND ($2 <= 0 OR last_heartbeat > now() - make_interval(secs => $2)) AS up
		FROM hosts WHERE name = ANY($1) ORDER BY name FOR UPDATE`, pq.Array(hosts), graceOf(all)); err != nil {
		return nil, err
	}
	out := make(map[string]*hostRoom, len(hosts))
	for _, h := range hosts {
		out[h] = &hostRoom{Name: h} // gone: no room
	}
	for i := range rows {
		out[rows[i].Name] = &rows[i]
	}
	return out, nil
}

// insertServers writes the members' server rows in one statement, in
// their final state: placed (host set, spawning) or in ERROR with Nova's
// "No valid host" fault. A member whose id exists already fails.
func (s *Store) insertServers(ctx context.Context, tx *sqlx.Tx, ms []*member, out []createResult) error {
	n := len(ms)
	var (
		ids, projects, users, names, azs, images, dockerImages, flavors = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		vmStates, metas, ip4s, ip6s, personalities, specs, reservations = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		tags, desired                                                   = make([]string, n), make([]string, n)
		descs, taskStates, keyNames, userData, authKeys, setSpecs       = make([]sql.NullString, n), make([]sql.NullString, n), make([]sql.NullString, n), make([]sql.NullString, n), make([]sql.NullString, n), make([]sql.NullString, n)
		hosts, faults                                                   = make([]sql.NullString, n), make([]sql.NullString, n)
		vcpus, ram, disk                                                = make([]int64, n), make([]int64, n), make([]int64, n)
	)
	for i, m := range ms {
		ns, f := m.ns, m.ns.Flavor
		ids[i], projects[i], users[i], names[i], azs[i] = ns.ID, ns.ProjectID, ns.UserID, ns.Name, ns.AvailabilityZone
		images[i], dockerImages[i], flavors[i] = ns.ImageID, ns.DockerImageID, f.ID
		vcpus[i], ram[i], disk[i] = int64(f.VCPUs), int64(f.RAMMB), int64(f.DiskGB)
		if ns.Description != nil {
			descs[i] = sql.NullString{String: *ns.Description, Valid: true}
		}
		meta, _ := json.Marshal(ns.Metadata)
		if ns.Metadata == nil {
			meta = []byte("{}")
		}
		personality, _ := json.Marshal(ns.Files)
		if ns.Files == nil {
			personality = []byte("[]")
		}
		if len(ns.Containers) > 0 {
			b, _ := json.Marshal(ns.Containers)
			setSpecs[i] = sql.NullString{String: string(b), Valid: true}
		}
		metas[i], personalities[i], specs[i] = string(meta), string(personality), string(specsOf(f))
		keyNames[i], userData[i], authKeys[i] = nullable(ns.KeyName), nullable(ns.UserData), nullable(ns.AuthorizedKeys)
		ip4s[i], ip6s[i], reservations[i] = ns.AccessIPv4, ns.AccessIPv6, ns.ReservationID
		t, _ := pq.StringArray(nonNil(ns.Tags)).Value()
		tags[i] = t.(string)
		if m.host != "" {
			vmStates[i], desired[i] = novastate.Building, "running"
			taskStates[i] = nullable(novastate.TaskSpawning)
			hosts[i] = nullable(m.host)
		} else {
			vmStates[i], desired[i] = novastate.Error, "deleted"
			fault, _ := json.Marshal(FaultBody{Code: 500, Message: m.noHostMessage(), Created: s.now().UTC()})
			faults[i] = sql.NullString{String: string(fault), Valid: true}
		}
	}
	var made []string
	if err := tx.SelectContext(ctx, &made, `INSERT INTO servers (id, project_id, user_id, name, description,
			availability_zone, image_id, docker_image_id, flavor_id, vcpus, ram_mb, disk_gb, vm_state,
			task_state, metadata, key_name, user_data, access_ipv4, access_ipv6, authorized_keys, personality,
			extra_specs, set_spec, reservation_id, tags, host, fault, desired_state)
		SELECT x.id, x.project_id, x.user_id, x.name, x.description, x.az, x.image_id, x.docker_image_id, x.flavor_id,
			x.vcpus, x.ram_mb, x.disk_gb, x.vm_state, x.task_state, x.metadata::jsonb, x.key_name, x.user_data,
			x.ip4, x.ip6, x.authorized_keys, x.personality::jsonb, x.extra_specs::jsonb, x.set_spec::jsonb,
			x.reservation_id, x.tags::text[], x.host, x.fault::jsonb, x.desired_state
		FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
			$9::text[], $10::int[], $11::int[], $12::int[], $13::text[], $14::text[], $15::text[], $16::text[],
			$17::text[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[], $23::text[], $24::text[],
			$25::text[], $26::text[], $27::text[], $28::text[])
			AS x(id, project_id, user_id, name, description, az, image_id, docker_image_id, flavor_id, vcpus, ram_mb,
				disk_gb, vm_state, task_state, metadata, key_name, user_data, ip4, ip6, authorized_keys, personality,
				extra_specs, set_spec, reservation_id, tags, host, fault, desired_state)
		ON CONFLICT (id) DO NOTHING
		RETURNING id::text`,
		pq.Array(ids), pq.Array(projects), pq.Array(users), pq.Array(names), pq.Array(descs), pq.Array(azs),
		pq.Array(images), pq.Array(dockerImages), pq.Array(flavors), pq.Array(vcpus), pq.Array(ram), pq.Array(disk),
		pq.Array(vmStates), pq.Array(taskStates), pq.Array(metas), pq.Array(keyNames), pq.Array(userData),
		pq.Array(ip4s), pq.Array(ip6s), pq.Array(authKeys), pq.Array(personalities), pq.Array(specs),
		pq.Array(setSpecs), pq.Array(reservations), pq.Array(tags), pq.Array(hosts), pq.Array(faults),
		pq.Array(desired)); err != nil {
		return err
	}
	if len(made) < n {
		got := map[string]bool{}
		for _, id := range made {
			got[id] = true
		}
		for _, m := range ms {
			if !got[m.ns.ID] {
				out[m.i].err = apierr.Conflictf("Server %s already exists.", m.ns.ID)
			}
		}
	}
	return nil
}

func (m *member) noHostMessage() string {
	return strings.TrimSpace("No valid host was found. " + m.why)
}

// recordCreates opens each member's "create" instance action with its
// events (the scheduling step, finished; the build, left open for the
// host's agent — or, with no host, the action finished in error) and adds
// group members, in three statements.
func recordCreates(ctx context.Context, tx *sqlx.Tx, ms []*member) error {
	n := len(ms)
	servers, requests, projects, users := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	failed := make([]bool, n)
	for i, m := range ms {
		servers[i], requests[i], projects[i], users[i] = m.ns.ID, m.ns.RequestID, m.ns.ProjectID, m.ns.UserID
		failed[i] = m.host == ""
	}
	var rows []struct {
		ID       int64  `db:"id"`
		ServerID string `db:"server_id"`
	}
	if err := tx.SelectContext(ctx, &rows, `INSERT INTO instance_actions (server_id, action, request_id, project_id,
			user_id, finish_time, message)
		SELECT s, 'create', r, p, u, CASE WHEN f THEN now() END, CASE WHEN f THEN 'Error' END
		FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bool[]) AS x(s, r, p, u, f)
		RETURNING id, server_id::text`,
		pq.Array(servers), pq.Array(requests), pq.Array(projects), pq.Array(users), pq.Array(failed)); err != nil {
		return err
	}
	action := make(map[string]int64, n)
	for _, r := range rows {
		action[r.ServerID] = r.ID
	}
	var (
		evActions           []int64
		evNames, evHosts    []string
		evResults           []string
		evDone              []bool
		memberIDs, groupIDs []string
	)
	event := func(a int64, name, host, result string, done bool) {
		evActions, evNames, evHosts = append(evActions, a), append(evNames, name), append(evHosts, host)
		evResults, evDone = append(evResults, result), append(evDone, done)
	}
	for _, m := range ms {
		a := action[m.ns.ID]
		if m.host == "" {
			event(a, "conductor_schedule_and_build_instances", "", "Error", true)
		} else {
			event(a, "conductor_schedule_and_build_instances", m.host, "Success", true)
			event(a, "compute__do_build_and_run_instance", m.host, "", false)
		}
		if m.group != nil {
			memberIDs, groupIDs = append(memberIDs, m.ns.ID), append(groupIDs, m.ns.GroupID)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO instance_action_events (action_id, event, host, result, finish_time)
		SELECT a, e, NULLIF(h, ''), NULLIF(r, ''), CASE WHEN d THEN now() END
		FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bool[]) WITH ORDINALITY AS x(a, e, h, r, d, o)
		ORDER BY o`,
		pq.Array(evActions), pq.Array(evNames), pq.Array(evHosts), pq.Array(evResults), pq.Array(evDone)); err != nil {
		return err
	}
	if len(memberIDs) == 0 {
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO server_group_members (server_id, group_id)
		SELECT * FROM unnest($1::uuid[], $2::uuid[])`, pq.Array(memberIDs), pq.Array(groupIDs))
	return err
}

// checkQuotas refuses the members that would take their project over its
// instances, cores or ram quota, as one create after another would: the
// batch's own servers are left out of the usage and added in batch order.
// A project whose three limits are all unlimited cannot be refused, so
// its usage is not counted (at 1,000 servers a project, counting is the
// create's most expensive statement). For the others the quota locks are
// taken in name order (so batches never deadlock on them), and then one
// statement, whose snapshot sees every create that committed while the
// locks were awaited, reads their limits and usage.
func checkQuotas(ctx context.Context, tx *sqlx.Tx, ms []*member, out []createResult) error {
	if len(ms) == 0 {
		return nil
	}
	var projects, ids []string
	for _, m := range ms {
		ids = append(ids, m.ns.ID)
		if !slices.Contains(projects, m.ns.ProjectID) {
			projects = append(projects, m.ns.ProjectID)
		}
	}
	type state struct {
		used   Usage
		limits map[string]int
	}
	byProject := map[string]*state{}
	var rows []struct {
		ProjectID string `db:"project_id"`
		Limits    []byte `db:"limits"`
		Usage
	}
	parse := func() error {
		for _, r := range rows {
			st := &state{used: r.Usage, limits: maps.Clone(DefaultQuotas)}
			if err := json.Unmarshal(r.Limits, &st.limits); err != nil {
				return err
			}
			byProject[r.ProjectID] = st
		}
		return nil
	}
	if err := tx.SelectContext(ctx, &rows, `SELECT u.p AS project_id,
			coalesce(json_object_agg(q.resource, q.hard_limit) FILTER (WHERE q.resource IS NOT NULL), '{}') AS limits,
			0 AS instances, 0 AS cores, 0 AS ram, 0 AS server_groups
		FROM unnest($1::text[]) AS u(p) LEFT JOIN quotas q ON q.project_id = u.p
		GROUP BY u.p`, pq.Array(projects)); err != nil {
		return err
	}
	if err := parse(); err != nil {
		return err
	}
	var limited []string
	for _, p := range projects {
		if l := byProject[p].limits; l["instances"] >= 0 || l["cores"] >= 0 || l["ram"] >= 0 {
			limited = append(limited, p)
		}
	}
	if len(limited) > 0 {
		slices.Sort(limited)
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext('quota:' || p))
			FROM unnest($1::text[]) AS p`, pq.Array(limited)); err != nil {
			return err
		}
		rows = rows[:0]
		if err := tx.SelectContext(ctx, &rows, `SELECT u.p AS project_id,
				(SELECT coalesce(json_object_agg(resource, hard_limit), '{}') FROM quotas q WHERE q.project_id = u.p) AS limits,
				x.instances, x.cores, x.ram, 0 AS server_groups
			FROM unnest($1::text[]) AS u(p),
			LATERAL (SELECT count(*) AS instances, coalesce(sum(vcpus), 0) AS cores, coalesce(sum(ram_mb), 0) AS ram
				FROM servers s WHERE s.project_id = u.p AND s.deleted_at IS NULL AND s.id <> ALL($2::uuid[])) x`,
			pq.Array(limited), pq.Array(ids)); err != nil {
			return err
		}
		if err := parse(); err != nil {
			return err
		}
	}
	for _, m := range ms {
		st, f := byProject[m.ns.ProjectID], m.ns.Flavor
		if err := overQuota(st.limits, &st.used, f.VCPUs, f.RAMMB); err != nil {
			out[m.i].err = err
			continue
		}
		st.used.Instances++
		st.used.Cores += f.VCPUs
		st.used.RAM += f.RAMMB
	}
	return nil
}

// readBack loads every member's server (with its ports) as CreateServer
// returns it: three statements for the batch.
func readBack(ctx context.Context, tx *sqlx.Tx, ms []*member, out []createResult) error {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ns.ID
		if m.prior != "" {
			ids[i] = m.prior
		}
	}
	var srvs []Server
	// One primary-key lookup per id (see loadGroups for the fence).
	if err := tx.SelectContext(ctx, &srvs, `SELECT s.* FROM unnest($1::uuid[]) AS u(id),
		LATERAL (SELECT `+serverCols+` FROM servers WHERE id = u.id OFFSET 0) s
		WHERE s.deleted_at IS NULL`,
		pq.Array(ids)); err != nil {
		return err
	}
	if err := withPorts(ctx, tx, srvs); err != nil {
		return err
	}
	byID := make(map[string]*Server, len(srvs))
	for i := range srvs {
		byID[srvs[i].ID] = &srvs[i]
	}
	for i, id := range ids {
		if srv := byID[id]; srv != nil {
			// Two members can name one prior server: each gets a copy.
			cp := *srv
			out[ms[i].i].srv = &cp
		} else {
			out[ms[i].i].err = apierr.NotFoundf("Instance %s could not be found.", id)
		}
	}
	return nil
}
