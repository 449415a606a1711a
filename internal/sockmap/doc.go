// Package sockmap is an experiment, not used by lbd: relaying a proxied
// plain TCP connection in the kernel with a sockmap and an sk_skb verdict
// program, once both sides are connected.
//
// # How it works
//
// bpf/relay.c is a verdict-only program (BPF_SK_SKB_VERDICT, Linux 5.13 or
// later; no stream parser, which the target kernels lack, and no BTF from
// the kernel) attached to a SOCKHASH keyed by socket cookie: a pair is two
// entries, cookie(a) → b and cookie(b) → a, and every segment arriving on
// one is redirected to the other's send queue (bpf_sk_redirect_hash without
// BPF_F_INGRESS). New loads the program (failing with ErrUnsupported where
// the kernel cannot: the caller relays in userspace), Relay.Add adds a
// pair, Pair.Kick hands the kernel what arrived before Add, Pair.Moved and
// Count give the byte counts.
//
// # What the kernel does (Linux 6.18, loopback; see the tests)
//
//   - Data: the proxy's sockets never report EPOLLIN and their receive
//     queues stay empty; the bytes go through without userspace reading
//     them. The redirect itself is asynchronous: the segment is queued on
//     the peer's psock and a workqueue (a kworker) writes it to the peer's
//     send queue, so that work is neither in the proxy's CPU time nor in
//     softirq.
//   - Bytes already in a receive queue when the pair is added stay there,
//     invisible to SIOCINQ, until the next segment arrives; setting
//     SO_RCVLOWAT (Pair.Kick) runs the socket's data-ready callback and
//     the kernel relays them, in order, without a userspace read.
//   - A socket whose peer has sent its FIN (CLOSE_WAIT) cannot be added:
//     the update fails with EOPNOTSUPP (established sockets only).
//   - FIN: TCP takes it into the socket's state as usual: EPOLLRDHUP (with
//     EPOLLIN) is reported while the socket is in the map, and read returns
//     0. The FIN is not forwarded: the empty segment that carries it goes
//     to the program like any other. Redirected, it made the peer's
//     workqueue treat a zero-byte send as a broken pipe: EPIPE on the peer
//     (EPOLLERR) and its transmission stopped for good, so the program drops
//     empty segments. Userspace forwards the FIN with shutdown(2), but only
//     once the peer's send queue has taken every byte received (Pair.Moved):
//     a shutdown before that loses what the workqueue still holds. There is
//     no event for that moment; the check has to be polled.
//   - Reset: EPOLLERR|EPOLLHUP with SO_ERROR ECONNRESET, as without the map.
//   - Counting: the program keeps no counters (that would cost a map update
//     per segment); TCP_INFO still counts everything. tcpi_bytes_received
//     is every byte received (the peer's FIN counts one); the bytes queued
//     for sending are tcpi_bytes_sent - tcpi_bytes_retrans +
//     tcpi_notsent_bytes (tcpi_bytes_acked would count a connecting
//     socket's SYN and any FIN sent).
//   - No flow control (TestSlowReader): while the client reads nothing, the
//     backend side keeps receiving at full speed. The client side's send
//     queue fills to its send buffer and everything beyond piles up in the
//     psock's queue, without bound: 29 MB of a 32 MB response in the test,
//     where a userspace relay holds the backend back once the socket
//     buffers are full. Worse, through lbd's engine with a slow client
//     (internal/proxy's TestSlowClientDoesNotBlockOthers with the relay
//     on) the workqueue sometimes stopped sending for good with data left
//     in that queue and no error on either socket, and other relayed
//     connections on the machine stalled with it.
//
// # Measurements and verdict
//
// TestCompare (NIB_SOCKMAP_BENCH=2) compares lbd's engine with a minimal
// sockmap proxy, whole-machine CPU per request (/proc/stat, kworkers and
// softirq included, client and backend too), interleaved three times; and
// lbd itself carried the relay behind NIB_SOCKMAP=1 (commit 7eeca8c:
// connections handed over after 64 KiB, so that short ones do not pay for
// the map updates) for make bench-proxy, measured the same way. The relay
// was cheaper for kept-alive small requests (21-26% of the machine's
// time per request) and for 1 MB objects (37-46%); it is no help to
// a connection per request: handing each over at connect cost 12% more
// than the engine, and with the 64 KiB threshold they stay in the engine.
// make bench-proxy's own figure (lbd's CPU only) is no measure of it: the
// relaying moves to kworkers, which it does not count.
//
// It was left out of lbd: not cheaper on all three loads, and above all not
// safe in front of real clients, for the lack of flow control and the
// stalls above. The proxy's splice engine stays the TCP data path.
package sockmap
