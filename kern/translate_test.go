package kern_test

// Fixtures 2-4: binding on first data, translation of every field through a
// binding against the oracle (splice.Bind, splice.Translate), positions.

import (
	"bytes"
	"testing"

	"github.com/xlb-lb/xlb/kern"
)

var request = []byte("GET /index.html HTTP/1.1\r\nHost: service\r\n\r\n")

func TestFirstDataBinds(t *testing.T) {
	tests := []struct {
		name  string
		queue func(d *dataPlane) // fills the idle queue
	}{
		{"one idle worker leg", func(d *dataPlane) { d.pushIdle(workerKey) }},
		{"stale queue entries skipped", func(d *dataPlane) {
			// XLB_IDLE_POP_TRIES (2) entries are examined per packet.
			// The pool is last in, first out: the stale entry is on top.
			gone := kern.LegKey{Peer: workerAddr, Local: mustAddrPort("10.0.0.100:50001")}
			d.pushIdle(workerKey)
			d.pushIdleTo(gone, stdWorkerLeg().Worker) // no such leg (reaped while queued)
		}},
		{"dead queue entry skipped", func(d *dataPlane) {
			dead := kern.LegKey{Peer: workerAddr, Local: mustAddrPort("10.0.0.100:50002")}
			w := stdWorkerLeg()
			w.State = kern.LegDead
			d.putLeg(dead, w)
			d.pushIdle(workerKey)
			d.pushIdle(dead) // closed while queued, on top
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			c, w := stdClientLeg(), stdWorkerLeg()
			d.putLeg(clientKey, c)
			d.putLeg(workerKey, w)
			tc.queue(d)

			in := fromClient(seg{seq: c.PeerHi, ack: c.SndNxt, flags: tcpACK | tcpPSH, win: 502,
				opts: nopTS(c.PeerTSval+7, c.OurTSval), payload: request}).build()
			v, out, delta := d.run(in)
			checkVerdict(t, v, xdpPass)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterBind, kern.CounterFwdToWorker, kern.CounterPass)

			wantToWorker, wantToClient := oracleBind(clientKey, httpClient(c), workerKey, w)
			if got, ok := d.bind(clientKey); !ok || got != wantToWorker {
				t.Errorf("client binding:\n got  %+v (present %v)\n want %+v", got, ok, wantToWorker)
			}
			if got, ok := d.bind(workerKey); !ok || got != wantToClient {
				t.Errorf("worker binding:\n got  %+v (present %v)\n want %+v", got, ok, wantToClient)
			}
			checkTranslated(t, in, out, wantToWorker)

			wantC, wantW := firstBound(c, w, uint32(len(request)), 7)
			checkLeg(t, "client leg", d.mustLeg(clientKey), wantC)
			checkLeg(t, "worker leg", d.mustLeg(workerKey), wantW)
			if q := d.idleQueue(); len(q) != 0 {
				t.Errorf("idle queue still holds %v", q)
			}
			checkEvents(t, d.drainEvents())
		})
	}
}

func TestNoIdleLeg(t *testing.T) {
	d := loadDataPlane(t)
	c := stdClientLeg()
	d.putLeg(clientKey, c)
	// A worker leg that is busy elsewhere is in the queue by mistake: it
	// must not be taken.
	w := stdWorkerLeg()
	w.State = kern.LegClosing
	d.putLeg(workerKey, w)
	d.pushIdle(workerKey)

	firstDataNoLeg(t, d, c)
	checkLeg(t, "worker leg", d.mustLeg(workerKey), w)
	if _, ok := d.bind(clientKey); ok {
		t.Error("client leg has a binding")
	}
	checkEvents(t, d.drainEvents(), kern.Event{Type: kern.EventPoolEmpty, Key: clientKey})
}

