/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The types and constants fablab's eBPF programs share with userspace. The Rust
 * mirror is userspace/src/xdp/maps.rs; its tests read the layout of every struct
 * here back from the compiled object's BTF and compare it field by field, so the
 * two cannot drift apart unnoticed.
 */
#ifndef FABLAB_H
#define FABLAB_H

#include <linux/bpf.h>
#include <linux/types.h>

/* Switch ports a program knows about (port numbers 0..FL_MAX_PORTS-1). */
#define FL_MAX_PORTS 64
/* Equal-cost egress ports per route. */
#define FL_MAX_CANDS 16
/* Round-robin counters for spray-rr, indexed by destination address. */
#define FL_RR_SLOTS 1024

/* Load-balancing policies, as the scenario's switch.lb names them. */
#define FL_LB_ECMP 0
#define FL_LB_SPRAY_RR 1
#define FL_LB_SPRAY_RANDOM 2
#define FL_LB_ADAPTIVE 3

/* The switch as a whole: array map `fl_config`, one entry. */
struct fl_config {
	__u32 node_id;     /* INT node ID */
	__u32 policy;      /* FL_LB_* */
	__u32 int_on;      /* be an INT source and transit hop for RoCEv2 data */
	__u32 ecn_on;      /* mark ECN-capable data between kmin and kmax */
	__u64 kmin_bytes;
	__u64 kmax_bytes;
	__u32 pmax_ppm;    /* marking probability at kmax, parts per million */
	__u32 buffer_bytes; /* virtual queue capacity per egress port */
	__u64 seed;        /* ECMP hash seed */
};

/* One port: array map `fl_ports`, by port number. ifindex 0: a port without an
 * interface, which forwards nothing (userspace writes it with the devmap entry). */
struct fl_port {
	__u32 ifindex;
	__u32 rate_mbps;   /* drain rate of the port's virtual queue */
	__u32 mtu;         /* the largest IPv4 packet the link carries */
	__u32 up;          /* informational: ports that are down are kept out of routes */
	__u32 loss_ppm;    /* the link loses frames with this probability, per million */
	__u8 mac[6];       /* this port's MAC: the source of frames it sends */
	__u8 peer_mac[6];  /* the MAC at the other end of its link */
};

/* Route: LPM trie `fl_routes`, key {prefix length, IPv4 address (network order)}. */
struct fl_route_key {
	__u32 prefixlen;
	__u32 addr;
};

struct fl_route {
	__u32 n;           /* candidates in ports[0..n) */
	__u16 ports[FL_MAX_CANDS];
};

/*
 * An egress port's virtual queue: array map `fl_queues`, by port number. XDP
 * forwards at once, so the queue a real port would hold is computed instead: it
 * grows by every admitted frame and drains at rate_mbps since `at`.
 */
struct fl_queue {
	__u64 bytes;       /* occupancy at time `at` */
	__u64 at;          /* ns, bpf_ktime_get_ns */
	__u64 tx_bytes;    /* admitted, wrapping (INT's tx-byte counter) */
	__u64 tx_packets;
	__u64 drops;       /* frames that did not fit buffer_bytes */
	__u64 ecn_marks;
	__u64 max_bytes;   /* the largest occupancy seen */
};

/* The value of `fl_queues`: the queue and the lock that guards it. */
struct fl_queue_locked {
	struct bpf_spin_lock lock;
	__u32 pad;
	struct fl_queue q;
};

/* Counters: per-CPU array `fl_stats`, indexed by FL_STAT_*. */
#define FL_STAT_FORWARDED 0    /* redirected to an egress port */
#define FL_STAT_INT_SOURCE 1   /* INT block inserted */
#define FL_STAT_INT_PUSHED 2   /* hop pushed onto an existing stack */
#define FL_STAT_INT_EXCEEDED 3 /* no room (hop count or MTU): E or M bit set */
#define FL_STAT_NOT_IPV4 4
#define FL_STAT_BAD_IPV4 5     /* truncated, options, bad checksum or length */
#define FL_STAT_TTL 6          /* TTL expired */
#define FL_STAT_NO_ROUTE 7     /* no route, or every candidate down */
#define FL_STAT_QUEUE_FULL 8   /* dropped at the virtual queue */
#define FL_STAT_BAD_INT 9      /* UDP to the INT port without a valid INT block */
#define FL_STAT_ADJUST 10      /* could not grow the frame for INT */
#define FL_STAT_LINK_LOSS 11   /* sent, then lost on a lossy link (a `loss` fault) */
#define FL_STAT_COUNT 12

/* The INT constants of docs/wire.md. */
#define FL_ROCEV2_PORT 4791
#define FL_INT_PORT 4792
#define FL_INT_DSCP_BIT 0x20
#define FL_INT_MAX_HOPS 8
#define FL_INT_HOP_BYTES 32
#define FL_INT_HOP_WORDS 8
#define FL_INT_INSTRUCTIONS 0xd400
#define FL_INT_DS_ID 0x0fab
#define FL_INT_DS_INSTRUCTIONS 0xc000

/* fl_tc_spray: which UDP packets it sprays, and the entropies of a new flow. */
struct fl_spray_config {
	__u16 port_lo;     /* destination ports port_lo..=port_hi are sprayed */
	__u16 port_hi;
	__u16 base;        /* a new flow's entropies are in [base, base + span) */
	__u16 span;
	__u32 count;       /* how many entropies a new flow gets (1..=FL_MAX_ENTROPIES) */
};

#define FL_MAX_ENTROPIES 16
/* Entries of fl_tc_spray's CRC shift table: IP packets up to this + 26 bytes. */
#define FL_CRC_SHIFT_MAX 16384

/* A flow: destination address (network order) and, for RoCEv2, the destination
 * QP; for other UDP, (source port << 16) | destination port. */
struct fl_flow_key {
	__u32 daddr;
	__u32 id;
};

/* A flow's entropies, used in turn: ports[0..n), next is the next index. */
struct fl_entropy_set {
	__u32 n;
	__u32 next;
	__u16 ports[FL_MAX_ENTROPIES];
};

#define FL_SPRAY_REWRITTEN 0 /* packets given an entropy from their set */
#define FL_SPRAY_NEW_FLOW 1  /* flows that got a default set */
#define FL_SPRAY_SKIPPED 2   /* matching packets left alone (too short, map full) */
#define FL_SPRAY_STAT_COUNT 3

/* fl_gen (ebpf/fl_bench.c) rewrites this much of each frame's head. */
#define FL_GEN_HEAD 128

#endif
