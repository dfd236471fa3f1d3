package kern_test

// Fixture 10: retiring worker legs (leg.h should_retire, retire, pop_idle;
// xlb.c remix). A worker whose settings (xlb_wcfg) carry the drain flag, or a
// positive trim credit, loses the legs the program takes out of the idle
// queue or would give back to it: the leg is marked dead, its key queued in
// xlb_retired for user space, counted retired, and the next queue entry is
// tried (XLB_IDLE_POP_TRIES entries per packet). A drain is a standing order;
// a trim credit is taken once per retired leg.

import (
	"slices"
	"testing"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
)

// Worker legs of the retire fixtures, keyed apart from the other fixtures'.
var (
	retireAKey = kern.LegKey{Peer: mustAddrPort("10.0.1.10:8080"), Local: mustAddrPort("10.0.0.100:50010")}
	retireBKey = kern.LegKey{Peer: mustAddrPort("10.0.1.11:8080"), Local: mustAddrPort("10.0.0.100:50011")}
	retireCKey = kern.LegKey{Peer: mustAddrPort("10.0.1.12:8080"), Local: mustAddrPort("10.0.0.100:50012")}
)

const maxWorkers = 256 // XLB_MAX_WORKERS

// loadRetireDataPlane is loadDataPlane with every worker's settings zeroed
// and the retired queue empty, before and after the fixture: reset() leaves
// both alone, and a drain flag left behind would retire the legs of every
// later fixture.
func loadRetireDataPlane(t *testing.T) *dataPlane {
	t.Helper()
	d := loadDataPlane(t)
	wipe := func() {
		for id := uint32(0); id < maxWorkers; id++ {
			d.setWorkerCfg(id, kern.WorkerCfg{})
		}
		d.retiredQueue()
	}
	wipe()
	t.Cleanup(wipe)
	return d
}

func (d *dataPlane) setWorkerCfg(id uint32, c kern.WorkerCfg) {
	d.t.Helper()
	v, _ := c.MarshalBinary()
	if err := d.objs.WCfg.Update(ebpf.Uint32Key(id), v, ebpf.UpdateAny); err != nil {
		d.t.Fatal(err)
	}
}

func (d *dataPlane) workerCfg(id uint32) kern.WorkerCfg {
	d.t.Helper()
	var c kern.WorkerCfg
	v := make([]byte, kern.WorkerCfgSize)
	if err := d.objs.WCfg.Lookup(ebpf.Uint32Key(id), v); err != nil {
		d.t.Fatal(err)
	}
	if err := c.UnmarshalBinary(v); err != nil {
		d.t.Fatal(err)
	}
	return c
}

// retiredQueue empties xlb_retired and returns what it held.
func (d *dataPlane) retiredQueue() []kern.LegKey { return d.popKeys(d.objs.Retired) }

func (d *dataPlane) checkRetired(what string, want ...kern.LegKey) {
	d.t.Helper()
	q := d.retiredQueue()
	if len(q) != len(want) {
		d.t.Errorf("%s: retired queue %v, want %v", what, q, want)
		return
	}
	for i := range q {
		if q[i] != want[i] {
			d.t.Errorf("%s: retired queue %v, want %v", what, q, want)
			return
		}
	}
}

func (d *dataPlane) checkWorkerCfg(what string, id uint32, want kern.WorkerCfg) {
	d.t.Helper()
	if got := d.workerCfg(id); got != want {
		d.t.Errorf("%s: worker %d settings %+v, want %+v", what, id, got, want)
	}
}

// retireWorkerLeg is an idle worker leg of worker id; positions differ per
// leg so that a binding to the wrong one shows.
func retireWorkerLeg(id uint32, n uint32) kern.Leg {
	w := stdWorkerLeg()
	w.Worker = id
	w.PeerHi += n * 0x1000
	w.SndNxt += n * 0x2000
	w.PeerAcked = w.SndNxt
	return w
}

