package kern_test

// The harness of the packet fixtures: the real data plane loaded with
// kern.Load(), its maps written and read through the Go mirror of structs.h,
// packets run through BPF_PROG_TEST_RUN, counters and events read back.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
	"github.com/xlb-lb/xlb/splice"
	"github.com/xlb-lb/xlb/testnet"
)

// The addresses of the fixtures: a client of the service, and a worker leg
// the load balancer opened from its own address.
var (
	clientAddr  = mustAddrPort("10.0.0.1:40000")
	serviceAddr = mustAddrPort("10.0.0.100:80")
	workerAddr  = mustAddrPort("10.0.1.1:8080")
	poolAddr    = mustAddrPort("10.0.0.100:50000") // our end of a worker leg

	clientKey = kern.LegKey{Peer: clientAddr, Local: serviceAddr}
	workerKey = kern.LegKey{Peer: workerAddr, Local: poolAddr}
)

var defaultConfig = kern.Config{ListenAddr: serviceAddr.Addr(), ListenPort: serviceAddr.Port(), OurWScale: 7, OurMSS: 1460}

// dataPlane is one loaded copy of the program with its own maps.
type dataPlane struct {
	t      testing.TB
	policy kern.Policy // what setSchedule configures
	objs   *kern.Objects
	events *ebpf.RingBufReader
}

// shared is the data plane every fixture uses: loading takes the verifier
// most of a second, so it is loaded once and its maps are emptied between
// fixtures. Tests of this package do not run in parallel.
var shared struct {
	objs   *kern.Objects
	events *ebpf.RingBufReader
	reqlog *ebpf.RingBufReader
	pools  map[uint32]*ebpf.Map // worker id -> its pool queue (inner map of xlb_pool)
}

// loadDataPlane returns the data plane with empty maps, zero-based counters
// (run reports deltas) and the default config.
func loadDataPlane(t testing.TB) *dataPlane {
	t.Helper()
	testnet.RequireRoot(t)
	if shared.objs == nil {
		objs, err := kern.Load()
		if err != nil {
			t.Fatalf("kern.Load: %v", err)
		}
		rb, err := ebpf.NewRingBufReader(objs.Events)
		if err != nil {
			objs.Close()
			t.Fatalf("event ring: %v", err)
		}
		rl, err := ebpf.NewRingBufReader(objs.ReqLog)
		if err != nil {
			objs.Close()
			t.Fatalf("request record ring: %v", err)
		}
		shared.objs, shared.events, shared.reqlog = objs, rb, rl
	}
	d := &dataPlane{t: t, objs: shared.objs, events: shared.events}
	for id := uint32(0); id < 8; id++ {
		d.pool(id) // every worker user space knows has a pool
	}
	d.reset()
	return d
}

// reset empties every map but the counters and sets the default config.
func (d *dataPlane) reset() {
	d.t.Helper()
	for _, m := range []*ebpf.Map{d.objs.Legs, d.objs.Binds, d.objs.Handshakes, d.objs.Dials, d.objs.Workers, d.objs.Rematch, d.objs.Held} {
		next := make([]byte, m.KeySize())
		for {
			err := m.NextKey(nil, next)
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				break
			}
			if err != nil {
				d.t.Fatal(err)
			}
			if err := m.Delete(next); err != nil {
				d.t.Fatal(err)
			}
		}
	}
	d.idleQueue()
	d.drainEvents()
	d.drainRecords()
	d.setConfig(defaultConfig)
	// Worker settings (drain flags, trim credits) and retired legs left by a
	// fixture would change what the next one sees.
	zero := make([]byte, kern.WorkerCfgSize)
	for id := uint32(0); id < d.objs.WCfg.MaxEntries(); id++ {
		if err := d.objs.WCfg.Update(ebpf.Uint32Key(id), zero, ebpf.UpdateAny); err != nil {
			d.t.Fatal(err)
		}
	}
	d.popKeys(d.objs.Retired)
	if err := d.objs.SynBudget.Update(ebpf.Uint32Key(0), make([]byte, 8), ebpf.UpdateAny); err != nil {
		d.t.Fatal(err)
	}
	cool := d.objs.Map(kern.CoolingMapName)
	for i := uint32(0); i <= cool.MaxEntries(); i++ {
		if cool.Pop(make([]byte, kern.CoolingEntrySize)) != nil {
			break
		}
	}
	zero = make([]byte, kern.WorkerLoadSize)
	for id := uint32(0); id < d.objs.WLoad.MaxEntries(); id++ {
		if err := d.objs.WLoad.Update(ebpf.Uint32Key(id), zero, ebpf.UpdateAny); err != nil {
			d.t.Fatal(err)
		}
	}
}

