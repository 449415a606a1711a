// Command penctl sends one command to lbd's (or Pen's) plain-text control
// listener and prints the reply: penctl ADDR|/path COMMAND [ARGS...].
// The authenticated network control client replaces it in a later version.
package main

import (
	"fmt"
	"os"

	"github.com/nib-lb/nib/internal/pen"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: penctl host:port|/path/to/socket command [args...]")
		os.Exit(2)
	}
	if err := pen.Send(os.Args[1], os.Args[2:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "penctl: %v\n", err)
		os.Exit(1)
	}
}
