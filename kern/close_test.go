package kern_test

// Fixtures of a client's close and the fate of its worker leg: a client that
// closes (FIN) between two exchanges gives its worker leg back (the data
// plane completes its close; the worker never knows): the leg cools, then
// goes to its pool, or is retired if its worker turns out to be still
// answering. A client that leaves in the middle of an exchange, or resets,
// takes its worker leg with it (the FIN or RST goes to the worker, the pair
// ends).

import (
	"testing"

	"github.com/xlb-lb/xlb/kern"
)

// TestClientLeavesBetweenExchanges: after a whole answer, acknowledged on
// the FIN itself or before it, the client's FIN is answered by the data
// plane and W1 cools with its positions; the client's last ACK ends the
// client leg. A late retransmission from W1's worker is answered as stale;
// once W1 cooled, the next client binds it.
func TestClientLeavesBetweenExchanges(t *testing.T) {
	for _, ackedBefore := range []bool{true, false} {
		name := "answer acknowledged on the FIN"
		if ackedBefore {
			name = "answer acknowledged before the FIN"
		}
		t.Run(name, func(t *testing.T) {
			d := loadDataPlane(t)
			var a answered
			if ackedBefore {
				a = quiescentPair(t, d)
			} else {
				a = answeredPair()
				a.store(d, false)
				d.setLoad(1, 1)
			}
			ws1 := d.workerStats(1)
			cm := a.materializedClient()
			fin := fromClient(seg{seq: a.c.PeerHi, ack: a.cSndNxt(), flags: tcpFIN | tcpACK, win: 400,
				opts: nopTS(a.c.PeerTSval+1, a.cOurTSval())})
			in := fin.build()
			v, out, delta := d.run(in)
			checkVerdict(t, v, xdpTX)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterClientLeft, kern.CounterFINAnswered, kern.CounterTX)
			wantC := cm
			wantC.State = kern.LegClosing
			wantC.PeerHi++
			wantC.PeerAcked = a.cSndNxt()
			wantC.PeerTSval++
			wantC.RxFlags |= kern.RxFIN
			wantC.SndNxt = cm.SndNxt + 1 // our FIN
			checkReply(t, in, out, wantC, cm.SndNxt, tcpFIN|tcpACK)
			checkLeg(t, "client leg after its FIN", d.mustLeg(clientKey), wantC)
			d.checkNoBind("after the client left", clientKey)
			d.checkNoBind("after the client left", workerKey)
			wantW1 := a.releasedW1(kern.LegCooling)
			checkLeg(t, "W1 cooling", d.mustLeg(workerKey), wantW1)
			if ackedBefore {
				d.checkIdle("after the client left", worker2Key) // quiescentPair queues W2
			} else {
				d.checkIdle("after the client left")
			}
			if got := d.cooling(); len(got) != 1 || got[0] != workerKey {
				t.Errorf("cooling queue %v, want W1", got)
			}
			if got := wsDelta(ws1, d.workerStats(1)); got != (kern.WorkerStats{Releases: 1}) {
				t.Errorf("worker 1 stats moved %+v, want one release", got)
			}
			if d.load(1) != 0 || d.idleCount(1) != 0 || d.coolingCount(1) != 1 {
				t.Errorf("worker 1 load %d idle %d cooling %d, want 0, 0, 1", d.load(1), d.idleCount(1), d.coolingCount(1))
			}
			checkEvents(t, d.drainEvents())

			// The FIN again (our FIN+ACK was lost): the same answer.
			v, out, delta = d.run(in)
			checkVerdict(t, v, xdpTX)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterFINAnswered, kern.CounterTX)
			checkReply(t, in, out, wantC, cm.SndNxt, tcpFIN|tcpACK)

			// The client's last ACK ends its leg.
			v, _, delta = d.run(fromClient(seg{seq: wantC.PeerHi, ack: wantC.SndNxt, flags: tcpACK, win: 400,
				opts: nopTS(a.c.PeerTSval+2, cm.OurTSval)}).build())
			checkVerdict(t, v, xdpDrop)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterLegClosed, kern.CounterUnboundACK, kern.CounterDrop)
			checkEvents(t, d.drainEvents(), kern.Event{Type: kern.EventLegClosed, Key: clientKey})

			// W1's worker never saw the ACK that rode on the FIN: its
			// retransmitted tail is answered by the data plane.
			stale := fromWorker(seg{seq: a.w1.PeerHi - 100, ack: a.w1.PeerAcked, flags: tcpACK | tcpPSH, win: 300,
				opts: nopTS(a.w1.PeerTSval+3, wantW1.OurTSval), payload: make([]byte, 100)}).build()
			v, out, delta = d.run(stale)
			checkVerdict(t, v, xdpTX)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterStaleAcked, kern.CounterTX)
			checkReply(t, stale, out, wantW1, wantW1.SndNxt, tcpACK)

			// The next client's request binds W1, once it cooled, right
			// after the first client's request in the worker's stream.
			d.idleQueue() // W1 alone can serve it
			d.ageCooling(coolNs)
			wantW1.State = kern.LegIdle
			c2 := stdClientLeg()
			d.putLeg(client2Key, c2)
			req := on(client2Key, seg{seq: c2.PeerHi, ack: c2.SndNxt, flags: tcpACK | tcpPSH, win: 502,
				opts: nopTS(c2.PeerTSval+1, c2.OurTSval), payload: request})
			v, out, delta = d.run(req)
			checkVerdict(t, v, xdpPass)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterBind, kern.CounterFwdToWorker, kern.CounterPass)
			if o := mustParse(t, out); o.seq != wantW1.SndNxt || o.ack != wantW1.PeerHi || o.dst != workerAddr {
				t.Errorf("next client's request reaches %s at seq %#x ack %#x, want W1's worker at %#x, %#x",
					o.dst, o.seq, o.ack, wantW1.SndNxt, wantW1.PeerHi)
			}
			if got := d.cooling(); len(got) != 0 {
				t.Errorf("cooling queue %v after the bind, want empty", got)
			}
		})
	}
}

