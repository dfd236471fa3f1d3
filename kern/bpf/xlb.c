/* SPDX-License-Identifier: GPL-2.0 */
/* xlb data plane: the XDP entry point. It learns client legs from their
 * handshakes, binds a client leg to an idle worker leg on its first data,
 * translates every segment of a binding into a segment of the partner leg,
 * answers stale segments and FINs on unbound legs itself, and reports finished
 * legs to user space. Everything else passes untouched. See DESIGN.md. */
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/in.h>
#include "bpf_helpers.h"
#include "consts.h"
#include "structs.h"
#include "maps.h"
#include "parsing.h"
#include "csum.h"
#include "ipfam.h"
#include "seq.h"
#include "tcp_opts.h"
#include "leg.h"
#include "pick.h"
#include "proto.h"
#include "anchors.h"

/* The data plane is four programs built from the same code, joined by tail
 * calls, and a fifth for control commands (xlb_ctl). xlb_xdp takes every
 * packet: foreign traffic passes, a bound leg's segment is translated on
 * the fast path. The rest goes to xlb_slow (handshakes, unbound legs,
 * FIN/RST, stale segments, replies), which has xlb_xlate translate what it
 * forwards. When a client leg must be bound (its first data, or a move at a
 * request boundary), xlb_bind binds it as the policy says and tail-calls
 * xlb_xdp again, which now finds the binding and translates. Each program
 * is verified on its own: together they would pass the verifier's budget
 * of a million instructions. */
#define STAGE_MAIN 0
#define STAGE_BIND 1
#define STAGE_SLOW 2
#define STAGE_XLATE 3
#define STAGE_REMIX 4 /* not a program: xlb_xdp deciding and moving a client in one pass */

static __always_inline int verdict(int action)
{
	switch (action) {
	case XDP_PASS:
		count(XLB_CNT_PASS);
		break;
	case XDP_DROP:
		count(XLB_CNT_DROP);
		break;
	case XDP_TX:
		count(XLB_CNT_TX);
		break;
	case XDP_REDIRECT:
		count(XLB_CNT_REDIRECT);
		break;
	default:
		count(XLB_CNT_ABORTED);
		break;
	}
	return action;
}

static __always_inline int drop(__u32 reason)
{
	count(reason);
	return verdict(XDP_DROP);
}

/* reparse finds the headers again after bpf_xdp_adjust_tail, which
 * invalidates every packet pointer. Replies are built only from packets
 * without IP options, so the offsets are fixed. */
static __always_inline int reparse(struct pkt *p, __u32 tcp_len)
{
	void *data = (void *)(long)p->ctx->data;

	p->end = (void *)(long)p->ctx->data_end;
	p->eth = data;
	p->ip = data + sizeof(struct ethhdr);
	p->tcp = data + sizeof(struct ethhdr) + IP_HDR_LEN;
	/* The constant check gives the verifier the fixed headers; the
	 * variable one is the real test. */
	if ((void *)(p->tcp + 1) > p->end || (void *)p->tcp + tcp_len > p->end)
		return -1;
	return 0;
}

/* cut_payload turns the packet into the same segment without payload (full
 * checksums recomputed). */
static __always_inline int cut_payload(struct pkt *p)
{
	__u32 tcp_len = p->tcp->doff * 4;

	if (!ip_plain(p) || tcp_len > 60)
		return -1;
	if (bpf_xdp_adjust_tail(p->ctx, -(int)p->payload))
		return -1;
	if (reparse(p, tcp_len))
		return -1;
	ip_set_tot_len(p->ip, IP_HDR_LEN + tcp_len);
	ip_finish(p->ip);
	p->tcp->check = 0;
	p->tcp->check = csum_tcp_full(p->ip, p->tcp, tcp_len, p->end);
	p->payload = 0;
	return 0;
}

/* address sets the packet's addresses and ports to those of a segment for
 * the peer of leg `to` (NULL: back to where it came from), its length to
 * new_len, TTL (hop limit) 64; turn_around swaps the MACs too. The caller
 * sets the rest and finishes the IP header (ip_finish). */
static __always_inline void address(struct pkt *p, const struct leg_key *to, __u32 new_len)
{
	__be16 sport = p->tcp->dest, dport = p->tcp->source;

	if (to) {
		ip_set_addrs(p->ip, to->local_addr, to->peer_addr);
		sport = to->local_port;
		dport = to->peer_port;
	} else {
		ip_swap_addrs(p->ip);
	}
	ip_set_tot_len(p->ip, new_len);
	ip_fresh(p->ip);
	p->tcp->source = sport;
	p->tcp->dest = dport;
}

static __always_inline void turn_around(struct pkt *p, __u32 new_len)
{
	__u8 mac[ETH_ALEN];

	__builtin_memcpy(mac, p->eth->h_source, ETH_ALEN);
	__builtin_memcpy(p->eth->h_source, p->eth->h_dest, ETH_ALEN);
	__builtin_memcpy(p->eth->h_dest, mac, ETH_ALEN);
	address(p, NULL, new_len);
}

/* reply turns the packet into our answer on `leg`: addresses swapped (or,
 * with `to`, those of that leg: a segment for another peer than the
 * sender), seq = `seq`, ack = the leg's peer_hi, flags `flags` (TCP_FLAG_*
 * of the 13th/14th byte), our window, and timestamps (our last TSval,
 * echoing the peer's) if the packet carried them (`to`: if the leg has
 * them); no payload, no other option. Full checksums. */
#define REPLY_ACK 0x10
#define REPLY_FIN 0x01
#define REPLY_RST 0x04
static __always_inline int reply(struct pkt *p, struct leg *leg, const struct leg_key *to, __u32 seq, __u8 flags)
{
	/* To another leg than the sender's: timestamps as that leg has them. */
	int with_ts = to ? (leg->opts & LEG_OPT_TS) != 0 : p->o->has_ts;
	__u32 tcp_len = with_ts ? 32 : 20;
	__u32 old_len = ip_tot_len(p->ip);
	__u32 new_len = IP_HDR_LEN + tcp_len;
	__u8 *o;

	if (!ip_plain(p) || old_len < new_len)
		return -1;
	/* Trim to the reply's length: drops payload and any other option. The
	 * frame may carry Ethernet padding beyond tot_len; cut that too. */
	{
		void *data = (void *)(long)p->ctx->data;
		int delta = (int)(sizeof(struct ethhdr) + new_len) - (int)(p->end - data);

		if (delta < 0 && bpf_xdp_adjust_tail(p->ctx, delta))
			return -1;
	}
	if (reparse(p, tcp_len))
		return -1;
	if (to)
		address(p, to, new_len);
	else
		turn_around(p, new_len);
	ip_finish(p->ip);
	p->tcp->seq = bpf_htonl(seq);
	p->tcp->ack_seq = bpf_htonl(READ_ONCE(leg->peer_hi));
	/* doff and flags: byte 12 is doff<<4, byte 13 the flags. */
	((__u8 *)p->tcp)[12] = (tcp_len / 4) << 4;
	((__u8 *)p->tcp)[13] = flags;
	p->tcp->window = bpf_htons((__u16)leg->snd_win);
	p->tcp->urg_ptr = 0;
	if (with_ts) {
		o = (__u8 *)(p->tcp + 1);
		if ((void *)(o + 12) > p->end)
			return -1;
		o[0] = TCPOPT_NOP;
		o[1] = TCPOPT_NOP;
		o[2] = TCPOPT_TIMESTAMP;
		o[3] = 10;
		store_be32(o + 4, READ_ONCE(leg->our_tsval));
		store_be32(o + 8, READ_ONCE(leg->peer_tsval));
	}
	p->tcp->check = 0;
	p->tcp->check = csum_tcp_full(p->ip, p->tcp, tcp_len, p->end);
	return 0;
}

/* send_reply sends reply()'s answer back (XDP_TX); a packet that cannot be
 * made into it is dropped (the peer retransmits, answered then). */
static __always_inline int send_reply(struct pkt *p, struct leg *leg, __u32 seq, __u8 flags)
{
	if (reply(p, leg, NULL, seq, flags))
		return verdict(XDP_DROP);
	return verdict(XDP_TX);
}

/* fib_slot is the entry of xlb_fib for a lookup's inputs (Fibonacci
 * hashing: the top bits of the product depend on every bit of the key). */
static __always_inline __u32 fib_slot(const __be32 *daddr, const __be32 *saddr, __u32 ifindex)
{
	__u32 d = daddr[0], s = saddr[0];

#pragma unroll
	for (int i = 1; i < ADDR_WORDS; i++) {
		d ^= daddr[i];
		s ^= saddr[i];
	}
	return ((d ^ (s * 0x9e3779b1u) ^ ifindex) * 0x9e3779b1u) >> (32 - XLB_FIB_BITS);
}

/* fib_same: entry h was looked up for these addresses. */
static __always_inline int fib_same(const struct fib_hop *h, const __be32 *daddr, const __be32 *saddr)
{
	__u32 diff = 0;

#pragma unroll
	for (int i = 0; i < ADDR_WORDS; i++)
		diff |= (h->daddr[i] ^ daddr[i]) | (h->saddr[i] ^ saddr[i]);
	return diff == 0;
}

/* route_out sends the packet at ctx (an IP packet of the program's family
 * without VLAN tag, as the callers parsed it) toward its next hop: the MACs rewritten, out of
 * the egress device by XDP_TX or XDP_REDIRECT. The next hop comes from
 * xlb_fib when its entry there is of this destination, source and ingress
 * device, of the current generation, younger than XLB_FIB_TTL_NS and takes
 * a packet this long; else from bpf_fib_lookup, and the entry is made
 * anew. A destination without a resolved neighbour goes to the stack
 * (XDP_PASS: the kernel resolves it), and is not cached. Returns the
 * verdict, counted (with XLB_CNT_FIB_FAIL when the lookup failed).
 *
 * A global function: the verifier walks it once, not once for each state
 * of its callers (translate_forward in xlb_xdp and xlb_xlate, replies in
 * xlb_slow). */
__attribute__((noinline)) int route_out(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	ip_t *ip = data + sizeof(struct ethhdr);
	__u32 in = ctx->ingress_ifindex, zero = 0, slot, gen;
	__u32 *genp;
	struct fib_hop *h;
	__u64 now;

	if ((void *)(ip + 1) > end)
		return verdict(XDP_DROP); /* never: the callers parsed the packet */
	genp = bpf_map_lookup_elem(&xlb_fib_gen, &zero);
	slot = fib_slot(ip_dst(ip), ip_src(ip), in);
	h = bpf_map_lookup_elem(&xlb_fib, &slot);
	if (!genp || !h)
		return verdict(XDP_DROP); /* never: both are arrays, the slot in range */
	gen = READ_ONCE(*genp);
	now = now_ns();
	if (!fib_same(h, ip_dst(ip), ip_src(ip)) || h->in_ifindex != in || h->gen != gen ||
	    (__s64)(now - h->due_ns) >= 0 || ip_tot_len(ip) > h->mtu) {
		struct bpf_fib_lookup *fib = bpf_map_lookup_elem(&xlb_fib_scratch, &zero);
		long rc;

		if (!fib)
			return verdict(XDP_DROP); /* never */
		__builtin_memset(fib, 0, sizeof(*fib));
		fib->family = XLB_AF;
		fib->l4_protocol = IPPROTO_TCP;
		fib->tot_len = ip_tot_len(ip);
#if XLB_FAMILY == 6
		__builtin_memcpy(fib->ipv6_src, ip_src(ip), 16);
		__builtin_memcpy(fib->ipv6_dst, ip_dst(ip), 16);
#else
		fib->ipv4_src = ip->saddr;
		fib->ipv4_dst = ip->daddr;
#endif
		fib->ifindex = in;
		rc = bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
		if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
			/* Let the kernel resolve the neighbour and forward this one. */
			count(XLB_CNT_FIB_FAIL);
			return verdict(XDP_PASS);
		}
		if (rc != BPF_FIB_LKUP_RET_SUCCESS)
			return drop(XLB_CNT_FIB_FAIL);
		__builtin_memcpy(h->daddr, ip_dst(ip), ADDR_WORDS * 4);
		__builtin_memcpy(h->saddr, ip_src(ip), ADDR_WORDS * 4);
		h->in_ifindex = in;
		h->gen = gen; /* read before the lookup: a change during it makes the entry old at once */
		h->due_ns = now + XLB_FIB_TTL_NS;
		h->ifindex = fib->ifindex;
		/* mtu_result shares tot_len's place: the kernel puts the egress
		 * MTU there; one that did not leaves this packet's length, which
		 * fits (a longer packet is then looked up, and the entry grows). */
		h->mtu = fib->mtu_result;
		__builtin_memcpy(h->dmac, fib->dmac, ETH_ALEN);
		__builtin_memcpy(h->smac, fib->smac, ETH_ALEN);
	}
	__builtin_memcpy(eth->h_dest, h->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, h->smac, ETH_ALEN);
	if (h->ifindex == in)
		return verdict(XDP_TX);
	return verdict(bpf_redirect(h->ifindex, 0));
}

/* forward sends a translated packet on: to the local stack, or, in routed
 * mode, out of the interface toward the next hop (route_out). */
static __always_inline int forward(struct pkt *p, struct xlb_config *cfg)
{
	if (!(cfg->flags & CFG_ROUTED))
		return verdict(XDP_PASS);
	return route_out(p->ctx);
}

