// Command setup will write the scripts that DSR backends need (VIP on
// loopback, ARP suppression) and check them. DSR arrives with a later issue;
// until then it only says so.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "setup: DSR backend preparation is not available yet (it arrives with DSR support)")
	os.Exit(2)
}