// TestCoolingLegRetiredWhenWorkerGoesOn: the client left having read every
// byte sent so far, but the answer was not whole: the worker's next bytes
// reach the cooling leg, which is retired (user space ends it with a FIN),
// never pooled; a leg still cooling is not handed to the next client.
func TestCoolingLegRetiredWhenWorkerGoesOn(t *testing.T) {
	d := loadDataPlane(t)
	a := quiescentPair(t, d)
	d.idleQueue() // W2 out: the next client must find nothing
	v, _, _ := d.run(fromClient(seg{seq: a.c.PeerHi, ack: a.cSndNxt(), flags: tcpFIN | tcpACK, win: 400,
		opts: nopTS(a.c.PeerTSval+1, a.cOurTSval())}).build())
	checkVerdict(t, v, xdpTX)

	// A new client while W1 cools: no leg for it.
	c2 := stdClientLeg()
	d.putLeg(client2Key, c2)
	req := on(client2Key, seg{seq: c2.PeerHi, ack: c2.SndNxt, flags: tcpACK | tcpPSH, win: 502,
		opts: nopTS(c2.PeerTSval+1, c2.OurTSval), payload: request})
	v, _, delta := d.run(req)
	checkVerdict(t, v, xdpDrop)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterNoIdleLeg, kern.CounterDrop)
	d.drainEvents()

	// W1's worker goes on with the answer.
	v, _, delta = d.run(fromWorker(seg{seq: a.w1.PeerHi, ack: a.w1.PeerAcked, flags: tcpACK | tcpPSH, win: 300,
		opts: nopTS(a.w1.PeerTSval+5, a.w1.OurTSval), payload: make([]byte, 200)}).build())
	checkVerdict(t, v, xdpDrop)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterRetired, kern.CounterUnsolicited, kern.CounterDrop)
	if gw := d.mustLeg(workerKey); gw.State != kern.LegDead {
		t.Errorf("W1 %s, want dead (retired)", gw.State)
	}
	d.checkRetired("after the worker went on", workerKey)
	if d.idleCount(1) != 0 || d.coolingCount(1) != 0 {
		t.Errorf("worker 1 idle %d cooling %d, want 0, 0", d.idleCount(1), d.coolingCount(1))
	}
	// Its cooling entry is dropped when it comes due.
	d.ageCooling(coolNs)
	v, _, delta = d.run(req)
	checkVerdict(t, v, xdpDrop)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterNoIdleLeg, kern.CounterDrop)
	if got := d.cooling(); len(got) != 0 {
		t.Errorf("cooling queue %v, want empty", got)
	}
}

