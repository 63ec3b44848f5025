package cli

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"
	"github.com/spf13/cobra"
)

// neutronResource describes one Neutron collection for the generic list,
// show and delete commands.
type neutronResource struct {
	kind       string // "network": the JSON key of one item
	collection string // "networks": the URL path
	listKey    string // "networks": the JSON key of a list (default collection)
	display    string // "security group": its name in messages (default kind)
	cmdName    string // "network", "secgroup"
	columns    []string
	row        func(m map[string]any) []any
	example    string
}

func (r neutronResource) find(ctx context.Context, c *gophercloud.ServiceClient, ref string) (map[string]any, error) {
	var idErr error // a by-id 404 carries the request id: report it if no name matches either
	if looksLikeID(ref) {
		var body map[string]map[string]any
		_, err := c.Get(ctx, c.ServiceURL(r.collection, ref), &body, nil)
		if err == nil {
			return body[r.kind], nil
		}
		if !is404(err) {
			return nil, err
		}
		idErr = err
	}
	all, err := r.list(ctx, c, url.Values{"name": {ref}})
	if err != nil {
		return nil, err
	}
	m, err := pickOne(r.name(), ref, all, func(m map[string]any) bool { return m["name"] == ref || m["id"] == ref }, idErr)
	if err != nil {
		return nil, err
	}
	return *m, nil
}

func (r neutronResource) name() string {
	if r.display != "" {
		return r.display
	}
	return r.kind
}

func (r neutronResource) list(ctx context.Context, c *gophercloud.ServiceClient, q url.Values) ([]map[string]any, error) {
	u := c.ServiceURL(r.collection)
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var body map[string][]map[string]any
	if _, err := c.Get(ctx, u, &body, nil); err != nil {
		return nil, err
	}
	key := r.listKey
	if key == "" {
		key = r.collection
	}
	return body[key], nil
}

func mapRecord(m map[string]any) record {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	rec := make(record, 0, len(keys))
	for _, k := range keys {
		v := m[k]
		if k == "tenant_id" {
			continue // project_id says the same
		}
		if k == "security_group_rules" {
			v = rulesCell(v)
		}
		if l, ok := v.([]any); ok && len(l) > 0 {
			if _, isMap := l[0].(map[string]any); isMap {
				lines := make([]string, len(l))
				for i, e := range l {
					lines[i] = text(e)
				}
				v = cell{Raw: v, Text: strings.Join(lines, "\n")}
			}
		}
		rec = append(rec, field{k, v})
	}
	return rec
}

func (a *app) neutronListCmd(r neutronResource, filters func(*cobra.Command) func() url.Values) *cobra.Command {
	var o outputOpts
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List " + r.name() + "s",
		Example: fmt.Sprintf("  berth %s list\n  berth %s list -f json", r.cmdName, r.cmdName),
		Args:    noArgs,
	}
	var q func() url.Values
	if filters != nil {
		q = filters(cmd)
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		ctx := cmd.Context()
		nc, err := a.network(ctx)
		if err != nil {
			return err
		}
		var vals url.Values
		if q != nil {
			vals = q()
		}
		all, err := r.list(ctx, nc, vals)
		if err != nil {
			return err
		}
		l := list{Columns: r.columns}
		for _, m := range all {
			l.Rows = append(l.Rows, r.row(m))
		}
		return o.writeList(a.stdout, l)
	}
	addOutputFlags(cmd, &o, true)
	return cmd
}

func (a *app) neutronShowCmd(r neutronResource) *cobra.Command {
	var o outputOpts
	cmd := &cobra.Command{
		Use:     "show " + strings.ToUpper(r.kind),
		Short:   "Show a " + r.name(),
		Example: fmt.Sprintf("  berth %s show %s\n  berth %s show %s -f json", r.cmdName, r.example, r.cmdName, r.example),
		Args:    exactArgs(1, "one "+r.name()+" (name or ID)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			nc, err := a.network(ctx)
			if err != nil {
				return err
			}
			m, err := r.find(ctx, nc, args[0])
			if err != nil {
				return err
			}
			return o.writeRecord(a.stdout, mapRecord(m))
		},
	}
	addOutputFlags(cmd, &o, true)
	return cmd
}

func (a *app) neutronDeleteCmd(r neutronResource) *cobra.Command {
	return &cobra.Command{
		Use:     "delete " + strings.ToUpper(r.kind) + " [" + strings.ToUpper(r.kind) + "…]",
		Aliases: []string{"rm"},
		Short:   "Delete " + r.name() + "s",
		Example: fmt.Sprintf("  berth %s delete %s", r.cmdName, r.example),
		Args:    minArgs(1, "at least one "+r.name()+" (name or ID)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			nc, err := a.network(ctx)
			if err != nil {
				return err
			}
			return a.eachRef(args, func(ref string) error {
				m, err := r.find(ctx, nc, ref)
				if err != nil {
					return err
				}
				_, err = nc.Delete(ctx, nc.ServiceURL(r.collection, fmt.Sprint(m["id"])), nil)
				return err
			})
		},
	}
}

