/* SPDX-License-Identifier: GPL-2.0 */
/* Header parsing with a cursor. Every parse_* checks that the whole header lies
 * before data_end before reading any of it, and validates variable lengths
 * (ihl, doff) against their minimum before using them. */
#ifndef XLB_PARSING_H
#define XLB_PARSING_H

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/in.h>
#include "bpf_helpers.h"

struct cursor {
	void *pos;
	void *end;
};

enum parse_result {
	PARSE_OK = 0,
	PARSE_OTHER,     /* a protocol we do not handle */
	PARSE_MALFORMED, /* truncated or inconsistent */
};

static __always_inline int parse_eth(struct cursor *c, struct ethhdr **eth)
{
	struct ethhdr *h = c->pos;

	if ((void *)(h + 1) > c->end)
		return PARSE_MALFORMED;
	c->pos = h + 1;
	*eth = h;
	return h->h_proto == bpf_htons(ETH_P_IP) ? PARSE_OK : PARSE_OTHER;
}

static __always_inline int parse_ipv4(struct cursor *c, struct iphdr **ip)
{
	struct iphdr *h = c->pos;
	__u32 hlen;

	if ((void *)(h + 1) > c->end)
		return PARSE_MALFORMED;
	if (h->version != 4 || h->ihl < 5)
		return PARSE_MALFORMED;
	hlen = h->ihl * 4;
	if (c->pos + hlen > c->end)
		return PARSE_MALFORMED;
	if (bpf_ntohs(h->tot_len) < hlen || c->pos + bpf_ntohs(h->tot_len) > c->end)
		return PARSE_MALFORMED;
	c->pos += hlen;
	*ip = h;
	if (h->protocol != IPPROTO_TCP)
		return PARSE_OTHER;
	/* Fragments carry no TCP header we could use. */
	if (h->frag_off & bpf_htons(0x3fff))
		return PARSE_OTHER;
	return PARSE_OK;
}

static __always_inline int parse_tcp(struct cursor *c, struct tcphdr **tcp)
{
	struct tcphdr *h = c->pos;
	__u32 hlen;

	if ((void *)(h + 1) > c->end)
		return PARSE_MALFORMED;
	if (h->doff < 5)
		return PARSE_MALFORMED;
	hlen = h->doff * 4;
	if (c->pos + hlen > c->end)
		return PARSE_MALFORMED;
	c->pos += hlen;
	*tcp = h;
	return PARSE_OK;
}

#endif
