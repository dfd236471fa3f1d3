package splice

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
)

// Client data that found every pool empty. A burst of new clients (wrk
// -c1000 starting) empties the pools faster than connections to the workers
// open; the data plane used to drop such data, and each client sent it again
// only after its retransmission timeout, 200 ms at least. Now it keeps the
// frame (kern/bpf/xlb.c hold_first, xlb_held) and says so (kern.EventHeld);
// once a worker connection is pooled, replayHeld takes the frame out, runs it
// through the program again (BPF_PROG_TEST_RUN), as if it arrived then, and
// sends on the segment the program made of it: through a raw socket, so that
// the kernel routes it as it would have the program's XDP_PASS (to a worker
// on this host), XDP_TX or redirect (to the next hop). The program's state
// moves as for any segment it forwards; a frame lost on the way is a lost
// segment, which the client sends again.

const (
	// heldMaxAge: a frame older than this is dropped, not replayed. The
	// client's own retransmission has come by then (its timeout is
	// 200 ms or more), and found a connection or was held again.
	heldMaxAge = time.Second
	// heldPoll is how often, while frames wait, the pools are looked at
	// for an idle connection (a pool also fills from legs that cool, and
	// from clients that leave: no event says so).
	heldPoll = 2 * time.Millisecond
	// heldMax bounds the frames remembered (the data plane's map holds
	// XLB_MAX_HELD).
	heldMax = 1 << 14
)

// replayer holds the bookkeeping of held frames.
type replayer struct {
	raw  int           // IPPROTO_RAW socket the replayed IPv4 segments leave by
	raw6 int           // ... IPv6 ones (-1: none)
	kick chan struct{} // a connection was pooled, or a frame held

	mu   sync.Mutex
	held map[kern.LegKey]time.Time // clients with a frame held, since when
	// run is held while a frame is run again, and while a client that
	// waited too long is reset (endQueued): the reset must not race a
	// replay that binds the client.
	run sync.Mutex

	holds    atomic.Uint64 // frames the data plane held (EventHeld; again after a replay that found no connection)
	replayed atomic.Uint64 // frames run again and sent on
	expired  atomic.Uint64 // frames dropped unsent: too old, or the program did not forward them
}

func newReplayer() (*replayer, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("raw socket for held client data: %w", err)
	}
	// IPv6's: none on a host without IPv6 (its clients' data is then sent
	// again by the clients).
	fd6, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		fd6 = -1
	}
	return &replayer{raw: fd, raw6: fd6, kick: make(chan struct{}, 1), held: map[kern.LegKey]time.Time{}}, nil
}

func (r *replayer) close() {
	if r != nil {
		unix.Close(r.raw)
		if r.raw6 >= 0 {
			unix.Close(r.raw6)
		}
	}
}

// note remembers that the data plane held a frame of client key.
func (r *replayer) note(key kern.LegKey) {
	r.holds.Add(1)
	r.mu.Lock()
	if _, ok := r.held[key]; !ok && len(r.held) < heldMax {
		r.held[key] = time.Now()
	}
	r.mu.Unlock()
	r.poke()
}

// poke wakes the replay loop (a connection was pooled).
func (r *replayer) poke() {
	if r == nil {
		return
	}
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// pending is how many clients have a frame held.
func (r *replayer) pending() int {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.held)
}

// waiting is the clients with a frame held, oldest first.
func (r *replayer) waiting() []kern.LegKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	keys := make([]kern.LegKey, 0, len(r.held))
	for k := range r.held {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b kern.LegKey) int { return r.held[a].Compare(r.held[b]) })
	return keys
}

func (r *replayer) since(key kern.LegKey) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.held[key]
	return t, ok
}

// stop keeps replays out until the returned function is called, and forgets
// key's held frame. On a nil replayer it does nothing.
func (r *replayer) stop(key kern.LegKey) func() {
	if r == nil {
		return func() {}
	}
	r.run.Lock()
	r.forget(key)
	return r.run.Unlock
}

func (r *replayer) forget(key kern.LegKey) {
	r.mu.Lock()
	delete(r.held, key)
	r.mu.Unlock()
}

// replayLoop replays held frames when a connection is pooled, and every
// heldPoll while some wait.
func (lb *LB) replayLoop(ctx context.Context) {
	r := lb.replay
	t := time.NewTimer(heldPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-t.C:
		}
		if lb.replayHeld() > 0 {
			t.Reset(heldPoll)
		}
	}
}

