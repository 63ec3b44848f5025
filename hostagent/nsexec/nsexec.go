// Package nsexec runs a function inside another network namespace.
//
// Namespaces belong to OS threads, not goroutines: fn runs on a thread of
// its own, locked and switched into the namespace, then switched back. A
// thread that cannot be switched back is never unlocked, so it dies with
// its goroutine instead of being reused by the Go scheduler in the wrong
// namespace. (A thread must not die locked while it is the parent of a
// process started with Pdeathsig — such processes would die with it — so
// fn should not start long-lived children.)
package nsexec

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn inside ns. Sockets fn opens stay in that namespace.
func Do(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// DoPid runs fn inside the network namespace of process pid.
func DoPid(pid int, fn func() error) error {
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return fmt.Errorf("open netns of pid %d: %w", pid, err)
	}
	defer ns.Close()
	return Do(ns, fn)
}
