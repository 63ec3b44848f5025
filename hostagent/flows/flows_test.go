package flows

import (
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"berth/schema"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, fs []Flow, cookie uint64) {
	t.Helper()
	var b strings.Builder
	for _, f := range fs {
		b.WriteString(f.Spec(cookie))
		b.WriteByte('\n')
	}
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if diff := cmp.Diff(string(want), b.String()); diff != "" {
		t.Errorf("flows differ from %s (-want +got):\n%s", path, diff)
	}
}

func TestPortFlowsGolden(t *testing.T) {
	base := Port{OFPort: 7, VNI: 0x1234, MAC: "FA:16:3E:00:00:07", IP: "10.0.0.7"}
	for _, tc := range []struct {
		name string
		port func(Port) Port
	}{
		{"insecure", func(p Port) Port { return p }},
		{"secure-no-rules", func(p Port) Port { p.Secure = true; return p }},
		{"secure-rules", func(p Port) Port {
			p.Secure = true
			p.Rules = []schema.SetRule{
				{Direction: "egress"},
				{Direction: "ingress", Protocol: "tcp", PortMin: 22, PortMax: 22},
				{Direction: "ingress", Protocol: "tcp", PortMin: 8000, PortMax: 8080, Remote: []string{"10.1.0.0/16", "192.168.1.5/32"}},
				{Direction: "ingress", Protocol: "icmp", PortMin: 8},
				{Direction: "ingress", Protocol: "udp", Remote: []string{"0.0.0.0/0"}},
				{Direction: "ingress", Protocol: "tcp", PortMin: 22, PortMax: 22}, // duplicate
			}
			return p
		}},
		// Remote groups: the port's side of each conjunction; two groups
		// with the same protocol and port share a flow; a plain rule with
		// the same match stays a plain (higher-priority) flow.
		{"secure-groups", func(p Port) Port {
			p.Secure = true
			p.Rules = []schema.SetRule{
				{Direction: "egress"},
				{Direction: "ingress", RemoteGroup: "g-default", RemoteGroupTag: 5},
				{Direction: "ingress", Protocol: "tcp", PortMin: 22, PortMax: 22, RemoteGroup: "g-admin", RemoteGroupTag: 9},
				{Direction: "ingress", Protocol: "tcp", PortMin: 22, PortMax: 22, RemoteGroup: "g-default", RemoteGroupTag: 5},
				{Direction: "ingress", Protocol: "tcp", PortMin: 22, PortMax: 22, RemoteGroup: "g-default", RemoteGroupTag: 5}, // duplicate
				{Direction: "ingress", Protocol: "tcp", PortMin: 22, PortMax: 22},
				{Direction: "egress", Protocol: "udp", PortMin: 53, PortMax: 53, RemoteGroup: "g-dns", RemoteGroupTag: 12},
			}
			return p
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs, err := PortFlows(tc.port(base))
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "port-"+tc.name, fs, Cookie(HostTag("h1"), KindPort, 7, Digest(fs)))
		})
	}
}

func TestHostFlowsGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		host Host
	}{
		{"empty", Host{}},
		{"two-networks", Host{Networks: []Network{{VNI: 200, Ports: []int{5, 3}}, {VNI: 100, Ports: []int{4}}, {VNI: 300}}}},
		{"tunnels", Host{Networks: []Network{{VNI: 100, Ports: []int{4, 6}}}, Tunnels: []int{9, 8}, LearnCookie: Cookie(1, KindLearn, 0, 0)}},
		// The host is on network 100 (with tunnels) and 200; 300 has no
		// local ports, 600's subnet overlaps 100's, and the malformed
		// locals are ignored.
		{"local", Host{
			Networks: []Network{{VNI: 100, Ports: []int{4, 6}}, {VNI: 200, Ports: []int{5}}, {VNI: 300}, {VNI: 600, Ports: []int{7}}},
			Locals: []Local{
				{VNI: 100, Subnet: "10.99.0.0/24", MAC: "0A:00:00:00:00:01"},
				{VNI: 100, Subnet: "10.98.0.0/24", MAC: "0a:00:00:00:00:01"},
				{VNI: 200, Subnet: "10.1.0.0/16", MAC: "0a:00:00:00:00:01"},
				{VNI: 300, Subnet: "10.3.0.0/24", MAC: "0a:00:00:00:00:01"},
				{VNI: 400, Subnet: "10.4.0.1/24", MAC: "0a:00:00:00:00:01"},
				{VNI: 500, Subnet: "10.5.0.0/24", MAC: "ff:ff:ff:ff:ff:ff"},
				{VNI: 600, Subnet: "10.99.0.128/25", MAC: "0a:00:00:00:00:01"}, // overlaps 100's
			},
			Tunnels: []int{9}, LearnCookie: Cookie(1, KindLearn, 0, 0),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := HostFlows(tc.host)
			golden(t, "host-"+tc.name, fs, Cookie(HostTag("h1"), KindHost, 0, Digest(fs)))
		})
	}
}

