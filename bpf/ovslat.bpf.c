/* ovslat: receive-path latency across the backlog boundary, many interfaces at once.
 *
 *   S1 enqueue_to_backlog   packet queued to a CPU's backlog
 *   S2 __netif_receive_skb  dequeued by process_backlog() in softirq
 *   S3 ip_rcv               handed to IPv4
 *
 * A NIC's NAPI poll hands packets to GRO, which passes them on as a list:
 * with RPS to enqueue_to_backlog (S1) as above; without RPS straight to
 * __netif_receive_skb_core (S2, the netif_receive_skb tracepoint) and
 * ip_list_rcv (S3), every S2 of the list before its first S3. Such a
 * receive has no backlog: a synchronous receive, S2 -> S3 measured.
 *
 * One program serves every monitored interface: `ifaces` maps
 * (netns inode, ifindex) to a slot, and every per-interface map is indexed by
 * slot. Histograms and counters live in per-CPU arrays; user space sums them.
 *
 * Built by ovslat/engine/program.py with cflags giving:
 *   BACKEND_FENTRY | BACKEND_KPROBE | BACKEND_TRACEPOINT
 *   MAX_IFACES, MAX_FLOWS, MAX_HOPS, OVSLAT_NR_CPUS, OVSLAT_DEBUG (optional)
 *   TP_BTF: the tracepoint backend's programs are loaded as tp_btf (typed)
 *   OFF_* struct offsets read from the running kernel's BTF, never from the
 *   header tree bcc compiles against (it may be another kernel's).
 */
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/in6.h>
#include <uapi/linux/ipv6.h>

#include "ovslat.h"

BPF_HASH(ifaces, struct iface_key, struct iface_val, MAX_IFACES);
BPF_ARRAY(config, struct config, 1);
/* --src-ip / --dst-ip: the networks a packet's address must fall in */
BPF_LPM_TRIE(src_nets, struct net_key, u8, MAX_NETS);
BPF_LPM_TRIE(dst_nets, struct net_key, u8, MAX_NETS);
/* slot MAX_IFACES collects PROBE_ENTRY, which fires before the interface is known */
BPF_PERCPU_ARRAY(counters, struct counters, MAX_IFACES + 1);
BPF_PERCPU_ARRAY(hists, struct hist, MAX_IFACES *NSTAGES);
BPF_PERCPU_ARRAY(maxima, struct maxima, 2 * MAX_IFACES);
/* Packets between S1 and S2, by sk_buff address. A plain hash, not an LRU:
 * an LRU update costs twice as much on every packet. Records whose S2 never
 * comes (a packet lost without a kfree_skb) are expired by user space
 * (Program.expire_flows); a full map refuses new records, and those packets
 * count as flow lookup failures at S2, never as a wrong latency. */
BPF_HASH(flows, u64, struct flow, MAX_FLOWS);
/* Per CPU: packets past S2 whose S3 has not come yet. A backlog or
 * netif_receive_skb() receive reaches S3 inside its S2 call, so one entry
 * is live; a GRO list is received whole (every S2) before IPv4 gets it
 * (every S3), so up to a list's worth: RX_RING (user space sizes it from
 * net.core.gro_normal_batch). */
struct rx_state {
	u32 n;	      /* entries pushed since the last reset; e[(n - 1) % RX_RING] is the newest */
	u32 live;     /* of the last RX_RING of them, those still waiting for S3 */
	u64 core_skb; /* kprobe/fentry: the skb __netif_receive_skb() was called for */
	u64 napi_skb; /* tracepoint: the tracked skb napi_gro_receive() is handling */
	u32 in_napi;  /* tracepoint: a device's NAPI poll is passing packets to GRO */
	u32 pad;
	struct last_receive e[RX_RING];
};
BPF_PERCPU_ARRAY(rx, struct rx_state, 1);
/* address of each CPU's softnet_data, learnt from its backlog NAPI polls */
BPF_ARRAY(backlogs, u64, OVSLAT_NR_CPUS);
/* Marks left at S2 for S1 on the next interface: an array indexed by the
 * header fingerprint costs a fraction of a hash map update on every packet.
 * A mark overwritten by another packet before its own S1 loses that hop,
 * counted in hops_lost (hop_leave). */
BPF_ARRAY(hop_marks, struct hop_entry, HOP_SLOTS);
/* 1 once an interface has started a hop: its overwritten marks are losses */
BPF_ARRAY(hop_sources, u32, MAX_IFACES);
/* marks overwritten before their interface started any hop: losses too once
 * it does (a burst's first packets are all in flight before the first hop
 * ends), moved to its hops_lost then; never, for an interface where packets
 * end */
BPF_ARRAY(hop_unconfirmed, u64, MAX_IFACES);
BPF_PERCPU_HASH(hop_hists, struct hop_key, struct hist, MAX_HOPS);
BPF_PERF_OUTPUT(events);
BPF_STACK_TRACE(stacks, 1024);
BPF_PERCPU_HASH(drops, struct drop_key, u64, 1024);
struct budget {
	u64 window_ns;
	u64 used;
};
BPF_PERCPU_ARRAY(budgets, struct budget, 1);
/* never written: the zeroed value a new hop's histogram starts from (too big
 * for the BPF stack) */
BPF_ARRAY(zero_hist, struct hist, 1);
BPF_PERCPU_HASH(hop_maxima, struct hop_key, u64, 2 * MAX_HOPS);

/* IPv6 extension headers walked to the L4 header (net/ipv6.h's names) */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60

#define KREAD(dst, src) bpf_probe_read_kernel(&(dst), sizeof(dst), (void *)(src))

/* A field of the sk_buff, net_device or net a hook was handed, at a constant
 * offset: 0 once read into dst. Loaded as tp_btf, the programs get these
 * pointers with their BTF types, and a field is a plain load the verifier
 * checks against the type and the kernel makes fault-safe: no helper call.
 * Assembly, so that nothing rewrites the load into a probe read; the offset
 * is in the instruction (a pointer of a BTF type takes no arithmetic on old
 * verifiers). Elsewhere (a raw tracepoint, a kprobe, and fentry, whose GRO
 * list walk hands on skbs of no BTF type) it is a probe read. Packet bytes
 * are always probe reads: skb->data has no type the verifier follows. */
