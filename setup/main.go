// Command setup prepares and checks DSR backends: `setup script` prints the
// shell script a backend runs to hold the VIP on its loopback without
// answering ARP for it, and `setup check` finds what is wrong with a
// backend from the load balancer's segment. The logic is in
// internal/dsrsetup and internal/dsrcheck.
package main

import (
	"os"

	"github.com/nib-lb/nib/internal/dsrsetup"
)

func main() {
	os.Exit(dsrsetup.Main(os.Args[1:], os.Stdout, os.Stderr))
}
