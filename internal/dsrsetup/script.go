package dsrsetup

import (
	"fmt"
	"io"
)

// scriptMain is `setup script` (placeholder).
func scriptMain(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "setup script: not written yet")
	return ExitUsage
}
