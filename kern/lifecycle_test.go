package kern_test

// Fixtures 5 and 6: stale segments answered on unbound legs, FIN and RST on
// bound pairs, FIN on an idle worker leg.

import (
	"net/netip"
	"testing"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
)

// checkReply checks an answer the program built itself from `in` on leg l:
// addresses, ports and MACs swapped, seq, ack = l.PeerHi, flags, TS option
// (l.OurTSval, l.PeerTSval) iff the input had TS, nothing else, valid
// checksums.
func checkReply(t testing.TB, in, out []byte, l kern.Leg, seq uint32, flags uint8) {
	t.Helper()
	ip, op := mustParse(t, in), mustParse(t, out)
	check := func(name string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("reply %s: got %v, want %v", name, got, want)
		}
	}
	check("eth dst", op.ethDst, ip.ethSrc)
	check("eth src", op.ethSrc, ip.ethDst)
	check("source", op.src, ip.dst)
	check("destination", op.dst, ip.src)
	check("seq", op.seq, seq)
	check("ack", op.ack, l.PeerHi)
	check("flags", op.flags, flags)
	check("window", op.win, uint16(l.SndWin))
	check("ttl", op.ttl, uint8(64))
	check("payload bytes", len(op.payload), 0)
	check("has TS", op.hasTS, ip.hasTS)
	wantDoff := 20
	if ip.hasTS {
		wantDoff = 32
		check("TSval", op.tsval, l.OurTSval)
		check("TSecr", op.tsecr, l.PeerTSval)
		check("TS options", op.nTS, 1)
	}
	check("doff", op.doff, wantDoff)
	check("SACK blocks", len(op.sack), 0)
	check("tot_len", op.totLen, ipLen+wantDoff)
	check("frame length", len(out), 14+ipLen+wantDoff)
}

func TestStaleSegmentAnswered(t *testing.T) {
	w, c := stdWorkerLeg(), stdClientLeg()
	tests := []struct {
		name string
		key  kern.LegKey
		leg  kern.Leg
		s    seg
	}{
		{"worker retransmits acknowledged data", workerKey, w, fromWorker(seg{seq: w.PeerHi - 1000, ack: w.PeerAcked, flags: tcpACK | tcpPSH, win: 128,
			opts: nopTS(w.PeerTSval-5, w.OurTSval-5), payload: make([]byte, 500)})},
		{"data ending exactly at peer_hi", workerKey, w, fromWorker(seg{seq: w.PeerHi - 500, ack: w.PeerAcked, flags: tcpACK, win: 128,
			opts: nopTS(w.PeerTSval, w.OurTSval), payload: make([]byte, 500)})},
		{"without timestamps", workerKey, w, fromWorker(seg{seq: w.PeerHi - 1000, ack: w.PeerAcked, flags: tcpACK, win: 128,
			payload: make([]byte, 500)})},
		{"SACK and TS, Ethernet padding", workerKey, w, fromWorker(seg{seq: w.PeerHi - 1000, ack: w.PeerAcked, flags: tcpACK, win: 128,
			opts:    cat(nopTS(w.PeerTSval, w.OurTSval), optNOP, optNOP, optSACK([2]uint32{w.PeerAcked + 10, w.PeerAcked + 20})),
			payload: make([]byte, 300), pad: 8})},
		{"TS at an odd offset", workerKey, w, fromWorker(seg{seq: w.PeerHi - 1000, ack: w.PeerAcked, flags: tcpACK, win: 128,
			opts: cat(optNOP, optTS(w.PeerTSval, w.OurTSval), optNOP), payload: make([]byte, 33)})},
		{"idle client leg", clientKey, c, fromClient(seg{seq: c.PeerHi - 100, ack: c.PeerAcked, flags: tcpACK, win: 502,
			opts: nopTS(c.PeerTSval, c.OurTSval), payload: make([]byte, 100)})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			d.putLeg(tc.key, tc.leg)
			in := tc.s.build()
			v, out, delta := d.run(in)
			checkVerdict(t, v, xdpTX)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterStaleAcked, kern.CounterTX)
			checkReply(t, in, out, tc.leg, tc.leg.SndNxt, tcpACK)
			checkLeg(t, "leg", d.mustLeg(tc.key), tc.leg)
			checkEvents(t, d.drainEvents())
		})
	}
}