func TestPortFlowsRejectsBadPorts(t *testing.T) {
	good := Port{OFPort: 1, VNI: 1, MAC: "fa:16:3e:00:00:01", IP: "10.0.0.1", Secure: true}
	for name, p := range map[string]Port{
		"ofport 0":      {OFPort: 0, VNI: 1, MAC: good.MAC, IP: good.IP},
		"ofport local":  {OFPort: 65534, VNI: 1, MAC: good.MAC, IP: good.IP},
		"vni 0":         {OFPort: 1, MAC: good.MAC, IP: good.IP},
		"bad mac":       {OFPort: 1, VNI: 1, MAC: "nope", IP: good.IP},
		"ipv6":          {OFPort: 1, VNI: 1, MAC: good.MAC, IP: "fd00::1"},
		"bad direction": {OFPort: 1, VNI: 1, MAC: good.MAC, IP: good.IP, Secure: true, Rules: []schema.SetRule{{Direction: "both"}}},
		"bad protocol":  {OFPort: 1, VNI: 1, MAC: good.MAC, IP: good.IP, Secure: true, Rules: []schema.SetRule{{Direction: "ingress", Protocol: "sctpx"}}},
		"bad remote":    {OFPort: 1, VNI: 1, MAC: good.MAC, IP: good.IP, Secure: true, Rules: []schema.SetRule{{Direction: "ingress", Remote: []string{"10.0.0.0/33"}}}},
		"group no tag":  {OFPort: 1, VNI: 1, MAC: good.MAC, IP: good.IP, Secure: true, Rules: []schema.SetRule{{Direction: "ingress", RemoteGroup: "g"}}},
		"group and cidr": {OFPort: 1, VNI: 1, MAC: good.MAC, IP: good.IP, Secure: true,
			Rules: []schema.SetRule{{Direction: "ingress", RemoteGroup: "g", RemoteGroupTag: 3, Remote: []string{"10.0.0.0/8"}}}},
		"tag too big": {OFPort: 1, VNI: 1, MAC: good.MAC, IP: good.IP, Secure: true, Rules: []schema.SetRule{{Direction: "ingress", RemoteGroup: "g", RemoteGroupTag: MaxTag + 1}}},
	} {
		if _, err := PortFlows(p); err == nil {
			t.Errorf("%s: PortFlows succeeded, want an error", name)
		}
	}
	if _, err := PortFlows(good); err != nil {
		t.Errorf("good port: %v", err)
	}
}

func TestPortRangeMasks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi int
		want   []string
	}{
		{0, 0, nil},
		{1, 65535, nil},
		{22, 0, []string{"22"}},
		{22, 22, []string{"22"}},
		{80, 81, []string{"0x50/0xfffe"}},
		{8000, 8080, []string{"0x1f40/0xffc0", "0x1f80/0xfff0", "8080"}},
		{1024, 65535, []string{"0x400/0xfc00", "0x800/0xf800", "0x1000/0xf000", "0x2000/0xe000", "0x4000/0xc000", "0x8000/0x8000"}},
		{65535, 65535, []string{"65535"}},
	} {
		got := PortRangeMasks(tc.lo, tc.hi)
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("PortRangeMasks(%d, %d) (-want +got):\n%s", tc.lo, tc.hi, diff)
		}
		// Every port in range is covered exactly once, none outside.
		if got == nil {
			continue
		}
		lo, hi := tc.lo, tc.hi
		if hi == 0 {
			hi = lo
		}
		for p := 0; p <= 65535; p++ {
			n := 0
			for _, m := range got {
				if matchPort(t, m, p) {
					n++
				}
			}
			in := p >= lo && p <= hi
			if (in && n != 1) || (!in && n != 0) {
				t.Fatalf("PortRangeMasks(%d, %d): port %d matched %d times", tc.lo, tc.hi, p, n)
			}
		}
	}
}

