package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"berth/internal/devstack"
)

// The terraform-provider-openstack release this test drives; the Go
// module proxy serves its tag (not its version list).
const tfProvider = "github.com/terraform-provider-openstack/terraform-provider-openstack"

const tfProviderVersion = "v1.54.1"

// tfConfig boots a server the way a Terraform user does: a keypair, an
// anti-affinity server group, image and flavor looked up by name, the
// network by name and the default security group.
const tfConfig = `terraform {
  required_providers {
    openstack = { source = "terraform-provider-openstack/openstack" }
  }
}
provider "openstack" {}

variable "flavor" { default = "m1.tiny" }
variable "name"   { default = "tf-vm" }

resource "openstack_compute_keypair_v2" "kp" { name = "tf-kp" }
resource "openstack_compute_servergroup_v2" "sg" {
  name     = "tf-sg"
  policies = ["anti-affinity"]
}
data "openstack_images_image_v2" "img" {
  name        = "demo"
  most_recent = true
}
data "openstack_compute_flavor_v2" "fl" { name = var.flavor }
resource "openstack_compute_instance_v2" "vm" {
  name            = var.name
  image_id        = data.openstack_images_image_v2.img.id
  flavor_id       = data.openstack_compute_flavor_v2.fl.id
  key_pair        = openstack_compute_keypair_v2.kp.name
  security_groups = ["default"]
  scheduler_hints { group = openstack_compute_servergroup_v2.sg.id }
  network { name = "private" }
}
`

// TestTerraform applies tfConfig, renames and resizes the server, checks
// that a plan then shows no changes, and destroys it all. It builds the
// provider and takes minutes, so it runs only with BERTH_TERRAFORM=1 (not
// in make test); it skips when terraform or the provider is unavailable.
func TestTerraform(t *testing.T) {
	if os.Getenv("BERTH_TERRAFORM") != "1" {
		t.Skip("set BERTH_TERRAFORM=1 to run (several minutes)")
	}
	tf, err := exec.LookPath("terraform")
	if err != nil {
		t.Skip("terraform is not installed")
	}
	provDir := buildProvider(t)
	s := startStack(t)

	work := t.TempDir()
	cli := filepath.Join(work, "cli.tfrc")
	writeTF(t, cli, `provider_installation {
  dev_overrides { "terraform-provider-openstack/openstack" = "`+provDir+`" }
  direct {}
}
`)
	writeTF(t, filepath.Join(work, "main.tf"), tfConfig)
	env := append(os.Environ(), s.Env(devstack.CloudDemo)...)
	env = append(env, "TF_CLI_CONFIG_FILE="+cli, "TF_IN_AUTOMATION=1")
	run := func(args ...string) (string, int) {
		t.Helper()
		// -no-color after the subcommand, before any address.
		n := 1
		if args[0] == "state" {
			n = 2
		}
		full := append(append(append([]string{}, args[:n]...), "-no-color"), args[n:]...)
		cmd := exec.Command(tf, full...)
		cmd.Dir, cmd.Env = work, env
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("terraform %v: %v", args, err)
		}
		return string(out), code
	}
	mustRun := func(args ...string) string {
		t.Helper()
		out, code := run(args...)
		if code != 0 {
			t.Fatalf("terraform %v: exit %d\n%s", args, code, out)
		}
		return out
	}
	destroyed := false
	defer func() {
		if !destroyed {
			run("destroy", "-auto-approve")
		}
	}()

	mustRun("apply", "-auto-approve")
	vars := []string{"-var", "name=tf-vm2", "-var", "flavor=m1.small"}
	mustRun(append([]string{"apply", "-auto-approve"}, vars...)...)
	state := mustRun("state", "show", "openstack_compute_instance_v2.vm")
	for _, want := range []string{`flavor_name         = "m1.small"`, `name                = "tf-vm2"`, `"default"`} {
		if !strings.Contains(state, want) {
			t.Errorf("after rename and resize the state lacks %s:\n%s", want, state)
		}
	}
	if out, code := run(append([]string{"plan", "-detailed-exitcode"}, vars...)...); code != 0 {
		t.Errorf("plan after apply: exit %d (0 = no changes)\n%s", code, out)
	}
	mustRun(append([]string{"destroy", "-auto-approve"}, vars...)...)
	destroyed = true
	var left []server
	(&osc{stack: s}).json(t, devstack.CloudDemo, &left, "server", "list")
	if len(left) != 0 {
		t.Errorf("servers left after destroy: %+v", left)
	}
}

// buildProvider builds the provider in a throw-away module and returns
// the directory holding it; it skips the test if that fails (no proxy,
// no module cache).
func buildProvider(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "bin")
	for _, args := range [][]string{
		{"mod", "init", "tfprovider"},
		{"get", tfProvider + "@" + tfProviderVersion},
		{"build", "-o", filepath.Join(out, "terraform-provider-openstack"), tfProvider},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Skipf("cannot build terraform-provider-openstack: go %v: %v\n%s", args, err, b)
		}
	}
	return out
}

func writeTF(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
