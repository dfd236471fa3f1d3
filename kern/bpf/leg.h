/* SPDX-License-Identifier: GPL-2.0 */
/* Legs, positions and bindings: the state the data plane keeps per connection,
 * and the operations on it (DESIGN.md "Positions", "Binding", "Closing"). */
#ifndef XLB_LEG_H
#define XLB_LEG_H

#include "bpf_helpers.h"
#include "consts.h"
#include "structs.h"
#include "maps.h"
#include "seq.h"
#include "tcp_opts.h"
#include "ipfam.h"

/* A parsed TCP packet of the program's family (ipfam.h). Numbers are host
 * order. */
struct pkt {
	struct xdp_md *ctx;
	void *end;
	struct ethhdr *eth;
	ip_t *ip;
	struct tcphdr *tcp;
	__u8 *opts;
	__u32 opt_len;
	__u32 payload;  /* payload bytes */
	__u32 payload_off; /* offset of the payload from the start of the frame */
	__u32 seq;
	__u32 ack;
	__u16 win;      /* window field, unscaled */
	__u32 win_cap;  /* translate(): bytes the window is held to; 0: none */
	__u8 fin, syn, rst, has_ack, psh;
	__u8 bad_opts;  /* parse_tcp_opts refused the options */
	struct tcp_opts *o; /* in xlb_scratch: see there */
	struct leg_key key;
};

/* emit reports an event about a leg. `state` is the state to report: for
 * EV_LEG_CLOSED the state the leg had before it died (a worker leg that dies
 * unbound was idle: user space counts its idle legs with that). */
static __always_inline void emit(__u32 type, const struct leg_key *key, const struct leg *leg, __u32 state)
{
	struct xlb_event ev = {};

	ev.type = type;
	ev.key = *key;
	ev.state = state;
	if (leg) {
		ev.peer_hi = leg->peer_hi;
		ev.snd_nxt = leg->snd_nxt;
		ev.peer_tsval = leg->peer_tsval;
		ev.our_tsval = leg->our_tsval;
		ev.peer_wscale = leg->peer_wscale;
		ev.our_wscale = leg->our_wscale;
		ev.opts = leg->opts;
		ev.rx_flags = leg->rx_flags;
		ev.peer_mss = leg->peer_mss;
		ev.worker = leg->worker;
		ev.kind = leg->kind;
		ev.pin = leg->pin;
	}
	/* Waking user space costs an interrupt an event (irq_work; in a VM
	 * an exit): a finished leg, two a request with a connection per
	 * request, is told without one until XLB_EVENT_WAKE bytes wait, or
	 * until user space looks (every few ms while events come: splice
	 * readEvents). The others wake it at once: a client waits. */
	__u64 flags = BPF_RB_FORCE_WAKEUP;

	if (type == EV_LEG_CLOSED && bpf_ringbuf_query(&xlb_events, BPF_RB_AVAIL_DATA) < XLB_EVENT_WAKE)
		flags = BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_output(&xlb_events, &ev, sizeof(ev), flags))
		count(XLB_CNT_EVENT_LOST);
}

/* set_state moves a leg from `from` to `to`; it returns 1 for the one caller
 * that made the transition. */
static __always_inline int set_state(struct leg *leg, __u32 from, __u32 to)
{
	return __sync_val_compare_and_swap(&leg->state, from, to) == from;
}

/* Request records (xlb_config.log_every; struct req_record). A logged
 * request has its worker leg's req_ns set when it starts; the answer's
 * segments note their first and last bytes' times; its end writes the
 * record. A request not logged costs a load of req_ns where it would. */

/* log_sample: worker leg w starts a request, its client's bytes from tx
 * (sent_hi's value then): logged if one in `every` is drawn. Global, as the
 * two below: verified once, not in every program and path that inlines its
 * callers (the fast path's budget). */
__attribute__((noinline)) int log_sample(struct leg *w, __u32 every, __u32 tx)
{
	__u64 t = 0;

	if (!w)
		return 0;
	if (every == 1 || (every && bpf_get_prandom_u32() % every == 0)) {
		t = bpf_ktime_get_ns();
		WRITE_ONCE(w->first_us, 0);
		WRITE_ONCE(w->last_us, 0);
		WRITE_ONCE(w->req_tx, tx);
	}
	WRITE_ONCE(w->req_ns, t);
	return 0;
}

