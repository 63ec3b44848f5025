package store_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"

	"berth/internal/apierr"
	"berth/internal/pgtest"
	"berth/region/scheduler"
	"berth/region/store"
	"berth/schema"
)

// batchEnv is a store whose creates are committed together: every
// create started within the linger of the first lands in one batch.
type batchEnv struct {
	t    *testing.T
	st   *store.Store
	tiny *store.Flavor
}

func newBatchEnv(t *testing.T, cfg store.PlacementBatch) *batchEnv {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	st.SetPlacementBatch(cfg)
	tiny, err := st.FindFlavor(ctx, "1") // m1.tiny: 1 vCPU, 512 MB, 1 GB
	if err != nil {
		t.Fatal(err)
	}
	return &batchEnv{t: t, st: st, tiny: tiny}
}

// oneBatch holds n creates for one batch: the first waits a second for
// the others.
func oneBatch(n int) store.PlacementBatch {
	return store.PlacementBatch{Max: n, Linger: time.Second, InFlight: 1}
}

// host registers a host with 2 vCPUs (32 with the 16× ratio) and memMB
// of RAM (1.5× that claimable: 1024 MB takes three m1.tiny).
func (e *batchEnv) host(name string, memMB int) {
	e.t.Helper()
	if err := e.st.RegisterHost(context.Background(), name, schema.HostRegister{VCPUs: 2, MemoryMB: memMB, DiskGB: 50}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *batchEnv) server(project, name string) store.NewServer {
	return store.NewServer{ID: uuid.NewString(), ProjectID: project, UserID: "u-" + project, Name: name,
		ImageID: "img", Flavor: e.tiny, AvailabilityZone: "nova", RequestID: "req-" + name}
}

type created struct {
	srv *store.Server
	err error
}

// createAll runs every create at once and returns their results in order.
func (e *batchEnv) createAll(nss []store.NewServer, candidates [][]string) []created {
	out := make([]created, len(nss))
	var wg sync.WaitGroup
	for i, ns := range nss {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].srv, out[i].err = e.st.CreateServer(context.Background(), ns, candidates[i], time.Minute, "test")
		}()
	}
	wg.Wait()
	return out
}

func same(n int, hosts ...string) [][]string {
	out := make([][]string, n)
	for i := range out {
		out[i] = hosts
	}
	return out
}

