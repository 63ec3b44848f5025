package cli

import (
	"fmt"
	"strings"
	"testing"
)

// TestGolden runs list and show commands against the API test double and
// compares stdout, stderr and the exit code with testdata/golden.
func TestGolden(t *testing.T) {
	cases := []struct {
		name string
		args string
	}{
		{"server_list", "server list"},
		{"server_list_json", "server list -f json"},
		{"server_list_yaml", "server list -f yaml"},
		{"server_list_value", "server list -f value"},
		{"server_list_columns", "server list -c Name -c status -f value"},
		{"server_list_long", "server list --long"},
		{"server_show", "server show web1"},
		{"server_show_json", "server show web1 -f json"},
		{"server_show_yaml", "server show web1 -f yaml"},
		{"server_show_value", "server show web1 -f value -c status -c addresses"},
		{"server_show_error_fault", "server show api1"},
		{"server_show_missing", "server show nope"},
		{"server_show_missing_id", "server show 00000000-0000-4000-8000-000000000000"},
		{"image_list", "image list"},
		{"image_list_long_json", "image list --long -f json"},
		{"image_show", "image show demo"},
		{"image_show_json", "image show web-v2 -f json"},
		{"image_layers", "image layers web-v2"},
		{"image_layers_json", "image layers demo -f json"},
		{"image_tree", "image tree"},
		{"image_show_missing", "image show 00000000-0000-4000-8000-000000000000"},
		{"flavor_list", "flavor list"},
		{"flavor_list_yaml", "flavor list -f yaml"},
		{"flavor_show", "flavor show m1.tiny"},
		{"network_list", "network list"},
		{"network_show_json", "network show private -f json"},
		{"host_list", "host list"},
		{"host_list_json", "host list -f json"},
		{"host_show", "host show node-1"},
		{"host_show_value", "host show node-2 -f value -c state -c heartbeat_age_seconds"},
		{"set_list", "set list"},
		{"set_show", "set show web"},
		{"set_show_json", "set show web -f json"},
		{"keypair_list", "keypair list"},
		{"usage_bad_format", "server list -f xml"},
		{"usage_bad_column", "server list -c Nope"},
		{"usage_unknown_flag", "server list --bogus"},
		{"usage_missing_arg", "server show"},
		{"usage_unknown_command", "server frobnicate web1"},
	}
	f := newFakeCloud(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := f.run(strings.Fields(tc.args)...)
			got := fmt.Sprintf("$ berth %s\nexit: %d\n--- stdout\n%s--- stderr\n%s", tc.args, code, stdout, stderr)
			checkGolden(t, tc.name, got)
		})
	}
}
