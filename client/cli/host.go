package cli

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"berth/client/sdk/hosts"
)

func (a *app) hostCmd() *cobra.Command {
	return group("host", "Hosts (admin): capacity, use, heartbeat age, sets", a.hostListCmd(), a.hostShowCmd())
}

func usage(used, total int) cell {
	pct := ""
	if total > 0 {
		pct = fmt.Sprintf(" (%d%%)", used*100/total)
	}
	return cell{Raw: used, Text: strconv.Itoa(used) + "/" + strconv.Itoa(total) + pct}
}

func ageCell(s float64) cell {
	return cell{Raw: s, Text: strconv.FormatFloat(s, 'f', 1, 64) + "s"}
}

func (a *app) hostListCmd() *cobra.Command {
	var o outputOpts
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List hosts with their capacity and use (admin)",
		Example: "  berth host list\n  berth host list -f json -c Name -c State",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			pages, err := hosts.List(compute).AllPages(ctx)
			if err != nil {
				return unsupported(err, "hosts (/v2.1/berth-hosts)")
			}
			hs, err := hosts.ExtractHosts(pages)
			if err != nil {
				return err
			}
			l := list{Columns: []string{"Name", "State", "vCPUs Used", "Memory MB Used", "Disk GB Used", "Sets", "Heartbeat Age"}}
			for _, h := range hs {
				l.Rows = append(l.Rows, []any{h.Name, h.State, usage(h.VCPUsUsed, h.VCPUs), usage(h.MemoryMBUsed, h.MemoryMB),
					usage(h.DiskGBUsed, h.DiskGB), h.Sets, ageCell(h.HeartbeatAgeSeconds)})
			}
			return o.writeList(a.stdout, l)
		},
	}
	addOutputFlags(cmd, &o, true)
	return cmd
}

func (a *app) hostShowCmd() *cobra.Command {
	var o outputOpts
	cmd := &cobra.Command{
		Use:     "show HOST",
		Short:   "Show a host (admin)",
		Example: "  berth host show node-1\n  berth host show node-1 -f value -c state",
		Args:    exactArgs(1, "one host name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			h, err := hosts.Get(ctx, compute, args[0]).Extract()
			if err != nil {
				return err
			}
			return o.writeRecord(a.stdout, record{
				{"name", h.Name}, {"state", h.State},
				{"vcpus", h.VCPUs}, {"vcpus_used", h.VCPUsUsed},
				{"memory_mb", h.MemoryMB}, {"memory_mb_used", h.MemoryMBUsed},
				{"disk_gb", h.DiskGB}, {"disk_gb_used", h.DiskGBUsed},
				{"sets", h.Sets}, {"heartbeat_age_seconds", h.HeartbeatAgeSeconds},
			})
		},
	}
	addOutputFlags(cmd, &o, true)
	return cmd
}
