/* The kernel/user ABI of ovslat: what bpf/ovslat.bpf.c and user space share.
 *
 * Its one Python mirror is ovslat/abi.py (enums, flags, sizes, ctypes
 * structs); tests/unit/test_abi.py parses this file and fails when either
 * side changes alone. Field and enum names are the names used in JSON, the
 * text report and the exporter.
 */
#ifndef OVSLAT_H
#define OVSLAT_H

/* Stages measured per interface: S1 -> S2 and S2 -> S3. */
enum stage {
	STAGE_ENQUEUE_TO_RECEIVE = 0,
	STAGE_RECEIVE_TO_IP = 1,
	NSTAGES = 2,
};

/* Maxima kept per interval (see the epoch in struct config). */
enum max_metric {
	MAX_ENQUEUE_TO_RECEIVE = 0,
	MAX_RECEIVE_TO_IP = 1,
	MAX_QUEUE_DEPTH = 2,
	NMAX = 3,
};

/* The seed tool's debug counters, per probe point (S1, S2, S3). */
enum debug_counter {
	DBG_PROBE_ENTRY = 0,
	DBG_HANDLE_ENTRY,
	DBG_PARSE_ENTRY,
	DBG_PARSE_SUCCESS,
	DBG_IP_FILTER,
	DBG_PROTO_FILTER,
	DBG_PORT_FILTER,
	DBG_FLOW_CREATE,
	DBG_FLOW_LOOKUP,
	DBG_FLOW_FOUND,
	DBG_LATENCY_SUBMIT,
	NDBG,
};

/* The probe points debug counters are kept for. */
enum probe_point {
	POINT_S1 = 0,
	POINT_S2 = 1,
	POINT_S3 = 2,
	NPOINTS = 3,
};

/* Log-linear latency buckets: 4 per power of two, nanoseconds.
 * Bucket b < 4 holds exactly b ns; for b >= 4 with m = b / 4 + 1 and
 * s = b % 4 it holds [(4 + s) << (m - 2), (5 + s) << (m - 2)).
 * The last bucket also holds everything above it (2^40 ns = 18 min), so
 * nothing is ever lost or wrapped. Relative width of a bucket <= 25%. */
#define NBUCKETS 160

struct iface_key {
	__u32 netns; /* inode of the interface's network namespace */
	__u32 ifindex;
};

#define IFACE_NO_RPS (1 << 0) /* RPS off on every RX queue: backlog = local CPU's */

struct iface_val {
	__u32 slot;
	__u32 flags; /* IFACE_* */
};

#define F_SRC_IP (1 << 0)
#define F_DST_IP (1 << 1)
#define F_SRC_PORT (1 << 2)
#define F_DST_PORT (1 << 3)
#define F_PROTOCOL (1 << 4)
#define F_HOPS (1 << 5)		/* correlate packets across interfaces (2+ monitored) */
#define F_THRESHOLD (1 << 6)	/* threshold mode: slow-packet events */
#define F_PORTS_EITHER (1 << 7) /* a port filter matches either port (the seed tools') */
#define F_FAMILY (1 << 8)	/* only packets of config.family */

/* Tunnels whose inner packet is parsed (filters, hops): the UDP destination
 * ports of config.tunnel_port, of config.tunnel_type's type. A packet's
 * tunnel travels as one word: type << TUNNEL_TYPE_SHIFT | VNI (0: none). */
enum tunnel_type {
	TUNNEL_NONE = 0,
	TUNNEL_VXLAN = 1,
	TUNNEL_GENEVE = 2,
};
#define TUNNEL_TYPE_SHIFT 24
#define MAX_TUNNEL_PORTS 8

/* Address filters: --src-ip/--dst-ip networks, IPv4 and IPv6 in one longest
 * prefix match trie each (src_nets, dst_nets). The family leads the key so
 * that one trie holds both: prefixlen = 32 + the network's prefix length. */
struct net_key {
	__u32 prefixlen;
	__u32 family; /* 4 or 6 */
	__u32 addr[4];
};
#define MAX_NETS 256 /* networks per address filter */