/* log_start: a request starts on w (see log_sample); nothing to do while
 * request records are off. */
static __always_inline void log_start(struct leg *w, const struct xlb_config *cfg, __u32 tx)
{
	if (cfg->log_every)
		log_sample(w, cfg->log_every, tx);
}

/* log_answer notes a segment of a logged request's answer that ends at
 * end (new data past req_mark). */
static __always_inline void log_answer(struct leg *w, __u32 end)
{
	__u64 start = READ_ONCE(w->req_ns);
	__u32 us;

	if (!start || !seq_gt(end, READ_ONCE(w->req_mark)))
		return;
	us = (__u32)((bpf_ktime_get_ns() - start) / 1000) + 1;
	if (!READ_ONCE(w->first_us))
		WRITE_ONCE(w->first_us, us);
	WRITE_ONCE(w->last_us, us);
}

/* log_end writes the record of worker leg w's logged request (its client
 * ck, its own key wk, the request's number on the client's connection),
 * once: the one that clears req_ns writes it. Global: verified once, not
 * at each of its callers. */
__attribute__((noinline)) int log_end(struct leg *w, const struct leg_key *ck, const struct leg_key *wk,
				      __u32 end, __u32 request)
{
	struct req_record *r;
	__u64 start;

	if (!w || !ck || !wk)
		return 0; /* never: a global function's pointers may be NULL for the verifier */
	start = READ_ONCE(w->req_ns);
	if (!start || __sync_val_compare_and_swap(&w->req_ns, start, 0) != start)
		return 0;
	r = bpf_ringbuf_reserve(&xlb_reqlog, sizeof(*r), 0);
	if (!r) {
		count(XLB_CNT_REQLOG_LOST);
		return 0;
	}
	r->client = *ck;
	r->wleg = *wk;
	r->worker = w->worker;
	r->end = end;
	r->pin = READ_ONCE(w->pin);
	r->request = request;
	r->req_bytes = READ_ONCE(w->sent_hi) - READ_ONCE(w->req_tx);
	r->resp_bytes = READ_ONCE(w->peer_hi) - READ_ONCE(w->req_mark);
	if (READ_ONCE(w->rx_flags) & LEG_RX_FIN)
		r->resp_bytes--; /* peer_hi counts the worker's FIN */
	r->start_ns = start;
	r->end_ns = bpf_ktime_get_ns();
	r->first_us = READ_ONCE(w->first_us);
	r->last_us = READ_ONCE(w->last_us);
	bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
	return 1;
}

/* finish marks a leg dead (from any live state) and reports it once. */
static __always_inline void finish(const struct leg_key *key, struct leg *leg)
{
	for (int i = 0; i < XLB_CAS_TRIES; i++) {
		__u32 s = READ_ONCE(leg->state);

		if (s == LEG_DEAD)
			return;
		if (set_state(leg, s, LEG_DEAD)) {
			if (s == LEG_BOUND && leg->kind == LEG_WORKER)
				wload_add(leg->worker, -1);
			if (leg->kind == LEG_WORKER)
				unpooled(leg->worker, s);
			count(XLB_CNT_LEG_CLOSED);
			emit(EV_LEG_CLOSED, key, leg, s);
			return;
		}
	}
}

/* A segment is plausible when its seq and ack lie within a window of the
 * leg's positions. Only plausible segments move positions or state. */
static __always_inline int plausible(const struct leg *leg, const struct pkt *p)
{
	if (!seq_near(p->seq, READ_ONCE(leg->peer_hi), leg->win_bound))
		return 0;
	if (p->has_ack && !seq_near(p->ack, READ_ONCE(leg->peer_acked), leg->win_bound))
		return 0;
	return 1;
}

