// Command tokenfleet-fleetsim runs simulated tokenfleet agents against a real coordinator
// and broker to size a deployment: see `tokenfleet-fleetsim --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/tokenfleet/tokenfleet/fleetsim/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
