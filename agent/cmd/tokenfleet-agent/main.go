// Command tokenfleet-agent is the tokenfleet workstation agent.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/tokenfleet/tokenfleet/agent/cli"
)

func main() {
	// The first SIGINT or SIGTERM ends the context: the one shutdown path (the Windows
	// service manager's stop ends it too). A second one ends the process at once, however
	// soon it comes.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-sigs
		cancel()
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "tokenfleet-agent: second signal (%v): exiting without finishing the shutdown\n", sig)
		code := 1
		if s, ok := sig.(syscall.Signal); ok {
			code = 128 + int(s) // as the shell reports a process the signal killed
		}
		os.Exit(code)
	}()
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}
