package ebpf

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Ring buffer record header (struct bpf_ringbuf_hdr): u32 len with two flag
// bits, u32 pg_off. Records start 8-byte aligned.
const (
	ringbufHdrSize    = 8
	ringbufBusyBit    = 1 << 31 // BPF_RINGBUF_BUSY_BIT: reserved, not committed yet
	ringbufDiscardBit = 1 << 30 // BPF_RINGBUF_DISCARD_BIT: skip this record
	ringbufAlign      = 8
	// ringbufBusyPause is how long Read waits before looking again at a
	// record the producer has reserved but not committed (poll reports data
	// as soon as it is reserved).
	ringbufBusyPause = 20 * time.Microsecond
)

// RingBufReader reads records from a BPF_MAP_TYPE_RINGBUF map. One goroutine
// reads at a time; Close may be called from any goroutine.
//
// A reader waits in the runtime's poller (the map's descriptor, duplicated,
// in an *os.File), not in a blocking epoll_wait: a goroutine blocked in a
// system call holds its P until sysmon takes it back, and sysmon, finding
// one to take back every few milliseconds, polled every 20 us: its sleeps
// were 61% of xlb's context switches under ab -c4 (perf, sched_switch),
// each a VM exit here.
type RingBufReader struct {
	mu       sync.Mutex // held by Read; Close takes it to unmap
	closed   atomic.Bool
	mapName  string
	consumer []byte // first page, read-write: consumer_pos at offset 0
	producer []byte // read-only: producer_pos page, then the data twice
	data     []byte // producer[pagesize:], 2*size long so records never wrap
	mask     uint64
	file     *os.File        // a duplicate of the map's descriptor, in the poller
	raw      syscall.RawConn // file's
}

// NewRingBufReader maps the ring buffer of m for reading.
func NewRingBufReader(m *Map) (*RingBufReader, error) {
	if m.Type() != RingBuf {
		return nil, fmt.Errorf("map %s: ring buffer reader: map is %s, want RingBuf", m.Name(), m.Type())
	}
	size := int(m.MaxEntries())
	page := os.Getpagesize()
	if size <= 0 || size&(size-1) != 0 || size%page != 0 {
		return nil, fmt.Errorf("map %s: ring buffer size %d is not a power-of-2 multiple of the page size", m.Name(), size)
	}
	r := &RingBufReader{mapName: m.Name(), mask: uint64(size - 1)}
	var err error
	defer func() {
		if err != nil {
			r.release()
		}
	}()
	if r.consumer, err = unix.Mmap(m.FD(), 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return nil, fmt.Errorf("map %s: mmap consumer page: %w", m.Name(), err)
	}
	if r.producer, err = unix.Mmap(m.FD(), int64(page), page+2*size, unix.PROT_READ, unix.MAP_SHARED); err != nil {
		return nil, fmt.Errorf("map %s: mmap ring: %w", m.Name(), err)
	}
	r.data = r.producer[page:]
	// Non-blocking, so that os.NewFile puts it in the poller. (The flag is
	// the open file's, shared with the map's own descriptor: bpf(2) and
	// mmap ignore it.)
	var fd int
	if fd, err = unix.FcntlInt(uintptr(m.FD()), unix.F_DUPFD_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("map %s: dup: %w", m.Name(), err)
	}
	if err = unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("map %s: non-blocking: %w", m.Name(), err)
	}
	r.file = os.NewFile(uintptr(fd), "ringbuf:"+m.Name())
	if r.raw, err = r.file.SyscallConn(); err != nil {
		return nil, fmt.Errorf("map %s: %w", m.Name(), err)
	}
	return r, nil
}

func (r *RingBufReader) consumerPos() *uint64 { return (*uint64)(unsafe.Pointer(&r.consumer[0])) }
func (r *RingBufReader) producerPos() *uint64 { return (*uint64)(unsafe.Pointer(&r.producer[0])) }

// Read blocks until a record arrives and returns a copy of it. After Close it
// returns ErrClosed.
func (r *RingBufReader) Read() ([]byte, error) { return r.read(time.Time{}) }