// pool is worker id's pool queue, created on first use.
func (d *dataPlane) pool(id uint32) *ebpf.Map {
	d.t.Helper()
	if shared.pools == nil {
		shared.pools = map[uint32]*ebpf.Map{}
	}
	if q := shared.pools[id]; q != nil {
		return q
	}
	spec := *d.objs.Pool.Spec().InnerMap
	q, err := ebpf.NewMap(&spec)
	if err != nil {
		d.t.Fatal(err)
	}
	if err := d.objs.Pool.UpdateInner(ebpf.Uint32Key(id), q); err != nil {
		d.t.Fatal(err)
	}
	shared.pools[id] = q
	return q
}

// workerLoad is worker id's entry of xlb_wload.
func (d *dataPlane) workerLoad(id uint32) kern.WorkerLoad {
	d.t.Helper()
	v := make([]byte, kern.WorkerLoadSize)
	if err := d.objs.WLoad.Lookup(ebpf.Uint32Key(id), v); err != nil {
		d.t.Fatal(err)
	}
	var l kern.WorkerLoad
	if err := l.UnmarshalBinary(v); err != nil {
		d.t.Fatal(err)
	}
	return l
}

// load is the data plane's count of worker id's bound legs.
func (d *dataPlane) load(id uint32) int64 {
	d.t.Helper()
	return d.workerLoad(id).Bound
}

// coolingCount is the data plane's count of worker id's cooling legs.
func (d *dataPlane) coolingCount(id uint32) int64 {
	d.t.Helper()
	return d.workerLoad(id).Cooling
}

// idleCount is the data plane's count of worker id's idle legs.
func (d *dataPlane) idleCount(id uint32) int64 {
	d.t.Helper()
	return d.workerLoad(id).Idle
}

func (d *dataPlane) setConfig(c kern.Config) {
	d.t.Helper()
	v, err := c.MarshalBinary()
	if err != nil {
		d.t.Fatal(err)
	}
	if err := d.objs.Config.Update(ebpf.Uint32Key(0), v, ebpf.UpdateAny); err != nil {
		d.t.Fatal(err)
	}
}

