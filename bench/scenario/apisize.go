package scenario

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/lib/pq"

	"berth/bench/osapi"
	"berth/bench/report"
	"berth/bench/stats"
	"berth/internal/devstack"
	"berth/internal/keystone"
	"berth/schema"
)

// APIAtSize seeds 10,000 servers (1,000 in quick mode) into a region of
// its own and measures list and show under 32 concurrent clients, and what
// token validation costs with a warm and a cold cache.
func (e *Env) APIAtSize(ctx context.Context) error {
	n, dur, clients, serial := 10000, 15*time.Second, 32, 400
	if e.Quick {
		n, dur, serial = 1000, 2*time.Second, 40
	}
	reg, err := e.StartRegion(ctx, "api")
	if err != nil {
		return err
	}
	defer reg.Stop()
	if _, err := e.C.Do(ctx, osapi.Request{Method: http.MethodPut, URL: reg.Base + "/internal/v1/hosts/seed-host",
		AgentToken: e.Stack.AgentToken(), Body: schema.HostRegister{VCPUs: 64, MemoryMB: 262144, DiskGB: 4000}}, nil); err != nil {
		return fmt.Errorf("register seed host: %w", err)
	}
	seedStart := time.Now()
	if err := seedServers(ctx, reg, n, e.Demo, e.ImageID, e.DockerImageID); err != nil {
		return fmt.Errorf("seed servers: %w", err)
	}
	seedTook := time.Since(seedStart)
	e.Log.Info("seeded servers", "n", n, "took", seedTook.Round(time.Millisecond))

	// Markers of every page of 1,000, and every id, for the clients.
	var ids []string
	if err := reg.DB.QueryRowContext(ctx, `SELECT count(*) FROM servers`).Err(); err != nil {
		return err
	}
	rows, err := reg.DB.QueryContext(ctx, `SELECT id::text FROM servers WHERE deleted_at IS NULL ORDER BY created_at DESC, id DESC`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	markers := []string{""}
	for i := 999; i+1 < len(ids); i += 1000 {
		markers = append(markers, ids[i])
	}
	// Every page after a marker is full: 1,000 servers (the last one too).
	pageLen := min(1000, len(ids))
	tok := e.Demo.Token
	get := func(ctx context.Context, u string) error {
		_, err := e.C.Do(ctx, osapi.Request{Method: http.MethodGet, URL: u, Token: tok}, nil)
		return err
	}
	// The load's clients read every answer whole and check it without
	// decoding it (decoding 1.3 MB of JSON would put more of the bench's
	// own CPU on the two cores region and PostgreSQL share): a page must
	// hold pageLen servers, a show the server asked for. They read through
	// a larger buffer than the shared client's, into one per worker.
	lc := osapi.New(clients)
	lc.HTTP.Transport.(*http.Transport).ReadBufferSize = 64 << 10
	bufs := make([]bytes.Buffer, clients)
	fetch := func(ctx context.Context, w int, u string) ([]byte, error) {
		b := &bufs[w]
		b.Reset()
		_, err := lc.Do(ctx, osapi.Request{Method: http.MethodGet, URL: u, Token: tok}, b)
		return b.Bytes(), err
	}
	if err := get(ctx, reg.Compute()+"/servers/"+ids[0]); err != nil { // warms the token cache
		return err
	}
	sessions := func() int64 {
		var s int64
		_ = reg.DB.QueryRowContext(ctx, `SELECT sessions FROM pg_stat_database WHERE datname = current_database()`).Scan(&s)
		return s
	}
	s0 := sessions()
	regPID := map[string]int{"region (api)": reg.PID()}
	c0 := e.snapCPU(regPID)
	page := func(ctx context.Context, w int, marker string) error {
		q := url.Values{"limit": {"1000"}}
		if marker != "" {
			q.Set("marker", marker)
		}
		body, err := fetch(ctx, w, reg.Compute()+"/servers/detail?"+q.Encode())
		if err != nil {
			return err
		}
		// Each server body has its vm_state once. (The pattern starts after
		// the quote: bytes.Count looks for its first byte, and a JSON
		// page is full of quotes; 14× slower with it.)
		if got := bytes.Count(body, []byte(`OS-EXT-STS:vm_state"`)); got != pageLen {
			return fmt.Errorf("page after %q: %d servers, want %d", marker, got, pageLen)
		}
		return nil
	}
	// Cold: each page read once by one client, the first time region
	// renders its servers (it keeps their JSON for later reads).
	var coldPages []time.Duration
	for _, m := range markers {
		t := time.Now()
		if err := page(ctx, 0, m); err != nil {
			return err
		}
		coldPages = append(coldPages, time.Since(t))
	}
	list := load(ctx, clients, dur, 0, func(ctx context.Context, w, seq int) error {
		return page(ctx, w, markers[rand.IntN(len(markers))])
	})
	s1 := sessions()
	c1 := e.snapCPU(regPID)
	show := load(ctx, clients, dur, 0, func(ctx context.Context, w, seq int) error {
		id := ids[rand.IntN(len(ids))]
		body, err := fetch(ctx, w, reg.Compute()+"/servers/"+id)
		if err != nil {
			return err
		}
		if !bytes.HasPrefix(body, []byte(`{"server":{"id":"`+id+`"`)) {
			return fmt.Errorf("show %s: got %.100s", id, body)
		}
		return nil
	})
	s2 := sessions()
	c2 := e.snapCPU(regPID)
	listCPU, showCPU := c0.to(c1), c1.to(c2)
	perPage := func(u cpuUse, n int, k string) float64 { return u.Seconds[k] / float64(max(n, 1)) }
	if list.Errors > 0 || show.Errors > 0 {
		return fmt.Errorf("errors under load: list %d (%v), show %d (%v)", list.Errors, list.FirstErr, show.Errors, show.FirstErr)
	}
	rss, rssErr := RSS(reg.PID())

	// One client: the latency of a page without queueing, and the same
	// page's two queries sent straight to PostgreSQL.
	var page1, pageSQL []time.Duration
	for i := range max(5, serial/20) {
		m := markers[i%len(markers)]
		q := url.Values{"limit": {"1000"}}
		if m != "" {
			q.Set("marker", m)
		}
		t := time.Now()
		if err := get(ctx, reg.Compute()+"/servers/detail?"+q.Encode()); err != nil {
			return err
		}
		page1 = append(page1, time.Since(t))
		t = time.Now()
		if err := sqlPage(ctx, reg, e.Demo.ProjectID, m); err != nil {
			return err
		}
		pageSQL = append(pageSQL, time.Since(t))
	}

	// Token validation: one client, an authenticated request that stops
	// right after auth (a malformed id is 404 without a query) against the
	// unauthenticated version document, interleaved.
	var authed, anon []time.Duration
	for range serial {
		t := time.Now()
		_, err := e.C.Do(ctx, osapi.Request{Method: http.MethodGet, URL: reg.Compute() + "/servers/x", Token: tok, OK: []int{404}}, nil)
		if err != nil {
			return err
		}
		authed = append(authed, time.Since(t))
		t = time.Now()
		if _, err := e.C.Do(ctx, osapi.Request{Method: http.MethodGet, URL: reg.Compute() + "/"}, nil); err != nil {
			return err
		}
		anon = append(anon, time.Since(t))
	}
	// Cold: a token region has never seen, so it asks Keystone.
	var cold []time.Duration
	for range min(10, serial) {
		t0, err := e.C.PasswordToken(ctx, e.Stack.KeystoneURL(), devstack.UserDemo, e.Stack.Password(devstack.UserDemo), devstack.ProjectDemo)
		if err != nil {
			return err
		}
		t := time.Now()
		if _, err := e.C.Do(ctx, osapi.Request{Method: http.MethodGet, URL: reg.Compute() + "/servers/x", Token: t0.Token, OK: []int{404}}, nil); err != nil {
			return err
		}
		cold = append(cold, time.Since(t))
	}
	hit := validatorHitCost()

	r := e.Report
	ls, ss := stats.Durations(list.Lat), stats.Durations(show.Lat)
	as, bs, cs := stats.Durations(authed), stats.Durations(anon), stats.Durations(cold)
	r.Add(report.Row{ID: "4a", Metric: fmt.Sprintf("GET /servers/detail?limit=1000, %d servers, %d clients", n, clients), Unit: "s", Value: &ls,
		Target: "p99 ≤ 100 ms", Met: report.B(ls.P99 <= 0.1), Note: fmt.Sprintf("%.1f pages/s", list.Rate())})
	p1, psql, pc := stats.Durations(page1), stats.Durations(pageSQL), stats.Durations(coldPages)
	r.Add(report.Row{ID: "4a'", Metric: "the same page, one client", Unit: "s", Value: &p1,
		Baseline: "its SQL run directly", BaselineValue: &psql, Ratio: stats.Ratio(p1.P50, psql.P50)})
	r.Add(report.Row{ID: "4a''", Metric: "a page read for the first time since region started (cold render cache), one client",
		Unit: "s", Value: &pc, Baseline: "the same page warm (4a')", BaselineValue: &p1, Ratio: stats.Ratio(pc.P50, p1.P50)})
	r.Add(report.Row{ID: "4b", Metric: fmt.Sprintf("GET /servers/{id}, %d clients", clients), Unit: "s", Value: &ss,
		Note: fmt.Sprintf("%.0f req/s", show.Rate())})
	r.Add(report.Row{ID: "4c", Metric: "token check, warm cache (authenticated 404, no DB)", Unit: "s", Value: &as,
		Baseline: "unauthenticated GET /", BaselineValue: &bs, Ratio: stats.Ratio(as.P50, bs.P50)})
	r.Add(report.Row{ID: "4d", Metric: "token check, cold cache (Keystone validation)", Unit: "s", Value: &cs,
		Baseline: "warm", BaselineValue: &as, Ratio: stats.Ratio(cs.P50, as.P50)})
	r.Add(report.Row{ID: "4e", Metric: "Validator.Validate cache hit, in-process (testing.B)", Unit: "s", Single: report.F(hit.Seconds())})
	if rssErr == nil {
		r.Add(report.Row{ID: "7c", Metric: fmt.Sprintf("RSS of region with %d servers, after 4a/4b", n), Unit: "MB", Single: report.F(rss),
			Target: "≤ 300 MB at 10,000", Met: metIf(n >= 10000, rss <= 300)})
	}
	listSessions := float64(s1-s0) / list.Elapsed.Seconds()
	showSessions := float64(s2-s1) / show.Elapsed.Seconds()
	r.Detail("api", map[string]any{"servers": n, "seed_s": seedTook.Seconds(), "list": ls, "list_rate": list.Rate(),
		"show": ss, "show_rate": show.Rate(), "auth_warm": as, "anon": bs, "auth_cold": cs, "validate_hit_ns": hit.Nanoseconds(),
		"pg_sessions_per_s_list": listSessions, "pg_sessions_per_s_show": showSessions, "region_rss_mb": rss,
		"cpu_list": listCPU, "cpu_show": showCPU})
	r.Note("API at size (4a-4e, 7c): %d servers of the demo project seeded by SQL (INSERT … SELECT generate_series, with a port "+
		"each; %.1f s) into a region process of its own; closed-loop clients for %s per workload, pages picked at random by "+
		"marker, after one client has read each page once (4a'': region renders a server's JSON the first time and keeps it, "+
		"so the load sees the steady state; the clients read every answer whole and count its servers without decoding it). "+
		"A page of 1,000 costs %.1f ms of region CPU and %.1f ms of PostgreSQL CPU (%s), so 2 cores serve about "+
		"%.0f pages/s and 32 clients queue; a show costs %.2f ms + %.2f ms. PostgreSQL saw %.1f new sessions/s (list) and "+
		"%.1f/s (show): region's pool keeps up to 20 connections (idle ones for 5 minutes).",
		n, seedTook.Seconds(), dur, perPage(listCPU, len(list.Lat), "region (api)")*1e3, perPage(listCPU, len(list.Lat), "postgres")*1e3,
		listCPU, list.Rate(), perPage(showCPU, len(show.Lat), "region (api)")*1e3, perPage(showCPU, len(show.Lat), "postgres")*1e3,
		listSessions, showSessions)
	return nil
}

func metIf(applies, ok bool) *bool {
	if !applies {
		return nil
	}
	return report.B(ok)
}

// sqlPage runs the list queries of the page after marker (servers, then
// their ports) straight against the region's database, reading every
// column, with the same keyset condition region uses.
func sqlPage(ctx context.Context, reg *Region, project, marker string) error {
	rows, err := reg.DB.QueryContext(ctx, `SELECT * FROM servers WHERE deleted_at IS NULL AND project_id = $1
		AND ($2 = '' OR (created_at, id) < (SELECT created_at, id FROM servers WHERE id = NULLIF($2, '')::uuid))
		ORDER BY created_at DESC, id DESC LIMIT 1000`, project, marker)
	if err != nil {
		return err
	}
	var ids []string
	if err := scanAll(rows, func(vals []any) {
		if b, ok := vals[0].([]byte); ok {
			ids = append(ids, string(b))
		} else {
			ids = append(ids, fmt.Sprint(vals[0]))
		}
	}); err != nil {
		return err
	}
	rows, err = reg.DB.QueryContext(ctx, `SELECT p.*, n.name, n.cidr FROM ports p JOIN networks n ON n.id = p.network_id
		WHERE p.server_id = ANY($1::uuid[])`, pq.Array(ids))
	if err != nil {
		return err
	}
	return scanAll(rows, func([]any) {})
}

func scanAll(rows *sql.Rows, each func([]any)) error {
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		each(vals)
	}
	return rows.Err()
}

