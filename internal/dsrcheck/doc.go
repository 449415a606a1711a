// Package dsrcheck checks DSR backends from a host on their Ethernet
// segment: whether a backend answers ARP for the VIP (an ARP leak), holds
// the VIP and listens on the service's port, and answers ARP for its own
// address at all. setup check and lbd's control API use it, and so do the
// active health checks' VIP probe.
//
// Check runs two rounds from the interface's own IPv4 address and MAC,
// each on one AF_PACKET socket with a classic BPF filter, every backend
// probed at once (at most MaxBackends):
//
//   - ARP, lasting Options.Timeout: a who-has for each backend's address
//     (asked again at half the timeout if unanswered) and one who-has VIP.
//     A backend that never answers for its own address is Unreachable. A
//     backend whose MAC answers for the VIP, or sends ARP with the VIP as
//     its sender address, is an ARPLeak: it draws the VIP's traffic away
//     from the load balancer, the most damaging fault, which dominates the
//     others. Other MACs claiming the VIP are listed in Report.Others as a
//     warning (the load balancer is one when the check runs elsewhere).
//     Frames from our own MAC are ignored: when the check runs on the load
//     balancer, lbd's ARP responder answers for the VIP with it.
//   - SYN, when Options.Port is set, to each reachable backend that does
//     not leak: a SYN for VIP:Port sent to the backend's MAC, from a random
//     high port, until it is answered or the timeout ends (sent again at
//     half of it). A SYN+ACK from the backend's MAC is OK (we reset the
//     half-open connection; our kernel, which has no socket for it, also
//     sends a RST), a RST is NotListening (the VIP is bound, nothing
//     listens on the port), no answer is VIPNotBound.
//
// ProbeVIP is the SYN probe alone, for one backend, as the active health
// checks use it.
//
// The pure parts are separate from the loops that own the sockets, and
// tested without them: the frames (frames.go: ARP with
// github.com/mdlayher/arp, the SYN and RST with internal/frame), the BPF
// filters (filter.go) and the rules and verdicts (observe.go). Every socket
// is opened in the calling goroutine, so Check and ProbeVIP may run on a
// thread switched into another network namespace. They need CAP_NET_RAW.
package dsrcheck