func keyBytes(t testing.TB, k kern.LegKey) []byte {
	t.Helper()
	b, err := k.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// putLeg stores a leg; a worker leg's local port is marked in xlb_ports, as
// user space does.
func (d *dataPlane) putLeg(k kern.LegKey, l kern.Leg) {
	d.t.Helper()
	v, _ := l.MarshalBinary()
	if err := d.objs.Legs.Update(keyBytes(d.t, k), v, ebpf.UpdateAny); err != nil {
		d.t.Fatal(err)
	}
	if l.Kind == kern.LegWorker {
		port := k.Local.Port()
		idx := ebpf.Uint32Key(uint32(port) / 64)
		w := make([]byte, 8)
		if err := d.objs.Ports.Lookup(idx, w); err != nil {
			d.t.Fatal(err)
		}
		binary.NativeEndian.PutUint64(w, binary.NativeEndian.Uint64(w)|1<<(port%64))
		if err := d.objs.Ports.Update(idx, w, ebpf.UpdateAny); err != nil {
			d.t.Fatal(err)
		}
	}
}

// entry reads key k of map m into a T (a struct of the object with its
// UnmarshalBinary): false if m has no such key.
func entry[T any, P interface {
	*T
	UnmarshalBinary([]byte) error
}](d *dataPlane, m *ebpf.Map, k kern.LegKey) (T, bool) {
	d.t.Helper()
	var x T
	v := make([]byte, m.ValueSize())
	err := m.Lookup(keyBytes(d.t, k), v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return x, false
	}
	if err != nil {
		d.t.Fatal(err)
	}
	if err := P(&x).UnmarshalBinary(v); err != nil {
		d.t.Fatal(err)
	}
	return x, true
}

func (d *dataPlane) leg(k kern.LegKey) (kern.Leg, bool) { return entry[kern.Leg](d, d.objs.Legs, k) }

func (d *dataPlane) mustLeg(k kern.LegKey) kern.Leg {
	d.t.Helper()
	l, ok := d.leg(k)
	if !ok {
		d.t.Fatalf("leg %s: not in %s", k, kern.LegsMapName)
	}
	return l
}

func (d *dataPlane) putBind(k kern.LegKey, b kern.Binding) {
	d.t.Helper()
	v, _ := b.MarshalBinary()
	if err := d.objs.Binds.Update(keyBytes(d.t, k), v, ebpf.UpdateAny); err != nil {
		d.t.Fatal(err)
	}
}

func (d *dataPlane) bind(k kern.LegKey) (kern.Binding, bool) {
	return entry[kern.Binding](d, d.objs.Binds, k)
}

func (d *dataPlane) handshake(k kern.LegKey) (kern.Handshake, bool) {
	return entry[kern.Handshake](d, d.objs.Handshakes, k)
}

// pushIdle queues worker leg k (registered already) in its worker's pool,
// with a jiq token, as user space does.
func (d *dataPlane) pushIdle(k kern.LegKey) {
	d.t.Helper()
	l, ok := d.leg(k)
	if !ok {
		d.t.Fatalf("pushIdle: no leg %s", k)
	}
	d.pushIdleTo(k, l.Worker)
}

// pushIdleTo queues k in worker's pool, leg or not (a stale entry).
func (d *dataPlane) pushIdleTo(k kern.LegKey, worker uint32) {
	d.t.Helper()
	if err := d.pool(worker).Push(keyBytes(d.t, k)); err != nil {
		d.t.Fatal(err)
	}
	if err := d.ready().Push(ebpf.Uint32Key(worker)); err != nil {
		d.t.Fatal(err)
	}
}

// idleQueue empties every pool (by worker id) and the jiq tokens, and
// returns the legs the pools held.
func (d *dataPlane) idleQueue() []kern.LegKey {
	d.t.Helper()
	var keys []kern.LegKey
	for _, id := range slices.Sorted(maps.Keys(shared.pools)) {
		keys = append(keys, d.popKeys(shared.pools[id])...)
	}
	v := make([]byte, 4)
	for _, m := range []*ebpf.Map{d.objs.Ready, d.objs.Ready6} {
		for i := uint32(0); i <= m.MaxEntries(); i++ {
			if m.Pop(v) != nil {
				break
			}
		}
	}
	return keys
}

// ready is the jiq tokens' queue of the fixtures' family (xlb_ready6 over
// IPv6: a client takes worker legs of its own family).
func (d *dataPlane) ready() *ebpf.Map {
	if family6 {
		return d.objs.Ready6
	}
	return d.objs.Ready
}

// popKeys empties a queue of leg keys (at most its size) and returns them.
func (d *dataPlane) popKeys(m *ebpf.Map) []kern.LegKey {
	d.t.Helper()
	var keys []kern.LegKey
	for i := uint32(0); i <= m.MaxEntries(); i++ {
		v := make([]byte, kern.LegKeySize)
		err := m.Pop(v)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return keys
		}
		if err != nil {
			d.t.Fatal(err)
		}
		var k kern.LegKey
		if err := k.UnmarshalBinary(v); err != nil {
			d.t.Fatal(err)
		}
		keys = append(keys, k)
	}
	d.t.Fatalf("queue %s did not empty", m.Name())
	return nil
}

