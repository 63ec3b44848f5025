// Package runtime runs a set's containers on Docker: a pause "infra"
// container that owns the set's network and IPC namespaces, and the app
// container that joins them. Every container it creates is labelled as
// Berth's and as this host's; nothing else is ever listed or touched.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/client"

	"berth/hostagent/observed"
	"berth/hostagent/setspec"
	"berth/schema"
)

// Labels on every container Berth creates.
const (
	LabelManaged    = "berth.managed"
	LabelSet        = "berth.set"
	LabelRole       = "berth.role"
	LabelHost       = "berth.host"
	LabelGeneration = "berth.generation"
	// LabelMember is the container's name within its set.
	LabelMember = "berth.container"
	// LabelSpec is the hash of the desired spec the container was made from.
	LabelSpec = "berth.spec"
	// LabelVolume is a set volume's name within its set.
	LabelVolume = "berth.volume"
)

// Config configures a Docker runtime.
type Config struct {
	// Host is this agent's host name, stamped on every container.
	Host string
	// PauseBinary is the path of the static pause binary for infra containers.
	PauseBinary string
	// StopGrace is how long Stop waits after TERM before KILL.
	StopGrace time.Duration
	// CallTimeout bounds each Docker call (Stop adds StopGrace).
	CallTimeout time.Duration
	// PidsLimit caps a member container's processes when the set's limits
	// do not (default 1024).
	PidsLimit int64
	// MaxParallel caps the container creates, starts and removes in
	// flight at once (default 4 per CPU). A burst of sets then queues in
	// the agent instead of inside dockerd, where a hundred concurrent
	// starts on two cores each outlast CallTimeout and fail builds that
	// would have succeeded a few seconds later. The wait for a slot is not
	// part of CallTimeout.
	MaxParallel int
}

// Docker implements the reconciler's runtime on the Docker Engine API.
type Docker struct {
	cli *client.Client
	cfg Config
	log *slog.Logger

	// secOpt is every container's security options: no-new-privileges
	// and Berth's seccomp profile (secErr if it could not be rendered).
	secOpt []string
	secErr error

	heavy chan struct{} // slots of MaxParallel

	inspects  *inspectCache // what List inspected, while Watch follows events
	inspected atomic.Int64  // inspects List ran (tests read it)

	pauseMu     sync.Mutex // guards pauseRef and noDiskQuota
	pauseRef    string
	noDiskQuota bool // the storage driver refused a size option
}

// New returns a Docker runtime using cli.
func New(cli *client.Client, log *slog.Logger, cfg Config) *Docker {
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 10 * time.Second
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	if cfg.PidsLimit <= 0 {
		cfg.PidsLimit = 1024
	}
	if cfg.MaxParallel <= 0 {
		cfg.MaxParallel = 4 * goruntime.NumCPU()
	}
	d := &Docker{cli: cli, cfg: cfg, log: log, secOpt: []string{"no-new-privileges"}, heavy: make(chan struct{}, cfg.MaxParallel),
		inspects: newInspectCache(time.Minute)}
	opt, err := seccompOpt()
	if err != nil {
		d.secErr = fmt.Errorf("render seccomp profile: %w", err)
	} else {
		d.secOpt = append(d.secOpt, opt)
	}
	return d
}

// ContainerName is the name of a set's container on a host. It embeds the
// host so that several agents can share one Docker daemon.
func ContainerName(host, setID, role string) string {
	return "berth-" + sanitizeName(host) + "-" + sanitizeName(setID) + "-" + role
}

var badNameChars = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

func sanitizeName(s string) string {
	s = badNameChars.ReplaceAllString(s, "_")
	if s == "" {
		return "_"
	}
	return s
}

func (d *Docker) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, d.cfg.CallTimeout)
}