// firstDataNoLeg sends client c's first request (c stored under clientKey)
// to pools with no idle leg, checks it is dropped and c unchanged, and
// returns the frame.
func firstDataNoLeg(t *testing.T, d *dataPlane, c kern.Leg) []byte {
	t.Helper()
	in := fromClient(seg{seq: c.PeerHi, ack: c.SndNxt, flags: tcpACK | tcpPSH, win: 502,
		opts: nopTS(c.PeerTSval+7, c.OurTSval), payload: request}).build()
	v, _, delta := d.run(in)
	checkVerdict(t, v, xdpDrop)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterNoIdleLeg, kern.CounterDrop)
	checkLeg(t, "client leg", d.mustLeg(clientKey), c)
	return in
}

// pair describes a bound pair for the translation table.
type pair struct {
	c, w kern.Leg
}

func stdPair() pair { return pair{stdClientLeg(), stdWorkerLeg()} }

// wrapPair puts every sequence and timestamp position a few bytes below 2^32,
// so that offsets, translated numbers and SACK edges wrap.
func wrapPair() pair {
	p := stdPair()
	p.c.PeerHi, p.c.PeerAcked, p.c.SndNxt = 0xffffff00, 0xfffffff0, 0xfffffff0
	p.c.PeerTSval, p.c.OurTSval = 0xfffffffe, 0x10
	p.w.PeerHi, p.w.PeerAcked, p.w.SndNxt = 0x80, 0x7fffff00, 0x7fffff00
	p.w.PeerTSval, p.w.OurTSval = 0x7ffffff0, 0xfffffff8
	return p
}