func (d *dataPlane) addWorker(ep netip.AddrPort, id uint32) {
	d.t.Helper()
	k, err := kern.Endpoint(ep).MarshalBinary()
	if err != nil {
		d.t.Fatal(err)
	}
	v, _ := (&kern.WorkerInfo{ID: id}).MarshalBinary()
	if err := d.objs.Workers.Update(k, v, ebpf.UpdateAny); err != nil {
		d.t.Fatal(err)
	}
}

// bindPair stores c and w as a bound pair with the oracle's bindings, the way
// the data plane leaves a pair it has just bound, mid-request: w.req_mark is
// w's peer_hi (the current request has had no answer yet), so more client
// data is a continuation, never a request boundary; w.sent_hi is what w's
// worker has been sent. A client of no protocol yet becomes an HTTP client
// (what the fixtures' requests are).
func (d *dataPlane) bindPair(ck kern.LegKey, c kern.Leg, wk kern.LegKey, w kern.Leg) (toWorker, toClient kern.Binding) {
	d.t.Helper()
	if c.Proto == kern.ProtoNone {
		c.Proto = kern.ProtoHTTP
	}
	toWorker, toClient = oracleBind(ck, c, wk, w)
	c.State, w.State = kern.LegBound, kern.LegBound
	w.ReqMark, w.SentHi = w.PeerHi, w.SndNxt
	if w.CliEdge == 0 {
		w.CliEdge = w.SndNxt + c.SndWin<<c.OurWScale // as offer_edge() does
	}
	d.putLeg(ck, c)
	d.putLeg(wk, w)
	d.putBind(wk, toClient)
	d.putBind(ck, toWorker)
	return toWorker, toClient
}

// oracleBind is splice.Bind on copies of the legs.
func oracleBind(ck kern.LegKey, c kern.Leg, wk kern.LegKey, w kern.Leg) (toWorker, toClient kern.Binding) {
	return splice.Bind(ck, &c, wk, &w)
}

func (d *dataPlane) counters() kern.Counters {
	d.t.Helper()
	c, err := kern.ReadCounters(d.objs.Stats)
	if err != nil {
		d.t.Fatal(err)
	}
	return c
}

// run passes one frame through the program and returns its verdict, the
// frame after the program, and how much every counter moved.
func (d *dataPlane) run(frame []byte) (uint32, []byte, kern.Counters) {
	d.t.Helper()
	before := d.counters()
	res, err := d.objs.Program.TestRun(&ebpf.TestRunOptions{Data: frame})
	if err != nil {
		d.t.Fatalf("test run: %v", err)
	}
	return res.Return, res.Data, d.since(before)
}

// since is how much every counter moved from before.
func (d *dataPlane) since(before kern.Counters) kern.Counters {
	after := d.counters()
	var delta kern.Counters
	for i := range delta {
		delta[i] = after[i] - before[i]
	}
	return delta
}

// drainEvents returns the events written since the last call.
func (d *dataPlane) drainEvents() []kern.Event {
	d.t.Helper()
	var evs []kern.Event
	for {
		rec, err := d.events.ReadTimeout(0)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return evs
		}
		if err != nil {
			d.t.Fatal(err)
		}
		var e kern.Event
		if err := e.UnmarshalBinary(rec); err != nil {
			d.t.Fatal(err)
		}
		evs = append(evs, e)
	}
}

// drainRecords returns the request records written since the last call.
func (d *dataPlane) drainRecords() []kern.ReqRecord {
	d.t.Helper()
	var recs []kern.ReqRecord
	for {
		rec, ok := shared.reqlog.TryRead()
		if !ok {
			return recs
		}
		var r kern.ReqRecord
		if err := r.UnmarshalBinary(rec); err != nil {
			d.t.Fatal(err)
		}
		recs = append(recs, r)
	}
}

