/* SPDX-License-Identifier: GPL-2.0 */
/* Sequence-space arithmetic (modulo 2^32): the one helper set, used for seq,
 * ack and TSval alike. Never compare wire numbers with plain < or >. */
#ifndef XLB_SEQ_H
#define XLB_SEQ_H

#include <linux/types.h>
#include "consts.h"

static __always_inline int seq_lt(__u32 a, __u32 b) { return (__s32)(a - b) < 0; }
static __always_inline int seq_le(__u32 a, __u32 b) { return (__s32)(a - b) <= 0; }
static __always_inline int seq_gt(__u32 a, __u32 b) { return (__s32)(a - b) > 0; }
static __always_inline int seq_ge(__u32 a, __u32 b) { return (__s32)(a - b) >= 0; }

/* |a - b| <= bound, in sequence space. */
static __always_inline int seq_near(__u32 a, __u32 b, __u32 bound)
{
	__s32 d = (__s32)(a - b);

	return d <= (__s32)bound && d >= -(__s32)bound;
}

/* *p = max(*p, v) in sequence space, safe against another CPU doing the same:
 * compare-and-swap, a bounded number of times (a loser retries only if the
 * winner's value was still below v). */
static __always_inline void seq_advance(__u32 *p, __u32 v)
{
	for (int i = 0; i < XLB_CAS_TRIES; i++) {
		__u32 cur = *(volatile __u32 *)p;

		if (!seq_gt(v, cur))
			return;
		if (__sync_val_compare_and_swap(p, cur, v) == cur)
			return;
	}
}

#endif
