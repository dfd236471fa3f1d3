/* SPDX-License-Identifier: GPL-2.0 */
#ifndef XLB_MAPS_H
#define XLB_MAPS_H

#include "bpf_helpers.h"
#include "consts.h"
#include "structs.h"
#include "tcp_opts.h"
#include "ipfam.h"

/* Per-CPU counters indexed by enum xlb_counter; user space sums the CPUs. */
struct xlb_map_def SEC("maps") xlb_stats = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = XLB_CNT_MAX,
};

/* Element 0: struct xlb_config, written by user space before attaching. */
struct xlb_map_def SEC("maps") xlb_config = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct xlb_config),
	.max_entries = 1,
};

/* Every leg, keyed by the 4-tuple of packets from its peer. Positions are
 * updated in place (see struct leg for who writes which field). */
struct xlb_map_def SEC("maps") xlb_legs = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct leg_key),
	.value_size = sizeof(struct leg),
	.max_entries = XLB_MAX_LEGS,
};

/* Bindings, keyed like legs. Never preallocated: an update replaces the
 * element under RCU, so a reader on another CPU sees the old binding or the
 * new one, never a mix. */
struct xlb_map_def SEC("maps") xlb_binds = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct leg_key),
	.value_size = sizeof(struct binding),
	.max_entries = XLB_MAX_LEGS,
	.map_flags = BPF_F_NO_PREALLOC,
};

/* Dialed handshakes under way (HS_DIALED), by the key of the worker's answer:
 * written by user space before it sends the SYN, deleted by the program when
 * the leg is born, or by user space when the dial fails. A hash, not an LRU:
 * the churn of clients' handshakes must not evict them, nor they those. */
struct xlb_map_def SEC("maps") xlb_dials = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct leg_key),
	.value_size = sizeof(struct handshake),
	.max_entries = XLB_MAX_DIALS,
};

/* Handshakes in progress (client SYNs, worker SYN-ACKs). */
struct xlb_map_def SEC("maps") xlb_hs = {
	.type = BPF_MAP_TYPE_LRU_HASH,
	.key_size = sizeof(struct leg_key),
	.value_size = sizeof(struct handshake),
	.max_entries = XLB_MAX_HANDSHAKES,
};

/* The pool: idle worker legs, one stack per worker (indexed by worker id;
 * user space creates a worker's stack when it adds the worker). Last in,
 * first out: the policy chooses the worker (jiq: the one idle the longest,
 * through xlb_ready), and the worker's connection used last serves the
 * request. A connection idle longer than its RTO restarts in slow start
 * (tcp_slow_start_after_idle): its worker sends 10 segments, and a client
 * whose stack then delays its ACK stalls 40 ms. Measured with a FIFO per
 * worker: 100 KB responses at 0.04x the direct rate, p99 300 ms. Entries may
 * be stale (the leg closed since): a pop checks the leg's state. User space
 * keeps each filled. */
struct xlb_map_def SEC("maps") xlb_pool = {
	.type = BPF_MAP_TYPE_ARRAY_OF_MAPS,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = XLB_MAX_WORKERS,
};

struct xlb_map_def SEC("maps") xlb_pool_inner = {
	.type = BPF_MAP_TYPE_STACK,
	.key_size = 0,
	.value_size = sizeof(struct leg_key),
	.max_entries = XLB_POOL_MAX,
};

/* Policies jiq and sticky: one worker id per leg put in a pool, in the order
 * they were put there. Popping a token, then that worker's leg used last,
 * gives the request to the worker idle the longest. Tokens of legs taken otherwise (a
 * rematch, a dead leg) are stale: their pop finds the pool empty or a later
 * leg, which only makes that worker's turn come early. */
struct xlb_map_def SEC("maps") xlb_ready = {
	.type = BPF_MAP_TYPE_QUEUE,
	.key_size = 0,
	.value_size = sizeof(__u32),
	.max_entries = XLB_MAX_LEGS,
};

/* ... of IPv6 workers: a client takes worker legs of its own family only
 * (the programs rewrite addresses, not IP headers), so each family has its
 * tokens and its schedule (xlb_sched6, xlb_config.sched_len6). Both objects
 * declare both; the IPv6 programs pick from these (PICK_READY, PICK_SCHED). */
struct xlb_map_def SEC("maps") xlb_ready6 = {
	.type = BPF_MAP_TYPE_QUEUE,
	.key_size = 0,
	.value_size = sizeof(__u32),
	.max_entries = XLB_MAX_LEGS,
};