// closeStep is one segment of a close: the binding it goes through, the
// forward counter, and whether it is the last ACK that finishes the pair.
type closeStep struct {
	s        seg
	b        kern.Binding
	fwd      kern.Counter
	closeAll bool
}

// TestCloseBothFINs plays a whole close of a bound pair, from either side:
// FIN, the other side's FIN+ACK, the last ACK.
func TestCloseBothFINs(t *testing.T) {
	for _, first := range []string{"client", "worker"} {
		t.Run(first+" closes first", func(t *testing.T) {
			d := loadDataPlane(t)
			c, w := stdClientLeg(), stdWorkerLeg()
			toWorker, toClient := d.bindPair(clientKey, c, workerKey, w)
			cFIN := fromClient(seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpFIN | tcpACK, win: 502, opts: nopTS(c.PeerTSval+1, c.OurTSval)})
			wFIN := fromWorker(seg{seq: w.PeerHi, ack: w.PeerAcked, flags: tcpFIN | tcpACK, win: 128, opts: nopTS(w.PeerTSval+1, w.OurTSval)})
			// What each side has been sent, in its own space, after the
			// other's FIN went through the binding.
			cFINEnd := c.PeerHi + 1 + toWorker.SeqOff // in the worker's space
			wFINEnd := w.PeerHi + 1 + toClient.SeqOff // in the client's space

			var steps []closeStep
			if first == "client" {
				wFIN.ack = cFINEnd
				steps = append(steps,
					closeStep{cFIN, toWorker, kern.CounterFwdToWorker, false},
					closeStep{wFIN, toClient, kern.CounterFwdToClient, false},
					closeStep{fromClient(seg{seq: c.PeerHi + 1, ack: wFINEnd, flags: tcpACK, win: 502, opts: nopTS(c.PeerTSval+2, c.OurTSval)}), toWorker, kern.CounterFwdToWorker, true},
				)
			} else {
				cFIN.ack = wFINEnd
				steps = append(steps,
					closeStep{wFIN, toClient, kern.CounterFwdToClient, false},
					closeStep{cFIN, toWorker, kern.CounterFwdToWorker, false},
					closeStep{fromWorker(seg{seq: w.PeerHi + 1, ack: cFINEnd, flags: tcpACK, win: 128, opts: nopTS(w.PeerTSval+2, w.OurTSval)}), toClient, kern.CounterFwdToClient, true},
				)
			}
			for i, st := range steps {
				in := st.s.build()
				v, out, delta := d.run(in)
				checkVerdict(t, v, xdpPass)
				checkTranslated(t, in, out, st.b)
				if st.closeAll {
					checkCounters(t, delta, kern.CounterTCP, st.fwd, kern.CounterLegClosed, kern.CounterLegClosed, kern.CounterPass)
					evs := d.drainEvents()
					if len(evs) != 2 || evs[0].Type != kern.EventLegClosed || evs[1].Type != kern.EventLegClosed ||
						!(evs[0].Key == clientKey && evs[1].Key == workerKey || evs[0].Key == workerKey && evs[1].Key == clientKey) {
						t.Errorf("step %d: events %v, want leg-closed for both legs", i, eventSummary(evs))
					}
					for _, e := range evs {
						if e.State != kern.LegBound {
							t.Errorf("leg-closed event of %s reports state %s, want bound (the state it died in)", e.Key, e.State)
						}
					}
				} else {
					checkCounters(t, delta, kern.CounterTCP, st.fwd, kern.CounterPass)
					checkEvents(t, d.drainEvents())
				}
			}
			gc, gw := d.mustLeg(clientKey), d.mustLeg(workerKey)
			if gc.State != kern.LegDead || gw.State != kern.LegDead {
				t.Errorf("after the close: client %s, worker %s; want both dead", gc.State, gw.State)
			}
			if gc.RxFlags&kern.RxFIN == 0 || gw.RxFlags&kern.RxFIN == 0 {
				t.Errorf("rx flags client %#x worker %#x; want FIN on both", gc.RxFlags, gw.RxFlags)
			}
			if gc.PeerHi != c.PeerHi+1 || gw.PeerHi != w.PeerHi+1 {
				t.Errorf("peer_hi client %#x worker %#x; want each FIN counted once", gc.PeerHi, gw.PeerHi)
			}
		})
	}
}

