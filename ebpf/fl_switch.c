// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// fablab's switch as an XDP program, attached to every port of a switch namespace.
// docs/ebpf.md describes it; this file follows the dataplane's switch
// (dataplane/src/switch/) where XDP allows:
//
// - parse Ethernet / IPv4 (no options, checksum checked) / UDP or TCP ports;
// - look the destination up in an LPM trie of equal-cost egress ports (userspace
//   keeps ports that are down out of them) and pick one by the scenario's policy
//   (ecmp, spray-rr, spray-random, adaptive);
// - admit the frame to the egress port's virtual queue (XDP sends at once, so the
//   queue a real port would hold is computed: it drains at the port's rate by
//   timestamp arithmetic), drop it when the queue is full, mark ECN between kmin
//   and kmax as the dataplane does;
// - for RoCEv2 data: be the INT source (insert the INT block after UDP) or push
//   this hop onto the stack, in the wire format of docs/wire.md;
// - decrement the TTL, rewrite the MACs and XDP_REDIRECT through a devmap.
//
// Differences from the dataplane's switch, because XDP forwards without holding
// frames: the queue is virtual (no frame waits; occupancy, drops and ECN follow
// from arrivals and the drain rate), the INT egress timestamp is the frame's
// virtual departure (arrival + queue ahead of it / rate) and its queue occupancy
// the bytes ahead of it. The ICRC is not checked here (the receiving NIC checks it).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "fablab.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fl_config);
} fl_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FL_MAX_PORTS);
	__type(key, __u32);
	__type(value, struct fl_port);
} fl_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fl_route_key);
	__type(value, struct fl_route);
} fl_routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FL_MAX_PORTS);
	__type(key, __u32);
	__type(value, struct fl_queue_locked);
} fl_queues SEC(".maps");

/* Egress: port number -> ifindex (written from inside the switch's namespace). */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, FL_MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} fl_tx SEC(".maps");

/* Ingress: ifindex -> port number, for INT's ingress port ID. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, FL_MAX_PORTS);
	__type(key, __u32);
	__type(value, __u32);
} fl_ifports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FL_RR_SLOTS);
	__type(key, __u32);
	__type(value, __u32);
} fl_rr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FL_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} fl_stats SEC(".maps");

#define ETH_LEN 14
#define IP_LEN 20
#define UDP_LEN 8
#define L4_OFF (ETH_LEN + IP_LEN)
#define BTH_OFF (L4_OFF + UDP_LEN)
#define SHIM_LEN 4
#define MD_LEN 12
#define STACK_OFF (BTH_OFF + SHIM_LEN + MD_LEN)
#define INT_SOURCE_LEN (SHIM_LEN + MD_LEN + FL_INT_HOP_BYTES)

static __always_inline void count(__u32 what)
{
	__u64 *c = bpf_map_lookup_elem(&fl_stats, &what);
	if (c)
		*c += 1;
}

static __always_inline int drop(__u32 why)
{
	count(why);
	return XDP_DROP;
}

/* The ones' complement sum of the 20-byte IPv4 header, folded: 0xffff when the
 * header's checksum is right. */
static __always_inline __u16 ip_sum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 s = 0;
#pragma unroll
	for (int i = 0; i < IP_LEN / 2; i++)
		s += w[i];
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

static __always_inline void ip_fix_checksum(struct iphdr *ip)
{
	ip->check = 0;
	ip->check = ~ip_sum(ip);
}

