package ebpf

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// fakeRing is a RingBufReader over Go memory laid out like the kernel's
// mapping: the data area appears twice in a row.
type fakeRing struct {
	r    *RingBufReader
	size uint64
	prod uint64
}

func newFakeRing(size, start uint64) *fakeRing {
	const page = 4096
	producer := make([]byte, page+2*size)
	r := &RingBufReader{mapName: "fake", consumer: make([]byte, page), producer: producer,
		data: producer[page:], mask: size - 1}
	binary.NativeEndian.PutUint64(r.consumer, start)
	binary.NativeEndian.PutUint64(r.producer, start)
	return &fakeRing{r: r, size: size, prod: start}
}

// write appends a record with the given header flags, as the kernel does.
func (f *fakeRing) write(payload []byte, flags uint32) {
	rec := binary.NativeEndian.AppendUint32(nil, uint32(len(payload))|flags)
	rec = binary.NativeEndian.AppendUint32(rec, 0)
	rec = append(rec, payload...)
	for len(rec)%ringbufAlign != 0 {
		rec = append(rec, 0)
	}
	for i, b := range rec {
		off := (f.prod + uint64(i)) & (f.size - 1)
		f.r.data[off], f.r.data[off+f.size] = b, b
	}
	f.prod += uint64(len(rec))
	binary.NativeEndian.PutUint64(f.r.producer, f.prod)
}

func TestRingBufRecordParsing(t *testing.T) {
	// Start 8 bytes before the end: the first record wraps, header at the end
	// of the ring and payload at its start.
	f := newFakeRing(4096, 3*4096-8)
	f.write([]byte("first wraps"), 0)
	f.write([]byte("discarded record"), ringbufDiscardBit)
	f.write([]byte("third"), 0)
	f.write([]byte("reserved"), ringbufBusyBit)

	buf := make([]byte, 0, 64)
	for i, want := range []string{"first wraps", "third"} {
		var dst []byte
		if i == 1 {
			dst = buf // TryReadAppend's: the record lands in it
		}
		rec, busy, ok := f.r.next(dst)
		if !ok || busy || !bytes.Equal(rec, []byte(want)) {
			t.Fatalf("next() = %q, busy %v, ok %v; want %q", rec, busy, ok, want)
		}
		if dst != nil && &rec[0] != &buf[:1][0] {
			t.Errorf("next(dst) did not reuse dst")
		}
	}
	if _, busy, ok := f.r.next(nil); ok || !busy {
		t.Fatalf("uncommitted record: busy %v ok %v", busy, ok)
	}
	// The consumer stops at the busy record: the producer commits it later.
	cons := binary.NativeEndian.Uint64(f.r.consumer)
	if want := f.prod - 16; cons != want {
		t.Fatalf("consumer at %d, want %d", cons, want)
	}
	hdr := cons & f.r.mask
	binary.NativeEndian.PutUint32(f.r.data[hdr:], 8)
	binary.NativeEndian.PutUint32(f.r.data[hdr+f.size:], 8)
	if rec, _, ok := f.r.next(nil); !ok || string(rec) != "reserved" {
		t.Fatalf("committed record: %q %v", rec, ok)
	}
	if _, busy, ok := f.r.next(nil); ok || busy {
		t.Fatal("record read from an empty ring")
	}
}