func TestTranslateBound(t *testing.T) {
	sack := func(base uint32, n int) [][2]uint32 {
		var b [][2]uint32
		for i := range n {
			b = append(b, [2]uint32{base + uint32(1000*i), base + uint32(1000*i+500)})
		}
		return b
	}
	c, w := stdClientLeg(), stdWorkerLeg()
	wp := wrapPair()
	tests := []struct {
		name string
		p    pair
		s    seg // addressed by toWorker
		// toWorker: from the client; else from the worker
		toWorker bool
	}{
		{"client data NOP NOP TS", stdPair(), seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK | tcpPSH, win: 502,
			opts: nopTS(c.PeerTSval+1, c.OurTSval), payload: request}, true},
		{"client data without TS", stdPair(), seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 502,
			payload: request}, true},
		{"client data odd length", stdPair(), seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 502,
			opts: nopTS(c.PeerTSval, c.OurTSval), payload: []byte("odd")}, true},
		{"client ACK SACK 1 block", stdPair(), seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 502,
			opts: cat(nopTS(c.PeerTSval, c.OurTSval), optNOP, optNOP, optSACK(sack(c.PeerAcked+100, 1)...))}, true},
		{"client ACK SACK 2 blocks", stdPair(), seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 502,
			opts: cat(nopTS(c.PeerTSval, c.OurTSval), optNOP, optNOP, optSACK(sack(c.PeerAcked+100, 2)...))}, true},
		{"client ACK SACK 3 blocks (40 option bytes)", stdPair(), seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 502,
			opts: cat(nopTS(c.PeerTSval, c.OurTSval), optNOP, optNOP, optSACK(sack(c.PeerAcked+100, 3)...))}, true},
		{"client ACK SACK 4 blocks, no TS", stdPair(), seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 502,
			opts: cat(optNOP, optNOP, optSACK(sack(c.PeerAcked+100, 4)...))}, true},
		{"worker data NOP NOP TS", stdPair(), seg{seq: w.PeerHi, ack: w.PeerAcked, flags: tcpACK | tcpPSH, win: 128,
			opts: nopTS(w.PeerTSval+3, w.OurTSval), payload: []byte("HTTP/1.1 200 OK\r\n\r\n")}, false},
		{"worker ACK SACK 4 blocks", stdPair(), seg{seq: w.PeerHi, ack: w.PeerAcked, flags: tcpACK, win: 128,
			opts: cat(optNOP, optNOP, optSACK(sack(w.PeerAcked+10, 4)...))}, false},
		{"worker ACK SACK 3 blocks + TS", stdPair(), seg{seq: w.PeerHi, ack: w.PeerAcked, flags: tcpACK, win: 128,
			opts: cat(nopTS(w.PeerTSval, w.OurTSval), optNOP, optNOP, optSACK(sack(w.PeerAcked+10, 3)...))}, false},
		// Odd offsets: the words of TS and SACK straddle 16-bit boundaries
		// of the checksum.
		{"TS at an odd offset", stdPair(), seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 502,
			opts: cat(optNOP, optTS(c.PeerTSval, c.OurTSval), optNOP), payload: request}, true},
		{"SACK and TS at odd offsets", stdPair(), seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 502,
			opts: cat(optNOP, optSACK(sack(c.PeerAcked+100, 2)...), optTS(c.PeerTSval, c.OurTSval), optNOP)}, true},
		{"unknown option and EOL padding", stdPair(), seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 502,
			opts: cat([]byte{30, 4, 0xab, 0xcd}, nopTS(c.PeerTSval, c.OurTSval), optNOP, []byte{0}), payload: request}, true},
		{"IP options", stdPair(), seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 502,
			opts: nopTS(c.PeerTSval, c.OurTSval), ipOpts: []byte{1, 1, 1, 0}, payload: request}, true},
		{"Ethernet padding", stdPair(), seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 502, pad: 6}, true},
		// Window: client scale 7 in, worker scale 2 out.
		{"window rescaled 7 -> 2", stdPair(), seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 300,
			opts: nopTS(c.PeerTSval, c.OurTSval)}, true},
		{"window clamped to 65535", stdPair(), seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 3000,
			opts: nopTS(c.PeerTSval, c.OurTSval)}, true},
		{"window zero stays zero", stdPair(), seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 0,
			opts: nopTS(c.PeerTSval, c.OurTSval)}, true},
		// Worker scale 9 in, client scale 7 out; then a worker with scale 0
		// toward a client with scale 7: small windows round to 0 but must
		// stay open.
		{"window rescaled 9 -> 7", stdPair(), seg{seq: w.PeerHi, ack: w.PeerAcked, flags: tcpACK, win: 1000,
			opts: nopTS(w.PeerTSval, w.OurTSval)}, false},
		{"open window never becomes zero", func() pair { p := stdPair(); p.w.PeerWScale = 0; return p }(),
			seg{seq: w.PeerHi, ack: w.PeerAcked, flags: tcpACK, win: 100, opts: nopTS(w.PeerTSval, w.OurTSval)}, false},
		// Sequence space wrap.
		{"client data across the wrap", wp, seg{seq: wp.c.PeerHi, ack: wp.c.PeerAcked + 0x20, flags: tcpACK | tcpPSH, win: 502,
			opts:    cat(nopTS(wp.c.PeerTSval+5, wp.c.OurTSval), optNOP, optNOP, optSACK([2]uint32{wp.c.PeerAcked + 0x30, wp.c.PeerAcked + 0x40})),
			payload: make([]byte, 1000)}, true},
		{"worker data across the wrap", wp, seg{seq: wp.w.PeerHi, ack: wp.w.PeerAcked + 0x100, flags: tcpACK | tcpPSH, win: 128,
			opts: nopTS(wp.w.PeerTSval+0x20, wp.w.OurTSval), payload: answer(1400)}, false},
		{"FIN without ACK flag", stdPair(), seg{seq: c.PeerHi, ack: 0xdeadbeef, flags: tcpFIN, win: 502,
			opts: nopTS(c.PeerTSval, c.OurTSval)}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if family6 && len(tc.s.ipOpts) > 0 {
				t.Skip("IPv6: an extension header, which the program leaves to the stack (TestNotOurs)")
			}
			d := loadDataPlane(t)
			toWorker, toClient := d.bindPair(clientKey, tc.p.c, workerKey, tc.p.w)
			s, b, fwd := fromWorker(tc.s), toClient, kern.CounterFwdToClient
			if tc.toWorker {
				s, b, fwd = fromClient(tc.s), toWorker, kern.CounterFwdToWorker
			}
			in := s.build()
			v, out, delta := d.run(in)
			checkVerdict(t, v, xdpPass)
			checkCounters(t, delta, kern.CounterTCP, fwd, kern.CounterPass)
			checkTranslated(t, in, out, b)
			if !tc.toWorker && bytes.HasPrefix(tc.s.payload, answer(answerHead)[:answerHead-12]) {
				// A whole answer from answer(): its end is known.
				end := tc.s.seq + uint32(len(tc.s.payload))
				toWorker, toClient = answerEnd(toWorker, end), answerEnd(toClient, end)
			}
			if got, ok := d.bind(clientKey); !ok || got != toWorker {
				t.Errorf("client binding: %+v, want %+v", got, toWorker)
			}
			if got, ok := d.bind(workerKey); !ok || got != toClient {
				t.Errorf("worker binding: %+v, want %+v", got, toClient)
			}
		})
	}
}

