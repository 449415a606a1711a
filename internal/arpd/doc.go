// Package arpd answers ARP for lbd's VIPs and tarpit addresses and resolves backend MAC addresses.
//
// It runs on the LB's own interface, which also carries the LB's management
// address; the kernel keeps answering for that address, arpd never does.
//
// The rules (pure, in core.go, table-tested without sockets):
//
//   - A request is answered, with our MAC, only if its target is a VIP or a
//     tarpit address that we have claimed. Nothing else is ever answered.
//   - An address is claimed only after a probe (an RFC 5227 style request
//     with sender address 0.0.0.0) drew no answer within the probe window.
//     An address that another MAC uses is never claimed. VIPs are probed
//     when configured; tarpit addresses lazily, on the first request for
//     them (that request gets no answer). Claimed tarpit addresses are kept
//     in a bounded LRU set.
//   - Any ARP packet whose sender address is X and whose sender MAC is not
//     ours marks X as in use by that MAC (bounded table, entries expire).
//     For a claimed tarpit address that ends the claim; for a claimed VIP
//     it is a conflict: counted, logged with the other MAC, defended with a
//     gratuitous ARP at most every 10 s.
//   - Backend MACs are learned only from replies to requests we sent within
//     the reply window (op 2, sender address = the backend we asked about,
//     target = our IP and MAC). Unsolicited and gratuitous replies are
//     ignored (Pen learns from any reply, which makes spoofing trivial); a
//     packet that shows a backend at a different MAC only makes us ask again
//     sooner.
//   - The answer is kept consistent: the first MAC that answers an
//     unresolved backend is taken; after that, a reply from another MAC
//     (two hosts answering for one address: a duplicate or a spoofer) does
//     not replace it while it keeps answering. Such a reply is counted and
//     logged (rate-limited) as a conflict, and taken only when our request's
//     window closes without an answer from the MAC we have: that is how a
//     replaced backend is learned, through the answer to that request or to
//     the periodic refresh. The published MAC never flips between two
//     answering hosts.
//
// The interface may change under a running Daemon: SetIP (a new DHCP lease:
// requests go from the new address, backends are asked again at once),
// SetMAC (VIPs announced again at the new MAC) and LinkUp (the link came
// back: VIPs announced again, backends asked at once). lbd calls them from
// its netlink watch of the interface.
//
// ARP packets are marshalled and parsed with github.com/mdlayher/arp's
// Packet (the design card's choice: a maintained codec shared with the
// field), behind arpd's own socket (an AF_PACKET socket, or any
// net.PacketConn carrying whole frames, see NewConn); arpd writes and
// checks the Ethernet header itself and applies its own validity rules.
//
// Lookup, Down and Version are lock-free (an atomic pointer to an immutable
// snapshot) and allocation-free, for the DSR forwarder's data path.
package arpd