#ifdef TP_BTF
#define KLOAD_(width, dst, base, off)                                                              \
	({                                                                                         \
		u64 v_;                                                                            \
		asm volatile("%0 = *(" #width " *)(%1 + %2)" : "=r"(v_) : "r"(base), "i"(off));    \
		dst = (typeof(dst))v_;                                                             \
	})
#define KFIELD(dst, base, off)                                                                     \
	({                                                                                         \
		_Static_assert(sizeof(dst) == 1 || sizeof(dst) == 2 || sizeof(dst) == 4 ||         \
				   sizeof(dst) == 8,                                               \
			       "a field of 1, 2, 4 or 8 bytes");                                   \
		if (sizeof(dst) == 8)                                                              \
			KLOAD_(u64, dst, base, off);                                               \
		else if (sizeof(dst) == 4)                                                         \
			KLOAD_(u32, dst, base, off);                                               \
		else if (sizeof(dst) == 2)                                                         \
			KLOAD_(u16, dst, base, off);                                               \
		else                                                                               \
			KLOAD_(u8, dst, base, off);                                                \
		0;                                                                                 \
	})
#else
#define KFIELD(dst, base, off) KREAD(dst, (void *)(base) + (off))
#endif

/* struct flow.tentative: how sure S1 is that the packet goes to a backlog */
#define FLOW_CERTAIN 0	      /* enqueue_to_backlog(), netif_rx() */
#define FLOW_TENTATIVE_CALL 1 /* tracepoint: netif_receive_skb() entry, RPS or in place */
#define FLOW_TENTATIVE_NAPI 2 /* tracepoint: GRO entry, then a list receive (no RPS) */
#define FLOW_NAPI_RPS 3	      /* tracepoint: GRO entry, then RPS's enqueue to a backlog */

#ifdef OVSLAT_DEBUG
#define DBG(c, point, id) ((c)->debug[(point)*NDBG + (id)]++)
static __always_inline void dbg_global(u32 point, u32 id)
{
	u32 g = MAX_IFACES;
	struct counters *gc = counters.lookup(&g);

	if (gc && point < NPOINTS && id < NDBG)
		gc->debug[point * NDBG + id]++;
}
#else
#define DBG(c, point, id)                                                                          \
	do {                                                                                       \
	} while (0)
static __always_inline void dbg_global(u32 point, u32 id)
{
}
#endif

enum { PARSE_OK = 0, PARSE_NOT_IP, PARSE_FAIL };

struct pkt {
	struct pkt_id id;
	u16 sport;
	u16 dport;
	u32 has_ports;
	u32 fingerprint;	 /* every header field in pkt_id: hop marks */
	u32 flow_fp;		 /* the same without the length, which GRO changes: S1 records */
	struct tunnel_hdr outer; /* a VXLAN / Geneve packet's: `id` is the inner packet's */
};

/* The packet being parsed lives in a per-CPU map, not on the stack: the
 * verifier tracks no map value's contents, so every parse path (outer and
 * inner headers, IPv6 extension headers, tunnels) meets the same state once
 * it returns, instead of multiplying the paths after it (Linux 6.1 refused
 * the program once tunnels were parsed). One buffer per program: the same
 * program never nests on a CPU, two can (an S1 in a hard interrupt during a
 * softirq's S2). */
enum pkt_buf {
	PKT_S1 = 0, /* + struct flow.tentative of the hook: FLOW_CERTAIN, _CALL, _NAPI */
	PKT_S2 = 3, /* + 1: the list receive's program (kprobe, fentry) */
	PKT_S3 = 5,
	PKT_DROP = 6,
	NPKT_BUFS = 7,
};
BPF_PERCPU_ARRAY(pkt_bufs, struct pkt, NPKT_BUFS);

static __always_inline struct pkt *pkt_buf(u32 which)
{
	struct pkt *p = pkt_bufs.lookup(&which);

	if (p)
		__builtin_memset(p, 0, sizeof(*p));
	return p;
}

static __always_inline u32 mix32(u32 h, u32 v)
{
	h ^= v * 0x9E3779B1u;
	return (h << 13 | h >> 19) * 5 + 0xE6546B64u;
}

/* The IP header is read with the L4_PEEK bytes after it, in one probe
 * read: where no IPv4 option or IPv6 extension header comes between, those
 * are the L4 header's ports, TCP sequence and acknowledgement, ICMP echo id
 * and sequence, a UDP datagram's first 8 payload bytes, or a tunnel's
 * header — no second read per packet. Past a short packet's end they are
 * its head buffer's (tailroom, then skb_shared_info: always readable), as
 * a read at the L4 offset would find too. */
#define L4_PEEK 16
union ip_hdr {
	struct {
		struct iphdr v4;
		u8 v4_l4[L4_PEEK];
	};
	struct {
		struct ipv6hdr v6;
		u8 v6_l4[L4_PEEK];
	};
};

/* The first L4_PEEK bytes of the L4 header at l4p into `peek`, unless
 * `peeked` says they are there already. One path either way (the
 * verifier's states meet again right after), and a flag rather than a NULL
 * pointer: the verifier does not follow a pointer chosen on one branch and
 * tested on another. */
static __always_inline int peek_l4(u8 *peek, int peeked, void *l4p)
{
	return peeked || !bpf_probe_read_kernel(peek, L4_PEEK, l4p) ? PARSE_OK : PARSE_FAIL;
}

/* The L4 header (the first fragment's only), its first bytes in `peek`
 * (peek_l4): ports (TCP, UDP), the TCP sequence and acknowledgement
 * numbers, ICMP / ICMPv6 echo id + sequence. `l4[2]` holds the
 * acknowledgement number for IPv6 alone (IPv4 has its IP id). */
static __always_inline int parse_l4(struct pkt *p, u32 proto, int v6, const u8 *peek)
{
	u32 l4[3] = {};

	if (proto == IPPROTO_TCP) {
		__builtin_memcpy(l4, peek, 8);
		if (v6)
			__builtin_memcpy(&l4[2], peek + 8, 4);
	} else if (proto == IPPROTO_UDP) {
		__builtin_memcpy(l4, peek, 4);
	} else if (proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6) {
		__builtin_memcpy(l4, peek + 4, 4); /* echo id + sequence */
	}
	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
		p->sport = bpf_ntohs((u16)l4[0]);
		p->dport = bpf_ntohs((u16)(l4[0] >> 16));
		p->has_ports = 1;
	}
	p->id.l4 = l4[0];
	p->id.seq = l4[1];
	p->id.ack = l4[2];
	return PARSE_OK;
}

/* IP protocols whose L4 header parse_l4() reads */
static __always_inline int has_l4(u32 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_ICMP ||
	       proto == IPPROTO_ICMPV6;
}

/* The header at `data`, read (and its version checked) by parse() into *h;
 * `peeked`: h's peek holds the L4 header's first bytes */
static __always_inline int parse_ipv4(void *data, union ip_hdr *h, struct pkt *p, int peeked)
{
	struct iphdr ip = h->v4;

	p->id.family = 4;
	p->id.saddr[0] = ip.saddr;
	p->id.daddr[0] = ip.daddr;
	p->id.proto = ip.protocol;
	p->id.ip_id = ip.id;
	p->id.tot_len = ip.tot_len;
	/* Only the first fragment carries the L4 header. */
	if (!(ip.frag_off & bpf_htons(0x1fff)) && has_l4(ip.protocol)) {
		if (peek_l4(h->v4_l4, peeked, data + ip.ihl * 4) != PARSE_OK)
			return PARSE_FAIL;
		parse_l4(p, ip.protocol, 0, h->v4_l4);
	}
	/* A GRO-merged skb keeps its first segment's headers but the merged
	 * length: the S1 record's fingerprint leaves the length out. */
	p->flow_fp = mix32(mix32(mix32(ip.saddr, ip.daddr), (u32)ip.id << 16 | ip.protocol),
			   p->id.l4 ^ p->id.seq);
	return PARSE_OK;
}

#define IPV6_EXT_MAX 6 /* extension headers walked to the L4 header, at most */

/* The header at `data`, read by parse() into *ip6; base: its offset from
 * skb->data (an inner packet's is past its tunnel's headers) */
static __always_inline int parse_ipv6(void *skb, void *data, union ip_hdr *hdr, u32 base,
				      struct pkt *p)
{
	struct ipv6hdr *ip6 = &hdr->v6;
	u32 off = sizeof(*ip6), i, h = 0;
	u8 nexthdr;
	int first = 1;

	p->id.family = 6;
	__builtin_memcpy(p->id.saddr, &ip6->saddr, 16);
	__builtin_memcpy(p->id.daddr, &ip6->daddr, 16);
	p->id.ip_id = bpf_ntohl(*(u32 *)ip6) & 0xfffff; /* the flow label */
	p->id.tot_len = bpf_htons(bpf_ntohs(ip6->payload_len) + sizeof(*ip6));
	nexthdr = ip6->nexthdr;
#pragma unroll
	for (i = 0; i < IPV6_EXT_MAX; i++) {
		u8 ext[8];

		if (nexthdr != NEXTHDR_HOP && nexthdr != NEXTHDR_ROUTING &&
		    nexthdr != NEXTHDR_DEST && nexthdr != NEXTHDR_FRAGMENT &&
		    nexthdr != NEXTHDR_AUTH)
			break;
		if (bpf_probe_read_kernel(ext, sizeof(ext), data + off))
			return PARSE_FAIL;
		if (nexthdr == NEXTHDR_FRAGMENT) {
			u32 id;

			__builtin_memcpy(&id, ext + 4, sizeof(id));
			p->id.ip_id ^= id;
			/* the fragment offset: the L4 header is in fragment 0 only */
			if ((ext[2] << 8 | ext[3]) & 0xfff8)
				first = 0;
			off += 8;
		} else if (nexthdr == NEXTHDR_AUTH) {
			off += (ext[1] + 2) * 4;
		} else {
			off += (ext[1] + 1) * 8;
		}
		nexthdr = ext[0];
	}
	p->id.proto = nexthdr;
	if (first && has_l4(nexthdr)) {
		/* read with the header unless extension headers came between */
		if (peek_l4(hdr->v6_l4, off == sizeof(*ip6), data + off) != PARSE_OK)
			return PARSE_FAIL;
		parse_l4(p, nexthdr, 1, hdr->v6_l4);
	}
	if (first && nexthdr == IPPROTO_UDP) {
		/* Datagrams of one flow differ in their payload only: its first 8
		 * bytes, when the linear area holds them (a paged payload's are
		 * elsewhere, and read as 0 on every interface alike). */
		u32 len[2] = {}, pl[2] = {};

		_Static_assert(8 + sizeof(pl) <= L4_PEEK, "the UDP header and 8 bytes");
		if (!KFIELD(len[0], skb, OFF_SKB_LEN) && !KFIELD(len[1], skb, OFF_SKB_DATA_LEN) &&
		    len[0] - len[1] >= base + off + 16) {
			__builtin_memcpy(pl, hdr->v6_l4 + 8, sizeof(pl));
			p->id.seq = pl[0];
			p->id.ack = pl[1];
		}
	}
#pragma unroll
	for (i = 0; i < 4; i++)
		h = mix32(mix32(h, p->id.saddr[i]), p->id.daddr[i]);
	p->flow_fp =
	    mix32(mix32(mix32(h, p->id.ip_id << 8 | nexthdr), p->id.l4 ^ p->id.seq), p->id.ack);
	return PARSE_OK;
}