func strList(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, e := range l {
		out = append(out, fmt.Sprint(e))
	}
	return out
}

var networkRes = neutronResource{
	kind: "network", collection: "networks", cmdName: "network", example: "private",
	columns: []string{"ID", "Name", "Subnets"},
	row: func(m map[string]any) []any {
		s := strList(m["subnets"])
		return []any{m["id"], m["name"], cell{Raw: s, Text: strings.Join(s, ", ")}}
	},
}

var subnetRes = neutronResource{
	kind: "subnet", collection: "subnets", cmdName: "subnet", example: "private-subnet",
	columns: []string{"ID", "Name", "Network", "Subnet"},
	row:     func(m map[string]any) []any { return []any{m["id"], m["name"], m["network_id"], m["cidr"]} },
}

var portRes = neutronResource{
	kind: "port", collection: "ports", cmdName: "port", example: "web1-port",
	columns: []string{"ID", "Name", "MAC Address", "Fixed IP Addresses", "Status"},
	row: func(m map[string]any) []any {
		l, _ := m["fixed_ips"].([]any)
		var ips []string
		for _, e := range l {
			if f, ok := e.(map[string]any); ok {
				ips = append(ips, fmt.Sprintf("ip_address='%v', subnet_id='%v'", f["ip_address"], f["subnet_id"]))
			}
		}
		if l == nil {
			l = []any{}
		}
		return []any{m["id"], m["name"], m["mac_address"], cell{Raw: l, Text: strings.Join(ips, "\n")}, m["status"]}
	},
}

var secgroupRes = neutronResource{
	kind: "security_group", collection: "security-groups", listKey: "security_groups", display: "security group",
	cmdName: "secgroup", example: "default",
	columns: []string{"ID", "Name", "Description", "Project"},
	row:     func(m map[string]any) []any { return []any{m["id"], m["name"], m["description"], m["project_id"]} },
}

var ruleRes = neutronResource{
	kind: "security_group_rule", collection: "security-group-rules", listKey: "security_group_rules",
	display: "security group rule", cmdName: "secgroup rule", example: "RULE_ID",
	columns: []string{"ID", "IP Protocol", "Ethertype", "IP Range", "Port Range", "Direction", "Remote Security Group"},
	row: func(m map[string]any) []any {
		pr := ""
		if m["port_range_min"] != nil {
			pr = fmt.Sprintf("%v:%v", m["port_range_min"], m["port_range_max"])
		}
		return []any{m["id"], m["protocol"], m["ethertype"], m["remote_ip_prefix"], pr, m["direction"], m["remote_group_id"]}
	},
}

func (a *app) networkCmd() *cobra.Command {
	var o outputOpts
	var shared bool
	var desc string
	create := &cobra.Command{
		Use:     "create NAME",
		Short:   "Create a network",
		Example: "  berth network create backend\n  berth network create --shared --description 'for everyone' common",
		Args:    exactArgs(1, "the network's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			nc, err := a.network(ctx)
			if err != nil {
				return err
			}
			opts := networks.CreateOpts{Name: args[0], Description: desc}
			if shared {
				opts.Shared = &shared
			}
			m, err := objectOf(networks.Create(ctx, nc, opts).Result, "network")
			if err != nil {
				return err
			}
			return o.writeRecord(a.stdout, mapRecord(m))
		},
	}
	create.Flags().BoolVar(&shared, "shared", false, "share with every project (admin)")
	create.Flags().StringVar(&desc, "description", "", "description")
	addOutputFlags(create, &o, true)
	return group("network", "Networks",
		a.neutronListCmd(networkRes, nil), a.neutronShowCmd(networkRes), create, a.neutronDeleteCmd(networkRes))
}

