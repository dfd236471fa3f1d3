package kern_test

// Fixtures of the policies (who gets the request at a boundary), of xlb ctl
// rematch, and of the control program's idle release (park, grace period,
// release). The pair is answeredPair's: C on W1 (worker 1) after a whole
// answer; W2 (worker 2) and W3 (worker 3) idle.

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"testing"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
)

func stdWorker3Leg() kern.Leg {
	w := stdWorker2Leg()
	w.Worker = 3
	w.PeerHi, w.PeerAcked, w.SndNxt = 0x5000_0000, 0x7000_0000, 0x7000_0000
	return w
}

func (d *dataPlane) setSchedule(ids ...uint32) {
	d.t.Helper()
	sched := d.objs.Sched
	if family6 {
		sched = d.objs.Sched6
	}
	for i, id := range ids {
		if err := sched.Update(ebpf.Uint32Key(uint32(i)), ebpf.Uint32Key(id), ebpf.UpdateAny); err != nil {
			d.t.Fatal(err)
		}
	}
	c := defaultConfig
	c.Policy = d.policy
	c.SchedLen = uint32(len(ids))
	if family6 {
		c.SchedLen, c.SchedLen6 = 0, uint32(len(ids)) // the IPv6 programs read theirs
	}
	d.setConfig(c)
	if err := d.objs.Map(kern.RRMapName).Update(ebpf.Uint32Key(0), make([]byte, 8), ebpf.UpdateAny); err != nil {
		d.t.Fatal(err)
	}
}

func (d *dataPlane) setLoad(id uint32, n int64) {
	d.t.Helper()
	v := binary.NativeEndian.AppendUint64(nil, uint64(n))
	v = binary.NativeEndian.AppendUint64(v, uint64(d.idleCount(id)))
	v = binary.NativeEndian.AppendUint64(v, uint64(d.coolingCount(id)))
	if err := d.objs.WLoad.Update(ebpf.Uint32Key(id), v, ebpf.UpdateAny); err != nil {
		d.t.Fatal(err)
	}
}

func (d *dataPlane) setRematch(k kern.LegKey, id uint32) {
	d.t.Helper()
	if err := d.objs.Rematch.Update(keyBytes(d.t, k), ebpf.Uint32Key(id), ebpf.UpdateAny); err != nil {
		d.t.Fatal(err)
	}
}

func (d *dataPlane) rematchPending(k kern.LegKey) bool {
	return d.objs.Rematch.Lookup(keyBytes(d.t, k), make([]byte, 4)) == nil
}

// ctl runs the control program; true when it carried the command out.
func (d *dataPlane) ctl(op kern.CtlOp, k kern.LegKey, minIdleNs uint64) bool {
	d.t.Helper()
	return d.ctl2(kern.CtlMsg{Op: op, Key: k, MinIdleNs: minIdleNs})
}

// ctl2 runs the control program on msg.
func (d *dataPlane) ctl2(msg kern.CtlMsg) bool {
	d.t.Helper()
	b, err := msg.MarshalBinary()
	if err != nil {
		d.t.Fatal(err)
	}
	res, err := d.objs.Ctl.TestRun(&ebpf.TestRunOptions{Data: b})
	if err != nil {
		d.t.Fatal(err)
	}
	return res.Return == xdpPass
}

