package reconcile

import (
	"context"
	"time"

	"berth/hostagent/ledger"
	"berth/hostagent/observed"
	"berth/hostagent/setspec"
	"berth/schema"
)

// Runtime runs a set's containers. Implementations bound every call with
// their own timeout. Methods taking an ID treat "no such container" as done
// where that is the goal (Stop, Kill, Remove).
type Runtime interface {
	// List returns this host's managed containers; setID "" means all sets.
	List(ctx context.Context, setID string) ([]observed.Container, error)
	// ListVolumes returns this host's set volumes; setID "" means all sets.
	ListVolumes(ctx context.Context, setID string) ([]observed.Volume, error)
	// Inspect returns one container.
	Inspect(ctx context.Context, id string) (observed.Container, error)
	// CreateInfra creates the set's infra container, which owns the netns.
	CreateInfra(ctx context.Context, set schema.DesiredSet) (string, error)
	// EnsureVolume creates the named set volume unless it exists, and
	// says whether it created it.
	EnsureVolume(ctx context.Context, set schema.DesiredSet, volume string) (created bool, err error)
	// CreateMember creates an app or sidecar container inside the infra's
	// namespaces; the primary app also gets the set's keys, files and
	// user data before its first start.
	CreateMember(ctx context.Context, set schema.DesiredSet, m setspec.Member, infraID string) (string, error)
	Start(ctx context.Context, id string) error
	// RunUserData runs the container's user data once (a no-op when it
	// has none, has run it already, or lacks /bin/sh).
	RunUserData(ctx context.Context, id string) error
	// Stop stops gracefully: TERM, then KILL after grace (0: the
	// runtime's default).
	Stop(ctx context.Context, id string, grace time.Duration) error
	// Kill kills at once.
	Kill(ctx context.Context, id string) error
	// Pause and Unpause freeze and thaw a running container.
	Pause(ctx context.Context, id string) error
	Unpause(ctx context.Context, id string) error
	// Update applies limits to a container live.
	Update(ctx context.Context, id string, limits schema.SetLimits) error
	// Remove removes a container, killing it if it still runs.
	Remove(ctx context.Context, id string) error
	// RemoveVolume removes a set volume; a missing one is removed.
	RemoveVolume(ctx context.Context, name string) error
}

// Network plugs set ports into the host's switch.
type Network interface {
	// List returns this host's set ports; setID "" means all sets.
	List(ctx context.Context, setID string) ([]observed.Port, error)
	// Attached reports whether the netns of pid has the set's index-th
	// interface (eth<index>) configured for port.
	Attached(ctx context.Context, index int, port schema.SetPort, pid int) (bool, error)
	// Plumb gives the netns of pid eth<index> for port (the first port also
	// gets the default route), plugs its host end into the switch,
	// replacing any earlier plumbing of the port, and applies its policy
	// (see ApplyPolicy).
	Plumb(ctx context.Context, setID string, index int, port schema.SetPort, pid int) error
	// Policy reports whether the data path of the plugged port (flows:
	// isolation, anti-spoofing, security groups; shaping; MTU) matches
	// port. Checked, like Attached, while the infra container runs.
	Policy(ctx context.Context, index int, port schema.SetPort, pid int) (bool, error)
	// ApplyPolicy makes the data path of the plugged port match port,
	// live (no replumbing, established connections of rules that stay
	// keep flowing).
	ApplyPolicy(ctx context.Context, setID string, index int, port schema.SetPort, pid int) error
	// Unplumb removes the port, its flows and shaping from the switch and
	// deletes its veth.
	Unplumb(ctx context.Context, port observed.Port) error
}

// passNetwork is a Network that can keep what it reads of the whole host
// for one observation pass (netplumb.Plumber.Pass): Sync's observation of
// every set then costs one read of the switch, not one per port, even
// while workers change ports under it.
type passNetwork interface {
	Pass(ctx context.Context) context.Context
}

// Images makes a set's image available to the runtime.
type Images interface {
	Ensure(ctx context.Context, img schema.SetImage) error
}

// Ledger remembers what was applied per set across agent restarts.
type Ledger interface {
	Get(setID string) ledger.Entry
	Put(setID string, e ledger.Entry) error
	Forget(setID string) error
}

// ProbeTarget is one TCP health probe the prober runs: a connect to
// 127.0.0.1:Port inside the network namespace of Pid.
type ProbeTarget struct {
	// Key identifies the probed container (its ID).
	Key      string
	Pid      int
	Port     int
	Interval time.Duration
	Timeout  time.Duration
	Retries  int
}

// Prober runs TCP health probes (command probes run in Docker).
type Prober interface {
	// Track replaces the set of probes to run; results of keys still
	// tracked are kept.
	Track(targets []ProbeTarget)
	// Health is the result for a key: "", starting, healthy or unhealthy.
	Health(key string) string
}