/* ETH_P_TEB (0x6558): Geneve's protocol type for an Ethernet frame */
#define VXLAN_FLAG_VNI 0x08 /* the I flag: the VNI is valid */
#define TUNNEL_HDR_LEN 8    /* VXLAN's header, Geneve's without its options */

static __always_inline u32 tunnel_type_of(struct config *cfg, u16 dport)
{
	u32 i;

#pragma unroll
	for (i = 0; i < MAX_TUNNEL_PORTS; i++)
		if (cfg->tunnel_port[i] == dport)
			return cfg->tunnel_type[i];
	return TUNNEL_NONE;
}

/* The IP header at `data` into *h, with the L4_PEEK bytes after it, its
 * version checked */
static __always_inline int read_ip(void *data, u16 proto, union ip_hdr *h)
{
	_Static_assert(sizeof(h->v4) + L4_PEEK <= sizeof(*h), "v4 and its peek");
	if (proto == bpf_htons(ETH_P_IP))
		return bpf_probe_read_kernel(h, sizeof(h->v4) + L4_PEEK, data) ||
			       h->v4.version != 4 || h->v4.ihl < 5
			   ? PARSE_FAIL
			   : PARSE_OK;
	return bpf_probe_read_kernel(h, sizeof(*h), data) || h->v6.version != 6 ? PARSE_FAIL
										: PARSE_OK;
}

/* The outer packet in *h is a UDP datagram (its ports in `ports`, its
 * header at udp) to a tunnel port of `type`: find the inner IP header past
 * the VXLAN or Geneve header and the inner Ethernet frame (up to two
 * 802.1Q / 802.1ad tags) and keep the outer headers in *outer. PARSE_OK:
 * *data, *base (its offset from skb->data) and *proto moved to the inner
 * header. PARSE_NOT_IP, nothing changed: no tunnel packet after all, or a
 * non-IP inner frame (measured as the outer datagram). */
static __always_inline int tunnel_inner(u32 type, union ip_hdr *h, u32 ports, u8 *udp,
					const u8 *peek, void **data, u32 *base, u16 *proto,
					struct tunnel_hdr *outer)
{
	u8 hdr[TUNNEL_HDR_LEN], eth[ETH_HLEN + 8];
	u32 off = 8 + TUNNEL_HDR_LEN, vni, inner;

	_Static_assert(8 + TUNNEL_HDR_LEN <= L4_PEEK, "the UDP and tunnel headers in the peek");
	__builtin_memcpy(hdr, peek + 8, sizeof(hdr)); /* after the UDP header */
	vni = (u32)hdr[4] << 16 | (u32)hdr[5] << 8 | hdr[6];
	if (type == TUNNEL_VXLAN) {
		if (!(hdr[0] & VXLAN_FLAG_VNI))
			return PARSE_NOT_IP;
		inner = ETH_P_TEB;
	} else {
		if (hdr[0] >> 6) /* Geneve version 0 only */
			return PARSE_NOT_IP;
		off += (hdr[0] & 0x3f) * 4; /* the options */
		inner = (u32)hdr[2] << 8 | hdr[3];
	}
	if (inner == ETH_P_TEB) {
		if (bpf_probe_read_kernel(eth, sizeof(eth), udp + off))
			return PARSE_FAIL;
		inner = (u32)eth[12] << 8 | eth[13];
		off += ETH_HLEN;
		if (inner == ETH_P_8021Q || inner == ETH_P_8021AD) {
			inner = (u32)eth[16] << 8 | eth[17];
			off += 4;
		}
		if (inner == ETH_P_8021Q || inner == ETH_P_8021AD) {
			inner = (u32)eth[20] << 8 | eth[21];
			off += 4;
		}
	}
	if (inner != ETH_P_IP && inner != ETH_P_IPV6)
		return PARSE_NOT_IP;
	if (*proto == bpf_htons(ETH_P_IP)) {
		outer->saddr[0] = h->v4.saddr;
		outer->daddr[0] = h->v4.daddr;
		outer->family = 4;
	} else {
		__builtin_memcpy(outer->saddr, &h->v6.saddr, sizeof(outer->saddr));
		__builtin_memcpy(outer->daddr, &h->v6.daddr, sizeof(outer->daddr));
		outer->family = 6;
	}
	outer->tunnel = type << TUNNEL_TYPE_SHIFT | vni;
	outer->sport = bpf_ntohs((u16)ports);
	outer->dport = bpf_ntohs((u16)(ports >> 16));
	*base += (udp - (u8 *)*data) + off;
	*data = udp + off;
	*proto = bpf_htons(inner);
	return PARSE_OK;
}

/* `cfg`: its tunnel ports (NULL: none). A VXLAN or Geneve packet is found
 * before the IP parse, with straight-line code: the one parse then reads
 * the inner packet, and the verifier meets every outer header's path at
 * the same instructions (a second parser after the first multiplied its
 * paths past Linux 6.1's limit, and 6.1 refuses a loop that shares one). */
static __always_inline int parse(void *skb, struct config *cfg, struct pkt *p)
{
	u16 eth_proto = 0;
	void *data = 0;
	u32 base = 0;
	union ip_hdr h;
	int r, i, peeked;

	if (KFIELD(eth_proto, skb, OFF_SKB_PROTOCOL))
		return PARSE_NOT_IP;
	/* At S1, S2 and S3 skb->data points at the IP header: eth_type_trans()
	 * ran before netif_rx()/netif_receive_skb() on every Ethernet path;
	 * past a VLAN tag the device did not strip itself. */
	if (KFIELD(data, skb, OFF_SKB_DATA) || !data)
		return PARSE_FAIL;
#pragma unroll
	for (i = 0; i < 2; i++) {
		u16 tag[2];

		if (eth_proto != bpf_htons(ETH_P_8021Q) && eth_proto != bpf_htons(ETH_P_8021AD))
			break;
		if (KREAD(tag, data + base))
			return PARSE_FAIL;
		eth_proto = tag[1];
		base += 4;
	}
	if (eth_proto != bpf_htons(ETH_P_IP) && eth_proto != bpf_htons(ETH_P_IPV6))
		return PARSE_NOT_IP;
	data += base;
	if (read_ip(data, eth_proto, &h) != PARSE_OK)
		return PARSE_FAIL;
	/* IPv4: h's peek holds the L4 header's first bytes (no options) */
	peeked = h.v4.ihl == 5;
	if (cfg) {
		u32 l4 = 0, ports, type;
		u8 *peek = h.v4_l4;

		/* a UDP header right after the IP header (tunnels use no IPv6
		 * extension headers): its ports, for the tunnel ports' check */
		if (eth_proto == bpf_htons(ETH_P_IP)) {
			if (h.v4.protocol == IPPROTO_UDP && !(h.v4.frag_off & bpf_htons(0x1fff)))
				l4 = h.v4.ihl * 4;
		} else if (h.v6.nexthdr == IPPROTO_UDP) {
			l4 = sizeof(h.v6);
			peek = h.v6_l4;
			peeked = 1;
		}
		if (l4) {
			/* past IPv4 options: read into the peek, for parse_l4 too */
			if (peek_l4(peek, peeked, data + l4) != PARSE_OK)
				return PARSE_FAIL;
			peeked = 1;
			__builtin_memcpy(&ports, peek, sizeof(ports));
			type = tunnel_type_of(cfg, bpf_ntohs((u16)(ports >> 16)));
			if (type != TUNNEL_NONE) {
				r = tunnel_inner(type, &h, ports, (u8 *)data + l4, peek, &data,
						 &base, &eth_proto, &p->outer);
				if (r == PARSE_FAIL)
					return r;
				if (r == PARSE_OK) {
					if (read_ip(data, eth_proto, &h) != PARSE_OK)
						return PARSE_FAIL;
					peeked = h.v4.ihl == 5;
				}
			}
		}
	}
	r = eth_proto == bpf_htons(ETH_P_IP) ? parse_ipv4(data, &h, p, peeked)
					     : parse_ipv6(skb, data, &h, base, p);
	if (r != PARSE_OK)
		return r;
	p->fingerprint = mix32(p->flow_fp, p->id.tot_len);
	return PARSE_OK;
}

