// Package dsrpath names lbd's DSR data paths (lbd -dsr-path, LBD_DSR_PATH),
// for lbd and the tools that start it.
package dsrpath

import "fmt"

// The DSR data paths.
const (
	Auto       = "auto"        // XDP, else AF_PACKET with the reason logged (the default)
	XDP        = "xdp"         // internal/xdp: an XDP program; an error if it cannot attach
	XDPGeneric = "xdp-generic" // XDP in generic mode only: the Pis' hook; around a misbehaving native driver
	Packet     = "packet"      // internal/dsr: AF_PACKET, in lbd
)

// Check checks a data path's name.
func Check(p string) error {
	switch p {
	case Auto, XDP, XDPGeneric, Packet:
		return nil
	}
	return fmt.Errorf("%q: want %s, %s, %s or %s", p, Auto, XDP, XDPGeneric, Packet)
}
