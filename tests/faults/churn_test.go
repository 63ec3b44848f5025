package faults

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"berth/internal/devstack"
)

// churn is n concurrent clients, each creating a server and then, after a
// random pause, stopping it, deleting it (sometimes twice at once) or
// leaving it, through the compute endpoints in urls (round robin). It
// returns at once; wait() blocks until every client is done and gives the
// ids of the accepted creates.
type churn struct {
	wg    sync.WaitGroup
	c     codes
	mu    sync.Mutex
	ids   []string
	errsN int // requests that got no answer (the service was down)
}

func startChurn(s *devstack.Stack, tok, img, sfx string, n int, urls []string) *churn {
	ch := &churn{}
	for i := range n {
		ch.wg.Add(1)
		go func() {
			defer ch.wg.Done()
			u := urls[i%len(urls)]
			rng := rand.New(rand.NewSource(time.Now().UnixNano() + int64(i)))
			do := func(op, method, url string, body any) (reply, bool) {
				r, err := call(method, url, tok, body, nil)
				if err != nil {
					ch.mu.Lock()
					ch.errsN++
					ch.mu.Unlock()
					return r, false
				}
				ch.c.add(op, r.code)
				return r, true
			}
			// A create whose answer is lost (region killed after its
			// commit) or refused for now (503) is sent again with the same
			// request id, as a careful client does: region answers a retry
			// with the server the first try made (B7), so no server is
			// made that its client does not know of.
			rid := "req-" + uuid.NewString()
			body := map[string]any{"server": map[string]any{"name": fmt.Sprintf("churn-%s-%d", sfx, i), "imageRef": img, "flavorRef": "1"}}
			var r reply
			for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(500 * time.Millisecond) {
				var err error
				r, err = call(http.MethodPost, u+"/servers", tok, body, map[string]string{"X-Openstack-Request-Id": rid})
				if err != nil {
					ch.mu.Lock()
					ch.errsN++
					ch.mu.Unlock()
				} else {
					ch.c.add("create", r.code)
				}
				if (err == nil && r.code != http.StatusServiceUnavailable) || time.Now().After(deadline) {
					break
				}
			}
			if r.code != http.StatusAccepted {
				return
			}
			var v struct{ Server struct{ ID string } }
			_ = json.Unmarshal(r.body, &v)
			id := v.Server.ID
			ch.mu.Lock()
			ch.ids = append(ch.ids, id)
			ch.mu.Unlock()
			time.Sleep(time.Duration(rng.Intn(3000)) * time.Millisecond)
			switch p := rng.Intn(4); {
			case p == 0:
				do("stop", http.MethodPost, u+"/servers/"+id+"/action", map[string]any{"os-stop": nil})
			case p <= 2:
				var dwg sync.WaitGroup
				for range 1 + rng.Intn(2) {
					dwg.Go(func() { do("delete", http.MethodDelete, u+"/servers/"+id, nil) })
				}
				dwg.Wait()
			}
		}()
	}
	return ch
}

func (ch *churn) wait() []string {
	ch.wg.Wait()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return slices.Clone(ch.ids)
}

