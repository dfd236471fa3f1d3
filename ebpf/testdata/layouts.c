/* SPDX-License-Identifier: GPL-2.0 */
/* Test object for BTF.StructLayout (TestStructLayouts): struct sample has a
 * member of each sort a layout lookup must get right. clang writes BTF only
 * for the types of global variables and of functions' arguments, so
 * layouts_anchor, a global variable in a section of its own that no program
 * uses (the loader ignores it), is what puts struct sample into the
 * object's BTF. Built by `make` (or by the test) with clang $(BPF_CFLAGS). */
#include "bpf_helpers.h"

struct inner {
	__u16 a;
	__u8 b;
};

struct sample {
	__u64 id;
	union {
		__u32 word;
		__u8 bytes[4];
	};
	struct inner inner;
	__u32 kind : 3, mode : 5;
	__be16 port;
	const volatile __u32 counter;
	struct sample *next;
	__u8 grid[3][5];
	__u8 tail;
	struct {
		__u32 a;
		__u32 b;
	};
};

typedef struct sample sample_t;

sample_t *layouts_anchor SEC(".anchors");

SEC("xdp")
int layouts_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
