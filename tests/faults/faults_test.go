package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/google/uuid"

	"berth/internal/devstack"
)

// Bounds the faults are judged by. The host agent resyncs every 10 s and
// removes a set absent from its desired state 30 s after it first saw it
// (--sync-interval, --orphan-grace); containers get 10 s between TERM and
// KILL (--stop-grace). devstack keeps those defaults.
const (
	syncInterval = 10 * time.Second
	orphanGrace  = 30 * time.Second
	stopGrace    = 10 * time.Second
	// settleBound is how long after a fault every server must have reached
	// a final state and every orphan must be gone.
	settleBound = orphanGrace + 2*syncInterval + stopGrace + 30*time.Second
)

// codes counts HTTP statuses per operation, concurrency-safe.
type codes struct {
	mu sync.Mutex
	m  map[string]map[int]int
}

func (c *codes) add(op string, code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]map[int]int{}
	}
	if c.m[op] == nil {
		c.m[op] = map[int]int{}
	}
	c.m[op][code]++
}

func (c *codes) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for op, m := range c.m {
		var cs []string
		for code, n := range m {
			cs = append(cs, fmt.Sprintf("%d×%d", code, n))
		}
		slices.Sort(cs)
		parts = append(parts, op+" "+strings.Join(cs, " "))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}

// restoreQuota puts demo's quota back to Nova's defaults.
func restoreQuota(t *testing.T, s *devstack.Stack) {
	t.Helper()
	expect(t, http.MethodPut, s.ComputeURL()+"/os-quota-sets/"+projectID(t, s, token(t, s, devstack.UserDemo)), token(t, s, devstack.UserAdmin),
		map[string]any{"quota_set": map[string]any{"instances": 10, "cores": 20, "ram": 51200}}, 200)
}

// forceDown sets or clears the host's forced_down flag (Nova 2.11).
func forceDown(t *testing.T, s *devstack.Stack, down bool) {
	t.Helper()
	r := api(t, http.MethodPut, s.ComputeURL()+"/os-services/force-down", token(t, s, devstack.UserAdmin),
		map[string]any{"host": s.HostName(), "binary": "nova-compute", "forced_down": down},
		map[string]string{"OpenStack-API-Version": "compute 2.11"})
	if r.code != http.StatusOK {
		t.Fatalf("force-down %v: %s", down, r)
	}
}

// deleteAll deletes servers (ignoring 404) and waits until all are gone.
func deleteAll(t *testing.T, s *devstack.Stack, tok string, ids []string) {
	t.Helper()
	for _, id := range ids {
		expect(t, http.MethodDelete, s.ComputeURL()+"/servers/"+id, tok, nil, 204, 404)
	}
	for _, id := range ids {
		waitServer(t, s, tok, id, settleBound, "deleted", isGone)
	}
}

