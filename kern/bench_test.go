package kern_test

// Per-packet cost of the XDP program, through BPF_PROG_TEST_RUN (run by
// `make bench`, or: go test -run '^$' -bench XDP ./kern/).
//
// A repeated test run (Repeat > 1) runs the program again and again on the
// same buffer, so every run after the first would see the packet as the
// previous run rewrote it (a translated segment no longer belongs to the
// leg it came from) and the legs as it left them (a request boundary is a
// boundary once). So each measured packet runs once (Repeat 1) on state set
// up afresh, timed by the kernel. A single run's time also holds the timer
// around it; that share is measured on a foreign packet, which changes
// nothing and can be repeated: its median single-run time less its mean
// over many repeats. Single runs of the foreign packet alternate with those
// of the measured one, so that both see the same machine (a shared VM
// drifts from one second to the next).

import (
	"net"
	"sort"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
	"github.com/xlb-lb/xlb/testnet"
)

// benchRepeat is the repeat count of the foreign packet's mean.
const benchRepeat = 100_000

// foreignSeg is TCP between two addresses xlb knows nothing about.
var foreignSeg = seg{src: mustAddrPort("10.9.0.1:40000"), dst: mustAddrPort("10.9.0.2:443"),
	seq: 1, ack: 1, flags: tcpACK | tcpPSH, win: 500, opts: nopTS(1, 1), payload: make([]byte, 100)}

func testRun(b *testing.B, d *dataPlane, frame []byte, repeat uint32) float64 {
	b.Helper()
	res, err := d.objs.Program.TestRun(&ebpf.TestRunOptions{Data: frame, Repeat: repeat})
	if err != nil {
		b.Fatal(err)
	}
	if res.Return != xdpPass {
		b.Fatalf("verdict %s, want XDP_PASS", verdictName(res.Return))
	}
	return float64(res.Duration / time.Nanosecond)
}

func median(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}

// measure runs frame b.N times, once each after setup, alternating with
// single runs of the foreign packet, and reports: ns/pkt (also as ns/op, so
// that plain `go test -bench` shows it), the median single run of frame
// (raw-ns/pkt), and the timer's share subtracted from it (timer-ns).
func measure(b *testing.B, d *dataPlane, frame []byte, setup func()) {
	b.Helper()
	foreign := foreignSeg.build()
	xs := make([]float64, 0, b.N)
	fs := make([]float64, 0, b.N)
	for range b.N {
		if setup != nil {
			setup()
		}
		xs = append(xs, testRun(b, d, frame, 1))
		fs = append(fs, testRun(b, d, foreign, 1))
	}
	mean := testRun(b, d, foreign, benchRepeat)
	raw := median(xs)
	share := max(0, median(fs)-mean)
	b.ReportMetric(max(0, raw-share), "ns/pkt")
	b.ReportMetric(max(0, raw-share), "ns/op")
	b.ReportMetric(raw, "raw-ns/pkt")
	b.ReportMetric(share, "timer-ns")
}

// BenchmarkXDPForeign: a TCP packet that is not xlb's, passed on.
func BenchmarkXDPForeign(b *testing.B) {
	d := loadDataPlane(b)
	measure(b, d, foreignSeg.build(), nil)
}

// BenchmarkXDPForeignRepeat is the foreign packet's mean over many repeats
// (nothing to subtract): the check on the method of the others.
func BenchmarkXDPForeignRepeat(b *testing.B) {
	d := loadDataPlane(b)
	frame := foreignSeg.build()
	var vs []float64
	for range max(1, b.N/1000) {
		vs = append(vs, testRun(b, d, frame, benchRepeat/10))
	}
	reportRepeats(b, vs)
}

