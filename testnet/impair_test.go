package testnet

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// frameN is a numbered test frame.
func frameN(i int) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, uint32(i))
	return b
}

func numOf(f []byte) int { return int(binary.BigEndian.Uint32(f)) }

// runImpairer pushes n numbered frames one step apart and drains everything,
// returning the numbers delivered in order.
func runImpairer(cfg Impairment, n int, step time.Duration) ([]int, Stats) {
	im := newImpairer(cfg)
	now := time.Unix(1000, 0)
	var out []int
	collect := func() {
		for _, f := range im.due(now) {
			out = append(out, numOf(f))
		}
	}
	for i := 0; i < n; i++ {
		im.push(now, frameN(i))
		collect()
		now = now.Add(step)
	}
	// Drain: bounded by the longest hold or delay.
	for i := 0; i < 1000; i++ {
		next, ok := im.next()
		if !ok {
			break
		}
		if next.After(now) {
			now = next
		}
		collect()
	}
	return out, im.stats
}

func TestImpairNone(t *testing.T) {
	out, st := runImpairer(Impairment{}, 1000, 0)
	if len(out) != 1000 || st.Out != 1000 || st.In != 1000 {
		t.Fatalf("got %d frames (stats %+v), want 1000", len(out), st)
	}
	for i, n := range out {
		if n != i {
			t.Fatalf("frame %d delivered at position %d", n, i)
		}
	}
}

func TestImpairDeterministic(t *testing.T) {
	cfg := Impairment{Drop: 0.1, Duplicate: 0.1, Reorder: 0.1, Seed: 42}
	a, sa := runImpairer(cfg, 2000, time.Millisecond)
	b, sb := runImpairer(cfg, 2000, time.Millisecond)
	if !slices.Equal(a, b) || sa != sb {
		t.Fatalf("the same seed gave different runs: %+v vs %+v", sa, sb)
	}
	cfg.Seed = 43
	c, _ := runImpairer(cfg, 2000, time.Millisecond)
	if slices.Equal(a, c) {
		t.Fatal("seeds 42 and 43 gave the same run")
	}
}

func TestImpairDrop(t *testing.T) {
	const n = 100000
	for _, p := range []float64{0.01, 0.02, 0.3} {
		out, st := runImpairer(Impairment{Drop: p, Seed: 7}, n, 0)
		rate := float64(st.Dropped) / n
		if math.Abs(rate-p) > 0.01 {
			t.Errorf("drop %.2f: dropped %.4f of frames", p, rate)
		}
		if uint64(len(out)) != n-st.Dropped || st.Out != uint64(len(out)) {
			t.Errorf("drop %.2f: %d delivered, %d dropped of %d (stats %+v)", p, len(out), st.Dropped, n, st)
		}
		if !slices.IsSorted(out) {
			t.Errorf("drop %.2f: order changed", p)
		}
	}
}

func TestImpairDuplicate(t *testing.T) {
	const n = 50000
	out, st := runImpairer(Impairment{Duplicate: 0.01, Seed: 9}, n, 0)
	if rate := float64(st.Duplicated) / n; math.Abs(rate-0.01) > 0.005 {
		t.Errorf("duplicated %.4f of frames, want about 0.01", rate)
	}
	if uint64(len(out)) != n+st.Duplicated {
		t.Fatalf("%d delivered, want %d + %d copies", len(out), n, st.Duplicated)
	}
	// Copies follow their original directly; nothing else changes.
	dups := 0
	for i := 1; i < len(out); i++ {
		if out[i] == out[i-1] {
			dups++
		} else if out[i] != out[i-1]+1 {
			t.Fatalf("frame %d follows %d", out[i], out[i-1])
		}
	}
	if uint64(dups) != st.Duplicated {
		t.Errorf("%d adjacent copies, stats say %d", dups, st.Duplicated)
	}
}