/* Non-zero when the packet does not match the user's filters. */
static __always_inline int filtered(struct config *cfg, struct pkt *p, struct counters *c,
				    int point)
{
	u32 fl = cfg->flags;

	/* in the seed's order: protocol, then addresses, then ports */
	if ((fl & F_PROTOCOL) && p->id.proto != cfg->protocol) {
		DBG(c, point, DBG_PROTO_FILTER);
		return 1;
	}
	if ((fl & F_FAMILY) && p->id.family != cfg->family) {
		DBG(c, point, DBG_IP_FILTER);
		return 1;
	}
	if (fl & (F_SRC_IP | F_DST_IP)) {
		struct net_key k = {.prefixlen = p->id.family == 6 ? 160 : 64,
				    .family = p->id.family};

		if (fl & F_SRC_IP) {
			__builtin_memcpy(k.addr, p->id.saddr, sizeof(k.addr));
			if (!src_nets.lookup(&k)) {
				DBG(c, point, DBG_IP_FILTER);
				return 1;
			}
		}
		if (fl & F_DST_IP) {
			__builtin_memcpy(k.addr, p->id.daddr, sizeof(k.addr));
			if (!dst_nets.lookup(&k)) {
				DBG(c, point, DBG_IP_FILTER);
				return 1;
			}
		}
	}
	if ((fl & (F_SRC_PORT | F_DST_PORT)) &&
	    (!p->has_ports ||
	     ((fl & F_PORTS_EITHER)
		  ? (((fl & F_SRC_PORT) && p->sport != cfg->src_port &&
		      p->dport != cfg->src_port) ||
		     ((fl & F_DST_PORT) && p->sport != cfg->dst_port && p->dport != cfg->dst_port))
		  : (((fl & F_SRC_PORT) && p->sport != cfg->src_port) ||
		     ((fl & F_DST_PORT) && p->dport != cfg->dst_port))))) {
		DBG(c, point, DBG_PORT_FILTER);
		return 1;
	}
	return 0;
}

static __always_inline struct iface_val *iface_of(void *skb)
{
	struct iface_key k = {};
	void *dev = 0, *net = 0;

	if (KFIELD(dev, skb, OFF_SKB_DEV) || !dev)
		return 0;
	if (KFIELD(k.ifindex, dev, OFF_DEV_IFINDEX) || KFIELD(net, dev, OFF_DEV_NET) || !net ||
	    KFIELD(k.netns, net, OFF_NET_INUM))
		return 0;
	return ifaces.lookup(&k);
}

static __always_inline u32 msb64(u64 v)
{
	u32 r = 0;

	if (v >> 32) {
		v >>= 32;
		r += 32;
	}
	if (v >> 16) {
		v >>= 16;
		r += 16;
	}
	if (v >> 8) {
		v >>= 8;
		r += 8;
	}
	if (v >> 4) {
		v >>= 4;
		r += 4;
	}
	if (v >> 2) {
		v >>= 2;
		r += 2;
	}
	if (v >> 1)
		r += 1;
	return r;
}

/* Must match ovslat/model/histogram.py:bucket_of. 64-bit and clamped through the
 * exponent: Linux 6.1's verifier loses a bound checked on a 32-bit copy. */
#define MAX_MSB 40 /* (MAX_MSB - 1) * 4 + 3 == NBUCKETS - 1 */
static __always_inline u64 bucket_of(u64 ns)
{
	u64 m;

	if (ns < 4)
		return ns;
	m = msb64(ns);
	if (m > MAX_MSB)
		return NBUCKETS - 1;
	return ((m - 1) << 2) | ((ns >> (m - 2)) & 3);
}

/* The bucket index is checked and used in one register: older verifiers
 * (Linux 6.1) lose a bound that clang checked on a copy or across a spill. */
static __always_inline void add_to_hist(struct hist *h, u64 ns)
{
	u64 b = bucket_of(ns);

	asm volatile("" : "+r"(b));
	if (!h || b >= NBUCKETS)
		return;
	asm volatile("" : "+r"(b));
	h->buckets[b]++;
	h->sum_ns += ns;
}

static __always_inline void update_max(u32 epoch, u32 slot, u32 metric, u64 v)
{
	u32 idx = (epoch & 1) * MAX_IFACES + slot;
	struct maxima *m = maxima.lookup(&idx);

	if (m && metric < NMAX && v > m->v[metric])
		m->v[metric] = v;
}

static __always_inline void record(struct config *cfg, u32 slot, u32 stage, u64 ns)
{
	u32 idx = slot * NSTAGES + stage;
	struct hist *h = hists.lookup(&idx);

	add_to_hist(h, ns);
	update_max(cfg->epoch, slot, stage, ns);
}

static __always_inline void record_hop(struct config *cfg, u32 from, u32 to, u32 kind, u32 tunnel,
				       u64 ns)
{
	struct hop_key k = {.from = from, .to = to, .kind = kind, .tunnel = tunnel};
	struct hist *h = hop_hists.lookup(&k);
	u64 *m;

	if (!h) {
		u32 z = 0;
		struct hist *zero = zero_hist.lookup(&z);
		if (!zero)
			return;
		hop_hists.insert(&k, zero);
		h = hop_hists.lookup(&k);
	}
	add_to_hist(h, ns);
	k.half = cfg->epoch & 1;
	m = hop_maxima.lookup(&k);
	if (!m) {
		u64 zero = 0;
		hop_maxima.insert(&k, &zero);
		m = hop_maxima.lookup(&k);
	}
	if (m && ns > *m)
		*m = ns;
}

/* A slow packet's event, built in a per-CPU buffer (too big for the BPF
 * stack next to the packet's own state) and only once the rate limit lets
 * it through. */
BPF_PERCPU_ARRAY(event_buf, struct slow_event, 1);

struct slow_times {
	u64 start_ns; /* the stage's start: S1, S2 on the interface before, or S2 */
	u64 end_ns;
	u32 from_slot;
	u32 start_cpu;
	u32 queue_depth; /* ~0: not sampled */
	u32 stage;	 /* THRESHOLD_* */
};

static __always_inline void slow_packet(void *ctx, struct config *cfg, struct counters *c,
					struct pkt *p, u32 slot, struct slow_times *t)
{
	u32 zero = 0;
	struct budget *b = budgets.lookup(&zero);
	struct slow_event *ev;

	c->slow++;
	if (!b)
		return;
	if (t->end_ns - b->window_ns >= 1000000000ULL) {
		b->window_ns = t->end_ns;
		b->used = 0;
	}
	if (b->used >= cfg->events_per_cpu_s) {
		c->events_suppressed++;
		return;
	}
	b->used++;
	ev = event_buf.lookup(&zero);
	if (!ev)
		return;
	ev->ts_enqueue_ns = t->start_ns;
	ev->ts_receive_ns = t->end_ns;
	ev->id = p->id;
	ev->sport = p->sport;
	ev->dport = p->dport;
	ev->slot = slot;
	ev->from_slot = t->from_slot;
	ev->enqueue_cpu = t->start_cpu;
	ev->receive_cpu = bpf_get_smp_processor_id();
	ev->queue_depth = t->queue_depth;
	ev->stage = t->stage;
	ev->outer = p->outer;
	ev->stack_id = stacks.get_stackid(ctx, 0);
	ev->pid = bpf_get_current_pid_tgid();
	bpf_get_current_comm(&ev->comm, sizeof(ev->comm));
	/* never blocks: a full buffer drops the event (counted by user space) */
	events.perf_submit(ctx, ev, sizeof(*ev));
}

#define HOP_WINDOW_NS 1000000000ULL /* the longest transit a mark waits for */

/* The fingerprint's low bits barely change from one packet of a flow to the
 * next (only the IP id does): mix them all in (murmur3's finalizer) before
 * taking a slot, or consecutive packets share a handful of slots. */
static __always_inline u32 hop_slot(u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6bu;
	h ^= h >> 13;
	h *= 0xc2b2ae35u;
	h ^= h >> 16;
	return h & (HOP_SLOTS - 1);
}

static __always_inline int same_packet(struct pkt_id *a, struct pkt_id *b)
{
	u32 diff = 0;
	int i;

#pragma unroll
	for (i = 0; i < 4; i++)
		diff |= (a->saddr[i] ^ b->saddr[i]) | (a->daddr[i] ^ b->daddr[i]);
	return !diff && a->l4 == b->l4 && a->seq == b->seq && a->ack == b->ack &&
	       a->ip_id == b->ip_id && a->tot_len == b->tot_len && a->proto == b->proto &&
	       a->family == b->family;
}

/* S1 on `slot`: was this packet just received on another interface? Then
 * record the transit and inherit where its journey began. */
static __always_inline void hop_arrive(void *ctx, struct config *cfg, struct counters *c,
				       struct pkt *p, u32 slot, u64 now, struct flow *f)
{
	struct hop_entry *e;
	struct hop_mark *mark;
	u32 idx;