// BenchmarkXDPSpliced: a segment of the worker's answer (1400 B, TS option)
// on a bound pair, translated to the client.
func BenchmarkXDPSpliced(b *testing.B) {
	d := loadDataPlane(b)
	c, w := stdClientLeg(), stdWorkerLeg()
	frame := fromWorker(seg{seq: w.PeerHi, ack: w.SndNxt, flags: tcpACK, win: 300,
		opts: nopTS(w.PeerTSval+1, w.OurTSval), payload: make([]byte, 1400)}).build()
	setup := func() { d.bindPair(clientKey, c, workerKey, w) }
	measure(b, d, frame, setup)
}

// BenchmarkXDPContinuation: request data from the client on a bound pair
// (no boundary: the worker has not answered yet), translated to the worker.
func BenchmarkXDPContinuation(b *testing.B) {
	d := loadDataPlane(b)
	c, w := stdClientLeg(), stdWorkerLeg()
	frame := fromClient(seg{seq: c.PeerHi, ack: c.SndNxt, flags: tcpACK | tcpPSH, win: 502,
		opts: nopTS(c.PeerTSval+1, c.OurTSval), payload: request}).build()
	setup := func() { d.bindPair(clientKey, c, workerKey, w) }
	measure(b, d, frame, setup)
}

// BenchmarkXDPBoundary: the client's next request after a whole answer, a
// request boundary: the program remixes the client onto the idle worker
// leg W2 and releases W1.
func BenchmarkXDPBoundary(b *testing.B) { benchBoundary(b, false) }

// BenchmarkXDPBoundaryLogged is BenchmarkXDPBoundary with request records
// on (log_every 1): W1's request is logged, its record written at the
// boundary, W2's started.
func BenchmarkXDPBoundaryLogged(b *testing.B) { benchBoundary(b, true) }

func benchBoundary(b *testing.B, logged bool) {
	d := loadDataPlane(b)
	a := answeredPair()
	if logged {
		c := defaultConfig
		c.LogEvery = 1
		d.setConfig(c)
		a.w1.ReqNs, a.w1.FirstUs, a.w1.LastUs = 1000, 5, 9
	}
	frame := a.next().build()
	w2 := keyBytes(b, worker2Key)
	setup := func() {
		d.idleQueue() // W1, released by the previous run
		d.objs.Binds.Delete(w2)
		d.drainEvents()
		d.drainRecords()
		a.store(d, true)
	}
	before := d.counters()
	measure(b, d, frame, setup)
	after := d.counters()
	// Every run must have been a remix, or the figure is of something else.
	if n := after[kern.CounterRemix] - before[kern.CounterRemix]; n != uint64(b.N) {
		b.Fatalf("%d remixes in %d runs", n, b.N)
	}
	if n := after[kern.CounterReqlogLost] - before[kern.CounterReqlogLost]; n != 0 {
		b.Fatalf("%d records lost", n)
	}
}

// BenchmarkXDPSplicedRepeat: a spliced segment in steady state, repeated in
// the kernel (no timer to subtract). Leg A (a worker leg, peer P, local L)
// is bound to the partner key (peer L, local P) with zero offsets: its
// segment P -> L leaves as the very same bytes, so every repeat is a full
// spliced translation (leg and binding lookups, positions, window and
// timestamp rewrite, checksums) of an identical packet, as a busy
// connection's segments are.
func BenchmarkXDPSplicedRepeat(b *testing.B) {
	d := loadDataPlane(b)
	frame := selfSplicedSegment(d)
	before := d.counters()
	var vs []float64
	for range max(1, b.N/1000) {
		vs = append(vs, testRun(b, d, frame, benchRepeat/10))
	}
	after := d.counters()
	runs := uint64(max(1, b.N/1000)) * benchRepeat / 10
	// At least: a run that a signal interrupts is tried again whole.
	if n := after[kern.CounterFwdToClient] - before[kern.CounterFwdToClient]; n < runs || after[kern.CounterDrop] != before[kern.CounterDrop] {
		b.Fatalf("%d translations in %d runs: the packet did not stay a spliced segment", n, runs)
	}
	reportRepeats(b, vs)
}