/* advance moves the rx positions of the leg the packet arrived on. Called
 * after any binding decision, never before: offsets are computed from the
 * positions as they were before this packet. peer_hi moves only with bytes
 * (or a FIN): a segment without any says where its sender is, not what
 * arrived, and its seq is past bytes that were lost or held on the way (a
 * worker's ACK of a retransmitted request, sent after an answer the data
 * plane held: TestHTTP10Impaired), which would then pass for old ones. */
static __always_inline void advance(struct leg *leg, const struct pkt *p)
{
	__u32 end = p->seq + p->payload + p->fin;

	if (p->payload || p->fin)
		seq_advance(&leg->peer_hi, end);
	if (p->has_ack)
		seq_advance(&leg->peer_acked, p->ack);
	if (p->o->has_ts)
		seq_advance(&leg->peer_tsval, p->o->tsval);
	WRITE_ONCE(leg->peer_win, p->win);
	if (leg->kind == LEG_WORKER && p->has_ack)
		WRITE_ONCE(leg->cli_edge, p->ack + ((__u32)p->win << leg->peer_wscale));
	if (p->fin && !(READ_ONCE(leg->rx_flags) & LEG_RX_FIN))
		__sync_fetch_and_or(&leg->rx_flags, LEG_RX_FIN);
}

/* pin_pair pins client leg c and worker leg w for life (either may be
 * NULL): never moved, never released, the worker leg never reused. The
 * first reason stays; the pin is counted once, on the client leg. */
static __always_inline void pin_pair(struct leg *c, struct leg *w, __u32 reason)
{
	if (w)
		__sync_val_compare_and_swap(&w->pin, 0, reason);
	if (c && __sync_val_compare_and_swap(&c->pin, 0, reason) == 0)
		count(reason == PIN_CLOSE ? XLB_CNT_PIN_CLOSE : XLB_CNT_PIN_TLS - 1 + reason);
}

static __always_inline int pinned(const struct leg *c, const struct leg *w)
{
	return READ_ONCE(c->pin) || READ_ONCE(w->pin);
}

/* offer_edge notes on worker leg w, about to be bound to client leg c, the
 * window c was offered until now (its tx fields are valid: c is unbound),
 * as the worker leg's cli_edge: until the worker acknowledges something,
 * that is the window the client sends into. */
static __always_inline void offer_edge(const struct leg *c, struct leg *w)
{
	WRITE_ONCE(w->cli_edge, w->snd_nxt + ((__u32)c->snd_win << c->our_wscale));
}

/* tail_ok: the client's data before now ended a write (PSH) and, for the
 * line protocols, a line: a message may end there. */
static __always_inline int tail_ok(const struct leg *c)
{
	__u8 t = READ_ONCE(c->tail);

	if (!(t & TAIL_PSH))
		return 0;
	return (c->proto != PROTO_RESP && c->proto != PROTO_MEMCACHE) || (t & TAIL_CRLF);
}

/* bind_legs makes the binding pair between client leg c and worker leg w from
 * their current positions: bytes the client sends next (from c->peer_hi) land
 * right after what w's worker has received (w->snd_nxt), acks map c->snd_nxt
 * onto w->peer_hi, and timestamps continue where each peer last saw them, so
 * that PAWS never sees one go backwards. Both legs must be unbound, with tx
 * positions valid. Returns 0 or -1 if a map update failed. */
