package kern_test

// Fixtures of HTTP/1.0 clients kept on their worker connection
// (CFG_KEEP_HTTP10): a whole HTTP/1.0 request that asks nothing of the
// connection reaches the worker with "Connection: keep-alive" added
// (xlb_bind, grow_request), retransmissions of it grown the same way; the
// answer is framed from its Content-Length (http_answer), its keep-alive
// turned into close, and the worker segment that ends it reaches the client
// with a FIN; the client's ACK of that FIN gives the worker leg back to its
// pool (framed_close) and the client's FIN is answered by the data plane.
// Every checksum the program mends is checked against a computation from
// scratch (checkSums).

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/xlb-lb/xlb/kern"
)

// keepGrowth is KEEP_GROWTH: what a request grows by.
const keepGrowth = 24

// abRequest is what ApacheBench sends (HTTP/1.0, no keep-alive: ab without -k).
const abRequest = "GET /b100 HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n"

// keepConfig is the default config with CFG_KEEP_HTTP10.
func keepConfig() kern.Config {
	c := defaultConfig
	c.Flags |= kern.ConfigKeepHttp10
	return c
}

// grownRequest is req as its worker must get it: the CRLF of the empty line
// replaced by the header line and the empty line.
func grownRequest(req string) string {
	if !strings.HasSuffix(req, "\r\n\r\n") {
		panic("grownRequest: not a whole request: " + req)
	}
	return req[:len(req)-2] + "Connection: keep-alive\r\n\r\n"
}

// checkSums recomputes the checksums of a frame from scratch (RFC 1071 over
// an IPv4 header; over the pseudo header and the whole TCP segment) and
// fails unless the frame carries them (0 and 0xffff, one's complement's two
// zeros, are the same checksum), and unless the frame ends with the datagram.
func checkSums(t testing.TB, what string, frame []byte) {
	t.Helper()
	ipb, tcpb, ok := splitFrame(frame)
	if !ok || 14+len(ipb)+len(tcpb) != len(frame) {
		t.Errorf("%s: not an IP TCP frame that ends with its datagram: % x", what, frame)
		return
	}
	same := func(a, b uint16) bool { return a == b || (a|b == 0xffff && (a == 0 || b == 0)) }
	ip := slices.Clone(ipb)
	if ip[0]>>4 == 4 {
		got := binary.BigEndian.Uint16(ip[10:])
		ip[10], ip[11] = 0, 0
		if want := checksum(ip); !same(got, want) {
			t.Errorf("%s: IP header checksum %#04x, computed %#04x", what, got, want)
		}
	}
	tcp := slices.Clone(tcpb)
	got := binary.BigEndian.Uint16(tcp[16:])
	tcp[16], tcp[17] = 0, 0
	if want := checksum(pseudoHeader(ip, len(tcp)), tcp); !same(got, want) {
		t.Errorf("%s: TCP checksum %#04x, computed %#04x", what, got, want)
	}
}

// keepState is a client leg bound by its first request, grown: the legs as
// they were before, the request, what the worker got, and the pair's
// bindings as the grow must have left them.
type keepState struct {
	c0, w0   kern.Leg
	req      string
	in       seg          // the request as the client sent it
	out      []byte       // ... as its worker got it
	plain    kern.Binding // the client's binding before the grow (the oracle's)
	toW, toC kern.Binding // the pair's bindings after it
}

// n is the length of the request as the client sent it.
func (k keepState) n() uint32 { return uint32(len(k.req)) }

// workerSent is the end of what the worker has been sent (worker's space).
func (k keepState) workerSent() uint32 { return k.w0.SndNxt + k.n() + keepGrowth }

// keepBind binds client leg c to worker leg w (queued) with req, its first
// request, under CFG_KEEP_HTTP10, and checks that the request was grown:
// verdict, counters, bindings, legs, and the bytes the worker gets.
func keepBind(t *testing.T, d *dataPlane, c, w kern.Leg, req string) keepState {
	t.Helper()
	d.setConfig(keepConfig())
	d.putLeg(clientKey, c)
	d.putLeg(workerKey, w)
	d.pushIdle(workerKey)
	k := keepState{c0: c, w0: w, req: req}
	k.in = fromClient(seg{seq: c.PeerHi, ack: c.SndNxt, flags: tcpACK | tcpPSH, win: 502,
		opts: nopTS(c.PeerTSval+7, c.OurTSval), payload: []byte(req)})
	v, out, delta := d.run(k.in.build())
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterBind, kern.CounterFwdToWorker, kern.CounterPass,
		kern.CounterKeepHttp10)
	k.out = out

	toW, toC := oracleBind(clientKey, httpClient(c), workerKey, w)
	k.plain = toW
	flags := uint8(kern.BindKeep)
	if strings.HasPrefix(req, "HEAD ") {
		flags |= kern.BindHead
	}
	toW.SeqOff += keepGrowth
	toW.Flags |= flags
	toW.MarkSeq, toW.MarkLen = c.PeerHi, uint16(len(req))
	toC.AckOff -= keepGrowth
	toC.Flags |= flags
	k.toW, k.toC = toW, toC
	d.checkBind("after the grow", clientKey, toW)
	d.checkBind("after the grow", workerKey, toC)

	// The client's positions count what it sent; the worker leg's what
	// its worker was sent.
	wantC, wantW := firstBound(c, w, k.n(), 7)
	wantW.SentHi += keepGrowth
	checkLeg(t, "client leg after the grow", d.mustLeg(clientKey), wantC)
	checkLeg(t, "worker leg after the grow", d.mustLeg(workerKey), wantW)

	checkGrown(t, "grown request", k.in, out, k.plain, toW)
	return k
}

// checkGrown checks that out is request segment s grown and translated
// through toW: the request with "Connection: keep-alive" added before the
// empty line, at the worker's seq of the request's first byte (s.seq through
// the binding before the grow, plain), IP total length 24 more, every other
// field translated as usual, both checksums valid.
func checkGrown(t *testing.T, what string, s seg, out []byte, plain, toW kern.Binding) {
	t.Helper()
	g := s
	g.seq -= keepGrowth // what translation sees: the grown segment, its first byte where it was
	g.payload = []byte(grownRequest(string(s.payload)))
	checkTranslated(t, g.build(), out, toW)
	checkSums(t, what, out)
	o, i := mustParse(t, out), mustParse(t, s.build())
	if o.seq != s.seq+plain.SeqOff {
		t.Errorf("%s: seq %#x, want %#x (the request's first byte, as before the grow)", what, o.seq, s.seq+plain.SeqOff)
	}
	if o.totLen != i.totLen+keepGrowth {
		t.Errorf("%s: IP total length %d, want %d + %d", what, o.totLen, i.totLen, keepGrowth)
	}
	if string(o.payload) != string(g.payload) {
		t.Errorf("%s: payload\n got  %q\n want %q", what, o.payload, g.payload)
	}
}

