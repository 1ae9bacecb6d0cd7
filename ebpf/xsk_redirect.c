// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// The emu's AF_XDP receive hook: every frame that arrives on the interface goes to the
// AF_XDP socket registered for its receive queue in `xsks`; with no socket there it
// goes on to the kernel's stack (XDP_PASS), as if no program were attached.
//
// `xdp.frags`: the emu's veths carry jumbo frames (a 4 KiB RoCE payload plus a full
// INT stack is about 4.4 KB). The emu attaches this program in generic (SKB) mode,
// which for a frags-aware program skips linearizing such frames; `--mode xdp` and
// `testbed up --xdp` attach it in native mode (the only mode that receives frames
// an XDP program on the peer redirects), and native mode on veth refuses a program
// without frags support at this MTU ("Peer MTU is too large to set XDP"). With no
// socket in the map every frame goes on to the kernel (XDP_PASS). The program
// never reads packet bytes, so fragments need no care here; the socket binds with
// XDP_USE_SG and receives such frames as several descriptors.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} fl_xsks SEC(".maps");

SEC("xdp.frags")
int fl_xsk_redirect(struct xdp_md *ctx)
{
	return bpf_redirect_map(&fl_xsks, ctx->rx_queue_index, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
