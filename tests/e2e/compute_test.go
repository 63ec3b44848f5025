package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"berth/internal/devstack"
)

// TestComputeOperations drives the VM verbs through the real openstack
// CLI: pause, suspend, reboot, resize + confirm, rebuild, console log,
// keypair injection, snapshot and boot from the snapshot.
func TestComputeOperations(t *testing.T) {
	s := startStack(t)
	o := &osc{stack: s}
	demo := devstack.CloudDemo
	t.Cleanup(func() {
		_, _, _ = o.run(t, demo, "server", "delete", "--wait", "ops1", "ops2")
	})

	keyFile := filepath.Join(t.TempDir(), "k1.pem")
	priv := o.must(t, demo, "keypair", "create", "k1")
	if !strings.Contains(priv, "PRIVATE KEY") {
		t.Fatalf("keypair create printed %q, want a private key", priv)
	}
	if err := os.WriteFile(keyFile, []byte(priv), 0o600); err != nil {
		t.Fatal(err)
	}
	var kp struct {
		Fingerprint string `json:"fingerprint"`
	}
	o.json(t, demo, &kp, "keypair", "show", "k1")

	// --wait prints progress lines to stdout, so the JSON comes from show.
	o.must(t, demo, "server", "create", "--image", devstack.DemoImageName, "--flavor", "m1.tiny",
		"--key-name", "k1", "--wait", "ops1")
	var created server
	o.json(t, demo, &created, "server", "show", "ops1")
	if created.Status != "ACTIVE" {
		t.Fatalf("ops1 is %s, want ACTIVE", created.Status)
	}
	app := appContainer(t, s, created.ID)
	keys := dockerExec(t, app, "cat", "/root/.ssh/authorized_keys")
	if !strings.HasPrefix(keys, "ssh-rsa ") {
		t.Errorf("authorized_keys = %q, want the keypair's public key", keys)
	}
	firstIP := created.Addresses

	t.Run("pause and unpause", func(t *testing.T) {
		o.must(t, demo, "server", "pause", "ops1")
		o.waitStatus(t, demo, "ops1", "PAUSED", time.Minute)
		o.must(t, demo, "server", "unpause", "ops1")
		o.waitStatus(t, demo, "ops1", "ACTIVE", time.Minute)
	})
	t.Run("suspend and resume", func(t *testing.T) {
		o.must(t, demo, "server", "suspend", "ops1")
		o.waitStatus(t, demo, "ops1", "SUSPENDED", time.Minute)
		o.must(t, demo, "server", "resume", "ops1")
		o.waitStatus(t, demo, "ops1", "ACTIVE", time.Minute)
	})
	t.Run("reboot keeps the address", func(t *testing.T) {
		o.must(t, demo, "server", "reboot", "--wait", "ops1")
		got := o.waitStatus(t, demo, "ops1", "ACTIVE", time.Minute)
		if strings.Join(got.Addresses["private"], ",") != strings.Join(firstIP["private"], ",") {
			t.Errorf("address after reboot %v, want %v", got.Addresses, firstIP)
		}
	})
	t.Run("resize and confirm, live", func(t *testing.T) {
		o.must(t, demo, "server", "resize", "--flavor", "m1.small", "--wait", "ops1")
		o.waitStatus(t, demo, "ops1", "VERIFY_RESIZE", time.Minute)
		mem := dockerInspect(t, appContainer(t, s, created.ID), "{{.HostConfig.Memory}}")
		if mem != "2147483648" {
			t.Errorf("app memory limit after resize = %s, want 2147483648 (m1.small)", mem)
		}
		o.must(t, demo, "server", "resize", "confirm", "ops1")
		o.waitStatus(t, demo, "ops1", "ACTIVE", time.Minute)
	})
	t.Run("rebuild keeps id and address", func(t *testing.T) {
		o.must(t, demo, "server", "rebuild", "--image", devstack.DemoImageName, "--wait", "ops1")
		got := o.waitStatus(t, demo, "ops1", "ACTIVE", time.Minute)
		if got.ID != created.ID || strings.Join(got.Addresses["private"], ",") != strings.Join(firstIP["private"], ",") {
			t.Errorf("after rebuild %s %v, want %s %v", got.ID, got.Addresses, created.ID, firstIP)
		}
	})
	t.Run("console log", func(t *testing.T) {
		app := appContainer(t, s, created.ID)
		dockerExec(t, app, "sh", "-c", "echo berth-console-marker > /proc/1/fd/1")
		deadline := time.Now().Add(20 * time.Second)
		for {
			out := o.must(t, demo, "console", "log", "show", "ops1")
			if strings.Contains(out, "berth-console-marker") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("console log = %q, want the marker", out)
			}
			time.Sleep(time.Second)
		}
	})
	t.Run("snapshot and boot from it", func(t *testing.T) {
		app := appContainer(t, s, created.ID)
		dockerExec(t, app, "sh", "-c", "echo snapshot-content > /www/snap.txt")
		o.must(t, demo, "server", "image", "create", "--name", "snap1", "--wait", "ops1")
		var img struct {
			Status          string `json:"status"`
			ContainerFormat string `json:"container_format"`
		}
		o.json(t, demo, &img, "image", "show", "snap1")
		if img.Status != "active" || img.ContainerFormat != "docker" {
			t.Fatalf("snapshot image = %+v, want an active docker image", img)
		}
		o.must(t, demo, "server", "create", "--image", "snap1", "--flavor", "m1.tiny", "--wait", "ops2")
		var ops2 server
		o.json(t, demo, &ops2, "server", "show", "ops2")
		if got := dockerExec(t, appContainer(t, s, ops2.ID), "cat", "/www/snap.txt"); strings.TrimSpace(got) != "snapshot-content" {
			t.Errorf("file in the server booted from the snapshot = %q, want snapshot-content", got)
		}
	})
	t.Run("backups rotate", func(t *testing.T) {
		// rotate 1: after the second backup only it is left.
		for _, name := range []string{"bk1", "bk2"} {
			waitNoTask(t, o, demo, "ops1")
			o.must(t, demo, "server", "backup", "create", "--name", name, "--type", "daily", "--rotate", "1", "--wait", "ops1")
		}
		waitNoTask(t, o, demo, "ops1")
		var imgs []struct {
			Name string `json:"Name"`
		}
		o.json(t, demo, &imgs, "image", "list", "--property", "image_type=backup")
		if len(imgs) != 1 || imgs[0].Name != "bk2" {
			t.Errorf("backups after rotation = %+v, want only bk2", imgs)
		}
	})
	t.Run("shelve and unshelve keep id and address", func(t *testing.T) {
		waitNoTask(t, o, demo, "ops1")
		o.must(t, demo, "server", "shelve", "ops1")
		o.waitStatus(t, demo, "ops1", "SHELVED_OFFLOADED", 2*time.Minute)
		// Offloaded: the host's agent removes the set.
		deadline := time.Now().Add(time.Minute)
		for len(setContainers(t, created.ID, "")) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("containers of the offloaded server remain: %v", setContainers(t, created.ID, ""))
			}
			time.Sleep(time.Second)
		}
		o.must(t, demo, "server", "unshelve", "ops1")
		got := o.waitStatus(t, demo, "ops1", "ACTIVE", 2*time.Minute)
		if got.ID != created.ID || strings.Join(got.Addresses["private"], ",") != strings.Join(firstIP["private"], ",") {
			t.Errorf("after unshelve: id %s addresses %v, want %s %v", got.ID, got.Addresses, created.ID, firstIP)
		}
		// The app container was committed at shelve, so its files came back.
		if out := dockerExec(t, appContainer(t, s, created.ID), "cat", "/www/snap.txt"); strings.TrimSpace(out) != "snapshot-content" {
			t.Errorf("file after unshelve = %q, want snapshot-content", out)
		}
	})
	t.Run("instance actions record every step", func(t *testing.T) {
		var actions []struct {
			Action string `json:"Action"`
		}
		o.json(t, demo, &actions, "server", "event", "list", "ops1")
		var names []string
		for _, a := range actions {
			names = append(names, a.Action)
		}
		for _, want := range []string{"create", "pause", "unpause", "suspend", "resume", "reboot", "resize", "confirmResize", "rebuild", "createImage", "createBackup", "shelve", "unshelve"} {
			if !strings.Contains(","+strings.Join(names, ",")+",", ","+want+",") {
				t.Errorf("instance actions %v lack %s", names, want)
			}
		}
	})
}

