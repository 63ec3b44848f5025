package runtime_test

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/moby/profiles/seccomp"
	"golang.org/x/sys/unix"

	"berth/hostagent/runtime"
)

// allowed lists the syscalls a profile allows under some condition, with
// the rule's conditions as a key so that a moved or rewritten rule shows.
func allowed(p *seccomp.Seccomp) map[string][]string {
	out := map[string][]string{}
	for _, r := range p.Syscalls {
		if r.Action != "SCMP_ACT_ALLOW" {
			continue
		}
		cond, _ := json.Marshal([]any{r.Includes, r.Excludes, r.Args})
		for _, n := range append(slices.Clone(r.Names), r.Name) {
			if n != "" {
				out[n] = append(out[n], string(cond))
			}
		}
	}
	return out
}

// TestSeccompProfile checks that Berth's profile is Docker's default less
// exactly the ptrace family: nothing else a normal image needs is lost,
// and a denied call gets EPERM.
func TestSeccompProfile(t *testing.T) {
	b, err := runtime.SeccompProfile()
	if err != nil {
		t.Fatal(err)
	}
	var got seccomp.Seccomp
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("profile is not a Docker seccomp profile: %v", err)
	}
	if got.DefaultAction != "SCMP_ACT_ERRNO" || got.DefaultErrnoRet == nil || *got.DefaultErrnoRet != uint(unix.EPERM) {
		t.Errorf("default action %s errno %v, want SCMP_ACT_ERRNO with EPERM", got.DefaultAction, got.DefaultErrnoRet)
	}
	ours, docker := allowed(&got), allowed(seccomp.DefaultProfile())
	for _, n := range runtime.SeccompDenied {
		if conds, ok := ours[n]; ok {
			t.Errorf("%s still allowed (%v)", n, conds)
		}
	}
	for n, conds := range docker {
		if slices.Contains(runtime.SeccompDenied, n) {
			continue
		}
		if !slices.Equal(ours[n], conds) {
			t.Errorf("%s: allowed under %v, Docker's default under %v", n, ours[n], conds)
		}
	}
	for n := range ours {
		if _, ok := docker[n]; !ok {
			t.Errorf("%s allowed but not by Docker's default", n)
		}
	}
	if len(ours) < 300 {
		t.Errorf("only %d syscalls allowed: not Docker's default profile", len(ours))
	}
}