// Translating there and back is the identity: the worker's ACK of a
// translated request reaches the client acknowledging exactly the client's
// bytes and echoing the client's own TSval (what PAWS and RTT need).
func TestTranslateRoundTrip(t *testing.T) {
	for _, p := range []pair{stdPair(), wrapPair()} {
		d := loadDataPlane(t)
		d.bindPair(clientKey, p.c, workerKey, p.w)
		in := fromClient(seg{seq: p.c.PeerHi, ack: p.c.PeerAcked, flags: tcpACK | tcpPSH, win: 502,
			opts: nopTS(p.c.PeerTSval+1, p.c.OurTSval), payload: request}).build()
		v, out, _ := d.run(in)
		checkVerdict(t, v, xdpPass)
		o := mustParse(t, out)
		// The worker acknowledges what it received, with a later TSval.
		ack := fromWorker(seg{seq: p.w.PeerHi, ack: o.seq + uint32(len(o.payload)), flags: tcpACK, win: 128,
			opts: nopTS(p.w.PeerTSval+1, o.tsval)}).build()
		v, out, _ = d.run(ack)
		checkVerdict(t, v, xdpPass)
		back := mustParse(t, out)
		if back.ack != p.c.PeerHi+uint32(len(request)) {
			t.Errorf("client gets ack %#x, want the end of its request %#x", back.ack, p.c.PeerHi+uint32(len(request)))
		}
		if back.tsecr != p.c.PeerTSval+1 {
			t.Errorf("client gets TSecr %#x, want its own TSval %#x", back.tsecr, p.c.PeerTSval+1)
		}
		if back.src != serviceAddr || back.dst != clientAddr {
			t.Errorf("answer goes %s -> %s", back.src, back.dst)
		}
	}
}

