// Command errorsgen writes protocol/errors_codes.go from protocol/errors.json:
// go generate ./protocol.
package main

import (
	"fmt"
	"os"

	"github.com/tokenfleet/tokenfleet/protocol/internal/errorsgen"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: errorsgen errors.json errors_codes.go")
		os.Exit(2)
	}
	in, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := errorsgen.Generate(in)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.WriteFile(os.Args[2], out, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