// checkCounters fails unless each counter moved by the number of times it
// is listed in want, and every other counter stayed put.
func checkCounters(t testing.TB, delta kern.Counters, want ...kern.Counter) {
	t.Helper()
	var exp kern.Counters
	for _, c := range want {
		exp[c]++
	}
	if delta == exp {
		return
	}
	var diffs []string
	for i := range delta {
		if delta[i] != exp[i] {
			diffs = append(diffs, fmt.Sprintf("%s moved %d, want %d", kern.Counter(i), delta[i], exp[i]))
		}
	}
	t.Errorf("counters: %s", strings.Join(diffs, "; "))
}

func checkVerdict(t testing.TB, got, want uint32) {
	t.Helper()
	if got != want {
		t.Fatalf("verdict %s, want %s", verdictName(got), verdictName(want))
	}
}

// checkEvents fails unless the events are exactly of the given types and
// keys, in order.
func checkEvents(t testing.TB, got []kern.Event, want ...kern.Event) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d events %v, want %d %v", len(got), eventSummary(got), len(want), eventSummary(want))
		return
	}
	for i := range want {
		if got[i].Type != want[i].Type || got[i].Key != want[i].Key {
			t.Errorf("event %d: %s %s, want %s %s", i, got[i].Type, got[i].Key, want[i].Type, want[i].Key)
		}
	}
}

func eventSummary(evs []kern.Event) []string {
	var s []string
	for _, e := range evs {
		s = append(s, e.Type.String()+" "+e.Key.String())
	}
	return s
}

// winBound is win_bound() of xlb.c: the largest window either end can
// advertise with these scales.
func winBound(a, b uint8) uint32 {
	s := max(a, b)
	if s >= 14 {
		return 1 << 30
	}
	return 0xffff<<s + 0xffff
}

// noClock is a leg without its last_ns, which the program sets from the
// clock on every packet it looks at.
func noClock(l kern.Leg) kern.Leg {
	l.LastNs = 0
	l.WinEdge = 0 // every forwarded client segment moves it: window_test.go checks it
	l.CliEdge = 0 // every worker ACK and every bind moves it: window_test.go checks it
	return l
}

func checkLeg(t testing.TB, what string, got, want kern.Leg) {
	t.Helper()
	if noClock(got) != noClock(want) {
		t.Errorf("%s:\n got  %+v\n want %+v", what, noClock(got), noClock(want))
	}
}

// A client leg just past its handshake, and a worker leg fresh from the
// pool, with different window scales so that rescaling is visible.
func stdClientLeg() kern.Leg {
	return kern.Leg{
		Kind: kern.LegClient, PeerWScale: 7, OurWScale: 7,
		Opts:    kern.OptTS | kern.OptSACK | kern.OptWScale | kern.OptPeerTS,
		PeerMSS: 1460, OurMSS: 1460, WinBound: winBound(7, 7),
		PeerHi: 1_000_001, PeerAcked: 5_000_001, PeerTSval: 700_000, PeerWin: 502,
		SndNxt: 5_000_001, OurTSval: 3_000_000, SndWin: 512, State: kern.LegIdle,
	}
}

func stdWorkerLeg() kern.Leg {
	return kern.Leg{
		Kind: kern.LegWorker, PeerWScale: 9, OurWScale: 2,
		Opts:    kern.OptTS | kern.OptSACK | kern.OptWScale | kern.OptPeerTS,
		PeerMSS: 1400, OurMSS: 1400, Worker: 1, WinBound: winBound(9, 2),
		PeerHi: 0x9000_0000, PeerAcked: 0x2000_0000, PeerTSval: 123_456_789, PeerWin: 128,
		SndNxt: 0x2000_0000, OurTSval: 987_654, SndWin: 1000, State: kern.LegIdle,
	}
}

