package splice

import (
	"net/netip"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/kern"
	"golang.org/x/sys/unix"
)

func reapItemN(i int, at time.Time) reapItem {
	return reapItem{key: kern.LegKey{Peer: netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(i))}, at: at, peerHi: uint32(i)}
}

// TestReapQueue: first in, first out across growth, wrap-around and
// shrinking; popDue stops at the first item not yet due.
func TestReapQueue(t *testing.T) {
	var q reapQueue
	t0 := time.Now()
	next, want := 0, 0 // pushed, popped
	check := func(it reapItem) {
		t.Helper()
		if int(it.peerHi) != want {
			t.Fatalf("popped item %d, want %d", it.peerHi, want)
		}
		want++
	}
	// Interleave pushes and pops so the ring wraps, then grow it well past
	// its first size, then drain most of it (it shrinks) and refill.
	rounds := []int{100, 300, 2000, 10, 5000}
	for round, push := range rounds {
		for range push {
			q.push(reapItemN(next, t0.Add(time.Duration(next)*time.Millisecond)))
			next++
		}
		pop := q.len() * 3 / 4
		if round == len(rounds)-1 {
			pop = q.len()
		}
		for range pop {
			check(q.pop())
		}
		if q.len() != next-want {
			t.Fatalf("round %d: len %d, want %d", round, q.len(), next-want)
		}
		var seen []uint32
		q.each(func(it reapItem) { seen = append(seen, it.peerHi) })
		for i, v := range seen {
			if int(v) != want+i {
				t.Fatalf("round %d: each: item %d is %d, want %d", round, i, v, want+i)
			}
		}
	}
	if len(q.buf) > 8192 {
		t.Errorf("ring of %d after draining %d items: grew without bound", len(q.buf), next)
	}

	// popDue: items due up to now, in order, the rest stay; the ring
	// shrinks back once mostly empty.
	base := want
	for i := range 3000 {
		q.push(reapItemN(base+i, t0.Add(time.Duration(i)*time.Millisecond)))
	}
	big := len(q.buf)
	due := q.popDue(t0.Add(2999*time.Millisecond-time.Microsecond), nil) // items 0..2998 at t0+i ms
	if len(due) != 2999 || q.len() != 1 {
		t.Fatalf("popDue took %d and left %d, want 2999 and 1", len(due), q.len())
	}
	for i, it := range due {
		if int(it.peerHi) != base+i {
			t.Fatalf("popDue item %d is %d, want %d", i, it.peerHi, base+i)
		}
	}
	if len(q.buf) >= big {
		t.Errorf("ring stayed at %d entries holding one item", len(q.buf))
	}
	if got := q.popDue(t0, nil); len(got) != 0 {
		t.Fatalf("popDue before anything is due took %d", len(got))
	}
}

// TestFineNs: fineNs (no system call) reads CLOCK_MONOTONIC, as the data
// plane's bpf_ktime_get_ns.
func TestFineNs(t *testing.T) {
	for range 100 {
		a := clockNs(unix.CLOCK_MONOTONIC)
		f := fineNs()
		b := clockNs(unix.CLOCK_MONOTONIC)
		// fineNs's base was read just before the runtime's: it may be
		// behind by that gap, never ahead.
		if f+uint64(time.Millisecond) < a || f > b {
			t.Fatalf("fineNs %d outside [%d-1ms, %d]", f, a, b)
		}
	}
}