// TestPolicies: the client's next request at a boundary, with W2 then W3
// idle (in that order), under each policy.
func TestPolicies(t *testing.T) {
	tests := []struct {
		name    string
		policy  kern.Policy
		sched   []uint32
		loads   map[uint32]int64
		weights map[uint32]uint32
		rematch uint32 // worker id, 0: none
		drain1  bool   // W1's worker drains
		want    kern.LegKey
		remixed bool
	}{
		{name: "jiq: the leg idle the longest", policy: kern.PolicyJIQ, want: worker2Key, remixed: true},
		{name: "rr: the schedule's next worker", policy: kern.PolicyRR, sched: []uint32{3, 2}, want: worker3Key, remixed: true},
		{name: "rr: a worker with nothing idle is skipped", policy: kern.PolicyRR, sched: []uint32{4, 2, 3}, want: worker2Key, remixed: true},
		{name: "least: fewest bound legs", policy: kern.PolicyLeast, sched: []uint32{2, 3},
			loads: map[uint32]int64{2: 5, 3: 1}, want: worker3Key, remixed: true},
		{name: "least: per unit of weight", policy: kern.PolicyLeast, sched: []uint32{2, 3},
			loads: map[uint32]int64{2: 2, 3: 1}, weights: map[uint32]uint32{2: 4, 3: 1}, want: worker2Key, remixed: true},
		{name: "sticky stays", policy: kern.PolicySticky, want: workerKey},
		{name: "sticky moves on rematch", policy: kern.PolicySticky, rematch: 3, want: worker3Key, remixed: true},
		{name: "sticky moves off a draining worker", policy: kern.PolicySticky, drain1: true, want: worker2Key, remixed: true},
		{name: "jiq: rematch beats the queue", policy: kern.PolicyJIQ, rematch: 3, want: worker3Key, remixed: true},
		{name: "rematch to a worker with nothing idle stays pending", policy: kern.PolicyJIQ, rematch: 4, want: workerKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			d.policy = tc.policy
			a := answeredPair()
			a.store(d, true)
			d.putLeg(worker3Key, stdWorker3Leg())
			d.pushIdle(worker3Key)
			d.setSchedule(tc.sched...)
			d.setLoad(1, 1) // W1, bound
			for id, n := range tc.loads {
				d.setLoad(id, n)
			}
			for id, w := range tc.weights {
				d.setWorkerCfg(id, kern.WorkerCfg{Weight: w})
			}
			if tc.drain1 {
				d.setWorkerCfg(1, kern.WorkerCfg{Flags: kern.WorkerDrain})
			}
			if tc.rematch != 0 {
				d.setRematch(clientKey, tc.rematch)
			}
			before := map[uint32]int64{1: d.load(1), 2: d.load(2), 3: d.load(3)}

			v, _, delta := d.run(a.next().build())
			checkVerdict(t, v, xdpPass)
			b, ok := d.bind(clientKey)
			if !ok || b.To != tc.want {
				t.Fatalf("client bound to %v (%v), want %v", b.To, ok, tc.want)
			}
			if got := delta[kern.CounterRemix]; got != map[bool]uint64{true: 1}[tc.remixed] {
				t.Errorf("remix counted %d times, want remixed=%v", got, tc.remixed)
			}
			if tc.rematch != 0 {
				if moved := tc.want != workerKey; d.rematchPending(clientKey) == moved {
					t.Errorf("rematch pending %v after the boundary, want %v", !moved, !moved)
				}
				if tc.want != workerKey && delta[kern.CounterRematch] != 1 {
					t.Errorf("rematch counted %d times, want 1", delta[kern.CounterRematch])
				}
			}
			if tc.remixed {
				newW := d.mustLeg(tc.want).Worker
				if got := d.load(newW) - before[newW]; got != 1 {
					t.Errorf("worker %d load moved by %d, want +1", newW, got)
				}
				if got := d.load(1) - before[1]; got != -1 {
					t.Errorf("worker 1 load moved by %d, want -1", got)
				}
				wantState := kern.LegIdle
				if tc.drain1 {
					wantState = kern.LegDead // retired, not back in the pool
				}
				if s := d.mustLeg(workerKey).State; s != wantState {
					t.Errorf("W1 is %v after the move, want %v", s, wantState)
				}
			} else if d.load(1) != before[1] {
				t.Errorf("worker 1 load moved by %d though the client stayed", d.load(1)-before[1])
			}
		})
	}
}

// quiescentPair is answeredPair after the client's pure ACK of the whole
// answer: no request in flight.
func quiescentPair(t *testing.T, d *dataPlane) answered {
	a := answeredPair()
	a.store(d, true)
	d.setLoad(1, 1)
	in := fromClient(seg{seq: a.c.PeerHi, ack: a.cSndNxt(), flags: tcpACK, win: 400,
		opts: nopTS(a.c.PeerTSval+1, a.cOurTSval())}).build()
	v, _, _ := d.run(in)
	checkVerdict(t, v, xdpPass)
	a.c = d.mustLeg(clientKey)
	if a.c.PeerAcked != a.cSndNxt() {
		t.Fatalf("client acked %#x, want the whole answer %#x", a.c.PeerAcked, a.cSndNxt())
	}
	return a
}

