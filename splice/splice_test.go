package splice

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/kern"
)

func TestSeqAcrossWrap(t *testing.T) {
	for _, tc := range []struct {
		a, b           uint32
		lt, le, gt, ge bool
	}{
		{1, 2, true, true, false, false},
		{0xfffffff0, 0x10, true, true, false, false}, // 0x10 is after the wrap
		{0x10, 0xfffffff0, false, false, true, true},
		{7, 7, false, true, false, true},
		{0, 0x7fffffff, true, true, false, false},
	} {
		if SeqLT(tc.a, tc.b) != tc.lt || SeqLE(tc.a, tc.b) != tc.le || SeqGT(tc.a, tc.b) != tc.gt || SeqGE(tc.a, tc.b) != tc.ge {
			t.Errorf("%#x vs %#x: lt %v le %v gt %v ge %v", tc.a, tc.b, SeqLT(tc.a, tc.b), SeqLE(tc.a, tc.b), SeqGT(tc.a, tc.b), SeqGE(tc.a, tc.b))
		}
	}
	if !SeqNear(0xffffff00, 0x100, 0x200) || SeqNear(0, 0x1000, 0xfff) || !SeqNear(0x1000, 0, 0x1000) {
		t.Error("SeqNear across the wrap")
	}
}

var (
	ck = kern.LegKey{Peer: netip.MustParseAddrPort("10.0.0.2:40000"), Local: netip.MustParseAddrPort("10.0.0.1:8080")}
	wk = kern.LegKey{Peer: netip.MustParseAddrPort("10.0.0.3:4171"), Local: netip.MustParseAddrPort("10.0.0.1:50000")}
)

// TestBindIsAnInverse: a client segment mapped to the worker and the
// worker's answer mapped back land exactly on the client's numbers, across
// the 2^32 wrap.
func TestBindIsAnInverse(t *testing.T) {
	c := kern.Leg{PeerHi: 0xfffffff0, SndNxt: 1000, PeerTSval: 0xfffffffe, OurTSval: 77, PeerWScale: 7, OurWScale: 9, Worker: 4}
	w := kern.Leg{PeerHi: 0x7fff0000, SndNxt: 0x10, PeerTSval: 5, OurTSval: 0xfffffff0, PeerWScale: 2, OurWScale: 6, Worker: 4}
	toW, toC := Bind(ck, &c, wk, &w)
	if toW.To != wk || toC.To != ck || toW.Worker != 4 || toC.Flags&kern.BindToClient == 0 {
		t.Fatalf("bindings %+v %+v", toW, toC)
	}
	// The client's next byte lands right after what the worker received.
	req := Translate(Segment{Seq: c.PeerHi, Ack: c.SndNxt, TSval: c.PeerTSval, TSecr: c.OurTSval, HasTS: true,
		SACK: [][2]uint32{{c.SndNxt - 10, c.SndNxt}}}, &toW)
	if req.Seq != w.SndNxt || req.Ack != w.PeerHi || req.TSval != w.OurTSval || req.TSecr != w.PeerTSval {
		t.Errorf("request as the worker sees it: %+v", req)
	}
	if req.SACK[0] != [2]uint32{w.PeerHi - 10, w.PeerHi} {
		t.Errorf("SACK edges: %v", req.SACK)
	}
	// The worker's answer (its next byte, acknowledging 100 request bytes)
	// maps back to the client's space.
	resp := Translate(Segment{Seq: w.PeerHi, Ack: w.SndNxt + 100, TSval: w.PeerTSval + 3, TSecr: w.OurTSval + 1, HasTS: true}, &toC)
	if resp.Seq != c.SndNxt || resp.Ack != c.PeerHi+100 || resp.TSval != c.OurTSval+3 || resp.TSecr != c.PeerTSval+1 {
		t.Errorf("response as the client sees it: %+v", resp)
	}
}

func TestScaleWindow(t *testing.T) {
	for _, tc := range []struct {
		win     uint16
		in, out uint8
		want    uint16
	}{
		{1000, 7, 7, 1000},
		{1000, 7, 2, 32000},
		{1000, 9, 2, 0xffff}, // 128000 does not fit in 16 bits
		{512, 9, 7, 2048},
		{3, 0, 7, 1}, // open stays open
		{0, 0, 7, 0},
		{0xffff, 14, 14, 0xffff},
	} {
		if got := ScaleWindow(tc.win, tc.in, tc.out); got != tc.want {
			t.Errorf("ScaleWindow(%d, %d, %d) = %d, want %d", tc.win, tc.in, tc.out, got, tc.want)
		}
	}
}

