/* ovslat: receive-path latency across the backlog boundary, many interfaces at once.
 *
 *   S1 enqueue_to_backlog   packet queued to a CPU's backlog
 *   S2 __netif_receive_skb  dequeued by process_backlog() in softirq
 *   S3 ip_rcv               handed to IPv4
 *
 * One program serves every monitored interface: `ifaces` maps
 * (netns inode, ifindex) to a slot, and every per-interface map is indexed by
 * slot. Histograms and counters live in per-CPU arrays; user space sums them.
 *
 * Built by ovslat/engine/program.py with cflags giving:
 *   BACKEND_FENTRY | BACKEND_KPROBE | BACKEND_TRACEPOINT
 *   MAX_IFACES, MAX_FLOWS, MAX_HOPS, OVSLAT_NR_CPUS, OVSLAT_DEBUG (optional)
 *   OFF_* struct offsets read from the running kernel's BTF, never from the
 *   header tree bcc compiles against (it may be another kernel's).
 */
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>

#include "ovslat.h"

BPF_HASH(ifaces, struct iface_key, struct iface_val, MAX_IFACES);
BPF_ARRAY(config, struct config, 1);
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
BPF_PERCPU_ARRAY(last_rx, struct last_receive, 1);
/* address of each CPU's softnet_data, learnt from its backlog NAPI polls */
BPF_ARRAY(backlogs, u64, OVSLAT_NR_CPUS);
/* Marks left at S2 for S1 on the next interface: an array indexed by the
 * header fingerprint costs a fraction of a hash map update on every packet.
 * A mark overwritten by another packet before its own S1 loses that hop,
 * counted in hops_lost (hop_leave). */
BPF_ARRAY(hop_marks, struct hop_entry, HOP_SLOTS);
/* 1 once an interface has started a hop: its overwritten marks are losses */
BPF_ARRAY(hop_sources, u32, MAX_IFACES);
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

#define KREAD(dst, src) bpf_probe_read_kernel(&(dst), sizeof(dst), (void *)(src))

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

enum { PARSE_OK = 0, PARSE_NOT_IPV4, PARSE_FAIL };

struct pkt {
	struct pkt_id id;
	u16 sport;
	u16 dport;
	u32 has_ports;
	u32 fingerprint;
};

static __always_inline u32 mix32(u32 h, u32 v)
{
	h ^= v * 0x9E3779B1u;
	return (h << 13 | h >> 19) * 5 + 0xE6546B64u;
}

