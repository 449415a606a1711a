// Package dsr is lbd's Direct Server Return forwarder: it takes frames for
// the VIPs off the interface with AF_PACKET, picks a backend (flow table,
// then weighted Maglev), rewrites the destination MAC and sends the frame
// on, untouched above layer 2, so replies go straight from the backends to
// the clients.
package dsr
