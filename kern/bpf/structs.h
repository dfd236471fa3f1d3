/* SPDX-License-Identifier: GPL-2.0 */
/* Layouts shared with user space. kern/kern.go mirrors every definition here;
 * kern_test.go checks that the two agree (names, numbers, sizes), so change both
 * together. */
#ifndef XLB_STRUCTS_H
#define XLB_STRUCTS_H

#include <linux/types.h>

/* Legacy-style map definition: the "maps" ELF section holds one of these per
 * map, named by its symbol. Our loader (ebpf/elf.go) reads exactly this layout;
 * there is no BTF. */
struct xlb_map_def {
	__u32 type;
	__u32 key_size;
	__u32 value_size;
	__u32 max_entries;
	__u32 map_flags;
};

/* Indexes of the per-CPU counter array xlb_stats. Verdicts first, then what the
 * program saw. Append only: the numbers are part of the pinned-map ABI. */
enum xlb_counter {
	XLB_CNT_PASS = 0,          /* verdict XDP_PASS */
	XLB_CNT_DROP = 1,          /* verdict XDP_DROP */
	XLB_CNT_TX = 2,            /* verdict XDP_TX */
	XLB_CNT_REDIRECT = 3,      /* verdict XDP_REDIRECT */
	XLB_CNT_ABORTED = 4,       /* verdict XDP_ABORTED */
	XLB_CNT_NOT_IPV4 = 5,      /* not IPv4 (passed untouched) */
	XLB_CNT_NOT_TCP = 6,       /* IPv4 but not TCP, or a fragment (passed) */
	XLB_CNT_MALFORMED = 7,     /* truncated or inconsistent headers (passed) */
	XLB_CNT_TCP = 8,           /* well-formed IPv4 TCP seen */
	XLB_CNT_MAX
};

#endif
