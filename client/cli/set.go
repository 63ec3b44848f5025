package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"berth/client/sdk/servers"
	"berth/client/sdk/sets"
)

// setFile is the YAML a set is described in (docs/examples/set.yaml).
type setFile struct {
	Name       string          `yaml:"name"`
	Flavor     string          `yaml:"flavor"`
	Networks   []string        `yaml:"networks"`
	Containers []containerFile `yaml:"containers"`
}

type containerFile struct {
	Name    string            `yaml:"name"`
	Image   string            `yaml:"image"`
	Role    string            `yaml:"role"`
	Command []string          `yaml:"command"`
	Env     map[string]string `yaml:"env"`
	Volumes []struct {
		Name string `yaml:"name"`
		Path string `yaml:"path"`
	} `yaml:"volumes"`
	Limits *struct {
		VCPUs    float64 `yaml:"vcpus"`
		MemoryMB int     `yaml:"memory_mb"`
	} `yaml:"limits"`
	Restart string `yaml:"restart"`
}

// parseSetFile reads a set description strictly: unknown keys are errors,
// so a typo never silently drops a setting.
func parseSetFile(b []byte) (*setFile, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f setFile
	if err := dec.Decode(&f); err != nil {
		if err == io.EOF {
			return nil, fmt.Errorf("the set file is empty")
		}
		return nil, err
	}
	if f.Name == "" {
		return nil, fmt.Errorf("the set file has no name")
	}
	if f.Flavor == "" {
		return nil, fmt.Errorf("the set file has no flavor")
	}
	if len(f.Containers) == 0 {
		return nil, fmt.Errorf("the set file has no containers")
	}
	return &f, nil
}

// createOpts resolves the file's flavor and networks into a request.
func (a *app) setCreateOpts(ctx context.Context, compute *gophercloud.ServiceClient, f *setFile) (sets.CreateOpts, error) {
	opts := sets.CreateOpts{Name: f.Name}
	flv, err := findFlavor(ctx, compute, f.Flavor)
	if err != nil {
		return opts, err
	}
	opts.FlavorRef = flv.ID
	if len(f.Networks) > 0 {
		nc, err := a.network(ctx)
		if err != nil {
			return opts, err
		}
		for _, n := range f.Networks {
			net, err := findNetwork(ctx, nc, n)
			if err != nil {
				return opts, err
			}
			opts.Networks = append(opts.Networks, sets.Network{UUID: net.ID})
		}
	}
	for _, c := range f.Containers {
		sc := sets.Container{Name: c.Name, Image: c.Image, Role: c.Role, Command: c.Command, Env: c.Env, Restart: c.Restart}
		for _, v := range c.Volumes {
			sc.Volumes = append(sc.Volumes, sets.VolumeMount{Name: v.Name, Path: v.Path})
		}
		if c.Limits != nil {
			sc.Limits = &sets.Limits{VCPUs: c.Limits.VCPUs, MemoryMB: c.Limits.MemoryMB}
		}
		opts.Containers = append(opts.Containers, sc)
	}
	if _, err := opts.ToSetCreateMap(); err != nil {
		return opts, err
	}
	return opts, nil
}

func (a *app) setCmd() *cobra.Command {
	return group("set", "Sets: servers of several containers (app + sidecars) described in YAML",
		a.setCreateCmd(), a.setListCmd(), a.setShowCmd(), a.setDeleteCmd())
}

func containersCell(cs []sets.ContainerStatus) cell {
	lines := make([]string, len(cs))
	for i, c := range cs {
		role := c.Role
		if role == "" {
			role = sets.RoleApp
		}
		l := fmt.Sprintf("%s: %s (%s)", c.Name, c.Image, role)
		if c.State != "" {
			l += " " + c.State
		}
		lines[i] = l
	}
	if cs == nil {
		cs = []sets.ContainerStatus{}
	}
	return cell{Raw: cs, Text: strings.Join(lines, "\n")}
}

func setRecord(s *sets.Set) record {
	nets := make([]string, len(s.Networks))
	for i, n := range s.Networks {
		nets[i] = n.UUID
	}
	rec := record{
		{"id", s.ID}, {"name", s.Name}, {"status", s.Status}, {"flavorRef", s.FlavorRef}, {"host", s.Host},
		{"project_id", s.ProjectID}, {"networks", cell{Raw: s.Networks, Text: strings.Join(nets, ", ")}},
		{"containers", containersCell(s.Containers)}, {"created", s.Created}, {"updated", s.Updated},
	}
	keys := make([]string, 0, len(s.Extra))
	for k := range s.Extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		rec = append(rec, field{k, s.Extra[k]})
	}
	return rec
}

