package kern_test

// Dialed worker legs: user space sends the SYN of a pool connection itself
// (no socket) after putting an HS_DIALED entry in xlb_dials under the
// 4-tuple of the worker's answer, and the program completes the handshake
// (dialed() in xlb.c): a SYN-ACK makes a new leg, which user space pools
// (CTL_POOL), and is answered with our ACK, a RST marks the dial refused, the ACK of a
// TIME-WAIT is reset and the dial marked for a retry.

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
)

// The dialed connection of the fixtures: workerKey (worker 1), our SYN with
// ISN dialISN and TSval dialTSval, the worker's SYN-ACK with ISN dialPeerISN.
const (
	dialWorker  = 1
	dialISN     = 0x2000_0000 - 1
	dialPeerISN = 0x9000_0000 - 1
	dialTSval   = 987_654 // our SYN's TSval, which the SYN-ACK echoes
	dialPeerTS  = 123_456 // the worker's TSval on its SYN-ACK
	dialOurOpts = kern.OptTS | kern.OptSACK | kern.OptWScale
)

// dialHS is the dial entry (xlb_dials) user space writes before it sends the SYN.
func dialHS(ourOpts uint8) kern.Handshake {
	return kern.Handshake{Flags: kern.HSDialed, OurISN: dialISN, OurMSS: 1460, OurWScale: 7,
		OurOpts: ourOpts, Worker: dialWorker, Ns: 1_000_000}
}

// dialStd is dialHS of a Linux SYN: timestamps, SACK and scaling offered.
func dialStd() kern.Handshake { return dialHS(dialOurOpts) }

// loadDialPlane is loadDataPlane with xlb_dials empty, before and after
// the test: a dial entry left under workerKey would make another fixture's
// worker SYN-ACK a dialed one.
func loadDialPlane(t *testing.T) *dataPlane {
	t.Helper()
	d := loadDataPlane(t)
	d.clearDials()
	t.Cleanup(d.clearDials)
	return d
}

func (d *dataPlane) clearDials() {
	d.t.Helper()
	m := d.objs.Dials
	next := make([]byte, m.KeySize())
	for {
		err := m.NextKey(nil, next)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return
		}
		if err != nil {
			d.t.Fatal(err)
		}
		if err := m.Delete(next); err != nil {
			d.t.Fatal(err)
		}
	}
}

// putDial stores a dial entry (xlb_dials), as user space does.
func (d *dataPlane) putDial(k kern.LegKey, h kern.Handshake) {
	d.t.Helper()
	v, err := h.MarshalBinary()
	if err != nil {
		d.t.Fatal(err)
	}
	if err := d.objs.Dials.Update(keyBytes(d.t, k), v, ebpf.UpdateAny); err != nil {
		d.t.Fatal(err)
	}
}

// dialEntry is the dial entry of k.
func (d *dataPlane) dialEntry(k kern.LegKey) (kern.Handshake, bool) {
	return entry[kern.Handshake](d, d.objs.Dials, k)
}

// setPortMark sets or clears a local port's bit in xlb_ports.
func (d *dataPlane) setPortMark(port uint16, on bool) {
	d.t.Helper()
	idx := ebpf.Uint32Key(uint32(port) / 64)
	w := make([]byte, 8)
	if err := d.objs.Ports.Lookup(idx, w); err != nil {
		d.t.Fatal(err)
	}
	bits := binary.NativeEndian.Uint64(w)
	if on {
		bits |= 1 << (port % 64)
	} else {
		bits &^= 1 << (port % 64)
	}
	binary.NativeEndian.PutUint64(w, bits)
	if err := d.objs.Ports.Update(idx, w, ebpf.UpdateAny); err != nil {
		d.t.Fatal(err)
	}
}

// dial does what user space does before it sends a dialed SYN: the worker
// is registered, the local port marked, the dial entry written.
func (d *dataPlane) dial(k kern.LegKey, h kern.Handshake) {
	d.t.Helper()
	d.addWorker(k.Peer, h.Worker)
	d.setPortMark(k.Local.Port(), true)
	d.putDial(k, h)
}