	f->origin.ns = now;
	f->origin.slot = slot;
	f->origin.tunnel = p->outer.tunnel;
	if (!(cfg->flags & F_HOPS))
		return;
	idx = hop_slot(p->fingerprint);
	e = hop_marks.lookup(&idx);
	if (!e || !e->mark.ts_receive_ns || e->mark.fingerprint != p->fingerprint ||
	    !same_packet(&e->id, &p->id))
		return;
	mark = &e->mark;
	/* a mark older than the window is another packet with the same headers */
	if (mark->slot != slot && now - mark->ts_receive_ns < HOP_WINDOW_NS) {
		u32 from = mark->slot, *src = hop_sources.lookup(&from);

		if (src && !*src) {
			u64 *early = hop_unconfirmed.lookup(&from);
			struct counters *fc = counters.lookup(&from);

			*src = 1;
			if (early && *early && fc) {
				u64 n = *early;

				__sync_fetch_and_add(early, -n);
				fc->hops_lost += n;
			}
		}
		f->origin = mark->origin;
		if (!f->origin.tunnel) /* decapsulated on the way here: seen only now */
			f->origin.tunnel = p->outer.tunnel;
		record_hop(cfg, mark->slot, slot, HOP_TRANSIT, f->origin.tunnel,
			   now - mark->ts_receive_ns);
		if ((cfg->flags & F_THRESHOLD) &&
		    (cfg->threshold_stages & (1 << THRESHOLD_TRANSIT)) &&
		    now - mark->ts_receive_ns > cfg->threshold_ns) {
			struct slow_times t = {
			    .start_ns = mark->ts_receive_ns,
			    .end_ns = now,
			    .from_slot = mark->slot,
			    .start_cpu = mark->cpu,
			    .queue_depth = ~0U,
			    .stage = THRESHOLD_TRANSIT,
			};
			slow_packet(ctx, cfg, c, p, slot, &t);
		}
	}
	mark->ts_receive_ns = 0; /* consumed */
}

/* S2 on `slot`: leave a mark for the next interface this packet reaches. */
static __always_inline void hop_leave(struct config *cfg, struct pkt *p, u32 slot, u64 now,
				      struct origin *origin)
{
	struct hop_entry *e;
	u32 idx, from;

	if (!(cfg->flags & F_HOPS))
		return;
	idx = hop_slot(p->fingerprint);
	e = hop_marks.lookup(&idx);
	if (!e)
		return;
	from = e->mark.slot;
	if (e->mark.ts_receive_ns && now - e->mark.ts_receive_ns < HOP_WINDOW_NS &&
	    (from != slot || !same_packet(&e->id, &p->id))) {
		u32 *src = hop_sources.lookup(&from);
		struct counters *lc = counters.lookup(&from);

		if (src && *src && lc) {
			lc->hops_lost++;
		} else if (src) {
			u64 *early = hop_unconfirmed.lookup(&from);

			if (early)
				__sync_fetch_and_add(early, 1);
		}
	}
	e->id = p->id;
	e->mark.ts_receive_ns = now;
	e->mark.origin = *origin;
	e->mark.slot = slot;
	e->mark.cpu = bpf_get_smp_processor_id();
	e->mark.fingerprint = p->fingerprint;
}

/* Packets in `cpu`'s backlog (input_pkt_queue) right now, or -1 if that
 * CPU's softnet_data has not been learnt yet. */
static __always_inline s64 backlog_len(u32 cpu)
{
	u64 *sd = backlogs.lookup(&cpu);
	u32 qlen = 0;

	if (!sd || !*sd || KREAD(qlen, *sd + OFF_SD_QLEN))
		return -1;
	return qlen;
}

static __always_inline void count_enqueue(struct config *cfg, struct counters *c, u32 slot,
					  s32 target_cpu, struct flow *f, u32 v6)
{
	s64 qlen = target_cpu < 0 ? -1 : backlog_len(target_cpu);

	c->enqueued++;
	c->ipv6_enqueued += v6;
	if (qlen >= 0) {
		f->queue_depth = qlen;
		c->queue_depth_sum += qlen;
		c->queue_depth_samples++;
		update_max(cfg->epoch, slot, MAX_QUEUE_DEPTH, qlen);
	}
}

/* Would netif_receive_skb_list_internal() steer this packet to a backlog
 * (get_rps_cpu())? Its RX queue has an RPS map or flow table: as the kernel
 * looks them up, from skb->queue_mapping (queue + 1, 0 = not recorded). */
static __always_inline int rps_steers(void *skb)
{
#ifdef OFF_DEV_RX
	void *dev = 0, *rxq = 0, *maps[2] = {};
	u16 qm = 0;

	if (KREAD(dev, skb + OFF_SKB_DEV) || !dev || KREAD(rxq, dev + OFF_DEV_RX) || !rxq ||
	    KREAD(qm, skb + OFF_SKB_QUEUE_MAPPING))
		return 0;
	rxq += (u64)(qm ? qm - 1 : 0) * SIZEOF_RX_QUEUE;
	_Static_assert(OFF_RXQ_FLOW_TABLE == OFF_RXQ_RPS_MAP + 8, "rps_map, rps_flow_table");
	if (KREAD(maps, rxq + OFF_RXQ_RPS_MAP))
		return 0;
	return maps[0] || maps[1];
#else
	return 0;
#endif
}

/* S1. target_cpu < 0: not known at this hook (tracepoint backend): the local
 * CPU when the interface has no RPS, else unknown and no queue depth is
 * sampled rather than a wrong one. tentative:
 * the hook cannot tell yet whether the packet is enqueued at all. Returns the
 * interface slot, or -1 when the packet is not tracked. */
/* on_enqueue()'s result: the slot, with this bit for an IPv6 packet (-1:
 * not tracked) */
#define ENQ_IPV6 0x10000

static __always_inline s32 on_enqueue(void *ctx, void *skb, s32 target_cpu, u32 tentative)
{
	struct iface_val *iv;
	struct counters *c;
	struct config *cfg;
	struct pkt *p;
	u32 slot, zero = 0, cpu;
	int r;

	dbg_global(POINT_S1, DBG_PROBE_ENTRY);
	p = pkt_buf(PKT_S1 + tentative);
	if (!p)
		return -1;
	iv = iface_of(skb);
	if (!iv)
		return -1;
	slot = iv->slot;
	c = counters.lookup(&slot);
	cfg = config.lookup(&zero);
	if (!c || !cfg)
		return -1;
	DBG(c, POINT_S1, DBG_HANDLE_ENTRY);
	DBG(c, POINT_S1, DBG_PARSE_ENTRY);
	r = parse(skb, cfg, p);
	if (r == PARSE_NOT_IP)
		return -1;
	if (r == PARSE_FAIL) {
		c->parse_failures++;
		return -1;
	}
	DBG(c, POINT_S1, DBG_PARSE_SUCCESS);
	if (filtered(cfg, p, c, POINT_S1))
		return -1;

	cpu = bpf_get_smp_processor_id();
	u64 now = bpf_ktime_get_ns();
	struct flow f = {
	    .ts_enqueue_ns = now,
	    .fingerprint = p->flow_fp,
	    .slot = slot,
	    .enqueue_cpu = cpu,
	    .tentative = tentative,
	    .queue_depth = ~0U,
	};
	hop_arrive(ctx, cfg, c, p, slot, now, &f);
	if (target_cpu < 0 && (iv->flags & IFACE_NO_RPS))
		target_cpu = cpu;
	if (tentative == FLOW_TENTATIVE_NAPI && rps_steers(skb))
		f.tentative = FLOW_NAPI_RPS;
	if (!tentative)
		count_enqueue(cfg, c, slot, target_cpu, &f, p->id.family == 6);
	u64 key = (u64)skb;
	flows.update(&key, &f);
	DBG(c, POINT_S1, DBG_FLOW_CREATE);
	return slot | (p->id.family == 6 ? ENQ_IPV6 : 0);
}

/* netif_receive_skb() either receives in place (synchronously: a tap, a
 * netdev bridge's internal port, any device without RPS that calls it) or,
 * with RPS, enqueues to a backlog. Each call pushes its skb here (the
 * tracepoint backend: 0 if untracked) and its exit pops it; an S2 of the top
 * skb on this CPU, inside that call, is a synchronous receive. A stack
 * because receives can nest (a tunnel or tap receiving inside one). */
#define PENDING_DEPTH 4 /* a power of two */
/* The exit's program is attached before the entry's (engine/program.py): an
 * entry whose exit went unseen would leave the stack one deeper for good,
 * and PENDING_DEPTH of them on a CPU would stop S1 there (a CI demo run
 * counted half a tap's packets so, with the entry attached first; held
 * back on purpose in tests/host/test_demo.py). An exit without its entry
 * finds depth 0. */
struct pending {
	u32 depth;
	u32 slot[PENDING_DEPTH];
	u64 skb[PENDING_DEPTH];
};
BPF_PERCPU_ARRAY(pendings, struct pending, 1);