func TestImpairReorder(t *testing.T) {
	const n, k = 20000, 3
	out, st := runImpairer(Impairment{Reorder: 0.05, ReorderAfter: k, Seed: 11}, n, 0)
	if len(out) != n {
		t.Fatalf("%d frames delivered, want %d", len(out), n)
	}
	if got := slices.Sorted(slices.Values(out)); !slices.Equal(got, seq(n)) {
		t.Fatal("frames lost or duplicated by reordering")
	}
	if rate := float64(st.Reordered) / n; rate < 0.03 || rate > 0.07 {
		t.Errorf("reordered %.4f of frames, want about 0.05", rate)
	}
	// Every frame out of place is late, never early: it went after later
	// frames. Count the frames delivered after a higher-numbered one.
	late, hi := 0, -1
	for _, x := range out {
		if x < hi {
			late++
		}
		hi = max(hi, x)
	}
	if uint64(late) != st.Reordered {
		t.Errorf("%d frames arrived late, stats say %d reordered", late, st.Reordered)
	}
}

// A held frame that nothing follows (the sender waits for it) goes after
// MaxHold.
func TestImpairHoldExpires(t *testing.T) {
	im := newImpairer(Impairment{Reorder: 1, MaxHold: 20 * time.Millisecond})
	t0 := time.Unix(1000, 0)
	im.push(t0, frameN(1))
	if out := im.due(t0.Add(19 * time.Millisecond)); len(out) != 0 {
		t.Fatalf("held frame released after 19ms: %v", out)
	}
	if next, ok := im.next(); !ok || !next.Equal(t0.Add(20*time.Millisecond)) {
		t.Fatalf("next = %v %v, want t0+20ms", next, ok)
	}
	if out := im.due(t0.Add(20 * time.Millisecond)); len(out) != 1 || numOf(out[0]) != 1 {
		t.Fatalf("held frame not released after MaxHold: %v", out)
	}
	if im.stats.Reordered != 0 {
		t.Errorf("a frame released by time, with nothing overtaking it, counted as reordered")
	}
}

func TestImpairDelay(t *testing.T) {
	im := newImpairer(Impairment{Delay: 5 * time.Millisecond})
	t0 := time.Unix(1000, 0)
	im.push(t0, frameN(1))
	im.push(t0.Add(time.Millisecond), frameN(2))
	if out := im.due(t0.Add(4 * time.Millisecond)); len(out) != 0 {
		t.Fatalf("delivered before its delay: %v", out)
	}
	if next, _ := im.next(); !next.Equal(t0.Add(5 * time.Millisecond)) {
		t.Fatalf("next = %v, want t0+5ms", next)
	}
	if out := im.due(t0.Add(5 * time.Millisecond)); len(out) != 1 || numOf(out[0]) != 1 {
		t.Fatalf("at t0+5ms got %v, want frame 1", out)
	}
	if out := im.due(t0.Add(6 * time.Millisecond)); len(out) != 1 || numOf(out[0]) != 2 {
		t.Fatalf("at t0+6ms got %v, want frame 2", out)
	}
	if _, ok := im.next(); ok {
		t.Fatal("something still pending")
	}
}

func TestImpairQueueBounded(t *testing.T) {
	im := newImpairer(Impairment{Delay: time.Second})
	t0 := time.Unix(1000, 0)
	for i := 0; i < maxQueued+10; i++ {
		im.push(t0, frameN(i))
	}
	if im.stats.Overflow != 10 || len(im.queue) != maxQueued {
		t.Fatalf("queue %d, overflow %d; want %d and 10", len(im.queue), im.stats.Overflow, maxQueued)
	}
}

func TestPcapFormat(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pcap")
	p, err := newPcapWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Unix(1700000000, 123456000)
	frames := [][]byte{make([]byte, 60), make([]byte, 1514)}
	frames[1][0] = 0xab
	for _, f := range frames {
		if err := p.write(ts, f); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if len(b) != 24+16+60+16+1514 {
		t.Fatalf("file is %d bytes", len(b))
	}
	if le.Uint32(b) != pcapMagic || le.Uint16(b[4:]) != 2 || le.Uint16(b[6:]) != 4 || le.Uint32(b[20:]) != 1 {
		t.Fatalf("bad global header % x", b[:24])
	}
	r := b[24:]
	if le.Uint32(r) != 1700000000 || le.Uint32(r[4:]) != 123456 || le.Uint32(r[8:]) != 60 || le.Uint32(r[12:]) != 60 {
		t.Fatalf("bad record header % x", r[:16])
	}
	r = r[16+60:]
	if le.Uint32(r[8:]) != 1514 || r[16] != 0xab {
		t.Fatalf("bad second record % x", r[:17])
	}
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}
