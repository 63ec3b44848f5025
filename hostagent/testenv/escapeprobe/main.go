// Command escapeprobe is a test helper copied into a set container: it
// tries what a tenant must not be able to do (A9) and prints one
// "name=result" line per attempt, where result is "ok" or the errno name.
// With a setuid bit it also shows whether the bit took effect ("euid=").
//
//	escapeprobe [PID]            PID: a process of another set or of the host
//	escapeprobe sleep            (internal) the child that ptrace is tried on
//	escapeprobe alloc MIB SECS   touch MIB MiB of memory, print "alloc=MIB",
//	                             hold it SECS seconds (memory limit tests)
package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func result(err error) string {
	if err == nil {
		return "ok"
	}
	if errno, ok := err.(syscall.Errno); ok {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

func errnoOf(_, _ uintptr, e syscall.Errno) error {
	if e != 0 {
		return e
	}
	return nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sleep" {
		time.Sleep(time.Minute)
		return
	}
	if len(os.Args) > 3 && os.Args[1] == "alloc" {
		alloc(os.Args[2], os.Args[3])
		return
	}
	fmt.Printf("euid=%d\n", os.Geteuid())
	_ = os.MkdirAll("/tmp/escapeprobe-mnt", 0o755)
	fmt.Printf("mount=%s\n", result(unix.Mount("none", "/tmp/escapeprobe-mnt", "tmpfs", 0, "")))
	fmt.Printf("unshare_mnt=%s\n", result(unix.Unshare(unix.CLONE_NEWNS)))
	fmt.Printf("unshare_user=%s\n", result(unix.Unshare(unix.CLONE_NEWUSER)))
	_, err := unix.KeyctlJoinSessionKeyring("escapeprobe")
	fmt.Printf("keyctl=%s\n", result(err))
	if os.Geteuid() != 0 {
		fmt.Printf("setuid0=%s\n", result(errnoOf(unix.RawSyscall(unix.SYS_SETUID, 0, 0, 0))))
	}
	fmt.Printf("mknod=%s\n", result(unix.Mknod("/tmp/escapeprobe-null", unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3)))))
	_ = os.Remove("/tmp/escapeprobe-null")
	fmt.Printf("bpf=%s\n", result(errnoOf(unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_CREATE, 0, 0))))
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_ICMP)
	fmt.Printf("raw_socket=%s\n", result(err))
	if err == nil {
		unix.Close(fd)
	}
	ownNamespace()
	if len(os.Args) > 1 { // a process of another set or of the host
		pid, _ := strconv.Atoi(os.Args[1])
		fmt.Printf("ptrace=%s\n", result(unix.PtraceAttach(pid)))
		fmt.Printf("kill_other=%s\n", result(unix.Kill(pid, 0)))
	}
}

// ownNamespace tries ptrace and process_vm_readv on a child of its own,
// in the set's own PID namespace and with the same uid: only the seccomp
// profile stands in the way there. A fork/exec that works shows the
// profile still lets normal programs run.
func ownNamespace() {
	self, err := os.Executable()
	if err != nil {
		fmt.Printf("fork_exec=%s\n", result(err))
		return
	}
	child := exec.Command(self, "sleep")
	if err := child.Start(); err != nil {
		fmt.Printf("fork_exec=%s\n", result(err))
		return
	}
	defer func() { _ = child.Process.Kill(); _ = child.Wait() }()
	fmt.Println("fork_exec=ok")
	pid := child.Process.Pid
	err = unix.PtraceAttach(pid)
	fmt.Printf("ptrace_own=%s\n", result(err))
	if err == nil {
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, 0, nil)
		_ = unix.PtraceDetach(pid)
	}
	var buf [8]byte
	local := []unix.Iovec{{Base: &buf[0], Len: uint64(len(buf))}}
	remote := []unix.RemoteIovec{{Base: uintptr(unsafe.Pointer(&buf[0])), Len: len(buf)}}
	_, err = unix.ProcessVMReadv(pid, local, remote, 0)
	fmt.Printf("process_vm_readv=%s\n", result(err))
}

// alloc touches every page of mib MiB (so it is resident and charged to
// the memory cgroup), says so and holds it.
func alloc(mib, secs string) {
	n, _ := strconv.Atoi(mib)
	hold, _ := strconv.Atoi(secs)
	b := make([]byte, n<<20)
	for i := 0; i < len(b); i += 4096 {
		b[i] = 1
	}
	fmt.Printf("alloc=%d\n", n)
	time.Sleep(time.Duration(hold) * time.Second)
	b[len(b)-1] = 2 // keep b live until here
}
