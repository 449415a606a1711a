// Command lbd is the nib load balancer daemon. It takes a TOML config or
// Pen's own command line; see lbd -help.
package main

import (
	"os"

	"github.com/nib-lb/nib/internal/lbd"
)

func main() {
	os.Exit(lbd.Main(os.Args[1:], os.Stdout, os.Stderr))
}