/* translate rewrites the packet into a segment of the binding's partner leg:
 * addresses, ports, seq, ack, window, timestamps, SACK edges, checksums. */
static __always_inline int translate(struct pkt *p, const struct binding *b)
{
	struct csum_acc tc = {};
#if XLB_FAMILY == 4
	struct csum_acc ipc = {};
#endif
	__u32 seq = p->seq + b->seq_off;
	__u32 ack = p->ack + b->ack_off;
	__u64 win;
	__u16 nwin;

	/* The TCP checksum covers the addresses through the pseudo header. */
#if XLB_FAMILY == 6
	{
		/* Both addresses: a sum of 16-bit words, in any order, so
		 * the key's peer-then-local against the header's
		 * source-then-destination. */
		__s64 d = bpf_csum_diff((__be32 *)ip_src(p->ip), 32, (__be32 *)b->to.peer_addr, 32, 0);

		if (d < 0)
			return -1;
		tc.even += csum_fold((__u32)d);
	}
#else
	/* One word each: in the header's checksum and the TCP one. */
	csum_acc32(&ipc, p->ip->saddr, b->to.local_addr[0]);
	csum_acc32(&ipc, p->ip->daddr, b->to.peer_addr[0]);
	csum_acc32(&tc, p->ip->saddr, b->to.local_addr[0]);
	csum_acc32(&tc, p->ip->daddr, b->to.peer_addr[0]);
#endif
	ip_set_addrs(p->ip, b->to.local_addr, b->to.peer_addr);
	ip_unlabel(p->ip);

	csum_acc16(&tc, p->tcp->source, b->to.local_port);
	csum_acc16(&tc, p->tcp->dest, b->to.peer_port);
	p->tcp->source = b->to.local_port;
	p->tcp->dest = b->to.peer_port;

	csum_acc32(&tc, p->tcp->seq, bpf_htonl(seq));
	p->tcp->seq = bpf_htonl(seq);
	if (p->has_ack) {
		csum_acc32(&tc, p->tcp->ack_seq, bpf_htonl(ack));
		p->tcp->ack_seq = bpf_htonl(ack);
	}

	/* Window: the sender's scale in, the receiver's scale out, held to
	 * win_cap if set. A window that was open stays open (never rounds
	 * down to zero). */
	win = (__u64)p->win << b->in_wscale;
	if (p->win_cap && win > p->win_cap)
		win = p->win_cap + (1u << b->out_wscale) - 1; /* rounded up: two segments stay two */
	win >>= b->out_wscale;
	nwin = win > 0xffff ? 0xffff : (__u16)win;
	if (nwin == 0 && p->win != 0)
		nwin = 1;
	csum_acc16(&tc, p->tcp->window, bpf_htons(nwin));
	p->tcp->window = bpf_htons(nwin);

	if (rewrite_tcp_opts(p->opts, p->end, p->o, b->tsval_off, b->tsecr_off, b->ack_off, &tc))
		return -1;

#if XLB_FAMILY == 4
	csum_apply(&p->ip->check, &ipc);
#endif
	csum_apply(&p->tcp->check, &tc);
	return 0;
}

/* ports_mapped: packets to this local port may belong to a leg: the
 * service's, or one of the worker legs' (xlb_ports, set by user space when
 * it registers a leg; never cleared, so at worst a stale bit costs a leg
 * lookup). */
static __always_inline int ports_mapped(__be16 port, const struct xlb_config *cfg)
{
	__u32 p = bpf_ntohs(port), idx = p / 64;
	__u64 *bits;

	if (port == cfg->listen_port)
		return 1;
	bits = bpf_map_lookup_elem(&xlb_ports, &idx);
	return bits && (*bits & (1ull << (p % 64)));
}

static __always_inline int is_service(const struct pkt *p, const struct xlb_config *cfg)
{
	const __be32 *d = ip_dst(p->ip);
	__be32 any = 0, same = 0;

	if (!cfg->listen_port || p->tcp->dest != cfg->listen_port)
		return 0;
	if (cfg->family != XLB_AF)
		return cfg->family == 0;
#pragma unroll
	for (int i = 0; i < ADDR_WORDS; i++) {
		any |= cfg->listen_addr[i];
		same |= cfg->listen_addr[i] ^ d[i];
	}
	return any == 0 || same == 0;
}

static __always_inline void learn_handshake(struct pkt *p, __u32 our_isn, __u32 flags)
{
	struct handshake hs = {};

	hs.flags = flags;
	hs.peer_isn = p->seq;
	hs.peer_tsval = p->o->tsval;
	hs.peer_mss = p->o->mss;
	hs.peer_wscale = p->o->wscale;
	hs.our_isn = our_isn;
	if (p->o->has_ts)
		hs.opts |= LEG_OPT_TS;
	if (p->o->sack_perm)
		hs.opts |= LEG_OPT_SACK;
	if (p->o->wscale != XLB_NO_WSCALE)
		hs.opts |= LEG_OPT_WSCALE;
	hs.ns = now_ns();
	bpf_map_update_elem(&xlb_hs, &p->key, &hs, BPF_ANY);
}

static __always_inline __u32 win_bound(__u8 a, __u8 b)
{
	__u8 s = a > b ? a : b;

	return s >= 14 ? XLB_MAX_WIN_BOUND : (0xffffu << s) + 0xffff;
}

/* syn_budget_add moves the SYN budget (xlb_syn_budget) by n; it returns
 * the budget before, or 1 without the map. */
static __always_inline __s64 syn_budget_add(__s64 n)
{
	__u32 zero = 0;
	__s64 *b = bpf_map_lookup_elem(&xlb_syn_budget, &zero);

	return b ? __sync_fetch_and_add(b, n) : 1;
}

/* syn_demand takes a new client's SYN from the budget of idle legs user
 * space counted (xlb_syn_budget), which the client's first bind gives back
 * (first_bind): the budget is the idle legs less the clients that
 * connected and have not sent their first request, so clients that connect
 * and send at once, one after another (a connection per request), never
 * spend it. The SYN that spends it tells user space (EV_DEMAND, once until
 * user space sets the budget again), which counts those clients and grows
 * the pools a round trip of the client's before their first data comes:
 * that data then finds a leg, rather than an empty pool (hold_first). */
static __always_inline void syn_demand(const struct leg_key *k)
{
	if (syn_budget_add(-1) == 0)
		emit(EV_DEMAND, k, NULL, 0);
}

/* answer_syn turns a client's SYN into our SYN-ACK (CFG_ANSWER_SYN), so that
 * no socket is ever made, accepted and destroyed for the client: the options
 * the client offered are answered as the listener would (MSS and window scale
 * from xlb_config, SACK, timestamps), in one 20-byte block with NOPs for what
 * it did not offer. Our ISN is random and kept in the handshake entry: a
 * retransmitted SYN gets the same one. A SYN that cannot be answered here (IP
 * options, a frame that cannot grow to the SYN-ACK's size) goes to the
 * listener, as without the flag. */
#define SYNACK_OPT_LEN 20
static __always_inline int answer_syn(struct pkt *p, const struct xlb_config *cfg)
{
	struct handshake *old = bpf_map_lookup_elem(&xlb_hs, &p->key);
	__u32 tcp_len = sizeof(struct tcphdr) + SYNACK_OPT_LEN;
	__u32 new_len = IP_HDR_LEN + tcp_len;
	__u32 isn = bpf_get_prandom_u32(), peer_isn = p->seq;
	__u32 tsval = (__u32)(now_ns() >> 20), tsecr = p->o->tsval; /* ~1 ms ticks */
	__u8 sack = p->o->sack_perm, ts = p->o->has_ts, ws = p->o->wscale != XLB_NO_WSCALE;
	int again = old && old->peer_isn == peer_isn && (old->flags & HS_ANSWERED);
	__u8 *o;

	if (again)
		isn = old->our_isn; /* the client's SYN again: the same answer */
	if (!ip_plain(p))
		goto listener;
	{
		void *data = (void *)(long)p->ctx->data;
		int delta = (int)(sizeof(struct ethhdr) + new_len) - (int)(p->end - data);

		if (delta && bpf_xdp_adjust_tail(p->ctx, delta))
			goto listener;
	}
	learn_handshake(p, isn, HS_ANSWERED);
	if (reparse(p, tcp_len))
		return verdict(XDP_DROP); /* cannot happen: the frame was sized for it */

	turn_around(p, new_len);
#if XLB_FAMILY == 4
	p->ip->id = 0;
	p->ip->frag_off = bpf_htons(0x4000); /* DF */
#endif
	ip_finish(p->ip);
	p->tcp->seq = bpf_htonl(isn);
	p->tcp->ack_seq = bpf_htonl(peer_isn + 1);
	((__u8 *)p->tcp)[12] = (tcp_len / 4) << 4;
	((__u8 *)p->tcp)[13] = 0x12; /* SYN, ACK */
	p->tcp->window = bpf_htons(0xffff); /* a SYN-ACK's window is never scaled */
	p->tcp->urg_ptr = 0;
	o = (__u8 *)(p->tcp + 1);
	if ((void *)(o + SYNACK_OPT_LEN) > p->end)
		return verdict(XDP_DROP);
	o[0] = TCPOPT_MSS;
	o[1] = 4;
	o[2] = OUR_MSS(cfg) >> 8;
	o[3] = OUR_MSS(cfg) & 0xff;
	o[4] = sack ? TCPOPT_SACK_PERM : TCPOPT_NOP;
	o[5] = sack ? 2 : TCPOPT_NOP;
	if (ts) {
		o[6] = TCPOPT_TIMESTAMP;
		o[7] = 10;
		store_be32(o + 8, tsval);
		store_be32(o + 12, tsecr);
	} else {
		__builtin_memset(o + 6, TCPOPT_NOP, 10);
	}
	o[16] = TCPOPT_NOP;
	o[17] = ws ? TCPOPT_WINDOW : TCPOPT_NOP;
	o[18] = ws ? 3 : TCPOPT_NOP;
	o[19] = ws ? cfg->our_wscale : TCPOPT_NOP;
	p->tcp->check = 0;
	p->tcp->check = csum_tcp_full(p->ip, p->tcp, tcp_len, p->end);
	count(XLB_CNT_SYN);
	count(XLB_CNT_SYN_ANSWERED);
	if ((cfg->flags & CFG_SYN_DEMAND) && !again)
		syn_demand(&p->key);
	return verdict(XDP_TX);
listener:
	learn_handshake(p, 0, 0);
	count(XLB_CNT_SYN);
	return verdict(XDP_PASS);
}

/* reenter runs xlb_xdp on the packet once more, flagged in bs (this CPU's
 * scratch) as counted already. */
static __always_inline int reenter(struct xdp_md *ctx, struct bind_scratch *bs)
{
	if (bs)
		bs->reentry = 1;
	bpf_tail_call(ctx, &xlb_progs, PROG_SLOT(XLB_PROG_MAIN));
	if (bs)
		bs->reentry = 0;
	return drop(XLB_CNT_TAIL_FAIL);
}

/* again runs xlb_xdp on the packet once more, for a leg made since it
 * looked (the packet was counted already). */
static __always_inline int again(struct pkt *p)
{
	__u32 zero = 0;

	return reenter(p->ctx, bpf_map_lookup_elem(&xlb_bscratch, &zero));
}

