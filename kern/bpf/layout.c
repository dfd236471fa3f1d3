/* SPDX-License-Identifier: GPL-2.0 */
/* Not part of the data plane: kern/kern_test.go compiles this file and reads
 * xlb_layout to check that the Go mirror of structs.h has the same sizes and
 * offsets. The order of the entries is the order of layoutTable in the test. */
#include "structs.h"

#define OFF(s, f) __builtin_offsetof(struct s, f)

const unsigned int xlb_layout[] = {
	sizeof(struct leg_key), OFF(leg_key, local_addr), OFF(leg_key, peer_port), OFF(leg_key, local_port), OFF(leg_key, family),
	sizeof(struct leg), OFF(leg, worker), OFF(leg, win_bound), OFF(leg, peer_hi), OFF(leg, requests),
	OFF(leg, snd_nxt), OFF(leg, snd_win), OFF(leg, state), OFF(leg, last_ns),
	sizeof(struct binding), OFF(binding, seq_off), OFF(binding, tsecr_off), OFF(binding, in_wscale),
	OFF(binding, flags), OFF(binding, worker), OFF(binding, ifindex),
	sizeof(struct worker_stats), OFF(worker_stats, requests), OFF(worker_stats, bytes_out),
	sizeof(struct handshake), OFF(handshake, peer_mss), OFF(handshake, peer_wscale), OFF(handshake, our_isn), OFF(handshake, ns),
	sizeof(struct endpoint), OFF(endpoint, port), OFF(endpoint, family),
	sizeof(struct worker_info),
	sizeof(struct xlb_config), OFF(xlb_config, listen_port), OFF(xlb_config, our_wscale), OFF(xlb_config, our_mss),
	sizeof(struct xlb_event), OFF(xlb_event, key), OFF(xlb_event, worker), OFF(xlb_event, peer_hi),
	OFF(xlb_event, peer_wscale), OFF(xlb_event, peer_mss),
	LEG_CLIENT, LEG_WORKER, LEG_IDLE, LEG_BOUND, LEG_CLOSING, LEG_DEAD, LEG_PARKED,
	LEG_OPT_TS, LEG_OPT_SACK, LEG_OPT_WSCALE, LEG_OPT_PEER_TS, LEG_RX_FIN, LEG_RX_RST,
	BIND_TO_CLIENT, WORKER_DRAIN, CFG_ROUTED,
	EV_CLIENT_LEG, EV_LEG_CLOSED, EV_POOL_EMPTY,
	sizeof(struct worker_cfg), OFF(worker_cfg, trim), OFF(worker_cfg, weight),
	OFF(xlb_config, policy), OFF(xlb_config, sched_len),
	POLICY_JIQ, POLICY_RR, POLICY_LEAST, POLICY_STICKY,
	sizeof(struct ctl_msg), OFF(ctl_msg, min_idle_ns), OFF(ctl_msg, key), CTL_PARK, CTL_RELEASE, CTL_UNPARK, CTL_RETIRE_IDLE, OFF(ctl_msg, worker),
	sizeof(struct worker_load),
	OFF(leg, sent_hi), OFF(leg, pin), OFF(leg, proto), OFF(leg, tail), OFF(binding, proto), OFF(xlb_config, protocol),
	PROTO_NONE, PROTO_HTTP, PROTO_RESP, PROTO_MEMCACHE, PROTO_OPAQUE,
	PIN_TLS, PIN_UPGRADE, PIN_INTERIM, PIN_PIPELINED, PIN_NOT_MSG, PIN_RAW, PIN_UNKNOWN, PIN_STATEFUL,
	CFG_PROTO_AUTO, CFG_PROTO_HTTP, CFG_PROTO_RESP, CFG_PROTO_MEMCACHE, CFG_PROTO_RAW, TAIL_PSH, TAIL_CRLF,
	XLB_CNT_PIN_TLS, XLB_CNT_STAY_TAIL, XLB_CNT_MAX,
};
