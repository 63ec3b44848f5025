package scenario

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"berth/bench/report"
	"berth/bench/stats"
	"berth/internal/devstack"
)

// CLI measures what one command of the berth CLI costs with a token from
// its cache: `berth flavor list` run as a process, many times, against the
// stack, beside the same GET /flavors/detail sent by the bench on a new
// connection (the API's share) and `openstack flavor list` (the python
// client, which authenticates on every run and is slow to start, so it runs
// only a few times).
func (e *Env) CLI(ctx context.Context) error {
	runs, osRuns := 40, 3
	if e.Quick {
		runs, osRuns = 8, 1
	}
	berth := filepath.Join(e.BinDir, "berth")
	if _, err := os.Stat(berth); err != nil {
		return fmt.Errorf("berth CLI not built: %w", err)
	}
	cache, err := os.MkdirTemp(e.Stack.RunDir(), "cli-cache-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cache)
	env := append(os.Environ(), "OS_CLIENT_CONFIG_FILE="+e.Stack.CloudsYAML(), "OS_CLOUD="+devstack.CloudDemo,
		"XDG_CACHE_HOME="+cache, "HOME="+cache)
	cmd := func(name string, args ...string) (time.Duration, error) {
		c := exec.CommandContext(ctx, name, args...)
		c.Env = env
		var out bytes.Buffer
		c.Stdout, c.Stderr = &out, &out
		t := time.Now()
		err := c.Run()
		d := time.Since(t)
		if err != nil {
			return 0, fmt.Errorf("%s %v: %w: %s", filepath.Base(name), args, err, out.String())
		}
		return d, nil
	}
	first, err := cmd(berth, "flavor", "list") // authenticates and fills the token cache
	if err != nil {
		return err
	}
	// The API's share: the same request the command makes, on a fresh
	// connection as a new process has to, with the demo token.
	fresh := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 30 * time.Second}
	apiGet := func() (time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.Stack.ComputeURL()+"/flavors/detail", nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("X-Auth-Token", e.Demo.Token)
		t := time.Now()
		resp, err := fresh.Do(req)
		if err != nil {
			return 0, err
		}
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		resp.Body.Close()
		d := time.Since(t)
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("GET /flavors/detail: %d %s", resp.StatusCode, b.String())
		}
		return d, nil
	}
	if _, err := apiGet(); err != nil { // warms region's token cache for the demo token
		return err
	}
	// What starting any process costs on this machine, timed the same
	// way: it is in 8a and 8b too, and it differs a lot between machines
	// of this kind (/bin/true took 1 ms on one and 10 ms on another).
	floor := "/bin/true"
	if _, err := os.Stat(floor); err != nil {
		floor = ""
	}
	var cli, api, execs []time.Duration
	for range runs {
		d, err := cmd(berth, "flavor", "list")
		if err != nil {
			return err
		}
		cli = append(cli, d)
		if floor != "" {
			if d, err = cmd(floor); err != nil {
				return err
			}
			execs = append(execs, d)
		}
		if d, err = apiGet(); err != nil {
			return err
		}
		api = append(api, d)
	}
	var osc []time.Duration
	oscNote := ""
	if openstack, err := exec.LookPath("openstack"); err != nil {
		oscNote = "python-openstackclient not installed: no baseline"
	} else {
		for range osRuns {
			d, err := cmd(openstack, "flavor", "list")
			if err != nil {
				return err
			}
			osc = append(osc, d)
		}
	}
	cs, as := stats.Durations(cli), stats.Durations(api)
	own := cs.P50 - as.P50
	row := report.Row{ID: "8a", Metric: "CLI: `berth flavor list`, token from its cache (process start to exit)", Unit: "s", Value: &cs,
		Note: fmt.Sprintf("first run, which authenticates: %s", first.Round(time.Millisecond))}
	var es stats.Summary
	if len(execs) > 0 {
		es = stats.Durations(execs)
		row.Note += fmt.Sprintf("; starting any process here (%s, timed the same way) takes %s at p50", floor, time.Duration(es.P50*float64(time.Second)).Round(100*time.Microsecond))
	}
	if len(osc) > 0 {
		ocs := stats.Durations(osc)
		row.Baseline, row.BaselineValue, row.Ratio = "`openstack flavor list`", &ocs, stats.Ratio(cs.P50, ocs.P50)
	} else {
		row.Note += "; " + oscNote
	}
	e.Report.Add(row)
	e.Report.Add(report.Row{ID: "8b", Metric: "CLI's own cost per command: 8a minus the API's share (p50)", Unit: "s", Single: report.F(own),
		Baseline: "GET /flavors/detail on a new connection", BaselineValue: &as, Target: "< 50 ms", Met: report.B(own < 0.05)})
	e.Report.Detail("cli", map[string]any{"berth": cs, "api": as, "openstack_runs": len(osc), "first_run_s": first.Seconds(), "exec_floor": es})
	e.Report.Note("CLI (8a, 8b): bin/berth run %d times as a new process with the stack's clouds.yaml (cloud %s) and a token "+
		"cache of its own that the first run filled; each run is timed from exec to exit, interleaved with the same GET "+
		"/flavors/detail sent by the bench on a fresh connection, whose p50 is subtracted to give the CLI's own cost. The "+
		"python client (`openstack flavor list`, the same cloud) runs %d times: it has no token cache, so each run also "+
		"authenticates with Keystone.", runs, devstack.CloudDemo, len(osc))
	return nil
}
