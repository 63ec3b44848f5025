// Command berth-stack runs a whole Berth stack on one machine.
//
//	berth-stack run [--run-dir .run] [--bin-dir bin]
//	    Bring the stack up, print what to type next, and keep it up until
//	    Ctrl-C (SIGINT) or SIGTERM; then stop everything it started.
//	berth-stack exec [--run-dir DIR] [--bin-dir bin] [--infra-only] -- CMD [ARGS...]
//	    Bring up a throw-away stack on free ports beside any other, run CMD
//	    with the stack in its environment (OS_CLIENT_CONFIG_FILE,
//	    BERTH_TEST_*), tear the stack down and exit with CMD's status.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"berth/internal/devstack"
)

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	code := 0
	switch os.Args[1] {
	case "run":
		err = runCmd(ctx, stop, os.Args[2:])
	case "exec":
		code, err = execCmd(ctx, os.Args[2:])
	case "-h", "--help", "help":
		usage(os.Stdout)
		return
	default:
		usage(os.Stderr)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "berth-stack:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  berth-stack run  [--run-dir .run] [--bin-dir bin] [--infra-only] [-v]
  berth-stack exec [--run-dir DIR] [--bin-dir bin] [--infra-only] [-v] -- CMD [ARGS...]
`)
}

type commonFlags struct {
	runDir, binDir string
	infraOnly      bool
	verbose        bool
}

func parseFlags(name string, args []string, defaultRunDir string) (*commonFlags, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	f := &commonFlags{}
	fs.StringVar(&f.runDir, "run-dir", defaultRunDir, "directory holding the stack's state and logs")
	fs.StringVar(&f.binDir, "bin-dir", "bin", "directory holding the built Berth binaries")
	fs.BoolVar(&f.infraOnly, "infra-only", false, "start PostgreSQL, Docker, OVS and Keystone only")
	fs.BoolVar(&f.verbose, "v", false, "debug logging")
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	return f, fs.Args(), nil
}

func logger(verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func runCmd(ctx context.Context, stopSignals func(), args []string) error {
	f, rest, err := parseFlags("run", args, ".run")
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("run: unexpected arguments %q", rest)
	}
	cfg := devstack.DefaultConfig(f.runDir)
	cfg.BinDir = f.binDir
	cfg.InfraOnly = f.infraOnly
	cfg.UserClouds = true
	cfg.Log = logger(f.verbose)

	start := time.Now()
	s, err := devstack.Up(ctx, cfg)
	if err != nil {
		return err
	}
	printInstructions(os.Stdout, s, time.Since(start))
	<-ctx.Done()
	stopSignals() // a second Ctrl-C kills berth-stack itself
	fmt.Fprintln(os.Stderr, "\nstopping the stack…")
	return s.Close()
}

func printInstructions(w io.Writer, s *devstack.Stack, took time.Duration) {
	cfg := s.Config()
	fmt.Fprintf(w, "\nBerth is up (%s). State and logs: %s/{logs,…}\n\n", took.Round(100*time.Millisecond), cfg.RunDir)
	if s.UserCloudsYAML() == "" {
		fmt.Fprintf(w, "  export OS_CLIENT_CONFIG_FILE=%s\n", s.CloudsYAML())
	}
	fmt.Fprintf(w, `  export OS_CLOUD=%s
  openstack image list
  openstack flavor list
  openstack server create --image %s --flavor m1.tiny --wait web1
  openstack server show web1
  openstack security group rule create --protocol tcp --dst-port 80 --remote-ip 0.0.0.0/0 default
  curl http://<web1's address>/          # busybox httpd answers %q (the rule admits the host)
  openstack server stop web1; openstack server start web1
  openstack server delete --wait web1

Clouds: %v (in %s).
Endpoints: identity %s, compute %s, network %s, image %s.
Ctrl-C stops the stack; servers and data stay in %s for the next run.
`, devstack.CloudDemo, devstack.DemoImageName, devstack.DemoPage[:len(devstack.DemoPage)-1],
		devstack.CloudNames(), s.CloudsYAML(), s.KeystoneURL(), s.ComputeURL(), s.NetworkURL(), s.ImageURL(), cfg.RunDir)
	if cfg.InfraOnly {
		fmt.Fprintln(w, "(--infra-only: region, imagesvc and hostagent are not running.)")
	}
}

func execCmd(ctx context.Context, args []string) (int, error) {
	f, rest, err := parseFlags("exec", args, "")
	if err != nil {
		return 2, err
	}
	if len(rest) == 0 {
		return 2, errors.New("exec: no command given")
	}
	runDir := f.runDir
	if runDir == "" {
		// PostgreSQL (user postgres) must reach into it: MkdirTemp's 0700
		// is widened by Up.
		if runDir, err = os.MkdirTemp("", "berth-stack-"); err != nil {
			return 1, err
		}
		defer os.RemoveAll(runDir)
	}
	cfg, err := devstack.FreePortsConfig(runDir)
	if err != nil {
		return 1, err
	}
	cfg.BinDir = f.binDir
	cfg.InfraOnly = f.infraOnly
	cfg.Log = logger(f.verbose)
	s, err := devstack.Up(ctx, cfg)
	if err != nil {
		return 1, err
	}
	defer func() {
		if err := s.Close(); err != nil {
			fmt.Fprintln(os.Stderr, "berth-stack: stop:", err)
		}
	}()

	cmd := exec.CommandContext(ctx, rest[0], rest[1:]...)
	cmd.Env = append(os.Environ(), s.Env(devstack.CloudDemo)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 1, err
	}
	return 0, nil
}