/* The ACK that completes a client's handshake: the client leg is born. */
static __always_inline int client_leg_from_ack(struct pkt *p, struct xlb_config *cfg)
{
	struct handshake *hs = bpf_map_lookup_elem(&xlb_hs, &p->key);
	struct leg leg = {};
	__u32 answered;
	long err;

	if (!hs && bpf_map_lookup_elem(&xlb_legs, &p->key)) {
		/* The handshake's other ACK made the leg on another CPU since
		 * this packet looked (the pure ACK and the first data, sent
		 * from two CPUs): the leg's packet. Passed to the stack, it
		 * would be reset, and the leg left to --client-timeout. */
		return again(p);
	}
	if (!hs || p->seq != hs->peer_isn + 1) {
		/* A connection we did not see open (older than the program, or
		 * its SYN evicted): the stack's, not ours. */
		count(XLB_CNT_FOREIGN);
		return verdict(XDP_PASS);
	}
	answered = hs->flags & HS_ANSWERED;
	if (answered && p->ack != hs->our_isn + 1) {
		/* Not an answer to our SYN-ACK: no connection of ours, nor of
		 * the listener's, which resets it. */
		count(XLB_CNT_FOREIGN);
		return verdict(XDP_PASS);
	}

	leg.kind = LEG_CLIENT;
	leg.opts = hs->opts & LEG_OPT_SACK;
	if (hs->opts & LEG_OPT_WSCALE) {
		/* Both ends scale only if the client offered it. */
		leg.opts |= LEG_OPT_WSCALE;
		leg.peer_wscale = hs->peer_wscale;
		leg.our_wscale = cfg->our_wscale;
	}
	/* Timestamps are on iff the handshake's ACK carries them. */
	if (p->o->has_ts) {
		leg.opts |= LEG_OPT_TS | LEG_OPT_PEER_TS;
		leg.peer_tsval = p->o->tsval;
		leg.our_tsval = p->o->tsecr;
	}
	leg.peer_mss = hs->peer_mss;
	leg.our_mss = OUR_MSS(cfg);
	leg.win_bound = win_bound(leg.peer_wscale, leg.our_wscale);
	leg.peer_hi = p->seq;
	leg.peer_acked = p->ack;
	leg.peer_win = p->win;
	{
		/* The rest window follows the smallest window clients open
		 * with (xlb_config.rest_win). */
		__u64 w = (__u64)p->win << leg.peer_wscale;

		for (int i = 0; i < XLB_CAS_TRIES && w >= XLB_REST_WIN_MIN; i++) {
			__u32 cur = READ_ONCE(cfg->rest_win);

			/* A minimum of all CPUs' clients: a plain store could
			 * raise it back over a smaller one written meanwhile. */
			if (w >= cur || __sync_val_compare_and_swap(&cfg->rest_win, cur, (__u32)w) == cur)
				break;
		}
	}
	leg.snd_nxt = p->ack;
	leg.snd_win = 0xffff >> leg.our_wscale;
	leg.state = LEG_IDLE;
	leg.last_ns = now_ns();
	err = bpf_map_update_elem(&xlb_legs, &p->key, &leg, BPF_NOEXIST);
	if (err) {
		if (!answered)
			return verdict(XDP_PASS); /* table full or a duplicate: the stack keeps it */
		if (err == -EEXIST)
			return verdict(XDP_DROP); /* a duplicate made it on another CPU */
		/* The table is full: the client is refused with a reset (the
		 * listener never knew it, so it cannot take it either). */
		bpf_map_delete_elem(&xlb_hs, &p->key);
		count(XLB_CNT_LEGS_FULL);
		return send_reply(p, &leg, p->ack, REPLY_RST);
	}
	bpf_map_delete_elem(&xlb_hs, &p->key);
	count(XLB_CNT_CLIENT_LEG);
	if (answered) {
		/* The handshake was ours: the stack must not see its ACK. Data
		 * on it (the pure ACK was lost) is the leg's first request:
		 * xlb_xdp again, which now finds the leg (and, back here,
		 * does not count the packet twice). */
		if (!p->payload)
			return verdict(XDP_DROP);
		return again(p);
	}
	if (p->payload) {
		/* The stack must see the handshake complete, never data: pass the
		 * ACK without its payload; the client retransmits the data, which
		 * then goes to a worker. */
		count(XLB_CNT_HS_DATA);
		if (cut_payload(p))
			return verdict(XDP_DROP);
	}
	return verdict(XDP_PASS);
}

/* dialed: a worker answers a SYN user space sent to fill its pool (hs, its
 * entry in xlb_dials). No socket of ours exists for the connection: the program
 * completes it. A SYN-ACK gives the leg (LEG_OPT_NOSOCK), and is answered
 * with the handshake's ACK. The leg is born LEG_NEW, out of the pool: user
 * space pools it (CTL_POOL) once it sees it, after that ACK went up the
 * worker's stack. Pooled at once, a client's first request could reach the
 * worker on another CPU while the ACK makes the connection there, and Linux
 * then lets a segment miss both the request socket and its child (between
 * the one's removal from the table and the other's insertion), which the
 * listener resets: the client was reset (ab -c 50, 1 run in 3). A RST (nothing
 * listens) marks the handshake refused, for user space. An ACK instead of a
 * SYN-ACK is a worker that holds the 4-tuple in TIME-WAIT and did not take
 * our SYN (its timestamp was older than the last it saw there): the RST that
 * ends the TIME-WAIT answers it, and user space sends the SYN again. */
static __always_inline int dialed(struct pkt *p, struct handshake *hs)
{
	struct tcphdr *t = p->tcp;
	struct leg leg = {};
	long err;

	if (t->rst) {
		if (t->ack && p->ack == hs->our_isn + 1)
			__sync_fetch_and_or(&hs->flags, HS_REFUSED);
		return drop(XLB_CNT_DIAL_RESET);
	}
	if (!t->syn) {
		if (!t->ack || p->payload || t->fin || p->bad_opts)
			return drop(XLB_CNT_DIAL_RESET);
		/* RFC 793's reset of an unacceptable ACK: seq = its ack. Its
		 * timestamp echoes the TIME-WAIT's own, which PAWS accepts. */
		leg.our_tsval = p->o->tsecr;
		leg.peer_tsval = p->o->tsval;
		__sync_fetch_and_or(&hs->flags, HS_RETRY);
		count(XLB_CNT_DIAL_RESET);
		return send_reply(p, &leg, p->ack, REPLY_RST);
	}
	if (p->bad_opts || p->ack != hs->our_isn + 1)
		return drop(XLB_CNT_BAD_OPTIONS); /* not an answer to our SYN: it retransmits, we time out */

	leg.kind = LEG_WORKER;
	leg.worker = hs->worker;
	leg.opts = LEG_OPT_NOSOCK;
	if ((hs->our_opts & LEG_OPT_SACK) && p->o->sack_perm)
		leg.opts |= LEG_OPT_SACK;
	if ((hs->our_opts & LEG_OPT_WSCALE) && p->o->wscale != XLB_NO_WSCALE) {
		leg.opts |= LEG_OPT_WSCALE;
		leg.peer_wscale = p->o->wscale > 14 ? 14 : p->o->wscale;
		leg.our_wscale = hs->our_wscale;
	}
	if ((hs->our_opts & LEG_OPT_TS) && p->o->has_ts) {
		leg.opts |= LEG_OPT_TS | LEG_OPT_PEER_TS;
		leg.peer_tsval = p->o->tsval;
		leg.our_tsval = p->o->tsecr; /* our SYN's, echoed */
	}
	leg.peer_mss = p->o->mss ? p->o->mss : 536;
	leg.our_mss = hs->our_mss;
	leg.win_bound = win_bound(leg.peer_wscale, leg.our_wscale);
	leg.peer_hi = p->seq + 1;
	leg.peer_acked = p->ack;
	leg.snd_nxt = p->ack;
	leg.peer_win = p->win >> leg.peer_wscale; /* a SYN-ACK's window is not scaled */
	leg.snd_win = 0xffff >> leg.our_wscale;
	leg.state = LEG_NEW;
	leg.last_ns = now_ns();
	err = bpf_map_update_elem(&xlb_legs, &p->key, &leg, BPF_NOEXIST);
	if (err == -EEXIST)
		return verdict(XDP_DROP); /* the same SYN-ACK twice, on another CPU */
	if (err) {
		/* The table is full: the worker forgets the connection, user
		 * space sees the dial fail. */
		__sync_fetch_and_or(&hs->flags, HS_REFUSED);
		count(XLB_CNT_LEGS_FULL);
		return send_reply(p, &leg, p->ack, REPLY_RST);
	}
	bpf_map_delete_elem(&xlb_dials, &p->key);
	count(XLB_CNT_WORKER_SYNACK);
	count(XLB_CNT_DIALED);
	return send_reply(p, &leg, leg.snd_nxt, REPLY_ACK);
}

/* A packet of no leg: maybe a handshake we must learn, else foreign. */
static __always_inline int no_leg(struct pkt *p, struct xlb_config *cfg)
{
	struct tcphdr *t = p->tcp;

	/* A worker's SYN-ACK, or a RST or ACK to one of our ports (run() let
	 * through only those to a port marked in xlb_ports): maybe the answer
	 * to a dialed SYN. */
	if ((t->syn && t->ack) || ((t->rst || t->ack) && !is_service(p, cfg))) {
		struct endpoint ep = {};

		__builtin_memcpy(ep.addr, ip_src(p->ip), ADDR_WORDS * 4);
		ep.port = t->source;
		ep.family = XLB_AF;
		if (bpf_map_lookup_elem(&xlb_workers, &ep)) {
			struct handshake *hs = bpf_map_lookup_elem(&xlb_dials, &p->key);

			if (hs && (hs->flags & HS_DIALED))
				return dialed(p, hs);
			if (t->syn && t->ack) {
				if (!p->bad_opts) {
					learn_handshake(p, p->ack - 1, 0);
					count(XLB_CNT_WORKER_SYNACK);
				}
				return verdict(XDP_PASS);
			}
		}
	}
	/* Every packet passed here without being learned is foreign: the
	 * counter shows how much of the service's traffic is not ours. */
	if (!is_service(p, cfg) || t->rst || p->bad_opts) {
		count(XLB_CNT_FOREIGN); /* bad options: the stack judges; we do not learn it */
		return verdict(XDP_PASS);
	}
	if (t->syn && !t->ack) {
		if ((cfg->flags & CFG_ANSWER_SYN) && !p->payload)
			return answer_syn(p, cfg);
		learn_handshake(p, 0, 0);
		count(XLB_CNT_SYN);
		return verdict(XDP_PASS);
	}
	if (t->ack && !t->syn)
		return client_leg_from_ack(p, cfg);
	count(XLB_CNT_FOREIGN);
	return verdict(XDP_PASS);
}

/* cool takes worker leg w (LEG_BOUND, unbound by the caller) out of its
 * binding into LEG_COOLING: counted cooling, queued in xlb_cooling, pooled by
 * warm_up() once it stayed quiet; retired at once if it is pinned, its
 * worker drains, or the queue is full. */
static __always_inline void cool(const struct leg_key *k, struct leg *w, const struct xlb_config *cfg)
{
	struct worker_stats *ws = wstats(w->worker);
	__u32 worker = w->worker;
	struct cooling e = {};

	if (READ_ONCE(w->pin) || draining(worker)) {
		give_back(k, w, cfg); /* retires it */
		return;
	}
	if (!set_state(w, LEG_BOUND, LEG_COOLING))
		return;
	cooling_add(worker, 1);
	wload_add(worker, -1);
	if (ws)
		ws->releases++;
	e.key = *k;
	{
		struct worker_cfg *wc = bpf_map_lookup_elem(&xlb_wcfg, &worker);
		__u64 cool = wc && wc->cool_us ? (__u64)wc->cool_us * 1000 : XLB_COOL_NS;

		e.due_ns = now_ns() + cool;
	}
	if (bpf_map_push_elem(&xlb_cooling, &e, 0))
		retire(k, w, LEG_COOLING);
}

/* warm_up moves legs that cooled long enough from xlb_cooling to their
 * pools (at most `moves`): before a bind picks one, and from user space
 * (CTL_WARM) when no client comes. Returns 1 if it stopped on its budget
 * (more may be due). */
static __always_inline int warm_up(const struct xlb_config *cfg, const int moves)
{
	__u64 now = now_ns();

	for (int i = 0; i < moves; i++) {
		struct cooling e;
		struct leg *w;

		if (bpf_map_peek_elem(&xlb_cooling, &e) || (__s64)(now - e.due_ns) < 0)
			return 0;
		if (bpf_map_pop_elem(&xlb_cooling, &e))
			return 0;
		w = bpf_map_lookup_elem(&xlb_legs, &e.key);
		if (!w || w->kind != LEG_WORKER || !set_state(w, LEG_COOLING, LEG_IDLE))
			continue; /* it ended while cooling */
		idle_add(w->worker, 1); /* before it leaves cooling: see keep_taken */
		cooling_add(w->worker, -1);
		if (pool_put(&e.key, w->worker, cfg))
			retire(&e.key, w, LEG_IDLE);
	}
	return 1;
}

/* start_request marks where worker leg w's answer to a new request will
 * start, and that nothing of the request has reached it yet. Written before
 * w is bound (its worker cannot answer before the request it has not had). */
static __always_inline void start_request(struct leg *w, const struct xlb_config *cfg)
{
	WRITE_ONCE(w->req_mark, READ_ONCE(w->peer_hi));
	WRITE_ONCE(w->sent_hi, READ_ONCE(w->snd_nxt));
	WRITE_ONCE(w->win_edge, READ_ONCE(w->peer_hi)); /* set by the request */
	log_start(w, cfg, READ_ONCE(w->snd_nxt));
}

/* remix moves client leg c (key ck), bound with binding b to worker leg w,
 * onto the worker leg the policy picks, at a request boundary: the one
 * well-defined rebind. Both legs' tx positions are materialised from the
 * pair first, w goes back to its pool (its worker may still retransmit the
 * tail of its answer, which the stale-segment path acknowledges), and c is
 * bound to the new leg from positions that do not include the packet at hand
 * yet. Returns the new binding of c, or NULL to stay on b; *np is then the
 * new worker leg. */
static __always_inline struct binding *remix(const struct leg_key *ck, struct leg *c,
					      const struct binding *b, struct leg *w,
					      const struct xlb_config *cfg, struct leg **np)
{
	struct binding *bw = bpf_map_lookup_elem(&xlb_binds, &b->to);
	struct leg_key wk = b->to, nk;
	struct worker_stats *ws;
	struct leg *n;

	if (!bw)
		return NULL;
	warm_up(cfg, XLB_COOL_MOVES);
	n = pick_leg(cfg, ck, &nk, 0);
	if (!n) {
		count(XLB_CNT_REMIX_NO_IDLE);
		return NULL;
	}
	start_request(n, cfg);
	materialize(c, b, w, 0);
	materialize(w, bw, c, rest_win(cfg, w));
	offer_edge(c, n);
	if (bind_legs(ck, c, &nk, n, 0)) {
		/* The pair is as it was (bind_legs wrote nothing that stays). */
		unpop(&nk, n, cfg);
		return NULL;
	}
	bpf_map_delete_elem(&xlb_binds, &wk);
	give_back(&wk, w, cfg);
	ws = wstats(n->worker);
	if (ws)
		ws->binds++;
	count(XLB_CNT_REMIX);
	*np = n;
	return bpf_map_lookup_elem(&xlb_binds, ck);
}