/* splitmix64, as the dataplane's. */
static __always_inline __u64 mix(__u64 x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* The queue ahead of a frame arriving now: the occupancy at `at`, drained since. */
static __always_inline __u64 drained(const struct fl_queue *q, __u64 now, __u32 rate_mbps)
{
	if (now <= q->at || rate_mbps == 0)
		return q->bytes;
	__u64 dt = now - q->at;
	/* Long idle: empty, and no overflow in dt * rate below. */
	if (dt >= q->bytes * 8000 / rate_mbps + 1)
		return 0;
	__u64 gone = dt * rate_mbps / 8000;
	return q->bytes > gone ? q->bytes - gone : 0;
}

static __always_inline void put_be16(__u8 *p, __u16 v)
{
	p[0] = v >> 8;
	p[1] = v;
}

static __always_inline void put_be32(__u8 *p, __u32 v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

static __always_inline void put_be64(__u8 *p, __u64 v)
{
	put_be32(p, v >> 32);
	put_be32(p + 4, v);
}

/* One fablab INT hop (docs/wire.md, "Metadata stack"). */
struct hop {
	__u32 node;
	__u16 in_port;
	__u16 out_port;
	__u32 qlen;
	__u64 ts;
	__u64 tx_bytes;
	__u32 rate_mbps;
};

static __always_inline void put_hop(__u8 *p, const struct hop *h)
{
	put_be32(p, h->node);
	put_be16(p + 4, h->in_port);
	put_be16(p + 6, h->out_port);
	put_be32(p + 8, h->qlen > 0xffffff ? 0xffffff : h->qlen); /* queue ID 0 */
	put_be64(p + 12, h->ts);
	put_be64(p + 20, h->tx_bytes);
	put_be32(p + 28, h->rate_mbps);
}

/* Moves the first `n` bytes of the frame `by` bytes down after the frame grew by
 * `by` at its head: lowest byte first, which is safe although the ranges overlap. */
#define MOVE_DOWN(data, n, by)                                                       \
	do {                                                                         \
		_Pragma("unroll") for (int i_ = 0; i_ < (n); i_++)                   \
			((__u8 *)(data))[i_] = ((__u8 *)(data))[i_ + (by)];          \
	} while (0)

/* After the frame grew by `by` bytes after UDP: IPv4 total length and checksum,
 * UDP length, and no UDP checksum (RoCEv2 over IPv4 sends none; the ICRC covers
 * the transport). */
static __always_inline void grew(void *data, __u16 by)
{
	struct iphdr *ip = data + ETH_LEN;
	__u8 *udp = (__u8 *)data + L4_OFF;
	ip->tot_len = bpf_htons(bpf_ntohs(ip->tot_len) + by);
	ip_fix_checksum(ip);
	put_be16(udp + 4, ((udp[4] << 8) | udp[5]) + by);
	put_be16(udp + 6, 0);
}

/* INT source: insert the shim and INT-MD header after UDP, with room for this
 * hop at the top of the stack (STACK_OFF), which the caller writes. */
static __always_inline int int_source(struct xdp_md *ctx)
{
	if (bpf_xdp_adjust_head(ctx, -INT_SOURCE_LEN))
		return -1;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	/* The moved headers come from [INT_SOURCE_LEN, INT_SOURCE_LEN + BTH_OFF); the
	 * block ends at BTH_OFF + INT_SOURCE_LEN: the same bound. */
	if (data + BTH_OFF + INT_SOURCE_LEN > end)
		return -1;
	MOVE_DOWN(data, BTH_OFF, INT_SOURCE_LEN);
	__u8 *b = (__u8 *)data + BTH_OFF;
	/* Shim: INT-MD, NPT 1, length in words, the original destination port. */
	b[0] = (1 << 4) | (1 << 2);
	b[1] = INT_SOURCE_LEN / 4;
	put_be16(b + 2, FL_ROCEV2_PORT);
	/* INT-MD header: version 2, Hop ML, remaining hop count after this hop. */
	b[4] = 2 << 4;
	b[5] = 0;
	b[6] = FL_INT_HOP_WORDS;
	b[7] = FL_INT_MAX_HOPS - 1;
	put_be16(b + 8, FL_INT_INSTRUCTIONS);
	put_be16(b + 10, FL_INT_DS_ID);
	put_be16(b + 12, FL_INT_DS_INSTRUCTIONS);
	put_be16(b + 14, 0);

	struct iphdr *ip = data + ETH_LEN;
	ip->tos |= FL_INT_DSCP_BIT << 2;
	put_be16((__u8 *)data + L4_OFF + 2, FL_INT_PORT);
	grew(data, INT_SOURCE_LEN);
	count(FL_STAT_INT_SOURCE);
	return 0;
}

/* INT transit: make room for this hop on top of the stack (STACK_OFF), which the
 * caller writes. */
static __always_inline int int_push(struct xdp_md *ctx)
{
	if (bpf_xdp_adjust_head(ctx, -FL_INT_HOP_BYTES))
		return -1;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	/* Reads reach STACK_OFF + FL_INT_HOP_BYTES, and so does the new hop. */
	if (data + STACK_OFF + FL_INT_HOP_BYTES > end)
		return -1;
	MOVE_DOWN(data, STACK_OFF, FL_INT_HOP_BYTES);
	__u8 *b = (__u8 *)data + BTH_OFF;
	b[1] += FL_INT_HOP_WORDS;
	b[7] -= 1;
	grew(data, FL_INT_HOP_BYTES);
	count(FL_STAT_INT_PUSHED);
	return 0;
}

/* State of the adaptive scan over a route's candidates. */
struct scan {
	struct fl_route *r;
	__u32 n;
	__u32 start;
	__u64 now;
	__u64 best;
	__u32 pick;
};

static long scan_one(__u32 i, void *arg)
{
	struct scan *sc = arg;
	if (i >= sc->n)
		return 1;
	__u32 j = sc->start + i;
	if (j >= sc->n)
		j -= sc->n;
	__u32 p = sc->r->ports[j & (FL_MAX_CANDS - 1)];
	struct fl_queue_locked *ql = bpf_map_lookup_elem(&fl_queues, &p);
	struct fl_port *pp = bpf_map_lookup_elem(&fl_ports, &p);
	if (!ql || !pp)
		return 0;
	__u64 occ = drained(&ql->q, sc->now, pp->rate_mbps);
	if (occ < sc->best) {
		sc->best = occ;
		sc->pick = j;
	}
	return 0;
}

/* What INT does to a frame. */
#define INT_NONE 0
#define INT_SOURCE 1
#define INT_PUSH 2

SEC("xdp.frags")
int fl_switch(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct fl_config *cfg = bpf_map_lookup_elem(&fl_config, &zero);
	if (!cfg)
		return XDP_ABORTED;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return drop(FL_STAT_NOT_IPV4);
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->version != 4 || ip->ihl != 5 ||
	    ip_sum(ip) != 0xffff)
		return drop(FL_STAT_BAD_IPV4);
	__u32 tot = bpf_ntohs(ip->tot_len);
	__u32 frame_len = bpf_xdp_get_buff_len(ctx);
	if (tot < IP_LEN || ETH_LEN + tot > frame_len)
		return drop(FL_STAT_BAD_IPV4);
	if (ip->ttl <= 1)
		return drop(FL_STAT_TTL);

	/* Ports, and what kind of RoCEv2 frame it is. */
	__u8 proto = ip->protocol;
	int first_fragment = (ip->frag_off & bpf_htons(0x1fff)) == 0;
	__u16 sport = 0, dport = 0;
	if (first_fragment && (proto == IPPROTO_UDP || proto == IPPROTO_TCP) &&
	    data + L4_OFF + 4 <= end) {
		__u8 *l4 = data + L4_OFF;
		sport = (l4[0] << 8) | l4[1];
		dport = (l4[2] << 8) | l4[3];
	}
	int roce = proto == IPPROTO_UDP && dport == FL_ROCEV2_PORT;
	int int_frame = proto == IPPROTO_UDP && dport == FL_INT_PORT;
	int data_pkt = 0;
	__u32 hops = 0;
	if (roce) {
		if (data + BTH_OFF + 1 > end)
			return drop(FL_STAT_BAD_IPV4);
		__u8 op = *((__u8 *)data + BTH_OFF);
		data_pkt = op == 0x00 || op == 0x01 || op == 0x02 || op == 0x04;
	} else if (int_frame) {
		if (data + STACK_OFF > end)
			return drop(FL_STAT_BAD_INT);
		__u8 *b = (__u8 *)data + BTH_OFF;
		__u32 words = b[1];
		int ours = (b[0] >> 4) == 1 && (b[4] >> 4) == 2 &&
			   (b[6] & 0x1f) == FL_INT_HOP_WORDS && b[10] == (FL_INT_DS_ID >> 8) &&
			   b[11] == (FL_INT_DS_ID & 0xff);
		if (!ours || words < 4 || (words - 4) % FL_INT_HOP_WORDS != 0)
			return drop(FL_STAT_BAD_INT);
		hops = (words - 4) / FL_INT_HOP_WORDS;
		if (hops > FL_INT_MAX_HOPS)
			return drop(FL_STAT_BAD_INT);
		data_pkt = 1;
	}

	/* Route: its candidates are the ports that are up (userspace takes a port that
	 * goes down out of every route). */
	struct fl_route_key key = {.prefixlen = 32, .addr = ip->daddr};
	struct fl_route *r = bpf_map_lookup_elem(&fl_routes, &key);
	if (!r || r->n == 0)
		return drop(FL_STAT_NO_ROUTE);
	__u32 n = r->n < FL_MAX_CANDS ? r->n : FL_MAX_CANDS;

	__u64 now = bpf_ktime_get_ns();
	__u32 pick = 0;
	if (n > 1) {
		if (cfg->policy == FL_LB_ECMP) {
			/* The dataplane's ecmp_hash for fablab frames (hosts are the low
			 * 16 bits of 10.1.0.0/16; the port is 4791 with or without INT),
			 * so a flow takes the port it takes in sim; the 5-tuple for the
			 * rest. */
			__u64 a, b;
			if (roce || int_frame) {
				a = ((__u64)(bpf_ntohl(ip->saddr) & 0xffff) << 32) |
				    (bpf_ntohl(ip->daddr) & 0xffff);
				b = ((__u64)sport << 32) | ((__u64)FL_ROCEV2_PORT << 8) | IPPROTO_UDP;
			} else {
				a = ((__u64)bpf_ntohl(ip->saddr) << 32) | bpf_ntohl(ip->daddr);
				b = ((__u64)sport << 32) | ((__u64)dport << 8) | proto;
			}
			pick = mix(mix(cfg->seed ^ a) ^ b) % n;
		} else if (cfg->policy == FL_LB_SPRAY_RR) {
			__u32 slot = bpf_ntohl(ip->daddr) % FL_RR_SLOTS;
			__u32 *c = bpf_map_lookup_elem(&fl_rr, &slot);
			if (c) {
				pick = *c % n;
				*c += 1;
			}
		} else if (cfg->policy == FL_LB_SPRAY_RANDOM) {
			pick = bpf_get_prandom_u32() % n;
		} else {
			/* Adaptive: the least occupied virtual queue. Scanning from a random
			 * candidate breaks ties at random. bpf_loop keeps the verifier from
			 * walking every combination of comparisons. */
			struct scan sc = {
				.r = r,
				.n = n,
				.start = bpf_get_prandom_u32() % n,
				.now = now,
				.best = ~0ULL,
			};
			sc.pick = sc.start;
			bpf_loop(FL_MAX_CANDS, scan_one, &sc, 0);
			pick = sc.pick;
		}
	}
	__u32 port = r->ports[pick & (FL_MAX_CANDS - 1)];
	struct fl_port *out = bpf_map_lookup_elem(&fl_ports, &port);
	struct fl_queue_locked *ql = bpf_map_lookup_elem(&fl_queues, &port);
	if (!out || !ql)
		return XDP_ABORTED;

	/* A port without an interface (userspace sets both together) forwards
	 * nothing: checked before the frame is admitted to its queue. */
	if (!out->ifindex)
		return drop(FL_STAT_NO_ROUTE);

	/* INT: what this hop will add. */
	int int_action = INT_NONE;
	int exceeded = 0;
	if (cfg->int_on && data_pkt) {
		__u8 *b = (__u8 *)data + BTH_OFF;
		if (int_frame) {
			if (data + STACK_OFF > end)
				return drop(FL_STAT_BAD_INT);
			if (b[7] == 0 || hops >= FL_INT_MAX_HOPS) {
				b[4] |= 0x04; /* E: remaining hop count exhausted */
				exceeded = 1;
			} else if (tot + FL_INT_HOP_BYTES > out->mtu) {
				b[4] |= 0x02; /* M: no room under the MTU */
				exceeded = 1;
			} else {
				int_action = INT_PUSH;
			}
		} else if (tot + INT_SOURCE_LEN <= out->mtu) {
			int_action = INT_SOURCE;
		} else {
			exceeded = 1;
		}
	}
	/* Grow the frame before it is admitted to the queue, so that a frame that
	 * cannot grow is not counted as sent; the hop's values are written once the
	 * queue has given them. */
	if (int_action != INT_NONE) {
		int err = int_action == INT_SOURCE ? int_source(ctx) : int_push(ctx);
		if (err)
			return drop(FL_STAT_ADJUST);
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		if (data + STACK_OFF + FL_INT_HOP_BYTES > end)
			return drop(FL_STAT_ADJUST);
		eth = data;
		ip = data + ETH_LEN;
	}

	/* The virtual queue: drain, then admit or drop. */
	__u64 len = bpf_xdp_get_buff_len(ctx);
	if (len < 60)
		len = 60;
	__u64 ahead, tx_bytes;
	__u32 rate = out->rate_mbps;
	bpf_spin_lock(&ql->lock);
	ahead = drained(&ql->q, now, rate);
	if (ahead + len > cfg->buffer_bytes) {
		ql->q.bytes = ahead;
		ql->q.at = now;
		ql->q.drops++;
		bpf_spin_unlock(&ql->lock);
		return drop(FL_STAT_QUEUE_FULL);
	}
	ql->q.bytes = ahead + len;
	ql->q.at = now;
	ql->q.tx_bytes += len;
	ql->q.tx_packets++;
	if (ql->q.bytes > ql->q.max_bytes)
		ql->q.max_bytes = ql->q.bytes;
	tx_bytes = ql->q.tx_bytes;
	bpf_spin_unlock(&ql->lock);
	if (exceeded)
		count(FL_STAT_INT_EXCEEDED);

	/* ECN, as the dataplane marks: ECN-capable data (and plain IPv4) packets. */
	__u8 ecn = ip->tos & 3;
	if (cfg->ecn_on && ecn != 0 && (data_pkt || (!roce && !int_frame))) {
		int mark;
		if (ahead <= cfg->kmin_bytes)
			mark = 0;
		else if (ahead >= cfg->kmax_bytes)
			mark = 1;
		else {
			__u64 span = cfg->kmax_bytes - cfg->kmin_bytes;
			__u64 p = (ahead - cfg->kmin_bytes) * cfg->pmax_ppm / (span ? span : 1);
			mark = (bpf_get_prandom_u32() % 1000000) < p;
		}
		if (mark && ecn != 3) {
			ip->tos |= 3;
			__sync_fetch_and_add(&ql->q.ecn_marks, 1);
		}
	}
	ip->ttl -= 1;
	ip_fix_checksum(ip);

	if (int_action != INT_NONE) {
		__u32 in_if = ctx->ingress_ifindex;
		__u32 *in_port = bpf_map_lookup_elem(&fl_ifports, &in_if);
		struct hop h = {
			.node = cfg->node_id,
			.in_port = in_port ? *in_port : 0xffff,
			.out_port = port,
			.qlen = ahead > 0xffffff ? 0xffffff : ahead,
			.ts = now + (rate ? ahead * 8000 / rate : 0),
			.tx_bytes = tx_bytes,
			.rate_mbps = rate,
		};
		/* Both a source's hop and a pushed hop sit at the top of the stack. */
		put_hop((__u8 *)data + STACK_OFF, &h);
	}
	/* A lossy link (a `loss` fault): the queue sent the frame, the wire lost it. */
	if (out->loss_ppm && bpf_get_prandom_u32() % 1000000 < out->loss_ppm)
		return drop(FL_STAT_LINK_LOSS);
	__builtin_memcpy(eth->h_source, out->mac, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, out->peer_mac, ETH_ALEN);
	long action = bpf_redirect_map(&fl_tx, port, XDP_DROP);
	count(action == XDP_REDIRECT ? FL_STAT_FORWARDED : FL_STAT_NO_ROUTE);
	return action;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