// heavyCall is call for a create, start or remove: it first waits for one
// of MaxParallel slots (or ctx), and its timeout runs from then.
func (d *Docker) heavyCall(ctx context.Context) (context.Context, context.CancelFunc, error) {
	select {
	case d.heavy <- struct{}{}:
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
	cctx, cancel := d.call(ctx)
	return cctx, func() { cancel(); <-d.heavy }, nil
}

func (d *Docker) labels(set schema.DesiredSet, role, member, spec string) map[string]string {
	l := map[string]string{
		LabelManaged:    "true",
		LabelSet:        set.ID,
		LabelRole:       role,
		LabelMember:     member,
		LabelHost:       d.cfg.Host,
		LabelGeneration: strconv.FormatInt(set.Generation, 10),
	}
	if spec != "" {
		l[LabelSpec] = spec
	}
	return l
}

// List returns this host's managed containers, of one set or all.
func (d *Docker) List(ctx context.Context, setID string) ([]observed.Container, error) {
	f := filters.NewArgs(
		filters.Arg("label", LabelManaged+"=true"),
		filters.Arg("label", LabelHost+"="+d.cfg.Host),
	)
	if setID != "" {
		f.Add("label", LabelSet+"="+setID)
	}
	lctx, cancel := d.call(ctx)
	sums, err := d.cli.ContainerList(lctx, container.ListOptions{All: true, Filters: f})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	// Containers that changed since they were last inspected (all of them
	// unless Watch follows Docker's events; see inspectCache) are
	// inspected, several at once: an inspect waits for its container's
	// lock in dockerd, which a create or start in progress holds.
	now := time.Now()
	found := make([]observed.Container, len(sums))
	ok := make([]bool, len(sums))
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		slots = make(chan struct{}, inspectParallel)
	)
	for i, s := range sums {
		if c, hit := d.inspects.get(s.ID, summaryKey(s.State, s.Status), now); hit {
			found[i], ok[i] = c, true
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			case <-ctx.Done():
				return
			}
			since := d.inspects.begin()
			d.inspected.Add(1)
			c, err := d.Inspect(ctx, s.ID)
			switch {
			case cerrdefs.IsNotFound(err):
				return // removed since the list
			case err != nil:
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				return
			}
			d.inspects.put(s.ID, since, c, now)
			found[i], ok[i] = c, true
		}()
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]observed.Container, 0, len(sums))
	live := make(map[string]bool, len(sums))
	for i, s := range sums {
		live[s.ID] = true
		if ok[i] {
			out = append(out, found[i])
		}
	}
	if setID == "" {
		d.inspects.prune(live)
	}
	return out, nil
}

// inspectParallel bounds the inspects one List runs at once.
const inspectParallel = 8

// Inspect returns one container. It refuses containers that are not this
// host's managed ones.
func (d *Docker) Inspect(ctx context.Context, id string) (observed.Container, error) {
	ictx, cancel := d.call(ctx)
	defer cancel()
	j, err := d.cli.ContainerInspect(ictx, id)
	if err != nil {
		return observed.Container{}, fmt.Errorf("inspect container %s: %w", id, err)
	}
	var labels map[string]string
	if j.Config != nil {
		labels = j.Config.Labels
	}
	if labels[LabelManaged] != "true" || labels[LabelHost] != d.cfg.Host {
		return observed.Container{}, fmt.Errorf("container %s: %w", id, ErrNotManaged)
	}
	gen, _ := strconv.ParseInt(labels[LabelGeneration], 10, 64)
	c := observed.Container{
		ID:         j.ID,
		Name:       strings.TrimPrefix(j.Name, "/"),
		SetID:      labels[LabelSet],
		Role:       labels[LabelRole],
		Member:     labels[LabelMember],
		Generation: gen,
		Spec:       labels[LabelSpec],
		Image:      j.Image,
	}
	if c.Member == "" {
		c.Member = c.Role
	}
	if j.State != nil {
		c.State = j.State.Status
		c.Running = j.State.Running
		c.Paused = j.State.Paused
		c.ExitCode = j.State.ExitCode
		c.OOMKilled = j.State.OOMKilled
		c.Pid = j.State.Pid
		c.StartedAt = parseDockerTime(j.State.StartedAt)
		c.FinishedAt = parseDockerTime(j.State.FinishedAt)
		if j.State.Health != nil && j.State.Running {
			c.Health = j.State.Health.Status
		}
	}
	if hc := j.HostConfig; hc != nil {
		c.Limits.VCPUs = int(hc.NanoCPUs / 1e9)
		c.Limits.MemoryMB = int(hc.Memory >> 20)
		if hc.PidsLimit != nil {
			c.Limits.Pids = int(*hc.PidsLimit)
		}
	}
	c.RestartCount = j.RestartCount
	return c, nil
}

// ErrNotManaged is returned for a container that Berth (on this host) did
// not create.
var ErrNotManaged = errors.New("not managed by berth on this host")

func parseDockerTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.Year() <= 1 {
		return time.Time{}
	}
	return t.UTC()
}

// CreateInfra creates the set's infra container: the pause process with no
// network (the agent plumbs eth0 into it), shareable IPC, the set's
// hostname, no capabilities, Berth's seccomp profile, a read-only root,
// and no restart policy (the agent restarts sets itself).
func (d *Docker) CreateInfra(ctx context.Context, set schema.DesiredSet) (string, error) {
	ref, err := d.ensurePauseImage(ctx)
	if err != nil {
		return "", err
	}
	pids := int64(32)
	cfg := &container.Config{
		Image:      ref,
		Entrypoint: []string{pauseInImage},
		Hostname:   Hostname(set),
		Labels:     d.labels(set, observed.RoleInfra, observed.RoleInfra, ""),
	}
	hc := &container.HostConfig{
		NetworkMode:    "none",
		IpcMode:        "shareable",
		CgroupnsMode:   container.CgroupnsModePrivate,
		RestartPolicy:  container.RestartPolicy{Name: container.RestartPolicyDisabled},
		SecurityOpt:    slices.Clone(d.secOpt),
		CapDrop:        []string{"ALL"},
		ReadonlyRootfs: true,
		LogConfig:      logConfig,
		// Unprivileged ICMP echo sockets for every group in the set's
		// namespace: ping works, as on a VM, without NET_RAW (which a set
		// gets only when its flavor asks for it).
		Sysctls: map[string]string{"net.ipv4.ping_group_range": "0 2147483647"},
		Resources: container.Resources{
			Memory:    32 << 20,
			PidsLimit: &pids,
		},
	}
	return d.create(ctx, cfg, hc, ContainerName(d.cfg.Host, set.ID, observed.RoleInfra))
}

// Capabilities are what a set's app and sidecar containers get (Docker's
// default set less MKNOD, SETFCAP and NET_RAW): enough for a VM-like
// userland (sshd privilege separation, su, cron, package installs,
// binding ports below 1024). NET_RAW is added when the set asks for it.
var Capabilities = []string{
	"CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
	"SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "AUDIT_WRITE",
}

// logConfig keeps every container's console log readable through the
// Docker API (the console output and logs endpoints) and bounded on disk.
var logConfig = container.LogConfig{Type: "json-file", Config: map[string]string{"max-size": "10m", "max-file": "3"}}

// MemberConfig is the Docker configuration of a set member: inside the
// infra's network and IPC namespaces (own PID, mount and UTS of its own,
// shared hostname), never privileged, Berth's seccomp profile (Docker's
// default less the ptrace family, see SeccompProfile), no-new-privileges, the documented capability set, the member's limits,
// set volumes as named volumes (never a host path), no Docker restart
// policy (the agent restarts by the member's policy).
func (d *Docker) MemberConfig(set schema.DesiredSet, m setspec.Member, infraID string) (*container.Config, *container.HostConfig) {
	env := make([]string, 0, len(m.Env))
	for _, k := range slices.Sorted(maps.Keys(m.Env)) {
		env = append(env, k+"="+m.Env[k])
	}
	cfg := &container.Config{
		Image:  m.Image.DockerImageID,
		Cmd:    m.Command,
		Env:    env,
		Labels: d.labels(set, m.Role, m.Name, m.Spec),
	}
	if g := set.StopGraceSeconds; g > 0 {
		cfg.StopTimeout = &g
	}
	if h := m.Health; h != nil && len(h.Command) > 0 {
		iv, to, retries := setspec.ProbeTimings(h)
		cfg.Healthcheck = &container.HealthConfig{
			Test:     append([]string{"CMD"}, h.Command...),
			Interval: time.Duration(iv) * time.Second,
			Timeout:  time.Duration(to) * time.Second,
			Retries:  retries,
		}
	}
	caps := slices.Clone(Capabilities)
	if m.NetRaw {
		caps = append(caps, "NET_RAW")
	}
	hc := &container.HostConfig{
		NetworkMode:   container.NetworkMode("container:" + infraID),
		IpcMode:       container.IpcMode("container:" + infraID),
		CgroupnsMode:  container.CgroupnsModePrivate,
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
		SecurityOpt:   slices.Clone(d.secOpt),
		CapDrop:       []string{"ALL"},
		CapAdd:        caps,
		Privileged:    false,
		LogConfig:     logConfig,
		Resources:     AppResources(m.Limits, d.cfg.PidsLimit),
	}
	for _, v := range m.Volumes {
		hc.Mounts = append(hc.Mounts, mount.Mount{
			Type:     mount.TypeVolume,
			Source:   VolumeName(d.cfg.Host, set.ID, v.Volume),
			Target:   v.Path,
			ReadOnly: v.ReadOnly,
		})
	}
	return cfg, hc
}

