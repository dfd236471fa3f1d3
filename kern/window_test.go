package kern_test

// Fixtures of the rest window (structs.h, xlb_config.rest_win): a worker
// keeps the largest window of a segment no newer than the last one, so the
// window it last had from one client would outlive that client. A client
// segment without data that acknowledges all the worker sent tells it the
// rest window instead; a request, whoever sends it, then carries a window
// the worker takes.

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
)

const restWin = 20_000 // bytes

// restConfig is the default config with the rest window restWin.
var restConfig = func() kern.Config {
	c := defaultConfig
	c.RestWin = restWin
	return c
}()

func (d *dataPlane) config() kern.Config {
	d.t.Helper()
	var c kern.Config
	v := make([]byte, kern.ConfigSize)
	if err := d.objs.Config.Lookup(ebpf.Uint32Key(0), v); err != nil {
		d.t.Fatal(err)
	}
	if err := c.UnmarshalBinary(v); err != nil {
		d.t.Fatal(err)
	}
	return c
}

// TestRestWindow: the client's ACKs reach W1 with the client's window while
// part of the answer is unacknowledged, and with the rest window (or the
// client's, if smaller) once all of it is; the request that follows keeps
// its own window, on W2; W1, back in the pool, answers with the rest window.
func TestRestWindow(t *testing.T) {
	d := loadDataPlane(t)
	d.setConfig(restConfig)
	a := answeredPair()
	a.store(d, true)
	ts := a.c.PeerTSval

	ack := func(ack uint32, win uint16) []byte {
		ts++
		return fromClient(seg{seq: a.c.PeerHi, ack: ack, flags: tcpACK, win: win,
			opts: nopTS(ts, a.cOurTSval())}).build()
	}
	for _, c := range []struct {
		what string
		ack  uint32
		win  uint16
		want uint32 // the window field W1 gets
	}{
		{"part of the answer acknowledged", a.cSndNxt() - 100, 400, scaledWin(400, a.c.PeerWScale, a.w1.OurWScale)},
		{"all of it, a larger window", a.cSndNxt(), 400, restWin >> a.w1.OurWScale},
		{"all of it again (a window update)", a.cSndNxt(), 500, restWin >> a.w1.OurWScale},
		{"all of it, a smaller window", a.cSndNxt(), 100, scaledWin(100, a.c.PeerWScale, a.w1.OurWScale)},
	} {
		in := ack(c.ack, c.win)
		v, out, _ := d.run(in)
		checkVerdict(t, v, xdpPass)
		if o := mustParse(t, out); uint32(o.win) != c.want {
			t.Errorf("%s (window %d, scale %d): W1 got window %d, want %d", c.what, c.win, a.c.PeerWScale, o.win, c.want)
		}
	}

	// The next request moves C onto W2 with its own window, not held.
	a.c.PeerTSval = ts
	a.c.PeerWin = 100
	in := a.next().build()
	v, out, delta := d.run(in)
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterRequest, kern.CounterRemix, kern.CounterFwdToWorker, kern.CounterPass)
	w2 := stdWorker2Leg()
	if o, want := mustParse(t, out), scaledWin(401, a.c.PeerWScale, w2.OurWScale); uint32(o.win) != want {
		t.Errorf("request on W2: window %d, want the client's %d", o.win, want)
	}
	// W1 is idle; its materialised window (what the program answers its
	// worker with) is the client's last window before the request, or the
	// rest window if that is smaller.
	if got, want := d.mustLeg(workerKey).SndWin, scaledWin(100, a.c.PeerWScale, a.w1.OurWScale); got != want {
		t.Errorf("W1 snd_win %d after the remix, want the client's last (smaller) window %d", got, want)
	}

	// Without a rest window (0), windows pass as they are.
	d2 := loadDataPlane(t)
	b := answeredPair()
	b.store(d2, true)
	_, out, _ = d2.run(fromClient(seg{seq: b.c.PeerHi, ack: b.cSndNxt(), flags: tcpACK, win: 400,
		opts: nopTS(b.c.PeerTSval+1, b.cOurTSval())}).build())
	if o, want := mustParse(t, out), scaledWin(400, b.c.PeerWScale, b.w1.OurWScale); uint32(o.win) != want {
		t.Errorf("rest window 0: W1 got window %d, want the client's %d", o.win, want)
	}
}