// readyTokens empties the fixtures' family's xlb_ready and returns its
// tokens (worker ids).
func (d *dataPlane) readyTokens() []uint32 {
	d.t.Helper()
	var ids []uint32
	for i := uint32(0); i <= d.ready().MaxEntries(); i++ {
		v := make([]byte, 4)
		err := d.ready().Pop(v)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return ids
		}
		if err != nil {
			d.t.Fatal(err)
		}
		ids = append(ids, binary.NativeEndian.Uint32(v))
	}
	d.t.Fatal("xlb_ready did not empty")
	return nil
}

// checkPooled fails unless worker's pool holds exactly keys, its idle count
// is len(keys) and xlb_ready holds one token per key (the default policy,
// jiq, uses them). It empties the pools and the tokens.
func checkPooled(t testing.TB, d *dataPlane, worker uint32, keys ...kern.LegKey) {
	t.Helper()
	if n := d.idleCount(worker); n != int64(len(keys)) {
		t.Errorf("worker %d: idle count %d, want %d", worker, n, len(keys))
	}
	var want []uint32
	for range keys {
		want = append(want, worker)
	}
	if got := d.readyTokens(); !slices.Equal(got, want) {
		t.Errorf("jiq tokens %v, want %v", got, want)
	}
	if got := d.popKeys(d.pool(worker)); !slices.Equal(got, keys) {
		t.Errorf("worker %d's pool holds %v, want %v", worker, got, keys)
	}
	if rest := d.idleQueue(); len(rest) != 0 {
		t.Errorf("other pools hold %v", rest)
	}
}

// checkDial fails unless the dial entry of k is want (present) or absent.
func checkDial(t testing.TB, d *dataPlane, k kern.LegKey, want *kern.Handshake) {
	t.Helper()
	got, ok := d.dialEntry(k)
	switch {
	case want == nil && ok:
		t.Errorf("dial entry %+v left under %s", got, k)
	case want != nil && !ok:
		t.Errorf("dial entry of %s gone, want %+v", k, *want)
	case want != nil && got != *want:
		t.Errorf("dial entry:\n got  %+v\n want %+v", got, *want)
	}
}

// linuxSynAck are the options of a Linux SYN-ACK: MSS, SACK_PERM, TS (the
// worker's TSval, echoing ours), NOP, WS.
func linuxSynAck(mss uint16, tsval, tsecr uint32, ws uint8) []byte {
	return cat(optMSS(mss), optSACKPerm, optTS(tsval, tsecr), optNOP, optWS(ws))
}

// dialSynAck is the worker's answer to the dialed SYN.
func dialSynAck(opts []byte) seg {
	return fromWorker(seg{seq: dialPeerISN, ack: dialISN + 1, flags: tcpSYN | tcpACK, win: 65160, opts: opts})
}

// poolDialed checks that the program left the new dialed leg out of the
// pool, then pools it as user space does (CTL_POOL): once, with its jiq
// token, counted idle once. Like checkPooled, it empties the pool.
func poolDialed(t *testing.T, d *dataPlane) {
	t.Helper()
	checkPooled(t, d, dialWorker)
	if !d.ctl2(kern.CtlMsg{Op: kern.CtlPool, Key: workerKey, Worker: dialWorker}) {
		t.Fatal("CTL_POOL refused the dialed leg")
	}
	checkPooled(t, d, dialWorker, workerKey)
	if l := d.mustLeg(workerKey); l.State != kern.LegIdle {
		t.Errorf("pooled dialed leg in state %d, want idle", l.State)
	}
}

// dialedLeg is the leg a Linux SYN-ACK (linuxSynAck(1400, dialPeerTS,
// dialTSval, 9)) to dialHS(dialOurOpts) makes.
func dialedLeg() kern.Leg {
	return kern.Leg{Kind: kern.LegWorker, PeerWScale: 9, OurWScale: 7,
		Opts:    kern.OptNosock | kern.OptTS | kern.OptPeerTS | kern.OptSACK | kern.OptWScale,
		PeerMSS: 1400, OurMSS: 1460, Worker: dialWorker, WinBound: winBound(9, 7),
		PeerHi: dialPeerISN + 1, PeerAcked: dialISN + 1, PeerTSval: dialPeerTS, PeerWin: 65160 >> 9,
		SndNxt: dialISN + 1, OurTSval: dialTSval, SndWin: 0xffff >> 7, State: kern.LegNew}
}

