// The DSR forwarder's per-frame work as an XDP program (see doc.go): frames
// for a VIP addressed to this interface's MAC get a backend (flow table,
// then weighted Maglev over the same hash as package dsr), their MAC
// addresses rewritten and go back out with XDP_TX; SYNs to tarpit addresses
// get a zero-window SYN+ACK. Everything else passes to the stack untouched.
//
// No BTF is needed from the kernel (no CO-RE, no vmlinux.h): the target
// kernels have none.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "dsr.h"

char __license[] SEC("license") = "Dual MIT/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SERVICE_KEYS);
	__type(key, struct svc_key);
	__type(value, struct svc_val);
} services SEC(".maps");

struct maglev_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAGLEV_SIZE);
	__type(key, __u32);
	__type(value, __u32);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2 * MAX_SERVICES);
	__type(key, __u32);
	__array(values, struct maglev_table);
} maglev SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct backend);
} backends SEC(".maps");

/* max_entries is set by the loader from Config.FlowTableSize. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, struct flow_val);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 2 * MAX_TARPIT);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct tarpit_key);
	__type(value, __u32);
} tarpit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NUM_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct svc_stats);
} svc_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_BACKENDS);
	__type(key, __u32);
	__type(value, struct be_stats);
} be_stats SEC(".maps");

static __always_inline void count(__u32 i)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &i);
	if (c)
		*c += 1;
}

static __always_inline int drop(__u32 reason)
{
	count(CNT_DROPS + reason);
	return XDP_DROP;
}

/* The FNV-1a 64 step and the splitmix64 finaliser: balance.KeyHash. */
#define FNV_PRIME 0x100000001b3ULL
#define FNV_BASIS 0xcbf29ce484222325ULL

static __always_inline __u64 fnv(__u64 h, __u8 b)
{
	return (h ^ b) * FNV_PRIME;
}

/* fnv_addr hashes an IPv4 address as netip.Addr.As16 gives it:
 * ::ffff:a.b.c.d. addr is in network order. */
static __always_inline __u64 fnv_addr(__u64 h, __u32 addr)
{
	__u32 a = bpf_ntohl(addr);
#pragma unroll
	for (int i = 0; i < 10; i++)
		h *= FNV_PRIME;
	h = fnv(h, 0xff);
	h = fnv(h, 0xff);
	h = fnv(h, a >> 24);
	h = fnv(h, a >> 16);
	h = fnv(h, a >> 8);
	return fnv(h, a);
}