// One FIN and its ACK do not finish the pair: the other direction is open.
func TestHalfClose(t *testing.T) {
	d := loadDataPlane(t)
	c, w := stdClientLeg(), stdWorkerLeg()
	toWorker, _ := d.bindPair(clientKey, c, workerKey, w)
	d.run(fromClient(seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpFIN | tcpACK, win: 502, opts: nopTS(c.PeerTSval, c.OurTSval)}).build())
	d.run(fromWorker(seg{seq: w.PeerHi, ack: c.PeerHi + 1 + toWorker.SeqOff, flags: tcpACK, win: 128, opts: nopTS(w.PeerTSval, w.OurTSval)}).build())
	d.run(fromClient(seg{seq: c.PeerHi + 1, ack: c.PeerAcked, flags: tcpACK, win: 502, opts: nopTS(c.PeerTSval, c.OurTSval)}).build())
	if gc, gw := d.mustLeg(clientKey), d.mustLeg(workerKey); gc.State != kern.LegBound || gw.State != kern.LegBound {
		t.Errorf("half-closed pair: client %s, worker %s; want both bound", gc.State, gw.State)
	}
	checkEvents(t, d.drainEvents())
}

func TestRST(t *testing.T) {
	c, w := stdClientLeg(), stdWorkerLeg()
	tests := []struct {
		name     string
		s        seg
		toWorker bool
		exact    bool
	}{
		{"client RST, exact seq", seg{seq: c.PeerHi, flags: tcpRST, win: 0}, true, true},
		{"client RST+ACK, exact seq", seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpRST | tcpACK, win: 0}, true, true},
		{"worker RST, exact seq", seg{seq: w.PeerHi, flags: tcpRST, win: 0}, false, true},
		{"client RST, seq ahead in the window", seg{seq: c.PeerHi + 1000, flags: tcpRST, win: 0}, true, false},
		{"client RST+ACK, seq ahead, acks new data", seg{seq: c.PeerHi + 1, ack: c.PeerAcked + 100, flags: tcpRST | tcpACK, win: 0,
			opts: nopTS(c.PeerTSval+1, c.OurTSval)}, true, false},
		{"client RST, seq behind", seg{seq: c.PeerHi - 1, flags: tcpRST, win: 0}, true, false},
		{"worker RST, seq ahead", seg{seq: w.PeerHi + 5, flags: tcpRST, win: 0}, false, false},
		{"client RST with payload ending at peer_hi", seg{seq: c.PeerHi - 4, flags: tcpRST, win: 0, payload: []byte("oops")}, true, false},
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
			checkTranslated(t, in, out, b)
			gc, gw := d.mustLeg(clientKey), d.mustLeg(workerKey)
			if tc.exact {
				checkCounters(t, delta, kern.CounterTCP, fwd, kern.CounterLegClosed, kern.CounterLegClosed, kern.CounterPass)
				if gc.State != kern.LegDead || gw.State != kern.LegDead {
					t.Errorf("after RST: client %s, worker %s; want both dead", gc.State, gw.State)
				}
				if sender := map[bool]kern.Leg{true: gc, false: gw}[tc.toWorker]; sender.RxFlags&kern.RxRST == 0 {
					t.Errorf("the leg the RST came from has rx flags %#x, want RST", sender.RxFlags)
				}
				if evs := d.drainEvents(); len(evs) != 2 || evs[0].Type != kern.EventLegClosed || evs[1].Type != kern.EventLegClosed {
					t.Errorf("events %v, want two leg-closed", eventSummary(evs))
				}
				return
			}
			checkCounters(t, delta, kern.CounterTCP, kern.CounterRSTIgnored, fwd, kern.CounterPass)
			checkLeg(t, "client leg", gc, before[clientKey])
			checkLeg(t, "worker leg", gw, before[workerKey])
			checkEvents(t, d.drainEvents())
		})
	}
}