// seedServers inserts n ACTIVE servers of one project, each with a port on
// the region's default network, newest first one second apart.
func seedServers(ctx context.Context, reg *Region, n int, who osapi.Token, imageID, dockerImageID string) error {
	tx, err := reg.DB.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var netID string
	if err := tx.QueryRowContext(ctx, `SELECT id::text FROM networks WHERE is_default`).Scan(&netID); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO servers (id, project_id, user_id, name, host, image_id, docker_image_id, flavor_id, vcpus, ram_mb,
			disk_gb, vm_state, power_state, progress, launched_at, metadata, created_at, updated_at)
		SELECT gen_random_uuid(), $1, $2, 'seed-' || g, 'seed-host', $3, $4, '1', 1, 512, 1, 'active', 1, 100,
			now() - g * interval '1 second', '{"role": "web"}', now() - g * interval '1 second', now() - g * interval '1 second'
		FROM generate_series(1, $5::int) g`, who.ProjectID, who.UserID, imageID, dockerImageID, n); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `
		INSERT INTO ports (id, network_id, project_id, server_id, mac_address, ip_address)
		SELECT gen_random_uuid(), $1::uuid, s.project_id, s.id,
			('fa:16:3e:' || lpad(to_hex((s.n >> 16) & 255), 2, '0') || ':' || lpad(to_hex((s.n >> 8) & 255), 2, '0') || ':' ||
				lpad(to_hex(s.n & 255), 2, '0'))::macaddr,
			'10.200.0.1'::inet + s.n
		FROM (SELECT id, project_id, row_number() OVER (ORDER BY created_at) AS n FROM servers WHERE host = 'seed-host') s`, netID); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE hosts SET vcpus_used = $1, memory_mb_used = $1 * 512, disk_gb_used = $1
		WHERE name = 'seed-host'`, n); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	_, err = reg.DB.ExecContext(ctx, `ANALYZE`)
	return err
}

// validatorHitCost is the cost of one Validate call answered from the
// cache, measured in-process with testing.Benchmark against a stand-in
// Keystone that is called only once.
func validatorHitCost() time.Duration {
	ks := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"token": map[string]any{
			"expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
			"user":       map[string]any{"id": "u1", "name": "demo", "domain": map[string]string{"id": "default"}},
			"project":    map[string]any{"id": "p1", "name": "demo", "domain": map[string]string{"id": "default"}},
			"roles":      []map[string]string{{"name": "member"}},
		}})
	}))
	defer ks.Close()
	v := keystone.NewValidator(ks.URL+"/v3", time.Hour, nil)
	ctx := context.Background()
	if _, err := v.Validate(ctx, "tok"); err != nil {
		return 0
	}
	res := testing.Benchmark(func(b *testing.B) {
		for b.Loop() {
			if _, err := v.Validate(ctx, "tok"); err != nil {
				b.Fatal(err)
			}
		}
	})
	return time.Duration(res.NsPerOp())
}