/* A client data segment on a leg bound to worker leg w: is it the first of a
 * new request (DESIGN.md "Remix at a request boundary")? New data (seq ==
 * peer_hi), after the worker answered since the current request started,
 * acknowledging the whole answer, with the whole request acknowledged by the
 * worker: a candidate. Those conditions are necessary, not sufficient
 * (proto.h): the client moves only if the new data starts a message of its
 * protocol, its data before ended a write, and the pair is not pinned; new
 * data that does not start a message pins the pair. Then the client may move
 * to another worker leg (want_move). What cannot be decided stays on the
 * current binding (always correct), and is counted. *bp is the binding to
 * translate with, *wp its worker leg (the one it came with, or the new one
 * after a move). Returns 1 when the packet must go to the bind program
 * (STAGE_MAIN, a move), before anything changed. */
static __always_inline int boundary(struct pkt *p, struct leg *c, struct binding **bp, struct leg **wp,
				    struct xlb_config *cfg, int stage)
{
	struct binding *b = *bp, *nb;
	struct leg *w = *wp, *n = NULL;
	struct peek_buf *k;
	__u32 w_hi, reason;
	int move, evidence;

	w_hi = READ_ONCE(w->peer_hi);
	if (w_hi == READ_ONCE(w->req_mark))
		return 0; /* no answer since the request started: a continuation */
	if (p->seq != READ_ONCE(c->peer_hi)) {
		if (seq_gt(p->seq, READ_ONCE(c->peer_hi)))
			count(XLB_CNT_STAY_GAP);
		return 0; /* a retransmission, or data after a gap */
	}
	if (!p->has_ack || p->ack != bound_snd_nxt(b, w)) {
		count(XLB_CNT_STAY_RESPONSE);
		return 0;
	}
	if (READ_ONCE(w->peer_acked) != READ_ONCE(c->peer_hi) + b->seq_off) {
		count(XLB_CNT_STAY_REQUEST);
		return 0;
	}
	/* A candidate boundary: now the evidence. */
	evidence = 0;
	if (pinned(c, w)) {
		count(XLB_CNT_STAY_PINNED);
	} else {
		k = peek_load(p);
		reason = k ? msg_start(k, c->proto) : PIN_NOT_MSG;
		if (reason)
			pin_pair(c, w, reason);
		else if (!tail_ok(c))
			count(XLB_CNT_STAY_TAIL);
		else
			evidence = 1;
	}
	/* A worker that closed its side after the answer (its FIN is in w_hi,
	 * and the client just acknowledged it) must not go back to the pool,
	 * and the client was told the stream ended: stay, and let the worker's
	 * stack answer the data. */
	move = evidence && !p->fin && READ_ONCE(w->state) == LEG_BOUND &&
	       !(READ_ONCE(w->rx_flags) & LEG_RX_FIN) && want_move(cfg, &p->key, w->worker);
	if (stage == STAGE_MAIN && move)
		return 1;
	count(XLB_CNT_REQUEST);
	if (READ_ONCE(w->req_ns))
		log_end(w, &p->key, &b->to, REQ_END_NEXT, c->requests);
	c->requests++;
	nb = NULL;
	if ((stage == STAGE_BIND || stage == STAGE_REMIX) && move)
		nb = remix(&p->key, c, b, w, cfg, &n);
	if (!nb || !n) {
		struct worker_stats *ws = wstats(w->worker);

		WRITE_ONCE(w->req_mark, w_hi);
		log_start(w, cfg, READ_ONCE(w->sent_hi));
		if (ws)
			ws->requests++;
		return 0;
	}
	{
		struct worker_stats *ws = wstats(nb->worker);

		if (ws)
			ws->requests++;
	}
	*bp = nb;
	*wp = n;
	return 0;
}

/* track_client notes, for a client data segment that the pair forwards,
 * how it ended (the evidence tail_ok() reads at the next candidate) and
 * how far the worker has been sent (the evidence worker_data() reads). Only
 * the segment that ends at the new peer_hi counts. Reads two payload bytes
 * on a segment that ends a write, for the line protocols only. */
static __always_inline void track_client(const struct pkt *p, struct leg *c, const struct binding *b,
					 struct leg *w)
{
	__u32 end = p->seq + p->payload, end_w = end + b->seq_off;
	__u8 tail = 0;

	if (!seq_gt(end, READ_ONCE(c->peer_hi)))
		return;
	if (p->psh) {
		/* A segment that ends within a segment of the window the client
		 * was offered ended where the window did, perhaps not where a
		 * write did (Linux sends full segments up to the edge, then
		 * waits; it may have set PSH on one mid-write): no evidence of
		 * a boundary. A sender's segments are at most half the largest
		 * window it saw. */
		__u32 edge = READ_ONCE(w->cli_edge), room = edge - READ_ONCE(w->peer_acked);
		__u32 slack = c->our_mss < room / 2 ? c->our_mss : room / 2;

		if (seq_lt(end_w + slack, edge)) {
			tail = TAIL_PSH;
			if ((c->proto == PROTO_RESP || c->proto == PROTO_MEMCACHE) && payload_tail(p, 2) == CRLF)
				tail |= TAIL_CRLF;
		}
	}
	WRITE_ONCE(c->tail, tail);
	seq_advance(&w->sent_hi, end_w);
}

/* client_data: a client data segment on a bound leg. Returns 1 when the
 * packet must go to the bind program (see boundary()). *wp is then the
 * worker leg of *bp, the binding the segment goes on (NULL if it has none),
 * for translate_forward(), which would otherwise look it up again. */
static __always_inline int client_data(struct pkt *p, struct leg *c, struct binding **bp,
				       struct leg **wp, struct xlb_config *cfg, int stage)
{
	int r;

	*wp = bpf_map_lookup_elem(&xlb_legs, &(*bp)->to);
	if (!*wp)
		return 0;
	r = boundary(p, c, bp, wp, cfg, stage);
	/* xlb_bind only decides; xlb_xdp, called next, forwards and tracks
	 * (with the binding of the move, if there was one). */
	if (r || stage == STAGE_BIND)
		return r;
	track_client(p, c, *bp, *wp);
	return 0;
}

/* worker_closes: does the final answer starting in p (its status line in k,
 * status st) say its worker ends the connection after it: "Connection:
 * close", or HTTP/1.0 without "Connection: keep-alive". Its pair is pinned
 * then (PIN_CLOSE): a client that leaves after this answer must not give the
 * worker leg back (client_leaves), since the worker closes it any moment,
 * and a request of the next client sent into it would be reset. Cooling
 * covered that only while the worker closed within the cooling time; a
 * worker descheduled between its answer and its close (a busy machine)
 * did not, and one request of other clients in 1,000-8,000 was reset
 * (make soak with clients sending Connection: close).
 *
 * The answer to an HTTP/1.0 request the program made keep-alive (BIND_KEEP)
 * is framed instead (http_answer): where it ends goes into both bindings
 * (fin_at), and the worker's segment that ends there reaches the client with
 * a FIN (translate). An answer that cannot be framed (no Content-Length, its
 * headers past the scan or its first segment) is left to the worker: pinned,
 * and counted (unframed). http_answer() does it all: one verifier walk. */
static __always_inline int worker_closes(const struct pkt *p, const struct peek_buf *k, struct binding *b,
					 __u32 mark, int st)
{
	__u32 info = (pb(k, 7) == '0' ? ANS_V10 : 0) | (st == 204 || st == 304 ? ANS_NO_BODY : 0);

	/* The IP header's length rides above the flags: where the TCP
	 * checksum is (an IPv6 header with extension headers is longer). */
	return http_answer(p->ctx, p->payload_off, p->payload, b, mark | (__u64)(info | ip_hdr_len(p) << ANS_IP_LEN_SHIFT) << 32);
}

/* worker_data: a worker data segment on a bound leg, before its positions
 * move. New data whose ACK is below the client data already sent to the
 * worker: it answered a request it did not have whole (pipelining, an early
 * answer): pinned. The first segment of an HTTP answer: an interim answer
 * (1xx) that ends in its segment moves the start of the answer past it;
 * 101, an interim answer that goes on, or no status line pin the pair.
 * Returns 1 when the segment must be dropped: new data of the answer to an
 * HTTP/1.0 request the program made keep-alive (BIND_KEEP), past its first
 * segment, before that segment was seen (lost or reordered) and the answer
 * framed: passed on, the segment that ends the answer would reach the client
 * without the FIN that ends its connection, and nothing would come after it
 * to carry one. The worker sends it again once the first is through. Only
 * xlb_slow holds (`hold`): the fast path sends such segments there. */
static __always_inline int worker_data(const struct pkt *p, struct leg *w, struct binding *b, const int hold)
{
	__u32 end = p->seq + p->payload, mark;
	struct peek_buf *k;
	__u32 reason = 0;
	int st;

	if (hold)
		log_answer(w, end); /* the fast path sends a logged request's answer here */
	if (READ_ONCE(w->pin))
		return 0;
	mark = READ_ONCE(w->req_mark);
	/* Old data is judged no more, but for the first segment of a framed
	 * answer seen again (its first copy lost on the way to the client):
	 * it must say what the first said (close), judged as it was. */
	if (!seq_gt(end, READ_ONCE(w->peer_hi)) && !(hold && (b->flags & BIND_FIN_AT) && p->seq == mark))
		return 0;
	if (hold && (b->flags & (BIND_KEEP | BIND_FIN_AT)) == BIND_KEEP && p->seq != mark)
		return 1; /* the answer's end is not known yet */
	if (p->has_ack && seq_lt(p->ack, READ_ONCE(w->sent_hi))) {
		reason = PIN_PIPELINED;
	} else if (b->proto == PROTO_HTTP && p->seq == mark) {
		k = peek_load(p);
		st = k ? http_status(k) : -1;
		if (st == 101)
			reason = PIN_UPGRADE;
		else if (st < 0)
			reason = PIN_NOT_MSG;
		else if (st >= 200 && worker_closes(p, k, b, mark, st))
			reason = PIN_CLOSE;
		else if (st < 200 && payload_tail(p, 4) == CRLFCRLF &&
			 __sync_val_compare_and_swap(&w->req_mark, mark, end) == mark)
			count(XLB_CNT_INTERIM);
		else if (st < 200)
			reason = PIN_INTERIM;
	}
	if (reason)
		pin_pair(bpf_map_lookup_elem(&xlb_legs, &b->to), w, reason);
	return 0;
}

/* After a bound leg moved: both directions closed with FIN and both FINs
 * acknowledged means the pair is finished. */
static __always_inline void check_closed(const struct pkt *p, struct leg *a, const struct binding *b)
{
	struct leg *z;

	/* The pair ends only with both FINs in, and the segment that ends it
	 * arrives on a leg whose peer has already sent its FIN: without that,
	 * spare every ordinary segment the partner's lookup. */
	if (!(READ_ONCE(a->rx_flags) & LEG_RX_FIN))
		return;
	z = bpf_map_lookup_elem(&xlb_legs, &b->to);
	if (!z)
		return;
	if (!(READ_ONCE(z->rx_flags) & LEG_RX_FIN))
		return;
	if (READ_ONCE(a->peer_acked) != bound_snd_nxt(b, z))
		return;
	/* z's snd_nxt in its own space: a's peer_hi through the forward offset. */
	if (READ_ONCE(z->peer_acked) != READ_ONCE(a->peer_hi) + b->seq_off)
		return;
	{
		/* A pinned pair closed both ways (a worker that closes after
		 * its answer): the request's end. */
		int from_worker = a->kind == LEG_WORKER;
		struct leg *wl = from_worker ? a : z, *cl = from_worker ? z : a;

		if (READ_ONCE(wl->req_ns))
			log_end(wl, from_worker ? &b->to : &p->key, from_worker ? &p->key : &b->to, REQ_END_CLOSE,
				cl->requests);
	}
	finish(&p->key, a);
	finish(&b->to, z);
}

/* What xlb_slow does with a packet of a leg. The actions that rewrite the
 * packet are carried out in one place each (reply in slow_path(), translate
 * in xlb_xlate), so that each is inlined once: the verifier then walks each
 * of them once, not once per path that leads to it. */
enum act {
	ACT_PASS = 1,
	ACT_DROP,      /* count `reason` and drop */
	ACT_TRANSLATE, /* translate through `b` and send on */
	ACT_REPLY,     /* answer ourselves on `leg`: seq, flags */
	ACT_TAIL,      /* STAGE_MAIN: the bind program takes the packet */
};

struct decision {
	__u32 act;
	__u32 reason;
	struct binding *b;
	struct leg *leg;
	struct leg_key *to; /* ACT_REPLY to another leg than the sender's (xlb_bscratch's reply_to) */
	__u32 seq;
	__u8 flags;
};

static __always_inline int act_drop(struct decision *d, __u32 reason)
{
	d->act = ACT_DROP;
	d->reason = reason;
	return 0;
}

static __always_inline int act_reply(struct decision *d, struct leg *leg, __u32 seq, __u8 flags)
{
	d->act = ACT_REPLY;
	d->leg = leg;
	d->seq = seq;
	d->flags = flags;
	return 0;
}

/* rst_exact: a RST that may change state (RFC 5961: exactly the next
 * expected seq). After its FIN the peer's stack resets at the FIN's own seq
 * (hi - 1): its last ACK did not cover our answer yet. Linux accepts that
 * one too (tcp_reset_check), so the endpoint behind us dies of it; the
 * pair must end with it rather than wait forever. */
