package devstack

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
)

// Config says where and on which ports a stack runs. Paths may be relative;
// Up makes them absolute.
type Config struct {
	// RunDir holds all state: database cluster, Keystone keys, secrets,
	// logs, images. A second Up on the same RunDir reuses it.
	RunDir string
	// BinDir holds the built Berth binaries (berth-region, berth-imagesvc,
	// berth-hostagent, berth-pause).
	BinDir string

	KeystonePort int
	ComputePort  int
	NetworkPort  int
	ImagePort    int
	PGPort       int

	// Bridge is this stack's OVS integration bridge, at most 15 characters.
	Bridge string
	// HostName is the name the hostagent registers under.
	HostName string
	// CIDR is the default network's subnet; its first address goes on the
	// bridge as the gateway.
	CIDR string

	// OVSDir is where the machine's shared Open vSwitch instance keeps its
	// database, sockets and logs. One netdev-datapath ovs-vswitchd per
	// network namespace is all Linux allows (they all want the tap
	// "ovs-netdev"), so every stack on a machine shares one instance and
	// brings its own bridge. Default /run/berth/ovs.
	OVSDir string
	// InfraOnly starts PostgreSQL, Docker, OVS and Keystone but none of the
	// Berth daemons, and seeds no image.
	InfraOnly bool
	// PurgeOnClose makes Close remove what the hostagent left behind for
	// HostName (labelled containers, the bridge and its ports). Tests set
	// it; `make run` keeps servers across restarts.
	PurgeOnClose bool
	// UserClouds also merges the clouds into ~/.config/openstack/clouds.yaml.
	UserClouds bool

	Log *slog.Logger
}

// Default ports of a one-machine stack.
const (
	DefaultKeystonePort = 5000
	DefaultComputePort  = 8774
	DefaultNetworkPort  = 9696
	DefaultImagePort    = 9292
	DefaultPGPort       = 55432
	DefaultBridge       = "br-berth"
	DefaultCIDR         = "10.99.0.0/24"
	DefaultOVSDir       = "/run/berth/ovs"
)

// DefaultConfig is the configuration `make run` uses.
func DefaultConfig(runDir string) Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return Config{
		RunDir:       runDir,
		BinDir:       "bin",
		KeystonePort: DefaultKeystonePort,
		ComputePort:  DefaultComputePort,
		NetworkPort:  DefaultNetworkPort,
		ImagePort:    DefaultImagePort,
		PGPort:       DefaultPGPort,
		Bridge:       DefaultBridge,
		HostName:     host,
		CIDR:         DefaultCIDR,
		OVSDir:       DefaultOVSDir,
		Log:          slog.Default(),
	}
}

// FreePortsConfig is a configuration that can run beside `make run` and
// other test stacks: free ports, and a bridge, host name and subnet of its
// own. Close purges what its hostagent created.
func FreePortsConfig(runDir string) (Config, error) {
	cfg := DefaultConfig(runDir)
	ports, err := freePorts(5)
	if err != nil {
		return Config{}, err
	}
	cfg.KeystonePort, cfg.ComputePort, cfg.NetworkPort, cfg.ImagePort, cfg.PGPort = ports[0], ports[1], ports[2], ports[3], ports[4]
	suffix := randomHex(3)
	cfg.Bridge = "brb-" + suffix // 10 characters
	cfg.HostName = "test-" + suffix
	if cfg.CIDR, err = freeCIDR(); err != nil {
		return Config{}, err
	}
	cfg.PurgeOnClose = true
	return cfg, nil
}

func (c *Config) normalize() error {
	if c.RunDir == "" {
		return fmt.Errorf("config: RunDir is empty")
	}
	var err error
	if c.RunDir, err = filepath.Abs(c.RunDir); err != nil {
		return err
	}
	if c.BinDir == "" {
		c.BinDir = "bin"
	}
	if c.BinDir, err = filepath.Abs(c.BinDir); err != nil {
		return err
	}
	if c.OVSDir == "" {
		c.OVSDir = DefaultOVSDir
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Bridge == "" || len(c.Bridge) > 15 {
		return fmt.Errorf("config: bridge name %q must be 1-15 characters", c.Bridge)
	}
	if c.HostName == "" {
		return fmt.Errorf("config: HostName is empty")
	}
	p, err := netip.ParsePrefix(c.CIDR)
	if err != nil || !p.Addr().Is4() || p.Bits() > 30 {
		return fmt.Errorf("config: CIDR %q must be an IPv4 subnet of /30 or larger", c.CIDR)
	}
	c.CIDR = p.Masked().String()
	for name, port := range map[string]int{"keystone": c.KeystonePort, "compute": c.ComputePort, "network": c.NetworkPort, "image": c.ImagePort, "postgres": c.PGPort} {
		if port <= 0 || port > 65535 {
			return fmt.Errorf("config: %s port %d out of range", name, port)
		}
	}
	return nil
}

// gateway is the first host address of the CIDR, e.g. 10.99.0.1/24.
func (c *Config) gateway() netip.Prefix {
	p := netip.MustParsePrefix(c.CIDR)
	return netip.PrefixFrom(p.Addr().Next(), p.Bits())
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// freeCIDR picks 10.98.N.0/24 that no local interface address overlaps.
func freeCIDR() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for range 50 {
		n, err := rand.Int(rand.Reader, big.NewInt(253))
		if err != nil {
			return "", err
		}
		cand := netip.MustParsePrefix(fmt.Sprintf("10.98.%d.0/24", n.Int64()+1))
		clash := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP.To4()); ok && cand.Contains(ip) {
					clash = true
				}
			}
		}
		if !clash {
			return cand.String(), nil
		}
	}
	return "", fmt.Errorf("no free 10.98.N.0/24 subnet")
}

func randomHex(nbytes int) string {
	b := make([]byte, nbytes)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}
