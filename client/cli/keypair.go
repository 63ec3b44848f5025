package cli

import (
	"fmt"
	"os"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/keypairs"
	"github.com/spf13/cobra"
)

func (a *app) keypairCmd() *cobra.Command {
	return group("keypair", "SSH keypairs",
		a.keypairListCmd(), a.keypairCreateCmd(), a.keypairShowCmd(), a.keypairDeleteCmd())
}

func (a *app) keypairListCmd() *cobra.Command {
	var o outputOpts
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List keypairs",
		Example: "  berth keypair list",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			pages, err := keypairs.List(compute, nil).AllPages(ctx)
			if err != nil {
				return err
			}
			ks, err := keypairs.ExtractKeyPairs(pages)
			if err != nil {
				return err
			}
			l := list{Columns: []string{"Name", "Fingerprint", "Type"}}
			for _, k := range ks {
				t := k.Type
				if t == "" {
					t = "ssh"
				}
				l.Rows = append(l.Rows, []any{k.Name, k.Fingerprint, t})
			}
			return o.writeList(a.stdout, l)
		},
	}
	addOutputFlags(cmd, &o, true)
	return cmd
}

func keypairRecord(k *keypairs.KeyPair) record {
	t := k.Type
	if t == "" {
		t = "ssh"
	}
	return record{{"fingerprint", k.Fingerprint}, {"name", k.Name}, {"type", t}, {"user_id", k.UserID}}
}

func (a *app) keypairCreateCmd() *cobra.Command {
	var o outputOpts
	var pubFile, privFile string
	cmd := &cobra.Command{
		Use:   "create NAME [--public-key FILE | --private-key FILE]",
		Short: "Create a keypair, or import a public key",
		Long: `Create a keypair. With --public-key the key is imported; otherwise the cloud
generates one and its private key is written to --private-key FILE (mode
0600), or printed to stdout when no file is given.`,
		Example: `  berth keypair create --public-key ~/.ssh/id_ed25519.pub mykey
  berth keypair create --private-key ./k.pem newkey`,
		Args: exactArgs(1, "the keypair's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if pubFile != "" && privFile != "" {
				return usagef("--public-key and --private-key exclude each other")
			}
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			opts := keypairs.CreateOpts{Name: args[0]}
			if pubFile != "" {
				b, err := os.ReadFile(pubFile)
				if err != nil {
					return err
				}
				opts.PublicKey = string(b)
			}
			k, err := keypairs.Create(ctx, compute, opts).Extract()
			if err != nil {
				return err
			}
			if k.PrivateKey != "" {
				if privFile != "" {
					return os.WriteFile(privFile, []byte(k.PrivateKey), 0o600)
				}
				_, err := fmt.Fprint(a.stdout, k.PrivateKey)
				return err
			}
			return o.writeRecord(a.stdout, keypairRecord(k))
		},
	}
	cmd.Flags().StringVar(&pubFile, "public-key", "", "import this public key file")
	cmd.Flags().StringVar(&privFile, "private-key", "", "write the generated private key here")
	addOutputFlags(cmd, &o, true)
	return cmd
}

func (a *app) keypairShowCmd() *cobra.Command {
	var o outputOpts
	var pub bool
	cmd := &cobra.Command{
		Use:     "show NAME",
		Short:   "Show a keypair",
		Example: "  berth keypair show mykey\n  berth keypair show --public-key mykey",
		Args:    exactArgs(1, "one keypair name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			k, err := keypairs.Get(ctx, compute, args[0], nil).Extract()
			if err != nil {
				return err
			}
			if pub {
				_, err := fmt.Fprintln(a.stdout, k.PublicKey)
				return err
			}
			return o.writeRecord(a.stdout, keypairRecord(k))
		},
	}
	cmd.Flags().BoolVar(&pub, "public-key", false, "print only the public key")
	addOutputFlags(cmd, &o, true)
	return cmd
}

func (a *app) keypairDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME [NAME…]",
		Aliases: []string{"rm"},
		Short:   "Delete keypairs",
		Example: "  berth keypair delete mykey",
		Args:    minArgs(1, "at least one keypair name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			return a.eachRef(args, func(name string) error {
				return keypairs.Delete(ctx, compute, name, nil).ExtractErr()
			})
		},
	}
}
