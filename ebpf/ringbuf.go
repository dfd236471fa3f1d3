package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
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
type RingBufReader struct {
	mu       sync.Mutex // held by Read; Close takes it to unmap
	closed   atomic.Bool
	mapName  string
	consumer []byte // first page, read-write: consumer_pos at offset 0
	producer []byte // read-only: producer_pos page, then the data twice
	data     []byte // producer[pagesize:], 2*size long so records never wrap
	mask     uint64
	epfd     int
	eventfd  int // written by Close to wake a blocked Read
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
	r := &RingBufReader{mapName: m.Name(), mask: uint64(size - 1), epfd: -1, eventfd: -1}
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
	if r.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return nil, fmt.Errorf("map %s: epoll: %w", m.Name(), err)
	}
	if r.eventfd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("map %s: eventfd: %w", m.Name(), err)
	}
	for _, fd := range []int{m.FD(), r.eventfd} {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
		if err = unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return nil, fmt.Errorf("map %s: epoll add: %w", m.Name(), err)
		}
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
	rec, _, ok := r.next()
	return rec, ok
}

// ReadTimeout is Read giving up after d with os.ErrDeadlineExceeded.
func (r *RingBufReader) ReadTimeout(d time.Duration) ([]byte, error) {
	return r.read(time.Now().Add(d))
}

func (r *RingBufReader) read(deadline time.Time) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		if r.closed.Load() {
			return nil, ErrClosed
		}
		rec, busy, ok := r.next()
		if ok {
			return rec, nil
		}
		timeout := -1
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return nil, fmt.Errorf("ring buffer %s: read: %w", r.mapName, os.ErrDeadlineExceeded)
			}
			timeout = int((left + time.Millisecond - 1) / time.Millisecond)
		}
		if busy {
			time.Sleep(ringbufBusyPause)
			continue
		}
		events := make([]unix.EpollEvent, 2)
		if _, err := unix.EpollWait(r.epfd, events, timeout); err != nil && !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("ring buffer %s: epoll wait: %w", r.mapName, err)
		}
	}
}

// next consumes the next committed record. busy reports a record that is
// reserved but not yet committed.
func (r *RingBufReader) next() (rec []byte, busy, ok bool) {
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
			rec = append([]byte(nil), r.data[start:start+n]...)
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
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	if _, err := unix.Write(r.eventfd, one[:]); err != nil {
		return fmt.Errorf("ring buffer %s: close: wake reader: %w", r.mapName, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.release()
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
	if r.epfd >= 0 {
		unix.Close(r.epfd)
		r.epfd = -1
	}
	if r.eventfd >= 0 {
		unix.Close(r.eventfd)
		r.eventfd = -1
	}
}