static __always_inline int is_synchronous(u64 skb)
{
	u32 zero = 0, top;
	struct pending *pd = pendings.lookup(&zero);

	if (!pd || pd->depth == 0 || pd->depth > PENDING_DEPTH)
		return 0;
	/* the mask keeps the verifier sure of the bound after clang's rewrites */
	top = (pd->depth - 1) & (PENDING_DEPTH - 1);
	if (pd->skb[top] == skb) {
		pd->skb[top] = 0;
		return 1;
	}
	return 0;
}

/* ---- the S2 -> S3 entries of struct rx_state ---- */
static __always_inline void rx_reset(struct rx_state *r)
{
	r->n = 0;
	r->live = 0;
}

static __always_inline void rx_push(struct rx_state *r, u64 skb, u64 now, u32 slot,
				    struct origin *origin, u32 v6)
{
	struct last_receive *e = &r->e[r->n & (RX_RING - 1)];

	/* a full ring overwrites its oldest entry (pushed RX_RING ago): that
	 * packet's S3, if it ever comes, is not measured */
	if (r->n >= RX_RING && e->skb && r->live)
		r->live--;
	e->skb = skb;
	e->ts_receive_ns = now;
	e->origin = *origin;
	e->slot = slot;
	e->v6 = v6;
	r->n++;
	r->live++;
}

/* The newest entry of `skb`, taken (NULL: none). Newest first: an older
 * entry at the same address is a packet that never reached S3 (taken by an
 * rx_handler, dropped) and whose sk_buff was reused. */
static __always_inline struct last_receive *rx_take(struct rx_state *r, u64 skb)
{
	u32 n = r->n, i;

	if (!r->live)
		return 0;
	for (i = 0; i < RX_RING && i < n; i++) {
		struct last_receive *e = &r->e[(n - 1 - i) & (RX_RING - 1)];

		if (e->skb == skb) {
			e->skb = 0;
			if (--r->live == 0)
				r->n = 0;
			return e;
		}
	}
	return 0;
}

/* Wire packets an skb carries: skb_shinfo(skb)->gso_segs, 0 for a plain one.
 * skb->end is an offset from skb->head on 64-bit kernels. */
static __always_inline u32 skb_segments(void *skb)
{
	u32 end;
	u64 head;
	u16 segs = 0;
#ifdef TP_BTF
	if (KFIELD(end, skb, OFF_SKB_END) || KFIELD(head, skb, OFF_SKB_HEAD))
		return 1;
#else
	/* the two fields in one probe read */
	u8 buf[OFF_SKB_HEAD + 8 - OFF_SKB_END];

	if (bpf_probe_read_kernel(buf, sizeof(buf), skb + OFF_SKB_END))
		return 1;
	__builtin_memcpy(&end, buf, sizeof(end));
	__builtin_memcpy(&head, buf + (OFF_SKB_HEAD - OFF_SKB_END), sizeof(head));
#endif
	if (!head || KREAD(segs, head + end + OFF_SHINFO_GSO_SEGS))
		return 1;
	return segs > 1 ? segs : 1;
}

/* S2. `list`: kprobe/fentry: a receive __netif_receive_skb() did not make,
 * i.e. a GRO list's (decided by the caller); the tracepoint backend decides
 * here, from the NAPI poll in progress. */
static __always_inline void on_receive(void *ctx, void *skb, int list)
{
	struct rx_state *r;
	struct iface_val *iv;
	struct counters *c;
	struct config *cfg;
	struct flow *f;
	struct pkt *p;
	u32 slot, zero = 0, cpu, enqueue_cpu, queue_depth;
	u64 key = (u64)skb, now, ts;
	struct origin origin;

	dbg_global(POINT_S2, DBG_PROBE_ENTRY);
	p = pkt_buf(PKT_S2 + !!list);
	if (!p)
		return;
	/* Any other receive ends the S2 -> S3 window of the ones before it on
	 * this CPU. Else a packet that never reached ip_rcv() (dropped as
	 * PACKET_OTHERHOST, taken by an rx_handler) leaves an entry that a
	 * later skb at the same, recycled address would match: OVS re-injecting
	 * that very packet into its bridge port does exactly that, with
	 * identical headers. A list's receives keep the list's entries, and
	 * drop an older one at their own address (rx_take). The tracepoint
	 * backend knows a list receive by its S1 record (below), or for a
	 * packet it does not track by the NAPI poll in progress. */
	r = rx.lookup(&zero);
	if (!r)
		return;
#ifdef BACKEND_TRACEPOINT
	list = r->in_napi;
#else
	if (!list) {
		rx_reset(r);
		/* its __netif_receive_skb_core() tracepoint is no list receive */
		r->core_skb = key;
	}
#endif
	iv = iface_of(skb);
	if (!iv)
		goto untracked;
	slot = iv->slot;
	c = counters.lookup(&slot);
	cfg = config.lookup(&zero);
	if (!c || !cfg)
		goto untracked;
	DBG(c, POINT_S2, DBG_HANDLE_ENTRY);
	DBG(c, POINT_S2, DBG_PARSE_ENTRY);
	if (parse(skb, cfg, p) != PARSE_OK)
		goto untracked; /* counted at S1 */
	DBG(c, POINT_S2, DBG_PARSE_SUCCESS);
	if (filtered(cfg, p, c, POINT_S2))
		goto untracked;
	DBG(c, POINT_S2, DBG_FLOW_LOOKUP);
	f = flows.lookup(&key);
	now = bpf_ktime_get_ns();
	if (f && (f->fingerprint != p->flow_fp || f->slot != slot)) {
		/* a recycled sk_buff's record: another packet's */
		flows.delete(&key);
		f = 0;
	}
#ifdef BACKEND_TRACEPOINT
	if (f && f->tentative == FLOW_NAPI_RPS) {
		/* S1 was GRO's entry, and RPS put it in a backlog on the way (no
		 * tracepoint there: counted now) */
		c->enqueued++;
		c->ipv6_enqueued += p->id.family == 6;
		goto received;
	}
	/* S1 was GRO's entry and no RPS: a list receive (GRO may flush it
	 * after the poll that took it in, from a timer) */
	list = f && f->tentative == FLOW_TENTATIVE_NAPI;
	if (!list)
		rx_reset(r);
#endif
	/* A record S1 made for certain (not the tracepoint backend's tentative
	 * one) means this skb was enqueued: a backlog receive, even one that
	 * happens to run inside a netif_receive_skb() call. */
	if (list || (is_synchronous(key) && !(f && f->tentative == FLOW_CERTAIN))) {
		struct flow arrival = {};

		if (f && f->tentative != FLOW_CERTAIN) {
			/* tracepoint: S1 ran where the transit to this interface
			 * ended (netif_receive_skb or GRO entry) */
			arrival.origin = f->origin;
		} else {
			/* kprobe/fentry: S2 is where it ends */
			hop_arrive(ctx, cfg, c, p, slot, now, &arrival);
		}
		if (f)
			flows.delete(&key);
		c->received_sync++;
		c->ipv6_received_sync += p->id.family == 6;
		c->encapsulated += !!p->outer.tunnel;
		c->segments += skb_segments(skb);
		rx_push(r, key, now, slot, &arrival.origin, p->id.family == 6);
		hop_leave(cfg, p, slot, now, &arrival.origin);
		return;
	}
	if (!f) {
		/* Enqueued but refused by a full flow map, its record expired, or a
		 * recycled sk_buff: no latency is better than a wrong one. */
		struct flow arrival = {};

		c->flow_lookup_failures++;
		/* It still ends a transit to this interface and may travel on,
		 * its journey's origin inherited. */
		hop_arrive(ctx, cfg, c, p, slot, now, &arrival);
		hop_leave(cfg, p, slot, now, &arrival.origin);
		return;
	}
#ifdef BACKEND_TRACEPOINT
received:
#endif
	DBG(c, POINT_S2, DBG_FLOW_FOUND);
	ts = f->ts_enqueue_ns;
	enqueue_cpu = f->enqueue_cpu;
	queue_depth = f->queue_depth;
	origin = f->origin;
	flows.delete(&key);

	cpu = bpf_get_smp_processor_id();
	/* the histogram with its counter: user space reads a stage's histogram
	 * only when that counter moved (engine/collector.py) */
	record(cfg, slot, STAGE_ENQUEUE_TO_RECEIVE, now - ts);
	c->received++;
	c->ipv6_received += p->id.family == 6;
	c->encapsulated += !!p->outer.tunnel;
	c->segments += skb_segments(skb);
	if (cpu != enqueue_cpu)
		c->cross_cpu++;
	if ((cfg->flags & F_THRESHOLD) &&
	    (cfg->threshold_stages & (1 << THRESHOLD_ENQUEUE_TO_RECEIVE)) &&
	    now - ts > cfg->threshold_ns) {
		struct slow_times t = {
		    .start_ns = ts,
		    .end_ns = now,
		    .start_cpu = enqueue_cpu,
		    .queue_depth = queue_depth,
		    .stage = THRESHOLD_ENQUEUE_TO_RECEIVE,
		};
		slow_packet(ctx, cfg, c, p, slot, &t);
	}
	rx_push(r, key, now, slot, &origin, p->id.family == 6);
	hop_leave(cfg, p, slot, now, &origin);
	DBG(c, POINT_S2, DBG_LATENCY_SUBMIT);
	return;

untracked:
	/* not measured here: an older entry at its address is stale */
	if (list)
		rx_take(r, key);
#ifdef BACKEND_TRACEPOINT
	else
		rx_reset(r);
#endif
}