// TestKeepHTTP10Grow: a whole HTTP/1.0 request without keep-alive, the first
// data of its client, reaches the worker with "Connection: keep-alive":
// exact bytes, seq, length and checksums, with the request's end at an even
// and an odd offset of the TCP segment (the checksum's two lanes); the
// bindings count the added bytes and remember the request segment; a HEAD
// request is marked as one.
func TestKeepHTTP10Grow(t *testing.T) {
	tests := []struct {
		name string
		req  string
		want string // the payload the worker gets
	}{
		{"ab request, empty line at an even offset", abRequest,
			"GET /b100 HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"},
		{"ab request, empty line at an odd offset", strings.Replace(abRequest, "/b100", "/b1000", 1),
			"GET /b1000 HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"},
		{"HEAD request", "HEAD /b100 HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\n\r\n",
			"HEAD /b100 HTTP/1.0\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n"},
		{"shortest request (18 bytes), no header", "GET / HTTP/1.0\r\n\r\n",
			"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"},
		{"header names of any case, odd offset", "GET /x HTTP/1.0\r\nhost: a\r\nACCEPT: */*\r\n\r\n",
			"GET /x HTTP/1.0\r\nhost: a\r\nACCEPT: */*\r\nConnection: keep-alive\r\n\r\n"},
	}
	// The segment's TCP header is 32 bytes (NOP NOP TS): the empty line's
	// CRLF is at an even offset of the segment iff the request's length is.
	parities := map[int]bool{}
	for _, tc := range tests {
		parities[(32+len(tc.req)-2)%2] = true
	}
	if len(parities) != 2 {
		t.Fatal("the table does not put the empty line at both an even and an odd offset")
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			k := keepBind(t, d, stdClientLeg(), stdWorkerLeg(), tc.req)
			o := mustParse(t, k.out)
			if string(o.payload) != tc.want {
				t.Errorf("worker got\n %q\nwant\n %q", o.payload, tc.want)
			}
			if want := k.c0.PeerHi + k.plain.SeqOff; o.seq != want || want != k.w0.SndNxt {
				t.Errorf("worker got seq %#x, want %#x (its leg's snd_nxt %#x)", o.seq, want, k.w0.SndNxt)
			}
			if o.dst != workerAddr || o.src != poolAddr {
				t.Errorf("sent from %s to %s, want %s to %s", o.src, o.dst, poolAddr, workerAddr)
			}
			checkEvents(t, d.drainEvents())
		})
	}
}

// keepStep is one result of a fixture run: verdict, frame, counters moved.
type keepStep struct {
	v     uint32
	out   []byte
	delta kern.Counters
}

