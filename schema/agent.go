package schema

import "time"

// The region ↔ hostagent wire. Region owns the desired state of every set;
// each hostagent pulls the desired state of its own host (long-polling on an
// index), converges Docker/OVS/tc to it, and reports what it observed.
//
// All internal calls carry the shared secret in the AgentTokenHeader header
// and live under /internal/v1 on region's compute listener.

// AgentTokenHeader carries the shared agent secret on internal calls.
const AgentTokenHeader = "X-Berth-Agent-Token"

// Desired power states of a set.
const (
	SetRunning = "running"
	SetStopped = "stopped"
	// SetPaused freezes every container of the set (cgroup freezer); Nova's
	// pause and suspend both map to it, region tells them apart.
	SetPaused  = "paused"
	SetDeleted = "deleted"
)

// Observed power states, named as Nova's power_state values.
const (
	PowerNoState  = "nostate"
	PowerRunning  = "running"
	PowerPaused   = "paused"
	PowerShutdown = "shutdown"
	PowerCrashed  = "crashed"
)

// HostRegister is what an agent sends when it joins (PUT /internal/v1/hosts/{host}).
type HostRegister struct {
	// VCPUs is the number of CPUs the host offers, e.g. 2.
	VCPUs int `json:"vcpus"`
	// MemoryMB is the RAM the host offers in MiB, e.g. 24000.
	MemoryMB int `json:"memory_mb"`
	// DiskGB is the disk the host offers in GiB, e.g. 80.
	DiskGB int `json:"disk_gb"`
	// Labels are free-form host labels, e.g. {"zone": "nova"}.
	Labels map[string]string `json:"labels,omitempty"`
	// AgentVersion is the agent's build version.
	AgentVersion string `json:"agent_version,omitempty"`
	// AgentURL is where region reaches the agent's own API (AgentOps), e.g.
	// "http://127.0.0.1:8780". Empty when the agent serves none.
	AgentURL string `json:"agent_url,omitempty"`
	// TunnelIP is the host's VXLAN tunnel endpoint, e.g. "172.31.0.11":
	// other hosts' agents send this host's set traffic there. Empty when
	// the host has no tunnel endpoint. Added by the hostagent (data path).
	TunnelIP string `json:"tunnel_ip,omitempty"`
}

// Peer is another host a host's sets reach through a VXLAN tunnel.
type Peer struct {
	// Host is the peer's host name, e.g. "compute-2".
	Host string `json:"host"`
	// TunnelIP is the peer's tunnel endpoint (its HostRegister.TunnelIP).
	TunnelIP string `json:"tunnel_ip"`
}

// Host is region's view of a registered host.
type Host struct {
	Name          string            `json:"name"`
	VCPUs         int               `json:"vcpus"`
	MemoryMB      int               `json:"memory_mb"`
	DiskGB        int               `json:"disk_gb"`
	Labels        map[string]string `json:"labels,omitempty"`
	LastHeartbeat time.Time         `json:"last_heartbeat"`
}

// DesiredState is the answer to GET /internal/v1/hosts/{host}/desired?index=N.
// The call blocks until the host's index exceeds N or the wait runs out.
type DesiredState struct {
	// Index increases with every change to this host's desired sets.
	Index int64 `json:"index"`
	// Sets are all sets placed on this host, including ones whose desired
	// state is "deleted" that the agent has not yet confirmed gone.
	Sets []DesiredSet `json:"sets"`
	// Peers are the other registered hosts with a tunnel endpoint; the
	// agent keeps one VXLAN tunnel to each (a host that leaves the list
	// loses its tunnel). Added by the hostagent (data path); region fills
	// it.
	Peers []Peer `json:"peers,omitempty"`
	// Groups are the security groups the rules of the host's ports name
	// as remote groups (SetRule.RemoteGroup), each with its members once.
	Groups []SetGroup `json:"groups,omitempty"`
}

