// Package xdp is lbd's Direct Server Return forwarder as an XDP program:
// the per-frame work of package dsr (flow table, weighted Maglev over the
// same flow hash, MAC rewrite, the tarpit's SYN+ACKs) done in the kernel,
// before the stack, with a loader whose Forwarder has dsr.Forwarder's
// methods, so lbd can run either.
//
// The program (bpf/dsr.c, compiled with bpf2go into dsr_bpfel.o and
// dsr_bpfeb.o; see gen.go) needs no BTF from the kernel: only XDP
// (CONFIG_BPF_SYSCALL; JIT recommended) and the map types Supported checks.
// It is attached natively where the driver supports XDP, else in generic
// mode.
//
// What it promises, as dsr does:
//
//   - Frames it owns are IPv4, untagged or with one 802.1Q or 802.1ad tag,
//     to a VIP of a service (or a tarpit prefix) and addressed to the
//     interface's MAC. Everything else (ARP, IPv6, the LB's own traffic)
//     passes to the stack untouched; frames to a VIP for another MAC pass
//     too, counted as "not-for-us".
//   - A flow keeps its backend (an LRU flow table keyed by the 5-tuple, or
//     by client, VIP, protocol and service port for client-sticky services
//     and for fragmented datagrams) until the backend is removed or goes
//     down, or the flow idles out; new flows get the backend dsr's Maglev
//     table gives for dsr's flow hash, so both paths choose alike.
//   - ICMP errors about a flow go to the flow's backend.
//   - Frames not forwarded are dropped (XDP_DROP) and counted by dsr's drop
//     reasons: malformed headers, no service, no backend, backend MAC not
//     resolved yet, ...; non-first fragments go where the datagram's
//     client-keyed flow goes.
//
// The configuration lives in two generations in the maps: Update and
// Refresh write the one the program does not read and then switch it over
// with one write, so a reload is never seen half done. Counters are
// per-CPU; Stats sums them into dsr.Stats.
package xdp