// TestRetireOnFirstBind: the client's first data with the legs queued in the
// order W_a (worker 0), W_c (worker 0), W_b (worker 1) (W_c only where
// listed), so with jiq tokens 0, [0,] 1. Per the settings of worker 0, the
// legs of worker 0 are retired or taken; the client binds to the first live
// leg.
func TestRetireOnFirstBind(t *testing.T) {
	tests := []struct {
		name      string
		cfg0      kern.WorkerCfg // settings of worker 0 before
		after0    kern.WorkerCfg // and after
		withC     bool           // W_c (worker 0) queued between W_a and W_b
		retired   []kern.LegKey
		boundTo   kern.LegKey // zero: no live leg within the tries
		stillIdle []kern.LegKey
	}{
		// Fixture 1: one trim credit retires W_a and is used up.
		{name: "trim credit 1", cfg0: kern.WorkerCfg{Trim: 1}, after0: kern.WorkerCfg{Trim: 0},
			retired: []kern.LegKey{retireAKey}, boundTo: retireBKey},
		{name: "trim credit 2", cfg0: kern.WorkerCfg{Trim: 2}, after0: kern.WorkerCfg{Trim: 1},
			retired: []kern.LegKey{retireAKey}, boundTo: retireBKey},
		// One credit, two legs of worker 0: its pool is last in, first
		// out, so W_c goes and W_a is taken.
		{name: "trim credit 1, two legs of the worker", cfg0: kern.WorkerCfg{Trim: 1}, after0: kern.WorkerCfg{Trim: 0},
			withC: true, retired: []kern.LegKey{retireCKey}, boundTo: retireAKey, stillIdle: []kern.LegKey{retireBKey}},
		// Fixture 2: a drain retires W_a and stays.
		{name: "drain", cfg0: kern.WorkerCfg{Flags: kern.WorkerDrain}, after0: kern.WorkerCfg{Flags: kern.WorkerDrain},
			retired: []kern.LegKey{retireAKey}, boundTo: retireBKey},
		{name: "drain takes no trim credit", cfg0: kern.WorkerCfg{Flags: kern.WorkerDrain, Trim: 1},
			after0:  kern.WorkerCfg{Flags: kern.WorkerDrain, Trim: 1},
			retired: []kern.LegKey{retireAKey}, boundTo: retireBKey},
		// Fixture 3: both tries in worker 0's pool retire a leg; the
		// next token (worker 0's second, its pool now empty), then
		// worker 1's, reaches the live W_b.
		{name: "drain, two legs of the worker", cfg0: kern.WorkerCfg{Flags: kern.WorkerDrain},
			after0: kern.WorkerCfg{Flags: kern.WorkerDrain}, withC: true,
			retired: []kern.LegKey{retireCKey, retireAKey}, boundTo: retireBKey},
		{name: "trim credit 2, two legs of the worker", cfg0: kern.WorkerCfg{Trim: 2}, after0: kern.WorkerCfg{Trim: 0},
			withC: true, retired: []kern.LegKey{retireCKey, retireAKey}, boundTo: retireBKey},
		// Fixture 5: no credit, nothing retired.
		{name: "trim credit 0", boundTo: retireAKey, stillIdle: []kern.LegKey{retireBKey}},
		{name: "trim credit -1", cfg0: kern.WorkerCfg{Trim: -1}, after0: kern.WorkerCfg{Trim: -1},
			boundTo: retireAKey, stillIdle: []kern.LegKey{retireBKey}},
		{name: "trim credit -1000", cfg0: kern.WorkerCfg{Trim: -1000}, after0: kern.WorkerCfg{Trim: -1000},
			boundTo: retireAKey, stillIdle: []kern.LegKey{retireBKey}},
		{name: "flags other than drain", cfg0: kern.WorkerCfg{Flags: 2}, after0: kern.WorkerCfg{Flags: 2},
			boundTo: retireAKey, stillIdle: []kern.LegKey{retireBKey}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadRetireDataPlane(t)
			c := stdClientLeg()
			legs := map[kern.LegKey]kern.Leg{
				retireAKey: retireWorkerLeg(0, 1),
				retireBKey: retireWorkerLeg(1, 2),
				retireCKey: retireWorkerLeg(0, 3),
			}
			d.putLeg(clientKey, c)
			queue := []kern.LegKey{retireAKey, retireBKey}
			if tc.withC {
				queue = []kern.LegKey{retireAKey, retireCKey, retireBKey}
			}
			for _, k := range queue {
				d.putLeg(k, legs[k])
				d.pushIdle(k)
			}
			d.setWorkerCfg(0, tc.cfg0)
			ws0, ws1 := d.workerStats(0), d.workerStats(1)

			in := fromClient(seg{seq: c.PeerHi, ack: c.SndNxt, flags: tcpACK | tcpPSH, win: 502,
				opts: nopTS(c.PeerTSval+7, c.OurTSval), payload: request}).build()
			v, out, delta := d.run(in)

			want := []kern.Counter{kern.CounterTCP}
			for range tc.retired {
				want = append(want, kern.CounterRetired)
			}
			var zero kern.LegKey
			if tc.boundTo == zero {
				checkVerdict(t, v, xdpDrop)
				checkCounters(t, delta, append(want, kern.CounterNoIdleLeg, kern.CounterDrop)...)
				checkLeg(t, "client leg", d.mustLeg(clientKey), c)
				d.checkNoBind("no live leg", clientKey)
				checkEvents(t, d.drainEvents(), kern.Event{Type: kern.EventPoolEmpty, Key: clientKey})
			} else {
				checkVerdict(t, v, xdpPass)
				checkCounters(t, delta, append(want, kern.CounterBind, kern.CounterFwdToWorker, kern.CounterPass)...)
				w := legs[tc.boundTo]
				toW, toC := oracleBind(clientKey, httpClient(c), tc.boundTo, w)
				d.checkBind("bound", clientKey, toW)
				d.checkBind("bound", tc.boundTo, toC)
				checkTranslated(t, in, out, toW)
				wantC, wantW := firstBound(c, w, uint32(len(request)), 7)
				checkLeg(t, "client leg", d.mustLeg(clientKey), wantC)
				legs[tc.boundTo] = wantW
				checkEvents(t, d.drainEvents())
			}

			// Every queued worker leg: retired ones dead and unbound, the
			// bound one bound, the rest idle, all positions untouched.
			var boundWorker uint32 = 99
			for _, k := range queue {
				want := legs[k]
				switch {
				case k == tc.boundTo:
					boundWorker = want.Worker
				case slices.Contains(tc.retired, k):
					want.State = kern.LegDead
					d.checkNoBind("retired", k)
				default:
					d.checkNoBind("idle", k)
				}
				checkLeg(t, "worker leg "+k.String(), d.mustLeg(k), want)
			}
			d.checkIdle("after", tc.stillIdle...)
			d.checkRetired("after", tc.retired...)
			d.checkWorkerCfg("after", 0, tc.after0)
			d.checkWorkerCfg("after", 1, kern.WorkerCfg{})

			// Stats: the worker bound to gets the bind, the request, the
			// bytes; a retirement moves no worker counter.
			for id, before := range map[uint32]kern.WorkerStats{0: ws0, 1: ws1} {
				var want kern.WorkerStats
				if id == boundWorker {
					want = kern.WorkerStats{Binds: 1, Requests: 1, BytesIn: uint64(len(request))}
				}
				if got := wsDelta(before, d.workerStats(id)); got != want {
					t.Errorf("worker %d stats moved %+v, want %+v", id, got, want)
				}
			}
		})
	}
}

