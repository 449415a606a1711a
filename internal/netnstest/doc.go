// Package netnstest builds network-namespace topologies for lbd's root tests.
//
// It is test support: only _test.go files may import it. Everything it
// creates lives in network namespaces of its own (the host's root namespace is
// never changed) and is removed in t.Cleanup, also when setup fails halfway.
//
// A test starts with SkipUnprivileged (a skip without root and network
// namespaces; under CI, CI=true, a failure: see package needs), then builds a
// Topology:
//
//	netnstest.SkipUnprivileged(t)
//	topo := netnstest.New(t, netnstest.Options{})
//	be1 := topo.Host("be1")
//	netnstest.ServeHTTP(t, be1, ":80", handler)
//	resp, err := topo.Host("client").HTTPClient(t).Get("http://198.51.100.21/")
//
// Address plan (TEST-NET-1, one /24, one Ethernet segment):
//
//	client  198.51.100.10   eth0, MAC 02:00:c6:33:64:0a
//	lb      198.51.100.2    eth0, MAC 02:00:c6:33:64:02 (the VIP is NOT configured here)
//	be1     198.51.100.21   eth0, MAC 02:00:c6:33:64:15, VIP 198.51.100.100/32 on lo
//	be2     198.51.100.22   eth0, MAC 02:00:c6:33:64:16, VIP 198.51.100.100/32 on lo
//	beN     198.51.100.(20+N)
//	VIP     198.51.100.100
//
// Each host is a namespace named "<prefix>-<host>" (prefix "nib" and six hex
// digits, random per topology) with lo up and a veth "eth0" whose peer is a
// port of the bridge "br0" in the namespace "<prefix>-sw". IPv6 is disabled in
// every namespace so that only the test's own frames cross the bridge.
//
// Traffic must only ever go to addresses inside these namespaces. The range
// is 198.51.100.0/24 (TEST-NET-2) because build machines have been seen using
// 192.0.2.0/24 (TEST-NET-1) for their real network; still, a command or
// socket that is not placed in a topology namespace never reaches the
// topology, and must not be used to send test traffic.
package netnstest