// tsOnlyLeg is dialedLeg negotiated with timestamps alone: no scaling
// (both scales 0, the window as it came), no SACK.
func tsOnlyLeg() kern.Leg {
	l := dialedLeg()
	l.Opts = kern.OptNosock | kern.OptTS | kern.OptPeerTS
	l.PeerWScale, l.OurWScale, l.WinBound = 0, 0, winBound(0, 0)
	l.PeerWin, l.SndWin = 65160, 0xffff
	return l
}

// The same SYN-ACK again (our ACK was lost) is answered again, from the leg.
// TestDialedSynAck: the worker's SYN-ACK to a dialed SYN makes a new
// worker leg without a socket (LEG_OPT_NOSOCK), with what both SYNs
// negotiated, left out of the pool for user space to pool, and is answered
// with the handshake's ACK (the stack, which has no socket for it, never
// sees it).
func TestDialedSynAck(t *testing.T) {
	tests := []struct {
		name string
		hs   func() kern.Handshake // what our SYN offered
		opts []byte
		leg  func() kern.Leg
	}{
		{"linux SYN-ACK: timestamps, SACK, scaling", dialStd, linuxSynAck(1400, dialPeerTS, dialTSval, 9), dialedLeg},
		{"worker without timestamps", dialStd, cat(optMSS(1400), optNOP, optNOP, optSACKPerm, optNOP, optWS(9)),
			func() kern.Leg {
				l := dialedLeg()
				l.Opts = kern.OptNosock | kern.OptSACK | kern.OptWScale
				l.PeerTSval, l.OurTSval = 0, 0
				return l
			}},
		{"timestamps only: both scales 0, the window as it came", dialStd, cat(optMSS(1400), optNOP, optNOP, optTS(dialPeerTS, dialTSval)),
			tsOnlyLeg},
		{"our SYN offered timestamps only: the worker's SACK and scale are not taken", func() kern.Handshake { return dialHS(kern.OptTS) }, linuxSynAck(1400, dialPeerTS, dialTSval, 9),
			tsOnlyLeg},
		{"our MSS and scale are the SYN's (not the config's)",
			func() kern.Handshake {
				h := dialHS(dialOurOpts)
				h.OurMSS, h.OurWScale = 1200, 2
				return h
			}, linuxSynAck(1400, dialPeerTS, dialTSval, 9),
			func() kern.Leg {
				l := dialedLeg()
				l.OurMSS, l.OurWScale, l.WinBound, l.SndWin = 1200, 2, winBound(9, 2), 0xffff>>2
				return l
			}},
		{"no MSS option: 536; scale 14", dialStd, cat(optSACKPerm, optTS(dialPeerTS, dialTSval), optNOP, optWS(14)),
			func() kern.Leg {
				l := dialedLeg()
				l.PeerMSS = 536
				l.PeerWScale, l.WinBound, l.PeerWin = 14, winBound(14, 7), 65160>>14
				return l
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDialPlane(t)
			d.dial(workerKey, tc.hs())
			want := tc.leg()

			in := dialSynAck(tc.opts).build()
			v, out, delta := d.run(in)
			checkVerdict(t, v, xdpTX)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterWorkerSynack, kern.CounterDialed, kern.CounterTX)
			// The handshake's ACK: seq our ISN + 1, ack the worker's, our
			// window, timestamps echoing the SYN-ACK's if it had them.
			checkReply(t, in, out, want, dialISN+1, tcpACK)
			sa, ack := mustParse(t, in), mustParse(t, out)
			if ack.seq != dialISN+1 || ack.ack != dialPeerISN+1 {
				t.Errorf("ACK seq %#x ack %#x, want %#x %#x", ack.seq, ack.ack, uint32(dialISN+1), uint32(dialPeerISN+1))
			}
			if sa.hasTS && (ack.tsval != sa.tsecr || ack.tsecr != sa.tsval) {
				t.Errorf("ACK timestamps %d/%d, want the SYN-ACK's echoed: %d/%d", ack.tsval, ack.tsecr, sa.tsecr, sa.tsval)
			}

			got := d.mustLeg(workerKey)
			checkLeg(t, "dialed leg", got, want)
			if got.LastNs == 0 {
				t.Error("dialed leg has no last_ns")
			}
			checkDial(t, d, workerKey, nil)
			checkEvents(t, d.drainEvents())

			// The SYN-ACK again: our ACK was lost. The program answers for
			// the leg (no socket would), from the leg; nothing changes.
			v, out, delta = d.run(in)
			checkVerdict(t, v, xdpTX)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterTX)
			checkReply(t, in, out, want, dialISN+1, tcpACK)
			checkLeg(t, "dialed leg after the SYN-ACK again", d.mustLeg(workerKey), want)
			checkEvents(t, d.drainEvents())

			// Not pooled by the program (the ACK must reach the worker
			// first); pooled by user space.
			poolDialed(t, d)
		})
	}
}