// CreateMember creates an app or sidecar container (see MemberConfig).
// The primary app gets the set's authorized keys, personality files and
// user data before its first start; if that fails the container is removed.
func (d *Docker) CreateMember(ctx context.Context, set schema.DesiredSet, m setspec.Member, infraID string) (string, error) {
	if m.Image.DockerImageID == "" {
		return "", errors.New("desired container has no docker image id")
	}
	cfg, hc := d.MemberConfig(set, m, infraID)
	name := ContainerName(d.cfg.Host, set.ID, m.Name)
	d.pauseMu.Lock()
	quota := !d.noDiskQuota
	d.pauseMu.Unlock()
	if m.Limits.DiskGB > 0 && quota {
		// Cap the writable layer where the storage driver can (overlay2
		// on xfs with pquota, btrfs, zfs...); elsewhere it is measured
		// only (Diagnostics.DiskBytes).
		hc.StorageOpt = map[string]string{"size": strconv.Itoa(m.Limits.DiskGB) + "G"}
	}
	id, err := d.create(ctx, cfg, hc, name)
	if err != nil && hc.StorageOpt != nil && strings.Contains(strings.ToLower(err.Error()), "storage") {
		d.log.Info("storage driver cannot cap the writable layer; disk is measured only", "err", err)
		d.pauseMu.Lock()
		d.noDiskQuota = true
		d.pauseMu.Unlock()
		hc.StorageOpt = nil
		id, err = d.create(ctx, cfg, hc, name)
	}
	if err != nil {
		return "", err
	}
	if m.Primary {
		if err := d.inject(ctx, id, set); err != nil {
			if rerr := d.Remove(context.WithoutCancel(ctx), id); rerr != nil {
				err = errors.Join(err, rerr)
			}
			return "", fmt.Errorf("prepare %s container: %w", m.Name, err)
		}
	}
	return id, nil
}

// AppResources maps flavor limits to Docker resources: vcpus to a CPU
// quota, memory to a hard limit with an elastic soft limit (reservation) at
// half of it, no swap beyond the limit, and a pids cap (the limits' own,
// else pidsLimit).
func AppResources(l schema.SetLimits, pidsLimit int64) container.Resources {
	if l.Pids > 0 {
		pidsLimit = int64(l.Pids)
	}
	r := container.Resources{PidsLimit: &pidsLimit}
	if l.CPUMillis > 0 {
		r.NanoCPUs = int64(l.CPUMillis) * 1e6
	} else if l.VCPUs > 0 {
		r.NanoCPUs = int64(l.VCPUs) * 1e9
	}
	if l.MemoryMB > 0 {
		r.Memory = int64(l.MemoryMB) << 20
		r.MemoryReservation = r.Memory / 2
		r.MemorySwap = r.Memory
	}
	return r
}

// Hostname is the hostname the set's containers get.
func Hostname(set schema.DesiredSet) string {
	h := set.Hostname
	if h == "" {
		h = set.Name
	}
	h = strings.Trim(hostnameBad.ReplaceAllString(strings.ToLower(h), "-"), "-")
	if len(h) > 63 {
		h = strings.Trim(h[:63], "-")
	}
	if h == "" {
		h = "set-" + sanitizeName(set.ID)
		if len(h) > 63 {
			h = h[:63]
		}
	}
	return h
}

var hostnameBad = regexp.MustCompile(`[^a-z0-9-]+`)

func (d *Docker) create(ctx context.Context, cfg *container.Config, hc *container.HostConfig, name string) (string, error) {
	if d.secErr != nil {
		return "", d.secErr // never a container without its profile
	}
	cctx, cancel, err := d.heavyCall(ctx)
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", name, err)
	}
	defer cancel()
	resp, err := d.cli.ContainerCreate(cctx, cfg, hc, nil, nil, name)
	if err != nil {
		return "", fmt.Errorf("create container %s: %w", name, err)
	}
	for _, w := range resp.Warnings {
		d.log.Debug("docker create warning", "container", name, "warning", w)
	}
	return resp.ID, nil
}

