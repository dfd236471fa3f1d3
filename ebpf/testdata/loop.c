/* SPDX-License-Identifier: GPL-2.0 */
/* Test program for callbacks (TestLoopCallback): bpf_loop calls add() 100
 * times; the loader links add() from .text into the program and turns the
 * ld_imm64 of its address into a BPF_PSEUDO_FUNC reference. Returns
 * XDP_PASS if the sum is 0 + 1 + ... + 99, else XDP_DROP. Built by `make`
 * (or by the test) with clang $(BPF_CFLAGS). */
#include "bpf_helpers.h"

#define LOOPS 100


struct sum {
	__u64 total;
};

/* A callback: static and not inlined, so that its address can be taken. */
static int add(__u32 i, struct sum *s)
{
	s->total += i;
	return 0; /* 0: go on */
}

SEC("xdp")
int loop_xdp(struct xdp_md *ctx)
{
	struct sum s = {0};

	if (bpf_loop(LOOPS, add, &s, 0) != LOOPS)
		return XDP_ABORTED;
	return s.total == LOOPS * (LOOPS - 1) / 2 ? XDP_PASS : XDP_DROP;
}

char _license[] SEC("license") = "GPL";