// TestRestWindowLearned: the rest window follows down the smallest window
// a client opens with, never below 4096 bytes, never up.
func TestRestWindowLearned(t *testing.T) {
	const isn, ourISN = 1000, 77_000_000
	d := loadDataPlane(t)
	cfg := defaultConfig
	cfg.RestWin = 65_534
	d.setConfig(cfg)
	for i, c := range []struct {
		win  uint16 // the handshake ACK's window field, scale 7
		want uint32
	}{
		{600, 65_534},   // 76800 bytes: larger, kept
		{344, 344 << 7}, // 44032: lowered
		{400, 344 << 7}, // larger again: kept
		{20, 344 << 7},  // 2560: below the floor, ignored
		{100, 100 << 7}, // 12800: lowered
	} {
		port := uint16(41000 + i)
		src := netip.AddrPortFrom(clientAddr.Addr(), port)
		syn := seg{src: src, dst: serviceAddr, seq: isn, flags: tcpSYN, win: 64240, opts: linuxSYN(1460, 1000, 7)}
		if v, _, _ := d.run(syn.build()); v != xdpPass {
			t.Fatalf("SYN %d: verdict %d", i, v)
		}
		ack := seg{src: src, dst: serviceAddr, seq: isn + 1, ack: ourISN + 1, flags: tcpACK, win: c.win, opts: nopTS(1010, 5555)}
		v, _, delta := d.run(ack.build())
		checkVerdict(t, v, xdpPass)
		checkCounters(t, delta, kern.CounterTCP, kern.CounterClientLeg, kern.CounterPass)
		if got := d.config().RestWin; got != c.want {
			t.Errorf("after a client opened with window %d (x128): rest window %d, want %d", c.win, got, c.want)
		}
	}
}

// TestRestWindowMaterialized: a worker leg given back after a client whose
// last window was larger than the rest window answers its worker with the
// rest window.
func TestRestWindowMaterialized(t *testing.T) {
	d := loadDataPlane(t)
	d.setConfig(restConfig)
	a := answeredPair() // the client's last window: 400 (x128), larger
	a.store(d, true)
	v, _, _ := d.run(a.next().build())
	checkVerdict(t, v, xdpPass)
	if got, want := d.mustLeg(workerKey).SndWin, uint32(restWin>>a.w1.OurWScale); got != want {
		t.Errorf("W1 snd_win %d after the remix, want the rest window %d", got, want)
	}
}

// TestRestWindowAtLeastTwoSegments: a rest window smaller than two of the
// worker leg's segments is raised to two: with a window smaller than a
// segment a sender sends nothing until its persist timer, which backs off
// to minutes when every probe finds the same window; with one segment the
// receiver may delay its ACK (40 ms). The field is rounded up to the
// window scale, so that two segments stay two.
func TestRestWindowAtLeastTwoSegments(t *testing.T) {
	d := loadDataPlane(t)
	cfg := defaultConfig
	cfg.RestWin = 1000
	d.setConfig(cfg)
	a := answeredPair()
	a.store(d, true)
	two := 2 * uint32(a.w1.OurMSS)
	want := (two + 1<<a.w1.OurWScale - 1) >> a.w1.OurWScale
	_, out, _ := d.run(fromClient(seg{seq: a.c.PeerHi, ack: a.cSndNxt(), flags: tcpACK, win: 400,
		opts: nopTS(a.c.PeerTSval+1, a.cOurTSval())}).build())
	if o := mustParse(t, out); uint32(o.win) != want {
		t.Errorf("W1 got window %d, want two segments (%d bytes): %d", o.win, two, want)
	}
	v, _, _ := d.run(a.next().build())
	checkVerdict(t, v, xdpPass)
	if got := d.mustLeg(workerKey).SndWin; got != want {
		t.Errorf("W1 snd_win %d after the remix, want two segments %d", got, want)
	}
}

// TestRestWindowNotWhenHeld: a worker whose data reached the edge of the
// window it was sent is held by the window, not done, unless its answer's
// end is known and reached: the ACK that takes all its data keeps the
// client's window (a rest window there would hold a bulk answer to a rest
// window per round trip for good), and every forwarded segment moves the
// edge.
func TestRestWindowNotWhenHeld(t *testing.T) {
	for _, tc := range []struct {
		name string
		bind func(a *answered)
	}{
		{"answer without a length", func(a *answered) {
			a.toW1.Flags &^= kern.BindEnd
			a.toC.Flags &^= kern.BindEnd
		}},
		{"answer longer than sent", func(a *answered) {
			a.toW1, a.toC = answerEnd(a.toW1, a.w1.PeerHi+5000), answerEnd(a.toC, a.w1.PeerHi+5000)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			d.setConfig(restConfig)
			a := answeredPair()
			tc.bind(&a)
			a.w1.WinEdge = a.w1.PeerHi + 100 // less than a segment short of the edge
			a.store(d, true)
			in := fromClient(seg{seq: a.c.PeerHi, ack: a.cSndNxt(), flags: tcpACK, win: 400,
				opts: nopTS(a.c.PeerTSval+1, a.cOurTSval())}).build()
			_, out, _ := d.run(in)
			o := mustParse(t, out)
			if want := scaledWin(400, a.c.PeerWScale, a.w1.OurWScale); uint32(o.win) != want {
				t.Errorf("W1 got window %d, want the client's %d", o.win, want)
			}
			if got, want := d.mustLeg(workerKey).WinEdge, o.ack+uint32(o.win)<<a.w1.OurWScale; got != want {
				t.Errorf("W1's window edge %#x, want ack+window %#x", got, want)
			}
			// Now short of the edge by more than a segment: the next such ACK
			// gives the rest window.
			_, out, _ = d.run(fromClient(seg{seq: a.c.PeerHi, ack: a.cSndNxt(), flags: tcpACK, win: 400,
				opts: nopTS(a.c.PeerTSval+2, a.cOurTSval())}).build())
			if o := mustParse(t, out); uint32(o.win) != restWin>>a.w1.OurWScale {
				t.Errorf("W1 got window %d once short of the edge, want the rest window %d", o.win, restWin>>a.w1.OurWScale)
			}
		})
	}
}

