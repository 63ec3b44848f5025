// Package cli is the berth command line: images, servers, sets, networks,
// hosts, flavors and keypairs of a Berth cloud, on the SDK in client/sdk
// and gophercloud. Main is the whole program; cmd/berth only calls it.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/spf13/cobra"

	"berth/client/sdk/fault"
	"berth/client/sdk/session"
)

// Version is the CLI's version, shown by --version and in the User-Agent.
var Version = "0.1.0"

// Exit codes scripts can rely on.
const (
	ExitOK    = 0
	ExitError = 1 // the API refused, a wait failed, a file could not be read…
	ExitUsage = 2 // bad flags or arguments
)

// Env is what one run of the CLI talks to. Tests fill it with buffers, a
// pseudo-terminal and a fake environment.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
	// WaitInterval is the poll interval of --wait (default 1s).
	WaitInterval time.Duration
}

// app is the state of one run.
type app struct {
	env    Env
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	// Global flags.
	cloud, region, iface string
	noCache              bool
	progress             string
	timeout              time.Duration

	sessMu sync.Mutex
	sess   *session.Session
}

func (a *app) getenv(k string) string {
	if a.env.Getenv != nil {
		return a.env.Getenv(k)
	}
	return os.Getenv(k)
}

// Main runs the CLI with args (without the program name) and returns the
// exit code.
func Main(ctx context.Context, args []string, env Env) int {
	if env.Stdin == nil {
		env.Stdin = os.Stdin
	}
	if env.Stdout == nil {
		env.Stdout = os.Stdout
	}
	if env.Stderr == nil {
		env.Stderr = os.Stderr
	}
	a := &app{env: env, stdin: env.Stdin, stdout: env.Stdout, stderr: env.Stderr}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	return a.report(cmd, err)
}

// report prints err the way a user wants to read it and picks the exit
// code: the API's fault message and request id, never a Go stack.
func (a *app) report(cmd *cobra.Command, err error) int {
	var ue *usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		fmt.Fprintf(a.stderr, "berth: error: %s\n", strings.TrimPrefix(err.Error(), "berth: "))
		if cmd != nil {
			fmt.Fprintf(a.stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		}
		return ExitUsage
	}
	fmt.Fprintf(a.stderr, "Error: %s\n", message(err))
	return ExitError
}

// message renders any error for a human.
func message(err error) string {
	err = fault.From(err)
	var fe *fault.Error
	if errors.As(err, &fe) {
		return err.Error()
	}
	switch {
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	}
	var enf *gophercloud.ErrEndpointNotFound
	if errors.As(err, &enf) {
		return "the service catalog has no such endpoint"
	}
	return err.Error()
}

// usageError is a mistake on the command line (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

func isCobraUsage(err error) bool {
	s := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument",
		"invalid argument", "required flag", "accepts ", "requires at least", "if any flags in the group",
		"bad flag syntax", "none of the others can be"} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return false
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "berth",
		Short: "Manage a Berth cloud: images, servers, sets, networks, hosts",
		Long: `berth manages a Berth cloud — servers that are sets of containers, their
layered images, networks and hosts — through Berth's OpenStack APIs.

Credentials come from clouds.yaml (--os-cloud or OS_CLOUD; the file is
OS_CLIENT_CONFIG_FILE, else ./clouds.yaml, ~/.config/openstack/clouds.yaml or
/etc/openstack/clouds.yaml) or from OS_* variables (OS_AUTH_URL,
OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, OS_USER_DOMAIN_NAME,
OS_PROJECT_DOMAIN_NAME). Tokens are cached in ~/.cache/berth, so
consecutive commands do not log in again.

Exit codes: 0 success, 1 the API or a wait failed, 2 bad usage.`,
		Example: `  export OS_CLOUD=berth-demo
  berth server create --image demo --flavor m1.tiny --wait web1
  berth server list -f json
  berth server logs -f web1`,
		Version:       Version,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			switch a.progress {
			case "auto", "always", "never":
			default:
				return usagef("--progress must be auto, always or never")
			}
			return nil
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.cloud, "os-cloud", "", "cloud in clouds.yaml (default $OS_CLOUD)")
	pf.StringVar(&a.region, "os-region-name", "", "region (default from the cloud or $OS_REGION_NAME)")
	pf.StringVar(&a.iface, "os-interface", "", "endpoint interface: public, internal or admin (default public)")
	pf.BoolVar(&a.noCache, "no-token-cache", false, "neither read nor write the token cache")
	pf.StringVar(&a.progress, "progress", "auto", "progress bars: auto (on a terminal), always or never")
	pf.DurationVar(&a.timeout, "timeout", 30*time.Minute, "give up a --wait after this long")
	_ = root.RegisterFlagCompletionFunc("os-cloud", a.completeClouds)

	root.AddCommand(
		a.imageCmd(), a.serverCmd(), a.setCmd(),
		a.networkCmd(), a.subnetCmd(), a.portCmd(), a.secgroupCmd(),
		a.hostCmd(), a.flavorCmd(), a.keypairCmd(),
		a.catalogCmd(), a.completionCmd(),
	)
	return root
}

