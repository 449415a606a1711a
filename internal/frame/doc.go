// Package frame parses, builds, rewrites and checksums Ethernet frames (ARP, IPv4, IPv6, TCP, UDP, ICMP) without allocating.
package frame
