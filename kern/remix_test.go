package kern_test

// Fixture 9: remix at a request boundary (DESIGN.md "Remix at a request
// boundary", "Stale segments and idle legs"). A pair C<->W1 after a request
// and its whole answer, another idle worker leg W2 queued: the client's next
// request moves C onto W2 when every condition of a boundary holds, and
// stays on W1, counted, when any one fails. The retired W1 keeps answering
// the stale tail of its own answer.

import (
	"testing"

	"github.com/xlb-lb/xlb/kern"
)

var request2 = []byte("GET /second HTTP/1.1\r\nHost: service\r\n\r\n")

// ansLen is the length of W1's answer to the first request.
const ansLen = 300

// stdWorker2Leg is an idle worker leg of worker 2 (key worker2Key), with
// positions and scales unlike W1's, so that a remix onto it is visible in
// every translated field.
func stdWorker2Leg() kern.Leg {
	w := stdWorkerLeg()
	w.Worker = 2
	w.PeerWScale, w.OurWScale = 8, 3
	w.WinBound = winBound(8, 3)
	w.PeerHi, w.PeerAcked, w.SndNxt = 0x4000_0000, 0x6000_0000, 0x6000_0000
	w.PeerTSval, w.OurTSval = 55_555_555, 4_444
	w.PeerWin, w.SndWin = 200, 3000
	return w
}

// answered is a pair C<->W1 as the data plane leaves it after one request
// of len(request) bytes, forwarded whole and acknowledged by the worker, and
// an answer of ansLen bytes forwarded to the client, which has not
// acknowledged it yet (its ACK rides on its next request). W2 is idle.
type answered struct {
	c0, w0    kern.Leg     // the legs when they were bound
	c, w1, w2 kern.Leg     // as stored
	toW1, toC kern.Binding // the pair's bindings, from c0 and w0
}

// materializedClient is the client leg with the tx positions a remix
// materialises from W1 through the binding.
func (a answered) materializedClient() kern.Leg {
	cm := a.c
	cm.SndNxt = a.w1.PeerHi - a.toW1.AckOff
	cm.OurTSval = a.w1.PeerTSval - a.toW1.TSecrOff
	cm.SndWin = scaledWin(a.w1.PeerWin, a.w1.PeerWScale, a.c.OurWScale)
	return cm
}

// releasedW1 is W1 with the tx positions its release materialises from the
// client through the binding, in state.
func (a answered) releasedW1(state kern.LegState) kern.Leg {
	w := a.w1
	w.State = state
	w.SndNxt = a.c.PeerHi + a.toW1.SeqOff
	w.OurTSval = a.c.PeerTSval + a.toW1.TSvalOff
	w.SndWin = scaledWin(a.c.PeerWin, a.c.PeerWScale, a.w1.OurWScale)
	return w
}

// w2AfterRemix is W2 once request2 has moved the client to it.
func (a answered) w2AfterRemix() kern.Leg {
	w := a.w2
	w.State = kern.LegBound
	w.ReqMark = a.w2.PeerHi // its answer will start there
	w.SentHi = a.w2.SndNxt + uint32(len(request2))
	return w
}

// clientAfterRemix is the client leg cm once request2 has moved it to W2.
func (a answered) clientAfterRemix(cm kern.Leg) kern.Leg {
	wantC := cm
	wantC.PeerHi += uint32(len(request2))
	wantC.PeerTSval++
	wantC.PeerWin = 401
	wantC.PeerAcked = cm.SndNxt
	wantC.Requests = 2
	return wantC
}

func answeredPair() answered {
	var a answered
	a.c0, a.w0 = stdClientLeg(), stdWorkerLeg()
	a.c0.Requests = 1
	a.c0.Proto = kern.ProtoHTTP
	a.toW1, a.toC = oracleBind(clientKey, a.c0, workerKey, a.w0)
	a.c, a.w1 = a.c0, a.w0
	a.c.State, a.w1.State = kern.LegBound, kern.LegBound
	a.w1.ReqMark = a.w0.PeerHi
	a.w1.SentHi = a.w0.SndNxt + uint32(len(request))
	a.c.Tail = kern.TailPSH // the request ended a write
	a.c.PeerHi += uint32(len(request))
	a.c.PeerTSval += 2
	a.c.PeerWin = 400
	a.w1.PeerHi += ansLen
	a.w1.PeerAcked = a.w0.SndNxt + uint32(len(request))
	a.w1.PeerTSval += 40
	a.w1.PeerWin = 300
	a.w2 = stdWorker2Leg()
	// The answer's length was read from its first segment (http_answer):
	// it is whole at the worker leg's peer_hi.
	a.toW1, a.toC = answerEnd(a.toW1, a.w1.PeerHi), answerEnd(a.toC, a.w1.PeerHi)
	return a
}

