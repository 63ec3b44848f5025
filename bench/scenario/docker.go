package scenario

import (
	"context"
	"fmt"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"golang.org/x/sync/errgroup"

	"berth/internal/devstack"
)

// benchLabel marks the baseline containers the bench makes itself.
const benchLabel = "berth-bench"

// ctrInfo is one container of a set, with Docker's own timestamps.
type ctrInfo struct {
	ID, Role, Image, ImageRef string
	Created, Started          time.Time
}

// setContainers inspects the containers of a set (by the hostagent's
// berth.set label).
func (e *Env) setContainers(ctx context.Context, setID string) ([]ctrInfo, error) {
	list, err := e.Docker.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", devstack.LabelSet+"="+setID))})
	if err != nil {
		return nil, err
	}
	out := make([]ctrInfo, 0, len(list))
	for _, c := range list {
		j, err := e.Docker.ContainerInspect(ctx, c.ID)
		if err != nil {
			return nil, err
		}
		ci := ctrInfo{ID: c.ID, Role: c.Labels[devstack.LabelRole], Image: j.Image}
		if j.Config != nil {
			ci.ImageRef = j.Config.Image
		}
		ci.Created, _ = time.Parse(time.RFC3339Nano, j.Created)
		if j.State != nil {
			ci.Started, _ = time.Parse(time.RFC3339Nano, j.State.StartedAt)
		}
		out = append(out, ci)
	}
	return out, nil
}

// ensureBaselineNetwork makes the user-defined bridge network the
// baseline containers join (Docker wires a veth into it as it would for
// `docker run`). The machine's default bridge may be gone (dockerd runs
// here without docker0), so the bench brings its own; "none" if even that
// cannot be had.
func (e *Env) ensureBaselineNetwork(ctx context.Context) string {
	const name = "berth-bench"
	if _, err := e.Docker.NetworkInspect(ctx, name, network.InspectOptions{}); err == nil {
		return name
	}
	if _, err := e.Docker.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge",
		Labels: map[string]string{benchLabel: "1"}}); err != nil {
		e.Log.Warn("no bridge network for the baselines; they run without a network", "err", err)
		e.Report.Note("The Docker baselines ran with --network none (no bridge network could be made: %v), which flatters them.", err)
		return "none"
	}
	e.createdNet = name
	return name
}

// appResources are the limits the hostagent gives an m1.tiny app
// container (1 vCPU, 512 MB with a soft limit at half, 1024 pids), so the
// baseline runs under the same limits.
func appResources() container.Resources {
	pids := int64(1024)
	return container.Resources{NanoCPUs: 1e9, Memory: 512 << 20, MemoryReservation: 256 << 20,
		MemorySwap: 512 << 20, PidsLimit: &pids}
}

// dockerRun is the single-container baseline: docker create + docker
// start of the demo image with m1.tiny's limits on Docker's default
// network, as `docker run -d` would do it.
func (e *Env) dockerRun(ctx context.Context, name string) (id string, took time.Duration, err error) {
	start := time.Now()
	c, err := e.Docker.ContainerCreate(ctx, &container.Config{Image: e.DockerImageID, Labels: map[string]string{benchLabel: "1"}},
		&container.HostConfig{NetworkMode: container.NetworkMode(e.baseNet), Resources: appResources()}, nil, nil, name)
	if err != nil {
		return "", 0, fmt.Errorf("docker create: %w", err)
	}
	if err := e.Docker.ContainerStart(ctx, c.ID, container.StartOptions{}); err != nil {
		return c.ID, 0, fmt.Errorf("docker start: %w", err)
	}
	return c.ID, time.Since(start), nil
}

// dockerPair is the hand-built set: a pause container owning the network
// namespace (on Docker's default bridge, so Docker wires a veth) and the
// app joined to its network and IPC namespaces, created and started in
// that order.
func (e *Env) dockerPair(ctx context.Context, name string) (ids []string, took time.Duration, err error) {
	start := time.Now()
	pids := int64(64)
	infra, err := e.Docker.ContainerCreate(ctx, &container.Config{Image: e.PauseImage, Labels: map[string]string{benchLabel: "1"}},
		&container.HostConfig{NetworkMode: container.NetworkMode(e.baseNet), IpcMode: "shareable", Resources: container.Resources{Memory: 32 << 20, PidsLimit: &pids}}, nil, nil, name+"-infra")
	if err != nil {
		return nil, 0, fmt.Errorf("docker create infra: %w", err)
	}
	ids = append(ids, infra.ID)
	app, err := e.Docker.ContainerCreate(ctx, &container.Config{Image: e.DockerImageID, Labels: map[string]string{benchLabel: "1"}},
		&container.HostConfig{NetworkMode: container.NetworkMode("container:" + infra.ID), IpcMode: container.IpcMode("container:" + infra.ID),
			Resources: appResources()}, nil, nil, name+"-app")
	if err != nil {
		return ids, 0, fmt.Errorf("docker create app: %w", err)
	}
	ids = append(ids, app.ID)
	for _, id := range ids {
		if err := e.Docker.ContainerStart(ctx, id, container.StartOptions{}); err != nil {
			return ids, 0, fmt.Errorf("docker start: %w", err)
		}
	}
	return ids, time.Since(start), nil
}

// dockerRemove is `docker rm -f` of containers, which the CLI does in
// parallel.
func (e *Env) dockerRemove(ctx context.Context, ids ...string) (time.Duration, error) {
	start := time.Now()
	var g errgroup.Group
	for _, id := range ids {
		g.Go(func() error {
			return e.Docker.ContainerRemove(ctx, id, container.RemoveOptions{Force: true})
		})
	}
	err := g.Wait()
	return time.Since(start), err
}

// CleanupBaselines removes every baseline container the bench made.
func (e *Env) CleanupBaselines(ctx context.Context) {
	list, err := e.Docker.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", benchLabel+"=1"))})
	if err != nil {
		return
	}
	for _, c := range list {
		_ = e.Docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
	}
	if e.createdNet != "" {
		_ = e.Docker.NetworkRemove(ctx, e.createdNet)
	}
}