// TestFaultsDuringChurn: while concurrent clients create, stop and delete
// servers, imagesvc is killed with SIGKILL, PostgreSQL is restarted, or
// region is killed with SIGKILL (each in its own round). Afterwards every
// accepted create's server reaches ACTIVE, SHUTOFF, ERROR with a fault, or
// is gone; the invariants hold (nothing Docker, OVS or netlink holds
// without its server, no host overcommitted, claims equal the live
// servers' flavors, every instance action finished), and no answer was a
// 500 (a 503 while a dependency is down is the documented answer). The
// agent kill has its own test (TestAgentKillDuringChurn).
func TestFaultsDuringChurn(t *testing.T) {
	s := stack(t)
	demo := token(t, s, devstack.UserDemo)
	img := demoImageID(t, s)
	n := envInt("BERTH_FAULTS_CHURN_SERVERS", 12)
	raiseQuota(t, s, projectID(t, s, demo), 3*n+10)
	t.Cleanup(func() { restoreQuota(t, s) })
	for _, f := range []struct {
		name  string
		fault func(t *testing.T) time.Duration
	}{
		{"imagesvc SIGKILL", func(t *testing.T) time.Duration {
			if err := s.KillService(devstack.ServiceImage, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Second) // creates meanwhile find no image service
			return restart(t, s, devstack.ServiceImage)
		}},
		{"PostgreSQL restart", func(t *testing.T) time.Duration { return restart(t, s, devstack.ServicePostgres) }},
		{"region SIGKILL", func(t *testing.T) time.Duration {
			if err := s.KillService(devstack.ServiceRegion, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			return restart(t, s, devstack.ServiceRegion)
		}},
	} {
		t.Run(f.name, func(t *testing.T) {
			settle(t, s, settleBound)
			sfx := strconv.FormatInt(time.Now().UnixNano()%1e8, 36)
			ch := startChurn(s, demo, img, sfx, n, []string{s.ComputeURL()})
			time.Sleep(time.Duration(300+rand.Intn(1200)) * time.Millisecond)
			back := f.fault(t)
			ids := ch.wait()
			t.Cleanup(func() { deleteAll(t, s, demo, ids) })
			t.Logf("%s: back in %s; %d accepted creates; %d requests unanswered; clients: %s",
				f.name, back.Round(time.Millisecond), len(ids), ch.errsN, ch.c.String())
			for op, m := range ch.c.m {
				for code := range m {
					if code >= 500 && code != http.StatusServiceUnavailable {
						t.Errorf("%s answered %d during %s", op, code, f.name)
					}
				}
			}
			took := settle(t, s, settleBound)
			t.Logf("settled %s after the fault", took.Round(time.Millisecond))
			checkFinal(t, s, demo, ids)
			checkNoStrays(t, s, demo, "churn-"+sfx+"-", ids)
		})
	}
}

// startSecondRegion runs another berth-region against the stack's
// database, on ports of its own, and returns its compute and network
// URLs. It is killed (by its PID) when the test ends.
func startSecondRegion(t *testing.T, s *devstack.Stack) (compute, network string) {
	t.Helper()
	dir, err := binDir()
	if err != nil {
		t.Fatal(err)
	}
	ports := make([]int, 2)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	logf, err := os.Create(filepath.Join(s.RunDir(), "logs", "region2.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(dir, "berth-region"),
		"--listen", "127.0.0.1:"+strconv.Itoa(ports[0]),
		"--network-listen", "127.0.0.1:"+strconv.Itoa(ports[1]),
		"--db", s.RegionDSN(),
		"--keystone-url", s.KeystoneURL(),
		"--image-url", s.ImageURL(),
		"--agent-token-file", s.AgentTokenFile(),
		"--default-cidr", s.CIDR())
	cmd.Dir, cmd.Stdout, cmd.Stderr = s.RunDir(), logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
	})
	compute = fmt.Sprintf("http://127.0.0.1:%d/v2.1", ports[0])
	network = fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	for start := time.Now(); ; time.Sleep(250 * time.Millisecond) {
		if r, err := call(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/", ports[0]), "", nil, nil); err == nil && r.code == http.StatusOK {
			return compute, network
		}
		if time.Since(start) > 2*time.Minute {
			t.Fatalf("second region not serving after 2 minutes (see %s)", logf.Name())
		}
	}
}