// TestClientRSTBetweenExchanges: a client resets when it closes with bytes
// unread, so a RST is no evidence of an exchange ended: even after every
// byte sent was acknowledged, it goes to the worker and both legs end.
func TestClientRSTBetweenExchanges(t *testing.T) {
	d := loadDataPlane(t)
	a := quiescentPair(t, d)
	in := fromClient(seg{seq: a.c.PeerHi, flags: tcpRST}).build()
	v, out, delta := d.run(in)
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterLegClosed, kern.CounterLegClosed, kern.CounterFwdToWorker, kern.CounterPass)
	checkTranslated(t, in, out, a.toW1)
	if gc, gw := d.mustLeg(clientKey), d.mustLeg(workerKey); gc.State != kern.LegDead || gw.State != kern.LegDead {
		t.Errorf("client %s, W1 %s; want both dead", gc.State, gw.State)
	}
	d.drainEvents()
}

// TestClientLeavesMidExchange: a FIN or RST before the exchange is over goes
// to the worker, and the worker leg ends with the client's (never reused: the
// worker may still answer into it).
func TestClientLeavesMidExchange(t *testing.T) {
	tests := []struct {
		name  string
		state func(a *answered)
		seg   func(a answered) seg
	}{
		{"FIN before the answer", func(a *answered) { a.w1.PeerHi = a.w1.ReqMark },
			func(a answered) seg {
				return seg{seq: a.c.PeerHi, ack: a.c0.SndNxt, flags: tcpFIN | tcpACK, win: 400, opts: nopTS(a.c.PeerTSval+1, a.c0.OurTSval)}
			}},
		{"FIN with half the answer acknowledged", nil, func(a answered) seg {
			return seg{seq: a.c.PeerHi, ack: a.cSndNxt() - ansLen/2, flags: tcpFIN | tcpACK, win: 400, opts: nopTS(a.c.PeerTSval+1, a.cOurTSval())}
		}},
		{"FIN before the worker acknowledged the request", func(a *answered) { a.w1.PeerAcked -= 10 }, func(a answered) seg {
			return seg{seq: a.c.PeerHi, ack: a.cSndNxt(), flags: tcpFIN | tcpACK, win: 400, opts: nopTS(a.c.PeerTSval+1, a.cOurTSval())}
		}},
		{"FIN with data (the last request)", nil, func(a answered) seg {
			return seg{seq: a.c.PeerHi, ack: a.cSndNxt(), flags: tcpFIN | tcpACK | tcpPSH, win: 400, opts: nopTS(a.c.PeerTSval+1, a.cOurTSval()),
				payload: request2}
		}},
		{"FIN on a pinned pair", func(a *answered) { a.c.Pin, a.w1.Pin = kern.PinTLS, kern.PinTLS }, func(a answered) seg {
			return seg{seq: a.c.PeerHi, ack: a.cSndNxt(), flags: tcpFIN | tcpACK, win: 400, opts: nopTS(a.c.PeerTSval+1, a.cOurTSval())}
		}},
		{"FIN after an answer that said the worker closes", func(a *answered) { a.c.Pin, a.w1.Pin = kern.PinClose, kern.PinClose }, func(a answered) seg {
			return seg{seq: a.c.PeerHi, ack: a.cSndNxt(), flags: tcpFIN | tcpACK, win: 400, opts: nopTS(a.c.PeerTSval+1, a.cOurTSval())}
		}},
		{"FIN after a write that went on (no PSH)", func(a *answered) { a.c.Tail = 0 }, func(a answered) seg {
			return seg{seq: a.c.PeerHi, ack: a.cSndNxt(), flags: tcpFIN | tcpACK, win: 400, opts: nopTS(a.c.PeerTSval+1, a.cOurTSval())}
		}},
		{"RST before the answer", func(a *answered) { a.w1.PeerHi = a.w1.ReqMark }, func(a answered) seg {
			return seg{seq: a.c.PeerHi, flags: tcpRST}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			a := answeredPair()
			if tc.state != nil {
				tc.state(&a)
			}
			a.store(d, true)
			s := fromClient(tc.seg(a))
			in := s.build()
			v, out, delta := d.run(in)
			checkVerdict(t, v, xdpPass)
			if delta[kern.CounterClientLeft] != 0 {
				t.Fatal("the client was taken as leaving between exchanges")
			}
			checkTranslated(t, in, out, a.toW1)
			d.checkBind("forwarded", clientKey, a.toW1)
			if s.flags&tcpRST != 0 {
				if gw := d.mustLeg(workerKey); gw.State != kern.LegDead {
					t.Errorf("W1 %s after the client's RST, want dead", gw.State)
				}
			} else if gw := d.mustLeg(workerKey); gw.State != kern.LegBound {
				t.Errorf("W1 %s after the client's FIN, want bound until the worker closes too", gw.State)
			}
			d.checkIdle("forwarded", worker2Key)
		})
	}
}