// RST on an unbound leg: exact seq retires the leg, anything else is
// ignored; both are dropped (no socket on our side wants them).
func TestRSTUnbound(t *testing.T) {
	w := stdWorkerLeg()
	for _, tc := range []struct {
		name  string
		seq   uint32
		exact bool
	}{{"exact", w.PeerHi, true}, {"ahead", w.PeerHi + 100, false}, {"behind", w.PeerHi - 100, false}} {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			d.putLeg(workerKey, w)
			v, _, delta := d.run(fromWorker(seg{seq: tc.seq, flags: tcpRST}).build())
			checkVerdict(t, v, xdpDrop)
			got := d.mustLeg(workerKey)
			if tc.exact {
				checkCounters(t, delta, kern.CounterTCP, kern.CounterLegClosed, kern.CounterDeadLeg, kern.CounterDrop)
				if got.State != kern.LegDead || got.RxFlags&kern.RxRST == 0 {
					t.Errorf("state %s, rx flags %#x; want dead with RST", got.State, got.RxFlags)
				}
				evs := d.drainEvents()
				checkEvents(t, evs, kern.Event{Type: kern.EventLegClosed, Key: workerKey})
				if len(evs) == 1 && evs[0].State != kern.LegIdle {
					t.Errorf("leg-closed reports state %s, want idle", evs[0].State)
				}
				return
			}
			checkCounters(t, delta, kern.CounterTCP, kern.CounterRSTIgnored, kern.CounterDrop)
			checkLeg(t, "worker leg", got, w)
			checkEvents(t, d.drainEvents())
		})
	}
}

func TestIdleWorkerFIN(t *testing.T) {
	d := loadDataPlane(t)
	w := stdWorkerLeg()
	d.putLeg(workerKey, w)
	d.pushIdle(workerKey)

	fin := fromWorker(seg{seq: w.PeerHi, ack: w.SndNxt, flags: tcpFIN | tcpACK, win: 128, opts: nopTS(w.PeerTSval+10, w.OurTSval)}).build()
	v, out, delta := d.run(fin)
	checkVerdict(t, v, xdpTX)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterFINAnswered, kern.CounterTX)
	want := w
	want.State = kern.LegClosing
	want.PeerHi = w.PeerHi + 1
	want.PeerTSval = w.PeerTSval + 10
	want.RxFlags = kern.RxFIN
	want.SndNxt = w.SndNxt + 1
	checkLeg(t, "after the FIN", d.mustLeg(workerKey), want)
	reply := want
	checkReply(t, fin, out, reply, w.SndNxt, tcpFIN|tcpACK)
	checkEvents(t, d.drainEvents())

	// The worker did not get our FIN+ACK and sends its FIN again: same answer.
	v, out, delta = d.run(fin)
	checkVerdict(t, v, xdpTX)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterFINAnswered, kern.CounterTX)
	checkReply(t, fin, out, reply, w.SndNxt, tcpFIN|tcpACK)
	checkLeg(t, "after the FIN again", d.mustLeg(workerKey), want)

	// A closing leg is never handed to a client.
	c := stdClientLeg()
	d.putLeg(clientKey, c)
	v, _, delta = d.run(fromClient(seg{seq: c.PeerHi, ack: c.SndNxt, flags: tcpACK, win: 502, opts: nopTS(c.PeerTSval, c.OurTSval), payload: request}).build())
	checkVerdict(t, v, xdpDrop)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterNoIdleLeg, kern.CounterDrop)
	d.drainEvents()

	// The ACK of our FIN finishes the leg.
	v, _, delta = d.run(fromWorker(seg{seq: w.PeerHi + 1, ack: w.SndNxt + 1, flags: tcpACK, win: 128, opts: nopTS(w.PeerTSval+11, w.OurTSval)}).build())
	checkVerdict(t, v, xdpDrop)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterLegClosed, kern.CounterUnboundACK, kern.CounterDrop)
	if got := d.mustLeg(workerKey); got.State != kern.LegDead {
		t.Errorf("after the last ACK: %s, want dead", got.State)
	}
	evs := d.drainEvents()
	checkEvents(t, evs, kern.Event{Type: kern.EventLegClosed, Key: workerKey})
	if len(evs) == 1 && evs[0].State != kern.LegClosing {
		t.Errorf("leg-closed reports state %s, want closing", evs[0].State)
	}

	// The FIN again on the dead leg (duplicated, or our ACK of it lost)
	// is acknowledged, as a TIME-WAIT would; data is dropped.
	v, out, delta = d.run(fin)
	checkVerdict(t, v, xdpTX)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterFINAnswered, kern.CounterTX)
	dead := d.mustLeg(workerKey)
	checkReply(t, fin, out, dead, dead.SndNxt, tcpACK)
	v, _, delta = d.run(fromWorker(seg{seq: w.PeerHi + 1, ack: w.SndNxt + 1, flags: tcpACK, win: 128,
		opts: nopTS(w.PeerTSval+12, w.OurTSval), payload: []byte("late")}).build())
	checkVerdict(t, v, xdpDrop)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterDeadLeg, kern.CounterDrop)
}