func (e *batchEnv) used(name string) int {
	e.t.Helper()
	h, err := e.st.FindHost(context.Background(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	return h.MemoryMBUsed
}

func (e *batchEnv) count(q string, args ...any) int {
	e.t.Helper()
	var n int
	if err := e.st.DB().Get(&n, q, args...); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// placedOn counts results by host ("" for ERROR, No valid host).
func placedOn(t *testing.T, res []created) map[string]int {
	t.Helper()
	out := map[string]int{}
	for i, r := range res {
		if r.err != nil {
			t.Fatalf("create %d: %v", i, r.err)
		}
		out[r.srv.Host.String]++
	}
	return out
}

func TestBatchNeverOvercommits(t *testing.T) {
	e := newBatchEnv(t, oneBatch(8))
	e.host("small", 1024)
	var nss []store.NewServer
	for i := range 8 {
		nss = append(nss, e.server("p", fmt.Sprintf("s%d", i)))
	}
	got := placedOn(t, e.createAll(nss, same(8, "small")))
	if got["small"] != 3 || got[""] != 5 {
		t.Errorf("placed %v, want exactly 3 on small and 5 with no valid host", got)
	}
	if u := e.used("small"); u != 1536 {
		t.Errorf("small's memory used %d, want 1536", u)
	}
	if b, n := e.st.PlacementStats(); b != 1 || n != 8 {
		t.Errorf("%d batches of %d creates, want 1 of 8", b, n)
	}
	if n := e.count(`SELECT count(*) FROM servers WHERE vm_state = 'error' AND fault->>'message' LIKE 'No valid host was found.%'`); n != 5 {
		t.Errorf("%d servers in ERROR with No valid host, want 5", n)
	}
}

// Several batches at once over a few hosts: row locks and re-checked
// claims keep every host within its capacity.
func TestConcurrentBatchesNeverOvercommit(t *testing.T) {
	e := newBatchEnv(t, store.PlacementBatch{Max: 4, Linger: time.Millisecond, InFlight: 4})
	hosts := []string{"a", "b", "c"}
	for _, h := range hosts {
		e.host(h, 1024)
	}
	const n = 40
	var nss []store.NewServer
	cands := make([][]string, n)
	for i := range n {
		nss = append(nss, e.server(fmt.Sprintf("p%d", i%5), fmt.Sprintf("s%d", i)))
		cands[i] = []string{hosts[i%3], hosts[(i+1)%3], hosts[(i+2)%3]}
	}
	got := placedOn(t, e.createAll(nss, cands))
	if got["a"] != 3 || got["b"] != 3 || got["c"] != 3 || got[""] != n-9 {
		t.Errorf("placed %v, want 3 on each host and %d with no valid host", got, n-9)
	}
	if bad := e.count(`SELECT count(*) FROM hosts h WHERE memory_mb_used > floor(memory_mb * ram_ratio)
		OR memory_mb_used <> (SELECT coalesce(sum(ram_mb), 0) FROM servers s WHERE s.host = h.name AND s.deleted_at IS NULL)`); bad != 0 {
		t.Errorf("%d hosts overcommitted or with usage unlike their servers'", bad)
	}
}

// Five creates that all rank one host first, which has room for three:
// the host is locked and read, three claim it, two go on to the next
// candidate.
func TestBatchSharesAHostByItsRoom(t *testing.T) {
	e := newBatchEnv(t, oneBatch(5))
	e.host("a", 1024)
	e.host("b", 8192)
	var nss []store.NewServer
	for i := range 5 {
		nss = append(nss, e.server("p", fmt.Sprintf("s%d", i)))
	}
	res := e.createAll(nss, same(5, "a", "b"))
	if got := placedOn(t, res); got["a"] != 3 || got["b"] != 2 {
		t.Errorf("placed %v, want 3 on a and 2 on b", got)
	}
	if u := e.used("a"); u != 1536 {
		t.Errorf("a's memory used %d, want 1536", u)
	}
	// Each server has its create action: scheduled, build open on its host.
	for _, r := range res {
		acts, err := e.st.ListActions(context.Background(), store.Scope{AllProjects: true}, r.srv.ID, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(acts) != 1 || acts[0].Action != "create" || len(acts[0].Events) != 2 ||
			acts[0].Events[0].Event != "conductor_schedule_and_build_instances" || acts[0].Events[0].Result.String != "Success" ||
			acts[0].Events[1].Event != "compute__do_build_and_run_instance" || acts[0].Events[1].FinishTime != nil ||
			acts[0].Events[1].Host.String != r.srv.Host.String {
			t.Errorf("actions of %s: %+v, want one create with a finished schedule event and an open build", r.srv.ID, acts)
		}
	}
}

// One failing create in a batch fails alone: over quota, a missing
// group and a duplicate id each get their error, and the others are
// committed without them.
func TestBatchMemberFailsAlone(t *testing.T) {
	e := newBatchEnv(t, oneBatch(5))
	ctx := context.Background()
	e.host("h", 8192)
	if err := e.st.SetQuotas(ctx, "full", map[string]int{"instances": 0}); err != nil {
		t.Fatal(err)
	}
	// A server made before, whose id a create then reuses.
	first := e.server("p", "first")
	if _, err := e.st.CreateServer(ctx, first, []string{"h"}, time.Minute, ""); err != nil {
		t.Fatal(err)
	}
	ok1, over, lost, dup, ok2 := e.server("p", "ok1"), e.server("full", "over"), e.server("p", "lost"),
		e.server("p", "dup"), e.server("q", "ok2")
	lost.GroupID = uuid.NewString()
	dup.ID = first.ID
	res := e.createAll([]store.NewServer{ok1, over, lost, dup, ok2}, same(5, "h"))
	for i, want := range []apierr.Kind{0, apierr.OverLimit, apierr.NotFound, apierr.Conflict, 0} {
		r := res[i]
		switch {
		case want == 0 && (r.err != nil || r.srv.Host.String != "h"):
			t.Errorf("create %d: %+v, %v; want placed on h", i, r.srv, r.err)
		case want != 0 && !apierr.Is(r.err, want):
			t.Errorf("create %d: error %v, want kind %v", i, r.err, want)
		}
	}
	if n := e.count(`SELECT count(*) FROM servers`); n != 3 {
		t.Errorf("%d servers, want 3 (first, ok1, ok2)", n)
	}
	if u := e.used("h"); u != 3*512 {
		t.Errorf("h's memory used %d, want %d: the failed creates' claims rolled back", u, 3*512)
	}
	if n := e.count(`SELECT count(*) FROM instance_actions`); n != 3 {
		t.Errorf("%d instance actions, want 3", n)
	}
}

// Members of one group in one batch keep its policy among themselves.
func TestBatchKeepsGroupPolicies(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy string
		rules  string
		want   func(got map[string]int) bool
		desc   string
	}{
		{"anti-affinity", scheduler.AntiAffinity, "", func(g map[string]int) bool { return g["h1"] == 1 && g["h2"] == 1 && g[""] == 2 },
			"one on each host, two with no valid host"},
		{"anti-affinity, two per host", scheduler.AntiAffinity, `{"max_server_per_host": 2}`,
			func(g map[string]int) bool { return g["h1"] == 2 && g["h2"] == 2 && g[""] == 0 }, "two on each host"},
		{"affinity", scheduler.Affinity, "", func(g map[string]int) bool { return g["h1"]+g["h2"] == 4 && g["h1"]*g["h2"] == 0 },
			"all four on one host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newBatchEnv(t, oneBatch(6))
			ctx := context.Background()
			e.host("h1", 8192)
			e.host("h2", 8192)
			g := store.ServerGroup{ID: uuid.NewString(), ProjectID: "p", UserID: "u-p", Name: "g", Policy: tc.policy}
			if tc.rules != "" {
				g.Rules = json.RawMessage(tc.rules)
			}
			if _, err := e.st.CreateServerGroup(ctx, g); err != nil {
				t.Fatal(err)
			}
			var nss []store.NewServer
			for i := range 6 {
				ns := e.server("p", fmt.Sprintf("s%d", i))
				if i%3 != 2 { // four members, two others
					ns.GroupID = g.ID
				}
				nss = append(nss, ns)
			}
			// Members alternate which host they rank first.
			cands := make([][]string, 6)
			for i := range cands {
				cands[i] = []string{"h1", "h2"}
				if i%2 == 1 {
					cands[i] = []string{"h2", "h1"}
				}
			}
			res := e.createAll(nss, cands)
			members, others := []created{}, []created{}
			for i, r := range res {
				if nss[i].GroupID != "" {
					members = append(members, r)
				} else {
					others = append(others, r)
				}
			}
			if got := placedOn(t, members); !tc.want(got) {
				t.Errorf("group members placed %v, want %s", got, tc.desc)
			}
			if got := placedOn(t, others); got[""] != 0 {
				t.Errorf("others placed %v, want both placed", got)
			}
			if b, _ := e.st.PlacementStats(); b != 1 {
				t.Errorf("%d batches, want 1", b)
			}
			found, err := e.st.FindServerGroup(ctx, store.Scope{ProjectID: "p"}, g.ID)
			if err != nil {
				t.Fatal(err)
			}
			if len(found.Members) != 4 {
				t.Errorf("group members %v, want 4", found.Members)
			}
		})
	}
}

// A group's server_group_members quota counts the members placed before
// in the same batch.
func TestBatchGroupMemberQuota(t *testing.T) {
	e := newBatchEnv(t, oneBatch(3))
	ctx := context.Background()
	e.host("h1", 8192)
	if err := e.st.SetQuotas(ctx, "p", map[string]int{"server_group_members": 2}); err != nil {
		t.Fatal(err)
	}
	g := store.ServerGroup{ID: uuid.NewString(), ProjectID: "p", UserID: "u-p", Name: "g", Policy: scheduler.SoftAntiAffinity}
	if _, err := e.st.CreateServerGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	var nss []store.NewServer
	for i := range 3 {
		ns := e.server("p", fmt.Sprintf("s%d", i))
		ns.GroupID = g.ID
		nss = append(nss, ns)
	}
	res := e.createAll(nss, same(3, "h1"))
	failed := 0
	for _, r := range res {
		if apierr.Is(r.err, apierr.OverLimit) {
			failed++
		} else if r.err != nil || r.srv.Host.String != "h1" {
			t.Errorf("create: %+v, %v; want placed on h1 or over the group quota", r.srv, r.err)
		}
	}
	if failed != 1 {
		t.Errorf("%d creates over the group quota, want 1", failed)
	}
}

// Creates retried with one request id inside one batch make one server,
// and every retry gets it; once it is deleted the id makes a new one.
func TestBatchRetriesMakeOneServer(t *testing.T) {
	e := newBatchEnv(t, oneBatch(4))
	ctx := context.Background()
	e.host("h", 8192)
	var nss []store.NewServer
	for i := range 4 {
		ns := e.server("p", fmt.Sprintf("s%d", i))
		ns.RetryKey = "req-client-1"
		if i == 3 {
			ns.RetryKey = "req-client-2"
		}
		nss = append(nss, ns)
	}
	res := e.createAll(nss, same(4, "h"))
	ids := map[string]int{}
	for i, r := range res {
		if r.err != nil {
			t.Fatalf("create %d: %v", i, r.err)
		}
		ids[r.srv.ID]++
	}
	if len(ids) != 2 || ids[res[0].srv.ID] != 3 {
		t.Errorf("servers returned %v, want one for the three retries and one for the other key", ids)
	}
	if n := e.count(`SELECT count(*) FROM servers`); n != 2 {
		t.Errorf("%d servers made, want 2", n)
	}
	if u := e.used("h"); u != 2*512 {
		t.Errorf("h's memory used %d, want %d", u, 2*512)
	}

	// A retry after the first server is gone makes a new one.
	lonely := e.server("p", "lonely")
	lonely.RetryKey = "req-client-3"
	srv, err := e.st.CreateServer(ctx, lonely, nil, time.Minute, "no hosts") // ERROR: deleted at once
	if err != nil {
		t.Fatal(err)
	}
	if err := e.st.DeleteServer(ctx, store.Caller{Scope: store.Scope{ProjectID: "p"}, ProjectID: "p", UserID: "u-p", RequestID: "req-d"}, srv.ID, time.Minute); err != nil {
		t.Fatal(err)
	}
	again := e.server("p", "again")
	again.RetryKey = "req-client-3"
	srv2, err := e.st.CreateServer(ctx, again, []string{"h"}, time.Minute, "")
	if err != nil {
		t.Fatal(err)
	}
	if srv2.ID != again.ID || srv2.Host.String != "h" {
		t.Errorf("retry after delete returned %s on %q, want the new server %s on h", srv2.ID, srv2.Host.String, again.ID)
	}
}

// A batch that loses a race (here PostgreSQL raises a real serialization
// failure in it) is rolled back and run again whole: every create is
// made once and claimed once.
func TestBatchRetriesSerializationFailure(t *testing.T) {
	e := newBatchEnv(t, oneBatch(4))
	e.host("h", 8192)
	var calls int
	e.st.SetBatchHook(func(ctx context.Context, tx *sqlx.Tx) error {
		calls++
		if calls > 1 {
			return nil
		}
		_, err := tx.ExecContext(ctx, `DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = 'serialization_failure'; END $$`)
		return err
	})
	var nss []store.NewServer
	for i := range 4 {
		nss = append(nss, e.server("p", fmt.Sprintf("s%d", i)))
	}
	if got := placedOn(t, e.createAll(nss, same(4, "h"))); got["h"] != 4 {
		t.Errorf("placed %v, want all 4 on h", got)
	}
	if calls != 2 {
		t.Errorf("batch ran %d times, want 2 (a retry after the failure)", calls)
	}
	if n := e.count(`SELECT count(*) FROM servers`); n != 4 {
		t.Errorf("%d servers, want 4", n)
	}
	if u := e.used("h"); u != 4*512 {
		t.Errorf("h's memory used %d, want %d", u, 4*512)
	}
	if n := e.count(`SELECT count(*) FROM instance_action_events`); n != 8 {
		t.Errorf("%d action events, want 8", n)
	}
}

// A create whose caller gave up before its batch began is left out.
func TestBatchSkipsAbandonedCreate(t *testing.T) {
	e := newBatchEnv(t, oneBatch(2))
	e.host("h", 8192)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.st.CreateServer(ctx, e.server("p", "gone"), []string{"h"}, time.Minute, ""); err == nil {
		t.Fatal("create with a cancelled context succeeded")
	}
	if n := e.count(`SELECT count(*) FROM servers`); n != 0 {
		t.Errorf("%d servers, want 0", n)
	}
}

// PlaceServer ranks only the first candidates; when the view is stale
// and all of them are full in the database, the batch ranks the rest
// instead of answering "No valid host".
func TestPlaceServerRanksTheRest(t *testing.T) {
	e := newBatchEnv(t, oneBatch(1))
	ctx := context.Background()
	old := store.HostViewTTL
	store.HostViewTTL = time.Hour
	t.Cleanup(func() { store.HostViewTTL = old })
	n := scheduler.Best + 3
	for i := range n {
		e.host(fmt.Sprintf("h%02d", i), 1024+64*i) // the last ones weigh most
	}
	req := scheduler.Request{VCPUs: 1, MemoryMB: 512, DiskGB: 1, Now: time.Now(), Grace: time.Minute}
	// Load the view, then fill the heaviest Best hosts behind its back.
	if _, _, _, err := e.st.RankHosts(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.DB().ExecContext(ctx, `UPDATE hosts SET memory_mb_used = floor(memory_mb * ram_ratio)
		WHERE name >= $1`, fmt.Sprintf("h%02d", n-scheduler.Best)); err != nil {
		t.Fatal(err)
	}
	srv, err := e.st.PlaceServer(ctx, e.server("p", "s"), req)
	if err != nil {
		t.Fatal(err)
	}
	if h := srv.Host.String; h == "" || h >= fmt.Sprintf("h%02d", n-scheduler.Best) {
		t.Errorf("placed on %q, want one of the first %d hosts", h, n-scheduler.Best)
	}

	// With every host full the answer is No valid host, with the reason.
	if _, err := e.st.DB().ExecContext(ctx, `UPDATE hosts SET memory_mb_used = floor(memory_mb * ram_ratio)`); err != nil {
		t.Fatal(err)
	}
	srv, err = e.st.PlaceServer(ctx, e.server("p", "t"), req)
	if err != nil {
		t.Fatal(err)
	}
	var fault store.FaultBody
	_ = json.Unmarshal(srv.Fault, &fault)
	if srv.Host.Valid || !strings.HasPrefix(fault.Message, "No valid host was found.") {
		t.Errorf("with every host full: host %q, fault %q; want No valid host", srv.Host.String, fault.Message)
	}
}