static __always_inline int bind_legs(const struct leg_key *ck, const struct leg *c,
				     const struct leg_key *wk, const struct leg *w, __u32 ifindex)
{
	__u32 zero = 0;
	struct bind_scratch *s = bpf_map_lookup_elem(&xlb_bscratch, &zero);
	struct binding *bc, *bw;

	if (!s)
		return -1;
	bc = &s->to_worker;
	bw = &s->to_client;
	bc->to = *wk;
	bc->seq_off = w->snd_nxt - c->peer_hi;
	bc->ack_off = w->peer_hi - c->snd_nxt;
	bc->tsval_off = w->our_tsval - c->peer_tsval;
	bc->tsecr_off = w->peer_tsval - c->our_tsval;
	bc->in_wscale = c->peer_wscale;
	bc->out_wscale = w->our_wscale;
	bc->flags = 0;
	bc->proto = c->proto;
	bc->ifindex = ifindex;
	bc->worker = w->worker;

	/* The reverse direction is the inverse map. */
	bw->to = *ck;
	bw->seq_off = -bc->ack_off;
	bw->ack_off = -bc->seq_off;
	bw->tsval_off = -bc->tsecr_off;
	bw->tsecr_off = -bc->tsval_off;
	bw->in_wscale = w->peer_wscale;
	bw->out_wscale = c->our_wscale;
	bw->flags = BIND_TO_CLIENT;
	bw->proto = c->proto;
	bw->ifindex = ifindex;
	bw->worker = w->worker;

	/* Worker side first: the reply can only come after the request, which is
	 * forwarded once both exist. */
	if (bpf_map_update_elem(&xlb_binds, wk, bw, BPF_ANY))
		return -1;
	if (bpf_map_update_elem(&xlb_binds, ck, bc, BPF_ANY)) {
		bpf_map_delete_elem(&xlb_binds, wk);
		return -1;
	}
	return 0;
}

/* bound_snd_nxt and bound_our_tsval give what has been sent to the peer of
 * leg `a`, bound with binding `b` to partner `z`: while bound, a's tx
 * positions follow from z's rx positions through the inverse offsets. */
static __always_inline __u32 bound_snd_nxt(const struct binding *b, const struct leg *z)
{
	return READ_ONCE(z->peer_hi) - b->ack_off;
}

static __always_inline __u32 bound_our_tsval(const struct binding *b, const struct leg *z)
{
	return READ_ONCE(z->peer_tsval) - b->tsecr_off;
}

/* window_held: worker leg w's data reaches (within one of its segments) the
 * right edge of the last window it was sent: the window, not the end of its
 * answer, may be what stopped it. */
static __always_inline int window_held(const struct leg *w)
{
	return seq_ge(READ_ONCE(w->peer_hi) + w->our_mss, READ_ONCE(w->win_edge));
}

/* answer_done: an HTTP answer whose length is known (BIND_END) was sent
 * whole by worker leg w; 0 for other protocols (answer_whole() says 1). */
static __always_inline int answer_done(const struct binding *b, const struct leg *w)
{
	return (READ_ONCE(b->flags) & BIND_END) && READ_ONCE(w->peer_hi) == READ_ONCE(b->fin_at);
}

/* answer_whole: the worker of binding b (either side's) sent the whole of
 * its current answer, as far as the program can tell: for HTTP, the answer's
 * length was read (BIND_END, http_answer) and worker leg w sent up to its
 * end. A client that read all it was sent and leaves, or goes quiet, may
 * otherwise be in the middle of an answer its worker paused (a descheduled
 * worker, a slow backend): handed to the next client, the worker's
 * connection would bring it the rest of this one (make bench saw curl get
 * "HTTP/0.9" after wrk's clients left mid-answer). An answer without a
 * length (chunked, or its headers past the scan) keeps its pair. Other
 * protocols are judged by their positions alone. */
static __always_inline int answer_whole(const struct binding *b, const struct leg *w)
{
	return b->proto != PROTO_HTTP || answer_done(b, w);
}

/* rest_win is the window worker leg w is told once its client acknowledged
 * all it sent (xlb_config.rest_win; 0: none), never less than two of w's
 * segments: a sender whose window is smaller than a segment sends nothing
 * until its persist timer (which backs off to minutes when every probe finds
 * the same window), and a receiver sent a single segment may delay its ACK
 * (40 ms): with lo's 32 KB segments and TCP_CORK, a 100 MB answer ran at a
 * segment per delayed ACK. */
static __always_inline __u32 rest_win(const struct xlb_config *cfg, const struct leg *w)
{
	__u32 r = READ_ONCE(cfg->rest_win), two = 2 * (__u32)w->our_mss;

	if (r && r < two)
		r = two;
	return r;
}

/* materialize stores the tx positions of leg `a` (bound with b to z) so that
 * they stay valid once the binding is gone. The window we answer a worker
 * with from then on is held to cap bytes (xlb_config.rest_win; 0 for a
 * client leg: no cap). */
