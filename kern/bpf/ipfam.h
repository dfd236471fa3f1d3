/* SPDX-License-Identifier: GPL-2.0 */
/* The IP layer of the data plane, for one address family. xlb.c is built
 * twice (Makefile): as is for IPv4 (xlb.o), and with -DXLB_FAMILY=6 for IPv6
 * (xlb6.o, whose programs are named with a 6 and take the tail-call slots
 * after IPv4's). Everything above this header is the same TCP code: a leg's
 * key, its binding and its positions do not depend on the family, only
 * where the addresses sit, how many words they have, and what the checksums
 * cover. IPv4's xlb_xdp hands IPv6 frames to xlb_xdp6 (one tail call); both
 * use the same maps (user space loads xlb6.o with xlb.o's maps). */
#ifndef XLB_IPFAM_H
#define XLB_IPFAM_H

#include <linux/types.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/in6.h>
#include "bpf_helpers.h"
#include "csum.h"

#ifndef XLB_FAMILY
#define XLB_FAMILY 4
#endif

#define XLB_AF_INET6 10
#define XLB_PROGS_PER_FAMILY 4 /* tail-call slots of one family: BIND, MAIN, SLOW, XLATE */

#if XLB_FAMILY == 6
typedef struct ipv6hdr ip_t;
#define XLB_AF XLB_AF_INET6
#define XLB_ETH_P ETH_P_IPV6
#define IP_HDR_LEN 40  /* the fixed header; extension headers come after it */
#define ADDR_WORDS 4
#define PROG_SLOT(s) ((s) + XLB_PROGS_PER_FAMILY)
#define XLB_PROG(name) name##6
#define ip_src(ip) ((ip)->saddr.in6_u.u6_addr32)
#define ip_dst(ip) ((ip)->daddr.in6_u.u6_addr32)
#else
typedef struct iphdr ip_t;
#define XLB_AF 2 /* AF_INET */
#define XLB_ETH_P ETH_P_IP
#define IP_HDR_LEN 20  /* without options */
#define ADDR_WORDS 1
#define PROG_SLOT(s) (s)
#define XLB_PROG(name) name
#define ip_src(ip) (&(ip)->saddr)
#define ip_dst(ip) (&(ip)->daddr)
#endif

/* ip_plain: the header has no options (IPv4) or extension headers (IPv6):
 * the program makes its own answers only from such packets. */
#if XLB_FAMILY == 6
#define ip_plain(p) ((p)->ip->nexthdr == IPPROTO_TCP)
#define ip_hdr_len(p) IP_HDR_LEN /* parse_ip takes no extension headers */
#else
#define ip_plain(p) ((p)->ip->ihl == 5)
#define ip_hdr_len(p) ((__u32)(p)->ip->ihl * 4)
#endif

/* ip_tot_len: the datagram's length from the start of the IP header. */
static __always_inline __u32 ip_tot_len(const ip_t *ip)
{
#if XLB_FAMILY == 6
	return IP_HDR_LEN + bpf_ntohs(ip->payload_len);
#else
	return bpf_ntohs(ip->tot_len);
#endif
}

/* ip_set_tot_len sets the datagram's length (a header without options or
 * extension headers: the only kind the program rewrites the length of). */
static __always_inline void ip_set_tot_len(ip_t *ip, __u32 len)
{
#if XLB_FAMILY == 6
	ip->payload_len = bpf_htons(len - IP_HDR_LEN);
#else
	ip->tot_len = bpf_htons(len);
#endif
}

/* ip_finish completes a header the program wrote fields of: IPv4's header
 * checksum (IPv6 has none). */
static __always_inline void ip_finish(ip_t *ip)
{
#if XLB_FAMILY == 4
	ip->check = csum_ipv4_header(ip);
#endif
}

/* ip_unlabel clears IPv6's flow label: a segment the program translates or
 * makes goes on a connection of ours whose packets come from many clients
 * in turn, and a path that hashes on the label must see one flow, not one
 * per client (RFC 6437 lets a node send 0). IPv4: nothing. Not covered by
 * any checksum. */
static __always_inline void ip_unlabel(ip_t *ip)
{
#if XLB_FAMILY == 6
	ip->flow_lbl[0] &= 0xf0;
	ip->flow_lbl[1] = 0;
	ip->flow_lbl[2] = 0;
#endif
}

/* ip_fresh gives a header the program makes for its own answer what a
 * host's stack would: TTL or hop limit 64, no label; IPv4 no id, DF. */
static __always_inline void ip_fresh(ip_t *ip)
{
#if XLB_FAMILY == 6
	ip->hop_limit = 64;
#else
	ip->ttl = 64;
	ip->id = 0;
	ip->frag_off = bpf_htons(0x4000);
#endif
	ip_unlabel(ip);
}

/* ip_set_addrs sets the source and destination (ADDR_WORDS words each,
 * network order). Checksums are the caller's: translate() folds the change
 * into them, answers are summed whole. */
static __always_inline void ip_set_addrs(ip_t *ip, const __be32 *saddr, const __be32 *daddr)
{
	__be32 *s = ip_src(ip), *d = ip_dst(ip);

#pragma unroll
	for (int i = 0; i < ADDR_WORDS; i++) {
		s[i] = saddr[i];
		d[i] = daddr[i];
	}
}

/* ip_swap_addrs exchanges source and destination (a reply). */
static __always_inline void ip_swap_addrs(ip_t *ip)
{
	__be32 *s = ip_src(ip), *d = ip_dst(ip);

#pragma unroll
	for (int i = 0; i < ADDR_WORDS; i++) {
		__be32 t = s[i];

		s[i] = d[i];
		d[i] = t;
	}
}

/* Full TCP checksum of a segment without payload: pseudo header plus `len`
 * bytes of header (len <= 60, even). */
static __always_inline __u16 csum_tcp_full(ip_t *ip, void *tcp, __u32 len, void *end)
{
	__be32 *s4 = ip_src(ip), *d4 = ip_dst(ip);
	__u16 *w = tcp;
	__u32 s = 0;

#pragma unroll
	for (int i = 0; i < ADDR_WORDS; i++) {
		s += (s4[i] & 0xffff) + (s4[i] >> 16);
		s += (d4[i] & 0xffff) + (d4[i] >> 16);
	}
	s += bpf_htons(IPPROTO_TCP);
	s += bpf_htons((__u16)len);
	for (int i = 0; i < 30; i++) {
		if ((__u32)i * 2 >= len)
			break;
		if ((void *)(w + i + 1) > end)
			break;
		s += w[i];
	}
	return (__u16)~csum_fold(s);
}

#endif