// TestKeepHTTP10NotRewritten: everything but a whole HTTP/1.0 request
// without a word about the connection, first data of its client, goes to
// the worker as it would without CFG_KEEP_HTTP10: the same verdicts, bytes,
// counters and bindings as the same segments with the flag off, nothing
// grown, keep_http10 not moved. Without the flag, the ab request is
// translated as any request (the oracle's binding and translation).
func TestKeepHTTP10NotRewritten(t *testing.T) {
	// first puts the standard legs (changed by legs) with the worker leg
	// queued, and returns the client's first segment of payload p.
	first := func(d *dataPlane, p string, flags uint8, legs func(c, w *kern.Leg)) seg {
		c, w := stdClientLeg(), stdWorkerLeg()
		if legs != nil {
			legs(&c, &w)
		}
		d.putLeg(clientKey, c)
		d.putLeg(workerKey, w)
		d.pushIdle(workerKey)
		return fromClient(seg{seq: c.PeerHi, ack: c.SndNxt, flags: tcpACK | flags, win: 502,
			opts: nopTS(c.PeerTSval+7, c.OurTSval), payload: []byte(p)})
	}
	one := func(p string) func(d *dataPlane) []seg {
		return func(d *dataPlane) []seg { return []seg{first(d, p, tcpPSH, nil)} }
	}
	pad := strings.Repeat("p", 2100)
	tests := []struct {
		name  string
		off   bool // CFG_KEEP_HTTP10 off in both runs
		segs  func(d *dataPlane) []seg
		plain bool // the first segment binds the standard legs: the oracle's bindings
	}{
		{name: "flag off", off: true, segs: one(abRequest), plain: true},
		{name: "HTTP/1.1 request", segs: one("GET /b100 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n"), plain: true},
		{name: "HTTP/1.0 with Connection: keep-alive", segs: one("GET /b100 HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"), plain: true},
		{name: "HTTP/1.0 with connection: close", segs: one("GET /b100 HTTP/1.0\r\nHost: a\r\nconnection: close\r\n\r\n"), plain: true},
		{name: "POST with Content-Length and its body", segs: one("POST /f HTTP/1.0\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"), plain: true},
		{name: "POST with Content-Length, body to come", segs: one("POST /f HTTP/1.0\r\nHost: a\r\nContent-Length: 3\r\n\r\n"), plain: true},
		{name: "Transfer-Encoding", segs: one("POST /f HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), plain: true},
		{name: "Expect: 100-continue", segs: one("PUT /f HTTP/1.0\r\nExpect: 100-continue\r\n\r\n"), plain: true},
		{name: "Upgrade", segs: one("GET /ws HTTP/1.0\r\nUpgrade: websocket\r\n\r\n"), plain: true},
		{name: "bare LF line ends", segs: one("GET /b100 HTTP/1.0\nHost: a\n\n"), plain: true},
		{name: "request line without the version", segs: one("GET /b100\r\n\r\n"), plain: true},
		{name: "HTTP/1.0 in the target, not the version", segs: one("GET /HTTP/1.0 HTTP/1.1\r\nHost: a\r\n\r\n"), plain: true},
		{name: "a second request after the empty line", segs: one(abRequest + abRequest), plain: true},
		{name: "headers past the 2048 bytes scanned", segs: one("GET /b100 HTTP/1.0\r\nX-Pad: " + pad + "\r\n\r\n"), plain: true},
		{name: "split request: the headers do not end in the first segment", segs: func(d *dataPlane) []seg {
			s := first(d, abRequest[:42], tcpPSH, nil)
			s2 := s
			s2.seq += 42
			s2.payload = []byte(abRequest[42:])
			return []seg{s, s2}
		}, plain: true},
		{name: "request with FIN", segs: func(d *dataPlane) []seg { return []seg{first(d, abRequest, tcpPSH|tcpFIN, nil)} }, plain: true},
		{name: "grown request above the worker's MSS", segs: func(d *dataPlane) []seg {
			return []seg{first(d, abRequest, tcpPSH, func(c, w *kern.Leg) { w.PeerMSS = uint16(len(abRequest) + keepGrowth - 1) })}
		}, plain: true},
		{name: "not the first request: a released client binds again", segs: func(d *dataPlane) []seg {
			return []seg{first(d, abRequest, tcpPSH, func(c, w *kern.Leg) { c.Requests, c.Proto = 1, kern.ProtoHTTP })}
		}, plain: true},
		{name: "not the first request: the next one on the pair", segs: func(d *dataPlane) []seg {
			a := answeredPair()
			a.store(d, true)
			s := a.next()
			s.payload = []byte(abRequest)
			return []seg{s}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			runAll := func(flags uint8) ([]seg, []keepStep, [2]kern.Binding) {
				d.reset()
				cfg := defaultConfig
				cfg.Flags |= flags
				d.setConfig(cfg)
				segs := tc.segs(d)
				var steps []keepStep
				for _, s := range segs {
					v, out, delta := d.run(s.build())
					steps = append(steps, keepStep{v, out, delta})
				}
				b0, _ := d.bind(clientKey)
				b1, _ := d.bind(workerKey)
				return segs, steps, [2]kern.Binding{b0, b1}
			}
			flagOn := uint8(kern.ConfigKeepHttp10)
			if tc.off {
				flagOn = 0
			}
			_, want, wantB := runAll(0)
			segs, got, gotB := runAll(flagOn) // last: its legs stay for the checks below
			for i, s := range segs {
				g, w := got[i], want[i]
				if g.v != w.v {
					t.Errorf("segment %d: verdict %s, %s without the flag", i, verdictName(g.v), verdictName(w.v))
				}
				if !bytes.Equal(g.out, w.out) {
					t.Errorf("segment %d: frame differs from the one without the flag:\n got  % x\n want % x", i, g.out, w.out)
				}
				if g.delta != w.delta {
					t.Errorf("segment %d: counters moved %v, without the flag %v", i, g.delta, w.delta)
				}
				if g.delta[kern.CounterKeepHttp10] != 0 {
					t.Errorf("segment %d: keep_http10 moved by %d", i, g.delta[kern.CounterKeepHttp10])
				}
				if g.v == xdpPass {
					o, in := mustParse(t, g.out), mustParse(t, s.build())
					if !bytes.Equal(o.payload, in.payload) || o.totLen != in.totLen {
						t.Errorf("segment %d: payload %q (IP length %d), sent %q (%d)", i, o.payload, o.totLen, in.payload, in.totLen)
					}
					checkSums(t, fmt.Sprintf("segment %d", i), g.out)
				}
			}
			if gotB != wantB {
				t.Errorf("bindings\n got  %+v\n want %+v (without the flag)", gotB, wantB)
			}
			if tc.off {
				checkCounters(t, got[0].delta, kern.CounterTCP, kern.CounterBind, kern.CounterFwdToWorker, kern.CounterPass)
			}
			if gotB[0].Flags&(kern.BindKeep|kern.BindHead|kern.BindFINAt) != 0 || gotB[0].MarkLen != 0 || gotB[0].MarkSeq != 0 {
				t.Errorf("client's binding marked for keep-alive: %+v", gotB[0])
			}
			if !tc.plain {
				return
			}
			toW, toC := oracleBind(clientKey, httpClient(stdClientLeg()), workerKey, stdWorkerLeg())
			if gotB != [2]kern.Binding{toW, toC} {
				t.Errorf("bindings\n got  %+v\n want %+v (the oracle's)", gotB, [2]kern.Binding{toW, toC})
			}
			checkVerdict(t, got[0].v, xdpPass)
			checkTranslated(t, segs[0].build(), got[0].out, toW)
		})
	}
}

// TestKeepHTTP10Retransmission: the client sends its grown request again
// (its ACK from the worker was lost): the fast path sends it to xlb_bind,
// which grows it the same way: the worker gets the same bytes at the same
// seq, checksums valid, nothing counted as a new keep-alive, bindings and
// positions unchanged. Before and after the worker acknowledged it (whose
// ACK reaches the client as the end of the request as the client sent it).
func TestKeepHTTP10Retransmission(t *testing.T) {
	d := loadDataPlane(t)
	k := keepBind(t, d, stdClientLeg(), stdWorkerLeg(), abRequest)
	cAfter, wAfter := d.mustLeg(clientKey), d.mustLeg(workerKey)
	still := func(what string) {
		t.Helper()
		d.checkBind(what, clientKey, k.toW)
		d.checkBind(what, workerKey, k.toC)
		if c := d.mustLeg(clientKey); c.PeerHi != cAfter.PeerHi || c.Requests != 1 || c.State != kern.LegBound {
			t.Errorf("%s: client peer_hi %#x requests %d %s, want %#x, 1, bound", what, c.PeerHi, c.Requests, c.State, cAfter.PeerHi)
		}
		if w := d.mustLeg(workerKey); w.SentHi != wAfter.SentHi || w.ReqMark != wAfter.ReqMark {
			t.Errorf("%s: worker leg sent_hi %#x req_mark %#x, want %#x, %#x", what, w.SentHi, w.ReqMark, wAfter.SentHi, wAfter.ReqMark)
		}
	}

	// The same frame again: the same frame out, byte for byte.
	v, out, delta := d.run(k.in.build())
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterFwdToWorker, kern.CounterPass)
	if !bytes.Equal(out, k.out) {
		t.Errorf("retransmission reached the worker as\n % x\nthe first time\n % x", out, k.out)
	}
	checkGrown(t, "retransmission", k.in, out, k.plain, k.toW)
	still("after a retransmission")

	// As a retransmission really comes: a later TSval.
	re := k.in
	re.opts = nopTS(k.c0.PeerTSval+9, k.c0.OurTSval)
	v, out, delta = d.run(re.build())
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterFwdToWorker, kern.CounterPass)
	checkGrown(t, "retransmission with a later TSval", re, out, k.plain, k.toW)
	still("after a retransmission with a later TSval")

	// The worker acknowledges the grown request: the client is told its
	// request arrived, no more (ack_off counts the added bytes).
	ack := fromWorker(seg{seq: k.w0.PeerHi, ack: k.workerSent(), flags: tcpACK, win: 300,
		opts: nopTS(k.w0.PeerTSval+1, k.w0.OurTSval+1)})
	in := ack.build()
	v, out, delta = d.run(in)
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterFwdToClient, kern.CounterPass)
	checkTranslated(t, in, out, k.toC)
	checkSums(t, "worker's ACK", out)
	if o := mustParse(t, out); o.ack != k.c0.PeerHi+k.n() {
		t.Errorf("worker's ACK of the grown request reaches the client as %#x, want the end of its request %#x", o.ack, k.c0.PeerHi+k.n())
	}

	// A spurious retransmission after that: grown again.
	re.opts = nopTS(k.c0.PeerTSval+11, k.c0.OurTSval)
	v, out, delta = d.run(re.build())
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterFwdToWorker, kern.CounterPass)
	checkGrown(t, "retransmission after the worker's ACK", re, out, k.plain, k.toW)
	still("after the worker's ACK and a retransmission")
}