// store writes the pair, W2, and queues W2 when queue is set.
func (a answered) store(d *dataPlane, queue bool) {
	d.t.Helper()
	d.putLeg(clientKey, a.c)
	d.putLeg(workerKey, a.w1)
	d.putBind(clientKey, a.toW1)
	d.putBind(workerKey, a.toC)
	d.putLeg(worker2Key, a.w2)
	if queue {
		d.pushIdle(worker2Key)
	}
}

// What has been sent to the client, derived from W1 through the binding.
func (a answered) cSndNxt() uint32   { return a.w1.PeerHi - a.toW1.AckOff }
func (a answered) cOurTSval() uint32 { return a.w1.PeerTSval - a.toW1.TSecrOff }

// next is the client's next request: new data, acknowledging the whole
// answer, echoing the last TSval the client got.
func (a answered) next() seg {
	return fromClient(seg{seq: a.c.PeerHi, ack: a.cSndNxt(), flags: tcpACK | tcpPSH, win: 401,
		opts: nopTS(a.c.PeerTSval+1, a.cOurTSval()), payload: request2})
}

// scaledWin is a window field rescaled from one end's scale to another's,
// clamped (materialize() in leg.h).
func scaledWin(win uint32, in, out uint8) uint32 {
	return uint32(min(uint64(win)<<in>>out, 0xffff))
}

// TestAnsweredPairIsReal pins answeredPair to what the program leaves: a
// freshly bound pair, the request, the worker's answer acknowledging it.
func TestAnsweredPairIsReal(t *testing.T) {
	d := loadDataPlane(t)
	a := answeredPair()
	d.bindPair(clientKey, a.c0, workerKey, a.w0)
	n := uint32(len(request))
	for _, in := range [][]byte{
		fromClient(seg{seq: a.c0.PeerHi, ack: a.c0.SndNxt, flags: tcpACK | tcpPSH, win: 400,
			opts: nopTS(a.c0.PeerTSval+2, a.c0.OurTSval), payload: request}).build(),
		fromWorker(seg{seq: a.w0.PeerHi, ack: a.w0.SndNxt + n, flags: tcpACK | tcpPSH, win: 300,
			opts: nopTS(a.w0.PeerTSval+40, a.w0.OurTSval+2), payload: answer(ansLen)}).build(),
	} {
		v, _, _ := d.run(in)
		checkVerdict(t, v, xdpPass)
	}
	checkLeg(t, "client leg", d.mustLeg(clientKey), a.c)
	checkLeg(t, "worker leg", d.mustLeg(workerKey), a.w1)
	if a.cSndNxt() != a.c0.SndNxt+ansLen {
		t.Errorf("derived snd_nxt %#x, want the end of the answer %#x", a.cSndNxt(), a.c0.SndNxt+ansLen)
	}
}

// checkIdle empties the idle queue, fails unless it held exactly want, and
// puts the entries back.
func (d *dataPlane) checkIdle(what string, want ...kern.LegKey) {
	d.t.Helper()
	q := d.idleQueue()
	for _, k := range q {
		d.pushIdle(k)
	}
	if len(q) != len(want) {
		d.t.Errorf("%s: idle queue %v, want %v", what, q, want)
		return
	}
	for i := range q {
		if q[i] != want[i] {
			d.t.Errorf("%s: idle queue %v, want %v", what, q, want)
			return
		}
	}
}

func (d *dataPlane) checkBind(what string, k kern.LegKey, want kern.Binding) {
	d.t.Helper()
	if got, ok := d.bind(k); !ok || got != want {
		d.t.Errorf("%s: binding of %s:\n got  %+v (present %v)\n want %+v", what, k, got, ok, want)
	}
}

func (d *dataPlane) checkNoBind(what string, k kern.LegKey) {
	d.t.Helper()
	if got, ok := d.bind(k); ok {
		d.t.Errorf("%s: %s still bound: %+v", what, k, got)
	}
}

