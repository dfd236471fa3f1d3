/* SPDX-License-Identifier: GPL-2.0 */
/* xlb data plane: the XDP entry point. At this stage it classifies every packet
 * and passes it on, counting verdicts and packet classes per CPU; the splice
 * logic grows from here. */
#include "bpf_helpers.h"
#include "structs.h"
#include "maps.h"
#include "parsing.h"

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

SEC("xdp")
int xlb_xdp(struct xdp_md *ctx)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	struct ethhdr *eth;
	struct iphdr *ip;
	struct tcphdr *tcp;
	int r;

	r = parse_eth(&c, &eth);
	if (r != PARSE_OK) {
		count(r == PARSE_OTHER ? XLB_CNT_NOT_IPV4 : XLB_CNT_MALFORMED);
		return verdict(XDP_PASS);
	}
	r = parse_ipv4(&c, &ip);
	if (r != PARSE_OK) {
		count(r == PARSE_OTHER ? XLB_CNT_NOT_TCP : XLB_CNT_MALFORMED);
		return verdict(XDP_PASS);
	}
	r = parse_tcp(&c, &tcp);
	if (r != PARSE_OK) {
		count(XLB_CNT_MALFORMED);
		return verdict(XDP_PASS);
	}
	count(XLB_CNT_TCP);
	return verdict(XDP_PASS);
}

char _license[] SEC("license") = "GPL";
