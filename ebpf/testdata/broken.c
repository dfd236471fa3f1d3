/* SPDX-License-Identifier: GPL-2.0 */
/* Test program the verifier must reject (TestVerifierLogSourceLines): it
 * reads the packet without comparing against data_end first. With line_info
 * the verifier log shows the source line below. Built by `make` (or by the
 * test) with clang $(BPF_CFLAGS); it compiles, it does not load. */
#include "bpf_helpers.h"

SEC("xdp")
int broken_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	__u32 first_word;

	first_word = *(__u32 *)data; /* deliberately unchecked */
	return first_word ? XDP_PASS : XDP_DROP;
}

char _license[] SEC("license") = "GPL";