// DesiredSet is one set as region wants it on a host.
type DesiredSet struct {
	// ID is the server (set) UUID.
	ID        string `json:"id"`
	ProjectID string `json:"project_id"`
	Name      string `json:"name"`
	// Hostname is the hostname the app container gets.
	Hostname string `json:"hostname"`
	// State is one of SetRunning, SetStopped, SetPaused, SetDeleted.
	State string `json:"state"`
	// Generation increases with every change to this set's desired state;
	// the agent echoes the generation it applied.
	Generation int64     `json:"generation"`
	Image      SetImage  `json:"image"`
	Limits     SetLimits `json:"limits"`
	// Ports are the set's network ports; the first becomes eth0.
	Ports []SetPort `json:"ports"`

	// RebootSeq grows by one for every reboot region asks for; the agent
	// restarts the set's app containers once per increase it sees (infra,
	// and with it the IP, stays) and echoes the value it applied.
	RebootSeq int64 `json:"reboot_seq,omitempty"`
	// RebootHard makes the latest reboot a kill instead of TERM + grace.
	RebootHard bool `json:"reboot_hard,omitempty"`
	// StopGraceSeconds is how long a stop waits after TERM before KILL
	// (0: the agent's default).
	StopGraceSeconds int `json:"stop_grace_seconds,omitempty"`
	// AuthorizedKeys (from key_name) is written to the app container's
	// /root/.ssh/authorized_keys (mode 0600, dir 0700) when it is created.
	AuthorizedKeys string `json:"authorized_keys,omitempty"`
	// UserData is the base64 user_data; when the image has /bin/sh it is
	// run once, at the app container's first start, as a script (a
	// "#!" line picks the interpreter); its output goes to the console log.
	UserData string `json:"user_data,omitempty"`
	// Files are written into the app container before its first start
	// (Nova's personality files).
	Files []SetFile `json:"files,omitempty"`

	// NetRaw grants the set's containers CAP_NET_RAW (raw sockets: ping,
	// packet capture). Off by default: a set gets the capability set
	// documented in hostagent/README.md, without NET_RAW. Added by the
	// hostagent for A9; a flavor extra spec turns it on.
	NetRaw bool `json:"net_raw,omitempty"`
	// Containers, when not empty, lists the set's containers besides infra
	// (the set API): apps and sidecars sharing the infra's network and IPC
	// namespaces and the set's volumes. When empty the set is a plain
	// server: infra + one app container named "app" running Image with
	// Limits. The first container with role "app" is the primary app: the
	// one PowerState, DockerImageID, Limits, logs, files, exec, password
	// and commit speak of.
	Containers []SetContainer `json:"containers,omitempty"`
}

// Roles of a set's containers (SetContainer.Role, ObservedContainer.Role).
const (
	RoleInfra   = "infra"
	RoleApp     = "app"
	RoleSidecar = "sidecar"
)

// Restart policies of a set's containers. The agent, not Docker, restarts
// a container that exits while its set is desired running; every restart
// is counted in ObservedContainer.RestartCount.
const (
	// RestartNever leaves an exited container stopped; the agent reports
	// shutdown/crashed and region decides (Nova's sync_power_states).
	RestartNever = "never"
	// RestartOnFailure restarts after a non-zero exit or an OOM kill.
	RestartOnFailure = "on-failure"
	// RestartAlways restarts after any exit.
	RestartAlways = "always"
)

// SetContainer is one container of a set declared through the set API.
type SetContainer struct {
	// Name is unique within the set: 1-32 of a-z, 0-9 and "-", starting
	// with a letter or digit, not "infra"; e.g. "web", "log-shipper".
	Name string `json:"name"`
	// Role is RoleApp or RoleSidecar.
	Role string `json:"role"`
	// Image is the container's image (imagesvc ID + Docker image ID).
	Image SetImage `json:"image"`
	// Command replaces the image's CMD when not empty, e.g.
	// ["/bin/sh", "-c", "exec httpd -f -p 8080"].
	Command []string `json:"command,omitempty"`
	// Env adds environment variables, e.g. {"MODE": "prod"}.
	Env map[string]string `json:"env,omitempty"`
	// Volumes mounts set volumes: named volumes shared by every container
	// of the set that mounts them, kept across a rebuild, removed with the
	// set. Never a host path.
	Volumes []SetVolumeMount `json:"volumes,omitempty"`
	// Limits are this container's limits; nil uses the set's Limits.
	Limits *SetLimits `json:"limits,omitempty"`
	// RestartPolicy is RestartNever (default), RestartOnFailure or
	// RestartAlways.
	RestartPolicy string `json:"restart_policy,omitempty"`
	// Health is the container's health probe; nil for none.
	Health *SetHealthProbe `json:"health,omitempty"`
}

