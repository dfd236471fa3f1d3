package kern_test

import (
	"testing"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
)

// TestTailCallMissing: with xlb_slow gone from the prog array (what becomes
// of an attached program whose array the kernel emptied: its pins lost,
// its process gone), a packet of no leg that would go there (every SYN-ACK
// on the interface) reaches the stack, counted tail_fail: the host's own
// connections keep working. A packet of a leg is dropped, as the leg's
// positions can no longer be kept.
func TestTailCallMissing(t *testing.T) {
	d := loadDataPlane(t)
	slot, slow := ebpf.Uint32Key(kern.ProgSlowSlot), d.objs.Slow
	if family6 {
		slot, slow = ebpf.Uint32Key(kern.ProgSlots6+kern.ProgSlowSlot), d.objs.Slow6
	}
	if err := d.objs.Progs.Delete(slot); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.objs.Progs.Update(slot, ebpf.Uint32Key(uint32(slow.FD())), ebpf.UpdateAny); err != nil {
			t.Fatalf("restoring xlb_slow in the prog array: %v", err)
		}
	})

	synack := seg{src: mustAddrPort("10.9.0.2:443"), dst: mustAddrPort("10.9.0.1:40000"), seq: 1000, ack: 2001,
		flags: tcpSYN | tcpACK, win: 65160}
	v, _, delta := d.run(synack.build())
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterTailFail, kern.CounterPass)

	// A client leg's FIN needs xlb_slow too: without it, dropped.
	d.putLeg(clientKey, stdClientLeg())
	fin := fromClient(seg{seq: stdClientLeg().PeerHi, ack: stdClientLeg().SndNxt, flags: tcpFIN | tcpACK, win: 400})
	v, _, delta = d.run(fin.build())
	checkVerdict(t, v, xdpDrop)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterTailFail, kern.CounterDrop)
}
