/* SPDX-License-Identifier: GPL-2.0 */
/* Test program for map-in-map support: pops one value from the queue stored
 * at index 2 of the array of maps "outer"; XDP_PASS if a value was popped,
 * XDP_DROP if the slot is empty or the queue is. "outer_inner" is the inner
 * map template (see resolveInnerMaps in elf.go). Built by `make` (or by the
 * test) with clang $(BPF_CFLAGS). */
#include "bpf_helpers.h"
#include "structs.h"

#define VALUE_SIZE 40

struct xlb_map_def SEC("maps") outer = {
	.type = BPF_MAP_TYPE_ARRAY_OF_MAPS,
	.key_size = 4,
	.value_size = 4,
	.max_entries = 4,
};

struct xlb_map_def SEC("maps") outer_inner = {
	.type = BPF_MAP_TYPE_QUEUE,
	.value_size = VALUE_SIZE,
	.max_entries = 8,
};

SEC("xdp")
int mapinmap_xdp(struct xdp_md *ctx)
{
	__u32 key = 2;
	__u8 value[VALUE_SIZE];
	void *queue;

	queue = bpf_map_lookup_elem(&outer, &key);
	if (!queue)
		return XDP_DROP;
	if (bpf_map_pop_elem(queue, value))
		return XDP_DROP;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
