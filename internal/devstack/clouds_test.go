package devstack

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMergeClouds(t *testing.T) {
	entries := map[string]string{
		CloudAdmin: "  berth-admin:\n    auth:\n      username: admin\n",
		CloudDemo:  "  berth-demo:\n    auth:\n      username: demo\n",
	}
	ours := "  berth-admin:\n    auth:\n      username: admin\n  berth-demo:\n    auth:\n      username: demo\n"
	tests := []struct {
		name, doc, want string
	}{
		{
			name: "empty file",
			doc:  "",
			want: "clouds:\n" + ours,
		},
		{
			name: "other clouds are kept",
			doc:  "clouds:\n  prod:\n    auth:\n      username: me\n",
			want: "clouds:\n" + ours + "  prod:\n    auth:\n      username: me\n",
		},
		{
			name: "our old entries are replaced",
			doc:  "clouds:\n  berth-demo:\n    auth:\n      username: old\n  prod:\n    region_name: X\n  berth-admin:\n    auth:\n      username: old\n",
			want: "clouds:\n" + ours + "  prod:\n    region_name: X\n",
		},
		{
			name: "comments, other keys and a missing final newline",
			doc:  "# mine\nclouds: # all of them\n  # the real one\n  prod:\n    auth: {}\ncache:\n  expiration_time: 10",
			want: "# mine\nclouds: # all of them\n" + ours + "  # the real one\n  prod:\n    auth: {}\ncache:\n  expiration_time: 10\n",
		},
		{
			name: "no clouds key",
			doc:  "cache:\n  expiration_time: 10\n",
			want: "cache:\n  expiration_time: 10\nclouds:\n" + ours,
		},
		{
			name: "four-space indentation",
			doc:  "clouds:\n    prod:\n        region_name: X\n",
			want: "clouds:\n" + reindent(ours, 2) + "    prod:\n        region_name: X\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := mergeClouds(tt.doc, entries)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("mergeClouds mismatch (-want +got):\n%s", diff)
			}
			// Merging again changes nothing.
			again, err := mergeClouds(got, entries)
			if err != nil {
				t.Fatal(err)
			}
			if again != got {
				t.Errorf("second merge changed the file:\n%s", again)
			}
		})
	}
}

func TestMergeCloudsRefusesFlowStyle(t *testing.T) {
	if _, err := mergeClouds("clouds: {prod: {}}\n", map[string]string{CloudDemo: "  berth-demo: {}\n"}); err == nil {
		t.Fatal("merging into a flow mapping succeeded, want an error")
	}
}

func TestCloudEntriesAreYAMLBlocks(t *testing.T) {
	s := &Stack{cfg: Config{KeystonePort: 5000}, secrets: &secrets{Passwords: map[string]string{UserAdmin: "pw-a", UserDemo: "pw-d", UserAlt: "pw-x", UserDemoReader: "pw-r"}}}
	entries := s.cloudEntries()
	for _, name := range CloudNames() {
		e, ok := entries[name]
		if !ok {
			t.Fatalf("no entry for %s", name)
		}
		if !strings.HasPrefix(e, "  "+name+":\n") {
			t.Errorf("entry %s starts %q, want %q", name, e[:20], "  "+name+":")
		}
		for _, want := range []string{"auth_url: http://127.0.0.1:5000/v3", "region_name: RegionOne", "identity_api_version: 3", "interface: public"} {
			if !strings.Contains(e, want) {
				t.Errorf("entry %s lacks %q", name, want)
			}
		}
	}
	if !strings.Contains(entries[CloudDemoReader], "username: demo-reader") || !strings.Contains(entries[CloudDemoReader], "project_name: demo") {
		t.Errorf("demo-reader entry = %s, want user demo-reader on project demo", entries[CloudDemoReader])
	}
}
