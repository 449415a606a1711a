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
//
//   - A flow keeps its backend (an LRU flow table keyed by the 5-tuple, or
//     by client, VIP, protocol and service port for client-sticky services
//     and for fragmented datagrams) until the backend is removed or goes
//     down, or the flow idles out; new flows get the backend dsr's Maglev
//     table gives for dsr's flow hash, so both paths choose alike.
//
//   - ICMP errors about a flow go to the flow's backend.
//
//   - Frames not forwarded are dropped (XDP_DROP) and counted by dsr's drop
//     reasons: malformed headers, no service, no backend, backend MAC not
//     resolved yet, ...; non-first fragments go where the datagram's
//     client-keyed flow goes.
//
//   - SYNs to tarpit addresses get tarpit.Reply's zero-window SYN+ACK,
//     built in place. The program knows the tarpit by dsr.Tarpit.Prefixes
//     alone (Match is Go): it is exact when the tarpit ACL's prefixes are
//     its permit rules and it has no deny rules.
//
// Where it differs from dsr: one flow table for all CPUs (dsr has one per
// worker), bounded by Config.FlowTableSize and evicting the least recently
// used flow; backend MACs are looked up again within 100 ms of a change of
// dsr.Neighbors.Version (Run polls it), not per frame; the counters that
// concern AF_PACKET (PartialChecksums, SuperFrames, ReadErrors) stay zero;
// frames it does not forward are dropped, where dsr's sockets only took a
// copy. New attaches the program, but it passes every frame until Run
// starts, as dsr forwards nothing before Run.
//
// The configuration lives in two generations in the maps: Update and
// Refresh write the one the program does not read and then switch it over
// with one write, so a reload is never seen half done. Counters are
// per-CPU; Stats sums them into dsr.Stats.
package xdp