// TestIdleRelease: a quiescent client gives its worker leg back: parked,
// then (after the grace period user space waits for) released; its next
// request binds afresh.
func TestIdleRelease(t *testing.T) {
	d := loadDataPlane(t)
	a := quiescentPair(t, d)

	if d.ctl(kern.CtlPark, clientKey, 1<<62) {
		t.Fatal("parked a client that has not been idle for the asked time")
	}
	if !d.ctl(kern.CtlPark, clientKey, 0) {
		t.Fatal("a quiescent client was not parked")
	}
	if s := d.mustLeg(clientKey).State; s != kern.LegParked {
		t.Fatalf("client leg %v after park, want parked", s)
	}
	// Data while parked is dropped (the client retransmits it).
	v, _, delta := d.run(a.next().build())
	checkVerdict(t, v, xdpDrop)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterParkedDrop, kern.CounterDrop)
	if d.mustLeg(workerKey).PeerHi != a.w1.PeerHi || d.mustLeg(clientKey).PeerHi != a.c.PeerHi {
		t.Fatal("a dropped segment moved positions")
	}

	ws1 := d.workerStats(1)
	if !d.ctl(kern.CtlRelease, clientKey, 0) {
		t.Fatal("release refused")
	}
	c := d.mustLeg(clientKey)
	if c.State != kern.LegIdle || c.SndNxt != a.cSndNxt() || c.OurTSval != a.cOurTSval() {
		t.Errorf("client after release: %v snd_nxt %#x tsval %d, want idle, %#x, %d",
			c.State, c.SndNxt, c.OurTSval, a.cSndNxt(), a.cOurTSval())
	}
	d.checkNoBind("after release", clientKey)
	d.checkNoBind("after release", workerKey)
	if s := d.mustLeg(workerKey).State; s != kern.LegIdle {
		t.Errorf("W1 %v after release, want idle", s)
	}
	if got := wsDelta(ws1, d.workerStats(1)); got.Releases != 1 {
		t.Errorf("worker 1 stats moved %+v, want one release", got)
	}
	if d.load(1) != 0 {
		t.Errorf("worker 1 load %d after release, want 0", d.load(1))
	}
	// The pools (by worker id): W1 given back, W2. checkIdle queues them
	// again in that order, so W1 is now the leg idle the longest.
	d.checkIdle("after release", workerKey, worker2Key)
	w1 := d.mustLeg(workerKey)

	// The retransmitted request binds the client afresh, from the
	// positions the release materialised on both legs.
	in := a.next().build()
	v, out, delta := d.run(in)
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterBind, kern.CounterFwdToWorker, kern.CounterPass)
	toW1, _ := oracleBind(clientKey, c, workerKey, w1)
	d.checkBind("after the new request", clientKey, toW1)
	checkTranslated(t, in, out, toW1)
	if o := mustParse(t, out); o.seq != a.w1.PeerAcked {
		t.Errorf("request reaches W1 at seq %#x, want right after what its worker acked, %#x", o.seq, a.w1.PeerAcked)
	}
}

// TestIdleReleaseRefused: a release finds the pair no longer quiescent (the
// worker talked after the park): the pair goes on as it was.
func TestIdleReleaseRefused(t *testing.T) {
	d := loadDataPlane(t)
	a := quiescentPair(t, d)
	if !d.ctl(kern.CtlPark, clientKey, 0) {
		t.Fatal("not parked")
	}
	// The worker sends more (unsolicited) data, forwarded to the client.
	in := fromWorker(seg{seq: a.w1.PeerHi, ack: a.w1.PeerAcked, flags: tcpACK | tcpPSH, win: 300,
		opts: nopTS(a.w1.PeerTSval+1, a.w1.OurTSval), payload: []byte("late")}).build()
	v, _, _ := d.run(in)
	checkVerdict(t, v, xdpPass)
	if d.ctl(kern.CtlRelease, clientKey, 0) {
		t.Fatal("released a pair with bytes in flight to the client")
	}
	if s := d.mustLeg(clientKey).State; s != kern.LegBound {
		t.Errorf("client %v after a refused release, want bound", s)
	}
	if b, ok := d.bind(clientKey); !ok || b != a.toW1 {
		t.Errorf("binding %+v (%v) after a refused release, want the old one", b, ok)
	}
	if d.ctl(kern.CtlPark, clientKey, 0) {
		t.Fatal("parked a pair with bytes the client has not acknowledged")
	}
}

// TestUnpark: without a grace period user space unparks.
func TestUnpark(t *testing.T) {
	d := loadDataPlane(t)
	quiescentPair(t, d)
	if !d.ctl(kern.CtlPark, clientKey, 0) || !d.ctl(kern.CtlUnpark, clientKey, 0) {
		t.Fatal("park, unpark")
	}
	if s := d.mustLeg(clientKey).State; s != kern.LegBound {
		t.Errorf("client %v after unpark, want bound", s)
	}
	if d.ctl(kern.CtlUnpark, clientKey, 0) {
		t.Error("unparked a leg that was not parked")
	}
	if d.ctl(kern.CtlRelease, clientKey, 0) {
		t.Error("released a leg that was not parked")
	}
}

