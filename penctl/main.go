// Command penctl drives lbd's authenticated HTTPS control API
// (penctl [-s HOST[:PORT]] ... VERB [ARGS...]) and, in Pen's positional
// form (penctl HOST:PORT|/path COMMAND [ARGS...]), lbd's or Pen's plain-text
// control listener. The logic, flags and exit statuses are in
// internal/penctl.
package main

import (
	"os"

	"github.com/nib-lb/nib/internal/penctl"
)

func main() {
	os.Exit(penctl.Main(os.Args[1:], os.Stdout, os.Stderr))
}
