/* SPDX-License-Identifier: GPL-2.0 */
/* Layouts shared with user space. kern/structs.go and kern/kern.go mirror every definition here;
 * kern_test.go checks that the two agree (names, numbers, sizes), so change both
 * together. All multi-byte fields are host order unless named __be. */
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
 * program saw and every reason it dropped or answered a packet itself. Append
 * only: the numbers are part of the pinned-map ABI. */
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
	XLB_CNT_FOREIGN = 9,       /* TCP of no leg of ours (passed) */
	XLB_CNT_SYN = 10,          /* client SYN to the service learned */
	XLB_CNT_CLIENT_LEG = 11,   /* client leg created from a handshake */
	XLB_CNT_WORKER_SYNACK = 12,/* worker SYN-ACK learned */
	XLB_CNT_BIND = 13,         /* client leg bound to a worker leg */
	XLB_CNT_FWD_TO_WORKER = 14,/* client segment translated to its worker */
	XLB_CNT_FWD_TO_CLIENT = 15,/* worker segment translated to its client */
	XLB_CNT_NO_IDLE_LEG = 16,  /* drop: data but no idle worker leg */
	XLB_CNT_STALE_ACKED = 17,  /* stale segment on an unbound leg answered with an ACK */
	XLB_CNT_IMPLAUSIBLE = 18,  /* seq/ack out of window: forwarded, positions kept */
	XLB_CNT_RST_IGNORED = 19,  /* RST with an unexpected seq: no state change */
	XLB_CNT_UNBOUND_ACK = 20,  /* drop: pure ACK or window update on an unbound leg */
	XLB_CNT_BAD_OPTIONS = 21,  /* drop: malformed options, or several TS options */
	XLB_CNT_FIN_ANSWERED = 22, /* FIN on an unbound leg completed by the program */
	XLB_CNT_LEG_CLOSED = 23,   /* leg finished (FIN both ways, or RST): reported */
	XLB_CNT_EVENT_LOST = 24,   /* event ring full: user space will find it by polling */
	XLB_CNT_UNSOLICITED = 25,  /* drop: new data from a worker on an idle leg (leg retired) */
	XLB_CNT_HS_DATA = 26,      /* handshake ACK carried data: payload cut, client retransmits */
	XLB_CNT_FIB_FAIL = 27,     /* drop: routed mode, no route/neighbour for the next hop */
	XLB_CNT_DEAD_LEG = 28,     /* drop: segment on a leg already finished */
	XLB_CNT_REQUEST = 29,      /* request boundary seen on a bound client leg */
	XLB_CNT_REMIX = 30,        /* client moved to another worker leg at a boundary */
	XLB_CNT_REMIX_NO_IDLE = 31,/* boundary, but no idle worker leg: stayed */
	XLB_CNT_STAY_GAP = 32,     /* new data after a response, out of order: stayed */
	XLB_CNT_STAY_RESPONSE = 33,/* new data before the whole response was acked: stayed */
	XLB_CNT_STAY_REQUEST = 34, /* worker had not acked the whole request: stayed */
	XLB_CNT_RETIRED = 35,      /* idle worker leg retired (worker draining, pool trimmed) */
	XLB_CNT_PARKED_DROP = 36,  /* drop: data on a client leg being released (the client retransmits) */
	XLB_CNT_RELEASED = 37,     /* quiescent client gave its worker leg back (idle release) */
	XLB_CNT_REMATCH = 38,      /* client moved to the worker named by xlb ctl rematch */
	XLB_CNT_TAIL_FAIL = 39,    /* drop: a tail call to another program failed */
	XLB_CNT_BIND_RACE = 40,    /* drop: the leg changed between the two programs (the sender retransmits) */
	/* A pair pinned for life, one counter per enum pin_reason, in its order. */
	XLB_CNT_PIN_TLS = 41,      /* the client's first bytes are a TLS record */
	XLB_CNT_PIN_UPGRADE = 42,  /* 101 Switching Protocols, CONNECT, HTTP/2 preface */
	XLB_CNT_PIN_INTERIM = 43,  /* an interim (1xx) answer that does not end in its segment */
	XLB_CNT_PIN_PIPELINED = 44,/* the worker answered before it had the whole request */
	XLB_CNT_PIN_NOT_MSG = 45,  /* new data at a boundary does not start a message of the protocol */
	XLB_CNT_PIN_RAW = 46,      /* --protocol raw: every connection */
	XLB_CNT_PIN_UNKNOWN = 47,  /* --protocol auto: the first bytes are of no protocol we know */
	XLB_CNT_PIN_STATEFUL = 48, /* a command that gives the connection state (AUTH, SELECT, MULTI, SUBSCRIBE...) */
	XLB_CNT_INTERIM = 49,      /* an interim answer (100 Continue, 103): the exchange goes on */
	XLB_CNT_STAY_PINNED = 50,  /* boundary on a pinned pair: stayed */
	XLB_CNT_STAY_TAIL = 51,    /* boundary, but the client's previous data did not end a write (PSH) or a line: stayed */
	XLB_CNT_CLIENT_LEFT = 52,  /* a client closed between exchanges: its worker leg went back to the pool */
	XLB_CNT_UNSERVED = 53,     /* a client closed (FIN) with its request while no worker leg was idle: FIN answered, request dropped */
	XLB_CNT_MAX
};