static __always_inline __u64 mix64(__u64 x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* hash_flow is dsr's hashFlow: KeyHash over src(16) dst(16) sport dport
 * (big-endian) proto. */
static __always_inline __u64 hash_flow(const struct flow_key *k)
{
	__u64 h = FNV_BASIS;
	h = fnv_addr(h, k->src);
	h = fnv_addr(h, k->dst);
	h = fnv(h, k->sport >> 8);
	h = fnv(h, k->sport);
	h = fnv(h, k->dport >> 8);
	h = fnv(h, k->dport);
	h = fnv(h, k->proto);
	return mix64(h);
}

static __always_inline struct svc_val *lookup_svc(__u32 vip, __u8 proto, __u16 port, __u8 gen)
{
	struct svc_key k = {.vip = vip, .port = port, .proto = proto, .kind = gen};
	struct svc_val *s = bpf_map_lookup_elem(&services, &k);
	if (s || port == 0)
		return s;
	k.port = 0;
	return bpf_map_lookup_elem(&services, &k);
}

static __always_inline struct svc_val *lookup_any(__u32 vip, __u8 proto, __u8 gen)
{
	struct svc_key k = {.vip = vip, .proto = proto, .kind = gen | KIND_ANY};
	return bpf_map_lookup_elem(&services, &k);
}

static __always_inline int tarpitted(__u32 addr, __u8 gen)
{
	struct tarpit_key k = {.prefixlen = 8 + 32, .data = {gen}};
	__builtin_memcpy(&k.data[1], &addr, 4);
	return bpf_map_lookup_elem(&tarpit, &k) != 0;
}

static __always_inline __u16 load16(const __u8 *p)
{
	return (__u16)p[0] << 8 | p[1];
}

static __always_inline void store16(__u8 *p, __u16 v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static __always_inline void store32(__u8 *p, __u32 v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static __always_inline __u16 fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return ~s;
}

/* isn is tarpit.ISN for an IPv4 flow (client src:sport -> dst:dport). */
static __always_inline __u32 isn(__u64 secret, __u32 src, __u32 dst, __u16 sport, __u16 dport)
{
	const __u64 v4 = 0xffff00000000ULL;
	__u64 h = mix64(secret ^ 0x9e3779b97f4a7c15ULL);
	h = mix64(h);
	h = mix64(h ^ (v4 | bpf_ntohl(src)));
	h = mix64(h);
	h = mix64(h ^ (v4 | bpf_ntohl(dst)));
	h = mix64(h ^ ((__u64)sport << 16) ^ dport);
	return h >> 32;
}

#define TARPIT_LEN 44 /* IPv4 header without options, TCP header with MSS */

/* tarpit_reply turns a SYN (checked by the caller) into tarpit.Reply's
 * SYN+ACK in place. l3 is the IPv4 header's offset. */
static __always_inline int tarpit_reply(struct xdp_md *ctx, const __u32 l3, __u32 ihl, const struct config *cfg)
{
	__u8 *p = (void *)(long)ctx->data;
	__u8 *end = (void *)(long)ctx->data_end;
	if (ihl > 60 || p + l3 + 20 > end)
		return drop(DROP_MALFORMED);
	__u8 *ip = p + l3;
	__u8 *tcp = ip + ihl;
	if (tcp + 20 > end)
		return drop(DROP_MALFORMED);
	__u8 flags = tcp[13] & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN);
	__u8 mac[6];
	__builtin_memcpy(mac, p + 6, 6);
	__u32 src, dst;
	__builtin_memcpy(&src, ip + 12, 4);
	__builtin_memcpy(&dst, ip + 16, 4);
	__u32 hsrc = bpf_ntohl(src);
	if (flags != TCP_SYN || mac[0] & 1 || hsrc == 0 || hsrc >> 28 == 0xe || hsrc == 0xffffffff)
		return drop(DROP_TARPITTED);
	__u16 sport = load16(tcp), dport = load16(tcp + 2);
	__u32 seq = (__u32)load16(tcp + 4) << 16 | load16(tcp + 6);
	__u32 iss = isn(cfg->secret, src, dst, sport, dport);

	int delta = (int)(l3 + TARPIT_LEN) - (int)(end - p);
	if (delta != 0 && bpf_xdp_adjust_tail(ctx, delta))
		return drop(DROP_TARPITTED);
	p = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (p + l3 + TARPIT_LEN > end)
		return drop(DROP_TARPITTED);
	__builtin_memcpy(p, mac, 6);
	__builtin_memcpy(p + 6, cfg->mac, 6);
	ip = p + l3;
	ip[0] = 0x45;
	ip[1] = 0;
	store16(ip + 2, TARPIT_LEN);
	store16(ip + 4, 0);
	store16(ip + 6, 0x4000);
	ip[8] = 64;
	ip[9] = PROTO_TCP;
	store16(ip + 10, 0);
	__builtin_memcpy(ip + 12, &dst, 4);
	__builtin_memcpy(ip + 16, &src, 4);
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < 20; i += 2)
		sum += load16(ip + i);
	store16(ip + 10, fold(sum));
	tcp = ip + 20;
	store16(tcp, dport);
	store16(tcp + 2, sport);
	store32(tcp + 4, iss);
	store32(tcp + 8, seq + 1);
	tcp[12] = 6 << 4;
	tcp[13] = TCP_SYN | TCP_ACK;
	store16(tcp + 14, 0); /* window */
	store16(tcp + 16, 0); /* checksum */
	store16(tcp + 18, 0); /* urgent */
	tcp[20] = 2;
	tcp[21] = 4;
	store16(tcp + 22, 536);
	sum = (hsrc >> 16) + (hsrc & 0xffff);
	__u32 hdst = bpf_ntohl(dst);
	sum += (hdst >> 16) + (hdst & 0xffff) + PROTO_TCP + 24;
#pragma unroll
	for (int i = 0; i < 24; i += 2)
		sum += load16(tcp + i);
	store16(tcp + 16, fold(sum));
	count(CNT_TARPIT_REPLIES);
	return XDP_TX;
}

/* svc_count adds to one of a service's counters (enum svc_counter). */
static __always_inline void svc_count(__u32 id, __u32 what, __u64 bytes)
{
	struct svc_stats *s = bpf_map_lookup_elem(&svc_stats, &id);
	if (!s)
		return;
	switch (what) {
	case SVC_PACKET:
		s->packets++;
		s->bytes += bytes;
		break;
	case SVC_NEW_FLOW:
		s->new_flows++;
		break;
	default:
		s->no_backend++;
	}
}