static __always_inline void materialize(struct leg *a, const struct binding *b, const struct leg *z, __u32 cap)
{
	__u64 w = (__u64)READ_ONCE(z->peer_win) << z->peer_wscale;

	a->snd_nxt = bound_snd_nxt(b, z);
	a->our_tsval = bound_our_tsval(b, z);
	if (cap && w > cap)
		w = cap + (1u << a->our_wscale) - 1; /* rounded up, as in translate() */
	w >>= a->our_wscale;
	a->snd_win = w > 0xffff ? 0xffff : (__u32)w;
}

/* should_retire: a worker leg that was just taken out of its pool (or is
 * about to go back into it) leaves the pool instead: its worker is draining,
 * or the pool is larger than user space wants (a trim: one of the trim
 * credits is taken, atomically). */
static __always_inline int should_retire(__u32 worker, int may_trim)
{
	struct worker_cfg *c = bpf_map_lookup_elem(&xlb_wcfg, &worker);

	if (!c)
		return 0;
	if (READ_ONCE(c->flags) & WORKER_DRAIN)
		return 1;
	if (!may_trim || READ_ONCE(c->trim) <= 0)
		return 0;
	if (__sync_fetch_and_add(&c->trim, -1) > 0)
		return 1;
	__sync_fetch_and_add(&c->trim, 1); /* raced below zero: give it back */
	return 0;
}

static __always_inline int draining(__u32 worker)
{
	struct worker_cfg *c = bpf_map_lookup_elem(&xlb_wcfg, &worker);

	return c && (READ_ONCE(c->flags) & WORKER_DRAIN);
}

/* retire ends an unbound worker leg the program owns (the caller holds it in
 * state `from`): it is marked dead and queued in xlb_retired, where user
 * space finds it and ends the connection properly (the worker sees a FIN).
 * A queue rather than an event: the event's size, inlined in the pop loop,
 * cost the verifier more than it allows. */
static __always_inline int retire(const struct leg_key *k, struct leg *w, __u32 from)
{
	if (!set_state(w, from, LEG_DEAD))
		return 0;
	unpooled(w->worker, from);
	count(XLB_CNT_RETIRED);
	if (bpf_map_push_elem(&xlb_retired, k, BPF_EXIST))
		count(XLB_CNT_EVENT_LOST);
	return 1;
}

static __always_inline void *worker_pool(__u32 worker)
{
	return bpf_map_lookup_elem(&xlb_pool, &worker);
}

static __always_inline int uses_tokens(const struct xlb_config *cfg)
{
	return cfg->policy == POLICY_JIQ || cfg->policy == POLICY_STICKY;
}

/* pool_put puts an idle worker leg (state LEG_IDLE) on top of its
 * worker's pool, with a token in xlb_ready for the policies that use them.
 * Returns -1 if the worker has no pool (removed). BPF_EXIST: a full queue
 * drops its oldest entry rather than refuse. */
static __always_inline int pool_put(const struct leg_key *k, __u32 worker, const struct xlb_config *cfg)
{
	void *q = worker_pool(worker);

	if (!q || bpf_map_push_elem(q, k, BPF_EXIST))
		return -1;
	if (uses_tokens(cfg)) {
		/* The token of the leg's family (the control program pools
		 * legs of both). */
		if (k->family == XLB_AF_INET6)
			bpf_map_push_elem(&xlb_ready6, &worker, BPF_EXIST);
		else
			bpf_map_push_elem(&xlb_ready, &worker, BPF_EXIST);
	}
	return 0;
}

/* pool_new puts a new worker leg, just made LEG_IDLE, into its pool,
 * counted idle; it is retired if its worker has no pool (removed). */
static __always_inline int pool_new(const struct leg_key *k, struct leg *w, const struct xlb_config *cfg)
{
	idle_add(w->worker, 1);
	if (pool_put(k, w->worker, cfg)) {
		retire(k, w, LEG_IDLE);
		return -1;
	}
	return 0;
}

/* unpop gives back a leg that pool_pop handed out but that could not be
 * bound: as if it had never left (no release counted). */