// TestAgentKillDuringChurn: concurrent clients create, stop and delete
// servers (repeating some deletes) while the host agent is killed with
// SIGKILL; while it is down the host is forced down and three ACTIVE
// servers are deleted (R4: 204, then 404 at once, their addresses and
// claims freed); then the agent starts again. Within settleBound every
// server is ACTIVE, SHUTOFF, ERROR with a fault, or gone; no container,
// OVS interface or veth is left without its server, no host is
// overcommitted and claims equal the live servers' flavors, and every
// instance action is finished (R3, R4, R8, R9). No request is ever
// answered with a 5xx.
func TestAgentKillDuringChurn(t *testing.T) {
	s := stack(t)
	settle(t, s, settleBound) // start from a clean stack
	demo := token(t, s, devstack.UserDemo)
	img := demoImageID(t, s)
	n := envInt("BERTH_FAULTS_CHURN_SERVERS", 12)
	rounds := envInt("BERTH_FAULTS_ROUNDS", 1)
	raiseQuota(t, s, projectID(t, s, demo), 3*n+10)
	t.Cleanup(func() { restoreQuota(t, s) })
	db := regionDB(t, s)
	var all []string
	var allMu sync.Mutex

	for round := range rounds {
		sfx := strconv.FormatInt(time.Now().UnixNano()%1e8, 36)
		// Victims for R4: ACTIVE before the agent dies, deleted while it is down.
		var victims []string
		for i := range 3 {
			victims = append(victims, createServer(t, s, demo, fmt.Sprintf("victim-%s-%d", sfx, i), img, "1"))
		}
		for _, id := range victims {
			waitServer(t, s, demo, id, 2*time.Minute, "ACTIVE", isStatus("ACTIVE"))
		}
		all = append(all, victims...)

		var c codes
		var wg sync.WaitGroup
		start := time.Now()
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewSource(time.Now().UnixNano() + int64(i)))
				r, err := call(http.MethodPost, s.ComputeURL()+"/servers", demo, map[string]any{
					"server": map[string]any{"name": fmt.Sprintf("churn-%s-%d", sfx, i), "imageRef": img, "flavorRef": "1"}}, nil)
				if err != nil {
					t.Errorf("create: %v", err)
					return
				}
				c.add("create", r.code)
				if r.code != http.StatusAccepted {
					return
				}
				var v struct{ Server struct{ ID string } }
				_ = json.Unmarshal(r.body, &v)
				id := v.Server.ID
				allMu.Lock()
				all = append(all, id)
				allMu.Unlock()
				time.Sleep(time.Duration(rng.Intn(3000)) * time.Millisecond)
				switch p := rng.Intn(4); {
				case p == 0: // stop
					r, err := call(http.MethodPost, s.ComputeURL()+"/servers/"+id+"/action", demo, map[string]any{"os-stop": nil}, nil)
					if err == nil {
						c.add("stop", r.code)
					}
				case p <= 2: // delete, sometimes twice at once (R9)
					times := 1 + rng.Intn(2)
					var dwg sync.WaitGroup
					for range times {
						dwg.Add(1)
						go func() {
							defer dwg.Done()
							r, err := call(http.MethodDelete, s.ComputeURL()+"/servers/"+id, demo, nil, nil)
							if err == nil {
								c.add("delete", r.code)
							}
						}()
					}
					dwg.Wait()
				}
			}()
		}
		// Kill the agent while the creates are in flight.
		time.Sleep(time.Duration(500+rand.Intn(1500)) * time.Millisecond)
		if err := s.KillService(devstack.ServiceHostAgent, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		killed := time.Since(start)

		// R4: with the host down, a delete is 204 and the server 404 at once.
		forceDown(t, s, true)
		for _, id := range victims {
			r := api(t, http.MethodDelete, s.ComputeURL()+"/servers/"+id, demo, nil)
			if r.code != http.StatusNoContent {
				t.Errorf("delete %s while its host is down = %s, want 204", id, r)
			}
			if _, ok := getServer(t, s, demo, id); ok {
				t.Errorf("server %s still shown right after its delete on a down host, want 404", id)
			}
		}
		var leftPorts int
		if err := db.QueryRow(`SELECT count(*) FROM ports WHERE server_id = ANY($1::uuid[])`, pgArray(victims)).Scan(&leftPorts); err != nil {
			t.Fatal(err)
		}
		if leftPorts != 0 {
			t.Errorf("%d ports of the deleted victims still allocated, want 0 (R4: freed at once)", leftPorts)
		}
		forceDown(t, s, false)

		time.Sleep(3 * time.Second)
		back := restart(t, s, devstack.ServiceHostAgent)
		wg.Wait()
		t.Logf("round %d: agent killed at %s, back after %s; clients: %s", round, killed.Round(time.Millisecond), back.Round(time.Millisecond), c.String())
		for op, m := range c.m {
			for code := range m {
				if code >= 500 {
					t.Errorf("%s answered %d", op, code)
				}
				if op == "delete" && code != 204 && code != 404 {
					t.Errorf("delete answered %d, want 204 or 404 (R9)", code)
				}
			}
		}
		took := settle(t, s, settleBound)
		t.Logf("round %d: settled %s after the agent returned", round, took.Round(time.Millisecond))
		checkFinal(t, s, demo, all)
	}
	deleteAll(t, s, demo, all)
	settle(t, s, settleBound)
}

