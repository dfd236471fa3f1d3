package ebpf

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"
)

func loadRingbufProgram(t *testing.T) (*Program, *Map) {
	t.Helper()
	requireRoot(t)
	coll := loadCollection(t, ringbufObject(t), nil)
	return coll.Programs["ringbuf_xdp"], coll.Maps["events"]
}

func TestRingBufEvents(t *testing.T) {
	prog, events := loadRingbufProgram(t)
	if events.Type() != RingBuf {
		t.Fatalf("events is %s", events.Type())
	}
	r, err := NewRingBufReader(events)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	// More records than fit at once would be lost, so read as we go; the
	// total (3 rounds of 300 records of 24 bytes in a 16 KiB ring) wraps
	// around the end of the ring several times.
	n := 0
	for round := range 3 {
		var want [][]byte
		for i := range 300 {
			pkt := make([]byte, 64)
			for j := range pkt {
				pkt[j] = byte(round*7 + i + j)
			}
			res, err := prog.TestRun(&TestRunOptions{Data: pkt})
			if err != nil {
				t.Fatal(err)
			}
			if res.Return != 2 {
				t.Fatalf("run %d: verdict %d (ring full?)", n, res.Return)
			}
			want = append(want, pkt[:16])
			n++
			if len(want) == 100 || i == 299 {
				for k, w := range want {
					got, err := r.ReadTimeout(time.Second)
					if err != nil {
						t.Fatalf("round %d record %d: %v", round, k, err)
					}
					if !bytes.Equal(got, w) {
						t.Fatalf("round %d record %d: %x, want %x", round, k, got, w)
					}
				}
				want = want[:0]
			}
		}
	}
	if _, err := r.ReadTimeout(20 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read from empty ring: %v, want deadline exceeded", err)
	}
	// A deadline already past still returns a record that is there.
	pkt := bytes.Repeat([]byte{0x5a}, 64)
	if _, err := prog.TestRun(&TestRunOptions{Data: pkt}); err != nil {
		t.Fatal(err)
	}
	if got, err := r.ReadTimeout(0); err != nil || !bytes.Equal(got, pkt[:16]) {
		t.Fatalf("ReadTimeout(0) with a record waiting: %x, %v", got, err)
	}
}

func TestRingBufBlockingReadAndClose(t *testing.T) {
	prog, events := loadRingbufProgram(t)
	r, err := NewRingBufReader(events)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	// A blocked Read gets a record written later.
	got := make(chan []byte, 1)
	go func() {
		b, err := r.Read()
		if err != nil {
			t.Error(err)
		}
		got <- b
	}()
	time.Sleep(20 * time.Millisecond)
	pkt := bytes.Repeat([]byte{0xab}, 32)
	if _, err := prog.TestRun(&TestRunOptions{Data: pkt}); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, pkt[:16]) {
			t.Fatalf("record %x", b)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("blocked Read did not return the record")
	}

	start := time.Now()
	if _, err := r.ReadTimeout(50 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadTimeout: %v", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > time.Second {
		t.Errorf("ReadTimeout(50ms) took %v", d)
	}

	// Close wakes a blocked Read with ErrClosed.
	done := make(chan error, 1)
	go func() {
		_, err := r.Read()
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Read after Close: %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not wake the blocked Read")
	}
	if _, err := r.Read(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read on a closed reader: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestRingBufReaderWrongMap(t *testing.T) {
	m := newTestMap(t, MapSpec{Name: "not_a_ring", Type: Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if _, err := NewRingBufReader(m); err == nil {
		t.Fatal("ring buffer reader on an array")
	}
}
