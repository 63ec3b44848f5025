package compute_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// seedServers inserts n ACTIVE servers of demo-project on host, each with
// a port on the default network in the project's default security group,
// newest first one second apart (as bench/scenario/apisize.go seeds them).
// It returns their ids, newest first.
func (e *env) seedServers(t testing.TB, host string, n int) []string {
	t.Helper()
	ctx := context.Background()
	db := e.store.DB()
	e.registerHost64(t, host)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	for _, q := range []string{
		`INSERT INTO servers (id, project_id, user_id, name, host, image_id, docker_image_id, flavor_id, vcpus, ram_mb,
			disk_gb, vm_state, power_state, progress, launched_at, metadata, created_at, updated_at)
		SELECT gen_random_uuid(), 'demo-project', 'user-demo-project', 'seed-' || g, '` + host + `', '` + demoImage + `',
			'sha256:abc', '1', 1, 512, 1, 'active', 1, 100, now() - g * interval '1 second', '{"role": "web"}',
			now() - g * interval '1 second', now() - g * interval '1 second'
		FROM generate_series(1, ` + strconv.Itoa(n) + `) g`,
		`INSERT INTO security_groups (id, project_id, name) VALUES (gen_random_uuid(), 'demo-project', 'default')
		ON CONFLICT DO NOTHING`,
		`INSERT INTO ports (id, network_id, project_id, server_id, mac_address, ip_address)
		SELECT gen_random_uuid(), (SELECT id FROM networks WHERE is_default), s.project_id, s.id,
			('fa:16:3f:' || lpad(to_hex((s.n >> 16) & 255), 2, '0') || ':' || lpad(to_hex((s.n >> 8) & 255), 2, '0') || ':' ||
				lpad(to_hex(s.n & 255), 2, '0'))::macaddr,
			'10.200.0.1'::inet + s.n
		FROM (SELECT id, project_id, row_number() OVER (ORDER BY created_at) AS n FROM servers
			WHERE host = '` + host + `' AND name LIKE 'seed-%') s`,
		`INSERT INTO port_security_groups (port_id, group_id)
		SELECT p.id, g.id FROM ports p JOIN servers s ON s.id = p.server_id
			JOIN security_groups g ON g.project_id = 'demo-project' AND g.name = 'default'
		WHERE s.host = '` + host + `' AND s.name LIKE 'seed-%'`,
	} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `ANALYZE`); err != nil {
		t.Fatal(err)
	}
	var ids []string
	if err := db.SelectContext(ctx, &ids, `SELECT id::text FROM servers WHERE deleted_at IS NULL
		AND name LIKE 'seed-%' ORDER BY created_at DESC, id DESC`); err != nil {
		t.Fatal(err)
	}
	return ids
}

// get fetches path with token and the given microversion into buf.
func (e *env) get(tb testing.TB, token, mv, path string, buf *bytes.Buffer) {
	tb.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.url+"/v2.1"+path, nil)
	req.Header.Set("X-Auth-Token", token)
	if mv != "" {
		req.Header.Set("OpenStack-API-Version", "compute "+mv)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	buf.Reset()
	if _, err := io.Copy(buf, resp.Body); err != nil {
		tb.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s: %d %s", path, resp.StatusCode, buf.Bytes())
	}
}

// BenchmarkServerList is scenario 4 of the bench in-process: pages of
// 1,000 of 10,000 servers (detail and brief), and single servers. The
// time is region's and PostgreSQL's together, one request at a time;
// cpu-ms/op is this process's CPU (region and the client), not
// PostgreSQL's.
func BenchmarkServerList(b *testing.B) {
	e := newEnv(b)
	ids := e.seedServers(b, "seed-host", 10000)
	var markers []string
	for i := 999; i+1 < len(ids); i += 1000 {
		markers = append(markers, ids[i])
	}
	var buf bytes.Buffer
	for _, bc := range []struct{ name, path, mv string }{
		{"detail", "/servers/detail?limit=1000", ""},
		{"detail-2.66", "/servers/detail?limit=1000", "2.66"},
		{"brief", "/servers?limit=1000", ""},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for _, m := range markers { // the steady state: every page seen once
				e.get(b, "demo-token", bc.mv, bc.path+"&marker="+url.QueryEscape(m), &buf)
			}
			i := 0
			cpu := cpuTime()
			for b.Loop() {
				e.get(b, "demo-token", bc.mv, bc.path+"&marker="+url.QueryEscape(markers[i%len(markers)]), &buf)
				i++
			}
			b.ReportMetric(float64(buf.Len()), "bytes/page")
			b.ReportMetric((cpuTime()-cpu).Seconds()*1e3/float64(b.N), "cpu-ms/op")
		})
	}
	// 32 clients at once, as the bench's scenario 4a.
	b.Run("detail-32", func(b *testing.B) {
		b.SetParallelism(16)
		cpu := cpuTime()
		var n atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			var buf bytes.Buffer
			for pb.Next() {
				i := n.Add(1)
				e.get(b, "demo-token", "", "/servers/detail?limit=1000&marker="+url.QueryEscape(markers[int(i)%len(markers)]), &buf)
			}
		})
		b.ReportMetric((cpuTime()-cpu).Seconds()*1e3/float64(b.N), "cpu-ms/op")
	})
	b.Run("show", func(b *testing.B) {
		i := 0
		cpu := cpuTime()
		for b.Loop() {
			e.get(b, "demo-token", "", "/servers/"+ids[i%len(ids)], &buf)
			i++
		}
		b.ReportMetric((cpuTime()-cpu).Seconds()*1e3/float64(b.N), "cpu-ms/op")
	})
}

// cpuTime is the CPU this process has used (region's and the client's
// here; PostgreSQL's is not counted).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