// TestRemix: the full boundary moves C onto W2; W1's worker retransmits the
// tail of its answer and is answered by the program; the next request is a
// continuation on W2 until W2 answers; the boundary after that moves C back
// onto W1, from W1's materialised positions.
func TestRemix(t *testing.T) {
	d := loadDataPlane(t)
	a := answeredPair()
	a.store(d, true)
	ws1, ws2 := d.workerStats(1), d.workerStats(2)

	// 1. The boundary.
	in := a.next().build()
	v, out, delta := d.run(in)
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterRequest, kern.CounterRemix, kern.CounterFwdToWorker, kern.CounterPass)

	// C's tx positions, materialised from W1 before the packet moved C.
	cm := a.materializedClient()
	toW2, toC2 := oracleBind(clientKey, cm, worker2Key, a.w2)
	checkTranslated(t, in, out, toW2)
	if o := mustParse(t, out); o.seq != a.w2.SndNxt || o.ack != a.w2.PeerHi || o.tsecr != a.w2.PeerTSval {
		t.Errorf("request reaches W2 with seq %#x ack %#x TSecr %d, want W2's snd_nxt %#x, peer_hi %#x, peer TSval %d",
			o.seq, o.ack, o.tsecr, a.w2.SndNxt, a.w2.PeerHi, a.w2.PeerTSval)
	}
	d.checkBind("after the remix", clientKey, toW2)
	d.checkBind("after the remix", worker2Key, toC2)
	d.checkNoBind("after the remix", workerKey)

	wantC := a.clientAfterRemix(cm)
	checkLeg(t, "client leg after the remix", d.mustLeg(clientKey), wantC)
	wantW1 := a.releasedW1(kern.LegIdle)
	checkLeg(t, "W1 after the remix", d.mustLeg(workerKey), wantW1)
	if wantW1.SndNxt != wantW1.PeerAcked {
		t.Errorf("W1 snd_nxt %#x, want what its worker acked %#x", wantW1.SndNxt, wantW1.PeerAcked)
	}
	wantW2 := a.w2AfterRemix()
	checkLeg(t, "W2 after the remix", d.mustLeg(worker2Key), wantW2)
	d.checkIdle("after the remix", workerKey)
	if got, want := wsDelta(ws1, d.workerStats(1)), (kern.WorkerStats{Releases: 1}); got != want {
		t.Errorf("worker 1 stats moved %+v, want %+v", got, want)
	}
	if got, want := wsDelta(ws2, d.workerStats(2)), (kern.WorkerStats{Binds: 1, Requests: 1, BytesIn: uint64(len(request2))}); got != want {
		t.Errorf("worker 2 stats moved %+v, want %+v", got, want)
	}
	checkEvents(t, d.drainEvents())

	// 2. W1's worker never saw the client's ACK (it rode on the request to
	// W2): it retransmits the last 100 bytes of its answer on the now idle
	// W1, and gets a pure ACK from the program.
	in = fromWorker(seg{seq: a.w1.PeerHi - 100, ack: a.w1.PeerAcked, flags: tcpACK | tcpPSH, win: 300,
		opts: nopTS(a.w1.PeerTSval+30, wantW1.OurTSval), payload: make([]byte, 100)}).build()
	v, out, delta = d.run(in)
	checkVerdict(t, v, xdpTX)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterStaleAcked, kern.CounterTX)
	checkReply(t, in, out, wantW1, wantW1.SndNxt, tcpACK)
	checkLeg(t, "W1 after its stale tail", d.mustLeg(workerKey), wantW1)
	d.checkIdle("after the stale tail", workerKey)
	checkEvents(t, d.drainEvents())

	// 3. More of the second request: a continuation on W2.
	more := []byte("X-More: 1\r\n")
	in = fromClient(seg{seq: wantC.PeerHi, ack: wantC.PeerAcked, flags: tcpACK | tcpPSH, win: 401,
		opts: nopTS(wantC.PeerTSval+1, wantC.OurTSval), payload: more}).build()
	v, out, delta = d.run(in)
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterFwdToWorker, kern.CounterPass)
	checkTranslated(t, in, out, toW2)
	wantC.PeerHi += uint32(len(more))
	wantC.PeerTSval++
	checkLeg(t, "client leg after the continuation", d.mustLeg(clientKey), wantC)
	wantW2.SentHi += uint32(len(more))

	// 4. W2 answers 200 bytes, acknowledging the whole request.
	in = on(worker2Key, seg{seq: a.w2.PeerHi, ack: wantC.PeerHi + toW2.SeqOff, flags: tcpACK | tcpPSH, win: 100,
		opts: nopTS(a.w2.PeerTSval+7, a.w2.OurTSval+2), payload: answer(200)})
	v, out, delta = d.run(in)
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterFwdToClient, kern.CounterPass)
	checkTranslated(t, in, out, toC2)
	if o := mustParse(t, out); o.seq != cm.SndNxt || o.tsval != cm.OurTSval+7 {
		t.Errorf("W2's answer reaches the client at seq %#x TSval %d, want right after W1's answer %#x, TSval %d",
			o.seq, o.tsval, cm.SndNxt, cm.OurTSval+7)
	}
	ww2 := wantW2
	ww2.PeerHi += 200
	ww2.PeerAcked = wantC.PeerHi + toW2.SeqOff
	ww2.PeerTSval += 7
	ww2.PeerWin = 100
	checkLeg(t, "W2 after its answer", d.mustLeg(worker2Key), ww2)

	// 5. The next boundary moves C again, onto W1, the leg idle the longest,
	// from W1's materialised positions.
	cm2 := wantC
	cm2.SndNxt = ww2.PeerHi - toW2.AckOff
	cm2.OurTSval = ww2.PeerTSval - toW2.TSecrOff
	cm2.SndWin = scaledWin(ww2.PeerWin, ww2.PeerWScale, wantC.OurWScale)
	in = fromClient(seg{seq: wantC.PeerHi, ack: cm2.SndNxt, flags: tcpACK | tcpPSH, win: 401,
		opts: nopTS(wantC.PeerTSval+1, cm2.OurTSval), payload: request}).build()
	v, out, delta = d.run(in)
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterRequest, kern.CounterRemix, kern.CounterFwdToWorker, kern.CounterPass)
	toW1b, toCb := oracleBind(clientKey, cm2, workerKey, wantW1)
	checkTranslated(t, in, out, toW1b)
	if o := mustParse(t, out); o.seq != wantW1.SndNxt || o.ack != wantW1.PeerHi {
		t.Errorf("third request reaches W1 at seq %#x ack %#x, want right after the first request %#x, %#x",
			o.seq, o.ack, wantW1.SndNxt, wantW1.PeerHi)
	}
	d.checkBind("after the second remix", clientKey, toW1b)
	d.checkBind("after the second remix", workerKey, toCb)
	d.checkNoBind("after the second remix", worker2Key)
	d.checkIdle("after the second remix", worker2Key)
	if gc, gw1 := d.mustLeg(clientKey), d.mustLeg(workerKey); gw1.ReqMark != wantW1.PeerHi || gc.Requests != 3 {
		t.Errorf("W1 req_mark %#x, client requests %d, want %#x, 3", gw1.ReqMark, gc.Requests, wantW1.PeerHi)
	}
	gw2 := d.mustLeg(worker2Key)
	if gw2.State != kern.LegIdle || gw2.SndNxt != ww2.PeerAcked || gw2.OurTSval != wantC.PeerTSval+toW2.TSvalOff {
		t.Errorf("W2 after the second remix: %s snd_nxt %#x our_tsval %d; want idle, %#x, %d",
			gw2.State, gw2.SndNxt, gw2.OurTSval, ww2.PeerAcked, wantC.PeerTSval+toW2.TSvalOff)
	}
	if gw1 := d.mustLeg(workerKey); gw1.State != kern.LegBound {
		t.Errorf("W1 %s, want bound", gw1.State)
	}
	checkEvents(t, d.drainEvents())
}

