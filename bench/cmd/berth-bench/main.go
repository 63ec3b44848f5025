// Command berth-bench measures Berth against the raw tools it is built
// on: it brings a real stack up with internal/devstack (free ports, a
// throw-away run directory), runs the scenarios of docs/performance.md,
// prints a table of medians, p99s, spreads and ratios to baselines
// measured in the same run, and writes the results as JSON and,
// optionally, into docs/performance.md. Run it as root (dockerd, OVS and
// the hostagent's veths need it); `make bench` and `make bench-quick` do.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"

	"berth/bench/osapi"
	"berth/bench/report"
	"berth/bench/scenario"
	"berth/internal/devstack"
)

// Scenario names, in the order they run.
var order = []string{"footprint", "cli", "boot", "concurrent", "images", "api", "sched", "network"}

type options struct {
	quick    bool
	binDir   string
	jsonPath string
	mdPath   string
	only     string
	keep     bool
	render   string
	sched    scenario.SchedOptions
}

func main() {
	var o options
	flag.BoolVar(&o.quick, "quick", false, "tiny version of every scenario (about a minute): proves the bench works, numbers mean little")
	flag.StringVar(&o.binDir, "bin-dir", "bin", "directory with the built Berth binaries (make build)")
	flag.StringVar(&o.jsonPath, "json", "", "write results as JSON here (default bench/results/latest.json, or quick.json with -quick)")
	flag.StringVar(&o.mdPath, "md", "", "rewrite the generated section of this Markdown file (make bench: docs/performance.md)")
	flag.StringVar(&o.only, "only", "", "comma-separated scenarios to run, of: "+strings.Join(order, ","))
	flag.BoolVar(&o.keep, "keep", false, "keep the run directory (logs) after the run")
	flag.StringVar(&o.render, "render", "", "run nothing: re-render the -md file's generated section from this results file")
	flag.IntVar(&o.sched.Placements, "sched-placements", 0, "placements per host count in the scheduler scenario (default 100000, quick 400)")
	flag.DurationVar(&o.sched.TimeCap, "sched-time", 0, "stop each store-path placement run after this long (default 180s, quick 10s; with -sched-placements set and no -sched-time: no cap)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("component", "bench")
	if o.render != "" {
		if err := render(o.render, o.mdPath); err != nil {
			log.Error("render failed", "err", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("bench failed", "err", err)
		os.Exit(1)
	}
}

// render rewrites md's generated section from a results file.
func render(jsonPath, md string) error {
	if md == "" {
		return errors.New("-render needs -md")
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		return err
	}
	var rep report.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", jsonPath, err)
	}
	return rep.UpdateDoc(md)
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: the stack's dockerd, OVS and the hostagent's veths need it")
	}
	want := map[string]bool{}
	for _, s := range strings.Split(o.only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			if !slices.Contains(order, s) {
				return fmt.Errorf("-only: unknown scenario %q (have %s)", s, strings.Join(order, ","))
			}
			want[s] = true
		}
	}
	if o.jsonPath == "" {
		o.jsonPath = "bench/results/latest.json"
		if o.quick {
			o.jsonPath = "bench/results/quick.json"
		}
	}
	mode := "full"
	if o.quick {
		mode = "quick"
	}
	binDir, err := filepath.Abs(o.binDir)
	if err != nil {
		return err
	}

	// Not os.TempDir's 0700 children: PostgreSQL runs as user postgres and
	// must reach its data directory inside.
	runDir, err := os.MkdirTemp("", "berth-bench-")
	if err != nil {
		return err
	}
	if err := os.Chmod(runDir, 0o755); err != nil {
		return err
	}
	cfg, err := devstack.FreePortsConfig(runDir)
	if err != nil {
		return err
	}
	cfg.Log = log.With("component", "devstack")
	started := time.Now()
	rep := &report.Report{Started: started, Mode: mode}

	cfg.BinDir = binDir
	stack, err := up(ctx, cfg)
	if err != nil {
		if !o.keep {
			os.RemoveAll(runDir)
		}
		return fmt.Errorf("bring the stack up: %w", err)
	}
	log.Info("stack up", "run_dir", runDir, "took", time.Since(started).Round(time.Millisecond))
	env := &scenario.Env{Stack: stack, Quick: o.quick, Log: log, C: osapi.New(128), Docker: stack.Docker(),
		Report: rep, Prefix: "bench-", BinDir: binDir, Sched: o.sched}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		env.Close(cctx)
		cancel()
		if err := stack.Close(); err != nil {
			log.Warn("stack close", "err", err)
		}
		if o.keep {
			log.Info("run directory kept", "dir", runDir)
		} else {
			os.RemoveAll(runDir)
		}
	}()
	rep.Machine = machine(ctx, env)

	if err := env.Setup(ctx); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	scenarios := map[string]func(context.Context) error{
		"footprint":  env.FootprintIdle,
		"cli":        env.CLI,
		"boot":       env.Boot,
		"concurrent": env.Concurrent,
		"images":     env.Images,
		"api":        env.APIAtSize,
		"sched":      env.Scheduler,
		"network":    env.Network,
	}
	var failed []string
	for _, name := range order {
		if len(want) > 0 && !want[name] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		t := time.Now()
		log.Info("scenario start", "scenario", name)
		if err := scenarios[name](ctx); err != nil {
			log.Error("scenario failed", "scenario", name, "err", err)
			rep.Skip("%s: failed: %v", name, err)
			failed = append(failed, name)
		}
		log.Info("scenario done", "scenario", name, "took", time.Since(t).Round(time.Millisecond))
	}
	rep.Duration = time.Since(started)
	rep.WriteText(os.Stdout)
	if err := rep.WriteJSON(o.jsonPath); err != nil {
		return err
	}
	log.Info("wrote results", "json", o.jsonPath)
	if o.mdPath != "" && len(want) == 0 {
		if err := rep.UpdateDoc(o.mdPath); err != nil {
			return err
		}
		log.Info("updated", "markdown", o.mdPath)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(failed) > 0 {
		return fmt.Errorf("scenarios failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

func up(ctx context.Context, cfg devstack.Config) (*devstack.Stack, error) {
	upCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	return devstack.Up(upCtx, cfg)
}

// machine describes this machine and what else runs on it.
func machine(ctx context.Context, env *scenario.Env) report.Machine {
	m := report.Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		for _, l := range strings.Split(string(b), "\n") {
			if _, err := fmt.Sscanf(l, "MemTotal: %d kB", &kb); err == nil {
				m.MemoryMB = kb / 1024
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if v, err := env.Docker.ServerVersion(ctx); err == nil {
		m.Docker = v.Version
	}
	if list, err := env.Docker.ContainerList(ctx, container.ListOptions{}); err == nil && len(list) > 0 {
		m.OtherLoad = fmt.Sprintf("%d containers of other stacks running", len(list))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) > 0 {
			if m.OtherLoad != "" {
				m.OtherLoad += ", "
			}
			m.OtherLoad += "load average " + f[0]
		}
	}
	return m
}