// New data from a worker on an idle leg cannot line up with anything: the
// leg is retired (user space ends its connection with a FIN).
func TestUnsolicitedWorkerData(t *testing.T) {
	d := loadDataPlane(t)
	w := stdWorkerLeg()
	d.putLeg(workerKey, w)
	v, _, delta := d.run(fromWorker(seg{seq: w.PeerHi, ack: w.SndNxt, flags: tcpACK, win: 128, opts: nopTS(w.PeerTSval, w.OurTSval), payload: []byte("late")}).build())
	checkVerdict(t, v, xdpDrop)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterRetired, kern.CounterUnsolicited, kern.CounterDrop)
	if got := d.mustLeg(workerKey); got.State != kern.LegDead {
		t.Errorf("state %s, want dead", got.State)
	}
	d.checkRetired("unsolicited data", workerKey)
	checkEvents(t, d.drainEvents())

	// A pure ACK on an idle leg is dropped and changes nothing but the
	// positions it carries.
	d = loadDataPlane(t)
	d.putLeg(workerKey, w)
	v, _, delta = d.run(fromWorker(seg{seq: w.PeerHi, ack: w.SndNxt, flags: tcpACK, win: 99, opts: nopTS(w.PeerTSval+1, w.OurTSval)}).build())
	checkVerdict(t, v, xdpDrop)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterUnboundACK, kern.CounterDrop)
	want := w
	want.PeerTSval++
	want.PeerWin = 99
	checkLeg(t, "worker leg", d.mustLeg(workerKey), want)
}

// An implausible segment on an unbound leg is dropped, counted once.
func TestImplausibleUnbound(t *testing.T) {
	d := loadDataPlane(t)
	w := stdWorkerLeg()
	d.putLeg(workerKey, w)
	v, _, delta := d.run(fromWorker(seg{seq: w.PeerHi + 0x4000_0000, ack: w.SndNxt, flags: tcpACK, win: 128, payload: []byte("x")}).build())
	checkVerdict(t, v, xdpDrop)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterImplausible, kern.CounterDrop)
	checkLeg(t, "worker leg", d.mustLeg(workerKey), w)
}

// A RST carrying data on an idle client leg is a RST: it neither binds the
// leg to a worker nor gets answered as stale data.
func TestRSTWithDataUnbound(t *testing.T) {
	c := stdClientLeg()
	for _, tc := range []struct {
		name  string
		seq   uint32
		exact bool
	}{{"new data, exact seq", c.PeerHi, true}, {"old data", c.PeerHi - uint32(len(request)), false}} {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			d.putLeg(clientKey, c)
			d.putLeg(workerKey, stdWorkerLeg())
			d.pushIdle(workerKey)
			v, _, delta := d.run(fromClient(seg{seq: tc.seq, ack: c.SndNxt, flags: tcpRST | tcpACK, win: 0, payload: request}).build())
			checkVerdict(t, v, xdpDrop)
			if tc.exact {
				checkCounters(t, delta, kern.CounterTCP, kern.CounterLegClosed, kern.CounterDeadLeg, kern.CounterDrop)
				checkEvents(t, d.drainEvents(), kern.Event{Type: kern.EventLegClosed, Key: clientKey})
			} else {
				checkCounters(t, delta, kern.CounterTCP, kern.CounterRSTIgnored, kern.CounterDrop)
				checkLeg(t, "client leg", d.mustLeg(clientKey), c)
			}
			if _, ok := d.bind(clientKey); ok {
				t.Error("a RST bound the leg")
			}
			if q := d.idleQueue(); len(q) != 1 {
				t.Errorf("idle queue %v: a RST took a worker leg", q)
			}
		})
	}
}