// TestRestWindowAnswerDone: a worker held by the window whose HTTP answer
// is known to end where its data does (BIND_END) is done: the ACK of all
// of it gives the rest window. With the client's window there, the worker
// would keep it for the next client, which may have a smaller one: it
// ignores a smaller window in that client's request (same ack, same seq)
// and sends past that client's edge (TcpExtBeyondWindow at wrk -c1000,
// 100 KB answers: 355 segments dropped in 5 s, then 3).
func TestRestWindowAnswerDone(t *testing.T) {
	d := loadDataPlane(t)
	d.setConfig(restConfig)
	a := answeredPair() // its answer ends at W1's peer_hi
	a.w1.WinEdge = a.w1.PeerHi + 100
	a.store(d, true)
	_, out, _ := d.run(fromClient(seg{seq: a.c.PeerHi, ack: a.cSndNxt(), flags: tcpACK, win: 400,
		opts: nopTS(a.c.PeerTSval+1, a.cOurTSval())}).build())
	if o := mustParse(t, out); uint32(o.win) != restWin>>a.w1.OurWScale {
		t.Errorf("W1 got window %d, want the rest window %d", o.win, restWin>>a.w1.OurWScale)
	}
	// Part of it acknowledged: the client's window, held or not.
	d2 := loadDataPlane(t)
	d2.setConfig(restConfig)
	b := answeredPair()
	b.w1.WinEdge = b.w1.PeerHi + 100
	b.store(d2, true)
	_, out, _ = d2.run(fromClient(seg{seq: b.c.PeerHi, ack: b.cSndNxt() - 100, flags: tcpACK, win: 400,
		opts: nopTS(b.c.PeerTSval+1, b.cOurTSval())}).build())
	if o, want := mustParse(t, out), scaledWin(400, b.c.PeerWScale, b.w1.OurWScale); uint32(o.win) != want {
		t.Errorf("part acknowledged: W1 got window %d, want the client's %d", o.win, want)
	}
}

// TestClientLeavesWhileWindowHeld: a client that closes when its worker's
// data reached the edge of its window (the worker may have more: a client
// that stopped reading, a timeout) does not give the worker leg back: its
// FIN goes to the worker, as in the middle of an answer.
func TestClientLeavesWhileWindowHeld(t *testing.T) {
	d := loadDataPlane(t)
	a := answeredPair()
	a.w1.WinEdge = a.w1.PeerHi
	a.store(d, true)
	fin := fromClient(seg{seq: a.c.PeerHi, ack: a.cSndNxt(), flags: tcpFIN | tcpACK, win: 400,
		opts: nopTS(a.c.PeerTSval+1, a.cOurTSval())}).build()
	v, _, delta := d.run(fin)
	checkVerdict(t, v, xdpPass)
	if delta[kern.CounterClientLeft] != 0 || delta[kern.CounterFwdToWorker] != 1 {
		t.Errorf("client_left %d, fwd_to_worker %d: want the FIN forwarded to the worker", delta[kern.CounterClientLeft], delta[kern.CounterFwdToWorker])
	}
	if got := d.mustLeg(workerKey).State; got != kern.LegBound {
		t.Errorf("W1 %v, want still bound to the client", got)
	}
}

// respCommand is a RESP SET of exactly n bytes (n >= 40), its value x's.
func respCommand(n int) []byte {
	for l := n - 20; l > 0; l-- {
		c := fmt.Sprintf("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%s\r\n", l, strings.Repeat("x", l))
		if len(c) == n {
			return []byte(c)
		}
	}
	panic(fmt.Sprint("no RESP command of ", n, " bytes"))
}