static __always_inline int parse(void *skb, struct pkt *p)
{
	u16 eth_proto = 0;
	void *data = 0;
	struct iphdr ip;
	u32 l4[2] = {};

	if (KREAD(eth_proto, skb + OFF_SKB_PROTOCOL) || eth_proto != bpf_htons(ETH_P_IP))
		return PARSE_NOT_IPV4;
	/* At S1, S2 and S3 skb->data points at the IP header: eth_type_trans()
	 * ran before netif_rx()/netif_receive_skb() on every Ethernet path. */
	if (KREAD(data, skb + OFF_SKB_DATA) || !data)
		return PARSE_FAIL;
	if (bpf_probe_read_kernel(&ip, sizeof(ip), data) || ip.version != 4 || ip.ihl < 5)
		return PARSE_FAIL;
	p->id.saddr = ip.saddr;
	p->id.daddr = ip.daddr;
	p->id.proto = ip.protocol;
	p->id.ip_id = ip.id;
	p->id.tot_len = ip.tot_len;
	/* Only the first fragment carries the L4 header. */
	if (!(ip.frag_off & bpf_htons(0x1fff))) {
		void *l4p = data + ip.ihl * 4;
		if (ip.protocol == IPPROTO_TCP) {
			if (KREAD(l4, l4p)) /* ports + sequence number */
				return PARSE_FAIL;
		} else if (ip.protocol == IPPROTO_UDP) {
			if (KREAD(l4[0], l4p))
				return PARSE_FAIL;
		} else if (ip.protocol == IPPROTO_ICMP) {
			if (KREAD(l4[0], l4p + 4)) /* echo id + sequence */
				return PARSE_FAIL;
		}
		if (ip.protocol == IPPROTO_TCP || ip.protocol == IPPROTO_UDP) {
			p->sport = bpf_ntohs((u16)l4[0]);
			p->dport = bpf_ntohs((u16)(l4[0] >> 16));
			p->has_ports = 1;
		}
	}
	p->id.l4 = l4[0];
	p->id.seq = l4[1];
	p->fingerprint = mix32(mix32(mix32(ip.saddr, ip.daddr), (u32)ip.id << 16 | ip.tot_len),
			       l4[0] ^ l4[1] ^ ip.protocol);
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
	if (((fl & F_SRC_IP) && p->id.saddr != cfg->src_ip) ||
	    ((fl & F_DST_IP) && p->id.daddr != cfg->dst_ip)) {
		DBG(c, point, DBG_IP_FILTER);
		return 1;
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

	if (KREAD(dev, skb + OFF_SKB_DEV) || !dev)
		return 0;
	if (KREAD(k.ifindex, dev + OFF_DEV_IFINDEX) || KREAD(net, dev + OFF_DEV_NET) || !net ||
	    KREAD(k.netns, net + OFF_NET_INUM))
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

static __always_inline void record_hop(struct config *cfg, u32 from, u32 to, u32 kind, u64 ns)
{
	struct hop_key k = {.from = from, .to = to, .kind = kind};
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

static __always_inline void slow_packet(void *ctx, struct config *cfg, struct counters *c,
					struct slow_event *ev)
{
	u32 zero = 0;
	struct budget *b = budgets.lookup(&zero);

	c->slow++;
	if (!b)
		return;
	if (ev->ts_receive_ns - b->window_ns >= 1000000000ULL) {
		b->window_ns = ev->ts_receive_ns;
		b->used = 0;
	}
	if (b->used >= cfg->events_per_cpu_s) {
		c->events_suppressed++;
		return;
	}
	b->used++;
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
	return a->saddr == b->saddr && a->daddr == b->daddr && a->l4 == b->l4 && a->seq == b->seq &&
	       a->ip_id == b->ip_id && a->tot_len == b->tot_len && a->proto == b->proto;
}

/* S1 on `slot`: was this packet just received on another interface? Then
 * record the transit and inherit where its journey began. */
static __always_inline void hop_arrive(void *ctx, struct config *cfg, struct counters *c,
				       struct pkt *p, u32 slot, u64 now, struct flow *f)
{
	struct hop_entry *e;
	struct hop_mark *mark;
	u32 idx;

	f->origin_ns = now;
	f->origin_slot = slot;
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

		if (src && !*src)
			*src = 1;
		record_hop(cfg, mark->slot, slot, HOP_TRANSIT, now - mark->ts_receive_ns);
		f->origin_ns = mark->origin_ns;
		f->origin_slot = mark->origin_slot;
		if ((cfg->flags & F_THRESHOLD) &&
		    (cfg->threshold_stages & (1 << THRESHOLD_TRANSIT)) &&
		    now - mark->ts_receive_ns > cfg->threshold_ns) {
			struct slow_event ev = {
			    .ts_enqueue_ns = mark->ts_receive_ns,
			    .ts_receive_ns = now,
			    .id = p->id,
			    .sport = p->sport,
			    .dport = p->dport,
			    .slot = slot,
			    .from_slot = mark->slot,
			    .enqueue_cpu = mark->cpu,
			    .receive_cpu = bpf_get_smp_processor_id(),
			    .queue_depth = ~0U,
			    .stage = THRESHOLD_TRANSIT,
			};
			slow_packet(ctx, cfg, c, &ev);
		}
	}
	mark->ts_receive_ns = 0; /* consumed */
}

/* S2 on `slot`: leave a mark for the next interface this packet reaches. */
static __always_inline void hop_leave(struct config *cfg, struct pkt *p, u32 slot, u64 now,
				      u64 origin_ns, u32 origin_slot)
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

		if (src && *src && lc)
			lc->hops_lost++;
	}
	e->id = p->id;
	e->mark.ts_receive_ns = now;
	e->mark.origin_ns = origin_ns;
	e->mark.slot = slot;
	e->mark.origin_slot = origin_slot;
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
					  s32 target_cpu, struct flow *f)
{
	s64 qlen = target_cpu < 0 ? -1 : backlog_len(target_cpu);

	c->enqueued++;
	if (qlen >= 0) {
		f->queue_depth = qlen;
		c->queue_depth_sum += qlen;
		c->queue_depth_samples++;
		update_max(cfg->epoch, slot, MAX_QUEUE_DEPTH, qlen);
	}
}

