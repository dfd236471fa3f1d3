/* SPDX-License-Identifier: GPL-2.0 */
/* Policies: which idle worker leg a request gets (DESIGN.md "Remix at a
 * request boundary"). pick_leg runs in xlb_bind only; want_move also in
 * xlb_xdp, to decide whether to call it. */
#ifndef XLB_PICK_H
#define XLB_PICK_H

#include "bpf_helpers.h"
#include "consts.h"
#include "structs.h"
#include "maps.h"
#include "leg.h"

/* jiq: the worker idle the longest (the oldest token), its leg used last. */
static __always_inline struct leg *pick_jiq(struct leg_key *wk)
{
	for (int i = 0; i < XLB_READY_TRIES; i++) {
		__u32 worker;
		struct leg *w;

		if (bpf_map_pop_elem(&PICK_READY, &worker))
			return NULL;
		w = pool_pop(worker, wk);
		if (w)
			return w;
	}
	return NULL;
}

/* pop_slot: an idle leg of the worker in schedule slot `slot`, if it has one. */
static __always_inline struct leg *pop_slot(__u32 slot, struct leg_key *wk)
{
	__u32 *worker = bpf_map_lookup_elem(&PICK_SCHED, &slot);

	return worker ? pool_pop(*worker, wk) : NULL;
}

/* rr: the next slot of the weighted schedule; a worker with nothing idle is
 * skipped (its turn goes to the next). */
static __always_inline struct leg *pick_rr(const struct xlb_config *cfg, struct leg_key *wk)
{
	__u32 zero = 0, len = SCHED_LEN(cfg);
	__u64 *pos = bpf_map_lookup_elem(&xlb_rr, &zero);

	if (!pos || !len)
		return NULL;
	for (int i = 0; i < XLB_PICK_TRIES; i++) {
		struct leg *w = pop_slot((__u32)(__sync_fetch_and_add(pos, 1) % len), wk);

		if (w)
			return w;
	}
	return NULL;
}

/* least: of the workers in XLB_LEAST_SCAN schedule slots from a random one
 * (all of them, for a few workers), the one with the fewest bound legs per
 * unit of weight, else the runner-up. The random start breaks ties. */
static __always_inline struct leg *pick_least(const struct xlb_config *cfg, struct leg_key *wk)
{
	__u32 len = SCHED_LEN(cfg), start, best = ~0u, second = ~0u;
	__s64 best_load = 0, best_w = 1, second_load = 0, second_w = 1;
	struct leg *w;

	if (!len || len > XLB_SCHED_LEN)
		return NULL;
	start = bpf_get_prandom_u32() % len;
	for (__u32 i = 0; i < XLB_LEAST_SCAN && i < len; i++) {
		__u32 slot = (start + i) % len, id;
		__u32 *worker = bpf_map_lookup_elem(&PICK_SCHED, &slot);
		struct worker_load *l;
		struct worker_cfg *c;
		__s64 load, weight;

		if (!worker)
			continue;
		id = *worker;
		if (id == best || id == second)
			continue;
		l = wload(id);
		load = l ? READ_ONCE(l->bound) : 0;
		c = bpf_map_lookup_elem(&xlb_wcfg, &id);
		weight = c && c->weight ? c->weight : 1;
		if (best == ~0u || load * best_w < best_load * weight) {
			second = best;
			second_load = best_load;
			second_w = best_w;
			best = id;
			best_load = load;
			best_w = weight;
		} else if (second == ~0u || load * second_w < second_load * weight) {
			second = id;
			second_load = load;
			second_w = weight;
		}
	}
	if (best == ~0u)
		return NULL;
	w = pool_pop(best, wk);
	if (w || second == ~0u)
		return w;
	return pool_pop(second, wk);
}

/* pick_any: any worker of the schedule with an idle leg, from a random
 * slot. A client's first data must find a leg if one is idle anywhere: the
 * policy's choice can come back empty though legs are idle (jiq's tokens
 * can outnumber a worker's idle legs: entries of legs that died idle, or
 * retired by a trim, leave their tokens behind), and a drop costs the client
 * a retransmission timeout. */
static __always_inline struct leg *pick_any(const struct xlb_config *cfg, struct leg_key *wk)
{
	__u32 len = SCHED_LEN(cfg), start;

	if (!len || len > XLB_SCHED_LEN)
		return NULL;
	start = bpf_get_prandom_u32() % len;
	for (__u32 i = 0; i < XLB_PICK_ANY && i < len; i++) {
		struct leg *w = pop_slot((start + i) % len, wk);

		if (w)
			return w;
	}
	return NULL;
}

/* pick_leg takes an idle worker leg for client leg ck: the worker named by a
 * pending rematch if it has one idle, else the policy's choice. With `must`
 * zero (a boundary: the client could stay), a rematch whose worker has
 * nothing idle yet keeps the client where it is and stays pending; with
 * `must` set (a first bind) any idle leg does when the policy finds none. */
static __always_inline struct leg *pick_leg(const struct xlb_config *cfg, const struct leg_key *ck,
					    struct leg_key *wk, int must)
{
	__u32 *target = bpf_map_lookup_elem(&xlb_rematch, ck);

	if (target) {
		struct leg *w = pool_pop(*target, wk);

		if (w) {
			bpf_map_delete_elem(&xlb_rematch, ck);
			count(XLB_CNT_REMATCH);
			return w;
		}
		if (!must)
			return NULL;
	}
	{
		struct leg *w;

		switch (cfg->policy) {
		case POLICY_RR:
			w = pick_rr(cfg, wk);
			break;
		case POLICY_LEAST:
			w = pick_least(cfg, wk);
			break;
		default:
			w = pick_jiq(wk);
		}
		if (w || !must)
			return w;
	}
	return pick_any(cfg, wk);
}

/* want_move: at a request boundary, may the client move? Always, except
 * under sticky: then only to a worker named by rematch, or off a draining
 * worker. */
static __always_inline int want_move(const struct xlb_config *cfg, const struct leg_key *ck, __u32 worker)
{
	if (cfg->policy != POLICY_STICKY)
		return 1;
	return draining(worker) || bpf_map_lookup_elem(&xlb_rematch, ck) != NULL;
}

#endif
