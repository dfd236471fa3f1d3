/* SPDX-License-Identifier: GPL-2.0 */
/* Numbers that matter to the data plane, each with one home. Sizes of maps can
 * be changed by user space before loading (ebpf.MapSpec.MaxEntries). */
#ifndef XLB_CONSTS_H
#define XLB_CONSTS_H

#define XLB_MAX_LEGS        65536  /* client + worker legs */
#define XLB_MAX_HANDSHAKES  16384  /* SYNs / SYN-ACKs remembered (LRU: a SYN flood only churns it) */
#define XLB_MAX_WORKERS     256
#define XLB_EVENT_RING      (256 * 1024) /* bytes of the event ring buffer */

#define XLB_MAX_OPT_LEN     40     /* TCP options: at most 40 bytes */
#define XLB_MAX_SACK_BLOCKS 4
#define XLB_IDLE_POP_TRIES  2      /* idle-queue entries examined for a live leg */
#define XLB_IDLE_SWEEP      16     /* dead idle-queue heads dropped per worker-leg event */
#define XLB_CAS_TRIES       4      /* compare-and-swap retries for a position */
#define XLB_MAX_WIN_BOUND   (1u << 30) /* 65535 << 14: the largest window TCP can advertise */

#define XLB_NO_OPT          0xff   /* offset of an option that is absent */
#define XLB_NO_WSCALE       0xff

#ifndef NULL
#define NULL ((void *)0)
#endif
#define AF_INET 2

#endif