/* S1. target_cpu < 0: not known at this hook (tracepoint backend): the local
 * CPU when the interface has no RPS, else unknown and no queue depth is
 * sampled rather than a wrong one. tentative:
 * the hook cannot tell yet whether the packet is enqueued at all. Returns the
 * interface slot, or -1 when the packet is not tracked. */
static __always_inline s32 on_enqueue(void *ctx, void *skb, s32 target_cpu, u32 tentative)
{
	struct iface_val *iv;
	struct counters *c;
	struct config *cfg;
	struct pkt p = {};
	u32 slot, zero = 0, cpu;
	int r;

	dbg_global(POINT_S1, DBG_PROBE_ENTRY);
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
	r = parse(skb, &p);
	if (r == PARSE_NOT_IPV4)
		return -1;
	if (r == PARSE_FAIL) {
		c->parse_failures++;
		return -1;
	}
	DBG(c, POINT_S1, DBG_PARSE_SUCCESS);
	if (filtered(cfg, &p, c, POINT_S1))
		return -1;

	cpu = bpf_get_smp_processor_id();
	u64 now = bpf_ktime_get_ns();
	struct flow f = {
	    .ts_enqueue_ns = now,
	    .fingerprint = p.fingerprint,
	    .slot = slot,
	    .enqueue_cpu = cpu,
	    .tentative = tentative,
	    .queue_depth = ~0U,
	};
	hop_arrive(ctx, cfg, c, &p, slot, now, &f);
	if (target_cpu < 0 && (iv->flags & IFACE_NO_RPS))
		target_cpu = cpu;
	if (!tentative)
		count_enqueue(cfg, c, slot, target_cpu, &f);
	u64 key = (u64)skb;
	flows.update(&key, &f);
	DBG(c, POINT_S1, DBG_FLOW_CREATE);
	return slot;
}

/* netif_receive_skb() either receives in place (synchronously: a tap, a
 * netdev bridge's internal port, any device without RPS that calls it) or,
 * with RPS, enqueues to a backlog. Each call pushes its skb here (the
 * tracepoint backend: 0 if untracked) and its exit pops it; an S2 of the top
 * skb on this CPU, inside that call, is a synchronous receive. A stack
 * because receives can nest (a tunnel or tap receiving inside one). */
#define PENDING_DEPTH 4 /* a power of two */
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