/* One-entry array map written by user space: filters and run-time knobs. */
struct config {
	__u32 flags;		/* F_* */
	__u32 family;		/* 4 or 6 when F_FAMILY */
	__u16 src_port;		/* host byte order */
	__u16 dst_port;		/* host byte order */
	__u32 protocol;		/* IPPROTO_* when F_PROTOCOL */
	__u32 epoch;		/* selects the half of `maxima` being written */
	__u64 backlog_poll_fn;	/* address of process_backlog(), to spot backlog NAPI */
	__u64 threshold_ns;	/* a stage above this is a slow packet */
	__u32 events_per_cpu_s; /* slow-packet events sent per CPU per second */
	__u32 threshold_stages; /* bit (1 << THRESHOLD_*) per stage threshold_ns applies to */
	__u16 tunnel_port[MAX_TUNNEL_PORTS]; /* host byte order; 0: unused */
	__u8 tunnel_type[MAX_TUNNEL_PORTS];  /* enum tunnel_type of each port */
};

enum threshold_stage {
	THRESHOLD_ENQUEUE_TO_RECEIVE = 0, /* S1 -> S2 on one interface */
	THRESHOLD_TRANSIT = 1,		  /* S2 on one interface -> S1 on the next */
	THRESHOLD_RECEIVE_TO_IP = 2,	  /* S2 -> S3 on one interface (not tracepoint) */
};

/* Per interface, per CPU; user space sums the CPUs. */
struct counters {
	__u64 enqueued;
	__u64 received;	     /* S2 of a packet seen at S1: S1 -> S2 measured */
	__u64 received_sync; /* S2 without a backlog: received in place (netif_receive_skb(), a
			      * NIC's GRO list without RPS) */
	__u64 segments;	     /* wire packets in the skbs received (both kinds): more than one
			      * in an skb GRO merged or a sender's GSO built */
	__u64 ip_rcv;	     /* S3 after either kind of S2: S2 -> S3 measured */
	__u64 cross_cpu;
	__u64 parse_failures;
	__u64 flow_lookup_failures;
	__u64 queue_depth_sum;
	__u64 queue_depth_samples;
	__u64 slow;		 /* S1 -> S2 above the threshold */
	__u64 events_suppressed; /* slow, but over the event rate limit */
	__u64 dropped;		 /* enqueued, then freed by kfree_skb() before S2 */
	__u64 hops_lost;	 /* marks left here overwritten before the next S1 (below) */
	__u64 encapsulated;	 /* of the packets received (both kinds), those that came in a
				  * VXLAN or Geneve tunnel: filters and hops used the inner packet */
	/* IPv6's share of enqueued, received, received_sync and ip_rcv (IPv4's
	 * is the rest) */
	__u64 ipv6_enqueued;
	__u64 ipv6_received;
	__u64 ipv6_received_sync;
	__u64 ipv6_ip_rcv;
	__u64 debug[NPOINTS * NDBG]; /* [point][counter]; flat: bcc mirrors only 1-D arrays */
};

/* Per interval: user space flips config.epoch, then reads and zeroes the
 * half that was being written. */
struct maxima {
	__u64 v[NMAX];
};

struct hist {
	__u64 buckets[NBUCKETS];
	__u64 sum_ns;
};

/* Where a packet's journey across monitored interfaces began: S1 (or S2) on
 * the first one it crossed, and the tunnel it arrived in there, if any
 * (carried on, so every later hop names it). */
struct origin {
	__u64 ns;
	__u32 slot;
	__u32 tunnel; /* type << TUNNEL_TYPE_SHIFT | VNI; 0: not encapsulated */
};

/* A packet between S1 and S2, keyed by its sk_buff address. The fingerprint
 * guards against a recycled sk_buff being taken for an earlier packet. */
struct flow {
	__u64 ts_enqueue_ns;
	struct origin origin;
	__u32 fingerprint;
	__u32 slot;
	__u32 enqueue_cpu;
	__u32 queue_depth;
	__u32 tentative; /* tracepoint backend: FLOW_TENTATIVE_* (bpf/ovslat.bpf.c) */
	__u32 pad;
};

/* A packet seen at S2, waiting for its S3 on the same CPU (struct rx_state
 * in bpf/ovslat.bpf.c keeps a few per CPU: no hash map entry is needed
 * between S2 and S3). */