static __always_inline int rst_exact(const struct leg *leg, const struct pkt *p)
{
	__u32 hi = READ_ONCE(leg->peer_hi);

	return p->seq == hi || ((READ_ONCE(leg->rx_flags) & LEG_RX_FIN) && p->seq == hi - 1);
}

/* between_exchanges: client leg c, bound with b to worker leg w, closes
 * (FIN or RST segment p) between two exchanges: its data ended, the worker
 * answered all of it and acknowledged it, the client acknowledged the whole
 * answer (on this segment or before), nobody closed yet, the pair is not
 * pinned. Then the worker need not know the client left. */
static __always_inline int between_exchanges(const struct pkt *p, const struct leg *c, const struct binding *b,
					     const struct leg *w)
{
	__u32 sent = bound_snd_nxt(b, w);

	if (c->kind != LEG_CLIENT || w->kind != LEG_WORKER || p->payload || p->seq != READ_ONCE(c->peer_hi))
		return 0;
	if (READ_ONCE(w->state) != LEG_BOUND || pinned(c, w) || !tail_ok(c))
		return 0;
	if ((READ_ONCE(c->rx_flags) | READ_ONCE(w->rx_flags)) & (LEG_RX_FIN | LEG_RX_RST))
		return 0;
	if (READ_ONCE(w->peer_hi) == READ_ONCE(w->req_mark))
		return 0; /* the request has had no answer */
	if (READ_ONCE(w->peer_acked) != READ_ONCE(c->peer_hi) + b->seq_off)
		return 0; /* the worker has not acknowledged the whole request */
	if ((b->flags & BIND_KEEP) && (!(b->flags & BIND_FIN_AT) || READ_ONCE(w->peer_hi) != b->fin_at))
		return 0; /* an HTTP/1.0 answer known not to be whole yet (a part held, worker_data) */
	if (window_held(w))
		return 0; /* its answer reached the window's edge: more may come */
	if (!answer_whole(b, w))
		return 0; /* in the middle of an answer, or not known not to be */
	return READ_ONCE(c->peer_acked) == sent || (p->has_ack && p->ack == sent);
}

/* client_leaves: a client closes with a FIN between exchanges
 * (between_exchanges): the data plane completes the close itself and gives
 * the worker leg back, for the next client; the worker never sees the client
 * go. The FIN is answered with our FIN (the leg waits for the last ACK in
 * LEG_CLOSING). The worker leg cools first (cool()): the client read all
 * the bytes sent so far, which does not prove the answer was whole. A RST
 * is not taken: a client resets when it closes with bytes unread, in the
 * middle of an answer. After its FIN the client sends no new data, so no
 * grace period is needed on its side: a late retransmission finds the leg
 * unbound and is answered as stale. Returns 1 when it took the segment (d
 * says what to do with it). */
static __always_inline int client_leaves(struct pkt *p, struct leg *c, const struct binding *b,
					 struct decision *d, struct xlb_config *cfg)
{
	struct leg_key wk = b->to;
	struct binding *bw;
	struct leg *w;
	__u32 seq;

	if (!p->fin)
		return 0;
	w = bpf_map_lookup_elem(&xlb_legs, &wk);
	bw = bpf_map_lookup_elem(&xlb_binds, &wk);
	if (!w || !bw || !between_exchanges(p, c, b, w))
		return 0;
	if (!set_state(c, LEG_BOUND, LEG_CLOSING))
		return 0;
	if (READ_ONCE(w->req_ns))
		log_end(w, &p->key, &wk, REQ_END_CLOSE, c->requests);
	materialize(c, b, w, 0);
	materialize(w, bw, c, rest_win(cfg, w));
	bpf_map_delete_elem(&xlb_binds, &wk);
	bpf_map_delete_elem(&xlb_binds, &p->key);
	cool(&wk, w, cfg);
	count(XLB_CNT_CLIENT_LEFT);
	advance(c, p);
	seq = READ_ONCE(c->snd_nxt);
	WRITE_ONCE(c->snd_nxt, seq + 1); /* our FIN */
	count(XLB_CNT_FIN_ANSWERED);
	act_reply(d, c, seq, REPLY_ACK | REPLY_FIN);
	return 1;
}

/* framed_close: client leg c acknowledges the FIN that ended the framed
 * answer to its HTTP/1.0 request (worker_closes, translate): the data plane
 * closed the client's connection and keeps the worker's, which goes back to
 * its pool at once (its worker said keep-alive and sent the whole answer:
 * nothing more will come on it). The segment goes to the worker as its
 * ACK of the answer. The client leg waits in LEG_CLOSING for the client's
 * FIN, or ends now if this segment carries it (answered with our ACK; the
 * worker's answer is then acknowledged by the stale-segment path when it
 * sends it again, or by the next client's first segment). Returns 1 when it
 * took the segment (d says what to do with it). */
static __always_inline int framed_close(struct pkt *p, struct leg *c, struct binding *b, struct decision *d,
					struct xlb_config *cfg)
{
	struct leg_key wk = b->to;
	struct binding *bw;
	struct leg *w;
	__u32 seq;

	if (!(b->flags & BIND_FIN_AT) || !p->has_ack || p->ack + b->ack_off != b->fin_at + 1 || p->payload ||
	    p->seq != READ_ONCE(c->peer_hi) || (READ_ONCE(c->rx_flags) & (LEG_RX_FIN | LEG_RX_RST)))
		return 0;
	w = bpf_map_lookup_elem(&xlb_legs, &wk);
	bw = bpf_map_lookup_elem(&xlb_binds, &wk);
	if (!w || !bw || READ_ONCE(w->state) != LEG_BOUND || READ_ONCE(w->pin) ||
	    (READ_ONCE(w->rx_flags) & (LEG_RX_FIN | LEG_RX_RST)) || READ_ONCE(w->peer_hi) != b->fin_at)
		return 0;
	if (!set_state(c, LEG_BOUND, LEG_CLOSING))
		return 0;
	if (READ_ONCE(w->req_ns))
		log_end(w, &p->key, &wk, REQ_END_CLOSE, c->requests);
	materialize(c, b, w, 0);
	materialize(w, bw, c, rest_win(cfg, w));
	WRITE_ONCE(c->snd_nxt, READ_ONCE(c->snd_nxt) + 1); /* our FIN */
	bpf_map_delete_elem(&xlb_binds, &wk);
	bpf_map_delete_elem(&xlb_binds, &p->key);
	give_back(&wk, w, cfg);
	advance(c, p);
	count(XLB_CNT_FRAMED_CLOSE);
	if (!p->fin) {
		/* The client's ACK goes on as the worker's: its answer is
		 * acknowledged now, not when its retransmission timer fires
		 * (or the next client's request arrives). */
		__u32 zero = 0;
		struct bind_scratch *bs = bpf_map_lookup_elem(&xlb_bscratch, &zero);

		if (!bs) {
			act_drop(d, XLB_CNT_UNBOUND_ACK);
			return 1;
		}
		bs->reply_to = wk;
		act_reply(d, w, READ_ONCE(w->snd_nxt), REPLY_ACK);
		d->to = &bs->reply_to;
		return 1;
	}
	count(XLB_CNT_FIN_ANSWERED);
	seq = READ_ONCE(c->snd_nxt);
	finish(&p->key, c);
	act_reply(d, c, seq, REPLY_ACK);
	return 1;
}

/* A segment on a bound leg: positions and life cycle, then translate. */
static __always_inline void on_bound(struct pkt *p, struct leg *leg, struct binding *b, int ok,
				     struct decision *d, struct xlb_config *cfg)
{
	if (ok && leg->kind == LEG_CLIENT && (framed_close(p, leg, b, d, cfg) || client_leaves(p, leg, b, d, cfg)))
		return;
	if (ok && p->rst) {
		/* RFC 5961: a RST changes state only at exactly the next
		 * expected seq. Any other RST is forwarded for the endpoint to
		 * judge and moves no position: advancing peer_hi to it first
		 * would make every in-window RST "exact" and let a blind RST
		 * kill the pair. */
		if (rst_exact(leg, p)) {
			struct leg *z = bpf_map_lookup_elem(&xlb_legs, &b->to);
			int from_worker = leg->kind == LEG_WORKER;
			struct leg *wl = from_worker ? leg : z, *cl = from_worker ? z : leg;

			if (wl && cl && READ_ONCE(wl->req_ns))
				log_end(wl, from_worker ? &b->to : &p->key, from_worker ? &p->key : &b->to,
					REQ_END_RESET, cl->requests);
			__sync_fetch_and_or(&leg->rx_flags, LEG_RX_RST);
			finish(&p->key, leg);
			if (z)
				finish(&b->to, z);
		} else {
			count(XLB_CNT_RST_IGNORED);
		}
	} else if (ok) {
		struct leg *w;

		if (leg->kind == LEG_CLIENT && p->payload && client_data(p, leg, &b, &w, cfg, STAGE_MAIN)) {
			d->act = ACT_TAIL;
			return;
		}
		if (leg->kind == LEG_WORKER && p->payload && worker_data(p, leg, b, 1)) {
			act_drop(d, XLB_CNT_FRAME_WAIT);
			return;
		}
		advance(leg, p);
		if (p->has_ack)
			check_closed(p, leg, b);
	}
	d->act = ACT_TRANSLATE;
	d->b = b;
}

/* hold_first keeps client data that found no worker leg idle (CFG_HOLD_FIRST):
 * its frame goes to xlb_held under the client's key, and the caller drops it
 * as before. User space, told by EV_HELD, takes it out once a leg is pooled
 * and runs it through xlb_xdp again (splice replayHeld): the client does not
 * wait out its retransmission timeout, 200 ms at least, for a pool that a
 * burst of new clients emptied and that filled again in a millisecond. Kept:
 * a segment that starts where the client's data is expected (peer_hi), no
 * FIN, whole in XLB_HOLD_MAX bytes; one a client (a later one replaces it).
 * Returns the event to tell: EV_HELD, or EV_POOL_EMPTY when nothing was kept
 * (the client's retransmission comes as before). */
static __always_inline __u32 hold_first(struct pkt *p, const struct leg *leg, const struct xlb_config *cfg)
{
	__u32 zero = 0, len = (long)p->end - (long)p->eth;
	struct held *h;

	if (!(cfg->flags & CFG_HOLD_FIRST) || p->fin || p->seq != READ_ONCE(leg->peer_hi))
		return EV_POOL_EMPTY;
	if (len > XLB_HOLD_MAX)
		return EV_POOL_EMPTY;
	/* Two tests clang would fold into one range check on a copy, which
	 * leaves the verifier without a lower bound on len itself. */
	asm volatile("" : "+r"(len));
	if (len < sizeof(struct ethhdr))
		return EV_POOL_EMPTY;
	h = bpf_map_lookup_elem(&xlb_hscratch, &zero);
	if (!h || bpf_xdp_load_bytes(p->ctx, 0, h->frame, len))
		return EV_POOL_EMPTY;
	h->h.at_ns = now_ns();
	h->h.len = len;
	h->h.seq = p->seq;
	if (bpf_map_update_elem(&xlb_held, &p->key, h, BPF_ANY))
		return EV_POOL_EMPTY; /* full: a burst larger than the map */
	return EV_HELD;
}

/* The first data of a client leg (STAGE_BIND), or its first after an idle
 * release: bind it to the worker leg the policy picks. The first data of the
 * connection tells its protocol (classify); later, data that does not start
 * a message is bound all the same (there is no other place for it) and the
 * pair pinned. Returns 0, or the reason to drop the packet. */
static __always_inline __u32 first_bind(struct pkt *p, struct leg *leg, struct xlb_config *cfg)
{
	struct worker_stats *ws;
	struct leg_key wk;
	struct leg *w = pick_leg(cfg, &p->key, &wk, 1);
	struct peek_buf *k;
	__u32 pin = 0, proto, start;

	if (!w) {
		emit(hold_first(p, leg, cfg), &p->key, leg, READ_ONCE(leg->state));
		return XLB_CNT_NO_IDLE_LEG;
	}
	if (!set_state(leg, LEG_IDLE, LEG_BOUND)) {
		/* Another CPU is binding this client: give the leg back. */
		unpop(&wk, w, cfg);
		return XLB_CNT_DEAD_LEG;
	}
	k = peek_load(p);
	if (!k) {
		leg->state = LEG_IDLE;
		unpop(&wk, w, cfg);
		return XLB_CNT_BIND_RACE;
	}
	proto = leg->requests == 0 ? first_proto(k, cfg) : leg->proto;
	start = msg_start(k, proto);
	if (leg->requests == 0)
		pin = classify(k, leg, cfg, proto, start); /* before bind_legs: the bindings carry the protocol */
	else if (!READ_ONCE(leg->pin))
		pin = start;
	start_request(w, cfg);
	offer_edge(leg, w);
	if (bind_legs(&p->key, leg, &wk, w, 0)) {
		leg->state = LEG_IDLE;
		unpop(&wk, w, cfg);
		return XLB_CNT_NO_IDLE_LEG;
	}
	count(XLB_CNT_BIND);
	if (!pin)
		pin = READ_ONCE(leg->pin); /* a pinned client stays pinned on its new leg */
	if (pin)
		pin_pair(leg, w, pin);
	if (!leg->requests && (cfg->flags & CFG_SYN_DEMAND))
		syn_budget_add(1); /* its SYN's claim is met (syn_demand) */
	leg->requests++;
	ws = wstats(w->worker);
	if (ws) {
		ws->binds++;
		ws->requests++;
	}
	return 0;
}