// TestRetireIdle: CTL_RETIRE_IDLE empties a draining worker's pool, an entry
// a run, retiring its idle legs (queued in xlb_retired for user space to
// end); a leg in use (a stale entry) is left alone; a worker that does not
// drain keeps its pool.
func TestRetireIdle(t *testing.T) {
	d := loadDataPlane(t)
	inUse := retireWorkerLeg(0, 3)
	inUse.State = kern.LegBound
	d.putLeg(retireAKey, retireWorkerLeg(0, 1))
	d.putLeg(retireCKey, inUse)
	d.putLeg(retireBKey, retireWorkerLeg(1, 2))
	for _, k := range []kern.LegKey{retireAKey, retireCKey, retireBKey} {
		d.pushIdle(k)
	}
	if d.ctl2(kern.CtlMsg{Op: kern.CtlRetireIdle, Worker: 0}) {
		t.Fatal("retired from a worker that does not drain")
	}
	d.setWorkerCfg(0, kern.WorkerCfg{Flags: kern.WorkerDrain})
	runs := 0
	for runs < 10 && d.ctl2(kern.CtlMsg{Op: kern.CtlRetireIdle, Worker: 0}) {
		runs++
	}
	if runs != 2 {
		t.Errorf("%d entries taken off worker 0's pool, want its 2", runs)
	}
	if s := d.mustLeg(retireAKey).State; s != kern.LegDead {
		t.Errorf("idle leg of the draining worker is %v, want dead (retired)", s)
	}
	if s := d.mustLeg(retireCKey).State; s != kern.LegBound {
		t.Errorf("leg in use is %v after its stale entry was taken, want bound", s)
	}
	if got := d.popKeys(d.objs.Retired); len(got) != 1 || got[0] != retireAKey {
		t.Errorf("retired queue %v, want [%v]", got, retireAKey)
	}
	d.checkIdle("worker 1's pool", retireBKey)
}

// TestFirstBindFindsAnyIdleLeg: jiq's tokens can outnumber a worker's idle
// legs (entries of legs that died idle, or were retired by a trim, leave
// their tokens); a client's first data still binds if any worker of the
// schedule has an idle leg, rather than being dropped to wait for its
// retransmission timer. At a boundary the client just stays.
func TestFirstBindFindsAnyIdleLeg(t *testing.T) {
	d := loadDataPlane(t)
	d.setSchedule(1, 2)
	c, w2 := stdClientLeg(), stdWorker2Leg()
	d.putLeg(clientKey, c)
	d.putLeg(worker2Key, w2)
	if err := d.pool(2).Push(keyBytes(t, worker2Key)); err != nil { // no token
		t.Fatal(err)
	}
	for range 5 { // tokens of worker 1, whose pool is empty
		if err := d.ready().Push(ebpf.Uint32Key(1)); err != nil {
			t.Fatal(err)
		}
	}
	in := fromClient(seg{seq: c.PeerHi, ack: c.SndNxt, flags: tcpACK | tcpPSH, win: 502,
		opts: nopTS(c.PeerTSval+1, c.OurTSval), payload: request}).build()
	v, _, delta := d.run(in)
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterBind, kern.CounterFwdToWorker, kern.CounterPass)
	if b, ok := d.bind(clientKey); !ok || b.To != worker2Key {
		t.Errorf("client bound to %v (%v), want W2, the one idle leg", b.To, ok)
	}
}

