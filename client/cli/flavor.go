package cli

import (
	"sort"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/spf13/cobra"
)

func (a *app) flavorCmd() *cobra.Command {
	return group("flavor", "Flavors: the sizes a server can have",
		a.flavorListCmd(), a.flavorShowCmd(), a.flavorCreateCmd(), a.flavorDeleteCmd())
}

func (a *app) flavorListCmd() *cobra.Command {
	var o outputOpts
	var all bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List flavors",
		Example: "  berth flavor list\n  berth flavor list -f value -c Name",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			access := flavors.PublicAccess
			if all {
				access = flavors.AllAccess
			}
			pages, err := flavors.ListDetail(compute, flavors.ListOpts{AccessType: access}).AllPages(ctx)
			if err != nil {
				return err
			}
			fs, err := flavors.ExtractFlavors(pages)
			if err != nil {
				return err
			}
			l := list{Columns: []string{"ID", "Name", "RAM", "Disk", "Ephemeral", "VCPUs", "Is Public"}}
			for _, f := range fs {
				l.Rows = append(l.Rows, []any{f.ID, f.Name, f.RAM, f.Disk, f.Ephemeral, f.VCPUs, f.IsPublic})
			}
			return o.writeList(a.stdout, l)
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "private flavors too (admin)")
	addOutputFlags(cmd, &o, true)
	return cmd
}

func (a *app) flavorShowCmd() *cobra.Command {
	var o outputOpts
	cmd := &cobra.Command{
		Use:               "show FLAVOR",
		Short:             "Show a flavor",
		Example:           "  berth flavor show m1.tiny\n  berth flavor show 1 -f json",
		Args:              exactArgs(1, "one flavor (name or ID)"),
		ValidArgsFunction: a.completeFlavors,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			f, err := findFlavor(ctx, compute, args[0])
			if err != nil {
				return err
			}
			fl, err := objectOf(flavors.Get(ctx, compute, f.ID).Result, "flavor")
			if err != nil {
				return err
			}
			rec := record{}
			keys := make([]string, 0, len(fl))
			for k := range fl {
				if k != "links" {
					keys = append(keys, k)
				}
			}
			sort.Strings(keys)
			for _, k := range keys {
				v := fl[k]
				if k == "extra_specs" {
					k, v = "properties", metadataCell(v)
				}
				rec = append(rec, field{k, v})
			}
			sort.SliceStable(rec, func(i, j int) bool { return rec[i].Name < rec[j].Name })
			return o.writeRecord(a.stdout, rec)
		},
	}
	addOutputFlags(cmd, &o, true)
	return cmd
}

func (a *app) flavorCreateCmd() *cobra.Command {
	var o outputOpts
	var id, desc string
	var ram, vcpus, disk, ephemeral, swap int
	var private bool
	cmd := &cobra.Command{
		Use:     "create NAME --ram MB --vcpus N [--disk GB]",
		Short:   "Create a flavor (admin)",
		Example: "  berth flavor create --ram 512 --vcpus 1 --disk 5 m1.small\n  berth flavor create --id 42 --ram 2048 --vcpus 2 --private big",
		Args:    exactArgs(1, "the flavor's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if ram <= 0 || vcpus <= 0 {
				return usagef("--ram and --vcpus must be positive")
			}
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			pub := !private
			opts := flavors.CreateOpts{Name: args[0], ID: id, RAM: ram, VCPUs: vcpus, Disk: &disk, IsPublic: &pub, Description: desc}
			if ephemeral > 0 {
				opts.Ephemeral = &ephemeral
			}
			if swap > 0 {
				opts.Swap = &swap
			}
			fl, err := objectOf(flavors.Create(ctx, compute, opts).Result, "flavor")
			if err != nil {
				return err
			}
			delete(fl, "links")
			return o.writeRecord(a.stdout, mapRecord(fl))
		},
	}
	f := cmd.Flags()
	f.StringVar(&id, "id", "", "flavor ID (default: generated)")
	f.IntVar(&ram, "ram", 0, "memory in MB")
	f.IntVar(&vcpus, "vcpus", 0, "vCPUs")
	f.IntVar(&disk, "disk", 0, "writable layer quota in GB")
	f.IntVar(&ephemeral, "ephemeral", 0, "ephemeral disk in GB")
	f.IntVar(&swap, "swap", 0, "swap in MB")
	f.BoolVar(&private, "private", false, "not public")
	f.StringVar(&desc, "description", "", "description")
	addOutputFlags(cmd, &o, true)
	return cmd
}

func (a *app) flavorDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:               "delete FLAVOR [FLAVOR…]",
		Aliases:           []string{"rm"},
		Short:             "Delete flavors (admin)",
		Example:           "  berth flavor delete m1.huge",
		Args:              minArgs(1, "at least one flavor (name or ID)"),
		ValidArgsFunction: a.completeFlavors,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			return a.eachRef(args, func(ref string) error {
				f, err := findFlavor(ctx, compute, ref)
				if err != nil {
					return err
				}
				return flavors.Delete(ctx, compute, f.ID).ExtractErr()
			})
		},
	}
}