// BenchmarkXDPSplicedRoutedRepeat: BenchmarkXDPSplicedRepeat in routed
// mode, in a namespace where the segment's destination has a route and a
// neighbour on the device it came in on: every repeat also finds its next
// hop (xlb_fib; the first one looks it up) and leaves by XDP_TX.
func BenchmarkXDPSplicedRoutedRepeat(b *testing.B) {
	d := loadDataPlane(b)
	cfg := defaultConfig
	cfg.Flags |= kern.ConfigRouted
	d.setConfig(cfg)
	if err := d.objs.NextHopsChanged(); err != nil {
		b.Fatal(err)
	}
	ns, peer := testnet.New(b), testnet.New(b)
	testnet.Veth(b, ns, "l0", fixturePrefix("10.5.0.100/24"), peer, "p0", fixturePrefix("10.5.0.1/24"))
	ns.Run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	ns.Run("ip", "neigh", "replace", mustAddrPort("10.5.0.2:0").Addr().String(), "lladdr", "02:00:00:00:05:02", "dev", "l0", "nud", "permanent")
	var l0 int
	if err := ns.Do(func() error {
		ifc, err := net.InterfaceByName("l0")
		if err == nil {
			l0 = ifc.Index
		}
		return err
	}); err != nil {
		b.Fatal(err)
	}
	frame := selfSplicedSegment(d)
	ctx := xdpCtx(frame, l0)
	before := d.counters()
	var vs []float64
	for range max(1, b.N/1000) {
		var res *ebpf.TestRunResult
		err := ns.Do(func() error {
			var err error
			res, err = d.objs.Program.TestRun(&ebpf.TestRunOptions{Data: frame, Context: ctx, Repeat: benchRepeat / 10})
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
		if res.Return != xdpTX {
			b.Fatalf("verdict %s, want XDP_TX", verdictName(res.Return))
		}
		vs = append(vs, float64(res.Duration/time.Nanosecond))
	}
	after := d.counters()
	runs := uint64(max(1, b.N/1000)) * benchRepeat / 10
	if n := after[kern.CounterTX] - before[kern.CounterTX]; n < runs || after[kern.CounterFIBFail] != before[kern.CounterFIBFail] {
		b.Fatalf("%d sent by XDP_TX in %d runs", n, runs)
	}
	reportRepeats(b, vs)
}

// selfSplicedSegment stores leg A (a worker leg, peer P, local L) bound to
// the partner key (peer L, local P) with zero offsets, and returns its
// 1400-byte segment P -> L: it leaves as the very same bytes, so that every
// repeat of it is a full spliced translation of an identical packet.
func selfSplicedSegment(d *dataPlane) []byte {
	p1, l1 := mustAddrPort("10.5.0.1:8080"), mustAddrPort("10.5.0.2:50000")
	a := kern.LegKey{Peer: p1, Local: l1}
	leg := stdWorkerLeg()
	leg.PeerWScale, leg.OurWScale = 7, 7
	leg.WinBound = winBound(7, 7)
	leg.State = kern.LegBound
	d.putLeg(a, leg)
	d.putBind(a, kern.Binding{To: kern.LegKey{Peer: l1, Local: p1}, InWScale: 7, OutWScale: 7, Flags: kern.BindToClient, Worker: 1})
	return seg{src: p1, dst: l1, seq: leg.PeerHi, ack: leg.PeerAcked, flags: tcpACK, win: 300,
		opts: nopTS(leg.PeerTSval, leg.OurTSval), payload: make([]byte, 1400)}.build()
}

// reportRepeats reports the median of the kernel's mean times of repeated
// runs: there is no timer share to subtract.
func reportRepeats(b *testing.B, vs []float64) {
	m := median(vs)
	b.ReportMetric(m, "ns/pkt")
	b.ReportMetric(m, "ns/op")
	b.ReportMetric(m, "raw-ns/pkt")
	b.ReportMetric(0, "timer-ns")
}
