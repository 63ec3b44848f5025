package devstack

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
)

// Docker labels the hostagent puts on every container it creates.
const (
	LabelManaged = "berth.managed"
	LabelHost    = "berth.host"
	LabelSet     = "berth.set"
	LabelRole    = "berth.role"
)

func newDockerClient() (*client.Client, error) {
	return client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
}

func dockerPing(ctx context.Context, cli *client.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err := cli.Ping(ctx)
	return err
}

// ensureDocker uses the Docker daemon that answers on the default socket,
// or starts dockerd when none does. Only a dockerd we started (now or in an
// earlier run in this run dir, found by our pid file) is ours to stop.
func (s *Stack) ensureDocker(ctx context.Context) error {
	cli, err := newDockerClient()
	if err != nil {
		return fmt.Errorf("docker: %w", err)
	}
	s.docker = cli

	p := s.addProcess(procSpec{
		name:  ServiceDocker,
		path:  "dockerd",
		args:  dockerdFlags(ctx),
		dir:   filepath.Join(s.cfg.RunDir, "logs"),
		grace: 30 * time.Second, // it stops containers first
		ready: func(ctx context.Context) error { return dockerPing(ctx, cli) },
		// Other stacks on this machine may be using it.
		keepIfShared: true,
	})
	if err := dockerPing(ctx, cli); err == nil {
		if pid, ok := readPidFile(p.pidPath); ok && alive(pid) && sameExecutable(pid, "dockerd") {
			p.adopt(pid)
			return nil
		}
		s.removeProcess(p) // someone else's daemon: use it, never stop it
		s.log.Info("using running docker daemon", "host", cli.DaemonHost())
		return nil
	}
	if os.Getenv("DOCKER_HOST") != "" {
		return fmt.Errorf("docker: no daemon answers at DOCKER_HOST=%s", os.Getenv("DOCKER_HOST"))
	}
	if _, err := lookPath("dockerd"); err != nil {
		return fmt.Errorf("docker: no daemon running and dockerd not installed (make deps): %w", err)
	}
	s.log.Info("starting dockerd", "args", p.spec.args)
	return p.start(ctx)
}

// dockerdFlags are the flags this machine needs. Where iptables cannot be
// used (no netfilter in a sandbox kernel) dockerd would refuse to start its
// default bridge, so it runs without iptables rules; Berth's networking is
// OVS and does not need them.
//
// --live-restore keeps containers running while dockerd itself restarts
// (an upgrade, a crash): servers are VMs to their users and must not
// reboot because the container engine did.
func dockerdFlags(ctx context.Context) []string {
	flags := []string{"--host", "unix:///var/run/docker.sock", "--live-restore"}
	if _, err := runCmd(ctx, nil, nil, "iptables", "-w", "5", "-n", "-L", "FORWARD"); err != nil {
		flags = append(flags, "--iptables=false", "--ip-masq=false")
	}
	return flags
}

// purgeContainers removes every container the hostagent created for host.
func purgeContainers(ctx context.Context, cli *client.Client, host string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	list, err := cli.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", LabelManaged+"=true"), filters.Arg("label", LabelHost+"="+host)),
	})
	if err != nil {
		return 0, fmt.Errorf("docker: list containers of host %s: %w", host, err)
	}
	for _, c := range list {
		if err := cli.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil && !client.IsErrNotFound(err) {
			return 0, fmt.Errorf("docker: remove container %s: %w", c.ID, err)
		}
	}
	return len(list), nil
}
