/* SPDX-License-Identifier: GPL-2.0 */
/* Puts every struct and enum of structs.h that user space mirrors into the
 * object's BTF. clang writes BTF only for the types of global variables and of
 * function arguments; the data plane uses these types only in inlined code and
 * through legacy map definitions (sizes, not types), so without this anchor
 * they would not be there. kern/gen reads them from xlb.o to write
 * kern/zlayout.go (sizes, offsets, enum values): a struct or enum that Go
 * mirrors gets a member here, and a row in kern/internal/layoutgen's tables.
 *
 * The anchor is one pointer in a section of its own. No program refers to
 * it, so the loader makes no map of it and the programs do not change; it
 * costs 8 bytes of the ELF file and about 5.5 KB of BTF. */
#ifndef XLB_ANCHORS_H
#define XLB_ANCHORS_H

#include "bpf_helpers.h"
#include "structs.h"

struct xlb_shared {
	/* By value: clang writes a struct that a member points to as a forward
	 * declaration only. Nothing of this size is ever allocated. */
	struct leg_key leg_key;
	struct leg leg;
	struct binding binding;
	struct handshake handshake;
	struct endpoint endpoint;
	struct worker_info worker_info;
	struct worker_cfg worker_cfg;
	struct worker_load worker_load;
	struct worker_stats worker_stats;
	struct xlb_config xlb_config;
	struct ctl_msg ctl_msg;
	struct ctl_item ctl_item;
	struct xlb_event xlb_event;
	struct cooling cooling;
	struct held_hdr held_hdr;
	struct req_record req_record;
	/* enums, each with every constant */
	enum xlb_counter xlb_counter;
	enum leg_kind leg_kind;
	enum leg_state leg_state;
	enum leg_opt leg_opt;
	enum leg_rx_flag leg_rx_flag;
	enum xlb_proto xlb_proto;
	enum pin_reason pin_reason;
	enum leg_tail leg_tail;
	enum binding_flag binding_flag;
	enum worker_flag worker_flag;
	enum cfg_protocol cfg_protocol;
	enum config_flag config_flag;
	enum hs_flag hs_flag;
	enum xlb_policy xlb_policy;
	enum ctl_op ctl_op;
	enum ctl_done ctl_done;
	enum event_type event_type;
	enum req_end req_end;
};

struct xlb_shared *xlb_shared SEC(".anchors");

#endif