/* The bind program's work on a client data segment: bind the leg, or decide
 * a request boundary (move or stay). It never translates: xlb_xdp, called
 * next, finds the new binding (and the boundary decided: req_mark moved)
 * and forwards the segment. Returns 0, or the reason to drop the packet. */
static __always_inline __u32 bind_decide(struct pkt *p, struct leg *leg, struct xlb_config *cfg)
{
	struct binding *b;
	struct leg *w;
	__u32 state;

	if (p->syn || p->rst || !p->payload || leg->kind != LEG_CLIENT || !plausible(leg, p))
		return XLB_CNT_BIND_RACE; /* xlb_xdp sends only client data here */
	state = READ_ONCE(leg->state);
	b = bpf_map_lookup_elem(&xlb_binds, &p->key);
	if (!b) {
		if (state != LEG_IDLE || seq_le(p->seq + p->payload, READ_ONCE(leg->peer_hi)))
			return XLB_CNT_BIND_RACE;
		return first_bind(p, leg, cfg);
	}
	if (state != LEG_BOUND)
		return XLB_CNT_BIND_RACE;
	client_data(p, leg, &b, &w, cfg, STAGE_BIND);
	return 0;
}

/* report_low tells user space of a pool a take left at its low watermark
 * (note_take noted it in the per-CPU scratch). */
static __always_inline void report_low(void)
{
	__u32 zero = 0, low;
	struct bind_scratch *bs = bpf_map_lookup_elem(&xlb_bscratch, &zero);

	if (!bs || !(low = bs->low))
		return;
	bs->low = 0;
	{
		struct xlb_event ev = {};

		ev.type = EV_POOL_LOW;
		ev.worker = low - 1;
		if (bpf_ringbuf_output(&xlb_events, &ev, sizeof(ev), 0))
			count(XLB_CNT_EVENT_LOST);
	}
}

/* leg_unserved: client leg c (LEG_IDLE) sent its data with a FIN and no
 * worker leg was idle: it closes, taking its data along. The leg goes to
 * LEG_CLOSING with everything acknowledged and our FIN sent (snd_nxt
 * counts it); the caller answers. Returns 1 when the caller must answer. */
static __always_inline int leg_unserved(struct pkt *p, struct leg *c)
{
	if (c->kind != LEG_CLIENT || !set_state(c, LEG_IDLE, LEG_CLOSING))
		return 0;
	advance(c, p);
	WRITE_ONCE(c->snd_nxt, READ_ONCE(c->snd_nxt) + 1); /* our FIN */
	count(XLB_CNT_UNSERVED);
	count(XLB_CNT_FIN_ANSWERED);
	return 1;
}

/* grow_request appends "Connection: keep-alive" to the headers of the
 * request segment in ctx (an HTTP/1.0 request, http10_request; seq its
 * sequence number, len its payload): its last two bytes (the empty line's
 * CRLF) become the header line and the empty line, KEEP_GROWTH bytes more;
 * its seq goes back by KEEP_GROWTH, so that the binding's offsets, which
 * count the added bytes from the end of the request on, put its first byte
 * where it was. Checksums are mended incrementally (the seq, the pseudo
 * header's length, the changed bytes), the IP header's recomputed. Returns 0;
 * -1: nothing changed; -2: the packet changed but could not be finished
 * (drop it). Global: the verifier walks it once, and the caller's packet
 * pointers are void after it (it resizes the packet). */
__attribute__((noinline)) int grow_request(struct xdp_md *ctx, __u32 seq, __u32 len)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	ip_t *ip = data + sizeof(struct ethhdr);
	struct tcphdr *tcp = (void *)(ip + 1);
	__u32 tcp_len, q, zero = 0;
	__be32 seq_new = bpf_htonl(seq - KEEP_GROWTH), v;
	struct scan_buf *s = bpf_map_lookup_elem(&xlb_scan, &zero);
	__u8 *from, *to, *add;
	__u64 w;
	__u16 crlf;
	__s64 sum;

#if XLB_FAMILY == 6
	if (!s || (void *)(tcp + 1) > end || ip->nexthdr != IPPROTO_TCP || len < 2 || len > XLB_HDR_SCAN)
		return -1;
#else
	if (!s || (void *)(tcp + 1) > end || ip->ihl != 5 || len < 2 || len > XLB_HDR_SCAN)
		return -1;
#endif
	tcp_len = tcp->doff * 4;
	if (tcp_len < sizeof(struct tcphdr) || data + sizeof(struct ethhdr) + IP_HDR_LEN + tcp_len + len != end)
		return -1; /* Ethernet padding, or not the segment we were told */
	q = sizeof(struct ethhdr) + IP_HDR_LEN + tcp_len + len - 2;
	/* The changed words, in the scan buffer: the seq, the pseudo header's
	 * TCP length, and the bytes from the even offset at or before the
	 * CRLF (the segment's parity is the frame's: the Ethernet and IP
	 * headers are 34 or 54 bytes). The pseudo header's length is a
	 * 32-bit word in IPv6's, 16 bits after a zero word in IPv4's: the
	 * same sum. */
	from = &s->b[0];
	to = &s->b[64];
	add = &s->b[128];
	__builtin_memset(from, 0, 36);
	__builtin_memset(to, 0, 36);
	__builtin_memcpy(from, &tcp->seq, 4);
	__builtin_memcpy(to, &seq_new, 4);
	v = bpf_htonl(tcp_len + len);
	__builtin_memcpy(from + 4, &v, 4);
	v = bpf_htonl(tcp_len + len + KEEP_GROWTH);
	__builtin_memcpy(to + 4, &v, 4);
	w = W8("Connecti");
	__builtin_memcpy(add, &w, 8);
	w = W8("on: keep");
	__builtin_memcpy(add + 8, &w, 8);
	w = W8("-alive\r\n");
	__builtin_memcpy(add + 16, &w, 8);
	crlf = W8("\r\n");
	__builtin_memcpy(add + 24, &crlf, 2);
	if (q & 1) {
		if (bpf_xdp_load_bytes(ctx, q - 1, from + 8, 3))
			return -1;
		to[8] = from[8];
		__builtin_memcpy(to + 9, add, 26);
		__builtin_memcpy(&crlf, from + 9, 2);
	} else {
		if (bpf_xdp_load_bytes(ctx, q, from + 8, 2))
			return -1;
		__builtin_memcpy(to + 8, add, 26);
		__builtin_memcpy(&crlf, from + 8, 2);
	}
	if (crlf != W8("\r\n"))
		return -1;
	sum = bpf_csum_diff((__be32 *)from, 36, (__be32 *)to, 36, (__u16)~tcp->check);
	if (sum < 0 || bpf_xdp_adjust_tail(ctx, KEEP_GROWTH))
		return -1;
	if (bpf_xdp_store_bytes(ctx, q, add, 26))
		return -2;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	ip = data + sizeof(struct ethhdr);
	tcp = (void *)(ip + 1);
	if ((void *)(tcp + 1) > end)
		return -2;
	tcp->seq = seq_new;
	ip_set_tot_len(ip, IP_HDR_LEN + tcp_len + len + KEEP_GROWTH);
	ip_finish(ip);
	tcp->check = ~csum_fold((__u32)sum);
	return 0;
}

/* keep_request: after xlb_bind bound client leg c (its first request) or let
 * a segment through, under CFG_KEEP_HTTP10: an HTTP/1.0 request that asks
 * nothing of the connection (http10_request) goes to the worker with
 * "Connection: keep-alive" (grow_request), so that the worker keeps its
 * connection after the answer; the data plane reads the answer's length
 * (worker_closes), ends the client's connection after it (translate,
 * framed_close) and gives the worker leg back. A retransmission of that
 * request is grown again (the fast path sends it here). Requests that do not
 * fit in one of the worker's segments once grown stay as they are. Returns 0,
 * or -1: drop the packet (a retransmission that could not be grown: the
 * client sends it again). */
static __always_inline int keep_request(struct pkt *p, struct leg *c)
{
	struct binding *b = bpf_map_lookup_elem(&xlb_binds, &p->key), *bw;
	__u32 seq = p->seq, len = p->payload;
	struct leg *w;
	int kind;

	if (!b || c->kind != LEG_CLIENT || p->fin || !len)
		return 0;
	if (b->flags & BIND_KEEP) {
		if (seq != b->mark_seq || len != b->mark_len)
			return 0;
		return grow_request(p->ctx, seq, len) ? -1 : 0;
	}
	if (READ_ONCE(c->requests) != 1 || c->proto != PROTO_HTTP || READ_ONCE(c->pin) || seq != READ_ONCE(c->peer_hi))
		return 0;
	w = bpf_map_lookup_elem(&xlb_legs, &b->to);
	bw = bpf_map_lookup_elem(&xlb_binds, &b->to);
	if (!w || !bw || READ_ONCE(w->pin) || len + KEEP_GROWTH > w->peer_mss)
		return 0;
	kind = http10_request(p->ctx, p->payload_off, len);
	if (!kind)
		return 0;
	switch (grow_request(p->ctx, seq, len)) {
	case 0:
		break;
	case -1:
		return 0;
	default:
		return -1;
	}
	/* Before the packet goes on: the worker cannot acknowledge the added
	 * bytes before it has them. */
	b->mark_seq = seq;
	b->mark_len = len;
	b->seq_off += KEEP_GROWTH;
	bw->ack_off -= KEEP_GROWTH;
	WRITE_ONCE(b->flags, b->flags | BIND_KEEP | (kind == 2 ? BIND_HEAD : 0));
	WRITE_ONCE(bw->flags, bw->flags | BIND_KEEP | (kind == 2 ? BIND_HEAD : 0));
	count(XLB_CNT_KEEP_HTTP10);
	return 0;
}

/* bind_stage is bind_decide, then the low-watermark report of a take it
 * made (note_take). */
static __always_inline __u32 bind_stage(struct pkt *p, struct leg *leg, struct xlb_config *cfg,
					struct bind_scratch *bs)
{
	__u32 reason;

	bs->low = 0;
	warm_up(cfg, XLB_COOL_MOVES);
	reason = bind_decide(p, leg, cfg);
	report_low();
	return reason;
}

/* A segment on a leg that is not bound. */
static __always_inline void on_unbound(struct pkt *p, struct leg *leg, int ok, struct decision *d)
{
	__u32 state = READ_ONCE(leg->state);
	__u32 end = p->seq + p->payload;
	__u32 hi = READ_ONCE(leg->peer_hi);
	int first = ok && !p->rst && p->payload && seq_gt(end, hi) && leg->kind == LEG_CLIENT &&
		    state == LEG_IDLE;

	if (first) {
		d->act = ACT_TAIL;
		return;
	}

	if (!ok) {
		act_drop(d, XLB_CNT_IMPLAUSIBLE);
		return;
	}

	/* A RST first, whatever it carries: it is never answered and never
	 * binds a leg. Only the exact seq retires the leg (RFC 5961). */
	if (p->rst) {
		if (rst_exact(leg, p)) {
			__sync_fetch_and_or(&leg->rx_flags, LEG_RX_RST);
			finish(&p->key, leg);
			act_drop(d, XLB_CNT_DEAD_LEG);
		} else {
			act_drop(d, XLB_CNT_RST_IGNORED);
		}
		return;
	}

	/* Old data (a late retransmission of bytes already taken across a
	 * splice): acknowledge it so that the sender stops. */
	if (p->payload && seq_le(end, hi)) {
		count(XLB_CNT_STALE_ACKED);
		act_reply(d, leg, READ_ONCE(leg->snd_nxt), REPLY_ACK);
		return;
	}

	if (p->payload) {
		/* New data where none is expected: a worker talking on an idle
		 * leg (a cooling one: the rest of an answer its client left
		 * before), or a client on a closing leg. The stream no longer
		 * lines up with anything: the leg ends. A worker leg is retired,
		 * so that user space closes its connection with a FIN. */
		if (leg->kind == LEG_WORKER && (state == LEG_IDLE || state == LEG_COOLING))
			retire(&p->key, leg, state);
		else
			finish(&p->key, leg);
		act_drop(d, XLB_CNT_UNSOLICITED);
		return;
	}

	if (p->fin) {
		/* The peer closes a quiescent leg: complete the close ourselves. A
		 * retransmitted FIN gets the same answer again. */
		__u32 seq = READ_ONCE(leg->snd_nxt);

		if (state == LEG_IDLE || state == LEG_COOLING) {
			if (!set_state(leg, state, LEG_CLOSING)) {
				act_drop(d, XLB_CNT_DEAD_LEG);
				return;
			}
			if (leg->kind == LEG_WORKER)
				unpooled(leg->worker, state);
			advance(leg, p);
			leg->snd_nxt = seq + 1; /* our FIN */
		} else if (state == LEG_CLOSING && p->has_ack && p->ack == seq) {
			/* The peer has acknowledged our FIN: its FIN ends the
			 * leg. We closed first (framed_close), or its FIN raced
			 * its ACK of ours to another CPU and was dropped there
			 * (it comes again): answered with our FIN again, it left
			 * the leg closing for the sweep (10 s), where a client
			 * reusing its port meets it (see slow_path). */
			advance(leg, p);
			finish(&p->key, leg);
			count(XLB_CNT_FIN_ANSWERED);
			act_reply(d, leg, seq, REPLY_ACK);
			return;
		} else if (state == LEG_CLOSING && (READ_ONCE(leg->rx_flags) & LEG_RX_FIN)) {
			seq -= 1; /* its FIN again, ours not acknowledged: both again */
		} else {
			act_drop(d, XLB_CNT_DEAD_LEG);
			return;
		}
		count(XLB_CNT_FIN_ANSWERED);
		act_reply(d, leg, seq, REPLY_ACK | REPLY_FIN);
		return;
	}

	/* A pure ACK or window update. */
	advance(leg, p);
	if (state == LEG_CLOSING && p->has_ack && p->ack == READ_ONCE(leg->snd_nxt) &&
	    (READ_ONCE(leg->rx_flags) & LEG_RX_FIN))
		finish(&p->key, leg); /* the last ACK (a leg that closed first waits for the peer's FIN) */
	act_drop(d, XLB_CNT_UNBOUND_ACK);
}