func matchPort(t *testing.T, m string, p int) bool {
	t.Helper()
	var v, mask uint64 = 0, 0xffff
	val, msk, ok := strings.Cut(m, "/")
	var err error
	if v, err = parseUint(val); err != nil {
		t.Fatal(err)
	}
	if ok {
		if mask, err = parseUint(msk); err != nil {
			t.Fatal(err)
		}
	}
	return uint64(p)&mask == v
}

func parseUint(s string) (uint64, error) { return strconv.ParseUint(s, 0, 64) }

func TestRuleMatches(t *testing.T) {
	for _, tc := range []struct {
		name string
		rule schema.SetRule
		want []string
	}{
		{"any egress", schema.SetRule{Direction: "egress"}, []string{"ip"}},
		{"tcp 22 from cidr", schema.SetRule{Direction: "ingress", Protocol: "tcp", PortMin: 22, PortMax: 22, Remote: []string{"10.0.0.0/8"}},
			[]string{"tcp,nw_src=10.0.0.0/8,tp_dst=22"}},
		{"udp to host", schema.SetRule{Direction: "egress", Protocol: "17", PortMin: 53, PortMax: 53, Remote: []string{"10.0.0.2/32"}},
			[]string{"udp,nw_dst=10.0.0.2,tp_dst=53"}},
		{"icmp echo", schema.SetRule{Direction: "ingress", Protocol: "icmp", PortMin: 8, PortMax: 0}, []string{"icmp,icmp_type=8"}},
		{"icmp type code", schema.SetRule{Direction: "ingress", Protocol: "icmp", PortMin: 3, PortMax: 4}, []string{"icmp,icmp_type=3,icmp_code=4"}},
		{"protocol number", schema.SetRule{Direction: "ingress", Protocol: "47"}, []string{"ip,nw_proto=47"}},
		{"anywhere wins", schema.SetRule{Direction: "ingress", Remote: []string{"10.0.0.0/8", "0.0.0.0/0"}}, []string{"ip"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RuleMatches(tc.rule)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("RuleMatches (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCookie(t *testing.T) {
	c := Cookie(0xabcd, KindPort, 0x1234, 0xfffff)
	if c != 0xbeabcd21234fffff {
		t.Errorf("Cookie = %#x", c)
	}
	if k, d := CookieKey(c); k != 0x1234 || d != 0xfffff {
		t.Errorf("CookieKey = %#x, %#x", k, d)
	}
	if c&MaskKey != Cookie(0xabcd, KindPort, 0x1234, 0) {
		t.Errorf("MaskKey does not isolate the key")
	}
	if c&MaskHost != Cookie(0xabcd, 0, 0, 0) {
		t.Errorf("MaskHost does not isolate the host")
	}
	if HostTag("a") == HostTag("b") {
		t.Errorf("HostTag collides on a and b")
	}
}

func TestDigestIgnoresOrder(t *testing.T) {
	a := []Flow{{0, 1, "in_port=1", "drop"}, {10, 5, "", "drop"}}
	b := []Flow{a[1], a[0]}
	if Digest(a) != Digest(b) {
		t.Error("digest depends on order")
	}
	if Digest(a) == Digest(a[:1]) {
		t.Error("digest ignores a flow")
	}
}

func TestVNIOf(t *testing.T) {
	if VNIOf("net-1", 5000) != 5000 {
		t.Error("segmentation id not used")
	}
	if v := VNIOf("net-1", 0); v == 0 || v > MaxVNI || v != VNIOf("net-1", 0) {
		t.Errorf("derived vni %d", v)
	}
}

func TestParseDump(t *testing.T) {
	out := `OFPST_FLOW reply (OF1.4) (xid=0x2):
 cookie=0xbe12340000000001, priority=1 actions=drop
 cookie=0xbe12342000700abc, table=10, priority=100,ip,in_port=7 actions=ct(table=20,zone=7)
 table=30, actions=drop
`
	es, err := parseDump(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{Cookie: 0xbe12340000000001, Table: 0, Priority: 1, Text: "cookie=0xbe12340000000001, priority=1 actions=drop"},
		{Cookie: 0xbe12342000700abc, Table: 10, Priority: 100, Text: "cookie=0xbe12342000700abc, table=10, priority=100,ip,in_port=7 actions=ct(table=20,zone=7)"},
		{Cookie: 0, Table: 30, Priority: 32768, Text: "table=30, actions=drop"},
	}
	if diff := cmp.Diff(want, es); diff != "" {
		t.Errorf("parseDump (-want +got):\n%s", diff)
	}
}
