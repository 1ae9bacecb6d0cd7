// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// The programs of `fablab bench xdp` (docs/ebpf.md): a frame generator, the bare
// XDP_REDIRECT forwarder fl_switch is measured against, and a counting sink.
//
// fl_gen runs under BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES: the kernel
// hands it the same few pages again and again, and whatever a forwarder downstream
// wrote into a frame (fl_switch inserts INT into the page itself) is still there
// the next time. So fl_gen first writes the frame's head back from a template
// (the first FL_GEN_HEAD bytes, which cover everything fl_switch rewrites), then
// redirects it out of the generator's interface.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "fablab.h"

struct fl_gen_head {
	__u8 bytes[FL_GEN_HEAD];
};

/* The frame's first FL_GEN_HEAD bytes (zero-padded when the frame is shorter). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct fl_gen_head);
} fl_gen_template SEC(".maps");

/* Where each program sends: entry 0 is the egress interface. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} fl_bench_tx SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} fl_sink_count SEC(".maps");

SEC("xdp.frags")
int fl_gen(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct fl_gen_head *t = bpf_map_lookup_elem(&fl_gen_template, &zero);
	if (!t)
		return XDP_ABORTED;
	__u32 len = bpf_xdp_get_buff_len(ctx);
	if (len > FL_GEN_HEAD)
		len = FL_GEN_HEAD;
	/* Constant sizes for the helper: the head, or the 60-byte minimum frame. */
	if (len == FL_GEN_HEAD)
		bpf_xdp_store_bytes(ctx, 0, t->bytes, FL_GEN_HEAD);
	else if (len >= 60)
		bpf_xdp_store_bytes(ctx, 0, t->bytes, 60);
	return bpf_redirect_map(&fl_bench_tx, 0, 0);
}

/* The baseline: every frame out of the other port, nothing else. */
SEC("xdp.frags")
int fl_bare_redirect(struct xdp_md *ctx)
{
	return bpf_redirect_map(&fl_bench_tx, 0, 0);
}

/* Counts and drops. */
SEC("xdp.frags")
int fl_sink(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(&fl_sink_count, &zero);
	if (c)
		*c += 1;
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