// TestTwoRegions: a second region process against the same database
// serves the same servers and networks as the first, and creates sent
// concurrently through both never double-schedule: with the host's CPU
// ratio lowered so that exactly k more servers fit, 2k concurrent creates
// (half through each region) place exactly k and leave k in ERROR with
// "No valid host", and the invariants hold (claims equal the placed
// servers' flavors, no host over capacity × ratio).
func TestTwoRegions(t *testing.T) {
	s := stack(t)
	settle(t, s, settleBound)
	demo := token(t, s, devstack.UserDemo)
	img := demoImageID(t, s)
	compute2, network2 := startSecondRegion(t, s)

	// The same answers from both.
	seed := createServer(t, s, demo, "two-regions-seed", img, "1")
	t.Cleanup(func() { deleteAll(t, s, demo, []string{seed}) })
	waitServer(t, s, demo, seed, 2*time.Minute, "ACTIVE", isStatus("ACTIVE"))
	for _, p := range [][2]string{
		{s.ComputeURL() + "/servers/detail", compute2 + "/servers/detail"},
		{s.NetworkURL() + "/v2.0/networks", network2 + "/v2.0/networks"},
		{s.NetworkURL() + "/v2.0/ports", network2 + "/v2.0/ports"},
	} {
		a, b := idsIn(t, expect(t, http.MethodGet, p[0], demo, nil, 200)), idsIn(t, expect(t, http.MethodGet, p[1], demo, nil, 200))
		if !slices.Equal(a, b) {
			t.Errorf("GET %s lists %v, the second region %v", p[0], a, b)
		}
	}
	sv2 := decode[struct{ Server server }](t, expect(t, http.MethodGet, compute2+"/servers/"+seed, demo, nil, 200)).Server
	if sv2.Status != "ACTIVE" {
		t.Errorf("the second region shows server %s as %s, want ACTIVE", seed, sv2.Status)
	}

	// Room for exactly k more servers of flavor 1 (1 vCPU).
	const k = 4
	db := regionDB(t, s)
	var vcpus, used int
	var ratio float64
	if err := db.QueryRow(`SELECT vcpus, vcpus_used, cpu_ratio FROM hosts WHERE name = $1`, s.HostName()).Scan(&vcpus, &used, &ratio); err != nil {
		t.Fatal(err)
	}
	newRatio := (float64(used+k) + 0.5) / float64(vcpus)
	if math.Floor(float64(vcpus)*newRatio) != float64(used+k) {
		t.Fatalf("cannot make room for exactly %d servers: %d vCPUs, %d used", k, vcpus, used)
	}
	if _, err := db.Exec(`UPDATE hosts SET cpu_ratio = $2 WHERE name = $1`, s.HostName(), newRatio); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := db.Exec(`UPDATE hosts SET cpu_ratio = $2 WHERE name = $1`, s.HostName(), ratio); err != nil {
			t.Errorf("restore cpu_ratio: %v", err)
		}
	})
	raiseQuota(t, s, projectID(t, s, demo), 2*k+10)
	t.Cleanup(func() { restoreQuota(t, s) })

	var mu sync.Mutex
	var ids []string
	var wg sync.WaitGroup
	for i := range 2 * k {
		u := []string{s.ComputeURL(), compute2}[i%2]
		wg.Go(func() {
			r, err := call(http.MethodPost, u+"/servers", demo, map[string]any{"server": map[string]any{
				"name": fmt.Sprintf("two-regions-%d", i), "imageRef": img, "flavorRef": "1"}}, nil)
			if err != nil || r.code != http.StatusAccepted {
				t.Errorf("create through %s: %v %v", u, r, err)
				return
			}
			mu.Lock()
			ids = append(ids, decode[struct{ Server struct{ ID string } }](t, r).Server.ID)
			mu.Unlock()
		})
	}
	wg.Wait()
	t.Cleanup(func() { deleteAll(t, s, demo, ids) })
	tally := map[string]int{}
	for _, id := range ids {
		waitServer(t, s, demo, id, settleBound, "ACTIVE or ERROR", isStatus("ACTIVE", "ERROR"))
		sv, _ := getServer(t, s, demo, id)
		tally[sv.Status]++
	}
	if tally["ACTIVE"] != k || tally["ERROR"] != k {
		t.Errorf("%d concurrent creates through two regions with room for %d: %v, want %d ACTIVE and %d ERROR", 2*k, k, tally, k, k)
	}
	var nowUsed int
	if err := db.QueryRow(`SELECT vcpus_used FROM hosts WHERE name = $1`, s.HostName()).Scan(&nowUsed); err != nil {
		t.Fatal(err)
	}
	if nowUsed != used+k {
		t.Errorf("host claims %d vCPUs after placing %d servers on %d, want %d", nowUsed, tally["ACTIVE"], used, used+k)
	}
	settle(t, s, settleBound)
}

// idsIn lists the "id" of every object in the first list of a JSON body
// ({"servers": [...]}, {"networks": [...]}), sorted.
func idsIn(t *testing.T, r reply) []string {
	t.Helper()
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatalf("%s: %v", r, err)
	}
	var out []string
	for _, raw := range doc {
		var items []struct{ ID string }
		if json.Unmarshal(raw, &items) == nil && len(items) > 0 {
			for _, it := range items {
				out = append(out, it.ID)
			}
		}
	}
	slices.Sort(out)
	return out
}
