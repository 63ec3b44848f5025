package faults

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	_ "github.com/lib/pq" // the postgres driver
	"github.com/vishvananda/netlink"

	"berth/internal/devstack"
)

// regionDB opens region's database (closed when the test ends).
func regionDB(t testing.TB, s *devstack.Stack) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", s.RegionDSN())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(2)
	t.Cleanup(func() { db.Close() })
	return db
}

// liveServer is a region row of a server not yet deleted.
type liveServer struct {
	id, name, vmState, host string
	task                    sql.NullString
	hasFault                bool
	power                   int
}

func liveServers(ctx context.Context, db *sql.DB) (map[string]liveServer, error) {
	rows, err := db.QueryContext(ctx, `SELECT id, name, vm_state, coalesce(host, ''), task_state, fault IS NOT NULL, power_state
		FROM servers WHERE deleted_at IS NULL`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]liveServer{}
	for rows.Next() {
		var ls liveServer
		if err := rows.Scan(&ls.id, &ls.name, &ls.vmState, &ls.host, &ls.task, &ls.hasFault, &ls.power); err != nil {
			return nil, err
		}
		out[ls.id] = ls
	}
	return out, rows.Err()
}

// violations lists every broken invariant of the whole stack right now:
//
//   - every live server has settled (no task in flight) and an ERROR one
//     carries a fault;
//   - no host's claims exceed its capacity × ratio, and each host's claims
//     are exactly the sum of its live servers' flavors;
//   - every instance action of a settled server is finished;
//   - every container, OVS interface and veth marked for this host belongs
//     to a live server placed on it, and every live, settled ACTIVE or
//     SHUTOFF server on the host has its containers.
func violations(ctx context.Context, s *devstack.Stack, db *sql.DB) ([]string, error) {
	var out []string
	live, err := liveServers(ctx, db)
	if err != nil {
		return nil, err
	}
	for _, ls := range live {
		if ls.task.Valid {
			out = append(out, fmt.Sprintf("server %s (%s) still has task %s (vm_state %s)", ls.id, ls.name, ls.task.String, ls.vmState))
		}
		if ls.vmState == "error" && !ls.hasFault {
			out = append(out, fmt.Sprintf("server %s (%s) is in ERROR without a fault", ls.id, ls.name))
		}
	}

	// Capacity and claims.
	rows, err := db.QueryContext(ctx, `SELECT h.name, h.vcpus_used, h.memory_mb_used, h.disk_gb_used,
			h.vcpus * h.cpu_ratio, h.memory_mb * h.ram_ratio, h.disk_gb * h.disk_ratio,
			coalesce(sum(s.vcpus), 0), coalesce(sum(s.ram_mb), 0), coalesce(sum(s.disk_gb), 0)
		FROM hosts h LEFT JOIN servers s ON s.host = h.name AND s.deleted_at IS NULL
		GROUP BY h.name`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var name string
		var vu, mu, du int
		var vc, mc, dc float64
		var vs, ms, ds int
		if err := rows.Scan(&name, &vu, &mu, &du, &vc, &mc, &dc, &vs, &ms, &ds); err != nil {
			rows.Close()
			return nil, err
		}
		if float64(vu) > vc || float64(mu) > mc || float64(du) > dc {
			out = append(out, fmt.Sprintf("host %s overcommitted: used vcpus %d/%.0f ram %d/%.0f disk %d/%.0f", name, vu, vc, mu, mc, du, dc))
		}
		if vu != vs || mu != ms || du != ds {
			out = append(out, fmt.Sprintf("host %s claims vcpus %d ram %d disk %d, but its live servers add up to %d, %d, %d", name, vu, mu, du, vs, ms, ds))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}

	// Instance actions of settled servers (and of deleted ones) are finished.
	rows, err = db.QueryContext(ctx, `SELECT a.server_id, a.action, a.request_id FROM instance_actions a
		JOIN servers s ON s.id = a.server_id
		WHERE a.finish_time IS NULL AND s.task_state IS NULL`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var id, act, req string
		if err := rows.Scan(&id, &act, &req); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, fmt.Sprintf("instance action %s (%s) of server %s is not finished", act, req, id))
	}
	rows.Close()

	// Ports of deleted servers.
	var stale int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM ports p JOIN servers s ON s.id = p.server_id
		WHERE s.deleted_at IS NOT NULL`).Scan(&stale); err != nil {
		return nil, err
	}
	if stale > 0 {
		out = append(out, fmt.Sprintf("%d ports still attached to deleted servers", stale))
	}

	onHost := func(set string) bool {
		ls, ok := live[set]
		return ok && ls.host == s.HostName()
	}

	// Docker.
	cs, err := s.Docker().ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", devstack.LabelHost+"="+s.HostName()))})
	if err != nil {
		return nil, err
	}
	roles := map[string][]string{}
	for _, c := range cs {
		set := c.Labels[devstack.LabelSet]
		if !onHost(set) {
			out = append(out, fmt.Sprintf("orphan container %.12s %v (set %s, %s)", c.ID, c.Names, set, c.State))
			continue
		}
		roles[set] = append(roles[set], c.Labels[devstack.LabelRole])
	}
	for _, ls := range live {
		if ls.host != s.HostName() || ls.task.Valid || (ls.vmState != "active" && ls.vmState != "stopped") {
			continue
		}
		if !slices.Contains(roles[ls.id], "infra") || !slices.Contains(roles[ls.id], "app") {
			out = append(out, fmt.Sprintf("server %s (%s, %s) has containers %v, want infra and app", ls.id, ls.name, ls.vmState, roles[ls.id]))
		}
	}

	// OVS interfaces marked for this host.
	ifaces, err := ovsInterfaces(ctx, s)
	if err != nil {
		return nil, err
	}
	for name, set := range ifaces {
		if !onHost(set) {
			out = append(out, fmt.Sprintf("orphan OVS interface %s (set %s)", name, set))
		}
	}

	// veths marked for this host.
	links, err := linkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		f := strings.Fields(l.Attrs().Alias)
		if len(f) < 3 || f[0] != "berth" || f[1] != "host="+s.HostName() {
			continue
		}
		set := strings.TrimPrefix(f[2], "set=")
		if !onHost(set) {
			out = append(out, fmt.Sprintf("orphan veth %s (set %s)", l.Attrs().Name, set))
		}
	}
	slices.Sort(out)
	return out, nil
}

// ovsInterfaces maps the names of OVS interfaces marked for this stack's
// host to their set ids.
func ovsInterfaces(ctx context.Context, s *devstack.Stack) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ovs-vsctl", "--db="+s.OVSDB(), "--timeout=10", "--format=json", "--data=json",
		"--columns=name,external_ids", "find", "Interface", "external_ids:berth-host="+s.HostName()).Output()
	if err != nil {
		return nil, fmt.Errorf("ovs-vsctl find: %w", err)
	}
	var tbl struct {
		Data [][]json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(out, &tbl); err != nil {
		return nil, err
	}
	res := map[string]string{}
	for _, row := range tbl.Data {
		if len(row) != 2 {
			continue
		}
		var name string
		_ = json.Unmarshal(row[0], &name)
		var m []json.RawMessage // ["map", [[k, v], ...]]
		_ = json.Unmarshal(row[1], &m)
		set := ""
		if len(m) == 2 {
			var kv [][2]string
			_ = json.Unmarshal(m[1], &kv)
			for _, p := range kv {
				if p[0] == "berth-set" {
					set = p[1]
				}
			}
		}
		res[name] = set
	}
	return res, nil
}

// settle waits until the stack has no broken invariant, and fails the test
// with the last list when the timeout passes.
func settle(t *testing.T, s *devstack.Stack, timeout time.Duration) time.Duration {
	t.Helper()
	db := regionDB(t, s)
	start := time.Now()
	deadline := start.Add(timeout)
	var last []string
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		v, err := violations(ctx, s, db)
		cancel()
		if err == nil && len(v) == 0 {
			return time.Since(start)
		}
		if err != nil {
			last = []string{"cannot check: " + err.Error()}
		} else {
			last = v
		}
		if time.Now().After(deadline) {
			t.Fatalf("invariants still broken after %s:\n  %s", timeout, strings.Join(last, "\n  "))
		}
		time.Sleep(time.Second)
	}
}

// linkList is netlink.LinkList, retried while a concurrent change
// interrupts the dump (the agent adds and removes veths meanwhile).
func linkList() ([]netlink.Link, error) {
	for i := 0; ; i++ {
		links, err := netlink.LinkList()
		if err == nil || !errors.Is(err, netlink.ErrDumpInterrupted) || i == 20 {
			return links, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// linksOf lists the host-side veths the agent made for a set (alias
// "berth host=<host> set=<id> port=…").
func linksOf(s *devstack.Stack, setID string) ([]string, error) {
	links, err := linkList()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, l := range links {
		if strings.Contains(l.Attrs().Alias, "host="+s.HostName()+" set="+setID) {
			out = append(out, l.Attrs().Name)
		}
	}
	slices.Sort(out)
	return out, nil
}

func runOut(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	return string(out), err
}