static __always_inline void unpop(const struct leg_key *k, struct leg *w, const struct xlb_config *cfg)
{
	__u32 worker = w->worker;

	w->state = LEG_IDLE;
	idle_add(worker, 1); /* idle again before no longer taken (see keep_taken) */
	if (pool_put(k, worker, cfg))
		retire(k, w, LEG_IDLE);
	wload_add(worker, -1);
}

/* give_back ends worker leg w's binding (the caller holds it in state
 * `from`, LEG_BOUND): retired if its worker drains or its pool is trimmed,
 * else idle on top of its pool. Counted as a release either way (user
 * space counts a retired leg out of the pool when it takes it from
 * xlb_retired, like any idle leg retired). */
static __always_inline void give_back(const struct leg_key *k, struct leg *w, const struct xlb_config *cfg)
{
	struct worker_stats *ws = wstats(w->worker);
	__u32 worker = w->worker;

	if (READ_ONCE(w->pin) || should_retire(worker, 1)) {
		/* A pinned leg's worker holds state of its client (a TLS
		 * session, an upgraded stream): never reused. */
		if (!retire(k, w, LEG_BOUND))
			return; /* another CPU ended it first */
	} else {
		if (!set_state(w, LEG_BOUND, LEG_IDLE))
			return;
		idle_add(worker, 1);
		if (pool_put(k, worker, cfg))
			retire(k, w, LEG_IDLE);
	}
	wload_add(worker, -1);
	if (ws)
		ws->releases++;
}

/* note_take counts an idle leg taken from worker's pool, and notes for
 * the bind program when the take leaves the pool at its low watermark: it
 * tells user space (EV_POOL_LOW), which opens connections before the
 * pool runs dry and a client's first data is dropped. */
static __always_inline void note_take(__u32 worker)
{
	struct worker_cfg *c = bpf_map_lookup_elem(&xlb_wcfg, &worker);
	__s64 before = idle_add(worker, -1);
	__u32 zero = 0;
	struct bind_scratch *s;

	if (!c || !c->low || before != (__s64)c->low + 1)
		return;
	s = bpf_map_lookup_elem(&xlb_bscratch, &zero);
	if (s)
		s->low = worker + 1;
}

/* keep_taken: worker leg w (key wk), just taken from its pool (LEG_BOUND by
 * pool_pop's compare-and-swap), is counted taken (bound, and no longer
 * idle), or retired if its worker drains or is trimmed (may_trim). Returns
 * 1: the taker keeps it (unpop gives it back). Global: the verifier walks
 * it once, not once for every try of every pop loop of the policies (a
 * third of xlb_xdp6's budget).
 *
 * A leg moving between counted states (idle, bound, cooling) is counted in
 * its new state before it leaves the old one, here and everywhere: a read
 * of xlb_wload between the two may count it twice, never zero times. User
 * space caps a worker's connections by that sum (--worker-conns), and a
 * leg missing from it is a connection opened over the cap: counted bound
 * only once bound (after bind_legs), a take read in between let a worker
 * reach 33 connections for 32. */
__attribute__((noinline)) int keep_taken(struct leg *w, const struct leg_key *wk, int may_trim)
{
	__u32 worker;

	if (!w || !wk)
		return 0; /* never: a global function's pointers may be NULL for the verifier */
	worker = w->worker;
	wload_add(worker, 1);
	note_take(worker);
	if (should_retire(worker, may_trim)) {
		if (retire(wk, w, LEG_BOUND))
			wload_add(worker, -1); /* else finish() ended it, and counted it */
		return 0;
	}
	return 1;
}

/* pool_pop takes the live leg last put in a worker's pool. Entries can be stale
 * (the leg closed or was reaped while queued); those are skipped. The state
 * CAS makes sure that a leg is handed to one client only. */