/* Policies rr and least: worker ids, each as many times as its weight, in a
 * smooth weighted round-robin order; xlb_config.sched_len entries are used.
 * Written by user space (draining workers left out). */
struct xlb_map_def SEC("maps") xlb_sched = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = XLB_SCHED_LEN,
};

struct xlb_map_def SEC("maps") xlb_sched6 = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = XLB_SCHED_LEN,
};

/* What a program picks from: its family's tokens, schedule and length, and
 * the MSS it announces to its family's clients. */
#if XLB_FAMILY == 6
#define PICK_READY xlb_ready6
#define PICK_SCHED xlb_sched6
#define SCHED_LEN(cfg) ((cfg)->sched_len6)
#define OUR_MSS(cfg) ((cfg)->our_mss6 ? (cfg)->our_mss6 : (cfg)->our_mss) /* never 0 */
#else
#define PICK_READY xlb_ready
#define PICK_SCHED xlb_sched
#define SCHED_LEN(cfg) ((cfg)->sched_len)
#define OUR_MSS(cfg) ((cfg)->our_mss)
#endif

/* Element 0: the round-robin position (atomic add). */
struct xlb_map_def SEC("maps") xlb_rr = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 1,
};

/* Per-worker load (struct worker_load), indexed by worker id. */
struct xlb_map_def SEC("maps") xlb_wload = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct worker_load),
	.max_entries = XLB_MAX_WORKERS,
};

/* xlb ctl rematch: client leg -> worker id its next request goes to. The data
 * plane deletes the entry once the client moved. */
struct xlb_map_def SEC("maps") xlb_rematch = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct leg_key),
	.value_size = sizeof(__u32),
	.max_entries = XLB_REMATCH_MAX,
};

/* Tail calls: slots XLB_PROG_BIND, _MAIN, _SLOW, _XLATE of IPv4's programs,
 * then the same of IPv6's (ipfam.h PROG_SLOT). Filled by user space
 * at load, pinned but never reused by a takeover (its slots are one load's
 * programs). A prog array empties when its last user reference goes: the
 * process that attached the programs holds it, and the pin keeps it if that
 * process dies with the program attached. */
struct xlb_map_def SEC("maps") xlb_progs = {
	.type = BPF_MAP_TYPE_PROG_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 2 * XLB_PROGS_PER_FAMILY,
};

/* Not used by the programs: updating a map-in-map waits for an RCU grace
 * period (the kernel's maybe_wait_bpf_programs), so that user space knows no
 * program still runs with what it read before. Idle release needs that
 * between parking a leg and unbinding it. */
struct xlb_map_def SEC("maps") xlb_sync = {
	.type = BPF_MAP_TYPE_ARRAY_OF_MAPS,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 1,
};

struct xlb_map_def SEC("maps") xlb_sync_inner = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 1,
};

/* Local ports of worker legs, a bit each (65536 bits in 1024 words), for
 * the pass-through of foreign traffic without a leg lookup. Written by user
 * space only. */
struct xlb_map_def SEC("maps") xlb_ports = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 65536 / 64,
};

/* Workers by address, so that their SYN-ACKs are learned. */
struct xlb_map_def SEC("maps") xlb_workers = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct endpoint),
	.value_size = sizeof(struct worker_info),
	.max_entries = XLB_MAX_WORKERS,
};

/* Worker legs that leaving clients gave back, oldest first (struct
 * cooling): each goes to its pool once it stayed quiet a while (a few of its
 * worker's round trips: worker_cfg.cool_us). A client
 * that closes after reading all the bytes sent so far may not have had the
 * whole answer: a worker still sending shows it in that time, and its leg is
 * retired rather than handed, mid-answer, to the next client. */
struct xlb_map_def SEC("maps") xlb_cooling = {
	.type = BPF_MAP_TYPE_QUEUE,
	.key_size = 0,
	.value_size = sizeof(struct cooling),
	.max_entries = XLB_MAX_LEGS,
};

/* Worker legs retired by the data plane (drain, trim), for user space to end
 * properly. BPF_EXIST on push drops the oldest if it is ever full. */
struct xlb_map_def SEC("maps") xlb_retired = {
	.type = BPF_MAP_TYPE_QUEUE,
	.key_size = 0,
	.value_size = sizeof(struct leg_key),
	.max_entries = XLB_MAX_LEGS,
};

/* Per-worker settings (struct worker_cfg), indexed by worker id. */
struct xlb_map_def SEC("maps") xlb_wcfg = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct worker_cfg),
	.max_entries = XLB_MAX_WORKERS,
};

