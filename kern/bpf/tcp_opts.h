/* SPDX-License-Identifier: GPL-2.0 */
/* TCP options: one bounded walk that finds the options the program rewrites
 * (timestamps, SACK) and the ones a SYN negotiates (MSS, window scale,
 * SACK-permitted). Every access is checked against data_end; the walk visits
 * at most XLB_MAX_OPT_LEN bytes. */
#ifndef XLB_TCP_OPTS_H
#define XLB_TCP_OPTS_H

#include <linux/tcp.h>
#include "bpf_helpers.h"
#include "consts.h"
#include "structs.h"
#include "csum.h"

#define TCPOPT_EOL 0
#define TCPOPT_NOP 1
#define TCPOPT_MSS 2
#define TCPOPT_WINDOW 3
#define TCPOPT_SACK_PERM 4
#define TCPOPT_SACK 5
#define TCPOPT_TIMESTAMP 8

struct tcp_opts {
	__u8 has_ts;      /* one timestamp option */
	__u8 sack_blocks; /* blocks in the SACK option, 0 if none */
	__u8 wscale;      /* XLB_NO_WSCALE if absent */
	__u8 sack_perm;
	__u16 mss;        /* 0 if absent */
	__u8 ts_off;      /* offset of the timestamp option in the options */
	__u8 sack_off;    /* offset of the SACK option in the options */
	__u32 tsval;
	__u32 tsecr;
};

static __always_inline __u32 load_be32(const __u8 *p)
{
	return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

static __always_inline void store_be32(__u8 *p, __u32 v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

/* How the walks stay cheap for the verifier. The offset of the current option
 * is used for packet access, so the verifier tracks it precisely, and each
 * option layout would leave it with another range at the top of the loop:
 * about (iterations x offsets) states, each verified through the rest of the
 * loop body (it ran past the million-instruction limit). widen() masks the
 * offset in a way the compiler cannot drop, which leaves the verifier with
 * the same wide range [0, 63] whatever the layout, so one state per iteration
 * remains. For the same reason the rewrite walks again instead of reusing
 * offsets found by the parse, and the parse writes its results to map memory
 * (xlb_scratch), which the verifier does not track. */
#define widen(v) asm volatile("%[x] &= 63" : [x] "+r"(v))

/* parse_tcp_opts returns 0, or -1 for options the program must not translate:
 * malformed (a length that runs past the header, a known option with a wrong
 * length) or several timestamp options (we could not tell which one the
 * receiver uses). */
static __always_inline int parse_tcp_opts(__u8 *opts, __u32 opt_len, void *end, struct tcp_opts *o)
{
	__u64 off = 0;

	o->has_ts = 0;
	o->sack_blocks = 0;
	o->wscale = XLB_NO_WSCALE;
	o->sack_perm = 0;
	o->mss = 0;
	o->tsval = 0;
	o->tsecr = 0;
	o->ts_off = 0;
	o->sack_off = 0;

	for (int k = 0; k < XLB_MAX_OPT_LEN; k++) {
		__u8 *p;
		__u8 kind, len;

		/* The first test bounds off for the verifier; the second is the real one. */
		if (off >= XLB_MAX_OPT_LEN || off >= opt_len)
			break;
		p = opts + off;
		if ((void *)(p + 1) > end)
			return -1;
		kind = p[0];
		if (kind == TCPOPT_EOL)
			break;
		if (kind == TCPOPT_NOP) {
			off++;
			widen(off);
			continue;
		}
		if ((void *)(p + 2) > end)
			return -1;
		len = p[1];
		if (len < 2 || off + len > opt_len)
			return -1;
		off += len;
		widen(off);
		if (kind == TCPOPT_TIMESTAMP) {
			if (len != 10 || (void *)(p + 10) > end || o->has_ts)
				return -1;
			o->has_ts = 1;
			o->ts_off = off - len;
			o->tsval = load_be32(p + 2);
			o->tsecr = load_be32(p + 6);
		} else if (kind == TCPOPT_SACK) {
			if (len < 10 || len > 34 || (len - 2) % 8 != 0)
				return -1;
			o->sack_blocks = (len - 2) / 8;
			o->sack_off = off - len;
		} else if (kind == TCPOPT_MSS) {
			if (len != 4 || (void *)(p + 4) > end)
				return -1;
			o->mss = ((__u16)p[2] << 8) | p[3];
		} else if (kind == TCPOPT_WINDOW) {
			if (len != 3 || (void *)(p + 3) > end)
				return -1;
			o->wscale = p[2] > 14 ? 14 : p[2];
		} else if (kind == TCPOPT_SACK_PERM) {
			if (len != 2)
				return -1;
			o->sack_perm = 1;
		}
	}
	return 0;
}

/* rewrite_tcp_opts translates timestamps and SACK edges in place, at the
 * offsets parse_tcp_opts found, adding each change to the checksum
 * accumulator. Options start at byte 20 of the TCP header (even), so a word's
 * parity in the header is that of its position here. No second walk: the
 * offsets come from map memory (xlb_scratch), so the verifier sees one
 * unknown value, bounded by a mask, whatever the layout. Only call it with
 * what parse_tcp_opts accepted. */
static __always_inline int rewrite_tcp_opts(__u8 *opts, void *end, const struct tcp_opts *o,
					    __u32 tsval_off, __u32 tsecr_off,
					    __u32 ack_off, struct csum_acc *acc)
{
#ifdef XLB_SABOTAGE_TS
	/* Test hook, never set by `make`: reliability's TestSabotageIsCaught
	 * builds with -DXLB_SABOTAGE_TS to leave timestamps untranslated (PAWS
	 * then drops spliced segments) and shows that the scenarios fail. The
	 * empty asm hides the zeros from clang, so the code keeps its shape. */
	tsval_off = 0;
	tsecr_off = 0;
	asm volatile("" : "+r"(tsval_off), "+r"(tsecr_off));
#endif
	if (o->has_ts) {
		__u64 off = o->ts_off;
		__u8 *p;
		__u32 v, e, nv, ne;

		widen(off);
		p = opts + off;
		if ((void *)(p + 10) > end)
			return -1;
		v = load_be32(p + 2);
		e = load_be32(p + 6);
		nv = v + tsval_off;
		ne = e + tsecr_off;
		store_be32(p + 2, nv);
		store_be32(p + 6, ne);
		csum_acc32_at(acc, off, bpf_htonl(v), bpf_htonl(nv));
		csum_acc32_at(acc, off, bpf_htonl(e), bpf_htonl(ne));
	}
	if (o->sack_blocks) {
		__u64 off = o->sack_off;
		__u32 n = o->sack_blocks;
		__u8 *p;

		widen(off);
		p = opts + off;
		for (__u32 j = 0; j < XLB_MAX_SACK_BLOCKS; j++) {
			__u8 *e = p + 2 + j * 8;
			__u32 l, r;

			if (j >= n)
				break;
			if ((void *)(e + 8) > end)
				return -1;
			l = load_be32(e);
			r = load_be32(e + 4);
			store_be32(e, l + ack_off);
			store_be32(e + 4, r + ack_off);
			csum_acc32_at(acc, off, bpf_htonl(l), bpf_htonl(l + ack_off));
			csum_acc32_at(acc, off, bpf_htonl(r), bpf_htonl(r + ack_off));
		}
	}
	return 0;
}

#endif
