// Package dsrsetup is the logic of the setup command: the scripts that make
// a backend ready for Direct Server Return (setup script) and the check that
// finds what is wrong with one (setup check, built on internal/dsrcheck).
package dsrsetup

import (
	"fmt"
	"io"
)

// Exit statuses of Main.
const (
	ExitOK     = 0 // done; for check: every backend is ready
	ExitFailed = 1 // check: a backend is not ready (or the check could not run)
	ExitUsage  = 2 // bad command line
)

const usage = `usage:
  ` + scriptSynopsis + `
      print the POSIX sh script that prepares a backend for DSR (or undoes it)
  ` + checkSynopsis + `
      check DSR backends from this host's interface IFACE on their segment:
      one line per backend, exit status 1 when any is not ready
`

// Main runs setup with args (without the program name) and returns the exit
// status.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitUsage
	}
	switch args[0] {
	case "script":
		return scriptMain(args[1:], stdout, stderr)
	case "check":
		return checkMain(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return ExitOK
	}
	fmt.Fprintf(stderr, "setup: unknown command %q\n%s", args[0], usage)
	return ExitUsage
}