// TestDialedLegServesClient: a dialed leg is an ordinary idle worker leg: a
// client's first request binds to it and goes to its worker.
func TestDialedLegServesClient(t *testing.T) {
	d := loadDialPlane(t)
	d.dial(workerKey, dialHS(dialOurOpts))
	v, _, _ := d.run(dialSynAck(linuxSynAck(1400, dialPeerTS, dialTSval, 9)).build())
	checkVerdict(t, v, xdpTX)
	if !d.ctl2(kern.CtlMsg{Op: kern.CtlPool, Key: workerKey, Worker: dialWorker}) {
		t.Fatal("CTL_POOL refused the dialed leg")
	}
	w := d.mustLeg(workerKey)

	c := stdClientLeg()
	d.putLeg(clientKey, c)
	in := fromClient(seg{seq: c.PeerHi, ack: c.SndNxt, flags: tcpACK | tcpPSH, win: 502,
		opts: nopTS(c.PeerTSval+7, c.OurTSval), payload: request}).build()
	v, out, delta := d.run(in)
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterBind, kern.CounterFwdToWorker, kern.CounterPass)
	toWorker, toClient := oracleBind(clientKey, httpClient(c), workerKey, w)
	if got, ok := d.bind(clientKey); !ok || got != toWorker {
		t.Errorf("client binding:\n got  %+v (present %v)\n want %+v", got, ok, toWorker)
	}
	if got, ok := d.bind(workerKey); !ok || got != toClient {
		t.Errorf("worker binding:\n got  %+v (present %v)\n want %+v", got, ok, toClient)
	}
	checkTranslated(t, in, out, toWorker)
	if out := mustParse(t, out); out.dst != workerAddr || out.seq != dialISN+1 {
		t.Errorf("request sent to %v at seq %#x, want %v at %#x (right after our SYN)", out.dst, out.seq, workerAddr, uint32(dialISN+1))
	}
	wantC, wantW := firstBound(c, w, uint32(len(request)), 7)
	checkLeg(t, "client leg", d.mustLeg(clientKey), wantC)
	checkLeg(t, "dialed leg", d.mustLeg(workerKey), wantW)
	if idle, bound := d.idleCount(dialWorker), d.load(dialWorker); idle != 0 || bound != 1 {
		t.Errorf("worker %d: %d idle, %d bound; want 0, 1", dialWorker, idle, bound)
	}
}

// TestDialedSynAckNotOurs: a SYN-ACK on the dialed 4-tuple that does not
// answer our SYN (or that the program cannot read) makes nothing: dropped
// (no socket would take it), the handshake left for the real answer.
func TestDialedSynAckNotOurs(t *testing.T) {
	tests := []struct {
		name string
		s    seg
	}{
		{"acks another ISN", fromWorker(seg{seq: dialPeerISN, ack: dialISN + 2, flags: tcpSYN | tcpACK, win: 65160,
			opts: linuxSynAck(1400, dialPeerTS, dialTSval, 9)})},
		{"acks our ISN itself", fromWorker(seg{seq: dialPeerISN, ack: dialISN, flags: tcpSYN | tcpACK, win: 65160,
			opts: linuxSynAck(1400, dialPeerTS, dialTSval, 9)})},
		{"malformed timestamp option", dialSynAck(cat(optMSS(1400), []byte{8, 6, 0, 0, 0, 0}))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDialPlane(t)
			hs := dialHS(dialOurOpts)
			d.dial(workerKey, hs)
			v, _, delta := d.run(tc.s.build())
			checkVerdict(t, v, xdpDrop)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterBadOptions, kern.CounterDrop)
			if l, ok := d.leg(workerKey); ok {
				t.Errorf("a leg was made: %+v", l)
			}
			checkDial(t, d, workerKey, &hs)
			checkPooled(t, d, dialWorker)
			checkEvents(t, d.drainEvents())
		})
	}
}

