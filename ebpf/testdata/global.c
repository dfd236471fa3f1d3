/* SPDX-License-Identifier: GPL-2.0 */
/* Test program for global functions (TestGlobalFunction): collatz() is a
 * global function, in .text, called from 64 places by global_xdp and from 2
 * by global_pair. With BTF (clang -g: the program's func_info marks it
 * global) the verifier checks it once, on its own, for any argument, and a
 * call costs the caller a few instructions. Without func_info the verifier
 * takes it for a static function and walks it again at each call site, with
 * the caller's state: global_pair costs twice what it costs with BTF, and
 * global_xdp more than the verifier accepts (each walk leaves STEPS branches
 * pending, past its limit of 8192). Built by `make` (or by the test) with
 * clang $(BPF_CFLAGS). */
#include "bpf_helpers.h"

#define STEPS 2000

/* Not static and not inlined: a global function. Its argument is any __u32
 * and its result a scalar, as a global function's must be. */
__attribute__((noinline)) int collatz(__u32 x)
{
	for (int i = 0; i < STEPS; i++) {
		if (x & 1)
			x = 3 * x + 1;
		else
			x >>= 1;
	}
	return x & 0xffff;
}

#define CALL4(x) x = collatz(x + 1); x = collatz(x + 2); x = collatz(x + 3); x = collatz(x + 4)
#define CALL16(x) CALL4(x); CALL4(x); CALL4(x); CALL4(x)

/* Returns the 64th iterate of collatz() from the packet's length. */
SEC("xdp")
int global_xdp(struct xdp_md *ctx)
{
	__u32 x = ctx->data_end - ctx->data;

	CALL16(x);
	CALL16(x);
	CALL16(x);
	CALL16(x);
	return x;
}

/* Two calls: the same function, verified at both without BTF. */
SEC("xdp/pair")
int global_pair(struct xdp_md *ctx)
{
	__u32 x = ctx->data_end - ctx->data;

	x = collatz(x + 1);
	return collatz(x + 2);
}

char _license[] SEC("license") = "GPL";
