/* SPDX-License-Identifier: GPL-2.0 */
/* Internet checksum helpers. Rewrites are incremental (RFC 1624: HC' = ~(~HC +
 * ~m + m')): a rewrite adds ~old + new of every changed 16-bit word to an
 * accumulator, and csum_apply() folds it into the header once. Words at an odd
 * byte offset (possible inside TCP options) go to a second accumulator whose
 * folded sum is byte-swapped before it is applied. Replies the program makes
 * itself get full checksums (csum_ipv4_header, ipfam.h csum_tcp_full). */
#ifndef XLB_CSUM_H
#define XLB_CSUM_H

#include <linux/types.h>
#include <linux/ip.h>
#include <linux/in.h>
#include "bpf_helpers.h"

struct csum_acc {
	__u32 even;
	__u32 odd;
};

static __always_inline __u16 csum_fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* The 32-bit word at an even offset changes from `from` to `to`. */
static __always_inline void csum_acc32(struct csum_acc *a, __u32 from, __u32 to)
{
	__u32 nf = ~from;

	a->even += (nf & 0xffff) + (nf >> 16) + (to & 0xffff) + (to >> 16);
}

static __always_inline void csum_acc16(struct csum_acc *a, __u16 from, __u16 to)
{
	a->even += (__u16)~from + (__u32)to;
}

/* The 32-bit value at byte offset `off` (from the start of the checksummed
 * data, any parity) changes from `from` to `to`. */
static __always_inline void csum_acc32_at(struct csum_acc *a, __u32 off, __u32 from, __u32 to)
{
	__u32 nf = ~from;
	__u32 d = (nf & 0xffff) + (nf >> 16) + (to & 0xffff) + (to >> 16);

	if (off & 1)
		a->odd += d;
	else
		a->even += d;
}

static __always_inline void csum_apply(__u16 *check, const struct csum_acc *a)
{
	__u16 odd = csum_fold(a->odd);
	__u32 s = (__u16)~*check;

	s += csum_fold(a->even);
	s += (__u16)((odd << 8) | (odd >> 8));
	*check = (__u16)~csum_fold(s);
}

/* Full IPv4 header checksum of a 20-byte header (the program only builds
 * replies from packets without IP options). */
static __always_inline __u16 csum_ipv4_header(struct iphdr *ip)
{
	__u16 *w = (__u16 *)ip;
	__u32 s = 0;

	ip->check = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		s += w[i];
	return (__u16)~csum_fold(s);
}

#endif