// TestDialedRefused: a RST that acknowledges our SYN (nothing listens)
// marks the dial refused for user space; any other RST on the 4-tuple is
// not an answer to our SYN (RFC 793: in SYN-SENT a RST counts only if it
// acknowledges the SYN) and changes nothing. The stack never sees either.
func TestDialedRefused(t *testing.T) {
	tests := []struct {
		name    string
		s       seg
		refused bool
	}{
		{"RST+ACK of our SYN", seg{ack: dialISN + 1, flags: tcpRST | tcpACK}, true},
		{"RST+ACK of another ISN", seg{ack: dialISN + 5, flags: tcpRST | tcpACK}, false},
		{"RST without ACK", seg{seq: dialPeerISN + 1, ack: dialISN + 1, flags: tcpRST}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDialPlane(t)
			hs := dialHS(dialOurOpts)
			d.dial(workerKey, hs)
			v, _, delta := d.run(fromWorker(tc.s).build())
			checkVerdict(t, v, xdpDrop)
			if tc.refused {
				checkCounters(t, delta, kern.CounterTCP, kern.CounterDialReset, kern.CounterDrop)
				hs.Flags |= kern.HSRefused
			} else if delta[kern.CounterDialed] != 0 || delta[kern.CounterForeign] != 0 || delta[kern.CounterDrop] != 1 {
				t.Errorf("counters moved: dialed %d, foreign %d, drop %d; want 0, 0, 1",
					delta[kern.CounterDialed], delta[kern.CounterForeign], delta[kern.CounterDrop])
			}
			checkDial(t, d, workerKey, &hs) // user space reads the verdict there
			if _, ok := d.leg(workerKey); ok {
				t.Error("a RST made a leg")
			}
			checkPooled(t, d, dialWorker)
		})
	}
}

// TestDialedTimeWait: a worker that holds the 4-tuple in TIME-WAIT answers
// a SYN it does not take with a pure ACK of the old connection. The program
// resets the TIME-WAIT (RFC 793: seq = that ACK's ack; its timestamp echoes
// the TIME-WAIT's own, which PAWS accepts) and marks the dial for a retry;
// the SYN sent again then completes as any other.
func TestDialedTimeWait(t *testing.T) {
	const twSeq, twAck, twTS, twEcho = 0x7000_0000, 0x3000_0000, 5555, 4444
	tests := []struct {
		name string
		opts []byte
	}{
		{"with timestamps", nopTS(twTS, twEcho)},
		{"without timestamps", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDialPlane(t)
			hs := dialHS(dialOurOpts)
			d.dial(workerKey, hs)
			in := fromWorker(seg{seq: twSeq, ack: twAck, flags: tcpACK, win: 502, opts: tc.opts}).build()
			v, out, delta := d.run(in)
			checkVerdict(t, v, xdpTX)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterDialReset, kern.CounterTX)
			// A bare RST: no ACK flag (the ack field 0), window 0.
			checkReply(t, in, out, kern.Leg{OurTSval: twEcho, PeerTSval: twTS}, twAck, tcpRST)
			hs.Flags |= kern.HSRetry
			checkDial(t, d, workerKey, &hs)
			if _, ok := d.leg(workerKey); ok {
				t.Error("the TIME-WAIT's ACK made a leg")
			}
			checkEvents(t, d.drainEvents())

			// User space sends the SYN again; the worker takes it now.
			in = dialSynAck(linuxSynAck(1400, dialPeerTS, dialTSval, 9)).build()
			v, out, delta = d.run(in)
			checkVerdict(t, v, xdpTX)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterWorkerSynack, kern.CounterDialed, kern.CounterTX)
			checkReply(t, in, out, dialedLeg(), dialISN+1, tcpACK)
			checkLeg(t, "dialed leg", d.mustLeg(workerKey), dialedLeg())
			checkDial(t, d, workerKey, nil)
			poolDialed(t, d)
		})
	}
}