// closeToken is what http_answer writes over a "keep-alive" token.
const closeToken = "close     "

// rewriteKeepAlive is answer head a with its "Connection: keep-alive" line
// (token of any case) as the client must get it.
func rewriteKeepAlive(a string) string {
	i := strings.Index(strings.ToLower(a), "\r\nconnection: keep-alive\r\n")
	if i < 0 {
		panic("no keep-alive line in " + a)
	}
	at := i + len("\r\nconnection: ")
	return a[:at] + closeToken + a[at+len("keep-alive"):]
}

// keepAliveAt is the offset in a of its "keep-alive" token.
func keepAliveAt(a string) int {
	return strings.Index(strings.ToLower(a), "\r\nconnection: keep-alive\r\n") + len("\r\nconnection: ")
}

// nginxKeep is an nginx answer head to an HTTP/1.0 request with keep-alive,
// server the Server header's value (its length moves the token's offset).
func nginxKeep(server string, length int) string {
	return "HTTP/1.1 200 OK\r\nServer: " + server + "\r\nContent-Type: text/plain\r\n" +
		fmt.Sprintf("Content-Length: %d\r\n", length) + "Connection: keep-alive\r\n\r\n"
}

// TestKeepHTTP10Answer: the answer to a grown request. Framed (its headers
// end in the first 2048 bytes, one Content-Length, or no body: HEAD, 204,
// 304): both bindings learn where it ends, its keep-alive line becomes
// "Connection: close" and blanks (at an even and an odd offset: the
// checksum's two lanes), and the worker segment that ends there reaches
// the client with a FIN, the first segment or a later one; checksums valid.
// Not framed: counted (unframed), pinned (pin_close), nothing rewritten, no
// FIN. "Connection: close": pinned, nothing rewritten, no FIN.
func TestKeepHTTP10Answer(t *testing.T) {
	body := strings.Repeat("b", 100)
	long := "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: keep-alive\r\nX-Pad: " + strings.Repeat("p", 2100) + "\r\n\r\n"
	tests := []struct {
		name     string
		req      string
		segs     []string
		head     int  // the answer's status line and headers: bytes (framed answers)
		clen     int  // ... and its body
		framed   bool // FIN on the segment that ends at head+clen
		rewrite  bool // the first segment's keep-alive becomes close
		unframed bool // counted unframed, pinned
		closes   bool // the worker closes: pinned, not counted unframed
	}{
		{name: "one segment, token at an odd offset", req: abRequest,
			segs: []string{nginxKeep("nginx", 100) + body}, head: len(nginxKeep("nginx", 100)), clen: 100, framed: true, rewrite: true},
		{name: "one segment, token at an even offset", req: abRequest,
			segs: []string{nginxKeep("nginx1", 100) + body}, head: len(nginxKeep("nginx1", 100)), clen: 100, framed: true, rewrite: true},
		{name: "two segments: FIN on the second", req: abRequest,
			segs: []string{nginxKeep("nginx", 100) + body[:40], body[40:]}, head: len(nginxKeep("nginx", 100)), clen: 100, framed: true, rewrite: true},
		{name: "three segments, headers alone in the first", req: abRequest,
			segs: []string{nginxKeep("nginx1", 100), body[:50], body[50:]}, head: len(nginxKeep("nginx1", 100)), clen: 100, framed: true, rewrite: true},
		{name: "Keep-Alive capitalised (Apache), lower-case content-length", req: abRequest,
			segs: []string{"HTTP/1.1 200 OK\r\nServer: Apache\r\ncontent-length: 5\r\nKeep-Alive: timeout=5, max=100\r\nConnection: Keep-Alive\r\n\r\nhello"},
			head: 110, clen: 5, framed: true, rewrite: true},
		{name: "no Connection header (HTTP/1.1 keeps alive)", req: abRequest,
			segs: []string{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello"}, head: 49, clen: 5, framed: true},
		{name: "Content-Length: 0", req: abRequest,
			segs: []string{"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"}, head: 62, framed: true, rewrite: true},
		{name: "HTTP/1.0 status line with keep-alive", req: abRequest,
			segs: []string{"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"}, head: 62, clen: 5, framed: true, rewrite: true},
		{name: "HEAD: the headers end it, Content-Length notwithstanding", req: "HEAD /b100 HTTP/1.0\r\nHost: a\r\n\r\n",
			segs: []string{nginxKeep("nginx", 100)}, head: len(nginxKeep("nginx", 100)), framed: true, rewrite: true},
		{name: "304 Not Modified", req: abRequest,
			segs: []string{"HTTP/1.1 304 Not Modified\r\nServer: nginx\r\nETag: \"6a4d-64\"\r\nConnection: keep-alive\r\n\r\n"},
			head: 85, framed: true, rewrite: true},
		{name: "204 No Content", req: abRequest,
			segs: []string{"HTTP/1.1 204 No Content\r\nServer: nginx\r\nConnection: keep-alive\r\n\r\n"}, head: 66, framed: true, rewrite: true},
		{name: "no Content-Length: unframed", req: abRequest,
			segs: []string{"HTTP/1.1 200 OK\r\nServer: nginx\r\nConnection: keep-alive\r\n\r\n" + body}, unframed: true},
		{name: "Transfer-Encoding: unframed", req: abRequest,
			segs: []string{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n5\r\nhello\r\n0\r\n\r\n"}, unframed: true},
		{name: "two Content-Length that differ: unframed", req: abRequest,
			segs: []string{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: keep-alive\r\n\r\nhello"}, unframed: true},
		{name: "headers end past the 2048 bytes scanned: unframed", req: abRequest,
			segs: []string{long + body}, unframed: true},
		{name: "Connection: close", req: abRequest,
			segs: []string{"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 100\r\nConnection: close\r\n\r\n" + body}, closes: true},
		{name: "HTTP/1.0 status line without keep-alive", req: abRequest,
			segs: []string{"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello"}, closes: true},
	}
	parities := map[int]bool{}
	for _, tc := range tests {
		if tc.framed {
			if i := strings.Index(strings.Join(tc.segs, ""), "\r\n\r\n"); i+4 != tc.head {
				t.Fatalf("%s: the table says %d bytes of headers, there are %d", tc.name, tc.head, i+4)
			}
		}
		if tc.rewrite {
			parities[keepAliveAt(tc.segs[0])%2] = true
		}
	}
	if len(parities) != 2 {
		t.Fatal("the table does not put a keep-alive token at both an even and an odd offset")
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			k := keepBind(t, d, stdClientLeg(), stdWorkerLeg(), tc.req)
			mark := k.w0.PeerHi // where the answer starts (worker's space)
			finAt := mark + uint32(tc.head+tc.clen)
			seq := mark
			for i, p := range tc.segs {
				s := fromWorker(seg{seq: seq, ack: k.workerSent(), flags: tcpACK | tcpPSH, win: 300,
					opts: nopTS(k.w0.PeerTSval+1+uint32(i), k.w0.OurTSval+1), payload: []byte(p)})
				seq += uint32(len(p))
				v, out, delta := d.run(s.build())
				checkVerdict(t, v, xdpPass)
				want := []kern.Counter{kern.CounterTCP, kern.CounterFwdToClient, kern.CounterPass}
				if i == 0 && (tc.unframed || tc.closes) {
					want = append(want, kern.CounterPinClose)
				}
				if i == 0 && tc.unframed {
					want = append(want, kern.CounterUnframed)
				}
				checkCounters(t, delta, want...)

				// What the client must get: the segment, its keep-alive
				// rewritten, with a FIN at the answer's end.
				exp := s
				if i == 0 && tc.rewrite {
					exp.payload = []byte(rewriteKeepAlive(p))
				}
				fin := tc.framed && seq == finAt
				if fin {
					exp.flags |= tcpFIN
				}
				checkTranslated(t, exp.build(), out, k.toC)
				what := fmt.Sprintf("answer segment %d", i)
				checkSums(t, what, out)
				o := mustParse(t, out)
				if got := o.flags&tcpFIN != 0; got != fin {
					t.Errorf("%s: FIN %v, want %v", what, got, fin)
				}
				if got := strings.Contains(string(o.payload), "Connection: "+closeToken+"\r\n"); got != (i == 0 && tc.rewrite) {
					t.Errorf("%s: keep-alive rewritten to close: %v, want %v", what, got, i == 0 && tc.rewrite)
				}
				if wantAck := k.c0.PeerHi + k.n(); o.ack != wantAck {
					t.Errorf("%s: acknowledges %#x to the client, want the end of its request %#x", what, o.ack, wantAck)
				}
			}
			if tc.framed && seq != finAt {
				t.Fatalf("the segments end at %#x, the answer at %#x", seq, finAt)
			}

			toW, toC := k.toW, k.toC
			if tc.framed {
				toW.FinAt, toC.FinAt = finAt, finAt
				toW.Flags |= kern.BindFINAt | kern.BindEnd
				toC.Flags |= kern.BindFINAt | kern.BindEnd
			}
			d.checkBind("after the answer", clientKey, toW)
			d.checkBind("after the answer", workerKey, toC)
			wantPin := kern.PinNone
			if tc.unframed || tc.closes {
				wantPin = kern.PinClose
			}
			if gc, gw := d.mustLeg(clientKey), d.mustLeg(workerKey); gc.Pin != wantPin || gw.Pin != wantPin {
				t.Errorf("client pinned %q, worker leg %q; want %q", gc.Pin, gw.Pin, wantPin)
			}
		})
	}
}

// framed is a pair after a grown ab request and its whole answer in one
// worker segment, FIN set: the state, the FIN's seq in the client's space,
// and the TSval the client last got.
type framed struct {
	keepState
	fin      uint32 // seq of our FIN (client's space)
	finAt    uint32 // where the answer ends (worker's space)
	cliTSecr uint32 // the TSval the answer carried to the client
}

func framedPair(t *testing.T, d *dataPlane) framed {
	t.Helper()
	k := keepBind(t, d, stdClientLeg(), stdWorkerLeg(), abRequest)
	a := nginxKeep("nginx", 100) + strings.Repeat("b", 100)
	s := fromWorker(seg{seq: k.w0.PeerHi, ack: k.workerSent(), flags: tcpACK | tcpPSH, win: 300,
		opts: nopTS(k.w0.PeerTSval+1, k.w0.OurTSval+1), payload: []byte(a)})
	v, out, _ := d.run(s.build())
	checkVerdict(t, v, xdpPass)
	o := mustParse(t, out)
	if o.flags&tcpFIN == 0 {
		t.Fatal("the answer reached the client without a FIN")
	}
	f := framed{keepState: k, finAt: k.w0.PeerHi + uint32(len(a)), cliTSecr: o.tsval}
	f.fin = o.seq + uint32(len(o.payload))
	if want := k.c0.SndNxt + uint32(len(a)); f.fin != want {
		t.Fatalf("FIN at %#x in the client's space, want after the answer %#x", f.fin, want)
	}
	return f
}

// clientSeg is a segment of the client after its request.
func (f framed) clientSeg(ack uint32, flags uint8, tsAdd uint32, win uint16) seg {
	return fromClient(seg{seq: f.c0.PeerHi + f.n(), ack: ack, flags: flags, win: win,
		opts: nopTS(f.c0.PeerTSval+7+tsAdd, f.cliTSecr)})
}

// closedLegs is what framed_close must leave: client leg cb (as stored
// before the ACK of our FIN, ack in seg s) closing (or dead, with its FIN),
// our FIN sent; worker leg wb idle, its tx positions materialised from the
// client (the request's bytes grown included).
func (f framed) closedLegs(cb, wb kern.Leg, s seg, finished bool) (wantC, wantW kern.Leg) {
	wantC = cb
	wantC.State = kern.LegClosing
	wantC.SndNxt = f.fin + 1
	wantC.OurTSval = wb.PeerTSval - f.toW.TSecrOff
	wantC.SndWin = scaledWin(wb.PeerWin, wb.PeerWScale, cb.OurWScale)
	wantC.PeerAcked = s.ack
	wantC.PeerTSval = binary.BigEndian.Uint32(s.opts[4:])
	wantC.PeerWin = uint32(s.win)
	if finished {
		wantC.State = kern.LegDead
		wantC.PeerHi++
		wantC.RxFlags |= kern.RxFIN
	}
	wantW = wb
	wantW.State = kern.LegIdle
	wantW.SndNxt = cb.PeerHi + f.toW.SeqOff
	wantW.OurTSval = cb.PeerTSval + f.toW.TSvalOff
	wantW.SndWin = scaledWin(cb.PeerWin, cb.PeerWScale, wb.OurWScale)
	return wantC, wantW
}

// ackOurFIN runs s, the client's pure ACK of our FIN, which ends the pair
// (framed_close): dropped, counted framed_close.
func ackOurFIN(t *testing.T, d *dataPlane, s seg) {
	t.Helper()
	v, out, delta := d.run(s.build())
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterFramedClose, kern.CounterPass)
	// It goes on as the worker's ACK of its whole answer.
	w := d.mustLeg(workerKey)
	checkSums(t, "ACK to the worker", out)
	o := mustParse(t, out)
	if o.src != poolAddr || o.dst != workerAddr || o.seq != w.SndNxt || o.ack != w.PeerHi || o.flags != tcpACK ||
		len(o.payload) != 0 || o.tsval != w.OurTSval || o.tsecr != w.PeerTSval {
		t.Errorf("ACK to the worker: %s -> %s seq %#x ack %#x flags %#x payload %d TS %d/%d; want %s -> %s seq %#x ack %#x ACK TS %d/%d",
			o.src, o.dst, o.seq, o.ack, o.flags, len(o.payload), o.tsval, o.tsecr,
			poolAddr, workerAddr, w.SndNxt, w.PeerHi, w.OurTSval, w.PeerTSval)
	}
}

// TestKeepHTTP10FramedClose: the client acknowledges the FIN that ended the
// framed answer: the pair ends there, the worker leg goes back to its pool
// idle (its positions counting the grown request), the client leg waits
// closing for the client's FIN, which is answered with an ACK (our FIN + 1,
// its FIN + 1) and ends the leg; a retransmission of that FIN is answered
// again. A worker leg given back serves the next client at the right seq.
// The client's FIN on the very ACK of ours is answered at once.
func TestKeepHTTP10FramedClose(t *testing.T) {
	t.Run("ACK of our FIN, then the client's FIN", func(t *testing.T) {
		d := loadDataPlane(t)
		f := framedPair(t, d)
		ws := d.workerStats(1)
		load, idle := d.load(1), d.idleCount(1)

		// The client acknowledges the answer, not yet the FIN: an ACK
		// like any other, to the worker.
		in := f.clientSeg(f.fin, tcpACK, 1, 502).build()
		v, out, delta := d.run(in)
		checkVerdict(t, v, xdpPass)
		checkCounters(t, delta, kern.CounterTCP, kern.CounterFwdToWorker, kern.CounterPass)
		checkTranslated(t, in, out, f.toW)
		if o := mustParse(t, out); o.ack != f.finAt {
			t.Errorf("ACK of the answer reaches the worker as %#x, want the answer's end %#x", o.ack, f.finAt)
		}
		if c := d.mustLeg(clientKey); c.State != kern.LegBound {
			t.Fatalf("client leg %s after the ACK of the answer alone, want bound", c.State)
		}

		// The ACK of our FIN.
		cb, wb := d.mustLeg(clientKey), d.mustLeg(workerKey)
		s := f.clientSeg(f.fin+1, tcpACK, 2, 502)
		ackOurFIN(t, d, s)
		wantC, wantW := f.closedLegs(cb, wb, s, false)
		checkLeg(t, "client leg after the ACK of our FIN", d.mustLeg(clientKey), wantC)
		checkLeg(t, "worker leg after the ACK of our FIN", d.mustLeg(workerKey), wantW)
		if w := d.mustLeg(workerKey); w.SndNxt != f.workerSent() || w.PeerHi != f.finAt {
			t.Errorf("worker leg snd_nxt %#x peer_hi %#x, want %#x (the grown request's end), %#x (the answer's)",
				w.SndNxt, w.PeerHi, f.workerSent(), f.finAt)
		}
		d.checkNoBind("after the ACK of our FIN", clientKey)
		d.checkNoBind("after the ACK of our FIN", workerKey)
		d.checkIdle("after the ACK of our FIN", workerKey)
		if d.load(1) != load-1 || d.idleCount(1) != idle+1 {
			t.Errorf("worker 1 load %d idle %d, want %d, %d", d.load(1), d.idleCount(1), load-1, idle+1)
		}
		if got := wsDelta(ws, d.workerStats(1)); got != (kern.WorkerStats{Releases: 1}) {
			t.Errorf("worker 1 stats moved %+v, want one release", got)
		}
		if got := d.cooling(); len(got) != 0 {
			t.Errorf("cooling queue %v, want empty: the worker leg goes back at once", got)
		}
		checkEvents(t, d.drainEvents())

		// The client's FIN: answered with an ACK, the leg ends.
		cb = d.mustLeg(clientKey)
		finSeg := f.clientSeg(f.fin+1, tcpACK|tcpFIN, 3, 502)
		in = finSeg.build()
		v, out, delta = d.run(in)
		checkVerdict(t, v, xdpTX)
		checkCounters(t, delta, kern.CounterTCP, kern.CounterFINAnswered, kern.CounterLegClosed, kern.CounterTX)
		wantC = cb
		wantC.State = kern.LegDead
		wantC.PeerHi++
		wantC.RxFlags |= kern.RxFIN
		wantC.PeerTSval = f.c0.PeerTSval + 7 + 3
		checkLeg(t, "client leg after its FIN", d.mustLeg(clientKey), wantC)
		checkReply(t, in, out, wantC, f.fin+1, tcpACK)
		if o := mustParse(t, out); o.seq != f.fin+1 || o.ack != finSeg.seq+1 || o.flags != tcpACK {
			t.Errorf("reply seq %#x ack %#x flags %#x, want %#x, %#x, ACK", o.seq, o.ack, o.flags, f.fin+1, finSeg.seq+1)
		}
		checkEvents(t, d.drainEvents(), kern.Event{Type: kern.EventLegClosed, Key: clientKey})

		// The FIN again (our ACK was lost): the same answer.
		v, out, delta = d.run(in)
		checkVerdict(t, v, xdpTX)
		checkCounters(t, delta, kern.CounterTCP, kern.CounterFINAnswered, kern.CounterTX)
		checkReply(t, in, out, wantC, f.fin+1, tcpACK)
		checkLeg(t, "client leg after its FIN again", d.mustLeg(clientKey), wantC)
		checkEvents(t, d.drainEvents())

		// The next client (HTTP/1.0 too) gets the worker leg: its
		// request goes on the worker's stream where the grown one ended.
		d.idleQueue()
		d.pushIdle(workerKey)
		c2 := stdClientLeg()
		d.putLeg(client2Key, c2)
		s2 := seg{seq: c2.PeerHi, ack: c2.SndNxt, flags: tcpACK | tcpPSH, win: 502,
			opts: nopTS(c2.PeerTSval+1, c2.OurTSval), payload: []byte(abRequest)}
		v, out, delta = d.run(on(client2Key, s2))
		checkVerdict(t, v, xdpPass)
		checkCounters(t, delta, kern.CounterTCP, kern.CounterBind, kern.CounterFwdToWorker, kern.CounterPass,
			kern.CounterKeepHttp10)
		checkSums(t, "next client's request", out)
		o := mustParse(t, out)
		if o.dst != workerAddr || o.seq != f.workerSent() || o.ack != f.finAt {
			t.Errorf("next client's request reaches %s at seq %#x ack %#x, want the worker at %#x, %#x",
				o.dst, o.seq, o.ack, f.workerSent(), f.finAt)
		}
		if string(o.payload) != grownRequest(abRequest) {
			t.Errorf("next client's request reaches the worker as %q, want it grown", o.payload)
		}
	})

	t.Run("FIN with the ACK of our FIN", func(t *testing.T) {
		d := loadDataPlane(t)
		f := framedPair(t, d)
		load, idle := d.load(1), d.idleCount(1)
		cb, wb := d.mustLeg(clientKey), d.mustLeg(workerKey)
		s := f.clientSeg(f.fin+1, tcpACK|tcpFIN, 1, 502)
		in := s.build()
		v, out, delta := d.run(in)
		checkVerdict(t, v, xdpTX)
		checkCounters(t, delta, kern.CounterTCP, kern.CounterFramedClose, kern.CounterFINAnswered,
			kern.CounterLegClosed, kern.CounterTX)
		wantC, wantW := f.closedLegs(cb, wb, s, true)
		checkLeg(t, "client leg after its FIN", d.mustLeg(clientKey), wantC)
		checkLeg(t, "worker leg after the client's FIN", d.mustLeg(workerKey), wantW)
		checkReply(t, in, out, wantC, f.fin+1, tcpACK)
		if o := mustParse(t, out); o.seq != f.fin+1 || o.ack != s.seq+1 || o.flags != tcpACK {
			t.Errorf("reply seq %#x ack %#x flags %#x, want %#x, %#x, ACK", o.seq, o.ack, o.flags, f.fin+1, s.seq+1)
		}
		d.checkNoBind("after the client's FIN", clientKey)
		d.checkNoBind("after the client's FIN", workerKey)
		d.checkIdle("after the client's FIN", workerKey)
		if d.load(1) != load-1 || d.idleCount(1) != idle+1 {
			t.Errorf("worker 1 load %d idle %d, want %d, %d", d.load(1), d.idleCount(1), load-1, idle+1)
		}
		checkEvents(t, d.drainEvents(), kern.Event{Type: kern.EventLegClosed, Key: clientKey})

		// Its retransmission: answered again.
		v, out, delta = d.run(in)
		checkVerdict(t, v, xdpTX)
		checkCounters(t, delta, kern.CounterTCP, kern.CounterFINAnswered, kern.CounterTX)
		checkReply(t, in, out, wantC, f.fin+1, tcpACK)
	})
}

// TestKeepHTTP10AckOnClosingLeg: after framed_close, the client leg waits
// for the client's FIN: a pure ACK (a window update, or the ACK of our FIN
// again) moves its positions but does not end it, nor does a FIN that does
// not acknowledge ours; the FIN still does.
func TestKeepHTTP10AckOnClosingLeg(t *testing.T) {
	d := loadDataPlane(t)
	f := framedPair(t, d)
	ackOurFIN(t, d, f.clientSeg(f.fin+1, tcpACK, 1, 502))
	if c := d.mustLeg(clientKey); c.State != kern.LegClosing {
		t.Fatalf("client leg %s after the ACK of our FIN, want closing", c.State)
	}
	d.drainEvents()

	for i, win := range []uint16{502, 800} {
		cb := d.mustLeg(clientKey)
		s := f.clientSeg(f.fin+1, tcpACK, 2+uint32(i), win)
		v, _, delta := d.run(s.build())
		checkVerdict(t, v, xdpDrop)
		checkCounters(t, delta, kern.CounterTCP, kern.CounterUnboundACK, kern.CounterDrop)
		want := cb
		want.PeerWin = uint32(win)
		want.PeerTSval = binary.BigEndian.Uint32(s.opts[4:])
		checkLeg(t, fmt.Sprintf("client leg after pure ACK %d", i), d.mustLeg(clientKey), want)
		checkEvents(t, d.drainEvents())
	}

	// A FIN that does not acknowledge ours (our FIN's ACK was reordered
	// after it): dropped, the client sends it again.
	cb := d.mustLeg(clientKey)
	v, _, delta := d.run(f.clientSeg(f.fin, tcpACK|tcpFIN, 4, 800).build())
	checkVerdict(t, v, xdpDrop)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterDeadLeg, kern.CounterDrop)
	checkLeg(t, "client leg after a FIN that does not acknowledge ours", d.mustLeg(clientKey), cb)
	checkEvents(t, d.drainEvents())

	in := f.clientSeg(f.fin+1, tcpACK|tcpFIN, 4, 800).build()
	v, out, delta := d.run(in)
	checkVerdict(t, v, xdpTX)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterFINAnswered, kern.CounterLegClosed, kern.CounterTX)
	if o := mustParse(t, out); o.seq != f.fin+1 || o.flags != tcpACK {
		t.Errorf("reply seq %#x flags %#x, want %#x, ACK", o.seq, o.flags, f.fin+1)
	}
	if c := d.mustLeg(clientKey); c.State != kern.LegDead {
		t.Errorf("client leg %s after its FIN, want dead", c.State)
	}
	checkEvents(t, d.drainEvents(), kern.Event{Type: kern.EventLegClosed, Key: clientKey})
}

// TestKeepHTTP10AnswerRetransmitted: the worker sends the framed answer's
// first segment again (no ACK from the client came in time): the client
// must get the same bytes as the first time (keep-alive rewritten to close)
// and the FIN at the answer's end. The copy it keeps is this one when the
// first was lost between the data plane and the client (routed mode).
func TestKeepHTTP10AnswerRetransmitted(t *testing.T) {
	d := loadDataPlane(t)
	k := keepBind(t, d, stdClientLeg(), stdWorkerLeg(), abRequest)
	a := nginxKeep("nginx", 100) + strings.Repeat("b", 100)
	s := fromWorker(seg{seq: k.w0.PeerHi, ack: k.workerSent(), flags: tcpACK | tcpPSH, win: 300,
		opts: nopTS(k.w0.PeerTSval+1, k.w0.OurTSval+1), payload: []byte(a)})
	v, first, _ := d.run(s.build())
	checkVerdict(t, v, xdpPass)
	s.opts = nopTS(k.w0.PeerTSval+2, k.w0.OurTSval+1)
	v, again, delta := d.run(s.build())
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterFwdToClient, kern.CounterPass)
	checkSums(t, "retransmitted answer", again)
	o1, o2 := mustParse(t, first), mustParse(t, again)
	if o2.seq != o1.seq || o2.flags != o1.flags {
		t.Errorf("retransmission at seq %#x flags %#x, first copy at %#x flags %#x", o2.seq, o2.flags, o1.seq, o1.flags)
	}
	if string(o2.payload) != string(o1.payload) {
		t.Errorf("retransmission of the answer's first segment reaches the client with other bytes than the first copy:\n got  %q\n want %q",
			o2.payload, o1.payload)
	}
}