func TestParseWorker(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
		err  string
	}{
		{"127.0.0.1:4171", "127.0.0.1:4171", ""},
		{"127.0.0.1:4171@3", "127.0.0.1:4171@3", ""},
		{"127.0.0.1", "", "want HOST:PORT"},
		{"127.0.0.1:0", "", "port must be 1-65535"},
		{"127.0.0.1:70000", "", "port must be 1-65535"},
		{"127.0.0.1:80@x", "", "weight must be a number"},
		{"127.0.0.1:80@1001", "", "weight must be a number from 0 to 1000"},
		{"[::1]:80", "[::1]:80", ""},
		{"[2001:db8::2]:8080@2", "[2001:db8::2]:8080@2", ""},
		{"[::ffff:127.0.0.1]:80", "127.0.0.1:80", ""},
		{"[fe80::1%lo]:80", "", "link-local"},
		{"::1:80", "", "want HOST:PORT"},
	} {
		got, err := ParseWorker(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseWorker(%q): %v, want an error with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("ParseWorker(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestWorkerLeg(t *testing.T) {
	st := SocketState{State: 1, SndNxt: 500, RcvNxt: 9001, TSClock: 1234, Options: tcpiOptTimestamps | tcpiOptSACK | tcpiOptWScale,
		SndWScale: 7, RcvWScale: 9, SndMSS: 1400, AdvMSS: 1460, SndWnd: 65535 << 7, RcvWnd: 1000 << 9}
	hs := kern.Handshake{PeerISN: 9000, PeerTSval: 42}
	l, err := WorkerLeg(st, hs, 3, 99)
	if err != nil {
		t.Fatal(err)
	}
	want := kern.Leg{Kind: kern.LegWorker, PeerWScale: 7, OurWScale: 9, Opts: kern.OptTS | kern.OptSACK | kern.OptWScale | kern.OptPeerTS,
		PeerMSS: 1400, OurMSS: 1460, Worker: 3, WinBound: 0xffff<<9 + 0xffff, PeerHi: 9001, PeerAcked: 500, PeerTSval: 42,
		PeerWin: 65535, SndNxt: 500, OurTSval: 1234, SndWin: 1000, State: kern.LegNew, LastNs: 99}
	if l != want {
		t.Errorf("leg\n %+v\nwant\n %+v", l, want)
	}
	for _, bad := range []struct {
		mod func(*SocketState, *kern.Handshake)
		err string
	}{
		{func(s *SocketState, h *kern.Handshake) { s.State = 8 }, "not established"},
		{func(s *SocketState, h *kern.Handshake) { s.Unacked = 1 }, "unacknowledged"},
		{func(s *SocketState, h *kern.Handshake) { s.BytesRecv = 5 }, "before any request"},
		{func(s *SocketState, h *kern.Handshake) { h.PeerISN = 1 }, "does not match"},
	} {
		s, h := st, hs
		bad.mod(&s, &h)
		if _, err := WorkerLeg(s, h, 3, 99); err == nil || !strings.Contains(err.Error(), bad.err) {
			t.Errorf("WorkerLeg: %v, want an error with %q", err, bad.err)
		}
	}
}

func TestCheckClientLeg(t *testing.T) {
	ev := kern.Leg{SndNxt: 10, PeerHi: 20, Opts: kern.OptTS | kern.OptWScale, PeerWScale: 7, OurWScale: 9}
	st := SocketState{SndNxt: 10, RcvNxt: 20, Options: tcpiOptTimestamps | tcpiOptWScale, SndWScale: 7, RcvWScale: 9}
	if bad := CheckClientLeg(ev, st, true); len(bad) != 0 {
		t.Errorf("agreeing numbers reported: %v", bad)
	}
	st.RcvWScale, st.SndNxt = 8, 11
	if bad := CheckClientLeg(ev, st, true); len(bad) != 2 {
		t.Errorf("two disagreements, got %v", bad)
	}
	if bad := CheckClientLeg(ev, st, false); len(bad) != 1 {
		t.Errorf("without positions, one disagreement (window scales), got %v", bad)
	}
}

func TestWorkerMSS(t *testing.T) {
	for _, tc := range []struct{ mtu, want int }{
		{1500, 1400}, {1280, 1180}, {576, 476}, {100, 88}, {9000, 8928}, {65536, 32767},
	} {
		if got := WorkerMSS(tc.mtu); got != tc.want {
			t.Errorf("WorkerMSS(%d) = %d, want %d", tc.mtu, got, tc.want)
		}
	}
}

func TestSchedule(t *testing.T) {
	got := schedule([]uint32{7, 8, 9}, []int{5, 1, 1}, 1024)
	if len(got) != 7 {
		t.Fatalf("schedule %v: want 7 slots", got)
	}
	n := map[uint32]int{}
	for i, id := range got {
		n[id]++
		if i > 0 && id == 8 && got[i-1] == 8 {
			t.Errorf("schedule %v: weight-1 worker twice in a row", got)
		}
	}
	if n[7] != 5 || n[8] != 1 || n[9] != 1 {
		t.Errorf("schedule %v: counts %v, want 5/1/1", got, n)
	}
	// Smooth: the heavy worker is spread, not in one run of 5.
	run, longest := 0, 0
	for _, id := range got {
		if id == 7 {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	if longest > 3 {
		t.Errorf("schedule %v: worker 7 %d times in a row", got, longest)
	}
	// Scaled down to fit, every weight above 0 keeps a slot.
	big := schedule([]uint32{1, 2}, []int{1000, 1}, 64)
	if len(big) > 64 || len(big) < 2 {
		t.Fatalf("scaled schedule has %d slots, want 2..64", len(big))
	}
	if c := slices.Index(big, 2); c < 0 {
		t.Errorf("scaled schedule %v lost the weight-1 worker", big)
	}
	if s := schedule(nil, nil, 64); len(s) != 0 {
		t.Errorf("empty schedule: %v", s)
	}
	if s := schedule([]uint32{1}, []int{0}, 64); len(s) != 0 {
		t.Errorf("weight 0 only: %v", s)
	}
}

// TestQueuedOnlyWithTimeout: a client whose request found no worker
// connection is remembered for --queue-timeout only; with the timeout off
// nothing would ever forget it (endQueued, its only deleter, does not run).
func TestQueuedOnlyWithTimeout(t *testing.T) {
	ev := kern.Event{Type: kern.EventPoolEmpty, Key: kern.LegKey{
		Local: netip.MustParseAddrPort("127.0.0.1:8080"), Peer: netip.MustParseAddrPort("127.0.0.1:40000")}}
	for _, timeout := range []time.Duration{0, DefaultQueueTimeout} {
		lb := &LB{cfg: Config{QueueTimeout: timeout}, queued: map[kern.LegKey]queuedClient{}, byID: map[uint32]*worker{}}
		lb.handleEvent(ev)
		if want := min(int(timeout), 1); len(lb.queued) != want {
			t.Errorf("queue timeout %v: %d clients remembered, want %d", timeout, len(lb.queued), want)
		}
	}
}

// TestFileRoom: worker connections stay within the descriptor budget: with
// sockets, every worker's connect()ed connections (and placeholders) count; dialed,
// only the worker's own (a port serves one connection to each worker).
func TestFileRoom(t *testing.T) {
	legs := func(n int) map[kern.LegKey]sock {
		m := map[kern.LegKey]sock{}
		for i := range n {
			m[kern.LegKey{Peer: netip.MustParseAddrPort("127.0.0.1:4171"), Local: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(40000+i))}] = sock(100 + i)
		}
		return m
	}
	for _, tc := range []struct {
		mode DialMode
		want int
	}{{DialSocket, 100 - 30 - 40}, {DialXDP, 100 - 30}} {
		lb := &LB{files: 100, cfg: Config{Dial: tc.mode}, byID: map[uint32]*worker{}}
		a := &worker{lb: lb, id: 1, legs: legs(30)}
		b := &worker{lb: lb, id: 2, legs: legs(40)}
		lb.addWorker(a)
		lb.addWorker(b)
		if got := lb.fileRoom(a); got != tc.want {
			t.Errorf("dial mode %d: room %d, want %d", tc.mode, got, tc.want)
		}
	}
}
