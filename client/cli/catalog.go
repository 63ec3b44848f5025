package cli

import (
	"strings"

	"github.com/spf13/cobra"
)

func (a *app) catalogCmd() *cobra.Command {
	var o outputOpts
	list := &cobra.Command{
		Use:   "list",
		Short: "List the service catalog of the current token (from the token cache when possible)",
		Example: `  berth catalog list
  berth catalog list -f value -c Type`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.session()
			if err != nil {
				return err
			}
			cat, err := s.Catalog(cmd.Context())
			if err != nil {
				return err
			}
			l := listOf("Name", "Type", "Endpoints")
			for _, e := range cat.Entries {
				var eps []string
				for _, ep := range e.Endpoints {
					eps = append(eps, ep.Region+" "+ep.Interface+": "+ep.URL)
				}
				l.Rows = append(l.Rows, []any{e.Name, e.Type, cell{Raw: e.Endpoints, Text: strings.Join(eps, "\n")}})
			}
			return o.writeList(a.stdout, l)
		},
	}
	addOutputFlags(list, &o, true)
	return group("catalog", "The service catalog", list)
}

func listOf(cols ...string) list { return list{Columns: cols} }