/* Key of a leg: the 4-tuple of packets arriving from the leg's peer, network
 * order. Addresses have room for IPv6; an IPv4 address sits in addr[0] with the
 * rest zero. */
struct leg_key {
	__be32 peer_addr[4];
	__be32 local_addr[4];
	__be16 peer_port;
	__be16 local_port;
	__u8 family;   /* AF_INET */
	__u8 pad[3];
};

enum leg_kind {
	LEG_CLIENT = 1,
	LEG_WORKER = 2,
};

/* Leg life cycle. Changed with compare-and-swap so that exactly one path
 * performs each transition. */
enum leg_state {
	LEG_IDLE = 1,    /* not bound: a client before its first request, a worker leg in the pool */
	LEG_BOUND = 2,   /* bound to a partner (see xlb_binds) */
	LEG_CLOSING = 3, /* FIN answered by the program; waiting for the last ACK */
	LEG_DEAD = 4,    /* finished and reported; user space reaps it */
	LEG_PARKED = 5,  /* client leg bound but being released (idle release): its data is dropped */
	LEG_NEW = 6,     /* worker leg registered by user space, not in its pool yet (CTL_POOL puts it there) */
	LEG_COOLING = 7, /* worker leg a leaving client gave back: in xlb_cooling until it stayed quiet a while (worker_cfg.cool_us) */
};

/* An entry of xlb_cooling: a worker leg and when it started cooling. */
struct cooling {
	struct leg_key key;
	__u64 due_ns;        /* now_ns() from which it may serve another client */
};

enum leg_opt {
	LEG_OPT_TS = 1,      /* timestamps negotiated */
	LEG_OPT_SACK = 2,    /* SACK permitted */
	LEG_OPT_WSCALE = 4,  /* window scaling negotiated */
	LEG_OPT_PEER_TS = 8, /* peer_tsval is known */
};

enum leg_rx_flag {
	LEG_RX_FIN = 1, /* the peer sent FIN (peer_hi counts it) */
	LEG_RX_RST = 2, /* the peer reset the connection */
};

/* A leg and its positions (DESIGN.md "Positions"). Sequence numbers are wire
 * values of this leg; compare them only with the seq_* helpers.
 *
 * Who writes what:
 * - identity fields: whoever creates the leg (user space for worker legs, the
 *   handshake path for client legs), never changed afterwards;
 * - rx fields: only the path that processes packets arriving on this leg;
 * - tx fields: describe what was sent to the peer. While the leg is bound they
 *   are not maintained (they follow from the partner's rx fields and the
 *   binding); bind_legs()/unbind materialise them, under the state CAS.
 * - state: compare-and-swap only. */
struct leg {
	/* identity */
	__u8 kind;           /* enum leg_kind */
	__u8 peer_wscale;    /* scale of windows the peer sends */
	__u8 our_wscale;     /* scale the peer applies to windows we send */
	__u8 opts;           /* enum leg_opt */
	__u16 peer_mss;
	__u16 our_mss;
	__u32 worker;        /* worker id (worker legs) */
	__u32 win_bound;     /* largest window either side can advertise, bytes */
	/* rx */
	__u32 peer_hi;       /* end of the highest byte (FIN included) received from the peer */
	__u32 peer_acked;    /* highest ack received from the peer */
	__u32 peer_tsval;    /* highest TSval received from the peer */
	__u32 peer_win;      /* last window field from the peer, unscaled */
	__u32 req_mark;      /* worker legs: peer_hi when the current request started (its answer starts there) */
	__u32 rx_flags;      /* enum leg_rx_flag */
	__u32 requests;      /* client legs: requests seen (new data after a response) */
	/* tx (valid while not bound) */
	__u32 snd_nxt;       /* end of the highest byte sent to the peer */
	__u32 our_tsval;     /* last TSval sent to the peer */
	__u32 snd_win;       /* window field to send, unscaled */
	/* life cycle */
	__u32 state;         /* enum leg_state */
	/* remix safety (DESIGN.md "Remix safety") */
	__u32 sent_hi;       /* worker legs, bound: end of the highest client data forwarded to the
	                      * worker, worker's sequence space (written by the client path) */
	__u32 pin;           /* enum pin_reason: never moved, never released (0: free); set once, CAS */
	__u8 proto;          /* client legs: enum xlb_proto, from the first bytes */
	__u8 tail;           /* client legs: enum leg_tail, of the segment that ended at peer_hi */
	__u8 pad[2];
	__u64 last_ns;       /* now_ns() (CLOCK_MONOTONIC_COARSE) of the last packet from the peer */
};

