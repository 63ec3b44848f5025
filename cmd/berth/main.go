// Command berth is the Berth CLI: images, servers, sets, networks, hosts,
// flavors and keypairs of a Berth cloud. See docs/cli.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"berth/client/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.Env{})
	stop()
	os.Exit(code)
}