// TestRetireOnRemix (fixture 4): at a full request boundary the client
// moves onto W2 (worker 2) as in TestRemix; W1, released, goes back to the
// idle queue unless its worker (1) drains or has a trim credit: then it is
// retired instead, counted as a release of worker 1 all the same.
func TestRetireOnRemix(t *testing.T) {
	tests := []struct {
		name         string
		cfg1, after1 kern.WorkerCfg // settings of W1's worker before and after
		retired      bool
	}{
		{name: "drain", cfg1: kern.WorkerCfg{Flags: kern.WorkerDrain}, after1: kern.WorkerCfg{Flags: kern.WorkerDrain}, retired: true},
		{name: "trim credit 1", cfg1: kern.WorkerCfg{Trim: 1}, after1: kern.WorkerCfg{}, retired: true},
		{name: "trim credit 0"},
		{name: "trim credit -3", cfg1: kern.WorkerCfg{Trim: -3}, after1: kern.WorkerCfg{Trim: -3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadRetireDataPlane(t)
			a := answeredPair()
			a.store(d, true)
			d.setWorkerCfg(1, tc.cfg1)
			ws1, ws2 := d.workerStats(1), d.workerStats(2)

			in := a.next().build()
			v, out, delta := d.run(in)
			checkVerdict(t, v, xdpPass)
			want := []kern.Counter{kern.CounterTCP, kern.CounterRequest, kern.CounterRemix, kern.CounterFwdToWorker, kern.CounterPass}
			if tc.retired {
				want = append(want, kern.CounterRetired)
			}
			checkCounters(t, delta, want...)

			// The client moves exactly as in TestRemix.
			cm := a.materializedClient()
			toW2, toC2 := oracleBind(clientKey, cm, worker2Key, a.w2)
			checkTranslated(t, in, out, toW2)
			d.checkBind("after the remix", clientKey, toW2)
			d.checkBind("after the remix", worker2Key, toC2)
			d.checkNoBind("after the remix", workerKey)
			checkLeg(t, "client leg", d.mustLeg(clientKey), a.clientAfterRemix(cm))
			checkLeg(t, "W2", d.mustLeg(worker2Key), a.w2AfterRemix())

			// W1 materialised, then dead and queued for user space, or idle.
			wantW1 := a.releasedW1(kern.LegIdle)
			if tc.retired {
				wantW1.State = kern.LegDead
				d.checkIdle("after the remix")
				d.checkRetired("after the remix", workerKey)
			} else {
				d.checkIdle("after the remix", workerKey)
				d.checkRetired("after the remix")
			}
			checkLeg(t, "W1", d.mustLeg(workerKey), wantW1)
			d.checkWorkerCfg("after the remix", 1, tc.after1)
			d.checkWorkerCfg("after the remix", 2, kern.WorkerCfg{})
			if got, want := wsDelta(ws1, d.workerStats(1)), (kern.WorkerStats{Releases: 1}); got != want {
				t.Errorf("worker 1 stats moved %+v, want %+v", got, want)
			}
			if got, want := wsDelta(ws2, d.workerStats(2)), (kern.WorkerStats{Binds: 1, Requests: 1, BytesIn: uint64(len(request2))}); got != want {
				t.Errorf("worker 2 stats moved %+v, want %+v", got, want)
			}
			checkEvents(t, d.drainEvents())

			if !tc.retired {
				return
			}
			// W1's worker retransmits the tail of its answer: the leg is
			// dead, so the segment is dropped, not acknowledged (user space
			// hands the connection back to the kernel at its next tick).
			in = fromWorker(seg{seq: a.w1.PeerHi - 100, ack: a.w1.PeerAcked, flags: tcpACK | tcpPSH, win: 300,
				opts: nopTS(a.w1.PeerTSval+30, wantW1.OurTSval), payload: make([]byte, 100)}).build()
			v, _, delta = d.run(in)
			checkVerdict(t, v, xdpDrop)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterDeadLeg, kern.CounterDrop)
			checkLeg(t, "W1 after its stale tail", d.mustLeg(workerKey), wantW1)
			d.checkIdle("after the stale tail")
			checkEvents(t, d.drainEvents())
		})
	}
}