/* What the client's protocol is (--protocol, or classified from the first
 * bytes of the connection under --protocol auto). */
enum xlb_proto {
	PROTO_NONE = 0,     /* no data seen yet */
	PROTO_HTTP = 1,     /* HTTP/1.x: a message starts with a method token */
	PROTO_RESP = 2,     /* Redis RESP: a command is an array (*N) */
	PROTO_MEMCACHE = 3, /* memcached text: a command word */
	PROTO_OPAQUE = 4,   /* no message boundaries can be seen (TLS, raw, unknown): pinned */
};

/* Why a pair is pinned; XLB_CNT_PIN_TLS - 1 + reason counts it. */
enum pin_reason {
	PIN_NONE = 0,
	PIN_TLS = 1,
	PIN_UPGRADE = 2,
	PIN_INTERIM = 3,
	PIN_PIPELINED = 4,
	PIN_NOT_MSG = 5,
	PIN_RAW = 6,
	PIN_UNKNOWN = 7,
	PIN_STATEFUL = 8,
};

/* How the client's data before a candidate boundary ended. */
enum leg_tail {
	TAIL_PSH = 1,  /* its segment carried PSH: the end of a write */
	TAIL_CRLF = 2, /* its last two bytes were CRLF (checked for RESP and memcache only) */
};

/* How packets arriving on one leg are turned into packets of its partner.
 * Written whole by bind_legs() (map update), never field by field, so the other
 * direction never reads a half-made binding. */
struct binding {
	struct leg_key to;   /* the partner: packets leave as to.local -> to.peer */
	__u32 seq_off;       /* added to seq */
	__u32 ack_off;       /* added to ack and to every SACK edge */
	__u32 tsval_off;     /* added to TSval */
	__u32 tsecr_off;     /* added to TSecr */
	__u8 in_wscale;      /* our leg's peer_wscale */
	__u8 out_wscale;     /* partner's our_wscale */
	__u8 flags;          /* enum binding_flag */
	__u8 proto;          /* the client leg's enum xlb_proto (the worker path reads HTTP status lines) */
	__u32 worker;        /* worker id of the pair's worker leg (per-worker stats) */
	__u32 ifindex;       /* routed mode: egress device (0 = look it up) */
};

enum binding_flag {
	BIND_TO_CLIENT = 2,  /* the partner is a client leg */
};

/* A handshake seen by the program: a client's SYN to the service, or a worker's
 * SYN-ACK on a pool connection. Keyed like the leg it becomes. */
struct handshake {
	__u32 peer_isn;
	__u32 peer_tsval;
	__u16 peer_mss;
	__u8 peer_wscale;    /* 0xff: no window scale option */
	__u8 opts;           /* LEG_OPT_TS | LEG_OPT_SACK | LEG_OPT_WSCALE offered by the peer */
	__u32 our_isn;       /* SYN-ACK only: our ISN (ack - 1) */
	__u64 ns;
};

/* A worker as the data plane knows it, keyed by struct endpoint. */
struct endpoint {
	__be32 addr[4];
	__be16 port;
	__u8 family;
	__u8 pad;
};

struct worker_info {
	__u32 id;
	__u32 flags;         /* enum worker_flag */
};

enum worker_flag {
	WORKER_DRAIN = 1,    /* take no new requests: retire its legs as they come idle */
};

/* Per-worker settings the data plane reads when it takes or gives back a
 * worker leg: the array xlb_wcfg indexed by worker id, written by user space. */
struct worker_cfg {
	__u32 flags;         /* enum worker_flag */
	__s32 trim;          /* idle legs to retire (pool larger than wanted) */
	__u32 weight;        /* share of requests (policy least compares bound legs / weight) */
	__u32 low;           /* EV_POOL_LOW when a take leaves this many idle legs (0: never) */
	__u32 cool_us;       /* how long a leg a leaving client gave back stays quiet before reuse (0: XLB_COOL_NS) */
	__u32 pad;
};

/* Per-worker load, the array xlb_wload indexed by worker id: written by the
 * data plane only, with atomic adds (policy least reads it). */
struct worker_load {
	__s64 bound;         /* worker legs bound to a client */
	__s64 idle;          /* worker legs in state LEG_IDLE (in the pool, or being put there) */
	__s64 cooling;       /* worker legs in state LEG_COOLING */
};

