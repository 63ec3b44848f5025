package devstack

import (
	"net/netip"
	"testing"
)

func TestFreePortsConfigCoexists(t *testing.T) {
	a, err := FreePortsConfig(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := FreePortsConfig(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	def := DefaultConfig(t.TempDir())
	for _, c := range []Config{a, b} {
		if err := c.normalize(); err != nil {
			t.Fatalf("normalize(%+v): %v", c, err)
		}
		if len(c.Bridge) > 15 {
			t.Errorf("bridge %q is longer than 15 characters", c.Bridge)
		}
		if c.Bridge == def.Bridge || c.HostName == def.HostName || c.CIDR == def.CIDR {
			t.Errorf("free config %+v shares bridge, host or CIDR with the default", c)
		}
		if !netip.MustParsePrefix("10.98.0.0/16").Contains(netip.MustParsePrefix(c.CIDR).Addr()) {
			t.Errorf("CIDR = %s, want a /24 in 10.98.0.0/16", c.CIDR)
		}
		if !c.PurgeOnClose {
			t.Error("PurgeOnClose = false, want true for a test stack")
		}
	}
	if a.Bridge == b.Bridge || a.HostName == b.HostName {
		t.Errorf("two free configs share a bridge or host: %s/%s, %s/%s", a.Bridge, a.HostName, b.Bridge, b.HostName)
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr bool
	}{
		{"default", func(*Config) {}, false},
		{"long bridge", func(c *Config) { c.Bridge = "br-much-too-long-name" }, true},
		{"IPv6 CIDR", func(c *Config) { c.CIDR = "fd00::/64" }, true},
		{"tiny CIDR", func(c *Config) { c.CIDR = "10.0.0.0/31" }, true},
		{"no run dir", func(c *Config) { c.RunDir = "" }, true},
		{"bad port", func(c *Config) { c.PGPort = 0 }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig(t.TempDir())
			tt.mutate(&c)
			if err := c.normalize(); (err != nil) != tt.wantErr {
				t.Errorf("normalize() = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestGateway(t *testing.T) {
	c := Config{CIDR: "10.99.0.0/24"}
	if got := c.gateway().String(); got != "10.99.0.1/24" {
		t.Errorf("gateway = %s, want 10.99.0.1/24", got)
	}
}
