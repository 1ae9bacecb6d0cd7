// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// Per-packet spraying for hosts whose software is not fablab's: a TC egress program
// that rewrites the UDP source port (the entropy switches hash, docs/wire.md) of
// every matching IPv4 UDP packet from its flow's entropy set.
//
// - Matching: UDP destination port in [port_lo, port_hi] of `fl_spray_config`
//   (RoCEv2's 4791 by default).
// - Flow: destination address and, for RoCEv2, the BTH's destination QP; for other
//   UDP, the original source and destination ports.
// - Entropy set: `fl_entropies[flow]`, up to FL_MAX_ENTROPIES ports used in turn,
//   one per packet. Userspace may write a flow's set (to recycle entropies whose
//   paths telemetry shows congested); a flow without one gets `count` ports from
//   [base, base + span), starting at a hash of the flow.
// - RoCEv2's ICRC covers the UDP source port, so it is patched, not recomputed:
//   the CRC is linear, and changing two bytes changes it by the CRC of those two
//   bytes' XOR advanced past the bytes that follow them (zlib's crc32_combine
//   arithmetic: one multiplication by x^(8n) mod P, from a table userspace fills).
//   A UDP checksum, if the sender set one, is patched too. The program never drops
//   a packet; one it cannot patch it leaves alone (FL_SPRAY_SKIPPED).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "fablab.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fl_spray_config);
} fl_spray_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fl_flow_key);
	__type(value, struct fl_entropy_set);
} fl_entropies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FL_SPRAY_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} fl_spray_stats SEC(".maps");

#define POLY 0xedb88320u

/* x^(8n) mod P (reflected) for n bytes: userspace fills it when it loads the
 * program (xdp::spray), so the program multiplies once instead of walking n. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, FL_CRC_SHIFT_MAX);
	__type(key, __u32);
	__type(value, __u32);
} fl_crc_shift SEC(".maps");

/* The CRC arithmetic runs as bpf_loop steps. Straight-line code, branchy or not,
 * made this kernel's verifier give up after a million instructions: every step
 * refines what it knows of the CRC's bits, so no two paths look alike
 * (docs/ebpf.md). A loop callback is checked as one step. */
struct mul {
	__u32 a;
	__u32 b;
	__u32 p;
};

/* One bit of a * b mod P (reflected; zlib's multmodp). */
static long mul_step(__u32 i, void *arg)
{
	struct mul *m = arg;
	if ((m->a >> (31 - (i & 31))) & 1)
		m->p ^= m->b;
	m->b = (m->b & 1) ? (m->b >> 1) ^ POLY : m->b >> 1;
	return 0;
}

/* One bit of the pure (zero-initialized) CRC. */
static long crc_step(__u32 i, void *arg)
{
	__u32 *c = arg;
	*c = (*c & 1) ? (*c >> 1) ^ POLY : *c >> 1;
	return 0;
}

/* The CRC change from XOR-ing the bytes d0, d1 (in frame order) into a message
 * with n bytes behind them, given shift = x^(8n) mod P: the pure CRC of the two
 * bytes, advanced past n zero bytes (zlib's crc32_combine arithmetic). */
static __always_inline __u32 icrc_delta(__u32 shift, __u8 d0, __u8 d1)
{
	__u32 c = d0;
	bpf_loop(8, crc_step, &c, 0);
	c ^= d1;
	bpf_loop(8, crc_step, &c, 0);
	struct mul m = {.a = shift, .b = c, .p = 0};
	bpf_loop(32, mul_step, &m, 0);
	return m.p;
}

static __always_inline void count(__u32 what)
{
	__u64 *c = bpf_map_lookup_elem(&fl_spray_stats, &what);
	if (c)
		*c += 1;
}

#define ETH_LEN 14
#define IP_LEN 20
#define UDP_OFF (ETH_LEN + IP_LEN)
#define BTH_OFF (UDP_OFF + 8)

