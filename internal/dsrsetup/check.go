package dsrsetup

import (
	"fmt"
	"io"
)

// checkMain is `setup check` (placeholder).
func checkMain(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "setup check: not written yet")
	return ExitUsage
}
