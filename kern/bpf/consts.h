/* SPDX-License-Identifier: GPL-2.0 */
/* Numbers that matter to the data plane, each with one home. Sizes of maps can
 * be changed by user space before loading (ebpf.MapSpec.MaxEntries). */
#ifndef XLB_CONSTS_H
#define XLB_CONSTS_H

#define XLB_MAX_LEGS        65536  /* client + worker legs */
#define XLB_MAX_DIALS       65536  /* dialed SYNs under way (user space's, never evicted) */
#define XLB_MAX_HANDSHAKES  16384  /* SYNs / SYN-ACKs remembered (LRU: a SYN flood only churns it) */
#define XLB_MAX_WORKERS     256
#define XLB_EVENT_WAKE      (64 * 88) /* bytes of finished legs' events (88 a record) that wake user space (see emit()) */
#define XLB_REQLOG_RING     (2 * 1024 * 1024) /* bytes of the request record ring: 16k records, read every 50 ms by user space */
#define XLB_EVENT_RING      (4 * 1024 * 1024) /* bytes of the event ring buffer: 50k events (a burst of 20k connections ending at once sends 40k) */

#define XLB_MAX_OPT_LEN     40     /* TCP options: at most 40 bytes */
#define XLB_MAX_SACK_BLOCKS 4
#define XLB_POOL_MAX        4096   /* idle legs one worker's pool can hold */
#define XLB_SCHED_LEN       1024   /* slots of the weighted schedule (policies rr, least) */
#define XLB_REMATCH_MAX     4096   /* pending xlb ctl rematch requests */
#define XLB_IDLE_POP_TRIES  3      /* pool entries examined for a live leg */
#define XLB_READY_TRIES     3      /* jiq: worker tokens examined for a pool with a live leg */
#define XLB_PICK_TRIES      3      /* rr: schedule slots tried */
#define XLB_PICK_ANY        16     /* a first bind the policy found no leg for: schedule slots tried */
#define XLB_LEAST_SCAN      16     /* least: schedule slots compared */
#define XLB_IDLE_SWEEP      16     /* dead pool heads dropped per worker-leg event */
#define XLB_PROG_BIND       0      /* xlb_progs slot of the bind program */
#define XLB_PROG_MAIN       1      /* xlb_progs slot of xlb_xdp (xlb_bind returns there) */
#define XLB_PROG_SLOW       2      /* xlb_progs slot of the slow program */
#define XLB_PROG_XLATE      3      /* xlb_progs slot of the translation for the slow program */
#define XLB_CAS_TRIES       4      /* compare-and-swap retries for a position */
#define XLB_PEEK_MAX        48     /* payload bytes a decision may read */
#define XLB_HDR_SCAN        2048   /* bytes of an answer's first segment searched for its Connection and Content-Length headers, and of a request judged (a power of two) */
#define KEEP_GROWTH         24     /* "Connection: keep-alive\r\n": what an HTTP/1.0 request grows by (CFG_KEEP_HTTP10) */
#define XLB_COOL_NS         (20ull * 1000 * 1000) /* a worker leg a leaving client gave back stays quiet this long before reuse, unless worker_cfg.cool_us says */
#define XLB_COOL_MOVES      4      /* cooled legs moved to their pools per bind */
#define XLB_COOL_MOVES_CTL  64     /* ... per CTL_WARM run */
#define XLB_CTL_ITEMS       31     /* struct ctl_item after a CTL_POOL / CTL_FORGET message: 32 legs a run */
#define XLB_METHOD_MAX      16     /* longest HTTP method token taken for a request start */
#define XLB_MAX_WIN_BOUND   (1u << 30) /* 65535 << 14: the largest window TCP can advertise */
#define XLB_REST_WIN_MIN    4096   /* xlb_config.rest_win is not lowered below (a client's tiny window) */
#define XLB_HOLD_MAX        2048   /* bytes of a frame held for a pool to fill (CFG_HOLD_FIRST; larger ones are dropped) */
#define XLB_MAX_HELD        4096   /* frames held at once (xlb_held) */
#define XLB_FIB_BITS        11     /* routed mode: 2^11 next hops cached per CPU (xlb_fib) */
#define XLB_FIB_TTL_NS      (1000ull * 1000 * 1000) /* ... each looked up again after this long, whatever xlb_fib_gen says */

#define XLB_NO_OPT          0xff   /* offset of an option that is absent */
#define XLB_NO_WSCALE       0xff

#ifndef NULL
#define NULL ((void *)0)
#endif
#define AF_INET 2
#define EEXIST 17 /* errno of an update of an existing key (BPF_NOEXIST) */

#endif