// TestRetireRemixCandidate: the leg a remix would move the client onto
// belongs to a draining worker and is the only one queued: it is retired,
// no live leg is left, and the client stays on W1 (remix_no_idle), which is
// not released.
func TestRetireRemixCandidate(t *testing.T) {
	d := loadRetireDataPlane(t)
	a := answeredPair()
	a.store(d, true)
	d.setWorkerCfg(2, kern.WorkerCfg{Flags: kern.WorkerDrain})
	ws1, ws2 := d.workerStats(1), d.workerStats(2)

	in := a.next().build()
	v, out, delta := d.run(in)
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterRequest, kern.CounterRetired, kern.CounterRemixNoIdle,
		kern.CounterFwdToWorker, kern.CounterPass)
	checkTranslated(t, in, out, a.toW1)
	d.checkBind("stayed", clientKey, a.toW1)
	d.checkBind("stayed", workerKey, a.toC)
	d.checkNoBind("stayed", worker2Key)
	wantW1 := a.w1
	wantW1.ReqMark = a.w1.PeerHi // a new request, on W1
	wantW1.SentHi += uint32(len(request2))
	checkLeg(t, "W1", d.mustLeg(workerKey), wantW1)
	wantW2 := a.w2
	wantW2.State = kern.LegDead
	checkLeg(t, "W2", d.mustLeg(worker2Key), wantW2)
	gc := d.mustLeg(clientKey)
	if gc.Requests != a.c.Requests+1 || gc.State != kern.LegBound {
		t.Errorf("client requests %d %s, want %d, bound", gc.Requests, gc.State, a.c.Requests+1)
	}
	d.checkIdle("stayed")
	d.checkRetired("stayed", worker2Key)
	d.checkWorkerCfg("stayed", 2, kern.WorkerCfg{Flags: kern.WorkerDrain})
	if got, want := wsDelta(ws1, d.workerStats(1)), (kern.WorkerStats{Requests: 1, BytesIn: uint64(len(request2))}); got != want {
		t.Errorf("worker 1 stats moved %+v, want %+v", got, want)
	}
	if got := wsDelta(ws2, d.workerStats(2)); got != (kern.WorkerStats{}) {
		t.Errorf("worker 2 stats moved %+v", got)
	}
	checkEvents(t, d.drainEvents())
}