func (a *app) subnetCmd() *cobra.Command {
	var o outputOpts
	var netRef, cidr, gateway string
	var noDHCP bool
	var ipVersion int
	var dns []string
	create := &cobra.Command{
		Use:     "create NAME --network NET --subnet-range CIDR",
		Short:   "Create a subnet",
		Example: "  berth subnet create --network backend --subnet-range 10.20.0.0/24 backend-v4",
		Args:    exactArgs(1, "the subnet's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if netRef == "" || cidr == "" {
				return usagef("--network and --subnet-range are required")
			}
			nc, err := a.network(ctx)
			if err != nil {
				return err
			}
			n, err := findNetwork(ctx, nc, netRef)
			if err != nil {
				return err
			}
			opts := subnets.CreateOpts{NetworkID: n.ID, Name: args[0], CIDR: cidr, IPVersion: gophercloud.IPVersion(ipVersion), DNSNameservers: dns}
			if gateway != "" {
				g := gateway
				if gateway == "none" {
					g = ""
				}
				opts.GatewayIP = &g
			}
			if noDHCP {
				f := false
				opts.EnableDHCP = &f
			}
			m, err := objectOf(subnets.Create(ctx, nc, opts).Result, "subnet")
			if err != nil {
				return err
			}
			return o.writeRecord(a.stdout, mapRecord(m))
		},
	}
	f := create.Flags()
	f.StringVar(&netRef, "network", "", "network name or ID")
	f.StringVar(&cidr, "subnet-range", "", "CIDR, e.g. 10.20.0.0/24")
	f.StringVar(&gateway, "gateway", "", "gateway address, or none (default: the first address)")
	f.BoolVar(&noDHCP, "no-dhcp", false, "disable DHCP")
	f.IntVar(&ipVersion, "ip-version", 4, "4 or 6")
	f.StringArrayVar(&dns, "dns-nameserver", nil, "DNS server (repeatable)")
	addOutputFlags(create, &o, true)
	filters := func(cmd *cobra.Command) func() url.Values {
		var network string
		cmd.Flags().StringVar(&network, "network", "", "only subnets of this network ID")
		return func() url.Values {
			if network == "" {
				return nil
			}
			return url.Values{"network_id": {network}}
		}
	}
	return group("subnet", "Subnets",
		a.neutronListCmd(subnetRes, filters), a.neutronShowCmd(subnetRes), create, a.neutronDeleteCmd(subnetRes))
}

func (a *app) portCmd() *cobra.Command {
	var o outputOpts
	var netRef string
	var fixedIPs []string
	create := &cobra.Command{
		Use:     "create NAME --network NET",
		Short:   "Create a port",
		Example: "  berth port create --network private --fixed-ip ip-address=10.99.0.50 web-port",
		Args:    exactArgs(1, "the port's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if netRef == "" {
				return usagef("--network is required")
			}
			nc, err := a.network(ctx)
			if err != nil {
				return err
			}
			n, err := findNetwork(ctx, nc, netRef)
			if err != nil {
				return err
			}
			opts := ports.CreateOpts{NetworkID: n.ID, Name: args[0]}
			if len(fixedIPs) > 0 {
				var ips []ports.IP
				for _, spec := range fixedIPs {
					var ip ports.IP
					for _, kv := range strings.Split(spec, ",") {
						k, v, _ := strings.Cut(kv, "=")
						switch k {
						case "subnet":
							ip.SubnetID = v
						case "ip-address":
							ip.IPAddress = v
						default:
							return usagef("--fixed-ip %q: want subnet=ID,ip-address=ADDR", spec)
						}
					}
					ips = append(ips, ip)
				}
				opts.FixedIPs = ips
			}
			m, err := objectOf(ports.Create(ctx, nc, opts).Result, "port")
			if err != nil {
				return err
			}
			return o.writeRecord(a.stdout, mapRecord(m))
		},
	}
	create.Flags().StringVar(&netRef, "network", "", "network name or ID")
	create.Flags().StringArrayVar(&fixedIPs, "fixed-ip", nil, "subnet=ID,ip-address=ADDR (repeatable)")
	addOutputFlags(create, &o, true)
	filters := func(cmd *cobra.Command) func() url.Values {
		var network, device string
		cmd.Flags().StringVar(&network, "network", "", "only ports of this network ID")
		cmd.Flags().StringVar(&device, "server", "", "only ports of this server ID")
		return func() url.Values {
			q := url.Values{}
			if network != "" {
				q.Set("network_id", network)
			}
			if device != "" {
				q.Set("device_id", device)
			}
			return q
		}
	}
	return group("port", "Ports",
		a.neutronListCmd(portRes, filters), a.neutronShowCmd(portRes), create, a.neutronDeleteCmd(portRes))
}

func (a *app) secgroupCmd() *cobra.Command {
	var o outputOpts
	var desc string
	create := &cobra.Command{
		Use:     "create NAME",
		Short:   "Create a security group",
		Example: "  berth secgroup create --description 'web servers' web",
		Args:    exactArgs(1, "the group's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			nc, err := a.network(ctx)
			if err != nil {
				return err
			}
			m, err := objectOf(groups.Create(ctx, nc, groups.CreateOpts{Name: args[0], Description: desc}).Result, "security_group")
			if err != nil {
				return err
			}
			return o.writeRecord(a.stdout, mapRecord(m))
		},
	}
	create.Flags().StringVar(&desc, "description", "", "description")
	addOutputFlags(create, &o, true)
	return group("secgroup", "Security groups and their rules",
		a.neutronListCmd(secgroupRes, nil), a.neutronShowCmd(secgroupRes), create, a.neutronDeleteCmd(secgroupRes),
		a.secgroupRuleCmd())
}