/* S3: runs synchronously inside the S2 call chain on the same CPU (a GRO
 * list's, after every S2 of the list), of either family's hook. */
static __always_inline void on_ip(void *ctx, void *skb)
{
	struct last_receive *lr;
	struct rx_state *r;
	struct counters *c;
	struct config *cfg;
	u32 slot, zero = 0;
	u64 now, took;

	dbg_global(POINT_S3, DBG_PROBE_ENTRY);
#if defined(OVSLAT_DEBUG) && !defined(BACKEND_TRACEPOINT)
	/* --debug only: the seed's S3 path (interface, parse, filters, lookup),
	 * so its debug statistics mean the same here. Not in a netfilter
	 * program, which may not read kernel memory. */
	{
		struct iface_val *iv = iface_of(skb);
		struct pkt *dp = pkt_buf(PKT_S3);
		struct counters *dc;

		if (!iv)
			return;
		slot = iv->slot;
		dc = counters.lookup(&slot);
		cfg = config.lookup(&zero);
		if (!dc || !cfg)
			return;
		DBG(dc, POINT_S3, DBG_HANDLE_ENTRY);
		DBG(dc, POINT_S3, DBG_PARSE_ENTRY);
		if (!dp || parse(skb, cfg, dp) != PARSE_OK)
			return;
		DBG(dc, POINT_S3, DBG_PARSE_SUCCESS);
		if (filtered(cfg, dp, dc, POINT_S3))
			return;
		DBG(dc, POINT_S3, DBG_FLOW_LOOKUP);
	}
#endif
	r = rx.lookup(&zero);
	if (!r)
		return;
	lr = rx_take(r, (u64)skb);
	if (!lr)
		return;
	slot = lr->slot;
	c = counters.lookup(&slot);
	cfg = config.lookup(&zero);
	if (!c || !cfg)
		return;
#if !defined(OVSLAT_DEBUG) || defined(BACKEND_TRACEPOINT)
	DBG(c, POINT_S3, DBG_HANDLE_ENTRY);
#endif
	DBG(c, POINT_S3, DBG_FLOW_FOUND);
	now = bpf_ktime_get_ns();
	took = now - lr->ts_receive_ns;
	record(cfg, slot, STAGE_RECEIVE_TO_IP, took); /* with ip_rcv, as above */
	if (lr->origin.slot != slot)
		record_hop(cfg, lr->origin.slot, slot, HOP_E2E, lr->origin.tunnel,
			   now - lr->origin.ns);
	c->ip_rcv++;
	c->ipv6_ip_rcv += lr->v6; /* the family S2 counted: a tunnel's inner packet's */
	DBG(c, POINT_S3, DBG_LATENCY_SUBMIT);
#ifndef BACKEND_TRACEPOINT
	/* The seed summary tool's --threshold reports S2 -> S3 too. Rare (S3
	 * runs inside S2's call), so the headers are read again only then. */
	if ((cfg->flags & F_THRESHOLD) &&
	    (cfg->threshold_stages & (1 << THRESHOLD_RECEIVE_TO_IP)) && took > cfg->threshold_ns) {
		struct pkt *p = pkt_buf(PKT_S3);

		if (!p || parse(skb, cfg, p) != PARSE_OK)
			return;
		struct slow_times t = {
		    .start_ns = lr->ts_receive_ns,
		    .end_ns = now,
		    .from_slot = slot,
		    .start_cpu = bpf_get_smp_processor_id(), /* S3 runs where S2 did */
		    .queue_depth = ~0U,
		    .stage = THRESHOLD_RECEIVE_TO_IP,
		};
		slow_packet(ctx, cfg, c, p, slot, &t);
	}
#endif
}

/* Learn each CPU's softnet_data from the backlog NAPI it polls: kallsyms has
 * no per-CPU data symbols without CONFIG_KALLSYMS_ALL, so this is how the
 * real backlog length becomes readable. One array read per poll once known.
 * Optional (attached by name, not autoloaded): without it queue depth is
 * not sampled, everything else still counts. */
int learn_napi_poll(struct bpf_raw_tracepoint_args *ctx)
{
	u32 cpu = bpf_get_smp_processor_id(), zero = 0;
	u64 *sd = backlogs.lookup(&cpu), poll = 0;
	void *napi = (void *)ctx->args[0];
	struct config *cfg;

#ifdef BACKEND_TRACEPOINT
	/* A poll ended below its budget (napi_complete_done() flushed GRO in
	 * it): no list receive follows. A poll that used its whole budget may
	 * still flush GRO after this tracepoint (napi_poll()'s repoll). */
	struct rx_state *r = rx.lookup(&zero);

	if (r && (int)ctx->args[1] < (int)ctx->args[2])
		r->in_napi = 0;
#endif
	if (!sd || *sd)
		return 0;
	cfg = config.lookup(&zero);
	if (cfg && cfg->backlog_poll_fn && !KFIELD(poll, napi, OFF_NAPI_POLL) &&
	    poll == cfg->backlog_poll_fn)
		*sd = (u64)napi - OFF_SD_BACKLOG;
	return 0;
}

/* An enqueued packet freed before S2 (backlog full, device down, ...): a
 * drop, attributed to its interface with the kernel's reason. A tentative
 * record (tracepoint backend) counts too: S2 deletes it for a synchronous
 * receive, so a free before S2 is a drop on the way to or in the backlog,
 * which netif_receive_skb_exit counts as enqueued (a GRO entry's: counted
 * here). Optional like the learner: a kernel that rejects it loses drop
 * attribution only. */
int drop_kfree_skb(struct bpf_raw_tracepoint_args *ctx)
{
	u64 key = ctx->args[0], one = 1, *n;
	struct flow *f = flows.lookup(&key);
	struct drop_key k = {};
	void *skb;
	struct counters *c;
	struct iface_val *iv;
	struct pkt *p;
	u32 zero = 0;

	if (!f)
		return 0;
	p = pkt_buf(PKT_DROP);
	if (!p)
		return 0;
	/* Only that very packet's free is its drop. A record whose packet left
	 * unseen (README's tap-RPS limit: S2 never ran for it) stays behind, and
	 * the next skb at that recycled address may be freed without an S1 that
	 * replaces it: an untracked packet, or one ip_rcv() drops elsewhere.
	 * That is no drop of this interface; the record's packet stays in
	 * flight. Parsed only here, for a tracked address: drops are rare. */
	/* The skb loaded from the context again: a verifier before Linux 6.2 or
	 * so forgets the BTF type of a pointer whose stack copy a map helper
	 * read (`key`), and tp_btf's field loads need the type. */
	skb = (void *)*(volatile u64 *)&ctx->args[0];
	iv = iface_of(skb);
	if (!iv || iv->slot != f->slot || parse(skb, config.lookup(&zero), p) != PARSE_OK ||
	    p->flow_fp != f->fingerprint) {
		flows.delete(&key);
		return 0;
	}
	k.slot = f->slot;
#ifdef KFREE_SKB_REASON
	/* enum skb_drop_reason (Linux >= 5.17). Reading an argument the
	 * tracepoint lacks makes the kernel refuse the program (EINVAL). */
	k.reason = ctx->args[2];
#endif
	c = counters.lookup(&k.slot);
	if (c) {
		c->dropped++;
		if (f->tentative >= FLOW_TENTATIVE_NAPI) {
			c->enqueued++;
			c->ipv6_enqueued += p->id.family == 6;
		}
	}
	flows.delete(&key);
	n = drops.lookup(&k);
	if (n)
		(*n)++;
	else
		drops.insert(&k, &one);
	return 0;
}

#ifndef BACKEND_TRACEPOINT
/* Which receives are synchronous (is_synchronous): the skb of each
 * netif_receive_skb() call in progress on this CPU. No lookup, no parse:
 * the S2 that follows does both. */
int tp_receive_entry(struct bpf_raw_tracepoint_args *ctx)
{
	u32 zero = 0, d;
	struct pending *pd = pendings.lookup(&zero);

	if (!pd)
		return 0;
	d = pd->depth++;
	if (d < PENDING_DEPTH)
		pd->skb[d & (PENDING_DEPTH - 1)] = ctx->args[0];
	return 0;
}