static __always_inline void on_leg(struct pkt *p, struct leg *leg, struct decision *d,
				   struct xlb_config *cfg)
{
	struct binding *b;
	__u32 state;
	int ok;

	if (p->syn) {
		/* A worker's retransmitted SYN-ACK (our handshake ACK was lost)
		 * is the stack's business; a SYN on a live client leg is not. */
		if (leg->kind == LEG_WORKER && p->has_ack) {
			if (leg->opts & LEG_OPT_NOSOCK)
				act_reply(d, leg, READ_ONCE(leg->snd_nxt), REPLY_ACK); /* ours to answer */
			else
				d->act = ACT_PASS;
			return;
		}
		/* A SYN on a live client leg: the client opened a connection
		 * from the port of one we still hold, whose end never reached
		 * us (its RST was lost, or its flow went to another balancer
		 * host meanwhile: ECMP). Answered as a stack answers it (RFC
		 * 5961 4.2): an ACK with the leg's numbers. The client, in
		 * SYN-SENT, answers that with a RST at exactly the seq the leg
		 * expects, which ends the leg; its next SYN finds it dead and
		 * is learned anew (slow_path). Dropped, it was retransmitted
		 * into the same leg until the client gave up. */
		if (leg->kind == LEG_CLIENT && !p->has_ack) {
			count(XLB_CNT_STALE_ACKED);
			act_reply(d, leg, READ_ONCE(leg->snd_nxt), REPLY_ACK);
			return;
		}
		act_drop(d, XLB_CNT_DEAD_LEG);
		return;
	}
	if (p->bad_opts) {
		act_drop(d, XLB_CNT_BAD_OPTIONS);
		return;
	}

	WRITE_ONCE(leg->last_ns, now_ns());
	ok = plausible(leg, p);
	state = READ_ONCE(leg->state);
	if (state == LEG_PARKED && p->payload) {
		/* Being released (idle release): its worker leg may be handed to
		 * another client any moment, so no data may go to it. The
		 * client retransmits and binds anew. */
		act_drop(d, XLB_CNT_PARKED_DROP);
		return;
	}

	/* Each path counts its own reasons (implausible, rst_ignored) once:
	 * the unbound path turns them into drop reasons. */
	b = bpf_map_lookup_elem(&xlb_binds, &p->key);
	if (b && state == LEG_DEAD) {
		/* A late segment of a finished pair is translated only into a
		 * partner that finished too: a worker leg's 4-tuple serves a new
		 * connection once its port is free again (dialed legs), and
		 * this pair's offsets mean nothing there. */
		struct leg *z = bpf_map_lookup_elem(&xlb_legs, &b->to);

		if (!z || READ_ONCE(z->state) != LEG_DEAD) {
			act_drop(d, XLB_CNT_DEAD_LEG);
			return;
		}
	}
	if (b) {
		if (!ok)
			count(XLB_CNT_IMPLAUSIBLE);
		on_bound(p, leg, b, ok && state != LEG_DEAD, d, cfg);
		return;
	}
	if (state == LEG_DEAD) {
		if (p->fin && !p->payload && (READ_ONCE(leg->rx_flags) & LEG_RX_FIN) &&
		    p->seq + 1 == READ_ONCE(leg->peer_hi)) {
			/* The peer's FIN again: our ACK of it was lost (a leg
			 * that closed first ends on the peer's FIN). */
			count(XLB_CNT_FIN_ANSWERED);
			act_reply(d, leg, READ_ONCE(leg->snd_nxt), REPLY_ACK);
			return;
		}
		act_drop(d, XLB_CNT_DEAD_LEG);
		return;
	}
	on_unbound(p, leg, ok, d);
	if (leg->kind == LEG_WORKER)
		sweep_pool(leg->worker); /* this packet may have ended an idle worker leg */
}

static __always_inline int translate_forward(struct pkt *p, const struct binding *b,
					     struct xlb_config *cfg, struct leg *partner);

/* The fast path of xlb_xdp: a plausible segment of a bound leg, no SYN, no
 * RST: positions, then translate and send on. Everything else goes to
 * xlb_slow, which decides, and has xlb_xlate translate when it must.
 * Keeping the other cases out of this program keeps the translation's many
 * option layouts from being walked by the verifier once per case. */
static __always_inline int fast_path(struct pkt *p, struct leg *leg, struct xlb_config *cfg,
				     __u32 reentry)
{
	struct leg *w = NULL; /* the worker leg of a client segment's binding, once looked up */
	struct binding *b;

	if (p->bad_opts)
		goto slow;
	b = bpf_map_lookup_elem(&xlb_binds, &p->key);
	if (!b || READ_ONCE(leg->state) != LEG_BOUND || !plausible(leg, p))
		goto slow;
	if (leg->kind == LEG_WORKER && p->payload && READ_ONCE(leg->req_ns))
		goto slow; /* a logged request's answer: its times are noted there (worker_data) */
	if (leg->kind == LEG_WORKER && p->payload && (b->flags & BIND_KEEP) &&
	    (!(b->flags & BIND_FIN_AT) || p->seq == READ_ONCE(leg->req_mark)))
		goto slow; /* an answer not framed yet, or its first segment again: xlb_slow's (worker_data) */
	if (leg->kind == LEG_CLIENT && (b->flags & (BIND_KEEP | BIND_FIN_AT))) {
		/* An HTTP/1.0 client whose request the program made keep-alive:
		 * a retransmission of that request is grown again (xlb_bind),
		 * the ACK of the FIN that ended its answer ends the pair
		 * (framed_close, xlb_slow). */
		if ((b->flags & BIND_KEEP) && p->seq == b->mark_seq && p->payload == b->mark_len) {
			bpf_tail_call(p->ctx, &xlb_progs, PROG_SLOT(XLB_PROG_BIND));
			return drop(XLB_CNT_TAIL_FAIL);
		}
		if ((b->flags & BIND_FIN_AT) && p->has_ack && p->ack + b->ack_off == b->fin_at + 1)
			goto slow;
	}
	WRITE_ONCE(leg->last_ns, now_ns());
	if (leg->kind == LEG_CLIENT && p->payload) {
		/* A request boundary is decided, and the client moved, here:
		 * no round trip through xlb_bind. */
		struct binding *b0 = b;

		client_data(p, leg, &b, &w, cfg, STAGE_REMIX);
		if (b != b0)
			report_low();
	}
	if (leg->kind == LEG_WORKER && p->payload)
		worker_data(p, leg, b, 0);
	advance(leg, p);
	if (p->has_ack)
		check_closed(p, leg, b);
	return translate_forward(p, b, cfg, w);
slow:
	bpf_tail_call(p->ctx, &xlb_progs, PROG_SLOT(XLB_PROG_SLOW));
	return drop(XLB_CNT_TAIL_FAIL);
}

/* translate_forward translates the packet through binding b and sends it on.
 * Inlined twice: in xlb_xdp's fast path and in xlb_xlate, never twice in one
 * program (its option walks are most of a program's verifier budget).
 * partner: b's partner leg if the caller has it already (client_data()),
 * else NULL: it is then looked up where it is needed. */
static __always_inline int translate_forward(struct pkt *p, const struct binding *b,
					     struct xlb_config *cfg, struct leg *partner)
{
	struct leg *w = NULL;

	if (b && !(b->flags & BIND_TO_CLIENT) && p->has_ack) {
		/* A client segment without data that acknowledges all its
		 * worker sent, when the worker stopped short of its window (it
		 * is done, or pausing, not held by the window): the worker is
		 * told the rest window, not the client's (xlb_config.rest_win):
		 * the next request, perhaps another client's, must be able to
		 * make it smaller. While data is in flight, or the window held
		 * the worker back, windows pass as they are. */
		w = partner ? partner : bpf_map_lookup_elem(&xlb_legs, &b->to);
		if (w && !p->payload && p->ack + b->ack_off == READ_ONCE(w->peer_hi) &&
		    (!window_held(w) || answer_done(b, w)))
			p->win_cap = rest_win(cfg, w);
	}
	if (!b || translate(p, b))
		return drop(XLB_CNT_BAD_OPTIONS);
	if ((b->flags & (BIND_TO_CLIENT | BIND_FIN_AT)) == (BIND_TO_CLIENT | BIND_FIN_AT) && p->payload &&
	    p->seq + p->payload == b->fin_at) {
		/* The end of a framed answer (worker_closes): the client's
		 * connection ends with it. After translate(), whose option
		 * walk this branch would otherwise double for the verifier. */
		__u16 *fl = (__u16 *)p->tcp + 6, old = *fl;
		struct csum_acc tc = {};

		((__u8 *)p->tcp)[13] |= REPLY_FIN;
		csum_acc16(&tc, old, *fl);
		csum_apply(&p->tcp->check, &tc);
	}
	if (w)
		WRITE_ONCE(w->win_edge, p->ack + b->ack_off + ((__u32)bpf_ntohs(p->tcp->window) << b->out_wscale));
	{
		struct worker_stats *ws = wstats(b->worker);
		int to_client = b->flags & BIND_TO_CLIENT;

		count(to_client ? XLB_CNT_FWD_TO_CLIENT : XLB_CNT_FWD_TO_WORKER);
		if (ws) {
			if (to_client)
				ws->bytes_out += p->payload;
			else
				ws->bytes_in += p->payload;
		}
	}
	return forward(p, cfg);
}

/* xlb_slow: every packet the fast path does not take. */
static __always_inline int slow_path(struct pkt *p, struct leg *leg, struct xlb_config *cfg)
{
	struct decision d;

	if (leg && (READ_ONCE(leg->state) == LEG_DEAD || (READ_ONCE(leg->state) == LEG_CLOSING && leg->kind == LEG_CLIENT)) &&
	    ((p->syn && (!p->has_ack || leg->kind == LEG_WORKER)) ||
	     (leg->kind == LEG_WORKER && !p->payload && (p->rst || p->has_ack) &&
	      bpf_map_lookup_elem(&xlb_dials, &p->key)))) {
		/* A client reuses the port of a finished leg (or of one
		 * closing: a client that opens a connection from the port has
		 * closed the old one), or a new pool
		 * connection does (user space destroys a finished worker
		 * leg's socket at once, or frees a dialed leg's port, and
		 * dials again): forget the leg, learn the new handshake. The
		 * answer to a dialed SYN may also be a TIME-WAIT's ACK or a
		 * RST (dialed()). */
		bpf_map_delete_elem(&xlb_binds, &p->key);
		bpf_map_delete_elem(&xlb_legs, &p->key);
		leg = NULL;
	}
	if (!leg)
		return no_leg(p, cfg);

	__builtin_memset(&d, 0, sizeof(d));
	on_leg(p, leg, &d, cfg);
	switch (d.act) {
	case ACT_TRANSLATE:
		bpf_tail_call(p->ctx, &xlb_progs, PROG_SLOT(XLB_PROG_XLATE));
		return drop(XLB_CNT_TAIL_FAIL);
	case ACT_REPLY:
		if (!d.leg)
			return verdict(XDP_DROP);
		if (!d.to)
			return send_reply(p, d.leg, d.seq, d.flags);
		if (reply(p, d.leg, d.to, d.seq, d.flags))
			return verdict(XDP_DROP);
		return forward(p, cfg);
	case ACT_PASS:
		return verdict(XDP_PASS);
	case ACT_TAIL:
		bpf_tail_call(p->ctx, &xlb_progs, PROG_SLOT(XLB_PROG_BIND));
		return drop(XLB_CNT_TAIL_FAIL);
	}
	return drop(d.reason);
}

static __always_inline int run(struct xdp_md *ctx, int stage)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	struct xlb_config *cfg;
	struct ethhdr *eth;
	ip_t *ip;
	struct tcphdr *tcp;
	struct leg *leg;
	struct pkt p;
	__u32 ip_len, tcp_len, zero = 0;
	struct bind_scratch *bs;
	__u32 reentry = 0;
	int r;

	r = parse_eth(&c, &eth);
#if XLB_FAMILY == 4
	if (r == PARSE_OTHER && stage == STAGE_MAIN && eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		/* IPv6: xlb_xdp6's, the same code built for it (ipfam.h). */
		bpf_tail_call(ctx, &xlb_progs, XLB_PROGS_PER_FAMILY + XLB_PROG_MAIN);
		/* Its slot empty (the pins lost, see xlb_slow's below): to
		 * the stack. */
		count(XLB_CNT_TAIL_FAIL);
		return verdict(XDP_PASS);
	}