func (a *app) secgroupRuleCmd() *cobra.Command {
	var o outputOpts
	var proto, ports, remoteIP, remoteGroup, ethertype string
	var egress bool
	create := &cobra.Command{
		Use:   "create GROUP",
		Short: "Add a rule to a security group",
		Example: `  berth secgroup rule create --protocol tcp --dst-port 80 web
  berth secgroup rule create --protocol tcp --dst-port 8000:8080 --remote-ip 10.0.0.0/8 web`,
		Args: exactArgs(1, "one security group (name or ID)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			nc, err := a.network(ctx)
			if err != nil {
				return err
			}
			g, err := secgroupRes.find(ctx, nc, args[0])
			if err != nil {
				return err
			}
			opts := rules.CreateOpts{
				Direction: rules.DirIngress, EtherType: rules.RuleEtherType(ethertype), SecGroupID: fmt.Sprint(g["id"]),
				Protocol: rules.RuleProtocol(proto), RemoteIPPrefix: remoteIP,
			}
			if egress {
				opts.Direction = rules.DirEgress
			}
			if remoteGroup != "" {
				rg, err := secgroupRes.find(ctx, nc, remoteGroup)
				if err != nil {
					return err
				}
				opts.RemoteGroupID = fmt.Sprint(rg["id"])
			}
			if ports != "" {
				lo, hi, found := strings.Cut(ports, ":")
				if !found {
					hi = lo
				}
				min, err1 := strconv.Atoi(lo)
				max, err2 := strconv.Atoi(hi)
				if err1 != nil || err2 != nil {
					return usagef("--dst-port %q: want PORT or MIN:MAX", ports)
				}
				opts.PortRangeMin, opts.PortRangeMax = min, max
			}
			m, err := objectOf(rules.Create(ctx, nc, opts).Result, "security_group_rule")
			if err != nil {
				return err
			}
			return o.writeRecord(a.stdout, mapRecord(m))
		},
	}
	f := create.Flags()
	f.StringVar(&proto, "protocol", "", "tcp, udp, icmp, … (default any)")
	f.StringVar(&ports, "dst-port", "", "port or range MIN:MAX")
	f.StringVar(&remoteIP, "remote-ip", "", "source (ingress) or destination (egress) CIDR")
	f.StringVar(&remoteGroup, "remote-group", "", "remote security group name or ID")
	f.StringVar(&ethertype, "ethertype", "IPv4", "IPv4 or IPv6")
	f.BoolVar(&egress, "egress", false, "an egress rule (default ingress)")
	addOutputFlags(create, &o, true)

	var lo outputOpts
	listCmd := &cobra.Command{
		Use:     "list GROUP",
		Short:   "List a security group's rules",
		Example: "  berth secgroup rule list default",
		Args:    exactArgs(1, "one security group (name or ID)"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			nc, err := a.network(ctx)
			if err != nil {
				return err
			}
			g, err := secgroupRes.find(ctx, nc, args[0])
			if err != nil {
				return err
			}
			all, err := ruleRes.list(ctx, nc, url.Values{"security_group_id": {fmt.Sprint(g["id"])}})
			if err != nil {
				return err
			}
			l := list{Columns: ruleRes.columns}
			for _, m := range all {
				l.Rows = append(l.Rows, ruleRes.row(m))
			}
			return lo.writeList(a.stdout, l)
		},
	}
	addOutputFlags(listCmd, &lo, true)
	return group("rule", "Security group rules", create, listCmd, a.neutronShowCmd(ruleRes), a.neutronDeleteCmd(ruleRes))
}

// rulesCell shows a group's rules one a line: "ingress IPv4 tcp 80:80 from
// 0.0.0.0/0 (id)".
func rulesCell(v any) any {
	l, ok := v.([]any)
	if !ok {
		return v
	}
	lines := make([]string, 0, len(l))
	for _, e := range l {
		m, ok := e.(map[string]any)
		if !ok {
			continue
		}
		proto := "any"
		if p, ok := m["protocol"].(string); ok && p != "" {
			proto = p
		}
		line := fmt.Sprintf("%v %v %s", m["direction"], m["ethertype"], proto)
		if m["port_range_min"] != nil {
			line += fmt.Sprintf(" %v:%v", m["port_range_min"], m["port_range_max"])
		}
		if ip, ok := m["remote_ip_prefix"].(string); ok && ip != "" {
			line += " " + ip
		}
		if g, ok := m["remote_group_id"].(string); ok && g != "" {
			line += " group " + g
		}
		lines = append(lines, line+fmt.Sprintf(" (%v)", m["id"]))
	}
	return cell{Raw: v, Text: strings.Join(lines, "\n")}
}
