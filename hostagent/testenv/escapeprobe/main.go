// Command escapeprobe is a test helper copied into a set container: it
// tries what a tenant must not be able to do (A9) and prints one
// "name=result" line per attempt, where result is "ok" or the errno name.
// With a setuid bit it also shows whether the bit took effect ("euid=").
package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

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

func main() {
	fmt.Printf("euid=%d\n", os.Geteuid())
	_ = os.MkdirAll("/tmp/escapeprobe-mnt", 0o755)
	fmt.Printf("mount=%s\n", result(unix.Mount("none", "/tmp/escapeprobe-mnt", "tmpfs", 0, "")))
	fmt.Printf("unshare_mnt=%s\n", result(unix.Unshare(unix.CLONE_NEWNS)))
	fmt.Printf("unshare_user=%s\n", result(unix.Unshare(unix.CLONE_NEWUSER)))
	_, err := unix.KeyctlJoinSessionKeyring("escapeprobe")
	fmt.Printf("keyctl=%s\n", result(err))
	if len(os.Args) > 1 { // ptrace a process of another set or of the host
		pid, _ := strconv.Atoi(os.Args[1])
		fmt.Printf("ptrace=%s\n", result(unix.PtraceAttach(pid)))
	}
}
