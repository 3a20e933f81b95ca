// Command tokenfleetctl is the command line of the tokenfleet coordinator.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/tokenfleet/tokenfleet/coordinator/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := ctl.Main(ctx, os.Args[1:], ctl.Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv})
	stop()
	os.Exit(code)
}