static __always_inline struct leg *pool_pop(__u32 worker, struct leg_key *wk)
{
	void *q = worker_pool(worker);

	if (!q)
		return NULL;
	for (int i = 0; i < XLB_IDLE_POP_TRIES; i++) {
		struct leg *w;

		if (bpf_map_pop_elem(q, wk))
			return NULL;
		w = bpf_map_lookup_elem(&xlb_legs, wk);
		if (!w || w->kind != LEG_WORKER)
			continue;
		if (!set_state(w, LEG_IDLE, LEG_BOUND))
			continue;
		/* A trim never costs the client its leg: the last try keeps
		 * what it took (a drain retires all: the client goes to
		 * another worker). */
		if (!keep_taken(w, wk, i + 1 < XLB_IDLE_POP_TRIES))
			continue;
		return w;
	}
	return NULL;
}

/* idle_in_queue: the leg of a queue entry is a live idle worker leg. */
static __always_inline int idle_in_queue(const struct leg_key *k)
{
	struct leg *w = bpf_map_lookup_elem(&xlb_legs, k);

	return w && w->kind == LEG_WORKER && READ_ONCE(w->state) == LEG_IDLE;
}

/* sweep_pool drops a worker pool's top entries whose leg is no longer idle
 * (closed by its worker, or reaped). Only pops remove entries, and without
 * clients nothing pops: a worker that closes idle connections (a keepalive
 * timeout) would leave dead entries on top, until pool_pop's bounded tries
 * find only dead ones and every client is dropped (no_idle_leg). Called on
 * the packets that end idle worker legs. The top is peeked first, so a live
 * leg keeps its place; dead entries further down are skipped by pool_pop or
 * pushed out at the bottom when the pool is full. */
static __always_inline void sweep_pool(__u32 worker)
{
	void *q = worker_pool(worker);

	if (!q)
		return;
	for (int i = 0; i < XLB_IDLE_SWEEP; i++) {
		struct leg_key k;

		if (bpf_map_peek_elem(q, &k) || idle_in_queue(&k))
			return;
		if (bpf_map_pop_elem(q, &k))
			return;
		/* Another CPU popped between our peek and pop, so this may be
		 * another entry, a live one: give it back. */
		if (idle_in_queue(&k))
			bpf_map_push_elem(q, &k, BPF_EXIST);
	}
}

/* quiescent: client leg c, bound with b to worker leg w, has no request in
 * flight: the worker answered the current request, the client acknowledged
 * the whole answer, the worker the whole request, nobody closed, and both
 * peers have been silent for min_idle_ns. A pinned pair, or a client whose
 * last data did not end a write, is never quiescent; nor is an HTTP/1.0
 * client whose request the program made keep-alive (BIND_KEEP): it sends
 * no other request, and the end of its connection comes with the end of its
 * answer (framed_close). Released, it would wait for that end for ever:
 * under loss an answer can stall longer than --idle-release, its first
 * segment forwarded and the rest held (worker_data), the client having
 * acknowledged all it was sent (make reliability, TestHTTP10Impaired). */
static __always_inline int quiescent(const struct leg *c, const struct binding *b, const struct leg *w,
				     __u64 min_idle_ns)
{
	__u64 now = now_ns();

	if (c->kind != LEG_CLIENT || w->kind != LEG_WORKER || (b->flags & BIND_KEEP))
		return 0;
	if ((READ_ONCE(c->rx_flags) | READ_ONCE(w->rx_flags)) & (LEG_RX_FIN | LEG_RX_RST))
		return 0;
	if (pinned(c, w) || !tail_ok(c))
		return 0; /* no evidence that the conversation is between messages */
	if (READ_ONCE(w->peer_hi) == READ_ONCE(w->req_mark))
		return 0; /* not answered yet */
	if (READ_ONCE(c->peer_acked) != bound_snd_nxt(b, w))
		return 0;
	if (READ_ONCE(w->peer_acked) != READ_ONCE(c->peer_hi) + b->seq_off)
		return 0;
	if (window_held(w))
		return 0; /* its answer reached the window's edge: more may come (as between_exchanges) */
	if (!answer_whole(b, w))
		return 0; /* in the middle of an answer, or not known not to be (as between_exchanges) */
	if (now - READ_ONCE(c->last_ns) < min_idle_ns || now - READ_ONCE(w->last_ns) < min_idle_ns)
		return 0;
	return 1;
}

#endif