// TestFamiliesPickTheirOwn: a client takes worker legs of its own family
// only: the IPv4 programs pick from xlb_ready and xlb_sched, the IPv6 ones
// from xlb_ready6 and xlb_sched6, and pooling puts a leg's token in its
// family's queue. With only IPv4 worker legs idle, an IPv6 client's first
// data finds no leg.
func TestFamiliesPickTheirOwn(t *testing.T) {
	if family6 {
		t.Skip("builds both families itself: run once")
	}
	v6 := func(k kern.LegKey) kern.LegKey {
		return kern.LegKey{Peer: netip.AddrPortFrom(to6(k.Peer.Addr()), k.Peer.Port()), Local: netip.AddrPortFrom(to6(k.Local.Addr()), k.Local.Port())}
	}
	client6, worker6 := v6(clientKey), v6(worker2Key)
	first := func(src, dst netip.AddrPort, c kern.Leg) []byte {
		return seg{src: src, dst: dst, seq: c.PeerHi, ack: c.SndNxt, flags: tcpACK | tcpPSH, win: 502,
			opts: nopTS(c.PeerTSval+1, c.OurTSval), payload: request}.build()
	}
	for _, policy := range []kern.Policy{kern.PolicyJIQ, kern.PolicyRR} {
		t.Run(map[kern.Policy]string{kern.PolicyJIQ: "jiq", kern.PolicyRR: "rr"}[policy], func(t *testing.T) {
			d := loadDataPlane(t)
			d.policy = policy
			d.setSchedule(1) // IPv4: worker 1
			for i, id := range []uint32{2} {
				if err := d.objs.Sched6.Update(ebpf.Uint32Key(uint32(i)), ebpf.Uint32Key(id), ebpf.UpdateAny); err != nil {
					t.Fatal(err)
				}
			}
			c := defaultConfig
			c.ListenAddr = netip.Addr{} // both families
			c.Policy, c.SchedLen, c.SchedLen6 = policy, 1, 1
			d.setConfig(c)
			cl := stdClientLeg()
			d.putLeg(clientKey, cl)
			d.putLeg(client6, cl)
			w4, w6 := stdWorkerLeg(), stdWorker2Leg()
			d.putLeg(workerKey, w4)
			d.putLeg(worker6, w6)
			// Pooled by the control program, as user space does: each
			// token goes to its leg's family.
			for _, k := range []kern.LegKey{workerKey, worker6} {
				l := d.mustLeg(k)
				l.State = kern.LegNew
				d.putLeg(k, l)
				if !d.ctl2(kern.CtlMsg{Op: kern.CtlPool, Key: k, Worker: l.Worker}) {
					t.Fatalf("pooling %s: refused", k)
				}
			}
			if policy == kern.PolicyJIQ {
				if got := readTokens(t, d.objs.Ready); !slices.Equal(got, []uint32{1}) {
					t.Errorf("IPv4 tokens %v, want [1]", got)
				}
				if got := readTokens(t, d.objs.Ready6); !slices.Equal(got, []uint32{2}) {
					t.Errorf("IPv6 tokens %v, want [2]", got)
				}
				for _, tok := range []struct {
					m  *ebpf.Map
					id uint32
				}{{d.objs.Ready, 1}, {d.objs.Ready6, 2}} {
					if err := tok.m.Push(ebpf.Uint32Key(tok.id)); err != nil {
						t.Fatal(err)
					}
				}
			}
			// The IPv6 client first: it must take worker 2's leg, though
			// worker 1's is idle too.
			v, _, delta := d.run(first(client6.Peer, client6.Local, cl))
			checkVerdict(t, v, xdpPass)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterBind, kern.CounterFwdToWorker, kern.CounterPass)
			if b, ok := d.bind(client6); !ok || b.To != worker6 {
				t.Errorf("IPv6 client bound to %v (bound %v), want %s", b.To, ok, worker6)
			}
			v, _, delta = d.run(first(clientKey.Peer, clientKey.Local, cl))
			checkVerdict(t, v, xdpPass)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterBind, kern.CounterFwdToWorker, kern.CounterPass)
			if b, ok := d.bind(clientKey); !ok || b.To != workerKey {
				t.Errorf("IPv4 client bound to %v (bound %v), want %s", b.To, ok, workerKey)
			}
			// A second IPv6 client: worker 1's IPv4 legs do not serve it.
			other := v6(client2Key)
			d.putLeg(other, cl)
			w1 := stdWorkerLeg()
			w1.State = kern.LegIdle
			spare := kern.LegKey{Peer: workerAddr, Local: mustAddrPort("10.0.0.100:50009")}
			d.putLeg(spare, w1)
			d.pushIdleTo(spare, 1)
			v, _, delta = d.run(first(other.Peer, other.Local, cl))
			checkVerdict(t, v, xdpDrop)
			if delta[kern.CounterNoIdleLeg] != 1 || delta[kern.CounterBind] != 0 {
				t.Errorf("an IPv6 client with only IPv4 legs idle: counters %v", delta)
			}
			if _, ok := d.bind(other); ok {
				t.Error("the IPv6 client was bound to an IPv4 worker leg")
			}
		})
	}
}

// readTokens empties a token queue and returns its worker ids.
func readTokens(t *testing.T, m *ebpf.Map) []uint32 {
	t.Helper()
	var ids []uint32
	v := make([]byte, 4)
	for i := uint32(0); i <= m.MaxEntries() && m.Pop(v) == nil; i++ {
		ids = append(ids, binary.NativeEndian.Uint32(v))
	}
	return ids
}
