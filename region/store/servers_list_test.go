package store_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"berth/internal/apierr"
	"berth/internal/pgtest"
	"berth/region/store"
	"berth/schema"
)

// seedDB opens a store with host h1, a default network and the given
// servers of project p1 (named as given, newest first), each with a port
// in the project's default security group. It returns the store and the
// servers' ids in list order.
func seedDB(t *testing.T, names ...string) (*store.Store, []string) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.RegisterHost(ctx, "h1", schema.HostRegister{VCPUs: 64, MemoryMB: 1 << 20, DiskGB: 1000}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.EnsureDefaultNetwork(ctx, "private", "10.9.0.0/16"); err != nil {
		t.Fatal(err)
	}
	db := st.DB()
	exec(t, db, `INSERT INTO security_groups (id, project_id, name) VALUES (gen_random_uuid(), 'p1', 'default')`)
	var ids []string
	for i, name := range names {
		var id string
		if err := db.Get(&id, `INSERT INTO servers (id, project_id, user_id, name, host, image_id, flavor_id, vcpus,
				ram_mb, disk_gb, vm_state, power_state, created_at)
			VALUES (gen_random_uuid(), 'p1', 'u1', $1, 'h1', 'img', '1', 1, 512, 1, 'active', 1, now() - $2 * interval '1 second')
			RETURNING id::text`, name, i); err != nil {
			t.Fatal(err)
		}
		exec(t, db, `INSERT INTO ports (id, network_id, project_id, server_id, mac_address, ip_address)
			SELECT gen_random_uuid(), n.id, 'p1', $1, ('fa:16:3e:00:00:' || lpad(to_hex($2::int), 2, '0'))::macaddr,
				'10.9.0.10'::inet + $2::int
			FROM networks n WHERE n.is_default`, id, i)
		exec(t, db, `INSERT INTO port_security_groups (port_id, group_id)
			SELECT p.id, g.id FROM ports p, security_groups g WHERE p.server_id = $1 AND g.project_id = 'p1'`, id)
		ids = append(ids, id)
	}
	return st, ids
}