// Start starts a container; starting a running one is a no-op.
func (d *Docker) Start(ctx context.Context, id string) error {
	defer d.inspects.drop(id) // its event may come after our next List
	sctx, cancel, err := d.heavyCall(ctx)
	if err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	defer cancel()
	if err := d.cli.ContainerStart(sctx, id, container.StartOptions{}); err != nil {
		return fmt.Errorf("start container %s: %w", id, err)
	}
	return nil
}

// Stop sends TERM, waits grace (0: the configured default), then KILLs.
func (d *Docker) Stop(ctx context.Context, id string, grace time.Duration) error {
	defer d.inspects.drop(id) // its event may come after our next List
	if grace <= 0 {
		grace = d.cfg.StopGrace
	}
	secs := max(int(grace.Round(time.Second)/time.Second), 1)
	sctx, cancel := context.WithTimeout(ctx, d.cfg.CallTimeout+grace)
	defer cancel()
	err := d.cli.ContainerStop(sctx, id, container.StopOptions{Timeout: &secs})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("stop container %s: %w", id, err)
	}
	return nil
}

// Kill sends KILL and waits until the container has stopped.
func (d *Docker) Kill(ctx context.Context, id string) error {
	defer d.inspects.drop(id) // its event may come after our next List
	kctx, cancel := d.call(ctx)
	defer cancel()
	waitC, errC := d.cli.ContainerWait(kctx, id, container.WaitConditionNotRunning)
	if err := d.cli.ContainerKill(kctx, id, "KILL"); err != nil {
		if cerrdefs.IsNotFound(err) || cerrdefs.IsConflict(err) { // gone, or not running
			return nil
		}
		return fmt.Errorf("kill container %s: %w", id, err)
	}
	select {
	case <-waitC:
		return nil
	case err := <-errC:
		if cerrdefs.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("wait for container %s: %w", id, err)
	}
}

// Pause freezes a container (cgroup freezer).
func (d *Docker) Pause(ctx context.Context, id string) error {
	defer d.inspects.drop(id) // its event may come after our next List
	pctx, cancel := d.call(ctx)
	defer cancel()
	if err := d.cli.ContainerPause(pctx, id); err != nil {
		return fmt.Errorf("pause container %s: %w", id, err)
	}
	return nil
}

// Unpause thaws a paused container.
func (d *Docker) Unpause(ctx context.Context, id string) error {
	defer d.inspects.drop(id) // its event may come after our next List
	pctx, cancel := d.call(ctx)
	defer cancel()
	if err := d.cli.ContainerUnpause(pctx, id); err != nil {
		// "is not paused" (a conflict) is the state asked for: a docker
		// commit pauses a container for its duration and thaws it itself,
		// so an unpause that races a commit's end has nothing to do.
		if cerrdefs.IsConflict(err) {
			return nil
		}
		return fmt.Errorf("unpause container %s: %w", id, err)
	}
	return nil
}

// Update applies limits to a container live (a resize): CPU quota, memory
// limit and reservation, pids. Docker ignores zero values, so a limit is
// changed, never removed.
func (d *Docker) Update(ctx context.Context, id string, l schema.SetLimits) error {
	defer d.inspects.drop(id) // its event may come after our next List
	uctx, cancel := d.call(ctx)
	defer cancel()
	resp, err := d.cli.ContainerUpdate(uctx, id, container.UpdateConfig{Resources: AppResources(l, d.cfg.PidsLimit)})
	if err != nil {
		return fmt.Errorf("update container %s: %w", id, err)
	}
	for _, w := range resp.Warnings {
		d.log.Warn("docker update warning", "container_id", id, "warning", w)
	}
	return nil
}

// Remove force-removes a container and its anonymous volumes; a missing
// container is already removed.
func (d *Docker) Remove(ctx context.Context, id string) error {
	defer d.inspects.drop(id) // its event may come after our next List
	rctx, cancel, err := d.heavyCall(ctx)
	if err != nil {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	defer cancel()
	err = d.cli.ContainerRemove(rctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", id, err)
	}
	return nil
}