// fromClient and fromWorker address a segment on the standard legs.
func fromClient(s seg) seg { s.src, s.dst = clientAddr, serviceAddr; return s }
func fromWorker(s seg) seg { s.src, s.dst = workerAddr, poolAddr; return s }

// checkTranslated checks every field of out against the oracle
// splice.Translate applied to in through b, and that nothing else changed.
func checkTranslated(t testing.TB, in []byte, out []byte, b kern.Binding) {
	t.Helper()
	ip := mustParse(t, in)
	op := mustParse(t, out)
	want := splice.Translate(splice.Segment{Seq: ip.seq, Ack: ip.ack, Window: ip.win,
		TSval: ip.tsval, TSecr: ip.tsecr, HasTS: ip.hasTS, SACK: ip.sack}, &b)
	if ip.flags&tcpACK == 0 {
		want.Ack = ip.ack // no ACK flag: the field means nothing and stays
	}
	check := func(name string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s: got %v, want %v", name, got, want)
		}
	}
	check("source", op.src, b.To.Local)
	check("destination", op.dst, b.To.Peer)
	check("seq", op.seq, want.Seq)
	check("ack", op.ack, want.Ack)
	check("window", op.win, want.Window)
	check("has TS", op.hasTS, want.HasTS)
	if want.HasTS {
		check("TSval", op.tsval, want.TSval)
		check("TSecr", op.tsecr, want.TSecr)
	}
	check("SACK blocks", len(op.sack), len(want.SACK))
	for i := range min(len(op.sack), len(want.SACK)) {
		check(fmt.Sprintf("SACK block %d", i), op.sack[i], want.SACK[i])
	}
	check("flags", op.flags, ip.flags)
	check("doff", op.doff, ip.doff)
	check("tot_len", op.totLen, ip.totLen)
	check("ttl", op.ttl, ip.ttl)
	check("IP id", op.id, ip.id)
	if family6 {
		check("flow label", op.flowLabel, uint32(0)) // cleared (ipfam.h ip_unlabel)
	}
	check("eth dst", op.ethDst, ip.ethDst)
	check("eth src", op.ethSrc, ip.ethSrc)
	check("frame length", len(out), len(in))
	check("payload", string(op.payload), string(ip.payload))
	// Option bytes other than TS and SACK values are untouched: compare the
	// option kinds and lengths byte for byte where no value lives.
	if len(op.opts) == len(ip.opts) {
		for i := 0; i < len(ip.opts); {
			k := ip.opts[i]
			if k == 0 || k == 1 {
				check(fmt.Sprintf("option byte %d", i), op.opts[i], k)
				i++
				continue
			}
			n := int(ip.opts[i+1])
			check(fmt.Sprintf("option kind at %d", i), op.opts[i], k)
			check(fmt.Sprintf("option length at %d", i), op.opts[i+1], byte(n))
			if k != 5 && k != 8 {
				check(fmt.Sprintf("option %d body", k), string(op.opts[i:i+n]), string(ip.opts[i:i+n]))
			}
			i += n
		}
	}
}

// workerStats sums the per-worker counters of worker id over the CPUs.
func (d *dataPlane) workerStats(id uint32) kern.WorkerStats {
	d.t.Helper()
	var s kern.WorkerStats
	vals, err := d.objs.WStats.LookupPerCPU(ebpf.Uint32Key(id))
	if err != nil {
		d.t.Fatal(err)
	}
	for _, v := range vals {
		s.AddPerCPU(v)
	}
	return s
}

