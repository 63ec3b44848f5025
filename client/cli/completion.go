package cli

import (
	"context"
	"os"
	"sort"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	gservers "github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"berth/client/sdk/session"
)

func (a *app) completionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "completion bash|zsh",
		Short: "Print a shell completion script",
		Long: `Print a completion script for bash or zsh. Server, image and flavor names
complete from the cloud (using the cached token).`,
		Example: `  source <(berth completion bash)
  berth completion zsh > "${fpath[1]}/_berth"`,
		Args:      exactArgs(1, "bash or zsh"),
		ValidArgs: []string{"bash", "zsh"},
		RunE: func(cmd *cobra.Command, args []string) error {
			switch args[0] {
			case "bash":
				return cmd.Root().GenBashCompletionV2(a.stdout, true)
			case "zsh":
				return cmd.Root().GenZshCompletion(a.stdout)
			}
			return usagef("unknown shell %q: bash or zsh", args[0])
		},
	}
	return cmd
}

func (a *app) completeServers(cmd *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	compute, err := a.compute(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	pages, err := gservers.ListSimple(compute, gservers.ListOpts{}).AllPages(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	all, _ := gservers.ExtractServers(pages)
	var out []string
	for _, s := range all {
		if strings.HasPrefix(s.Name, prefix) {
			out = append(out, s.Name)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func (a *app) completeImages(cmd *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ic, err := a.image(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	pages, err := images.List(ic, images.ListOpts{}).AllPages(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	all, _ := images.ExtractImages(pages)
	var out []string
	for _, i := range all {
		if strings.HasPrefix(i.Name, prefix) {
			out = append(out, i.Name)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

func (a *app) completeFlavors(cmd *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	compute, err := a.compute(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	pages, err := flavors.ListDetail(compute, flavors.ListOpts{}).AllPages(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	all, _ := flavors.ExtractFlavors(pages)
	var out []string
	for _, f := range all {
		if strings.HasPrefix(f.Name, prefix) {
			out = append(out, f.Name)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeClouds lists the clouds of the first clouds.yaml found.
func (a *app) completeClouds(_ *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
	locs, err := session.CloudsYAMLLocations(a.getenv)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	for _, p := range locs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var f struct {
			Clouds map[string]any `yaml:"clouds"`
		}
		if yaml.Unmarshal(b, &f) != nil {
			break
		}
		var out []string
		for name := range f.Clouds {
			if strings.HasPrefix(name, prefix) {
				out = append(out, name)
			}
		}
		sort.Strings(out)
		return out, cobra.ShellCompDirectiveNoFileComp
	}
	return nil, cobra.ShellCompDirectiveNoFileComp
}