func exec(t *testing.T, db *sqlx.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// stampOf reads a server's stamp as a show does.
func stampOf(t *testing.T, st *store.Store, id string) store.ServerStamp {
	t.Helper()
	s, _, err := st.FindServerStamped(context.Background(), store.Scope{AllProjects: true}, id,
		func(store.ServerStamp) bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestServerVersionFollowsWrites: a server's version changes with every
// write to what its body shows, however it is made (raw SQL here: the
// triggers, not the store's code paths, are what is tested), and not with
// writes to anything else.
func TestServerVersionFollowsWrites(t *testing.T) {
	st, ids := seedDB(t, "a", "b")
	db := st.DB()
	a, b := ids[0], ids[1]
	for _, tc := range []struct {
		name    string
		sql     string
		changed bool
	}{
		{"server row", `UPDATE servers SET name = 'a2' WHERE id = '` + a + `'`, true},
		{"row locked, not written", `SELECT 1 FROM servers WHERE id = '` + a + `' FOR UPDATE`, false},
		{"port address", `UPDATE ports SET ip_address = ip_address + 100 WHERE server_id = '` + a + `'`, true},
		{"port added", `INSERT INTO ports (id, network_id, project_id, server_id, mac_address, ip_address)
			SELECT '00000000-0000-4000-8000-0000000000aa', n.id, 'p1', '` + a + `', 'fa:16:3e:00:01:aa', '10.9.1.170'
			FROM networks n WHERE n.is_default`, true},
		{"port joins a group", `INSERT INTO port_security_groups (port_id, group_id)
			SELECT '00000000-0000-4000-8000-0000000000aa', id FROM security_groups WHERE project_id = 'p1'`, true},
		{"port leaves it", `DELETE FROM port_security_groups WHERE port_id = '00000000-0000-4000-8000-0000000000aa'`, true},
		{"port detached", `UPDATE ports SET server_id = NULL WHERE id = '00000000-0000-4000-8000-0000000000aa'`, true},
		{"port attached", `UPDATE ports SET server_id = '` + a + `' WHERE id = '00000000-0000-4000-8000-0000000000aa'`, true},
		{"port deleted", `DELETE FROM ports WHERE id = '00000000-0000-4000-8000-0000000000aa'`, true},
		{"network renamed", `UPDATE networks SET name = 'private2' WHERE is_default`, true},
		{"network's MTU", `UPDATE networks SET mtu = 1400 WHERE is_default`, false},
		{"security group renamed", `UPDATE security_groups SET name = 'web' WHERE project_id = 'p1'`, true},
		{"security group's description", `UPDATE security_groups SET description = 'd' WHERE project_id = 'p1'`, false},
		{"another server's port", `UPDATE ports SET ip_address = ip_address + 200 WHERE server_id = '` + b + `'`, false},
		{"host heartbeat", `UPDATE hosts SET last_heartbeat = now()`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := stampOf(t, st, a)
			exec(t, db, tc.sql)
			after := stampOf(t, st, a)
			if changed := after.Version != before.Version; changed != tc.changed {
				t.Errorf("version %+v → %+v: changed %v, want %v", before.Version, after.Version, changed, tc.changed)
			}
		})
	}
}

// TestAgentReportsChangeVersionOnlyWithNews: an agent reports every set
// every few seconds; a report that says nothing new must not renew the
// server's version (else nothing could stay cached).
func TestAgentReportsChangeVersionOnlyWithNews(t *testing.T) {
	st, ids := seedDB(t, "a")
	ctx := context.Background()
	exec(t, st.DB(), `UPDATE servers SET observed_generation = generation`)
	obs := schema.ObservedSet{ID: ids[0], Generation: 1, Exists: true, PowerState: schema.PowerRunning,
		Containers: []schema.ObservedContainer{{Role: "app", Name: "app", ID: "c1", State: "running", StartedAt: time.Unix(1e9, 0)}}}
	report := func() store.ServerVersion {
		t.Helper()
		if err := st.ApplyObserved(ctx, "h1", obs); err != nil {
			t.Fatal(err)
		}
		return stampOf(t, st, ids[0]).Version
	}
	first := report()
	if again := report(); again != first {
		t.Errorf("the same report twice: version %+v → %+v, want unchanged", first, again)
	}
	obs.Containers[0].RestartCount = 1
	if news := report(); news == first {
		t.Errorf("a report with a restart left the version at %+v", news)
	}
	obs.PowerState = schema.PowerShutdown
	before := stampOf(t, st, ids[0]).Version
	if news := report(); news == before {
		t.Errorf("a report with a new power state left the version at %+v", news)
	}
}

// TestListServerStamps: the stamps list as ListServers does (order,
// markers, scope) and carry names and hosts of any bytes.
func TestListServerStamps(t *testing.T) {
	names := []string{"plain", "with:colons:1:2", "サーバー", "a 12:34 b", "last"}
	st, ids := seedDB(t, names...)
	ctx := context.Background()
	exec(t, st.DB(), `INSERT INTO hosts (name, vcpus, memory_mb, disk_gb) VALUES ('h:2', 1, 1, 1)`)
	exec(t, st.DB(), `UPDATE servers SET host = 'h:2' WHERE id = $1`, ids[1])
	p1 := store.ServerFilter{Scope: store.Scope{ProjectID: "p1"}}

	got, rows, err := st.ListServerStamps(ctx, p1, store.StampName, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(names) || rows != nil {
		t.Fatalf("got %d stamps and rows %v, want %d and none", len(got), rows, len(names))
	}
	full, err := st.ListServers(ctx, p1)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if got[i].ID != ids[i] || got[i].Name != names[i] || full[i].ID != ids[i] {
			t.Errorf("stamp %d = %+v (ListServers %s), want %s named %q", i, got[i], full[i].ID, ids[i], names[i])
		}
	}
	hosts, _, err := st.ListServerStamps(ctx, p1, store.StampHost, nil)
	if err != nil {
		t.Fatal(err)
	}
	if hosts[0].Host != "h1" || hosts[1].Host != "h:2" || hosts[1].Name != "" {
		t.Errorf("hosts = %q, %q (name %q), want h1, h:2 and no name", hosts[0].Host, hosts[1].Host, hosts[1].Name)
	}

	// need picks whose rows to read.
	_, rows, err = st.ListServerStamps(ctx, p1, store.StampNothing, func(s []store.ServerStamp) []int { return []int{1, 3} })
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[ids[1]] == nil || rows[ids[3]] == nil || rows[ids[3]].Name != names[3] || len(rows[ids[3]].Ports) != 1 ||
		rows[ids[3]].SecurityGroupNames[0] != "default" {
		t.Errorf("rows = %+v, want servers 1 and 3 with their port and group", rows)
	}

	for _, tc := range []struct {
		name   string
		marker string
		limit  int
		want   []string
		bad    bool // an apierr.Invalid
	}{
		{name: "first page", limit: 2, want: ids[:2]},
		{name: "after a marker", marker: ids[1], limit: 2, want: ids[2:4]},
		{name: "last page", marker: ids[3], limit: 2, want: ids[4:]},
		{name: "after the last", marker: ids[4], limit: 2},
		{name: "unknown marker", marker: "00000000-0000-4000-8000-000000000000", bad: true},
		{name: "not an id", marker: "x", bad: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := p1
			f.Marker, f.Limit = tc.marker, tc.limit
			got, _, err := st.ListServerStamps(ctx, f, store.StampNothing, nil)
			full, ferr := st.ListServers(ctx, f)
			if tc.bad {
				if !apierr.Is(err, apierr.Invalid) || !apierr.Is(ferr, apierr.Invalid) {
					t.Fatalf("errors %v and %v, want Invalid from both", err, ferr)
				}
				return
			}
			if err != nil || ferr != nil {
				t.Fatal(err, ferr)
			}
			var gotIDs, fullIDs []string
			for i := range got {
				gotIDs = append(gotIDs, got[i].ID)
			}
			for i := range full {
				fullIDs = append(fullIDs, full[i].ID)
			}
			if strings.Join(gotIDs, ",") != strings.Join(tc.want, ",") || strings.Join(fullIDs, ",") != strings.Join(tc.want, ",") {
				t.Errorf("stamps %v, ListServers %v, want %v", gotIDs, fullIDs, tc.want)
			}
		})
	}

	// Another project sees none of them; changes-since shows deleted ones.
	if got, _, err := st.ListServerStamps(ctx, store.ServerFilter{Scope: store.Scope{ProjectID: "p2"}}, store.StampNothing, nil); err != nil || len(got) != 0 {
		t.Errorf("p2 lists %d (%v), want 0", len(got), err)
	}
	exec(t, st.DB(), `UPDATE servers SET deleted_at = now(), vm_state = 'deleted' WHERE id = $1`, ids[0])
	if got, _, _ := st.ListServerStamps(ctx, p1, store.StampNothing, nil); len(got) != len(ids)-1 {
		t.Errorf("after a delete %d listed, want %d", len(got), len(ids)-1)
	}
	since := time.Now().Add(-time.Hour)
	if got, _, _ := st.ListServerStamps(ctx, store.ServerFilter{Scope: p1.Scope, ChangesSince: &since}, store.StampNothing, nil); len(got) != len(ids) {
		t.Errorf("changes-since lists %d, want %d with the deleted one", len(got), len(ids))
	}
}