// checkFinal wants each server ACTIVE, SHUTOFF, ERROR with a fault, or gone.
func checkFinal(t *testing.T, s *devstack.Stack, tok string, ids []string) {
	t.Helper()
	tally := map[string]int{}
	for _, id := range ids {
		sv, ok := getServer(t, s, tok, id)
		switch {
		case !ok:
			tally["gone"]++
		case sv.TaskS != nil:
			t.Errorf("server %s: %s with task %s, want no task", id, sv.Status, *sv.TaskS)
		case sv.Status == "ERROR" && len(sv.Fault) == 0:
			t.Errorf("server %s: ERROR without a fault", id)
		case sv.Status != "ACTIVE" && sv.Status != "SHUTOFF" && sv.Status != "ERROR":
			t.Errorf("server %s: status %s, want ACTIVE, SHUTOFF, ERROR or gone", id, sv.Status)
		default:
			tally[sv.Status]++
		}
	}
	t.Logf("final states: %v", tally)
}

// checkNoStrays fails for every live server named with prefix that is not
// among ids: a server made by a create whose client never learnt of it
// (an answer lost, a retry that made a second one) would be a leak.
func checkNoStrays(t *testing.T, s *devstack.Stack, tok, prefix string, ids []string) {
	t.Helper()
	r := api(t, http.MethodGet, s.ComputeURL()+"/servers?name=^"+prefix, tok, nil, nil)
	if r.code != http.StatusOK {
		t.Fatalf("list servers: %s", r)
	}
	var list struct{ Servers []struct{ ID, Name string } }
	if err := json.Unmarshal(r.body, &list); err != nil {
		t.Fatal(err)
	}
	for _, sv := range list.Servers {
		if !slices.Contains(ids, sv.ID) {
			t.Errorf("server %s (%s) exists, but no client was told of it", sv.ID, sv.Name)
		}
	}
}

