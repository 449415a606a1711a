/* Maps' keys, values and limits, shared by dsr.c and Go (bpf2go generates the types; table.go has the constants),
 * whose tests check the sizes against the compiled object. Every struct is
 * laid out without implicit padding. Addresses are in network order (the
 * frame's bytes), ports and other numbers in host order. */

#ifndef NIB_XDP_DSR_H
#define NIB_XDP_DSR_H

#define MAX_SERVICES 256
#define SERVICE_KEYS (2 * 3 * MAX_SERVICES) /* two generations; service, any-port and VIP entries */
#define MAX_BACKENDS 4096
#define MAX_TARPIT 1024
#define MAGLEV_SIZE 65537 /* balance.MaglevSize */
#define NO_BACKEND 0xffffffff

#define ETH_P_IP 0x0800
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88a8

#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10

/* config.flags */
#define CFG_TARPIT 1 /* the tarpit map has prefixes */
#define CFG_ACTIVE 2 /* forward (Run started); else every frame passes */

struct config {
	__u64 idle_ns; /* flows idle this long are forgotten */
	__u64 secret;  /* keys the tarpit's sequence numbers */
	__u8 mac[6];   /* the interface's */
	__u8 gen;      /* the generation of services, maglev and tarpit in use: 0 or 1 */
	__u8 flags;
};

/* svc_key.kind */
#define KIND_GEN 1 /* the generation bit */
#define KIND_ANY 2 /* the first service of a VIP and protocol (port 0), for non-first fragments */

/* A service's key is its VIP, protocol and port (0: every port). A VIP also
 * has an entry with protocol 0 and port 0 (all VIPs are known), and each of
 * its protocols one with KIND_ANY. */
struct svc_key {
	__u32 vip;
	__u16 port;
	__u8 proto;
	__u8 kind;
};

struct svc_val {
	__u32 id;     /* counter slot in svc_stats */
	__u32 table;  /* index of the Maglev table in maglev (absent: no backend) */
	__u16 port;   /* the configured port, for client-only flow keys */
	__u8 per_flow;
	__u8 pad;
};

/* backend.flags */
#define BE_RESOLVED 1 /* mac is known */
#define BE_GONE 2     /* removed or down: its flows move */

/* backends[id]: gen changes when an id is given to another backend, so a
 * flow never follows an id to a stranger. */
struct backend {
	__u8 mac[6];
	__u8 flags;
	__u8 pad;
	__u32 gen;
};

/* A flow: the whole 5-tuple, or for client-sticky services and fragments
 * the client, VIP, protocol and the service's port (sport 0): dsr's
 * service.key. */
struct flow_key {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow_val {
	__u32 backend;
	__u32 gen;
	__u64 last; /* bpf_ktime_get_ns */
};

/* data: the generation, then the IPv4 prefix; prefixlen counts the
 * generation's 8 bits. */
struct tarpit_key {
	__u32 prefixlen;
	__u8 data[8];
};

enum counter {
	CNT_RECEIVED,
	CNT_FORWARDED,
	CNT_TARPIT_REPLIES,
	CNT_DROPS, /* + the drop reason */
};

/* Drop reasons: dsr.DropReason's values. */
enum drop_reason {
	DROP_TRUNCATED,
	DROP_MALFORMED,
	DROP_UNSUPPORTED,
	DROP_NO_SERVICE,
	DROP_NO_BACKEND,
	DROP_UNRESOLVED,
	DROP_ICMP,
	DROP_SEND_FAILED,
	DROP_TARPITTED,
	DROP_NOT_FOR_US,
	NUM_DROP_REASONS,
};

#define NUM_COUNTERS (CNT_DROPS + NUM_DROP_REASONS)

enum svc_counter {
	SVC_PACKET,
	SVC_NEW_FLOW,
	SVC_NO_BACKEND,
};

struct svc_stats {
	__u64 packets;
	__u64 bytes;
	__u64 new_flows;
	__u64 no_backend;
};

struct be_stats {
	__u64 packets;
	__u64 bytes;
};

#endif