// SetVolumeMount mounts a set volume into a container.
type SetVolumeMount struct {
	// Volume names the set volume: 1-63 of a-z, 0-9, "_", "." and "-",
	// e.g. "data".
	Volume string `json:"volume"`
	// Path is the absolute mount point inside the container, e.g. "/data";
	// not "/", nor under /proc, /sys or /dev.
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// SetHealthProbe checks a container's health: exactly one of Command
// (run inside the container; exit 0 is healthy) or TCPPort (a connect to
// 127.0.0.1:TCPPort in the set's network namespace succeeds).
type SetHealthProbe struct {
	Command []string `json:"command,omitempty"`
	TCPPort int      `json:"tcp_port,omitempty"`
	// IntervalSeconds between probes (default 10).
	IntervalSeconds int `json:"interval_seconds,omitempty"`
	// TimeoutSeconds of one probe (default 5).
	TimeoutSeconds int `json:"timeout_seconds,omitempty"`
	// Retries is how many failures in a row make it unhealthy (default 3).
	Retries int `json:"retries,omitempty"`
}

// Health probe results (ObservedSet.Health, ObservedContainer.Health).
const (
	HealthStarting  = "starting"
	HealthHealthy   = "healthy"
	HealthUnhealthy = "unhealthy"
)

// SetFile is one file injected into a set's app container.
type SetFile struct {
	// Path is absolute inside the container, e.g. "/etc/motd".
	Path string `json:"path"`
	// Contents is base64.
	Contents string `json:"contents"`
}

// SetImage names the image the app container runs.
type SetImage struct {
	// ID is the imagesvc (Glance) image UUID.
	ID string `json:"id"`
	// DockerImageID is the Docker image ID inside the image's docker-save
	// archive, e.g. "sha256:ab12…". The agent loads the archive from
	// imagesvc when Docker lacks this ID.
	DockerImageID string `json:"docker_image_id"`
}

// SetLimits are the resource limits from the flavor.
type SetLimits struct {
	VCPUs    int `json:"vcpus"`
	MemoryMB int `json:"memory_mb"`
	DiskGB   int `json:"disk_gb"`
	// CPUMillis, when set, is the CPU limit in thousandths of a CPU and
	// overrides VCPUs (a set's container may get half a CPU: 500).
	CPUMillis int `json:"cpu_millis,omitempty"`
	// Pids caps the number of processes per container (0: the agent's
	// default, --pids-limit). Added by the hostagent.
	Pids int `json:"pids,omitempty"`
}

// SetPort is one network port of a set.
type SetPort struct {
	ID        string `json:"id"`
	NetworkID string `json:"network_id"`
	// MAC is the port's MAC address, e.g. "fa:16:3e:12:34:56".
	MAC string `json:"mac"`
	// IP is the fixed IPv4 address, e.g. "10.99.0.5".
	IP string `json:"ip"`
	// PrefixLen is the subnet prefix length, e.g. 24.
	PrefixLen int `json:"prefix_len"`
	// Gateway is the subnet gateway, e.g. "10.99.0.1"; empty for none.
	Gateway string `json:"gateway,omitempty"`
	// CIDR is the subnet, e.g. "10.99.0.0/24".
	CIDR string `json:"cidr,omitempty"`
	// MTU is the network's MTU, e.g. 1450.
	MTU int `json:"mtu,omitempty"`
	// VNI is the network's VXLAN network identifier (Neutron's
	// provider:segmentation_id), 1-16777215, the same on every host; 0
	// lets the agent derive one from NetworkID (a hash: distinct networks
	// may collide). Added by the hostagent (data path).
	VNI int `json:"vni,omitempty"`
	// PortSecurity on: the port may only send from its own MAC and IP
	// (anti-spoofing, no rogue DHCP or ARP for others' addresses) and only
	// what Rules allow passes, statefully. Off: anything goes.
	PortSecurity bool `json:"port_security"`
	// Rules are the port's security group rules: remote CIDRs, or a remote
	// group whose members DesiredState.Groups lists. Traffic not allowed
	// by a rule is dropped; replies to allowed traffic pass (conntrack).
	Rules []SetRule `json:"rules,omitempty"`
	// Bandwidth limits the port; nil means unlimited.
	Bandwidth *SetBandwidth `json:"bandwidth,omitempty"`
}

// SetRule is one resolved security group rule.
type SetRule struct {
	// Direction is "ingress" (to the set) or "egress" (from the set).
	Direction string `json:"direction"`
	// Protocol is "tcp", "udp", "icmp" or "" for any.
	Protocol string `json:"protocol,omitempty"`
	// PortMin/PortMax bound the destination port (tcp/udp) or are the ICMP
	// type/code; 0 means any.
	PortMin int `json:"port_min,omitempty"`
	PortMax int `json:"port_max,omitempty"`
	// Remote are the CIDRs the rule admits traffic from (ingress) or to
	// (egress); empty (and no RemoteGroup) means any address.
	Remote []string `json:"remote,omitempty"`
	// RemoteGroup, when set, is Neutron's remote_group_id: the rule admits
	// the addresses of the group's ports on this port's network, listed
	// once per host in DesiredState.Groups rather than in every rule, so
	// a member joining or leaving changes one list, not every port's
	// rules. Remote is then empty.
	RemoteGroup string `json:"remote_group,omitempty"`
	// RemoteGroupTag is RemoteGroup's SetGroup.Tag.
	RemoteGroupTag int `json:"remote_group_tag,omitempty"`
}

// SetGroup is a security group that a rule of a port on the host names as
// its remote group, with the members the rule admits.
type SetGroup struct {
	// ID is the security group's UUID.
	ID string `json:"id"`
	// Tag is a number unique to the group in the region (1-2147483647),
	// stable for the group's life; the agent's OpenFlow conjunction id.
	Tag int `json:"tag"`
	// Members are the addresses of the group's ports (on servers) on the
	// networks the host's ports are on.
	Members []SetGroupMember `json:"members"`
}

// SetGroupMember is one port of a group: its network and address.
type SetGroupMember struct {
	NetworkID string `json:"network_id"`
	// VNI is the network's SetPort.VNI.
	VNI int `json:"vni,omitempty"`
	// IP is the port's IPv4 address, e.g. "10.99.0.7".
	IP string `json:"ip"`
}

// SetBandwidth is a port's rate limits, from the flavor's extra specs:
// Nova's quota:vif_{inbound,outbound}_{average,peak,burst} (KB/s, KB)
// and Berth's berth:bw_guarantee_kbps / berth:bw_priority. Inbound is
// traffic to the set, outbound from it.
type SetBandwidth struct {
	InboundAverageKBps  int `json:"inbound_average_kbps,omitempty"`
	InboundPeakKBps     int `json:"inbound_peak_kbps,omitempty"`
	InboundBurstKB      int `json:"inbound_burst_kb,omitempty"`
	OutboundAverageKBps int `json:"outbound_average_kbps,omitempty"`
	OutboundPeakKBps    int `json:"outbound_peak_kbps,omitempty"`
	OutboundBurstKB     int `json:"outbound_burst_kb,omitempty"`
	// GuaranteeKbit is the rate the set keeps on a busy link (HTB rate);
	// the average/peak above become its ceiling.
	GuaranteeKbit int `json:"guarantee_kbit,omitempty"`
	// Priority orders borrowing between sets: lower borrows first (HTB prio 0-7).
	Priority int `json:"priority,omitempty"`
}

// HostReport is POSTed to /internal/v1/hosts/{host}/report. It doubles as
// the heartbeat: an agent reports at least every heartbeat interval.
type HostReport struct {
	// Sets holds one entry per set the agent knows about (desired or found).
	Sets []ObservedSet `json:"sets"`
}

// ObservedSet is what the agent found on the host for one set.
type ObservedSet struct {
	ID string `json:"id"`
	// Generation is the desired generation the agent last applied.
	Generation int64 `json:"generation"`
	// Exists is false once every container and port of the set is gone.
	Exists bool `json:"exists"`
	// PowerState is one of the Power* constants.
	PowerState string `json:"power_state"`
	// Error is set when the agent failed to converge the set; it becomes
	// the server's fault message.
	Error string `json:"error,omitempty"`
	// Containers are the set's containers as Docker reports them.
	Containers []ObservedContainer `json:"containers,omitempty"`
	// RebootSeq is the desired RebootSeq the agent last applied.
	RebootSeq int64 `json:"reboot_seq,omitempty"`
	// DockerImageID is the image the app container runs; it differs from
	// the desired one while a rebuild is in progress.
	DockerImageID string `json:"docker_image_id,omitempty"`
	// Limits are the limits the app container runs with now (resize is
	// applied live; this shows when it has landed).
	Limits *SetLimits `json:"limits,omitempty"`
	// Health is the app's health probe result: "", "starting", "healthy"
	// or "unhealthy". With several probed containers: unhealthy if any
	// is, else starting if any is, else healthy.
	Health string `json:"health,omitempty"`
}

// ObservedContainer is one container of a set.
type ObservedContainer struct {
	// Role is "infra", "sidecar" or "app".
	Role string `json:"role"`
	// Name is the container's name within the set ("infra", "app" for a
	// plain server, else SetContainer.Name). Added by the hostagent.
	Name  string `json:"name,omitempty"`
	ID    string `json:"id"`
	State string `json:"state"`
	// RestartCount counts restarts by the container's restart policy.
	RestartCount int       `json:"restart_count"`
	StartedAt    time.Time `json:"started_at,omitempty"`
	// Health is the container's probe result ("" without a probe). Added
	// by the hostagent.
	Health string `json:"health,omitempty"`
}