/* process handles an IPv4 frame whose header starts at l3 (14 untagged, 18
 * with one 802.1Q or 802.1ad tag): dsr's worker.process. */
static __always_inline int process(struct xdp_md *ctx, const __u32 l3)
{
	__u8 *p = (void *)(long)ctx->data;
	__u8 *end = (void *)(long)ctx->data_end;
	__u8 *ip = p + l3;
	if (ip + 20 > end)
		return XDP_PASS;
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || !(cfg->flags & CFG_ACTIVE))
		return XDP_PASS;
	__u8 gen = cfg->gen & 1;
	__u32 daddr;
	__builtin_memcpy(&daddr, ip + 16, 4);
	struct svc_key vk = {.vip = daddr, .kind = gen};
	if (!bpf_map_lookup_elem(&services, &vk) && !(cfg->flags & CFG_TARPIT && tarpitted(daddr, gen)))
		return XDP_PASS; /* not a VIP: the LB's own traffic */

	/* From here on the frame is one that dsr's packet filter passes. */
	count(CNT_RECEIVED);
	if (p[0] != cfg->mac[0] || p[1] != cfg->mac[1] || p[2] != cfg->mac[2] ||
	    p[3] != cfg->mac[3] || p[4] != cfg->mac[4] || p[5] != cfg->mac[5]) {
		count(CNT_DROPS + DROP_NOT_FOR_US);
		return XDP_PASS;
	}

	/* frame.Parse's checks. */
	__u32 len = end - p;
	if (ip[0] >> 4 != 4)
		return drop(DROP_MALFORMED);
	__u32 ihl = (ip[0] & 0xf) * 4;
	__u32 tot = load16(ip + 2);
	if (ihl < 20 || tot < ihl || len - l3 < tot)
		return drop(DROP_MALFORMED);
	__u8 proto = ip[9];
	__u16 ff = load16(ip + 6);
	int frag = (ff & 0x1fff) != 0;                  /* no L4 header */
	int fragmented = frag || (ff & 0x2000) != 0;    /* any fragment */
	__u32 n = tot - ihl;
	__u8 *l4 = ip + ihl;
	__u16 sport = 0, dport = 0;
	if (!frag) {
		if (proto == PROTO_TCP) {
			if (n < 20 || l4 + 20 > end)
				return drop(DROP_MALFORMED);
			__u32 doff = (l4[12] >> 4) * 4;
			if (doff < 20 || doff > n)
				return drop(DROP_MALFORMED);
		} else if (proto == PROTO_UDP) {
			if (n < 8 || l4 + 8 > end)
				return drop(DROP_MALFORMED);
			if (!fragmented && load16(l4 + 4) != n)
				return drop(DROP_MALFORMED);
		} else if (proto == PROTO_ICMP) {
			if (n < 8)
				return drop(DROP_MALFORMED);
		}
		if ((proto == PROTO_TCP || proto == PROTO_UDP) && l4 + 4 <= end) {
			sport = load16(l4);
			dport = load16(l4 + 2);
		}
	}

	if (cfg->flags & CFG_TARPIT && tarpitted(daddr, gen) && !lookup_any(daddr, proto, gen)) {
		if (proto != PROTO_TCP || frag || fragmented)
			return drop(DROP_TARPITTED);
		return tarpit_reply(ctx, l3, ihl, cfg);
	}

	struct flow_key key = {};
	struct svc_val *s;
	__u32 saddr;
	__builtin_memcpy(&saddr, ip + 12, 4);
	if (proto == PROTO_TCP || proto == PROTO_UDP) {
		s = lookup_svc(daddr, proto, dport, gen);
		if (!s && frag)
			s = lookup_any(daddr, proto, gen);
		if (!s)
			return drop(DROP_NO_SERVICE);
		key.src = saddr;
		key.proto = proto;
		if (s->per_flow && !fragmented) {
			key.dst = daddr;
			key.sport = sport;
			key.dport = dport;
		} else {
			key.dst = daddr; /* the service's VIP */
			key.dport = s->port;
		}
	} else if (proto == PROTO_ICMP) {
		/* An error about a flow (fragmentation needed above all) goes to
		 * the backend that owns the flow: frame.ICMPInnerFlow. */
		if (frag || l4 + 8 > end)
			return drop(DROP_ICMP);
		__u8 type = l4[0];
		if (type != 3 && type != 11 && type != 12)
			return drop(DROP_ICMP);
		__u8 *in = l4 + 8;
		__u32 inlen = n - 8;
		if (inlen < 20 || in + 20 > end || in[0] >> 4 != 4)
			return drop(DROP_ICMP);
		__u32 inihl = (in[0] & 0xf) * 4;
		if (inihl < 20 || (load16(in + 6) & 0x1fff) != 0)
			return drop(DROP_ICMP);
		__u8 inproto = in[9];
		if ((inproto != PROTO_TCP && inproto != PROTO_UDP) || inlen - inihl < 4 || inlen < inihl)
			return drop(DROP_ICMP);
		__u8 *inl4 = in + inihl;
		if (inl4 + 4 > end)
			return drop(DROP_ICMP);
		/* The quoted packet went VIP -> client: reversed. */
		__u32 vip, client;
		__builtin_memcpy(&vip, in + 12, 4);
		__builtin_memcpy(&client, in + 16, 4);
		__u16 vport = load16(inl4), cport = load16(inl4 + 2);
		s = lookup_svc(vip, inproto, vport, gen);
		if (!s)
			return drop(DROP_NO_SERVICE);
		key.src = client;
		key.dst = vip;
		key.proto = inproto;
		if (s->per_flow) {
			key.sport = cport;
			key.dport = vport;
		} else {
			key.dport = s->port;
		}
	} else {
		return drop(DROP_UNSUPPORTED);
	}

	__u64 now = bpf_ktime_get_ns();
	__u32 sid = s->id;
	struct backend *be = 0;
	__u32 bid = 0;
	struct flow_val *fv = bpf_map_lookup_elem(&flows, &key);
	if (fv) {
		bid = fv->backend;
		be = bpf_map_lookup_elem(&backends, &bid);
		if (be && (be->gen != fv->gen || be->flags & BE_GONE || now - fv->last > cfg->idle_ns))
			be = 0;
		else if (be && now - fv->last > 1000000000ULL)
			fv->last = now;
	}
	if (!be) {
		__u32 table = s->table;
		void *t = bpf_map_lookup_elem(&maglev, &table);
		if (!t) {
			svc_count(sid, SVC_NO_BACKEND, 0);
			return drop(DROP_NO_BACKEND);
		}
		__u32 slot = hash_flow(&key) % MAGLEV_SIZE;
		__u32 *b = bpf_map_lookup_elem(t, &slot);
		if (!b || *b >= MAX_BACKENDS) {
			svc_count(sid, SVC_NO_BACKEND, 0);
			return drop(DROP_NO_BACKEND);
		}
		bid = *b;
		be = bpf_map_lookup_elem(&backends, &bid);
		if (!be) {
			svc_count(sid, SVC_NO_BACKEND, 0);
			return drop(DROP_NO_BACKEND);
		}
		struct flow_val nv = {.backend = bid, .gen = be->gen, .last = now};
		bpf_map_update_elem(&flows, &key, &nv, BPF_ANY);
		svc_count(sid, SVC_NEW_FLOW, 0);
	}
	if (!(be->flags & BE_RESOLVED))
		return drop(DROP_UNRESOLVED);

	/* The bound again, for the verifier. */
	if (p + 12 > end)
		return XDP_PASS;
	__builtin_memcpy(p, be->mac, 6);
	__builtin_memcpy(p + 6, cfg->mac, 6);
	__u64 bytes = len;
	svc_count(sid, SVC_PACKET, bytes);
	struct be_stats *bs = bpf_map_lookup_elem(&be_stats, &bid);
	if (bs) {
		bs->packets++;
		bs->bytes += bytes;
	}
	count(CNT_FORWARDED);
	return XDP_TX;
}

SEC("xdp")
int xdp_dsr(struct xdp_md *ctx)
{
	__u8 *p = (void *)(long)ctx->data;
	__u8 *end = (void *)(long)ctx->data_end;
	if (p + 14 > end)
		return XDP_PASS;
	__u16 et = load16(p + 12);
	if (et == ETH_P_IP)
		return process(ctx, 14);
	if (et != ETH_P_8021Q && et != ETH_P_8021AD)
		return XDP_PASS;
	if (p + 18 > end)
		return XDP_PASS;
	if (load16(p + 16) == ETH_P_IP)
		return process(ctx, 18);
	return XDP_PASS;
}