SEC("classifier")
int fl_tc_spray(struct __sk_buff *skb)
{
	__u32 zero = 0;
	struct fl_spray_config *cfg = bpf_map_lookup_elem(&fl_spray_config, &zero);
	if (!cfg)
		return TC_ACT_OK;
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	if (data + BTH_OFF + 8 > end) {
		/* Headers beyond the linear part: pull them in (a short packet stays
		 * short, and is left alone below). */
		bpf_skb_pull_data(skb, BTH_OFF + 8);
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
	}
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->ihl != 5 || ip->protocol != IPPROTO_UDP ||
	    (ip->frag_off & bpf_htons(0x3fff)) != 0)
		return TC_ACT_OK;
	__u8 *udp = data + UDP_OFF;
	if ((void *)(udp + 8) > end)
		return TC_ACT_OK;
	__u16 sport = (udp[0] << 8) | udp[1];
	__u16 dport = (udp[2] << 8) | udp[3];
	if (dport < cfg->port_lo || dport > cfg->port_hi)
		return TC_ACT_OK;
	__u32 tot = bpf_ntohs(ip->tot_len);
	int roce = dport == FL_ROCEV2_PORT;
	struct fl_flow_key key = {.daddr = ip->daddr, .id = ((__u32)sport << 16) | dport};
	if (roce) {
		__u8 *bth = data + BTH_OFF;
		/* BTH and ICRC: at least 12 + 4 bytes after UDP. */
		if ((void *)(bth + 8) > end || tot < IP_LEN + 8 + 12 + 4) {
			count(FL_SPRAY_SKIPPED);
			return TC_ACT_OK;
		}
		key.id = ((__u32)bth[5] << 16) | ((__u32)bth[6] << 8) | bth[7];
	}

	struct fl_entropy_set *set = bpf_map_lookup_elem(&fl_entropies, &key);
	if (!set) {
		struct fl_entropy_set fresh = {};
		__u32 n = cfg->count;
		if (n == 0 || n > FL_MAX_ENTROPIES)
			n = FL_MAX_ENTROPIES;
		__u32 span = cfg->span ? cfg->span : 1;
		__u32 h = (key.daddr * 2654435761u) ^ (key.id * 40503u);
		fresh.n = n;
#pragma unroll
		for (int i = 0; i < FL_MAX_ENTROPIES; i++)
			fresh.ports[i] = cfg->base + (h + i) % span;
		bpf_map_update_elem(&fl_entropies, &key, &fresh, BPF_NOEXIST);
		set = bpf_map_lookup_elem(&fl_entropies, &key);
		if (!set) {
			count(FL_SPRAY_SKIPPED);
			return TC_ACT_OK;
		}
		count(FL_SPRAY_NEW_FLOW);
	}
	__u32 n = set->n;
	if (n == 0 || n > FL_MAX_ENTROPIES)
		n = FL_MAX_ENTROPIES;
	__u32 idx = set->next % n;
	set->next = idx + 1;
	/* clang knows idx < 16 and would drop the mask the verifier needs to see. */
	asm volatile("" : "+r"(idx));
	__u16 port = set->ports[idx & (FL_MAX_ENTROPIES - 1)];
	if (port == sport) {
		count(FL_SPRAY_REWRITTEN);
		return TC_ACT_OK;
	}

	__u16 csum = (udp[6] << 8) | udp[7];
	__u16 new_be = bpf_htons(port);
	__u16 old_be = bpf_htons(sport);
	if (roce) {
		/* The ICRC is the frame's last 4 bytes before any Ethernet padding,
		 * least significant byte first; the source port is 22 bytes into the IP
		 * packet, so tot - 4 - 22 bytes of the CRC's message follow it. */
		__u32 icrc_off = ETH_LEN + tot - 4;
		__u32 icrc;
		if (bpf_skb_load_bytes(skb, icrc_off, &icrc, 4)) {
			count(FL_SPRAY_SKIPPED);
			return TC_ACT_OK;
		}
		__u32 after = tot - 26;
		__u32 *shift = bpf_map_lookup_elem(&fl_crc_shift, &after);
		if (!shift) {
			count(FL_SPRAY_SKIPPED);
			return TC_ACT_OK;
		}
		__u32 delta = icrc_delta(*shift, (sport ^ port) >> 8, (sport ^ port) & 0xff);
		icrc ^= delta;
		/* The port, then the ICRC; if the second store fails, the first is
		 * undone, so the packet never leaves with one changed and not the other. */
		if (bpf_skb_store_bytes(skb, UDP_OFF, &new_be, 2, 0)) {
			count(FL_SPRAY_SKIPPED);
			return TC_ACT_OK;
		}
		if (bpf_skb_store_bytes(skb, icrc_off, &icrc, 4, 0)) {
			bpf_skb_store_bytes(skb, UDP_OFF, &old_be, 2, 0);
			count(FL_SPRAY_SKIPPED);
			return TC_ACT_OK;
		}
	} else {
		if (bpf_skb_store_bytes(skb, UDP_OFF, &new_be, 2, 0)) {
			count(FL_SPRAY_SKIPPED);
			return TC_ACT_OK;
		}
	}
	/* UDP over IPv4 may carry no checksum (0); a patched one that comes out as 0
	 * is sent as 0xffff (BPF_F_MARK_MANGLED_0). */
	if (csum != 0)
		bpf_l4_csum_replace(skb, UDP_OFF + 6, old_be, new_be,
				    BPF_F_MARK_MANGLED_0 | sizeof(__u16));
	count(FL_SPRAY_REWRITTEN);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
