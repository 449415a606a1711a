// The sockmap relay's verdict program (see ../doc.go): every segment that
// arrives on a socket in the peers map is put on its peer's send queue.
//
// peers is a SOCKHASH keyed by the socket cookie (SO_COOKIE) of the socket
// data arrives on; the value is the socket it goes to. A pair is two
// entries: cookie(a) -> b and cookie(b) -> a. Only a socket that is a value
// in the map runs this program, and it needs no stream parser
// (BPF_SK_SKB_VERDICT, Linux 5.13 or later).
//
// No BTF is needed from the kernel (no CO-RE, no vmlinux.h).

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} peers SEC(".maps");

SEC("sk_skb/verdict")
int relay(struct __sk_buff *skb)
{
	// A segment without data carries a FIN, which TCP has taken into the
	// socket's state already (EPOLLRDHUP, read returns 0): userspace
	// forwards it with shutdown(2) once the data before it is flushed.
	// Redirected, the empty buffer would make the workqueue that sends
	// to the peer see a zero-byte send as a broken pipe: EPIPE on the peer
	// (EPOLLERR) and its transmission stopped for good.
	if (skb->len == 0)
		return SK_DROP;

	__u64 cookie = bpf_get_socket_cookie(skb);

	// Egress redirect (no BPF_F_INGRESS): onto the peer's send queue. With
	// no peer in the map (a pair half inserted), the helper sets no
	// redirect and SK_PASS keeps the data on this socket for userspace to
	// read, instead of the helper's SK_DROP.
	bpf_sk_redirect_hash(skb, &peers, &cookie, 0);
	return SK_PASS;
}