// replayHeld runs the held frames of as many clients as there are idle
// worker connections, oldest first, and drops those too old. It returns
// how many still wait.
func (lb *LB) replayHeld() int {
	r := lb.replay
	keys := r.waiting()
	if len(keys) == 0 {
		return 0
	}
	idle := 0
	if loads, err := lb.dp.Loads(); err == nil {
		for _, w := range lb.workerList() {
			idle += int(loads.of(w.id).Idle)
		}
	}
	left := 0
	for _, key := range keys {
		since, ok := r.since(key)
		if !ok {
			continue
		}
		if time.Since(since) > heldMaxAge {
			r.forget(key)
			if lb.dropHeld(key) {
				r.expired.Add(1)
			}
			continue
		}
		if idle <= 0 {
			left++
			continue
		}
		idle--
		// Forgotten first: a frame the program holds again (the leg
		// went to another client) comes back with its own event.
		r.forget(key)
		r.run.Lock()
		sent, err := lb.replayOne(key)
		r.run.Unlock()
		switch {
		case err != nil:
			lb.log.Warn("replaying held client data", "client", key, "err", err)
		case sent:
			r.replayed.Add(1)
		}
	}
	return left
}

// dropHeld deletes key's held frame, if there is one.
func (lb *LB) dropHeld(key kern.LegKey) bool {
	k, err := key.MarshalBinary()
	if err != nil {
		return false
	}
	return lb.dp.Objs.Held.Delete(k) == nil
}

// replayOne takes client key's held frame out of the data plane, runs it
// through the program and sends on what comes out. It reports whether a
// segment was sent (false: no frame held, or the program dropped it).
func (lb *LB) replayOne(key kern.LegKey) (bool, error) {
	k, err := key.MarshalBinary()
	if err != nil {
		return false, err
	}
	v := make([]byte, lb.dp.Objs.Held.ValueSize())
	if err := lb.dp.Objs.Held.LookupAndDelete(k, v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return false, nil // its client's retransmission came first
		}
		return false, err
	}
	var h kern.Held
	if err := h.UnmarshalBinary(v); err != nil {
		return false, err
	}
	res, err := lb.dp.Objs.Program.TestRun(&ebpf.TestRunOptions{Data: h.Frame})
	if err != nil {
		return false, err
	}
	pkt, ok := replayed(res, h.Frame)
	if !ok {
		// Held again (the connection pooled went to another client
		// first: its own event brings it back), or not sent: the
		// client's retransmission will be.
		if lb.dp.Objs.Held.Lookup(k, v) != nil {
			lb.replay.expired.Add(1)
		}
		return false, nil
	}
	// The program mends checksums incrementally: a frame held on lo
	// carries the partial checksum of a packet never checksummed (the
	// kernel trusts it there), which a raw socket's packet does not get.
	setTCPChecksum(pkt)
	if pkt[0]>>4 == 6 {
		if lb.replay.raw6 < 0 {
			return false, errors.New("no IPv6 raw socket to send held client data")
		}
		return true, sendRaw6(lb.replay.raw6, pkt, [16]byte(pkt[24:40]))
	}
	return true, sendRaw(lb.replay.raw, pkt, [4]byte(pkt[16:20]))
}

// replayed is the IP packet a replay's run made, if it is one to send:
// the program passed, sent back or redirected it, and rewrote it (a frame
// passed unchanged is not ours any more: its leg ended meanwhile).
func replayed(res *ebpf.TestRunResult, in []byte) ([]byte, bool) {
	switch res.Return {
	case xdpPass, xdpTX, xdpRedirect:
	default:
		return nil, false
	}
	const ethLen, ipMin, ip6Len = 14, 20, 40
	out := res.Data
	if len(out) < ethLen+ipMin || bytes.Equal(out, in) {
		return nil, false
	}
	pkt := out[ethLen:]
	if pkt[0]>>4 == 6 {
		if len(pkt) < ip6Len+20 || pkt[6] != unix.IPPROTO_TCP {
			return nil, false
		}
		total := ip6Len + int(binary.BigEndian.Uint16(pkt[4:]))
		if total < ip6Len+20 || total > len(pkt) {
			return nil, false
		}
		return pkt[:total], true
	}
	if pkt[0]>>4 != 4 {
		return nil, false
	}
	ihl, total := int(pkt[0]&0x0f)*4, int(binary.BigEndian.Uint16(pkt[2:]))
	if ihl < ipMin || total < ihl+20 || total > len(pkt) || pkt[9] != unix.IPPROTO_TCP {
		return nil, false
	}
	return pkt[:total], true
}