// TestClientLeavesAnswerUnfinished: everything the worker sent is
// acknowledged and the worker is silent, as between two exchanges, but the
// answer's length says it is not over (the worker paused in the middle),
// or no length was read (chunked): the FIN goes to the worker and W1 stays
// with its client, never cooled nor pooled (a next client would receive the
// rest of this answer). Idle release refuses such a pair too.
func TestClientLeavesAnswerUnfinished(t *testing.T) {
	tests := []struct {
		name string
		bind func(a *answered)
	}{
		{"answer longer than sent", func(a *answered) {
			a.toW1, a.toC = answerEnd(a.toW1, a.w1.PeerHi+5000), answerEnd(a.toC, a.w1.PeerHi+5000)
		}},
		{"answer without a length", func(a *answered) {
			a.toW1.Flags &^= kern.BindEnd
			a.toC.Flags &^= kern.BindEnd
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			a := answeredPair()
			tc.bind(&a)
			a.store(d, true)
			d.setLoad(1, 1)
			ack := fromClient(seg{seq: a.c.PeerHi, ack: a.cSndNxt(), flags: tcpACK, win: 400,
				opts: nopTS(a.c.PeerTSval+1, a.cOurTSval())}).build()
			checkVerdict(t, func() uint32 { v, _, _ := d.run(ack); return v }(), xdpPass)
			if d.ctl(kern.CtlPark, clientKey, 0) {
				t.Error("idle release parked a client in the middle of an answer")
			}
			in := fromClient(seg{seq: a.c.PeerHi, ack: a.cSndNxt(), flags: tcpFIN | tcpACK, win: 400,
				opts: nopTS(a.c.PeerTSval+2, a.cOurTSval())}).build()
			v, out, delta := d.run(in)
			checkVerdict(t, v, xdpPass)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterFwdToWorker, kern.CounterPass)
			checkTranslated(t, in, out, a.toW1)
			if gw := d.mustLeg(workerKey); gw.State != kern.LegBound {
				t.Errorf("W1 %s after the client's FIN, want bound until the worker closes too", gw.State)
			}
			if got := d.cooling(); len(got) != 0 {
				t.Errorf("cooling queue %v, want empty", got)
			}
			d.checkIdle("after the FIN", worker2Key)
		})
	}
}