// TryRead returns the next record if one is committed, without waiting.
func (r *RingBufReader) TryRead() ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return nil, false
	}
	rec, _, ok := r.next(nil)
	return rec, ok
}

// TryReadAppend is TryRead with the record appended to dst[:0] (no
// allocation once dst is large enough).
func (r *RingBufReader) TryReadAppend(dst []byte) ([]byte, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return nil, false
	}
	rec, _, ok := r.next(dst)
	return rec, ok
}

// ReadTimeout is Read giving up after d with os.ErrDeadlineExceeded.
func (r *RingBufReader) ReadTimeout(d time.Duration) ([]byte, error) {
	return r.read(time.Now().Add(d))
}

func (r *RingBufReader) read(deadline time.Time) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return nil, ErrClosed
	}
	// A record already there is returned whatever the deadline (the
	// poller checks the deadline before it looks).
	if rec, _, ok := r.next(nil); ok {
		return rec, nil
	}
	if err := r.file.SetReadDeadline(deadline); err != nil {
		return nil, fmt.Errorf("ring buffer %s: read: %w", r.mapName, err)
	}
	var rec []byte
	for {
		var busy bool
		// The poller calls the function again once the map is readable
		// (a record committed: the kernel wakes its pollers) or returns
		// at the deadline or Close.
		err := r.raw.Read(func(uintptr) bool {
			var ok bool
			rec, busy, ok = r.next(nil)
			return ok || busy || r.closed.Load()
		})
		switch {
		case r.closed.Load():
			return nil, ErrClosed
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, fmt.Errorf("ring buffer %s: read: %w", r.mapName, os.ErrDeadlineExceeded)
		case err != nil:
			return nil, fmt.Errorf("ring buffer %s: poll: %w", r.mapName, err)
		case rec != nil:
			return rec, nil
		}
		// busy: reserved, not committed yet (poll reports data as soon
		// as it is reserved).
		if !deadline.IsZero() && time.Now().After(deadline) {
			return nil, fmt.Errorf("ring buffer %s: read: %w", r.mapName, os.ErrDeadlineExceeded)
		}
		time.Sleep(ringbufBusyPause)
	}
}

// next consumes the next committed record, appended to dst. busy reports a
// record that is reserved but not yet committed.
func (r *RingBufReader) next(dst []byte) (rec []byte, busy, ok bool) {
	cons := atomic.LoadUint64(r.consumerPos())
	for {
		prod := atomic.LoadUint64(r.producerPos())
		if cons >= prod {
			return nil, false, false
		}
		off := cons & r.mask
		hdr := atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.data[off])))
		if hdr&ringbufBusyBit != 0 {
			return nil, true, false
		}
		n := uint64(hdr &^ (ringbufBusyBit | ringbufDiscardBit))
		total := (ringbufHdrSize + n + ringbufAlign - 1) &^ (ringbufAlign - 1)
		if hdr&ringbufDiscardBit == 0 {
			// The data region is mapped twice in a row, so a record that
			// wraps around the end is still contiguous here.
			start := off + ringbufHdrSize
			rec = append(dst[:0], r.data[start:start+n]...)
		}
		cons += total
		atomic.StoreUint64(r.consumerPos(), cons)
		if rec != nil {
			return rec, false, true
		}
	}
}

// Close wakes a blocked Read, which returns ErrClosed, and releases the
// mappings. Closing twice is harmless.
func (r *RingBufReader) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	// Closing the file wakes a Read waiting in the poller.
	err := r.file.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.file = nil
	r.release()
	if err != nil {
		return fmt.Errorf("ring buffer %s: close: %w", r.mapName, err)
	}
	return nil
}

func (r *RingBufReader) release() {
	if r.producer != nil {
		unix.Munmap(r.producer)
		r.producer, r.data = nil, nil
	}
	if r.consumer != nil {
		unix.Munmap(r.consumer)
		r.consumer = nil
	}
	if r.file != nil {
		r.file.Close()
		r.file = nil
	}
}
