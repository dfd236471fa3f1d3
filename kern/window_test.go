package kern_test

// Fixtures of the rest window (structs.h, xlb_config.rest_win): a worker
// keeps the largest window of a segment no newer than the last one, so the
// window it last had from one client would outlive that client. A client
// segment without data that acknowledges all the worker sent tells it the
// rest window instead; a request, whoever sends it, then carries a window
// the worker takes.

import (
	"net/netip"
	"testing"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
)

const restWin = 20_000 // bytes

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
	cfg := defaultConfig
	cfg.RestWin = restWin
	d.setConfig(cfg)
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
	cfg := defaultConfig
	cfg.RestWin = restWin
	d.setConfig(cfg)
	a := answeredPair() // the client's last window: 400 (x128), larger
	a.store(d, true)
	v, _, _ := d.run(a.next().build())
	checkVerdict(t, v, xdpPass)
	if got, want := d.mustLeg(workerKey).SndWin, uint32(restWin>>a.w1.OurWScale); got != want {
		t.Errorf("W1 snd_win %d after the remix, want the rest window %d", got, want)
	}
}