// TestContainerKilledOutside: `docker kill` of a server's app container is
// seen within one sync interval and the server goes SHUTOFF through the
// normal stop path, recorded as a stop action of req-sync-power-state; a
// container started behind Berth's back while the server is SHUTOFF is
// stopped again (R5).
func TestContainerKilledOutside(t *testing.T) {
	s := stack(t)
	demo := token(t, s, devstack.UserDemo)
	id := createServer(t, s, demo, "drift-"+strconv.FormatInt(time.Now().UnixNano()%1e8, 36), demoImageID(t, s), "1")
	t.Cleanup(func() { deleteAll(t, s, demo, []string{id}) })
	waitServer(t, s, demo, id, 2*time.Minute, "ACTIVE", isStatus("ACTIVE"))
	app := appContainer(t, s, id)
	ctx := context.Background()
	if err := s.Docker().ContainerKill(ctx, app, "KILL"); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitServer(t, s, demo, id, syncInterval+10*time.Second, "SHUTOFF", isStatus("SHUTOFF"))
	took := time.Since(killed)
	t.Logf("SHUTOFF %s after docker kill", took.Round(time.Millisecond))
	if took > syncInterval+5*time.Second {
		t.Errorf("SHUTOFF after %s, want within one sync interval (%s) + 5 s", took.Round(time.Millisecond), syncInterval)
	}
	r := expect(t, http.MethodGet, s.ComputeURL()+"/servers/"+id+"/os-instance-actions", demo, nil, 200)
	acts := decode[struct {
		A []struct {
			Action    string `json:"action"`
			RequestID string `json:"request_id"`
		} `json:"instanceActions"`
	}](t, r).A
	if !slices.ContainsFunc(acts, func(a struct {
		Action    string `json:"action"`
		RequestID string `json:"request_id"`
	}) bool {
		return a.Action == "stop" && a.RequestID == "req-sync-power-state"
	}) {
		t.Errorf("instance actions %+v lack a stop by req-sync-power-state", acts)
	}

	// Started outside Berth while SHUTOFF: stopped again. (The infra
	// container: the app joins its namespaces, so it cannot start alone,
	// and the agent may stop the infra again before the app could follow.)
	infra := roleContainer(t, s, id, "infra")
	if err := s.Docker().ContainerStart(ctx, infra, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	started := time.Now()
	for {
		ins, err := s.Docker().ContainerInspect(ctx, infra)
		if err != nil {
			t.Fatal(err)
		}
		if !ins.State.Running {
			t.Logf("container started behind Berth's back stopped again after %s", time.Since(started).Round(time.Millisecond))
			break
		}
		if time.Since(started) > syncInterval+stopGrace+10*time.Second {
			t.Errorf("infra container started outside Berth still runs %s later; the server is SHUTOFF", time.Since(started).Round(time.Second))
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if sv, _ := getServer(t, s, demo, id); sv.Status != "SHUTOFF" {
		t.Errorf("server is %s, want SHUTOFF", sv.Status)
	}
	// The normal path still works.
	expect(t, http.MethodPost, s.ComputeURL()+"/servers/"+id+"/action", demo, map[string]any{"os-start": nil}, 202)
	waitServer(t, s, demo, id, time.Minute, "ACTIVE", isStatus("ACTIVE"))
}

func appContainer(t *testing.T, s *devstack.Stack, id string) string {
	t.Helper()
	return roleContainer(t, s, id, "app")
}

func roleContainer(t *testing.T, s *devstack.Stack, id, role string) string {
	t.Helper()
	cs, err := s.Docker().ContainerList(context.Background(), container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", devstack.LabelSet+"="+id), filters.Arg("label", devstack.LabelRole+"="+role),
		filters.Arg("label", devstack.LabelHost+"="+s.HostName()))})
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 {
		t.Fatalf("%s containers of %s: %d, want 1", role, id, len(cs))
	}
	return cs[0].ID
}

// TestRepeatedDelete: create is 202 with Location (C5); stop of a stopped
// server is 409 conflictingRequest; six concurrent DELETEs are each 204 or
// 404 and never 5xx, the server is then 404, and a later DELETE is 404
// itemNotFound (R9, C5).
func TestRepeatedDelete(t *testing.T) {
	s := stack(t)
	demo := token(t, s, devstack.UserDemo)
	r := api(t, http.MethodPost, s.ComputeURL()+"/servers", demo, map[string]any{
		"server": map[string]any{"name": "redelete", "imageRef": demoImageID(t, s), "flavorRef": "1"}})
	if r.code != http.StatusAccepted || !strings.Contains(r.hdr.Get("Location"), "/servers/") {
		t.Fatalf("create = %s (Location %q), want 202 with Location", r, r.hdr.Get("Location"))
	}
	id := decode[struct{ Server struct{ ID string } }](t, r).Server.ID
	waitServer(t, s, demo, id, 2*time.Minute, "ACTIVE", isStatus("ACTIVE"))
	expect(t, http.MethodPost, s.ComputeURL()+"/servers/"+id+"/action", demo, map[string]any{"os-stop": nil}, 202)
	waitServer(t, s, demo, id, time.Minute, "SHUTOFF", isStatus("SHUTOFF"))
	r = action(t, s, demo, id, map[string]any{"os-stop": nil})
	if r.code != http.StatusConflict || novaFaultProblem(r.code, r.body) != "" {
		t.Errorf("stop of a stopped server = %s, want 409 conflictingRequest", r)
	}
	var c codes
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := call(http.MethodDelete, s.ComputeURL()+"/servers/"+id, demo, nil, nil)
			if err != nil {
				t.Error(err)
				return
			}
			c.add("delete", r.code)
		}()
	}
	wg.Wait()
	for code := range c.m["delete"] {
		if code != 204 && code != 404 {
			t.Errorf("concurrent deletes answered %s, want only 204/404", c.String())
		}
	}
	// C4: while being deleted it shows SHUTOFF (never DELETED or another
	// invented status) until it is gone.
	deadline := time.Now().Add(settleBound)
	for {
		sv, ok := getServer(t, s, demo, id)
		if !ok {
			break
		}
		if sv.Status != "SHUTOFF" {
			t.Errorf("status while deleting = %s, want SHUTOFF until gone (C4)", sv.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not gone after %s", settleBound)
		}
		time.Sleep(300 * time.Millisecond)
	}
	r = api(t, http.MethodDelete, s.ComputeURL()+"/servers/"+id, demo, nil)
	if r.code != http.StatusNotFound || novaFaultProblem(r.code, r.body) != "" {
		t.Errorf("delete after gone = %s, want 404 itemNotFound", r)
	}
}

