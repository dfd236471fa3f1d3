/* SPDX-License-Identifier: GPL-2.0 */
/* Test program for ebpf.RingBufReader: copies the first 16 bytes of each
 * packet into the ring buffer "events". Built by `make` (or by the test) with
 * clang $(BPF_CFLAGS) -Ikern. */
#include "bpf_helpers.h"
#include "structs.h"

#define EVENT_SIZE 16

struct xlb_map_def SEC("maps") events = {
	.type = BPF_MAP_TYPE_RINGBUF,
	.max_entries = 4 * 4096,
};

SEC("xdp")
int ringbuf_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 event[EVENT_SIZE];

	if (data + EVENT_SIZE > data_end)
		return XDP_DROP;
	__builtin_memcpy(event, data, EVENT_SIZE);
	if (bpf_ringbuf_output(&events, event, sizeof(event), 0))
		return XDP_ABORTED;
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