// findSet resolves a set by id or exact name.
func findSet(ctx context.Context, c *gophercloud.ServiceClient, ref string) (*sets.Set, error) {
	var idErr error // a by-id 404 carries the request id: report it if no name matches either
	if looksLikeID(ref) {
		s, err := sets.Get(ctx, c, ref).Extract()
		if err == nil {
			return s, nil
		}
		if !is404(err) {
			return nil, err
		}
		idErr = err
	}
	pages, err := sets.List(c, &sets.ListOpts{Name: ref}).AllPages(ctx)
	if err != nil {
		return nil, unsupported(err, "sets (/v2.1/berth-sets)")
	}
	all, err := sets.ExtractSets(pages)
	if err != nil {
		return nil, err
	}
	return pickOne("set", ref, all, func(s sets.Set) bool { return s.Name == ref || s.ID == ref }, idErr)
}

func (a *app) setCreateCmd() *cobra.Command {
	var o outputOpts
	var file string
	var wait bool
	cmd := &cobra.Command{
		Use:   "create -f SET.yaml",
		Short: "Create a set (a server of several containers) from a YAML file",
		Long: `Create a set from a YAML file (see docs/cli.md and docs/examples/set.yaml):

  name: web
  flavor: m1.small            # name or ID
  networks: [private]         # names or IDs; default: the default network
  containers:
    - name: app
      image: demo             # image name or ID
      role: app               # app (default) or sidecar
      command: ["httpd", "-f", "-p", "80", "-h", "/www"]
      env: {GREETING: hello}
      volumes: [{name: data, path: /www}]
      limits: {vcpus: 0.5, memory_mb: 128}
      restart: always         # never, on-failure or always
    - name: logship
      image: busybox
      role: sidecar
      command: ["sh", "-c", "tail -F /www/access.log"]
      volumes: [{name: data, path: /www}]

Unknown keys are errors. "-f -" reads the file from stdin.`,
		Example: `  berth set create -f docs/examples/set.yaml --wait
  berth set create -f web.yaml --format json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if file == "" {
				return usagef("-f SET.yaml is required")
			}
			var b []byte
			var err error
			if file == "-" {
				b, err = io.ReadAll(a.stdin)
			} else {
				b, err = os.ReadFile(file)
			}
			if err != nil {
				return err
			}
			f, err := parseSetFile(b)
			if err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			opts, err := a.setCreateOpts(ctx, compute, f)
			if err != nil {
				return err
			}
			s, err := sets.Create(ctx, compute, opts).Extract()
			if err != nil {
				return unsupported(err, "sets (/v2.1/berth-sets)")
			}
			if wait {
				if err := a.waitServer(ctx, compute, s.ID, s.Name, servers.WaitOpts{Target: []string{"ACTIVE"}}); err != nil {
					return err
				}
				if s2, err := sets.Get(ctx, compute, s.ID).Extract(); err == nil {
					s = s2
				}
			}
			return o.writeRecord(a.stdout, setRecord(s))
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the set's YAML file (- for stdin)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the set's server is ACTIVE, showing progress")
	addOutputFlags(cmd, &o, false)
	return cmd
}

func (a *app) setListCmd() *cobra.Command {
	var o outputOpts
	var all bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List sets",
		Example: "  berth set list\n  berth set list -f json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			pages, err := sets.List(compute, &sets.ListOpts{AllTenants: all}).AllPages(ctx)
			if err != nil {
				return unsupported(err, "sets (/v2.1/berth-sets)")
			}
			ss, err := sets.ExtractSets(pages)
			if err != nil {
				return err
			}
			l := list{Columns: []string{"ID", "Name", "Status", "Containers", "Host"}}
			for _, s := range ss {
				names := make([]string, len(s.Containers))
				for i, c := range s.Containers {
					names[i] = c.Name
				}
				l.Rows = append(l.Rows, []any{s.ID, s.Name, s.Status, cell{Raw: names, Text: strings.Join(names, ", ")}, s.Host})
			}
			return o.writeList(a.stdout, l)
		},
	}
	cmd.Flags().BoolVar(&all, "all-projects", false, "sets of every project (admin)")
	addOutputFlags(cmd, &o, true)
	return cmd
}

func (a *app) setShowCmd() *cobra.Command {
	var o outputOpts
	cmd := &cobra.Command{
		Use:     "show SET",
		Short:   "Show a set and its containers",
		Example: "  berth set show web\n  berth set show web -f yaml",
		Args:    exactArgs(1, "one set (name or ID)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			s, err := findSet(ctx, compute, args[0])
			if err != nil {
				return err
			}
			return o.writeRecord(a.stdout, setRecord(s))
		},
	}
	addOutputFlags(cmd, &o, true)
	return cmd
}

func (a *app) setDeleteCmd() *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:     "delete SET [SET…]",
		Aliases: []string{"rm"},
		Short:   "Delete sets (and their servers)",
		Example: "  berth set delete web\n  berth set delete --wait web api",
		Args:    minArgs(1, "at least one set (name or ID)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			return a.eachRef(args, func(ref string) error {
				s, err := findSet(ctx, compute, ref)
				if err == nil {
					err = sets.Delete(ctx, compute, s.ID).ExtractErr()
				}
				if err == nil && wait {
					err = a.waitServer(ctx, compute, s.ID, s.Name, servers.WaitOpts{Gone: true})
				}
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the sets are gone")
	return cmd
}