func TestPositions(t *testing.T) {
	c, w := stdClientLeg(), stdWorkerLeg()
	// Some of what was sent to the client is not acknowledged yet.
	c.PeerAcked = c.SndNxt - 5000
	tests := []struct {
		name       string
		s          seg
		toWorker   bool
		implausble bool
		want       func(c, w *kern.Leg)
	}{
		{"client data advances peer_hi, peer_acked, peer_tsval", seg{seq: c.PeerHi, ack: c.PeerAcked + 3000, flags: tcpACK, win: 77,
			opts: nopTS(c.PeerTSval+9, c.OurTSval), payload: request}, true, false, func(c, w *kern.Leg) {
			c.PeerHi += uint32(len(request))
			c.PeerAcked += 3000
			c.PeerTSval += 9
			c.PeerWin = 77
			c.Tail = 0 // no PSH: the write goes on
			w.SentHi += uint32(len(request))
		}},
		{"worker data advances the worker leg", seg{seq: w.PeerHi, ack: w.PeerAcked, flags: tcpACK, win: 60,
			opts: nopTS(w.PeerTSval+1000, w.OurTSval), payload: answer(1400)}, false, false, func(c, w *kern.Leg) {
			w.PeerHi += 1400
			w.PeerTSval += 1000
			w.PeerWin = 60
		}},
		{"old retransmission moves nothing back", seg{seq: c.PeerHi - 2000, ack: c.PeerAcked - 100, flags: tcpACK, win: 66,
			opts: nopTS(c.PeerTSval-50, c.OurTSval), payload: request}, true, false, func(c, w *kern.Leg) {
			c.PeerWin = 66
		}},
		{"FIN counts one byte", seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK | tcpFIN, win: 502,
			opts: nopTS(c.PeerTSval, c.OurTSval)}, true, false, func(c, w *kern.Leg) {
			c.PeerHi++
			c.RxFlags |= kern.RxFIN
		}},
		{"seq beyond the window: implausible", seg{seq: c.PeerHi + c.WinBound + 1, ack: c.PeerAcked, flags: tcpACK, win: 1,
			opts: nopTS(c.PeerTSval+1_000_000, c.OurTSval), payload: request}, true, true, func(c, w *kern.Leg) {}},
		{"seq far behind: implausible", seg{seq: c.PeerHi - c.WinBound - 1, ack: c.PeerAcked, flags: tcpACK, win: 1,
			opts: nopTS(c.PeerTSval+1, c.OurTSval), payload: request}, true, true, func(c, w *kern.Leg) {}},
		{"ack far away: implausible", seg{seq: c.PeerHi, ack: c.PeerAcked + 0x7000_0000, flags: tcpACK | tcpFIN, win: 1,
			opts: nopTS(c.PeerTSval+1, c.OurTSval), payload: request}, true, true, func(c, w *kern.Leg) {}},
		{"worker seq half the space away: implausible", seg{seq: w.PeerHi + 0x8000_0000, ack: w.PeerAcked, flags: tcpACK, win: 1,
			opts: nopTS(w.PeerTSval+1, w.OurTSval), payload: request}, false, true, func(c, w *kern.Leg) {}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			toWorker, toClient := d.bindPair(clientKey, c, workerKey, w)
			before := map[kern.LegKey]kern.Leg{clientKey: d.mustLeg(clientKey), workerKey: d.mustLeg(workerKey)}
			s, b, fwd := fromWorker(tc.s), toClient, kern.CounterFwdToClient
			if tc.toWorker {
				s, b, fwd = fromClient(tc.s), toWorker, kern.CounterFwdToWorker
			}
			in := s.build()
			v, out, delta := d.run(in)
			checkVerdict(t, v, xdpPass)
			if tc.implausble {
				checkCounters(t, delta, kern.CounterTCP, kern.CounterImplausible, fwd, kern.CounterPass)
			} else {
				checkCounters(t, delta, kern.CounterTCP, fwd, kern.CounterPass)
			}
			checkTranslated(t, in, out, b)
			wc, ww := before[clientKey], before[workerKey]
			tc.want(&wc, &ww)
			checkLeg(t, "client leg", d.mustLeg(clientKey), wc)
			checkLeg(t, "worker leg", d.mustLeg(workerKey), ww)
			checkEvents(t, d.drainEvents())
		})
	}
}

