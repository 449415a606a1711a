// Package proxyproto encodes and decodes PROXY protocol headers, versions 1
// (text) and 2 (binary), as specified by HAProxy's proxy-protocol.txt. A
// proxy that opens a backend connection sends one header first, so that the
// backend learns the client's address and port without parsing the
// application protocol.
//
// The Append functions never fail: an address pair they cannot express is
// sent as "PROXY UNKNOWN" (v1) or as the UNSPEC family (v2), which tells
// the receiver to use the connection's own addresses. An IPv4-mapped IPv6
// address counts as IPv4; a pair of one IPv4 and one IPv6 address is sent as
// IPv6, the IPv4 one mapped.
//
// Parse reads either version, strictly. It is used by tests and fuzzing, and
// suits a receiver that only accepts headers from trusted proxies.
//
// The package is pure: it reads and writes byte slices, never sockets.
package proxyproto