// TestForgetFinished: CTL_FORGET deletes a finished leg and its binding
// only while the leg under the key is still the one reported (dead or stuck
// closing, at the peer_hi of its report); a new connection's leg under the
// same key (a client reconnecting from the same port), and any handshake,
// stay.
func TestForgetFinished(t *testing.T) {
	c := stdClientLeg()
	tests := []struct {
		name   string
		state  kern.LegState
		peerHi uint32 // of the command
		gone   bool
	}{
		{"dead, as reported: forgotten", kern.LegDead, c.PeerHi, true},
		{"stuck closing, as reported: forgotten", kern.LegClosing, c.PeerHi, true},
		{"dead, but moved since its report: kept", kern.LegDead, c.PeerHi - 1, false},
		{"a new connection's leg: kept", kern.LegIdle, c.PeerHi, false},
		{"a new connection's bound leg: kept", kern.LegBound, c.PeerHi, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			l := c
			l.State = tc.state
			d.putLeg(clientKey, l)
			d.putBind(clientKey, kern.Binding{To: workerKey})
			// A handshake under the key is a new connection's: never touched.
			hs := make([]byte, kern.HandshakeSize)
			hs[0] = 77
			if err := d.objs.Handshakes.Update(keyBytes(t, clientKey), hs, ebpf.UpdateAny); err != nil {
				t.Fatal(err)
			}
			if got := d.ctl2(kern.CtlMsg{Op: kern.CtlForget, Key: clientKey, PeerHi: tc.peerHi}); got != tc.gone {
				t.Errorf("CTL_FORGET returned %v, want %v", got, tc.gone)
			}
			_, legThere := d.leg(clientKey)
			_, bindThere := d.bind(clientKey)
			if legThere == tc.gone || bindThere == tc.gone {
				t.Errorf("leg present %v, binding present %v; want both %v", legThere, bindThere, !tc.gone)
			}
			if h, ok := d.handshake(clientKey); !ok || h.PeerISN != 77 {
				t.Error("the handshake under the key was touched")
			}
		})
	}
}

// ctlItems runs the control program on msg followed by items: whether the
// message's own leg was done, and the items as the program left them.
func (d *dataPlane) ctlItems(msg kern.CtlMsg, items []kern.CtlItem) (bool, []kern.CtlItem) {
	d.t.Helper()
	msg.Items = uint32(len(items))
	b, err := msg.MarshalBinary()
	if err != nil {
		d.t.Fatal(err)
	}
	for _, it := range items {
		ib, err := it.MarshalBinary()
		if err != nil {
			d.t.Fatal(err)
		}
		b = append(b, ib...)
	}
	res, err := d.objs.Ctl.TestRun(&ebpf.TestRunOptions{Data: b})
	if err != nil {
		d.t.Fatal(err)
	}
	out := make([]kern.CtlItem, len(items))
	for i := range out {
		if err := out[i].UnmarshalBinary(res.Data[kern.CtlMsgSize+i*kern.CtlItemSize:]); err != nil {
			d.t.Fatal(err)
		}
	}
	return res.Return == xdpPass, out
}