// Request accounting on a bound client leg (DESIGN.md "Remix at a request
// boundary"): new data that acknowledges the whole answer, after the worker
// acknowledged the whole request, starts a request; a continuation, data sent
// before the answer is fully received, or before the worker acknowledged
// every request byte, does not. The pool holds one leg, bound by the first
// request: the boundary counts the request but cannot remix.
func TestRequestBoundaries(t *testing.T) {
	d := loadDataPlane(t)
	c, w := stdClientLeg(), stdWorkerLeg()
	d.putLeg(clientKey, c)
	d.putLeg(workerKey, w)
	d.pushIdle(workerKey)
	ws0 := d.workerStats(w.Worker)
	n := uint32(len(request))
	fwdW := []kern.Counter{kern.CounterTCP, kern.CounterFwdToWorker, kern.CounterPass}
	fwdC := []kern.Counter{kern.CounterTCP, kern.CounterFwdToClient, kern.CounterPass}

	step := func(name string, frame []byte, wantRequests uint32, want ...kern.Counter) {
		t.Helper()
		v, _, delta := d.run(frame)
		checkVerdict(t, v, xdpPass)
		if got := d.mustLeg(clientKey); got.Requests != wantRequests {
			t.Errorf("%s: requests %d, want %d", name, got.Requests, wantRequests)
		}
		checkCounters(t, delta, want...)
	}
	step("first request (binds)", fromClient(seg{seq: c.PeerHi, ack: c.SndNxt, flags: tcpACK | tcpPSH, win: 502,
		opts: nopTS(c.PeerTSval+1, c.OurTSval), payload: request}).build(), 1,
		kern.CounterTCP, kern.CounterBind, kern.CounterFwdToWorker, kern.CounterPass)
	step("more of the first request", fromClient(seg{seq: c.PeerHi + n, ack: c.SndNxt, flags: tcpACK | tcpPSH, win: 502,
		opts: nopTS(c.PeerTSval+2, c.OurTSval), payload: request}).build(), 1, fwdW...)
	step("worker answers 100 bytes", fromWorker(seg{seq: w.PeerHi, ack: w.SndNxt + 2*n, flags: tcpACK | tcpPSH, win: 128,
		opts: nopTS(w.PeerTSval+1, w.OurTSval+2), payload: answer(100)}).build(), 1, fwdC...)
	step("new data acking 50 of 100 bytes", fromClient(seg{seq: c.PeerHi + 2*n, ack: c.SndNxt + 50, flags: tcpACK | tcpPSH, win: 502,
		opts: nopTS(c.PeerTSval+3, c.OurTSval), payload: request}).build(), 1,
		append(fwdW, kern.CounterStayResponse)...)
	step("data acking the whole answer, worker has not acked the last data", fromClient(seg{seq: c.PeerHi + 3*n, ack: c.SndNxt + 100,
		flags: tcpACK | tcpPSH, win: 502, opts: nopTS(c.PeerTSval+4, c.OurTSval), payload: request}).build(), 1,
		append(fwdW, kern.CounterStayRequest)...)
	step("worker acks every request byte", fromWorker(seg{seq: w.PeerHi + 100, ack: w.SndNxt + 4*n, flags: tcpACK, win: 128,
		opts: nopTS(w.PeerTSval+2, w.OurTSval+4)}).build(), 1, fwdC...)
	if got := d.mustLeg(workerKey); got.ReqMark != w.PeerHi {
		t.Errorf("req_mark %#x before the boundary, want the worker's peer_hi at the bind %#x", got.ReqMark, w.PeerHi)
	}
	step("next request: a boundary, no idle leg to move to", fromClient(seg{seq: c.PeerHi + 4*n, ack: c.SndNxt + 100, flags: tcpACK | tcpPSH, win: 502,
		opts: nopTS(c.PeerTSval+5, c.OurTSval), payload: request}).build(), 2,
		append(fwdW, kern.CounterRequest, kern.CounterRemixNoIdle)...)
	step("its retransmission: a continuation", fromClient(seg{seq: c.PeerHi + 4*n, ack: c.SndNxt + 100, flags: tcpACK | tcpPSH, win: 502,
		opts: nopTS(c.PeerTSval+5, c.OurTSval), payload: request}).build(), 2, fwdW...)
	if got := d.mustLeg(workerKey); got.ReqMark != w.PeerHi+100 {
		t.Errorf("req_mark %#x, want the worker's peer_hi at the boundary %#x", got.ReqMark, w.PeerHi+100)
	}
	if _, ok := d.bind(clientKey); !ok {
		t.Error("client leg lost its binding")
	}

	want := kern.WorkerStats{Binds: 1, Requests: 2, BytesIn: 6 * uint64(n), BytesOut: 100}
	if got := wsDelta(ws0, d.workerStats(w.Worker)); got != want {
		t.Errorf("worker stats moved %+v, want %+v", got, want)
	}
	checkEvents(t, d.drainEvents())
}

