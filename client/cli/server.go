package cli

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/keypairs"
	gservers "github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/pagination"
	"github.com/spf13/cobra"

	"berth/client/sdk/servers"
)

func (a *app) serverCmd() *cobra.Command {
	c := group("server", "Servers: create, list, start, stop, deploy, shell, logs, cp …",
		a.serverCreateCmd(), a.serverListCmd(), a.serverShowCmd(), a.serverDeleteCmd(),
		a.serverAction("start", "Start stopped servers", "ACTIVE", simple(gservers.Start)),
		a.serverAction("stop", "Stop (shut off) servers", "SHUTOFF", simple(gservers.Stop)),
		a.serverAction("pause", "Pause servers (freeze every container of the set)", "PAUSED", simple(gservers.Pause)),
		a.serverAction("unpause", "Unpause paused servers", "ACTIVE", simple(gservers.Unpause)),
		a.serverAction("suspend", "Suspend servers", "SUSPENDED", simple(gservers.Suspend)),
		a.serverAction("resume", "Resume suspended servers", "ACTIVE", simple(gservers.Resume)),
		a.serverRebootCmd(), a.serverRebuildCmd(false), a.serverRebuildCmd(true), a.serverResizeCmd(),
		a.serverSnapshotCmd(), a.serverConsoleCmd(), a.serverLogsCmd(), a.serverShellCmd(),
		a.serverSyncStatusCmd(), a.serverCpCmd(),
	)
	return c
}

var powerStates = map[int]string{0: "NOSTATE", 1: "Running", 3: "Paused", 4: "Shutdown", 6: "Crashed", 7: "Suspended"}

// addressesCell shows a server's addresses as python-openstackclient does:
// "private=10.99.0.2, fd00::2; other=…", and in JSON as {"private": [ips]}.
func addressesCell(addrs map[string]any) cell {
	nets := make([]string, 0, len(addrs))
	for n := range addrs {
		nets = append(nets, n)
	}
	sort.Strings(nets)
	raw := map[string][]string{}
	var parts []string
	for _, n := range nets {
		var ips []string
		if l, ok := addrs[n].([]any); ok {
			for _, e := range l {
				if m, ok := e.(map[string]any); ok {
					if ip, ok := m["addr"].(string); ok {
						ips = append(ips, ip)
					}
				}
			}
		}
		raw[n] = append([]string{}, ips...)
		parts = append(parts, n+"="+strings.Join(ips, ", "))
	}
	return cell{Raw: raw, Text: strings.Join(parts, "; ")}
}

func refID(v any) string {
	if m, ok := v.(map[string]any); ok {
		if id, ok := m["id"].(string); ok {
			return id
		}
	}
	return ""
}

// nameMaps fetches image and flavor names for the ids in a server list,
// concurrently; a failed lookup just leaves ids.
func (a *app) nameMaps(ctx context.Context, compute *gophercloud.ServiceClient) (imgs, flvs map[string]string) {
	imgs, flvs = map[string]string{}, map[string]string{}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		ic, err := a.image(ctx)
		if err != nil {
			return
		}
		pages, err := images.List(ic, images.ListOpts{}).AllPages(ctx)
		if err != nil {
			return
		}
		all, _ := images.ExtractImages(pages)
		for _, i := range all {
			imgs[i.ID] = i.Name
		}
	}()
	go func() {
		defer wg.Done()
		pages, err := flavors.ListDetail(compute, flavors.ListOpts{AccessType: flavors.AllAccess}).AllPages(ctx)
		if err != nil {
			return
		}
		all, _ := flavors.ExtractFlavors(pages)
		for _, f := range all {
			flvs[f.ID] = f.Name
		}
	}()
	wg.Wait()
	return imgs, flvs
}