// TestWarmFromUserSpace: with no client to bind, user space pools the legs
// that cooled (CTL_WARM); a leg still cooling stays.
func TestWarmFromUserSpace(t *testing.T) {
	d := loadDataPlane(t)
	a := quiescentPair(t, d)
	d.idleQueue()
	v, _, _ := d.run(fromClient(seg{seq: a.c.PeerHi, ack: a.cSndNxt(), flags: tcpFIN | tcpACK, win: 400,
		opts: nopTS(a.c.PeerTSval+1, a.cOurTSval())}).build())
	checkVerdict(t, v, xdpTX)
	if d.ctl2(kern.CtlMsg{Op: kern.CtlWarm}) {
		t.Error("CTL_WARM: more due, with one leg still cooling")
	}
	if s := d.mustLeg(workerKey).State; s != kern.LegCooling {
		t.Fatalf("W1 %s before it cooled, want cooling", s)
	}
	d.ageCooling(coolNs)
	if d.ctl2(kern.CtlMsg{Op: kern.CtlWarm}) {
		t.Error("CTL_WARM: more due after the only cooling leg moved")
	}
	if s := d.mustLeg(workerKey).State; s != kern.LegIdle {
		t.Errorf("W1 %s after CTL_WARM, want idle", s)
	}
	d.checkIdle("after CTL_WARM", workerKey)
	if d.idleCount(1) != 1 || d.coolingCount(1) != 0 {
		t.Errorf("worker 1 idle %d cooling %d, want 1, 0", d.idleCount(1), d.coolingCount(1))
	}
}

// TestClientLeavesUnserved: a client's request came with its FIN (its
// retransmission, merged with the FIN of a client that gave up waiting)
// while no worker leg is idle: the data plane answers the FIN and drops the
// request, rather than leave the client in FIN-WAIT-1 until a worker leg
// frees; the client's last ACK ends its leg. Without a FIN the request is
// dropped for the client to retransmit, as before.
func TestClientLeavesUnserved(t *testing.T) {
	d := loadDataPlane(t)
	c := stdClientLeg()
	d.putLeg(clientKey, c)
	in := fromClient(seg{seq: c.PeerHi, ack: c.SndNxt, flags: tcpACK | tcpPSH | tcpFIN, win: 502,
		opts: nopTS(c.PeerTSval+7, c.OurTSval), payload: request}).build()
	v, out, delta := d.run(in)
	checkVerdict(t, v, xdpTX)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterUnserved, kern.CounterFINAnswered, kern.CounterTX)
	want := c
	want.State = kern.LegClosing
	want.PeerHi += uint32(len(request)) + 1
	want.PeerTSval += 7
	want.PeerWin = 502
	want.RxFlags |= kern.RxFIN
	want.SndNxt = c.SndNxt + 1
	checkReply(t, in, out, want, c.SndNxt, tcpFIN|tcpACK)
	checkLeg(t, "client leg", d.mustLeg(clientKey), want)
	checkEvents(t, d.drainEvents(), kern.Event{Type: kern.EventPoolEmpty, Key: clientKey})

	v, _, delta = d.run(fromClient(seg{seq: want.PeerHi, ack: want.SndNxt, flags: tcpACK, win: 502,
		opts: nopTS(c.PeerTSval+8, c.OurTSval)}).build())
	checkVerdict(t, v, xdpDrop)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterLegClosed, kern.CounterUnboundACK, kern.CounterDrop)
	checkEvents(t, d.drainEvents(), kern.Event{Type: kern.EventLegClosed, Key: clientKey})
}