// wsDelta is how much worker stats moved from a to b.
func wsDelta(a, b kern.WorkerStats) kern.WorkerStats {
	return kern.WorkerStats{Binds: b.Binds - a.Binds, Releases: b.Releases - a.Releases, Requests: b.Requests - a.Requests,
		BytesIn: b.BytesIn - a.BytesIn, BytesOut: b.BytesOut - a.BytesOut}
}

// A client reusing the port of a finished leg starts over: the SYN forgets
// the dead leg and its binding and is learned as a new handshake.
func TestPortReuseAfterDeadLeg(t *testing.T) {
	d := loadDataPlane(t)
	c, w := stdClientLeg(), stdWorkerLeg()
	c.State = kern.LegDead
	d.putLeg(clientKey, c)
	toWorker, _ := oracleBind(clientKey, c, workerKey, w)
	d.putBind(clientKey, toWorker)
	v, _, delta := d.run(fromClient(seg{seq: 42, flags: tcpSYN, win: 1, opts: linuxSYN(1460, 1, 7)}).build())
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterSyn, kern.CounterPass)
	if _, ok := d.leg(clientKey); ok {
		t.Error("dead leg kept")
	}
	if _, ok := d.bind(clientKey); ok {
		t.Error("dead leg's binding kept")
	}
	if hs, ok := d.handshake(clientKey); !ok || hs.PeerISN != 42 {
		t.Errorf("new handshake %+v (present %v), want ISN 42", hs, ok)
	}

}

// A client reusing the port of a leg that is still live (its RST was lost,
// or its flow went to another balancer host and came back: ECMP) is
// answered as a stack answers a SYN on an established connection (RFC 5961
// 4.2): an ACK with the leg's numbers, to which the client's stack in
// SYN-SENT answers with a RST at exactly the seq the leg expects. That RST
// ends the leg; the client's next SYN starts over. Idle and bound legs
// alike; a SYN-ACK (a worker's) is not a client's new connection.
func TestPortReuseOnLiveLeg(t *testing.T) {
	syn := fromClient(seg{seq: 42, flags: tcpSYN, win: 1, opts: linuxSYN(1460, 1, 7)})
	for _, bound := range []bool{false, true} {
		t.Run(map[bool]string{false: "idle", true: "bound"}[bound], func(t *testing.T) {
			d := loadDataPlane(t)
			c := stdClientLeg()
			if bound {
				d.bindPair(clientKey, c, workerKey, stdWorkerLeg())
			} else {
				c.State = kern.LegIdle
				d.putLeg(clientKey, c)
			}
			c = d.mustLeg(clientKey)
			in := syn.build()
			v, out, delta := d.run(in)
			checkVerdict(t, v, xdpTX)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterStaleAcked, kern.CounterTX)
			checkReply(t, in, out, c, c.SndNxt, tcpACK)
			checkLeg(t, "live client leg", d.mustLeg(clientKey), c)

			// The client's stack answers the ACK with a RST at its
			// ack number: exact, it ends the leg.
			d.run(fromClient(seg{seq: c.PeerHi, flags: tcpRST, win: 0}).build())
			if got := d.mustLeg(clientKey); got.State != kern.LegDead {
				t.Fatalf("after the client's RST the leg is %s, want dead", got.State)
			}
			d.drainEvents()
			// Its SYN again: learned as a new handshake.
			v, _, _ = d.run(syn.build())
			if v != xdpTX && v != xdpPass {
				t.Fatalf("the SYN after the RST: verdict %d, want it answered or passed to the listener", v)
			}
			if _, ok := d.leg(clientKey); ok {
				t.Error("the dead leg is kept after the client's new SYN")
			}
			if hs, ok := d.handshake(clientKey); !ok || hs.PeerISN != 42 {
				t.Errorf("new handshake %+v (present %v), want ISN 42", hs, ok)
			}
		})
	}
}