// TestKeepHTTP10AnswerReordered: the answer's second (last) segment
// reaches the data plane before its first (the first lost on the way and
// sent again, or reordered); the worker may send the second again. However
// the data plane takes that (forwarded or held), the first segment must be
// judged when it comes, and the client must get a FIN at the answer's end:
// the worker, asked for keep-alive, keeps its connection, so nothing else
// ever ends the HTTP/1.0 client's.
func TestKeepHTTP10AnswerReordered(t *testing.T) {
	d := loadDataPlane(t)
	k := keepBind(t, d, stdClientLeg(), stdWorkerLeg(), abRequest)
	head := nginxKeep("nginx", 100)
	body := strings.Repeat("b", 100)
	p1, p2 := head+body[:40], body[40:]
	s1 := fromWorker(seg{seq: k.w0.PeerHi, ack: k.workerSent(), flags: tcpACK, win: 300,
		opts: nopTS(k.w0.PeerTSval+1, k.w0.OurTSval+1), payload: []byte(p1)})
	s2 := fromWorker(seg{seq: k.w0.PeerHi + uint32(len(p1)), ack: k.workerSent(), flags: tcpACK | tcpPSH, win: 300,
		opts: nopTS(k.w0.PeerTSval+1, k.w0.OurTSval+1), payload: []byte(p2)})
	end := k.c0.SndNxt + uint32(len(p1)+len(p2)) // the answer's end, client's space
	finAt := k.w0.PeerHi + uint32(len(p1)+len(p2))
	var fin, rewritten bool
	for i, s := range []seg{s2, s1, s2} {
		v, out, delta := d.run(s.build())
		if v == xdpDrop && i == 0 {
			continue // held until the first segment is through: the worker sends it again
		}
		checkVerdict(t, v, xdpPass)
		if delta[kern.CounterFwdToClient] != 1 {
			t.Errorf("segment %d: counters moved %v, want one forwarded to the client", i, delta)
		}
		checkSums(t, fmt.Sprintf("segment %d", i), out)
		o := mustParse(t, out)
		if o.flags&tcpFIN != 0 {
			if o.seq+uint32(len(o.payload)) != end {
				t.Errorf("segment %d: FIN at %#x, want at the answer's end %#x", i, o.seq+uint32(len(o.payload)), end)
			}
			fin = true
		}
		if o.seq == k.c0.SndNxt && strings.Contains(string(o.payload), "Connection: "+closeToken+"\r\n") {
			rewritten = true
		}
	}
	if b, _ := d.bind(workerKey); b.Flags&kern.BindFINAt == 0 || b.FinAt != finAt {
		t.Errorf("answer not framed once its first segment came: worker's binding flags %#x fin_at %#x, want fin_at %#x",
			b.Flags, b.FinAt, finAt)
	}
	if !rewritten {
		t.Error("the answer's first segment reached the client with its keep-alive")
	}
	if !fin {
		t.Error("the client never got a FIN at the answer's end: nothing ends its HTTP/1.0 connection")
	}
}

