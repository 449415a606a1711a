// Package dsrcheck checks DSR backends from a host on their Ethernet
// segment: whether a backend answers ARP for the VIP (an ARP leak), holds
// the VIP and listens on the service's port, and answers ARP for its own
// address at all. setup check and lbd's control API use it, and so do the
// active health checks' VIP probe.
package dsrcheck