/* Per-worker counters (struct worker_stats), indexed by worker id. */
struct xlb_map_def SEC("maps") xlb_wstats = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct worker_stats),
	.max_entries = XLB_MAX_WORKERS,
};

/* Events to user space (struct xlb_event). */
/* Request records (struct req_record), for the requests config log_every
 * samples: user space reads them on its own time (no wake-up). */
struct xlb_map_def SEC("maps") xlb_reqlog = {
	.type = BPF_MAP_TYPE_RINGBUF,
	.key_size = 0,
	.value_size = 0,
	.max_entries = XLB_REQLOG_RING,
};

struct xlb_map_def SEC("maps") xlb_events = {
	.type = BPF_MAP_TYPE_RINGBUF,
	.key_size = 0,
	.value_size = 0,
	.max_entries = XLB_EVENT_RING,
};

/* Element 0: the SYN budget (CFG_SYN_DEMAND): the idle legs user space
 * counted over all pools when it last looked, less the clients' SYNs the
 * program answered since, plus the first binds of clients since. The SYN
 * that takes it from 0 to -1 is an EV_DEMAND. */
struct xlb_map_def SEC("maps") xlb_syn_budget = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__s64),
	.max_entries = 1,
};

/* Client segments that found every pool empty (CFG_HOLD_FIRST, xlb.c
 * hold_first), by the client leg's key: one a client, the last. User space
 * deletes each as it takes it (splice replayHeld). Not preallocated: the
 * map costs memory only during a burst. */
struct held {
	struct held_hdr h;
	__u8 frame[XLB_HOLD_MAX];
};

struct xlb_map_def SEC("maps") xlb_held = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(struct leg_key),
	.value_size = sizeof(struct held),
	.max_entries = XLB_MAX_HELD,
	.map_flags = BPF_F_NO_PREALLOC,
};

/* Routed mode: a next hop bpf_fib_lookup found, tagged with the lookup's
 * inputs (xlb.c route_out). */
struct fib_hop {
	__be32 daddr[ADDR_WORDS]; /* tag: the packet's destination, */
	__be32 saddr[ADDR_WORDS]; /* its source */
	__u32 in_ifindex;    /* and the device it came in on */
	__u32 gen;           /* xlb_fib_gen when it was looked up */
	__u64 due_ns;        /* now_ns() from which it is looked up again (XLB_FIB_TTL_NS) */
	__u32 ifindex;       /* the egress device */
	__u16 mtu;           /* the largest tot_len it takes (bpf_fib_lookup's mtu_result) */
	__u8 dmac[6];
	__u8 smac[6];
	__u8 pad[6];
};

/* Next hops, per CPU: XLB_FIB_SLOTS entries indexed by a hash of the
 * lookup's inputs (fib_slot), one destination an entry; a destination
 * that meets another in its entry is looked up again, as every packet was
 * before the cache. Per CPU, so that no entry is ever written by two CPUs
 * at once (a reader would see half of one next hop). Not pinned: a new
 * load starts empty. One of each family: xlb_fib6 is IPv6's. */
#if XLB_FAMILY == 6
#define xlb_fib xlb_fib6
#endif
struct xlb_map_def SEC("maps") xlb_fib = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct fib_hop),
	.max_entries = 1u << XLB_FIB_BITS,
};

/* Per-CPU room for bpf_fib_lookup's parameters: route_out's stack and
 * xlb_xdp's together must stay within the 512 bytes of a BPF stack. */
struct xlb_map_def SEC("maps") xlb_fib_scratch = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct bpf_fib_lookup),
	.max_entries = 1,
};

/* Element 0: the generation of the next hops (__u32). User space adds one
 * whenever a route, a neighbour, an address or a link changes
 * (splice/nexthop.go); an entry of xlb_fib of another generation is looked
 * up again. Not pinned, like xlb_fib. */
struct xlb_map_def SEC("maps") xlb_fib_gen = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u32),
	.max_entries = 1,
};

/* Per-CPU room to build a struct held in (2 KB: not on the stack). */
struct xlb_map_def SEC("maps") xlb_hscratch = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct held),
	.max_entries = 1,
};

/* Per-CPU scratch space for the parsed TCP options of the packet at hand.
 * Not on the stack on purpose: the verifier does not track values in map
 * memory, so the many option layouts a parse can end with do not become as
 * many verifier states for the rest of the program. */
struct xlb_map_def SEC("maps") xlb_scratch = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct tcp_opts),
	.max_entries = 1,
};