// waitNoTask waits until a server has no task in flight (a backup's
// rotation runs at the end of its task).
func waitNoTask(t *testing.T, o *osc, cloud, name string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var s map[string]any
		o.json(t, cloud, &s, "server", "show", name)
		if s["OS-EXT-STS:task_state"] == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("server %s still has task %v", name, s["OS-EXT-STS:task_state"])
		}
		time.Sleep(time.Second)
	}
}

// appContainer finds a server's app container by Berth's labels.
func appContainer(t *testing.T, s *devstack.Stack, serverID string) string {
	t.Helper()
	out := dockerOut(t, "ps", "-q", "--filter", "label="+devstack.LabelSet+"="+serverID,
		"--filter", "label="+devstack.LabelRole+"=app", "--filter", "label="+devstack.LabelHost+"="+s.HostName())
	id := strings.TrimSpace(out)
	if id == "" || strings.Contains(id, "\n") {
		t.Fatalf("app container of %s: %q, want exactly one running", serverID, id)
	}
	return id
}

func dockerOut(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func dockerExec(t *testing.T, container string, cmd ...string) string {
	t.Helper()
	return dockerOut(t, append([]string{"exec", container}, cmd...)...)
}

func dockerInspect(t *testing.T, container, format string) string {
	t.Helper()
	return strings.TrimSpace(dockerOut(t, "inspect", "-f", format, container))
}
