// Command kmesctl emits, reads and inspects KMES events: run
// 'kmesctl --help'.
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() {
	err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(exitCode(err))
}

// exitCode is 2 for a command line kmesctl cannot run, 1 for a command
// that failed.
func exitCode(err error) int {
	var uerr *usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &uerr):
		return 2
	}
	return 1
}