// TestCtlItems: CTL_FORGET and CTL_POOL act on the message's own leg and
// on each item after it, as on one leg, and say what became of each
// (done, refused, no leg); a run takes XLB_CTL_ITEMS items, no more.
func TestCtlItems(t *testing.T) {
	itemKey := func(i int) kern.LegKey {
		return kern.LegKey{Peer: netip.AddrPortFrom(fixtureAddr(netip.AddrFrom4([4]byte{10, 8, 0, byte(i)})), 1000), Local: serviceAddr}
	}
	t.Run("forget", func(t *testing.T) {
		d := loadDataPlane(t)
		c := stdClientLeg()
		dead := c
		dead.State = kern.LegDead
		d.putLeg(clientKey, dead)
		d.putBind(clientKey, kern.Binding{To: workerKey})
		live := c
		live.State = kern.LegBound
		d.putLeg(itemKey(1), dead)
		d.putBind(itemKey(1), kern.Binding{To: workerKey})
		d.putLeg(itemKey(2), dead)
		d.putLeg(itemKey(3), live)
		items := []kern.CtlItem{
			{Key: itemKey(1), Arg: c.PeerHi},     // dead, as reported
			{Key: itemKey(2), Arg: c.PeerHi - 1}, // moved since its report
			{Key: itemKey(3), Arg: c.PeerHi},     // a live leg
			{Key: itemKey(4), Arg: c.PeerHi},     // none
		}
		own, out := d.ctlItems(kern.CtlMsg{Op: kern.CtlForget, Key: clientKey, PeerHi: c.PeerHi}, items)
		if !own {
			t.Error("the message's own leg was not forgotten")
		}
		want := []uint32{kern.CtlDone, kern.CtlRefused, kern.CtlRefused, kern.CtlNoLeg}
		for i, it := range out {
			if it.Done != want[i] {
				t.Errorf("item %d (%s): %d, want %d", i, it.Key, it.Done, want[i])
			}
		}
		for _, k := range []kern.LegKey{clientKey, itemKey(1)} {
			if _, ok := d.leg(k); ok {
				t.Errorf("leg %s kept", k)
			}
			if _, ok := d.bind(k); ok {
				t.Errorf("binding of %s kept", k)
			}
		}
		for _, k := range []kern.LegKey{itemKey(2), itemKey(3)} {
			if _, ok := d.leg(k); !ok {
				t.Errorf("leg %s forgotten", k)
			}
		}
	})
	t.Run("pool", func(t *testing.T) {
		d := loadDataPlane(t)
		w := stdWorkerLeg()
		w.Worker = dialWorker
		w.State = kern.LegNew
		wk := func(i int) kern.LegKey {
			return kern.LegKey{Peer: workerAddr, Local: netip.AddrPortFrom(poolAddr.Addr(), uint16(40000+i))}
		}
		d.putLeg(wk(1), w)
		d.putLeg(wk(2), w)
		idle := w
		idle.State = kern.LegIdle
		d.putLeg(wk(3), idle)
		other := w
		other.Worker = dialWorker + 1
		d.putLeg(wk(4), other)
		items := []kern.CtlItem{
			{Key: wk(2), Arg: dialWorker}, // new: pooled
			{Key: wk(3), Arg: dialWorker}, // idle already
			{Key: wk(4), Arg: dialWorker}, // another worker's
			{Key: wk(5), Arg: dialWorker}, // none
		}
		own, out := d.ctlItems(kern.CtlMsg{Op: kern.CtlPool, Key: wk(1), Worker: dialWorker}, items)
		if !own {
			t.Error("the message's own leg was not pooled")
		}
		want := []uint32{kern.CtlDone, kern.CtlRefused, kern.CtlRefused, kern.CtlNoLeg}
		for i, it := range out {
			if it.Done != want[i] {
				t.Errorf("item %d (%s): %d, want %d", i, it.Key, it.Done, want[i])
			}
		}
		checkPooled(t, d, dialWorker, wk(2), wk(1)) // a stack: the last pooled on top
	})
	t.Run("at most XLB_CTL_ITEMS", func(t *testing.T) {
		d := loadDataPlane(t)
		dead := stdClientLeg()
		dead.State = kern.LegDead
		var items []kern.CtlItem
		for i := range kern.CtlItemsMax + 2 {
			d.putLeg(itemKey(i), dead)
			items = append(items, kern.CtlItem{Key: itemKey(i), Arg: dead.PeerHi})
		}
		own, out := d.ctlItems(kern.CtlMsg{Op: kern.CtlForget}, items)
		if own {
			t.Error("a message without a leg of its own reported done")
		}
		for i, it := range out {
			_, kept := d.leg(itemKey(i))
			if in := i < kern.CtlItemsMax; in != (it.Done == kern.CtlDone) || in == kept {
				t.Errorf("item %d: done %d, leg kept %v", i, it.Done, kept)
			}
		}
	})
}