// TestDialedNotTimeWait: what on the dialed 4-tuple is neither a SYN-ACK, a
// RST nor a TIME-WAIT's pure ACK is not answered and marks nothing.
func TestDialedNotTimeWait(t *testing.T) {
	tests := []struct {
		name  string
		s     seg
		pass  bool // foreign (data without a leg), else dropped
		count []kern.Counter
	}{
		{"FIN+ACK", seg{seq: 0x7000_0000, ack: 0x3000_0000, flags: tcpFIN | tcpACK, win: 502, opts: nopTS(5555, 4444)}, false,
			[]kern.Counter{kern.CounterTCP, kern.CounterDialReset, kern.CounterDrop}},
		{"ACK with bad options", seg{seq: 0x7000_0000, ack: 0x3000_0000, flags: tcpACK, win: 502, opts: cat(optTS(1, 2), optTS(3, 4))}, false,
			[]kern.Counter{kern.CounterTCP, kern.CounterDialReset, kern.CounterDrop}},
		{"ACK with data", seg{seq: 0x7000_0000, ack: 0x3000_0000, flags: tcpACK, win: 502, opts: nopTS(5555, 4444), payload: []byte("x")}, true,
			[]kern.Counter{kern.CounterTCP, kern.CounterForeign, kern.CounterPass}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDialPlane(t)
			hs := dialHS(dialOurOpts)
			d.dial(workerKey, hs)
			v, _, delta := d.run(fromWorker(tc.s).build())
			if tc.pass {
				checkVerdict(t, v, xdpPass)
			} else {
				checkVerdict(t, v, xdpDrop)
			}
			checkCounters(t, delta, tc.count...)
			checkDial(t, d, workerKey, &hs)
			if _, ok := d.leg(workerKey); ok {
				t.Error("a leg was made")
			}
		})
	}
}

// TestDialedPortNotMarked: the RST and the ACK that answer a dialed SYN are
// seen only on a local port marked in xlb_ports (user space marks it before
// it dials): elsewhere they are foreign, the handshake untouched.
func TestDialedPortNotMarked(t *testing.T) {
	k := kern.LegKey{Peer: workerAddr, Local: mustAddrPort("10.0.0.100:50999")}
	for _, s := range []seg{
		{ack: dialISN + 1, flags: tcpRST | tcpACK},
		{seq: 0x7000_0000, ack: 0x3000_0000, flags: tcpACK, win: 502},
	} {
		d := loadDialPlane(t)
		hs := dialHS(dialOurOpts)
		d.dial(k, hs)
		d.setPortMark(k.Local.Port(), false)
		s.src, s.dst = k.Peer, k.Local
		v, _, delta := d.run(s.build())
		checkVerdict(t, v, xdpPass)
		checkCounters(t, delta, kern.CounterTCP, kern.CounterForeign, kern.CounterPass)
		checkDial(t, d, k, &hs)
	}
}

