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
#include "ipfam.h"

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
	return h->h_proto == bpf_htons(XLB_ETH_P) ? PARSE_OK : PARSE_OTHER;
}

#if XLB_FAMILY == 6
/* parse_ip (IPv6): TCP right after the fixed header. Extension headers are
 * not walked: anything but TCP there (hop-by-hop or destination options, a
 * fragment, routing, AH, ESP) is PARSE_OTHER, the stack's, counted not_tcp.
 * Walking them put TCP at a variable offset and multiplied the verifier's
 * paths by the number of headers walked (xlb_xdp6: 575k instructions with
 * three); TCP carries none in practice. *ip_len is IP_HDR_LEN. */
static __always_inline int parse_ip(struct cursor *c, ip_t **ip, __u32 *ip_len)
{
	struct ipv6hdr *h = c->pos;

	if ((void *)(h + 1) > c->end)
		return PARSE_MALFORMED;
	if (h->version != 6)
		return PARSE_MALFORMED;
	/* payload_len 0 with data is a jumbogram: never on our links. */
	if (c->pos + IP_HDR_LEN + bpf_ntohs(h->payload_len) > c->end)
		return PARSE_MALFORMED;
	*ip = h;
	*ip_len = IP_HDR_LEN;
	c->pos += IP_HDR_LEN;
	return h->nexthdr == IPPROTO_TCP ? PARSE_OK : PARSE_OTHER;
}
#else
/* parse_ip (IPv4): *ip_len is the header's length, options included. */
static __always_inline int parse_ip(struct cursor *c, ip_t **ip, __u32 *ip_len)
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
	*ip_len = hlen;
	if (h->protocol != IPPROTO_TCP)
		return PARSE_OTHER;
	/* Fragments carry no TCP header we could use. */
	if (h->frag_off & bpf_htons(0x3fff))
		return PARSE_OTHER;
	return PARSE_OK;
}
#endif

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