int tp_receive_exit(struct bpf_raw_tracepoint_args *ctx)
{
	u32 zero = 0, d;
	struct pending *pd = pendings.lookup(&zero);

	if (!pd || pd->depth == 0)
		return 0;
	d = --pd->depth;
	if (d < PENDING_DEPTH)
		pd->skb[d & (PENDING_DEPTH - 1)] = 0;
	return 0;
}

/* __netif_receive_skb_core() of every receive. One __netif_receive_skb() did
 * not announce is a GRO list's (__netif_receive_skb_list_core(): a NIC
 * without RPS): its S2 is here. */
int tp_receive(struct bpf_raw_tracepoint_args *ctx)
{
	u32 zero = 0;
	struct rx_state *r = rx.lookup(&zero);
	void *skb = (void *)ctx->args[0];

	if (!r)
		return 0;
	if (r->core_skb == (u64)skb) {
		r->core_skb = 0;
		return 0;
	}
	on_receive(ctx, skb, 1);
	return 0;
}

#if defined(HAVE_IP_LIST_RCV) || defined(HAVE_IPV6_LIST_RCV)
/* S3 of a GRO list: ip_list_rcv(head, ...) hands IPv4 (ipv6_list_rcv():
 * IPv6) the list's packets of one device and type, linked through
 * skb->list. */
static __always_inline void on_ip_list(void *ctx, void *head)
{
	void *skb = 0;
	int i;

	if (KREAD(skb, head))
		return;
	for (i = 0; i < RX_RING; i++) {
		if (!skb || skb == head)
			break;
		on_ip(ctx, skb);
		if (KREAD(skb, skb + OFF_SKB_NEXT))
			break;
	}
}
#endif
#endif

#if defined(BACKEND_FENTRY)

KFUNC_PROBE(enqueue_to_backlog, void *skb, int cpu)
{
	on_enqueue(ctx, skb, cpu, 0);
	return 0;
}

KFUNC_PROBE(__netif_receive_skb, void *skb)
{
	on_receive(ctx, skb, 0);
	return 0;
}

KFUNC_PROBE(ip_rcv, void *skb)
{
	on_ip(ctx, skb);
	return 0;
}

#ifdef HAVE_IP_LIST_RCV
KFUNC_PROBE(ip_list_rcv, void *head)
{
	on_ip_list(ctx, head);
	return 0;
}
#endif

#ifdef HAVE_IPV6_RCV
KFUNC_PROBE(ipv6_rcv, void *skb)
{
	on_ip(ctx, skb);
	return 0;
}
#endif

#ifdef HAVE_IPV6_LIST_RCV
KFUNC_PROBE(ipv6_list_rcv, void *head)
{
	on_ip_list(ctx, head);
	return 0;
}
#endif

#elif defined(BACKEND_KPROBE)

int kprobe_enqueue(struct pt_regs *ctx, void *skb, int cpu)
{
	on_enqueue(ctx, skb, cpu, 0);
	return 0;
}

int kprobe_receive(struct pt_regs *ctx, void *skb)
{
	on_receive(ctx, skb, 0);
	return 0;
}

int kprobe_ip(struct pt_regs *ctx, void *skb)
{
	on_ip(ctx, skb);
	return 0;
}

int kprobe_ipv6(struct pt_regs *ctx, void *skb)
{
	on_ip(ctx, skb);
	return 0;
}

#ifdef HAVE_IP_LIST_RCV
int kprobe_ip_list(struct pt_regs *ctx, void *head)
{
	on_ip_list(ctx, head);
	return 0;
}
#endif

#ifdef HAVE_IPV6_LIST_RCV
int kprobe_ipv6_list(struct pt_regs *ctx, void *head)
{
	on_ip_list(ctx, head);
	return 0;
}
#endif

#else /* BACKEND_TRACEPOINT */

/* netif_rx_internal(): always followed by enqueue_to_backlog(). */
int tp_netif_rx(struct bpf_raw_tracepoint_args *ctx)
{
	on_enqueue(ctx, (void *)ctx->args[0], -1, 0);
	return 0;
}

int tp_receive_entry(struct bpf_raw_tracepoint_args *ctx)
{
	u32 zero = 0, d;
	void *skb = (void *)ctx->args[0];
	struct pending *pd = pendings.lookup(&zero);
	s32 slot;

	if (!pd)
		return 0;
	d = pd->depth++;
	if (d >= PENDING_DEPTH)
		return 0;
	slot = on_enqueue(ctx, skb, -1, FLOW_TENTATIVE_CALL);
	d &= PENDING_DEPTH - 1;
	pd->skb[d] = slot < 0 ? 0 : (u64)skb;
	pd->slot[d] = slot < 0 ? 0 : slot;
	return 0;
}

int tp_receive_exit(struct bpf_raw_tracepoint_args *ctx)
{
	u32 zero = 0, d, slot;
	struct pending *pd = pendings.lookup(&zero);
	struct counters *c;

	if (!pd || pd->depth == 0)
		return 0;
	d = --pd->depth;
	if (d >= PENDING_DEPTH)
		return 0;
	d &= PENDING_DEPTH - 1;
	if (!pd->skb[d])
		return 0;
	/* Not received synchronously: it went to a backlog (RPS). Which CPU's
	 * is not visible here, so no queue depth sample. */
	slot = pd->slot[d] & (ENQ_IPV6 - 1);
	pd->skb[d] = 0;
	c = counters.lookup(&slot);
	if (c) {
		c->enqueued++;
		c->ipv6_enqueued += !!(pd->slot[d] & ENQ_IPV6);
	}
	return 0;
}

/* __netif_receive_skb_core() */
int tp_receive(struct bpf_raw_tracepoint_args *ctx)
{
	on_receive(ctx, (void *)ctx->args[0], 0);
	return 0;
}

/* A NAPI device (a NIC, a veth running XDP) passing a packet to GRO: the
 * earliest per-packet tracepoint of its receive, so S1 without kprobes.
 * GRO, then RPS's enqueue to a backlog (which has no tracepoint), come
 * after it: S1 -> S2 includes GRO's wait for the rest of its batch. Without
 * RPS, S2 is the list receive at the end of this poll: synchronous. These
 * hooks are attached by name (napi_poll must be too: it ends `in_napi`). */
static __always_inline void napi_entry(void *ctx, void *skb, int gro)
{
	u32 zero = 0;
	struct rx_state *r = rx.lookup(&zero);
	s32 slot;

	if (!r)
		return;
	r->in_napi = 1;
	slot = on_enqueue(ctx, skb, -1, FLOW_TENTATIVE_NAPI);
	r->napi_skb = gro && slot >= 0 ? (u64)skb : 0;
}

int napi_gro_entry(struct bpf_raw_tracepoint_args *ctx)
{
	napi_entry(ctx, (void *)ctx->args[0], 1);
	return 0;
}

/* netif_receive_skb_list(): a driver handing over a list without GRO */
int napi_list_entry(struct bpf_raw_tracepoint_args *ctx)
{
	napi_entry(ctx, (void *)ctx->args[0], 0);
	return 0;
}

/* GRO merged the packet into another skb (that one's `segments` count it
 * at S2) or a tunnel's GRO consumed it: no S2 of its own will come. */
int napi_gro_exit(struct bpf_raw_tracepoint_args *ctx)
{
	u32 zero = 0;
	struct rx_state *r = rx.lookup(&zero);
	int ret = ctx->args[0];
	u64 key;
	struct flow *f;

	if (!r || !r->napi_skb)
		return 0;
	key = r->napi_skb;
	r->napi_skb = 0;
	if (ret != OVSLAT_GRO_MERGED && ret != OVSLAT_GRO_MERGED_FREE && ret != OVSLAT_GRO_CONSUMED)
		return 0;
	f = flows.lookup(&key);
	if (f && f->tentative >= FLOW_TENTATIVE_NAPI)
		flows.delete(&key);
	return 0;
}

/* S3 without kprobes: a BPF netfilter program (Linux >= 6.4) at IPv4
 * PRE_ROUTING, which ip_rcv() runs right after validating the header, and
 * one at IPv6 PRE_ROUTING (ipv6_rcv()). The context is struct bpf_nf_ctx
 * { state; skb; }. */
struct bpf_nf_ctx_mirror {
	void *state;
	void *skb;
};
int netfilter_ip_rcv(struct bpf_nf_ctx_mirror *ctx)
{
	/* A direct context read: netfilter programs may not call the probe
	 * read helpers (bcc falls back to bpf_probe_read when it runs without
	 * root, and the verifier refuses that helper here). */
	void *skb = ctx->skb;

	if (skb)
		on_ip(ctx, skb);
	return 1; /* NF_ACCEPT */
}

int netfilter_ipv6_rcv(struct bpf_nf_ctx_mirror *ctx)
{
	void *skb = ctx->skb;

	if (skb)
		on_ip(ctx, skb);
	return 1; /* NF_ACCEPT */
}

#endif