// TestKeepHTTP10ClosingRace: the client's ACK of our FIN and its FIN reach
// two CPUs at once; the ACK's framed_close wins, and the FIN's CPU, finding
// the pair unbound under it, drops it after marking it received. The FIN
// comes again: answered with an ACK (our FIN is acknowledged) and the leg
// ends, rather than our FIN again, which left it closing until the sweep
// while the client, done, reused its port: a SYN on a closing client leg
// then starts a new handshake.
func TestKeepHTTP10ClosingRace(t *testing.T) {
	d := loadDataPlane(t)
	f := framedPair(t, d)
	ackOurFIN(t, d, f.clientSeg(f.fin+1, tcpACK, 2, 502))
	finSeg := f.clientSeg(f.fin+1, tcpACK|tcpFIN, 3, 502)
	// What the losing CPU left: the FIN counted received, nothing sent.
	c := d.mustLeg(clientKey)
	c.PeerHi++
	c.RxFlags |= kern.RxFIN
	d.putLeg(clientKey, c)
	in := finSeg.build()
	v, out, delta := d.run(in)
	checkVerdict(t, v, xdpTX)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterFINAnswered, kern.CounterLegClosed, kern.CounterTX)
	if o := mustParse(t, out); o.seq != f.fin+1 || o.ack != finSeg.seq+1 || o.flags != tcpACK {
		t.Errorf("reply seq %#x ack %#x flags %#x, want %#x, %#x, ACK (not our FIN again)", o.seq, o.ack, o.flags, f.fin+1, finSeg.seq+1)
	}
	if got := d.mustLeg(clientKey); got.State != kern.LegDead {
		t.Errorf("client leg %s after its FIN again, want dead", got.State)
	}

	// A closing client leg (say its last ACK was lost) meets a SYN from
	// its port: the client is done with it; the SYN starts over.
	d2 := loadDataPlane(t)
	f2 := framedPair(t, d2)
	ackOurFIN(t, d2, f2.clientSeg(f2.fin+1, tcpACK, 2, 502))
	if got := d2.mustLeg(clientKey); got.State != kern.LegClosing {
		t.Fatalf("client leg %s, want closing", got.State)
	}
	v, _, delta = d2.run(fromClient(seg{seq: 42, flags: tcpSYN, win: 1, opts: linuxSYN(1460, 1, 7)}).build())
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterSyn, kern.CounterPass)
	if hs, ok := d2.handshake(clientKey); !ok || hs.PeerISN != 42 {
		t.Errorf("new handshake %+v (present %v), want ISN 42", hs, ok)
	}
	if _, ok := d2.leg(clientKey); ok {
		t.Error("closing leg kept under the new connection's SYN")
	}
}