// session returns the authenticated session, creating it on first use.
func (a *app) session() (*session.Session, error) {
	a.sessMu.Lock()
	defer a.sessMu.Unlock()
	if a.sess != nil {
		return a.sess, nil
	}
	s, err := session.New(session.Options{
		Cloud: a.cloud, Region: a.region, Interface: a.iface,
		Getenv: a.getenv, NoCache: a.noCache, UserAgent: "berth/" + Version,
	})
	if err != nil {
		return nil, err
	}
	a.sess = s
	return s, nil
}

func (a *app) compute(ctx context.Context) (*gophercloud.ServiceClient, error) {
	s, err := a.session()
	if err != nil {
		return nil, err
	}
	return s.Compute(ctx)
}

func (a *app) image(ctx context.Context) (*gophercloud.ServiceClient, error) {
	s, err := a.session()
	if err != nil {
		return nil, err
	}
	return s.Image(ctx)
}

func (a *app) network(ctx context.Context) (*gophercloud.ServiceClient, error) {
	s, err := a.session()
	if err != nil {
		return nil, err
	}
	return s.Network(ctx)
}

// group makes a command that only holds subcommands.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	c.AddCommand(subs...)
	// The group's example is its first subcommand's first example line.
	for _, s := range subs {
		if s.Example != "" {
			first, _, _ := strings.Cut(s.Example, "\n")
			c.Example = first + "\n  berth " + strings.Fields(use)[0] + " --help"
			break
		}
	}
	return c
}

// Argument checkers that report usage errors (exit 2).
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("unknown command or argument %q for %q", args[0], cmd.CommandPath())
	}
	return nil
}

func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s takes %s (got %d arguments)", cmd.CommandPath(), what, len(args))
		}
		return nil
	}
}

func minArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef("%s takes %s", cmd.CommandPath(), what)
		}
		return nil
	}
}

// addOutputFlags adds -f/--format and -c/--column. shortF is false where
// -f means something else (set create -f FILE, logs -f).
func addOutputFlags(cmd *cobra.Command, o *outputOpts, shortF bool) {
	if shortF {
		cmd.Flags().StringVarP(&o.format, "format", "f", formatTable, "output format: table, json, yaml or value")
	} else {
		cmd.Flags().StringVar(&o.format, "format", formatTable, "output format: table, json, yaml or value")
	}
	cmd.Flags().StringArrayVarP(&o.columns, "column", "c", nil, "show only this column (repeatable)")
	_ = cmd.RegisterFlagCompletionFunc("format", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return formats, cobra.ShellCompDirectiveNoFileComp
	})
	prev := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		if err := o.check(); err != nil {
			return err
		}
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
}

// waitCtx bounds a --wait by --timeout.
func (a *app) waitCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.timeout)
}
