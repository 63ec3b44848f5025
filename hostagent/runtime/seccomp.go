package runtime

import (
	"encoding/json"
	"slices"
	"sync"

	"github.com/moby/profiles/seccomp"
)

// SeccompDenied are the syscalls Berth's profile takes out of Docker's
// default one. Docker allows ptrace, process_vm_readv and
// process_vm_writev to every container on kernels ≥ 4.8 (strace within
// the container's own PID namespace); a set is a tenant's VM, and reading
// or steering another process's memory is an escape surface (kernel ptrace
// bugs, credential theft from a sidecar) that checklist A9 wants closed.
// The others are allowed by Docker only with CAP_SYS_PTRACE, which a set
// never gets; they are listed so that the profile refuses them whatever
// capabilities change later. A denied call fails with EPERM (the
// profile's default errno).
var SeccompDenied = []string{
	"ptrace", "process_vm_readv", "process_vm_writev",
	"kcmp", "pidfd_getfd", "process_madvise",
}

// SeccompProfile returns Berth's seccomp profile as Docker's
// `--security-opt seccomp=` JSON: Docker's default profile (built by the
// moby profiles library, so it follows the Engine's own default) less
// SeccompDenied. Everything else the default allows stays allowed, so
// images that run under Docker's default run under it too; the caps-,
// arch- and kernel-conditional rules are kept for the daemon to resolve.
var SeccompProfile = sync.OnceValues(func() ([]byte, error) {
	return json.Marshal(berthSeccomp())
})

func berthSeccomp() *seccomp.Seccomp {
	p := seccomp.DefaultProfile()
	rules := p.Syscalls[:0]
	for _, r := range p.Syscalls {
		r.Names = slices.DeleteFunc(r.Names, func(n string) bool { return slices.Contains(SeccompDenied, n) })
		if slices.Contains(SeccompDenied, r.Name) {
			r.Name = ""
		}
		if len(r.Names) == 0 && r.Name == "" {
			continue // the rule allowed nothing else
		}
		rules = append(rules, r)
	}
	p.Syscalls = rules
	return p
}

// seccompOpt is the security option that applies SeccompProfile.
func seccompOpt() (string, error) {
	b, err := SeccompProfile()
	if err != nil {
		return "", err
	}
	return "seccomp=" + string(b), nil
}
