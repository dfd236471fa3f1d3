/* SPDX-License-Identifier: GPL-2.0 */
#ifndef XLB_MAPS_H
#define XLB_MAPS_H

#include "bpf_helpers.h"
#include "structs.h"

/* Per-CPU counters indexed by enum xlb_counter; user space sums the CPUs. */
struct xlb_map_def SEC("maps") xlb_stats = {
	.type = BPF_MAP_TYPE_PERCPU_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = XLB_CNT_MAX,
};

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&xlb_stats, &idx);

	/* Always non-NULL for idx < XLB_CNT_MAX; the check is for the verifier. */
	if (v)
		*v += 1; /* per-CPU slot: no other CPU writes it */
}

#endif