#endif
	if (r != PARSE_OK) {
		count(r == PARSE_OTHER ? XLB_CNT_NOT_IPV4 : XLB_CNT_MALFORMED);
		return verdict(XDP_PASS);
	}
	r = parse_ip(&c, &ip, &ip_len);
	if (r != PARSE_OK) {
		count(r == PARSE_OTHER ? XLB_CNT_NOT_TCP : XLB_CNT_MALFORMED);
		return verdict(XDP_PASS);
	}
	r = parse_tcp(&c, &tcp);
	if (r != PARSE_OK) {
		count(XLB_CNT_MALFORMED);
		return verdict(XDP_PASS);
	}
	tcp_len = tcp->doff * 4;
	if (ip_tot_len(ip) < ip_len + tcp_len) {
		count(XLB_CNT_MALFORMED);
		return verdict(XDP_PASS);
	}
	cfg = config();
	if (!cfg)
		return verdict(XDP_PASS);
	if (stage == STAGE_MAIN && !(tcp->syn && tcp->ack) && !ports_mapped(tcp->dest, cfg)) {
		/* Foreign traffic, the common case of a busy host: not to the
		 * service (a client's SYN included), not to a port of a worker
		 * leg, not a worker's SYN-ACK to learn (its port is marked
		 * once the connection is registered). No leg lookup. */
		count(XLB_CNT_TCP);
		count(XLB_CNT_FOREIGN);
		return verdict(XDP_PASS);
	}
	/* The re-entry flag is of xlb_xdp, xlb_bind and xlb_slow (again()), but leaving the
	 * lookup out of xlb_xlate doubled the verifier's walk of translate()
	 * there, past its budget (measured): keep it. */
	bs = bpf_map_lookup_elem(&xlb_bscratch, &zero);
	if (!bs)
		return verdict(XDP_PASS);
	if (stage == STAGE_MAIN) {
		/* Back from xlb_bind, the packet was counted already. No branch
		 * on it here: a branch would double the verifier's walk of the
		 * whole fast path. */
		reentry = READ_ONCE(bs->reentry) & 1;
		bs->reentry = 0;
		count_n(XLB_CNT_TCP, 1 - reentry);
	}

	__builtin_memset(&p, 0, sizeof(p));
	p.ctx = ctx;
	p.end = c.end;
	p.eth = eth;
	p.ip = ip;
	p.tcp = tcp;
	p.opts = (__u8 *)(tcp + 1);
	p.opt_len = tcp_len - sizeof(struct tcphdr);
	p.payload = ip_tot_len(ip) - ip_len - tcp_len;
	p.payload_off = sizeof(struct ethhdr) + ip_len + tcp_len;
	p.seq = bpf_ntohl(tcp->seq);
	p.ack = bpf_ntohl(tcp->ack_seq);
	p.win = bpf_ntohs(tcp->window);
	p.fin = tcp->fin;
	p.syn = tcp->syn;
	p.rst = tcp->rst;
	p.has_ack = tcp->ack;
	p.psh = tcp->psh;
	__builtin_memcpy(p.key.peer_addr, ip_src(ip), ADDR_WORDS * 4);
	__builtin_memcpy(p.key.local_addr, ip_dst(ip), ADDR_WORDS * 4);
	p.key.peer_port = tcp->source;
	p.key.local_port = tcp->dest;
	p.key.family = XLB_AF;
	/* xlb_xlate translates through the binding alone. */
	leg = stage == STAGE_XLATE ? NULL : bpf_map_lookup_elem(&xlb_legs, &p.key);
	if (stage == STAGE_BIND) {
		/* Options are not needed to bind (xlb_xdp parses them next),
		 * only to answer a client that leaves unserved. */
		__u32 reason = leg ? bind_stage(&p, leg, cfg, bs) : XLB_CNT_BIND_RACE;

		if (reason == XLB_CNT_NO_IDLE_LEG && p.fin && (p.o = bpf_map_lookup_elem(&xlb_scratch, &zero)) &&
		    !parse_tcp_opts(p.opts, p.opt_len, p.end, p.o) && leg_unserved(&p, leg)) {
			/* The client closed with its request unserved: its FIN is
			 * answered (and its request dropped), else it would wait
			 * in FIN-WAIT-1 for a worker leg that may never come. */
			return send_reply(&p, leg, READ_ONCE(leg->snd_nxt) - 1, REPLY_ACK | REPLY_FIN);
		}
		if (reason)
			return drop(reason);
		if ((cfg->flags & CFG_KEEP_HTTP10) && keep_request(&p, leg))
			return drop(XLB_CNT_BIND_RACE);
		return reenter(ctx, bs);
	}

	if (stage == STAGE_MAIN && !leg && !(p.syn && p.has_ack) && !is_service(&p, cfg) &&
	    !(p.rst || (p.has_ack && !p.payload))) {
		/* Foreign traffic to a port a worker leg once had: nothing
		 * more to look at (no_leg would say the same). A RST or a pure
		 * ACK there may answer a SYN user space sent (dialed()). */
		count(XLB_CNT_FOREIGN);
		return verdict(XDP_PASS);
	}
	if (stage == STAGE_MAIN && (!leg || p.syn || p.rst || p.fin)) {
		/* Handshakes, new legs, resets, closes: xlb_slow's, which
		 * parses the options itself. */
		bpf_tail_call(ctx, &xlb_progs, PROG_SLOT(XLB_PROG_SLOW));
		/* A packet of no leg (every SYN-ACK on the interface, to learn
		 * dialed ones) goes to the stack when the slow program is
		 * missing: a program whose prog array was emptied (its pins
		 * lost, the process gone) must not cut the host's own TCP. */
		count(XLB_CNT_TAIL_FAIL);
		return verdict(leg ? XDP_DROP : XDP_PASS);
	}
	/* xlb_xlate does not need the parse (xlb_slow judged the options),
	 * but without it translate() costs the verifier more than its budget:
	 * the parse leaves its results in map memory, which the verifier does
	 * not track, and that keeps the option walk's states few. */
	p.o = bpf_map_lookup_elem(&xlb_scratch, &zero);
	if (!p.o)
		return verdict(XDP_PASS);
	p.bad_opts = parse_tcp_opts(p.opts, p.opt_len, p.end, p.o) != 0;
	if (stage == STAGE_MAIN)
		return fast_path(&p, leg, cfg, reentry);
	if (stage == STAGE_XLATE)
		return translate_forward(&p, bpf_map_lookup_elem(&xlb_binds, &p.key), cfg, NULL);
	return slow_path(&p, leg, cfg);
}

SEC("xdp")
int XLB_PROG(xlb_xdp)(struct xdp_md *ctx)
{
	return run(ctx, STAGE_MAIN);
}

/* The bind program: reached only by tail calls. */
SEC("xdp/bind")
int XLB_PROG(xlb_bind)(struct xdp_md *ctx)
{
	return run(ctx, STAGE_BIND);
}

/* The translation of what xlb_slow decided to forward. */
SEC("xdp/xlate")
int XLB_PROG(xlb_xlate)(struct xdp_md *ctx)
{
	return run(ctx, STAGE_XLATE);
}

/* The slow program: reached only by the tail call of xlb_xdp. */
SEC("xdp/slow")
int XLB_PROG(xlb_slow)(struct xdp_md *ctx)
{
	return run(ctx, STAGE_SLOW);
}

#if XLB_FAMILY == 4 /* one control program, of the IPv4 object: its commands name legs of either family */

/* ctl_leg is one leg of a CTL_FORGET or CTL_POOL run: enum ctl_done.
 *
 * CTL_FORGET: a finished leg whose linger is over (or one stuck closing)
 * goes, with its binding, if it is still that leg (at the position it was
 * reported at, arg): a client reconnecting from the same port makes a new
 * leg under the same key, which a lookup and a delete of user space's, two
 * system calls apart, could delete. Here the check and the delete are one
 * run, shorter than the new connection's handshake.
 *
 * CTL_POOL: a worker leg user space just registered (LEG_NEW), or a dialed
 * one it saw made, goes into the pool of worker arg, counted idle: through
 * here rather than a map push from user space, so that the idle count
 * stays exact (the leg may die before it is pooled). */
static __always_inline __u32 ctl_leg(__u32 op, const struct leg_key *k, __u32 arg, const struct xlb_config *cfg)
{
	struct leg *l = bpf_map_lookup_elem(&xlb_legs, k);
	__u32 st;

	if (!l)
		return CTL_NO_LEG;
	if (op == CTL_POOL)
		return l->kind == LEG_WORKER && l->worker == arg && set_state(l, LEG_NEW, LEG_IDLE) &&
		       !pool_new(k, l, cfg) ? CTL_DONE : CTL_REFUSED;
	st = READ_ONCE(l->state);
	if ((st != LEG_DEAD && st != LEG_CLOSING) || READ_ONCE(l->peer_hi) != arg)
		return CTL_REFUSED;
	bpf_map_delete_elem(&xlb_binds, k);
	bpf_map_delete_elem(&xlb_legs, k);
	return CTL_DONE;
}

/* The control program: never attached; user space runs it with
 * BPF_PROG_TEST_RUN on a struct ctl_msg (see there). Idle release is two
 * commands with an RCU grace period between them (user space updates
 * xlb_sync): after CTL_PARK no packet forwards new client data to the
 * worker leg, and after the grace period no packet still being processed
 * read the leg before it was parked; only then may CTL_RELEASE hand the
 * worker leg to another client. */
SEC("xdp/ctl")
int xlb_ctl(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ctl_msg *m = data;
	struct xlb_config *cfg;
	struct leg_key k, wk;
	struct binding *b, *bw;
	struct leg *c, *w;

	if ((void *)(m + 1) > data_end)
		return XDP_DROP;
	if (m->op == CTL_WARM) {
		cfg = config();
		if (!cfg || !warm_up(cfg, XLB_COOL_MOVES_CTL))
			return XDP_DROP;
		return XDP_PASS; /* more may be due: run again */
	}
	if (m->op == CTL_FORGET || m->op == CTL_POOL) {
		struct ctl_item *it = (void *)(m + 1);
		int done;

		cfg = config();
		if (!cfg)
			return XDP_DROP;
		done = ctl_leg(m->op, &m->key, m->op == CTL_POOL ? m->worker : m->peer_hi, cfg) == CTL_DONE;
		for (__u32 i = 0; i < XLB_CTL_ITEMS; i++, it++) {
			if (i >= m->items || (void *)(it + 1) > data_end)
				break;
			it->done = ctl_leg(m->op, &it->key, it->arg, cfg);
		}
		return done ? XDP_PASS : XDP_DROP;
	}
	if (m->op == CTL_RETIRE_IDLE) {
		/* A draining worker's idle legs, and a pool's surplus (its
		 * trim credits), are retired as pops meet them; when nothing
		 * pops the pool (no traffic, or a policy that no longer
		 * schedules it), user space retires them with this, an entry a
		 * run: XDP_PASS while there was one. */
		void *q = worker_pool(m->worker);

		if (!q || !should_retire(m->worker, 1) || bpf_map_pop_elem(q, &k))
			return XDP_DROP;
		w = bpf_map_lookup_elem(&xlb_legs, &k);
		if (w && w->kind == LEG_WORKER)
			retire(&k, w, LEG_IDLE); /* a stale entry of a leg in use stays as it is */
		return XDP_PASS;
	}
	k = m->key;
	cfg = config();
	c = bpf_map_lookup_elem(&xlb_legs, &k);
	b = bpf_map_lookup_elem(&xlb_binds, &k);
	if (!cfg || !c || !b || c->kind != LEG_CLIENT)
		return XDP_DROP;
	wk = b->to;
	w = bpf_map_lookup_elem(&xlb_legs, &wk);
	if (!w)
		return XDP_DROP;
	switch (m->op) {
	case CTL_PARK:
		if (READ_ONCE(c->state) != LEG_BOUND || READ_ONCE(w->state) != LEG_BOUND ||
		    !quiescent(c, b, w, m->min_idle_ns))
			return XDP_DROP;
		return set_state(c, LEG_BOUND, LEG_PARKED) ? XDP_PASS : XDP_DROP;
	case CTL_RELEASE:
		if (READ_ONCE(c->state) != LEG_PARKED)
			return XDP_DROP;
		bw = bpf_map_lookup_elem(&xlb_binds, &wk);
		if (!bw || READ_ONCE(w->state) != LEG_BOUND || !quiescent(c, b, w, 0)) {
			/* Something moved meanwhile (the worker talked, a FIN):
			 * the pair goes on as it was. */
			set_state(c, LEG_PARKED, LEG_BOUND);
			return XDP_DROP;
		}
		if (READ_ONCE(w->req_ns))
			log_end(w, &k, &wk, REQ_END_RELEASE, c->requests);
		materialize(c, b, w, 0);
		materialize(w, bw, c, rest_win(cfg, w));
		bpf_map_delete_elem(&xlb_binds, &wk);
		bpf_map_delete_elem(&xlb_binds, &k);
		give_back(&wk, w, cfg);
		set_state(c, LEG_PARKED, LEG_IDLE);
		count(XLB_CNT_RELEASED);
		return XDP_PASS;
	case CTL_UNPARK:
		return set_state(c, LEG_PARKED, LEG_BOUND) ? XDP_PASS : XDP_DROP;
	}
	return XDP_DROP;
}

#endif

char _license[] SEC("license") = "GPL";