// TestRemixConditions: each condition of a boundary failing alone keeps the
// client on W1, with the segment translated through the old binding, and
// moves the counter of its reason (or none for a retransmission or a
// continuation). With no idle leg, or the sticky policy, or a FIN on the
// request, the request is counted but the client stays.
func TestRemixConditions(t *testing.T) {
	tests := []struct {
		name    string
		state   func(a *answered)
		queue   bool
		sticky  bool
		seg     func(a answered, s *seg)
		request bool // a request boundary: counted, req_mark moves
		want    []kern.Counter
	}{
		{name: "retransmission of the last request", queue: true,
			seg: func(a answered, s *seg) { s.seq = a.c.PeerHi - uint32(len(request)); s.payload = request }},
		{name: "new data after a gap", queue: true, want: []kern.Counter{kern.CounterStayGap},
			seg: func(a answered, s *seg) { s.seq = a.c.PeerHi + 100 }},
		{name: "ack one byte short of the answer", queue: true, want: []kern.Counter{kern.CounterStayResponse},
			seg: func(a answered, s *seg) { s.ack-- }},
		{name: "ack of half the answer", queue: true, want: []kern.Counter{kern.CounterStayResponse},
			seg: func(a answered, s *seg) { s.ack -= ansLen / 2 }},
		{name: "no ACK flag", queue: true, want: []kern.Counter{kern.CounterStayResponse},
			seg: func(a answered, s *seg) { s.flags = tcpPSH }},
		{name: "worker has not acked the whole request", queue: true, want: []kern.Counter{kern.CounterStayRequest},
			state: func(a *answered) { a.w1.PeerAcked-- }},
		{name: "no answer since the request started (continuation)", queue: true,
			state: func(a *answered) { a.w1.PeerHi = a.w1.ReqMark }},
		{name: "no idle worker leg", request: true, want: []kern.Counter{kern.CounterRequest, kern.CounterRemixNoIdle}},
		{name: "idle queue holds a leg that is not idle", queue: true, request: true,
			state: func(a *answered) { a.w2.State = kern.LegClosing },
			want:  []kern.Counter{kern.CounterRequest, kern.CounterRemixNoIdle}},
		{name: "sticky policy", queue: true, sticky: true, request: true, want: []kern.Counter{kern.CounterRequest}},
		{name: "request with FIN", queue: true, request: true, want: []kern.Counter{kern.CounterRequest},
			seg: func(a answered, s *seg) { s.flags |= tcpFIN }},
		// The worker closed after its answer (Connection: close) and the
		// client acknowledged the FIN: the leg cannot go back to the pool,
		// and the client was told the stream ended. The client's data goes
		// to the closed worker, whose stack answers it.
		{name: "worker sent FIN after its answer", queue: true, request: true, want: []kern.Counter{kern.CounterRequest},
			state: func(a *answered) { a.w1.PeerHi++; a.w1.RxFlags |= kern.RxFIN }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			a := answeredPair()
			if tc.state != nil {
				tc.state(&a)
			}
			a.store(d, tc.queue)
			if tc.sticky {
				cfg := defaultConfig
				cfg.Policy = kern.PolicySticky
				d.setConfig(cfg)
			}
			ws1, ws2 := d.workerStats(1), d.workerStats(2)
			s := a.next()
			if tc.seg != nil {
				tc.seg(a, &s)
			}
			in := s.build()
			v, out, delta := d.run(in)
			checkVerdict(t, v, xdpPass)
			checkCounters(t, delta, append([]kern.Counter{kern.CounterTCP, kern.CounterFwdToWorker, kern.CounterPass}, tc.want...)...)
			checkTranslated(t, in, out, a.toW1)
			d.checkBind("stayed", clientKey, a.toW1)
			d.checkBind("stayed", workerKey, a.toC)
			d.checkNoBind("stayed", worker2Key)
			gc, gw1 := d.mustLeg(clientKey), d.mustLeg(workerKey)
			wantMark, wantReq, wantWS1 := a.w1.ReqMark, a.c.Requests, kern.WorkerStats{BytesIn: uint64(len(s.payload))}
			if tc.request {
				wantMark, wantReq = a.w1.PeerHi, a.c.Requests+1
				wantWS1.Requests = 1
			}
			wantW1 := a.w1
			wantW1.ReqMark = wantMark
			if end := s.seq + uint32(len(s.payload)); int32(end-a.c.PeerHi) > 0 {
				wantW1.SentHi = end + a.toW1.SeqOff // new client data reached W1's worker
			}
			checkLeg(t, "W1", gw1, wantW1)
			if gc.Requests != wantReq || gc.State != kern.LegBound {
				t.Errorf("client requests %d %s, want %d, bound", gc.Requests, gc.State, wantReq)
			}
			checkLeg(t, "W2", d.mustLeg(worker2Key), a.w2)
			if tc.queue && a.w2.State == kern.LegIdle {
				d.checkIdle("stayed", worker2Key)
			} else {
				d.checkIdle("stayed")
			}
			if got := wsDelta(ws1, d.workerStats(1)); got != wantWS1 {
				t.Errorf("worker 1 stats moved %+v, want %+v", got, wantWS1)
			}
			if got := wsDelta(ws2, d.workerStats(2)); got != (kern.WorkerStats{}) {
				t.Errorf("worker 2 stats moved %+v", got)
			}
			checkEvents(t, d.drainEvents())
		})
	}
}