struct last_receive {
	__u64 skb;
	__u64 ts_receive_ns;
	struct origin origin;
	__u32 slot;
	__u32 v6; /* 1: an IPv6 packet (a tunnel's: its inner one), as S2 counted it */
};

/* Per-hop correlation. The same packet is a different sk_buff once OVS's
 * userspace datapath re-injects it, so packets are matched across
 * interfaces by headers OVS does not rewrite. NAT changes them: a hop
 * across NAT is not seen. A VXLAN or Geneve packet is known by its inner
 * packet's headers, which decapsulation leaves as they were. IPv6 has no IP
 * id: the flow label, the TCP sequence and acknowledgement numbers, or a UDP
 * datagram's first 8 payload bytes tell its packets apart (never a
 * checksum: offload leaves it partial on one interface and complete on the
 * next). */
struct pkt_id {
	__u32 saddr[4]; /* IPv4: saddr[0], the rest 0 */
	__u32 daddr[4];
	__u32 l4;      /* ports, or ICMP / ICMPv6 echo id + sequence */
	__u32 seq;     /* TCP sequence number; IPv6 UDP: payload bytes 0-3 */
	__u32 ack;     /* IPv6: TCP acknowledgement number; UDP: payload bytes 4-7 */
	__u32 ip_id;   /* IPv4 id; IPv6 flow label, xor a fragment header's id */
	__u16 tot_len; /* IPv4 total length; IPv6 payload length + 40 */
	__u8 proto;    /* the L4 protocol (IPv6: after the extension headers) */
	__u8 family;   /* 4 or 6 */
};

/* A packet seen at S2 on `slot`, waiting for S1 on the next interface. A
 * mark still waiting when another packet takes its table slot is counted in
 * `slot`'s hops_lost, once `slot` has started a hop at all (an interface
 * where packets end, like a bridge port holding the address, never does):
 * that packet's hop is lost, unless it left through an unmeasured interface. */
struct hop_mark {
	__u64 ts_receive_ns; /* 0: consumed by the next interface's S1 */
	struct origin origin;
	__u32 slot;
	__u32 cpu;
	__u32 fingerprint; /* the packet's again: rejects an entry torn by two CPUs */
	__u32 pad;
};

/* One slot of the direct-mapped table of marks, indexed by the packet's
 * header fingerprint; `id` tells whose mark it is. */
#define HOP_SLOTS 16384
struct hop_entry {
	struct pkt_id id;
	struct hop_mark mark;
};

enum hop_kind {
	HOP_TRANSIT = 0, /* S2 on `from` -> S1 on `to`: e.g. the OVS datapath */
	HOP_E2E = 1,	 /* first S1 on `from` -> S3 on `to` */
};

struct hop_key {
	__u16 from;
	__u16 to;
	__u16 kind;
	__u16 half;   /* maxima only: epoch & 1 */
	__u32 tunnel; /* struct origin.tunnel of the packets on this hop */
};

/* An encapsulated packet's outer headers (slow-packet events). */
struct tunnel_hdr {
	__u32 saddr[4]; /* IPv4: saddr[0], the rest 0 */
	__u32 daddr[4];
	__u32 tunnel; /* type << TUNNEL_TYPE_SHIFT | VNI; 0: not encapsulated */
	__u16 sport;  /* host byte order */
	__u16 dport;
	__u32 family; /* 4 or 6 */
};

/* A slow packet, sent to user space (threshold mode only). */
struct slow_event {
	__u64 ts_enqueue_ns;
	__u64 ts_receive_ns;
	struct pkt_id id;
	__u16 sport;
	__u16 dport;
	__u32 slot;
	__u32 enqueue_cpu;
	__u32 receive_cpu;
	__u32 queue_depth; /* ~0: not sampled */
	__s32 stack_id;
	__u32 pid;
	__u32 stage;	 /* THRESHOLD_* */
	__u32 from_slot; /* transit: the interface the packet came from */
	struct tunnel_hdr outer;
	char comm[16];
};

struct drop_key {
	__u32 slot;
	__u32 reason; /* enum skb_drop_reason */
};

#endif