/* Per-worker counters, the per-CPU array xlb_wstats indexed by worker id. With
 * the legs user space registered, binds and releases give how many of a
 * worker's legs are idle. */
struct worker_stats {
	__u64 binds;     /* idle legs taken for a client */
	__u64 releases;  /* legs the data plane gave back to the pool */
	__u64 requests;  /* requests started on this worker's legs */
	__u64 bytes_in;  /* payload bytes client -> worker */
	__u64 bytes_out; /* payload bytes worker -> client */
};

/* Global settings, element 0 of the xlb_config array. */
struct xlb_config {
	__be32 listen_addr[4]; /* service address; all zero: any local address */
	__be16 listen_port;    /* service port; 0: no service (pass everything) */
	__u8 our_wscale;       /* window scale the listener announces */
	__u8 flags;            /* enum config_flag */
	__u16 our_mss;         /* MSS the listener announces */
	__u8 policy;           /* enum xlb_policy */
	__u8 protocol;         /* enum cfg_protocol */
	__u32 sched_len;       /* entries of xlb_sched in use (policies rr and least) */
	__u32 pad2;
};

/* --protocol: which rules tell a message boundary. */
enum cfg_protocol {
	CFG_PROTO_AUTO = 0,     /* classify each connection from its first bytes */
	CFG_PROTO_HTTP = 1,     /* PROTO_HTTP for every connection */
	CFG_PROTO_RESP = 2,     /* PROTO_RESP */
	CFG_PROTO_MEMCACHE = 3, /* PROTO_MEMCACHE */
	CFG_PROTO_RAW = 4,      /* none: every connection pinned (an L4 splice) */
};

enum config_flag {
	CFG_ROUTED = 1, /* forward rewritten packets out (XDP_TX/redirect) instead of to the local stack */
};

/* Who gets a request (DESIGN.md "Remix at a request boundary"). */
enum xlb_policy {
	POLICY_JIQ = 0,    /* the worker leg idle the longest (xlb_ready's order) */
	POLICY_RR = 1,     /* the next worker of xlb_sched */
	POLICY_LEAST = 2,  /* the worker of xlb_sched with the fewest bound legs per weight */
	POLICY_STICKY = 3, /* no move at boundaries, except rematch and drain */
};

/* A command for the control program xlb_ctl, which user space runs with
 * BPF_PROG_TEST_RUN (this struct is the "packet"): changes to a pair of legs
 * that no packet would trigger, made by the data plane's own code under the
 * same rules as packets. Returns XDP_PASS when done, XDP_DROP when refused. */
struct ctl_msg {
	__u32 op;            /* enum ctl_op */
	__u32 worker;        /* CTL_RETIRE_IDLE: the worker id */
	__u64 min_idle_ns;   /* CTL_PARK: both legs silent for at least this long */
	struct leg_key key;  /* the client leg */
};

enum ctl_op {
	CTL_PARK = 1,    /* a bound, quiescent client leg stops taking data (LEG_PARKED) */
	CTL_RELEASE = 2, /* after an RCU grace period: unbind a parked leg, its worker leg back to the pool */
	CTL_UNPARK = 3,  /* a parked leg goes on as it was (no grace period could be had) */
	CTL_RETIRE_IDLE = 4, /* take one entry off a draining worker's pool, retiring its leg */
	CTL_POOL = 5,    /* a new worker leg (LEG_NEW) goes into its worker's pool */
	CTL_WARM = 6,    /* cooled worker legs go to their pools (XDP_PASS: run again, more may be due) */
};

enum event_type {
	EV_CLIENT_LEG = 1, /* not sent any more: user space adopts a client when it accepts it */
	EV_LEG_CLOSED = 2, /* a leg finished: destroy its socket silently, delete its entries */
	EV_POOL_EMPTY = 3, /* a client had data but no worker leg was idle: grow the pool */
	EV_POOL_LOW = 4,   /* a take left a worker with worker_cfg.low idle legs: grow its pool (key zero) */
};

/* What the program tells user space through the xlb_events ring buffer. */
struct xlb_event {
	__u32 type;          /* enum event_type */
	__u32 state;         /* leg state; for EV_LEG_CLOSED, the state before it died */
	struct leg_key key;  /* the leg concerned */
	__u32 worker;        /* worker legs: the worker id */
	__u8 kind;           /* enum leg_kind */
	__u8 pin;            /* enum pin_reason */
	__u16 pad2;
	__u32 peer_hi;
	__u32 snd_nxt;
	__u32 peer_tsval;
	__u32 our_tsval;
	__u8 peer_wscale;
	__u8 our_wscale;
	__u8 opts;
	__u8 rx_flags;
	__u16 peer_mss;
	__u16 pad;
};

#endif