/* S2 */
static __always_inline void on_receive(void *ctx, void *skb)
{
	struct last_receive *lr;
	struct iface_val *iv;
	struct counters *c;
	struct config *cfg;
	struct flow *f;
	struct pkt p = {};
	u32 slot, zero = 0, cpu, enqueue_cpu, origin_slot, queue_depth;
	u64 key = (u64)skb, now, ts, origin_ns;

	dbg_global(POINT_S2, DBG_PROBE_ENTRY);
	/* Any receive ends the previous one's S2 -> S3 window on this CPU. Else a
	 * packet that never reached ip_rcv() (dropped as PACKET_OTHERHOST, taken
	 * by an rx_handler) leaves a record that a later skb at the same,
	 * recycled address would match: OVS re-injecting that very packet into
	 * its bridge port does exactly that, with identical headers. */
	lr = last_rx.lookup(&zero);
	if (lr)
		lr->skb = 0;
	iv = iface_of(skb);
	if (!iv)
		return;
	slot = iv->slot;
	c = counters.lookup(&slot);
	cfg = config.lookup(&zero);
	if (!c || !cfg)
		return;
	DBG(c, POINT_S2, DBG_HANDLE_ENTRY);
	DBG(c, POINT_S2, DBG_PARSE_ENTRY);
	if (parse(skb, &p) != PARSE_OK)
		return; /* counted at S1 */
	DBG(c, POINT_S2, DBG_PARSE_SUCCESS);
	if (filtered(cfg, &p, c, POINT_S2))
		return;
	DBG(c, POINT_S2, DBG_FLOW_LOOKUP);
	f = flows.lookup(&key);
	now = bpf_ktime_get_ns();
	/* A record S1 made for certain (not the tracepoint backend's tentative
	 * one) means this skb was enqueued: a backlog receive, even one that
	 * happens to run inside a netif_receive_skb() call. */
	if (is_synchronous(key) && !(f && !f->tentative)) {
		struct flow arrival = {};

		if (f && f->fingerprint == p.fingerprint && f->slot == slot) {
			/* tracepoint: S1 ran at netif_receive_skb_entry, where the
			 * transit to this interface ended */
			arrival.origin_ns = f->origin_ns;
			arrival.origin_slot = f->origin_slot;
		} else {
			/* kprobe/fentry: S2 is where it ends */
			hop_arrive(ctx, cfg, c, &p, slot, now, &arrival);
		}
		if (f)
			flows.delete(&key);
		c->received_sync++;
		if (lr) {
			lr->skb = key;
			lr->ts_receive_ns = now;
			lr->origin_ns = arrival.origin_ns;
			lr->slot = slot;
			lr->origin_slot = arrival.origin_slot;
		}
		hop_leave(cfg, &p, slot, now, arrival.origin_ns, arrival.origin_slot);
		return;
	}
	if (!f || f->fingerprint != p.fingerprint || f->slot != slot) {
		/* Enqueued but refused by a full flow map, its record expired, or a
		 * recycled sk_buff: no latency is better than a wrong one. */
		struct flow arrival = {};

		c->flow_lookup_failures++;
		if (f)
			flows.delete(&key);
		/* It still ends a transit to this interface and may travel on,
		 * its journey's origin inherited. */
		hop_arrive(ctx, cfg, c, &p, slot, now, &arrival);
		hop_leave(cfg, &p, slot, now, arrival.origin_ns, arrival.origin_slot);
		return;
	}
	DBG(c, POINT_S2, DBG_FLOW_FOUND);
	ts = f->ts_enqueue_ns;
	enqueue_cpu = f->enqueue_cpu;
	queue_depth = f->queue_depth;
	origin_ns = f->origin_ns;
	origin_slot = f->origin_slot;
	flows.delete(&key);

	cpu = bpf_get_smp_processor_id();
	/* the histogram with its counter: user space reads a stage's histogram
	 * only when that counter moved (engine/collector.py) */
	record(cfg, slot, STAGE_ENQUEUE_TO_RECEIVE, now - ts);
	c->received++;
	if (cpu != enqueue_cpu)
		c->cross_cpu++;
	if ((cfg->flags & F_THRESHOLD) &&
	    (cfg->threshold_stages & (1 << THRESHOLD_ENQUEUE_TO_RECEIVE)) &&
	    now - ts > cfg->threshold_ns) {
		struct slow_event ev = {
		    .ts_enqueue_ns = ts,
		    .ts_receive_ns = now,
		    .id = p.id,
		    .sport = p.sport,
		    .dport = p.dport,
		    .slot = slot,
		    .enqueue_cpu = enqueue_cpu,
		    .receive_cpu = cpu,
		    .queue_depth = queue_depth,
		};
		slow_packet(ctx, cfg, c, &ev);
	}
	if (lr) {
		lr->skb = key;
		lr->ts_receive_ns = now;
		lr->origin_ns = origin_ns;
		lr->slot = slot;
		lr->origin_slot = origin_slot;
	}
	hop_leave(cfg, &p, slot, now, origin_ns, origin_slot);
	DBG(c, POINT_S2, DBG_LATENCY_SUBMIT);
}

/* S3: runs synchronously inside the S2 call chain on the same CPU. */
static __always_inline void on_ip(void *ctx, void *skb)
{
	struct last_receive *lr;
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
		struct pkt dp = {};
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
		if (parse(skb, &dp) != PARSE_OK)
			return;
		DBG(dc, POINT_S3, DBG_PARSE_SUCCESS);
		if (filtered(cfg, &dp, dc, POINT_S3))
			return;
		DBG(dc, POINT_S3, DBG_FLOW_LOOKUP);
	}
#endif
	lr = last_rx.lookup(&zero);
	if (!lr || lr->skb != (u64)skb)
		return;
	slot = lr->slot;
	lr->skb = 0;
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
	if (lr->origin_slot != slot)
		record_hop(cfg, lr->origin_slot, slot, HOP_E2E, now - lr->origin_ns);
	c->ip_rcv++;
	DBG(c, POINT_S3, DBG_LATENCY_SUBMIT);