// TestRegionKillMidOperation: region is killed with SIGKILL right after it
// accepted four creates, and again right after it accepted two deletes and
// two stops; after each restart nothing stays in BUILD, deleting or
// powering-off, and the stack's invariants hold (R3).
func TestRegionKillMidOperation(t *testing.T) {
	s := stack(t)
	demo := token(t, s, devstack.UserDemo)
	img := demoImageID(t, s)
	sfx := strconv.FormatInt(time.Now().UnixNano()%1e8, 36)
	var ids []string
	for i := range 4 {
		ids = append(ids, createServer(t, s, demo, fmt.Sprintf("rk-%s-%d", sfx, i), img, "1"))
	}
	t.Cleanup(func() { deleteAll(t, s, demo, ids) })
	if err := s.KillService(devstack.ServiceRegion, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("region back in %s", restart(t, s, devstack.ServiceRegion).Round(time.Millisecond))
	for _, id := range ids {
		waitServer(t, s, demo, id, settleBound, "ACTIVE or ERROR", isStatus("ACTIVE", "ERROR"))
	}
	settle(t, s, settleBound)

	for i, id := range ids {
		verb := map[bool]string{true: "delete", false: "stop"}[i%2 == 0]
		if verb == "delete" {
			expect(t, http.MethodDelete, s.ComputeURL()+"/servers/"+id, demo, nil, 204)
		} else {
			expect(t, http.MethodPost, s.ComputeURL()+"/servers/"+id+"/action", demo, map[string]any{"os-stop": nil}, 202, 409)
		}
	}
	if err := s.KillService(devstack.ServiceRegion, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("region back in %s", restart(t, s, devstack.ServiceRegion).Round(time.Millisecond))
	took := settle(t, s, settleBound)
	t.Logf("settled %s after the second restart", took.Round(time.Millisecond))
	checkFinal(t, s, demo, ids)
	for i, id := range ids {
		sv, ok := getServer(t, s, demo, id)
		if i%2 == 0 && ok {
			t.Errorf("server %s deleted before the kill is still %s", id, sv.Status)
		}
		if i%2 == 1 && ok && sv.Status != "SHUTOFF" && sv.Status != "ERROR" {
			t.Errorf("server %s stopped before the kill is %s, want SHUTOFF", id, sv.Status)
		}
	}
}

// TestPostgresRestart: PostgreSQL restarts while the stack is idle; region
// (compute and network) and imagesvc answer again within 30 s, the host
// agent's heartbeats land again (the host is up), and a server boots.
func TestPostgresRestart(t *testing.T) {
	s := stack(t)
	demo := token(t, s, devstack.UserDemo)
	admin := token(t, s, devstack.UserAdmin)
	start := time.Now()
	t.Logf("postgres back in %s", restart(t, s, devstack.ServicePostgres).Round(time.Millisecond))
	urls := []string{s.ComputeURL() + "/servers", s.NetworkURL() + "/v2.0/networks", s.ImageURL() + "/v2/images"}
	for _, u := range urls {
		var last reply
		for {
			r, err := call(http.MethodGet, u, demo, nil, nil)
			if err == nil && r.code == http.StatusOK {
				break
			}
			last = r
			if time.Since(start) > 30*time.Second {
				t.Fatalf("GET %s still failing 30 s after the PostgreSQL restart: %s %v", u, last, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	t.Logf("all APIs serve %s after the restart began", time.Since(start).Round(time.Millisecond))
	// Heartbeats: the host is up.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := expect(t, http.MethodGet, s.ComputeURL()+"/os-hypervisors/detail", admin, nil, 200)
		if strings.Contains(string(r.body), `"state":"up"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host not up after the restart: %s", r)
		}
		time.Sleep(time.Second)
	}
	id := createServer(t, s, demo, "after-pg", demoImageID(t, s), "1")
	t.Cleanup(func() { deleteAll(t, s, demo, []string{id}) })
	waitServer(t, s, demo, id, 2*time.Minute, "ACTIVE", isStatus("ACTIVE"))
}

func pgArray(ids []string) string { return "{" + strings.Join(ids, ",") + "}" }

// setState is what R1 says an agent restart must not change.
type setState struct {
	containers map[string]string // id → "pid=… restarts=… running=…"
	ifaces     map[string]string // OVS interface → set
	tc         map[string]string // veth → its tc qdiscs and classes
}

func observeSet(t *testing.T, s *devstack.Stack, id string) setState {
	t.Helper()
	ctx := context.Background()
	st := setState{containers: map[string]string{}, ifaces: map[string]string{}, tc: map[string]string{}}
	cs, err := s.Docker().ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", devstack.LabelSet+"="+id), filters.Arg("label", devstack.LabelHost+"="+s.HostName()))})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		ins, err := s.Docker().ContainerInspect(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		st.containers[c.ID] = fmt.Sprintf("pid=%d restarts=%d running=%v started=%s", ins.State.Pid, ins.RestartCount, ins.State.Running, ins.State.StartedAt)
	}
	ifaces, err := ovsInterfaces(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	for name, set := range ifaces {
		if set == id {
			st.ifaces[name] = set
		}
	}
	links, err := linksOf(s, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		q, _ := runOut("tc", "qdisc", "show", "dev", l)
		c, _ := runOut("tc", "class", "show", "dev", l)
		st.tc[l] = q + c
	}
	return st
}

// TestAgentRestartReattaches: the host agent stopped with SIGTERM, and
// then with SIGKILL, and started again re-attaches to a running server:
// the same containers with the same PIDs and restart counts, the same OVS
// interfaces, the same tc qdiscs and classes, and HTTP from the host (the
// bridge's port, holding the gateway; demo's default group admits tcp/80)
// to the server's address keeps being answered throughout (R1).
func TestAgentRestartReattaches(t *testing.T) {
	s := stack(t)
	demo := token(t, s, devstack.UserDemo)
	admitHTTP(t, s, demo)
	sfx := strconv.FormatInt(time.Now().UnixNano()%1e8, 36)
	id := createServer(t, s, demo, "reattach-"+sfx, demoImageID(t, s), "1")
	t.Cleanup(func() { deleteAll(t, s, demo, []string{id}) })
	waitServer(t, s, demo, id, 2*time.Minute, "ACTIVE", isStatus("ACTIVE"))
	ip := serverIP(t, s, demo, id)
	from := "the host"
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	probe := func() error {
		resp, err := hc.Get("http://" + ip + "/")
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return err
	}
	var baseline error
	for range 10 { // the first packets may wait for ARP and flows
		if baseline = probe(); baseline == nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if baseline != nil {
		t.Fatalf("HTTP from %s to %s (%s) fails before any fault: %v", from, id, ip, baseline)
	}
	before := observeSet(t, s, id)
	if len(before.containers) < 2 || len(before.ifaces) == 0 {
		t.Fatalf("server %s: containers %v, OVS interfaces %v; want infra + app and a port", id, before.containers, before.ifaces)
	}

	// Traffic to the server while the agent restarts.
	stop := make(chan struct{})
	var okN, failN int
	var fails []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := probe(); err == nil {
				okN++
			} else {
				failN++
				if len(fails) < 5 {
					fails = append(fails, err.Error())
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	for i, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if err := s.KillService(devstack.ServiceHostAgent, sig); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		back := restart(t, s, devstack.ServiceHostAgent)
		t.Logf("%s: agent back in %s", sig, back.Round(time.Millisecond))
		// Let it run a full resync over the set (after the second
		// restart; after the first it only has to have adopted it).
		wait := 3 * time.Second
		if i == 1 {
			wait = syncInterval + 2*time.Second
		}
		time.Sleep(wait)
		after := observeSet(t, s, id)
		if fmt.Sprint(after.containers) != fmt.Sprint(before.containers) {
			t.Errorf("after %s and restart, containers %v; before %v", sig, after.containers, before.containers)
		}
		if fmt.Sprint(after.ifaces) != fmt.Sprint(before.ifaces) {
			t.Errorf("after %s and restart, OVS interfaces %v; before %v", sig, after.ifaces, before.ifaces)
		}
		if fmt.Sprint(after.tc) != fmt.Sprint(before.tc) {
			t.Errorf("after %s and restart, tc %q; before %q", sig, after.tc, before.tc)
		}
	}
	close(stop)
	<-done
	t.Logf("HTTP from %s to %s during the restarts: %d answered, %d failed", from, ip, okN, failN)
	if okN == 0 || failN > 0 {
		t.Errorf("HTTP to the server during the agent restarts: %d answered, %d failed (%v); want no loss", okN, failN, fails)
	}
	if sv, _ := getServer(t, s, demo, id); sv.Status != "ACTIVE" {
		t.Errorf("server is %s after the restarts, want ACTIVE", sv.Status)
	}
}

// serverIP is the server's first fixed address.
func serverIP(t *testing.T, s *devstack.Stack, tok, id string) string {
	t.Helper()
	r := expect(t, http.MethodGet, s.ComputeURL()+"/servers/"+id, tok, nil, 200)
	v := decode[struct {
		Server struct {
			Addresses map[string][]struct{ Addr string }
		}
	}](t, r)
	for _, as := range v.Server.Addresses {
		for _, a := range as {
			return a.Addr
		}
	}
	t.Fatalf("server %s has no address: %s", id, r)
	return ""
}

// TestCreateRetrySameRequestID: a client that retries a create (its first
// answer was lost) with the same X-Openstack-Request-Id gets the same
// server, not a second one (issue 9: retries are safe), also when the
// retries race each other; the id is scoped to the project and user, so
// another project sending the same id gets a server of its own.
func TestCreateRetrySameRequestID(t *testing.T) {
	s := stack(t)
	demo := token(t, s, devstack.UserDemo)
	alt := token(t, s, devstack.UserAlt)
	name := "retry-" + strconv.FormatInt(time.Now().UnixNano()%1e8, 36)
	body := map[string]any{"server": map[string]any{"name": name, "imageRef": demoImageID(t, s), "flavorRef": "1"}}
	var mu sync.Mutex
	var all []string
	create := func(tok, rid string) string {
		r := api(t, http.MethodPost, s.ComputeURL()+"/servers", tok, body, map[string]string{"X-Openstack-Request-Id": rid})
		if r.code != http.StatusAccepted {
			t.Errorf("create with request id %s: %s", rid, r)
			return ""
		}
		if got := r.hdr.Get("X-Openstack-Request-Id"); got != rid {
			t.Errorf("request id echoed %q, want the client's %q (C3)", got, rid)
		}
		id := decode[struct{ Server struct{ ID string } }](t, r).Server.ID
		if loc := r.hdr.Get("Location"); !strings.HasSuffix(loc, "/servers/"+id) {
			t.Errorf("create with request id %s: Location %q for server %s (C5)", rid, loc, id)
		}
		mu.Lock()
		all = append(all, id)
		mu.Unlock()
		return id
	}
	t.Cleanup(func() {
		ids := slices.Compact(slices.Sorted(slices.Values(all)))
		deleteAll(t, s, demo, ids)
		deleteAll(t, s, alt, ids)
	})

	// One after the other, then three at once with another id.
	rid := "req-" + uuid.NewString()
	first, again := create(demo, rid), create(demo, rid)
	raced := make([]string, 3)
	ridRace := "req-" + uuid.NewString()
	var wg sync.WaitGroup
	for i := range raced {
		wg.Go(func() { raced[i] = create(demo, ridRace) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if first != again {
		t.Errorf("POST /v2.1/servers twice with X-Openstack-Request-Id: %s → servers %s and %s, want the same", rid, first, again)
	}
	if raced[0] != raced[1] || raced[1] != raced[2] {
		t.Errorf("three concurrent creates with X-Openstack-Request-Id: %s → servers %v, want one", ridRace, raced)
	}
	r := expect(t, http.MethodGet, s.ComputeURL()+"/servers?name=^"+name+"$", demo, nil, 200)
	if n := len(decode[struct{ Servers []struct{ ID string } }](t, r).Servers); n != 2 {
		t.Errorf("%d servers named %s after 5 creates with 2 request ids, want 2", n, name)
	}
	// The same id from another project: a server of alt's own.
	if other := create(alt, rid); other == first {
		t.Errorf("alt's create with demo's request id %s returned demo's server %s", rid, first)
	}
	// No retry made a second create action.
	r = expect(t, http.MethodGet, s.ComputeURL()+"/servers/"+first+"/os-instance-actions", demo, nil, 200)
	acts := decode[struct {
		A []struct {
			Action string `json:"action"`
		} `json:"instanceActions"`
	}](t, r).A
	if n := len(slices.DeleteFunc(acts, func(a struct {
		Action string `json:"action"`
	}) bool {
		return a.Action != "create"
	})); n != 1 {
		t.Errorf("server %s has %d create actions, want 1", first, n)
	}
}
