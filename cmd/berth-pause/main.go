// Command berth-pause is the process of a set's infra container. It holds
// the set's namespaces open and does nothing else: it blocks until SIGTERM
// or SIGINT (then exits 0) and reaps any zombie re-parented to it.
//
// Build it static: CGO_ENABLED=0 go build -ldflags "-s -w" ./cmd/berth-pause
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap collects every exited child without blocking.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