#ifndef BACKEND_TRACEPOINT
	/* The seed summary tool's --threshold reports S2 -> S3 too. Rare (S3
	 * runs inside S2's call), so the headers are read again only then. */
	if ((cfg->flags & F_THRESHOLD) &&
	    (cfg->threshold_stages & (1 << THRESHOLD_RECEIVE_TO_IP)) && took > cfg->threshold_ns) {
		struct pkt p = {};
		u32 cpu = bpf_get_smp_processor_id();

		if (parse(skb, &p) != PARSE_OK)
			return;
		struct slow_event ev = {
		    .ts_enqueue_ns = lr->ts_receive_ns,
		    .ts_receive_ns = now,
		    .id = p.id,
		    .sport = p.sport,
		    .dport = p.dport,
		    .slot = slot,
		    .from_slot = slot,
		    .enqueue_cpu = cpu,
		    .receive_cpu = cpu,
		    .queue_depth = ~0U,
		    .stage = THRESHOLD_RECEIVE_TO_IP,
		};
		slow_packet(ctx, cfg, c, &ev);
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

	if (!sd || *sd)
		return 0;
	cfg = config.lookup(&zero);
	if (cfg && cfg->backlog_poll_fn && !KREAD(poll, napi + OFF_NAPI_POLL) &&
	    poll == cfg->backlog_poll_fn)
		*sd = (u64)napi - OFF_SD_BACKLOG;
	return 0;
}

/* An enqueued packet freed before S2 (backlog full, device down, ...): a
 * drop, attributed to its interface with the kernel's reason. A tentative
 * record (tracepoint backend) counts too: S2 deletes it for a synchronous
 * receive, so a free before S2 is a drop on the way to or in the backlog,
 * which netif_receive_skb_exit counts as enqueued. Optional like the learner:
 * a kernel that rejects it loses drop attribution only. */
int drop_kfree_skb(struct bpf_raw_tracepoint_args *ctx)
{
	u64 key = ctx->args[0], one = 1, *n;
	struct flow *f = flows.lookup(&key);
	struct drop_key k = {};
	struct counters *c;

	if (!f)
		return 0;
	k.slot = f->slot;
#ifdef KFREE_SKB_REASON
	/* enum skb_drop_reason (Linux >= 5.17). Reading an argument the
	 * tracepoint lacks makes the kernel refuse the program (EINVAL). */
	k.reason = ctx->args[2];
#endif
	flows.delete(&key);
	c = counters.lookup(&k.slot);
	if (c)
		c->dropped++;
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
RAW_TRACEPOINT_PROBE(netif_receive_skb_entry)
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

RAW_TRACEPOINT_PROBE(netif_receive_skb_exit)
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
#endif

#if defined(BACKEND_FENTRY)

KFUNC_PROBE(enqueue_to_backlog, void *skb, int cpu)
{
	on_enqueue(ctx, skb, cpu, 0);
	return 0;
}

KFUNC_PROBE(__netif_receive_skb, void *skb)
{
	on_receive(ctx, skb);
	return 0;
}

KFUNC_PROBE(ip_rcv, void *skb)
{
	on_ip(ctx, skb);
	return 0;
}

#elif defined(BACKEND_KPROBE)

int kprobe_enqueue(struct pt_regs *ctx, void *skb, int cpu)
{
	on_enqueue(ctx, skb, cpu, 0);
	return 0;
}

int kprobe_receive(struct pt_regs *ctx, void *skb)
{
	on_receive(ctx, skb);
	return 0;
}

int kprobe_ip(struct pt_regs *ctx, void *skb)
{
	on_ip(ctx, skb);
	return 0;
}

#else /* BACKEND_TRACEPOINT */

/* netif_rx_internal(): always followed by enqueue_to_backlog(). */
RAW_TRACEPOINT_PROBE(netif_rx)
{
	on_enqueue(ctx, (void *)ctx->args[0], -1, 0);
	return 0;
}

RAW_TRACEPOINT_PROBE(netif_receive_skb_entry)
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
	slot = on_enqueue(ctx, skb, -1, 1);
	d &= PENDING_DEPTH - 1;
	pd->skb[d] = slot < 0 ? 0 : (u64)skb;
	pd->slot[d] = slot < 0 ? 0 : slot;
	return 0;
}

RAW_TRACEPOINT_PROBE(netif_receive_skb_exit)
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
	slot = pd->slot[d];
	pd->skb[d] = 0;
	c = counters.lookup(&slot);
	if (c)
		c->enqueued++;
	return 0;
}

/* __netif_receive_skb_core() */
RAW_TRACEPOINT_PROBE(netif_receive_skb)
{
	on_receive(ctx, (void *)ctx->args[0]);
	return 0;
}

/* S3 without kprobes: a BPF netfilter program (Linux >= 6.4) at IPv4
 * PRE_ROUTING, which ip_rcv() runs right after validating the header. The
 * context is struct bpf_nf_ctx { state; skb; }. */
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

#endif