// answer is an HTTP answer of n bytes in all (at least answerHead), its
// Content-Length the rest: what the first segment of a worker's answer to
// the fixtures' requests carries (the data plane reads the status line of
// HTTP answers, and their length: a whole answer in one segment ends at
// the worker leg's peer_hi, answerEnd).
func answer(n int) []byte {
	b := make([]byte, n)
	copy(b, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %010d\r\n\r\n", n-answerHead))
	return b
}

// answerHead is the header block of answer's answers.
const answerHead = len("HTTP/1.1 200 OK\r\nContent-Length: 0000000000\r\n\r\n")

// answerEnd is b with its answer's end known (http_answer) at at: what an
// answer from answer() leaves in both bindings of its pair.
func answerEnd(b kern.Binding, at uint32) kern.Binding {
	b.Flags |= kern.BindEnd
	b.FinAt = at
	return b
}

// firstBound is client c and worker leg w as the first data of c, a whole
// HTTP request of n bytes in one write (PSH), with its TSval advanced by
// tsAdd, leaves them: c classified HTTP and bound, w bound with its answer
// to start at its peer_hi and n bytes sent to its worker. The bindings are
// the oracle's for the classified client.
func firstBound(c, w kern.Leg, n, tsAdd uint32) (wantC, wantW kern.Leg) {
	wantC, wantW = c, w
	wantC.Proto = kern.ProtoHTTP
	wantC.Tail = kern.TailPSH
	wantC.State = kern.LegBound
	wantC.PeerHi += n
	wantC.PeerTSval += tsAdd
	wantC.Requests++
	wantW.State = kern.LegBound
	wantW.ReqMark = w.PeerHi
	wantW.SentHi = w.SndNxt + n
	return wantC, wantW
}

// httpClient is c classified HTTP (what oracleBind needs for the bindings
// of a client bound by its first request).
func httpClient(c kern.Leg) kern.Leg {
	c.Proto = kern.ProtoHTTP
	return c
}

// coolNs is XLB_COOL_NS: how long a worker leg a leaving client gave back
// cools before it may serve another client.
const coolNs = 20_000_000

// cooling empties xlb_cooling and puts the entries back; it returns their
// legs, oldest first.
func (d *dataPlane) cooling() []kern.LegKey {
	d.t.Helper()
	m := d.objs.Map(kern.CoolingMapName)
	var raw [][]byte
	var keys []kern.LegKey
	for i := uint32(0); i <= m.MaxEntries(); i++ {
		v := make([]byte, kern.CoolingEntrySize)
		if m.Pop(v) != nil {
			break
		}
		raw = append(raw, v)
		var e kern.CoolingEntry
		if err := e.UnmarshalBinary(v); err != nil {
			d.t.Fatal(err)
		}
		keys = append(keys, e.Key)
	}
	for _, v := range raw {
		if err := m.Push(v); err != nil {
			d.t.Fatal(err)
		}
	}
	return keys
}

// ageCooling makes every cooling entry older by ns, as if that much time
// had passed.
func (d *dataPlane) ageCooling(ns uint64) {
	d.t.Helper()
	m := d.objs.Map(kern.CoolingMapName)
	var raw [][]byte
	for i := uint32(0); i <= m.MaxEntries(); i++ {
		v := make([]byte, kern.CoolingEntrySize)
		if m.Pop(v) != nil {
			break
		}
		var e kern.CoolingEntry
		if err := e.UnmarshalBinary(v); err != nil {
			d.t.Fatal(err)
		}
		e.DueNs -= ns
		v, err := e.MarshalBinary()
		if err != nil {
			d.t.Fatal(err)
		}
		raw = append(raw, v)
	}
	for _, v := range raw {
		if err := m.Push(v); err != nil {
			d.t.Fatal(err)
		}
	}
}

// fillLegs fills the leg table with client legs of addresses 10.9.x.y, until
// it refuses one.
func (d *dataPlane) fillLegs() {
	d.t.Helper()
	fl := stdClientLeg()
	filler, _ := fl.MarshalBinary()
	for i := uint32(0); i < d.objs.Legs.MaxEntries(); i++ {
		k := kern.LegKey{Peer: netip.AddrPortFrom(fixtureAddr(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)})), 1000), Local: serviceAddr}
		if err := d.objs.Legs.Update(keyBytes(d.t, k), filler, ebpf.UpdateNoExist); err != nil {
			if i == 0 {
				d.t.Fatal(err)
			}
			return
		}
	}
}