/* The first payload bytes of the packet at hand, copied where a decision
 * reads them (proto.h). In map memory for the same reason as xlb_scratch:
 * every byte read is one unknown value to the verifier, whatever the
 * packet, and no read needs a bounds check against the packet. */
struct peek_buf {
	__u8 b[XLB_PEEK_MAX + 16]; /* zero past len, so a word read near the end is defined */
	__u32 len;                 /* payload bytes copied, at most XLB_PEEK_MAX */
	__u32 pad;
};

struct xlb_map_def SEC("maps") xlb_peek = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct peek_buf),
	.max_entries = 1,
};

/* The header block of an answer's first segment, where http_answer() looks
 * for its Connection and Content-Length headers, or of a request segment
 * http10_request() judges. */
struct scan_buf {
	__u8 b[2 * XLB_HDR_SCAN]; /* a read past the last index (masked to SCAN_MASK) stays inside */
	/* What a scan found, here rather than in bpf_loop's context on the
	 * stack: the verifier keeps no value of map memory, so the states of
	 * the step it walks do not differ by what it found (on the stack,
	 * every combination was a state of its own: 400k instructions). */
	__u32 len;     /* bytes in b */
	__u32 conn;    /* http_answer: enum conn_header */
	__u32 conn_at; /* http_answer: index of the "keep-alive" token */
	__u32 flags;   /* http_answer: ANS_HDR_END, ANS_HAS_LEN, ANS_NO_LEN */
	__u32 hdr_len; /* http_answer: bytes of the status line and headers */
	__u32 clen;    /* http_answer: Content-Length */
	__u32 line;    /* http10_request: the request line was read */
	__u32 ok;      /* http10_request: ... and it ends in "HTTP/1.0", no header rules it out */
	__u32 end;     /* http10_request: index after the empty line */
};

struct xlb_map_def SEC("maps") xlb_scan = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct scan_buf),
	.max_entries = 1,
};

/* Per-CPU room for the two bindings bind_legs() writes: on the stack they
 * would push the program past the 512-byte BPF stack. */
struct bind_scratch {
	struct binding to_worker;
	struct binding to_client;
	__u32 reentry; /* 1: xlb_bind bound the leg (or decided its boundary) and calls xlb_xdp again */
	__u32 low;     /* worker id + 1 whose pool a take just left at its low watermark (0: none) */
	struct leg_key reply_to; /* xlb_slow: the leg a reply goes to when it is not the sender's (framed_close) */
};

struct xlb_map_def SEC("maps") xlb_bscratch = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(struct bind_scratch),
	.max_entries = 1,
};

static __always_inline void count_n(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&xlb_stats, &idx);

	if (v)
		*v += n;
}

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&xlb_stats, &idx);

	/* Always non-NULL for idx < XLB_CNT_MAX; the check is for the verifier. */
	if (v)
		*v += 1; /* per-CPU slot: no other CPU writes it */
}

static __always_inline struct worker_stats *wstats(__u32 worker)
{
	return bpf_map_lookup_elem(&xlb_wstats, &worker);
}

static __always_inline struct worker_load *wload(__u32 worker)
{
	return bpf_map_lookup_elem(&xlb_wload, &worker);
}

static __always_inline void wload_add(__u32 worker, __s64 n)
{
	struct worker_load *l = wload(worker);

	if (l)
		__sync_fetch_and_add(&l->bound, n);
}

/* idle_add counts a worker leg entering (1) or leaving (-1) LEG_IDLE: the
 * exact count of a worker's idle legs, which user space sizes its pool by.
 * Returns the count before. */
static __always_inline __s64 idle_add(__u32 worker, __s64 n)
{
	struct worker_load *l = wload(worker);

	return l ? __sync_fetch_and_add(&l->idle, n) : 0;
}

/* cooling_add counts a worker leg entering or leaving LEG_COOLING. */
static __always_inline void cooling_add(__u32 worker, __s64 n)
{
	struct worker_load *l = wload(worker);

	if (l)
		__sync_fetch_and_add(&l->cooling, n);
}

/* unpooled counts worker leg `worker` leaving state `s`, if that is one
 * of the counted ones (idle, cooling). */
static __always_inline void unpooled(__u32 worker, __u32 s)
{
	if (s == LEG_IDLE)
		idle_add(worker, -1);
	else if (s == LEG_COOLING)
		cooling_add(worker, -1);
}

static __always_inline struct xlb_config *config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&xlb_config, &zero);
}

#endif