// TestDialedOrdinaryUnchanged: a worker's packets on a 4-tuple that was not
// dialed (a pool connection of a socket of ours) are handled as before:
// the SYN-ACK passes to the stack and is learned (xlb_hs), a RST or an ACK
// without a leg is foreign, a SYN-ACK again on a leg with a socket goes to
// the stack. A dial entry without HS_DIALED is no dial.
func TestDialedOrdinaryUnchanged(t *testing.T) {
	const ourISN = 0x5000_0000
	synack := fromWorker(seg{seq: dialPeerISN, ack: ourISN + 1, flags: tcpSYN | tcpACK, win: 65160,
		opts: linuxSynAck(1400, dialPeerTS, 77, 9)})
	learned := kern.Handshake{PeerISN: dialPeerISN, PeerTSval: dialPeerTS, PeerMSS: 1400, PeerWScale: 9,
		Opts: kern.OptTS | kern.OptSACK | kern.OptWScale, OurISN: ourISN}
	notDialed := dialHS(dialOurOpts)
	notDialed.Flags = 0
	notDialed.OurISN = ourISN
	entries := []struct {
		name string
		dial *kern.Handshake // in xlb_dials
		hs   *kern.Handshake // in xlb_hs
	}{
		{"no entry", nil, nil},
		{"a dial entry without HS_DIALED", &notDialed, nil},
		{"an earlier SYN-ACK's handshake entry", nil, &kern.Handshake{PeerISN: 1, OurISN: ourISN, Ns: 5}},
	}
	setup := func(t *testing.T, dial, hs *kern.Handshake) *dataPlane {
		d := loadDialPlane(t)
		d.addWorker(workerAddr, dialWorker)
		d.setPortMark(poolAddr.Port(), true)
		if dial != nil {
			d.putDial(workerKey, *dial)
		}
		if hs != nil {
			v, _ := hs.MarshalBinary()
			if err := d.objs.Handshakes.Update(keyBytes(t, workerKey), v, ebpf.UpdateAny); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	for _, e := range entries {
		t.Run(e.name+": SYN-ACK passed and learned", func(t *testing.T) {
			d := setup(t, e.dial, e.hs)
			in := synack.build()
			v, out, delta := d.run(in)
			checkVerdict(t, v, xdpPass)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterWorkerSynack, kern.CounterPass)
			if string(out) != string(in) {
				t.Error("SYN-ACK was changed")
			}
			got, ok := d.handshake(workerKey)
			got.Ns = 0
			if !ok || got != learned {
				t.Errorf("handshake (present %v):\n got  %+v\n want %+v", ok, got, learned)
			}
			checkDial(t, d, workerKey, e.dial)
			if _, ok := d.leg(workerKey); ok {
				t.Error("a leg was made from an ordinary SYN-ACK")
			}
			checkPooled(t, d, dialWorker)
		})
		for _, s := range []struct {
			what string
			s    seg
		}{
			{"RST+ACK", seg{ack: ourISN + 1, flags: tcpRST | tcpACK}},
			{"pure ACK", seg{seq: 0x7000_0000, ack: ourISN + 1, flags: tcpACK, win: 502, opts: nopTS(5555, 4444)}},
		} {
			t.Run(e.name+": "+s.what+" foreign", func(t *testing.T) {
				d := setup(t, e.dial, e.hs)
				in := fromWorker(s.s).build()
				v, out, delta := d.run(in)
				checkVerdict(t, v, xdpPass)
				checkCounters(t, delta, kern.CounterTCP, kern.CounterForeign, kern.CounterPass)
				if string(out) != string(in) {
					t.Errorf("%s was changed", s.what)
				}
				checkDial(t, d, workerKey, e.dial)
				got, ok := d.handshake(workerKey)
				if ok != (e.hs != nil) || ok && got != *e.hs {
					t.Errorf("handshake entry changed: %+v (present %v), was %v", got, ok, e.hs)
				}
			})
		}
	}

	t.Run("SYN-ACK again on a leg with a socket: the stack's", func(t *testing.T) {
		d := loadDialPlane(t)
		d.addWorker(workerAddr, dialWorker)
		w := stdWorkerLeg() // no LEG_OPT_NOSOCK
		d.putLeg(workerKey, w)
		in := fromWorker(seg{seq: w.PeerHi - 1, ack: w.SndNxt, flags: tcpSYN | tcpACK, win: 65160,
			opts: linuxSynAck(1400, w.PeerTSval, w.OurTSval, 9)}).build()
		v, out, delta := d.run(in)
		checkVerdict(t, v, xdpPass)
		checkCounters(t, delta, kern.CounterTCP, kern.CounterPass)
		if string(out) != string(in) {
			t.Error("SYN-ACK was changed")
		}
		checkLeg(t, "worker leg", d.mustLeg(workerKey), w)
	})
}

// TestDialedReplacesDeadLeg: a finished worker leg of the same 4-tuple may
// linger (dead, until user space forgets it) when the port is dialed again:
// the SYN-ACK of the new connection replaces it, binding and all, with the
// new idle leg. A live leg of the 4-tuple is not replaced.
func TestDialedReplacesDeadLeg(t *testing.T) {
	t.Run("dead leg replaced", func(t *testing.T) {
		d := loadDialPlane(t)
		old := stdWorkerLeg()
		old.State = kern.LegDead
		d.putLeg(workerKey, old)
		_, toClient := oracleBind(clientKey, httpClient(stdClientLeg()), workerKey, old)
		d.putBind(workerKey, toClient)
		d.dial(workerKey, dialHS(dialOurOpts))

		in := dialSynAck(linuxSynAck(1400, dialPeerTS, dialTSval, 9)).build()
		v, out, delta := d.run(in)
		checkVerdict(t, v, xdpTX)
		checkCounters(t, delta, kern.CounterTCP, kern.CounterWorkerSynack, kern.CounterDialed, kern.CounterTX)
		checkReply(t, in, out, dialedLeg(), dialISN+1, tcpACK)
		checkLeg(t, "leg of the 4-tuple", d.mustLeg(workerKey), dialedLeg())
		if b, ok := d.bind(workerKey); ok {
			t.Errorf("the dead leg's binding is left: %+v", b)
		}
		checkDial(t, d, workerKey, nil)
		poolDialed(t, d)
	})

	t.Run("live leg kept", func(t *testing.T) {
		d := loadDialPlane(t)
		old := stdWorkerLeg()
		old.State = kern.LegClosing
		d.putLeg(workerKey, old)
		hs := dialHS(dialOurOpts)
		d.dial(workerKey, hs)
		v, _, _ := d.run(dialSynAck(linuxSynAck(1400, dialPeerTS, dialTSval, 9)).build())
		if v == xdpTX {
			t.Error("a SYN-ACK on a live leg was answered as a dialed one")
		}
		checkLeg(t, "live leg", d.mustLeg(workerKey), old)
		checkDial(t, d, workerKey, &hs)
		checkPooled(t, d, dialWorker)
	})
}

// TestDialedDeadLegAnswers: the RST and the TIME-WAIT's ACK that answer a
// dialed SYN, while the finished leg of the same 4-tuple (and its binding)
// lingers dead, are answered as without it (TestDialedRefused,
// TestDialedTimeWait), not dropped as the dead leg's. The TIME-WAIT case is
// the likely one: the worker closed the old connection (the active closer
// keeps TIME-WAIT), user space freed the port on the leg's event, and the
// dead leg lingers until user space forgets it.
func TestDialedDeadLegAnswers(t *testing.T) {
	const twAck = 0x3000_0000
	tests := []struct {
		name   string
		s      seg
		v      uint32
		flag   uint32
		counts []kern.Counter
	}{
		{"RST+ACK of our SYN", seg{ack: dialISN + 1, flags: tcpRST | tcpACK}, xdpDrop, kern.HSRefused,
			[]kern.Counter{kern.CounterTCP, kern.CounterDialReset, kern.CounterDrop}},
		{"TIME-WAIT ACK", seg{seq: 0x7000_0000, ack: twAck, flags: tcpACK, win: 502, opts: nopTS(5555, 4444)}, xdpTX, kern.HSRetry,
			[]kern.Counter{kern.CounterTCP, kern.CounterDialReset, kern.CounterTX}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDialPlane(t)
			old := stdWorkerLeg()
			old.State = kern.LegDead
			d.putLeg(workerKey, old)
			_, toClient := oracleBind(clientKey, httpClient(stdClientLeg()), workerKey, old)
			d.putBind(workerKey, toClient)
			hs := dialHS(dialOurOpts)
			d.dial(workerKey, hs)
			in := fromWorker(tc.s).build()
			v, out, delta := d.run(in)
			checkCounters(t, delta, tc.counts...)
			hs.Flags |= tc.flag
			checkDial(t, d, workerKey, &hs)
			checkVerdict(t, v, tc.v)
			if tc.v == xdpTX {
				checkReply(t, in, out, kern.Leg{OurTSval: 4444, PeerTSval: 5555}, twAck, tcpRST)
			}
		})
	}
}

// TestDialedTableFull: a dialed SYN-ACK that finds no room in the leg table
// is reset (the worker forgets the connection) and the dial marked refused.
func TestDialedTableFull(t *testing.T) {
	d := loadDialPlane(t)
	t.Cleanup(d.reset)
	hs := dialHS(dialOurOpts)
	d.dial(workerKey, hs)
	d.fillLegs()
	in := dialSynAck(linuxSynAck(1400, dialPeerTS, dialTSval, 9)).build()
	v, out, delta := d.run(in)
	checkVerdict(t, v, xdpTX)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterLegsFull, kern.CounterTX)
	// The RST the leg would have sent: seq our ISN + 1, in the worker's
	// window (it is in SYN-RECEIVED).
	checkReply(t, in, out, dialedLeg(), dialISN+1, tcpRST)
	if _, ok := d.leg(workerKey); ok {
		t.Error("a leg was made in a full table")
	}
	hs.Flags |= kern.HSRefused
	checkDial(t, d, workerKey, &hs)
	checkPooled(t, d, dialWorker)
}