func (a *app) serverListCmd() *cobra.Command {
	var o outputOpts
	var long, all, noNames bool
	var name, status, host string
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List servers",
		Example: `  berth server list
  berth server list --status ACTIVE -f value -c ID
  berth server list --long -f json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			opts := gservers.ListOpts{Name: name, Status: status, Host: host, AllTenants: all, Limit: limit}
			var pages []map[string]any
			var imgs, flvs map[string]string
			var listErr error
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := gservers.List(compute, opts).EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
					var body struct {
						Servers []map[string]any `json:"servers"`
					}
					if err := p.(gservers.ServerPage).ExtractInto(&body); err != nil {
						return false, err
					}
					pages = append(pages, body.Servers...)
					return limit == 0 || len(pages) < limit, nil
				})
				listErr = err
			}()
			if !noNames {
				imgs, flvs = a.nameMaps(ctx, compute)
			}
			wg.Wait()
			if listErr != nil {
				return listErr
			}
			l := list{Columns: []string{"ID", "Name", "Status", "Networks", "Image", "Flavor"}}
			if long {
				l.Columns = []string{"ID", "Name", "Status", "Task State", "Power State", "Networks", "Image Name", "Image ID",
					"Flavor", "Availability Zone", "Host", "Properties"}
			}
			for _, s := range pages {
				addrs, _ := s["addresses"].(map[string]any)
				imgID, flvID := refID(s["image"]), refID(s["flavor"])
				imgName := imgs[imgID]
				if imgName == "" {
					imgName = imgID
				}
				flvName := flvs[flvID]
				if flvName == "" {
					flvName = flvID
				}
				if !long {
					l.Rows = append(l.Rows, []any{s["id"], s["name"], s["status"], addressesCell(addrs), imgName, flvName})
					continue
				}
				ps, ok := toInt(s["OS-EXT-STS:power_state"])
				if !ok {
					ps = -1
				}
				host := s["OS-EXT-SRV-ATTR:host"]
				if host == nil {
					host = ""
				}
				l.Rows = append(l.Rows, []any{s["id"], s["name"], s["status"], nullStr(s["OS-EXT-STS:task_state"]),
					powerStates[ps], addressesCell(addrs), imgs[imgID], imgID, flvName,
					s["OS-EXT-AZ:availability_zone"], host, metadataCell(s["metadata"])})
			}
			return o.writeList(a.stdout, l)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&long, "long", false, "more columns")
	f.BoolVar(&all, "all-projects", false, "servers of every project (admin)")
	f.StringVar(&name, "name", "", "only names matching this regular expression")
	f.StringVar(&status, "status", "", "only servers in this status, e.g. ACTIVE")
	f.StringVar(&host, "host", "", "only servers on this host (admin)")
	f.IntVar(&limit, "limit", 0, "at most this many servers")
	f.BoolVar(&noNames, "no-name-lookup", false, "show image and flavor ids instead of names (faster)")
	addOutputFlags(cmd, &o, true)
	return cmd
}

func nullStr(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return ""
}

func metadataCell(v any) cell {
	m, _ := v.(map[string]any)
	if m == nil {
		m = map[string]any{}
	}
	return cell{Raw: m, Text: text(m)}
}

// serverRecord turns a server body into show fields, as
// python-openstackclient lays them out.
func (a *app) serverRecord(ctx context.Context, compute *gophercloud.ServiceClient, s map[string]any) record {
	rec := record{}
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var imgName, flvName string
	var wg sync.WaitGroup
	if id := refID(s["image"]); id != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ic, err := a.image(ctx); err == nil {
				if img, err := images.Get(ctx, ic, id).Extract(); err == nil {
					imgName = img.Name
				}
			}
		}()
	}
	if id := refID(s["flavor"]); id != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if f, err := flavors.Get(ctx, compute, id).Extract(); err == nil {
				flvName = f.Name
			}
		}()
	}
	wg.Wait()
	named := func(name, id string) string {
		if name == "" {
			return id
		}
		return name + " (" + id + ")"
	}
	for _, k := range keys {
		v := s[k]
		switch k {
		case "links":
			continue
		case "addresses":
			m, _ := v.(map[string]any)
			v = addressesCell(m)
		case "image":
			if id := refID(v); id != "" {
				v = cell{Raw: v, Text: named(imgName, id)}
			}
		case "flavor":
			if id := refID(v); id != "" {
				v = cell{Raw: v, Text: named(flvName, id)}
			}
		case "metadata":
			k, v = "properties", metadataCell(v)
		case "tenant_id":
			k = "project_id"
		case "os-extended-volumes:volumes_attached":
			k = "volumes_attached"
		case "OS-EXT-STS:power_state":
			if i, ok := toInt(v); ok {
				v = cell{Raw: v, Text: powerStates[i]}
			}
		case "security_groups":
			if l, ok := v.([]any); ok {
				var names []string
				for _, e := range l {
					if m, ok := e.(map[string]any); ok {
						names = append(names, fmt.Sprintf("name='%v'", m["name"]))
					}
				}
				v = cell{Raw: v, Text: strings.Join(names, "\n")}
			}
		case "fault":
			if m, ok := v.(map[string]any); ok {
				v = cell{Raw: v, Text: fmt.Sprintf("%v (code %v)", m["message"], m["code"])}
			}
		}
		rec = append(rec, field{k, v})
	}
	sort.SliceStable(rec, func(i, j int) bool { return rec[i].Name < rec[j].Name })
	return rec
}

// showServer prints a server by id.
func (a *app) showServer(ctx context.Context, compute *gophercloud.ServiceClient, id string, o *outputOpts, extra ...field) error {
	srv, err := objectOf(gservers.Get(ctx, compute, id).Result, "server")
	if err != nil {
		return err
	}
	rec := a.serverRecord(ctx, compute, srv)
	rec = append(rec, extra...)
	return o.writeRecord(a.stdout, rec)
}

func (a *app) serverShowCmd() *cobra.Command {
	var o outputOpts
	cmd := &cobra.Command{
		Use:   "show SERVER",
		Short: "Show a server's details",
		Example: `  berth server show web1
  berth server show web1 -f value -c status
  berth server show 3f1c…-… -f json`,
		Args:              exactArgs(1, "one server (name or ID)"),
		ValidArgsFunction: a.completeServers,
		RunE: a.onServer(func(ctx context.Context, compute *gophercloud.ServiceClient, id string) error {
			return a.showServer(ctx, compute, id, &o)
		}),
	}
	addOutputFlags(cmd, &o, true)
	return cmd
}

func (a *app) serverCreateCmd() *cobra.Command {
	var o outputOpts
	var imageRef, flavorRef, keyName, userData, az, hostname string
	var nets, props, secgroups []string
	var wait bool
	cmd := &cobra.Command{
		Use:   "create NAME --image IMAGE --flavor FLAVOR",
		Short: "Create a server (a set of infra + app container) from a container image",
		Example: `  berth server create --image demo --flavor m1.tiny web1
  berth server create --image demo --flavor m1.small --network private --property tier=web --wait web2`,
		Args: exactArgs(1, "the new server's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if imageRef == "" || flavorRef == "" {
				return usagef("--image and --flavor are required")
			}
			md, err := parseProps("property", props)
			if err != nil {
				return err
			}
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			ic, err := a.image(ctx)
			if err != nil {
				return err
			}
			img, err := findImage(ctx, ic, imageRef)
			if err != nil {
				return err
			}
			flv, err := findFlavor(ctx, compute, flavorRef)
			if err != nil {
				return err
			}
			opts := gservers.CreateOpts{
				Name: args[0], ImageRef: img.ID, FlavorRef: flv.ID, Metadata: md,
				AvailabilityZone: az, SecurityGroups: secgroups, Hostname: hostname,
			}
			if len(nets) > 0 {
				switch nets[0] {
				case "auto", "none":
					opts.Networks = nets[0]
				default:
					nc, err := a.network(ctx)
					if err != nil {
						return err
					}
					var list []gservers.Network
					for _, n := range nets {
						if strings.HasPrefix(n, "port=") {
							list = append(list, gservers.Network{Port: strings.TrimPrefix(n, "port=")})
							continue
						}
						net, err := findNetwork(ctx, nc, n)
						if err != nil {
							return err
						}
						list = append(list, gservers.Network{UUID: net.ID})
					}
					opts.Networks = list
				}
			}
			if userData != "" {
				b, err := os.ReadFile(userData)
				if err != nil {
					return err
				}
				opts.UserData = b
			}
			var builder gservers.CreateOptsBuilder = opts
			if keyName != "" {
				builder = keypairs.CreateOptsExt{CreateOptsBuilder: opts, KeyName: keyName}
			}
			srv, err := gservers.Create(ctx, compute, builder, nil).Extract()
			if err != nil {
				return err
			}
			if wait {
				if err := a.waitServer(ctx, compute, srv.ID, args[0], servers.WaitOpts{Target: []string{"ACTIVE"}}); err != nil {
					return err
				}
			}
			var extra []field
			if srv.AdminPass != "" {
				extra = append(extra, field{"adminPass", srv.AdminPass})
			}
			return a.showServer(ctx, compute, srv.ID, &o, extra...)
		},
	}
	f := cmd.Flags()
	f.StringVar(&imageRef, "image", "", "image name or ID (a docker-format image)")
	f.StringVar(&flavorRef, "flavor", "", "flavor name or ID")
	f.StringArrayVar(&nets, "network", nil, "network name or ID, port=PORT_ID, or auto/none (repeatable)")
	f.StringVar(&keyName, "key-name", "", "keypair to inject")
	f.StringVar(&userData, "user-data", "", "file with user data")
	f.StringVar(&az, "availability-zone", "", "availability zone (admin: nova:HOST)")
	f.StringVar(&hostname, "hostname", "", "hostname inside the server")
	f.StringArrayVar(&props, "property", nil, "metadata KEY=VALUE (repeatable)")
	f.StringArrayVar(&secgroups, "security-group", nil, "security group (repeatable)")
	f.BoolVar(&wait, "wait", false, "wait until ACTIVE, showing progress; fail if it goes to ERROR")
	_ = cmd.RegisterFlagCompletionFunc("image", a.completeImages)
	_ = cmd.RegisterFlagCompletionFunc("flavor", a.completeFlavors)
	addOutputFlags(cmd, &o, true)
	return cmd
}

// waitServer waits with a progress display.
func (a *app) waitServer(ctx context.Context, compute *gophercloud.ServiceClient, id, name string, opts servers.WaitOpts) error {
	ctx, cancel := a.waitCtx(ctx)
	defer cancel()
	ui := a.newStatusUI(ctx, name)
	opts.Interval = a.env.WaitInterval
	opts.OnChange = func(st servers.State) {
		p := -1 // Nova's progress means something only while building
		if st.Status == "BUILD" {
			p = st.Progress
		}
		ui.Update(st.String(), p)
	}
	_, err := servers.Wait(ctx, compute, id, opts)
	ui.Done(err == nil)
	return err
}

func (a *app) serverDeleteCmd() *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:     "delete SERVER [SERVER…]",
		Aliases: []string{"rm"},
		Short:   "Delete servers (their sets, ports and addresses go too)",
		Example: `  berth server delete web1
  berth server delete --wait web1 web2`,
		Args:              minArgs(1, "at least one server (name or ID)"),
		ValidArgsFunction: a.completeServers,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			return a.eachServer(ctx, compute, args, func(id, name string) error {
				if err := gservers.Delete(ctx, compute, id).ExtractErr(); err != nil {
					return err
				}
				if wait {
					return a.waitServer(ctx, compute, id, name, servers.WaitOpts{Gone: true})
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the server is gone")
	return cmd
}

// eachServer runs fn for every server reference, going on after a failure
// and reporting all of them (as python-openstackclient does).
func (a *app) eachServer(ctx context.Context, compute *gophercloud.ServiceClient, refs []string, fn func(id, name string) error) error {
	return a.eachRef(refs, func(ref string) error {
		s, err := findServer(ctx, compute, ref)
		if err != nil {
			return err
		}
		return fn(s.ID, s.Name)
	})
}

// eachRef runs fn for every reference on the command line. One reference
// fails with its own error; with several, each failure is printed and the
// rest still run, and the command fails with "N of M failed" (as
// python-openstackclient's multi-delete does).
func (a *app) eachRef(refs []string, fn func(ref string) error) error {
	var failed int
	var last error
	for _, ref := range refs {
		err := fn(ref)
		if err == nil {
			continue
		}
		if len(refs) == 1 {
			return err
		}
		fmt.Fprintf(a.stderr, "Error: %s: %s\n", ref, message(err))
		failed++
		last = err
	}
	if failed > 0 {
		return &multiError{n: failed, total: len(refs), last: last}
	}
	return nil
}

type multiError struct {
	n, total int
	last     error
}

func (e *multiError) Error() string {
	return fmt.Sprintf("%d of %d failed", e.n, e.total)
}
func (e *multiError) Unwrap() error { return e.last }

// simple adapts a gophercloud action (each returns its own result type).
func simple[R interface{ ExtractErr() error }](do func(context.Context, *gophercloud.ServiceClient, string) R) func(context.Context, *gophercloud.ServiceClient, string) error {
	return func(ctx context.Context, c *gophercloud.ServiceClient, id string) error {
		return do(ctx, c, id).ExtractErr()
	}
}

func (a *app) serverAction(verb, short, target string, do func(context.Context, *gophercloud.ServiceClient, string) error) *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   verb + " SERVER [SERVER…]",
		Short: short,
		Example: fmt.Sprintf(`  berth server %s web1
  berth server %s --wait web1 web2`, verb, verb),
		Args:              minArgs(1, "at least one server (name or ID)"),
		ValidArgsFunction: a.completeServers,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			return a.eachServer(ctx, compute, args, func(id, name string) error {
				if err := do(ctx, compute, id); err != nil {
					return err
				}
				if wait {
					return a.waitServer(ctx, compute, id, name, servers.WaitOpts{Target: []string{target}})
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, fmt.Sprintf("wait until %s, showing progress; fail if it goes to ERROR", target))
	return cmd
}

func (a *app) serverRebootCmd() *cobra.Command {
	var hard bool
	cmd := a.serverAction("reboot", "Reboot servers (restart their containers)", "ACTIVE",
		func(ctx context.Context, c *gophercloud.ServiceClient, id string) error {
			t := gservers.SoftReboot
			if hard {
				t = gservers.HardReboot
			}
			return gservers.Reboot(ctx, c, id, gservers.RebootOpts{Type: t}).ExtractErr()
		})
	cmd.Flags().BoolVar(&hard, "hard", false, "hard reboot (kill instead of stopping gracefully)")
	cmd.Example = "  berth server reboot web1\n  berth server reboot --hard --wait web1"
	return cmd
}

// serverRebuildCmd is rebuild (optionally the same image) or deploy (a new
// image, required): the app container is replaced, id, address and
// volumes stay.
func (a *app) serverRebuildCmd(deploy bool) *cobra.Command {
	var imageRef, name string
	var wait bool
	verb, short := "rebuild", "Rebuild a server from its image or another one (id and address stay)"
	example := "  berth server rebuild web1\n  berth server rebuild --image demo-v2 --wait web1"
	if deploy {
		verb, short = "deploy", "Deploy a new image to a server: replace its app container, keeping id, address and volumes"
		example = "  berth server deploy --image web:v2 --wait web1"
	}
	cmd := &cobra.Command{
		Use:               verb + " SERVER",
		Short:             short,
		Example:           example,
		Args:              exactArgs(1, "one server (name or ID)"),
		ValidArgsFunction: a.completeServers,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if deploy && imageRef == "" {
				return usagef("deploy needs --image")
			}
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			srv, err := findServer(ctx, compute, args[0])
			if err != nil {
				return err
			}
			imgID, _ := srv.Image["id"].(string)
			if imageRef != "" {
				ic, err := a.image(ctx)
				if err != nil {
					return err
				}
				img, err := findImage(ctx, ic, imageRef)
				if err != nil {
					return err
				}
				imgID = img.ID
			}
			if imgID == "" {
				return fmt.Errorf("server %s has no image to rebuild from; use --image", args[0])
			}
			if err := servers.Rebuild(ctx, compute, srv.ID, servers.RebuildOpts{ImageRef: imgID, Name: name}).ExtractErr(); err != nil {
				return err
			}
			if wait {
				target := []string{"ACTIVE", "SHUTOFF"}
				if err := a.waitServer(ctx, compute, srv.ID, srv.Name, servers.WaitOpts{Target: target}); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&imageRef, "image", "", "image name or ID (default for rebuild: the current image)")
	if !deploy {
		cmd.Flags().StringVar(&name, "name", "", "rename the server too")
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the server is back, showing progress")
	_ = cmd.RegisterFlagCompletionFunc("image", a.completeImages)
	return cmd
}

func (a *app) serverResizeCmd() *cobra.Command {
	var flavorRef string
	var wait, confirm, revert bool
	cmd := &cobra.Command{
		Use:   "resize SERVER --flavor FLAVOR | --confirm | --revert",
		Short: "Resize a server to another flavor (limits change live), or confirm/revert a resize",
		Example: `  berth server resize --flavor m1.small --wait --confirm web1
  berth server resize --confirm web1
  berth server resize --revert web1`,
		Args:              exactArgs(1, "one server (name or ID)"),
		ValidArgsFunction: a.completeServers,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if flavorRef == "" && !confirm && !revert {
				return usagef("give --flavor, --confirm or --revert")
			}
			if confirm && revert {
				return usagef("--confirm and --revert exclude each other")
			}
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			srv, err := findServer(ctx, compute, args[0])
			if err != nil {
				return err
			}
			done := []string{"ACTIVE", "SHUTOFF"}
			if flavorRef != "" {
				flv, err := findFlavor(ctx, compute, flavorRef)
				if err != nil {
					return err
				}
				if err := gservers.Resize(ctx, compute, srv.ID, gservers.ResizeOpts{FlavorRef: flv.ID}).ExtractErr(); err != nil {
					return err
				}
				if !wait && !confirm && !revert {
					return nil
				}
				if err := a.waitServer(ctx, compute, srv.ID, srv.Name, servers.WaitOpts{Target: append([]string{"VERIFY_RESIZE"}, done...)}); err != nil {
					return err
				}
				cur, err := gservers.Get(ctx, compute, srv.ID).Extract()
				if err != nil {
					return err
				}
				if cur.Status != "VERIFY_RESIZE" {
					return nil // the cloud confirmed it itself
				}
			}
			switch {
			case confirm:
				err = gservers.ConfirmResize(ctx, compute, srv.ID).ExtractErr()
			case revert:
				err = gservers.RevertResize(ctx, compute, srv.ID).ExtractErr()
			default:
				return nil
			}
			if err != nil {
				return err
			}
			if wait {
				return a.waitServer(ctx, compute, srv.ID, srv.Name, servers.WaitOpts{Target: done})
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&flavorRef, "flavor", "", "new flavor name or ID")
	cmd.Flags().BoolVar(&confirm, "confirm", false, "confirm the resize (after it, with --flavor)")
	cmd.Flags().BoolVar(&revert, "revert", false, "revert the resize")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait for each step, showing progress")
	_ = cmd.RegisterFlagCompletionFunc("flavor", a.completeFlavors)
	return cmd
}

func (a *app) serverSnapshotCmd() *cobra.Command {
	var o outputOpts
	var name string
	var props []string
	var wait bool
	cmd := &cobra.Command{
		Use:   "snapshot SERVER --name IMAGE_NAME",
		Short: "Snapshot a server's app container into a new image (its top layer's parent is the old top layer)",
		Example: `  berth server snapshot --name web1-snap web1
  berth server snapshot --name web1-snap --wait web1 -f value -c id`,
		Args:              exactArgs(1, "one server (name or ID)"),
		ValidArgsFunction: a.completeServers,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if name == "" {
				return usagef("--name is required")
			}
			md, err := parseProps("property", props)
			if err != nil {
				return err
			}
			compute, err := a.compute(ctx)
			if err != nil {
				return err
			}
			srv, err := findServer(ctx, compute, args[0])
			if err != nil {
				return err
			}
			imageID, err := servers.Snapshot(ctx, compute, srv.ID, servers.SnapshotOpts{Name: name, Metadata: md}).Extract()
			if err != nil {
				return err
			}
			ic, err := a.image(ctx)
			if err != nil {
				return err
			}
			if wait {
				if err := a.waitImage(ctx, ic, imageID, name); err != nil {
					return err
				}
			}
			return a.showImage(ctx, ic, imageID, &o)
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "name of the new image")
	cmd.Flags().StringArrayVar(&props, "property", nil, "image property KEY=VALUE (repeatable)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the image is active")
	addOutputFlags(cmd, &o, true)
	return cmd
}

func (a *app) serverSyncStatusCmd() *cobra.Command {
	var o outputOpts
	cmd := &cobra.Command{
		Use:   "sync-status SERVER",
		Short: "Re-read a server's real state from its host now, then show it",
		Example: `  berth server sync-status web1
  berth server sync-status web1 -f value -c status`,
		Args:              exactArgs(1, "one server (name or ID)"),
		ValidArgsFunction: a.completeServers,
		RunE: a.onServer(func(ctx context.Context, compute *gophercloud.ServiceClient, id string) error {
			if err := servers.SyncStatus(ctx, compute, id).ExtractErr(); err != nil {
				return err
			}
			return a.showServer(ctx, compute, id, &o)
		}),
	}
	addOutputFlags(cmd, &o, true)
	return cmd
}

// onServer makes the RunE of a command that acts on one server, named by
// the first argument: it resolves the name and hands fn the compute client
// and the server's id.
func (a *app) onServer(fn func(ctx context.Context, compute *gophercloud.ServiceClient, id string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		compute, err := a.compute(ctx)
		if err != nil {
			return err
		}
		id, err := serverID(ctx, compute, args[0])
		if err != nil {
			return err
		}
		return fn(ctx, compute, id)
	}
}