// TestClientHeldByWindow: a client segment that ends within a segment of
// the window the client was offered ended where the window did, not
// (necessarily) where a write did: Linux fills a window with full segments,
// and may have set PSH on one mid-write. A pipeline cut there looks like a
// boundary (CRLF, PSH, the worker answered and the client acknowledged all
// it had) and must not be one. The window is the one the client had when
// it bound (its leg's), then the worker's own (its ACKs).
func TestClientHeldByWindow(t *testing.T) {
	const sndWin = 16 // << 7: a 2048-byte window offered to the client; its segments are at most 1024
	for _, tc := range []struct {
		name string
		n    int // bytes of the first write
		held bool
	}{
		{"ends short of the window: a boundary may follow", 500, false},
		{"ends within a segment of the window's edge: held", 1500, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			c, w := stdClientLeg(), stdWorkerLeg()
			c.SndWin = sndWin
			w2 := stdWorker2Leg()
			before := map[kern.LegKey]kern.Leg{workerKey: w, worker2Key: w2}
			d.putLeg(clientKey, c)
			d.putLeg(workerKey, w)
			d.pushIdle(workerKey)
			d.putLeg(worker2Key, w2)
			d.pushIdle(worker2Key)

			first := respCommand(tc.n)
			v, _, _ := d.run(fromClient(seg{seq: c.PeerHi, ack: c.SndNxt, flags: tcpACK | tcpPSH, win: 502,
				opts: nopTS(c.PeerTSval+1, c.OurTSval), payload: first}).build())
			checkVerdict(t, v, xdpPass)
			b, ok := d.bind(clientKey)
			if !ok {
				t.Fatal("first data did not bind")
			}
			if gw, want := d.mustLeg(b.To), before[b.To].SndNxt+sndWin<<c.OurWScale; gw.CliEdge != want {
				t.Errorf("cli_edge after the bind %#x, want the client's window from where its data starts %#x", gw.CliEdge, want)
			}
			wantTail := uint8(kern.TailPSH | kern.TailCRLF)
			if tc.held {
				wantTail = 0
			}
			if gc := d.mustLeg(clientKey); gc.Tail != wantTail {
				t.Errorf("tail %#x, want %#x", gc.Tail, wantTail)
			}

			// The worker answers all of it; its ACK is the client's window now.
			ans := []byte("+OK\r\n")
			wk, wl := b.To, d.mustLeg(b.To)
			v, _, _ = d.run(seg{src: wk.Peer, dst: wk.Local, seq: wl.PeerHi, ack: wl.SentHi, flags: tcpACK | tcpPSH, win: 3,
				opts: nopTS(wl.PeerTSval+1, wl.OurTSval), payload: ans}.build())
			checkVerdict(t, v, xdpPass)
			if got, want := d.mustLeg(wk).CliEdge, wl.SentHi+3<<wl.PeerWScale; got != want {
				t.Errorf("cli_edge after the worker's ACK %#x, want its ack + window %#x", got, want)
			}

			// The client acknowledges the answer with its next command.
			gc := d.mustLeg(clientKey)
			v, _, delta := d.run(fromClient(seg{seq: gc.PeerHi, ack: c.SndNxt + uint32(len(ans)), flags: tcpACK | tcpPSH, win: 502,
				opts: nopTS(gc.PeerTSval+1, wl.PeerTSval+1-b.TSecrOff), payload: []byte("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")}).build())
			checkVerdict(t, v, xdpPass)
			moved := delta[kern.CounterRemix] == 1
			if moved == tc.held || (tc.held && delta[kern.CounterStayTail] != 1) {
				t.Errorf("held %v: remix %d, stay_tail %d (counters %v)", tc.held, delta[kern.CounterRemix], delta[kern.CounterStayTail], delta)
			}
		})
	}
}

// TestParkRefusedWhileWindowHeld: idle release, like a client's FIN
// (TestClientLeavesWhileWindowHeld), takes a worker held by the window for
// one that is done: the client acknowledged all the worker sent, but that
// reached the window's edge, and more may come. CTL_PARK refuses it, and
// takes the same pair once the worker stopped short of its window.
func TestParkRefusedWhileWindowHeld(t *testing.T) {
	for _, tc := range []struct {
		name string
		edge func(a answered) uint32
		park bool
	}{
		{"held: the answer reached the window's edge", func(a answered) uint32 { return a.w1.PeerHi + 100 }, false},
		{"not held: the worker stopped short of it", func(a answered) uint32 { return a.w1.PeerHi + 1_000_000 }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			a := answeredPair()
			a.w1.WinEdge = tc.edge(a)
			a.c.PeerAcked = a.cSndNxt() // the client acknowledged the whole answer
			a.store(d, false)
			if got := d.ctl(kern.CtlPark, clientKey, 0); got != tc.park {
				t.Errorf("CTL_PARK returned %v, want %v", got, tc.park)
			}
			wantState := kern.LegBound
			if tc.park {
				wantState = kern.LegParked
			}
			if c := d.mustLeg(clientKey); c.State != wantState {
				t.Errorf("client leg %v, want %v", c.State, wantState)
			}
		})
	}
}
