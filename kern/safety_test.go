package kern_test

// Fixtures of remix safety (DESIGN.md "Remix safety", kern/bpf/proto.h):
// the protocol of a connection from its first bytes, every pin reason, and
// every boundary that the TCP conditions allow but the evidence refuses.

import (
	"strings"
	"testing"

	"github.com/xlb-lb/xlb/kern"
)

// TestClassify: the first data of a client binds it, whatever it is; its
// protocol is read from the first bytes, and a connection whose bytes show
// no message boundaries, or whose first message gives it state, is pinned
// for life (both legs, counted once).
func TestClassify(t *testing.T) {
	tlsHello := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
	tests := []struct {
		name     string
		protocol kern.Protocol
		payload  string
		proto    kern.Proto
		pin      kern.PinReason
	}{
		{"TLS client hello", kern.ProtocolAuto, string(tlsHello), kern.ProtoOpaque, kern.PinTLS},
		{"TLS 1.3 record version", kern.ProtocolAuto, "\x16\x03\x03\x00\x10", kern.ProtoOpaque, kern.PinTLS},
		{"HTTP GET", kern.ProtocolAuto, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", kern.ProtoHTTP, kern.PinNone},
		{"HTTP PROPFIND (WebDAV)", kern.ProtocolAuto, "PROPFIND /dav/ HTTP/1.1\r\n", kern.ProtoHTTP, kern.PinNone},
		{"HTTP absolute URI", kern.ProtocolAuto, "GET http://a/ HTTP/1.1\r\n\r\n", kern.ProtoHTTP, kern.PinNone},
		{"HTTP OPTIONS *", kern.ProtocolAuto, "OPTIONS * HTTP/1.1\r\n\r\n", kern.ProtoHTTP, kern.PinNone},
		{"HTTP CONNECT", kern.ProtocolAuto, "CONNECT example.com:443 HTTP/1.1\r\n\r\n", kern.ProtoHTTP, kern.PinUpgrade},
		{"HTTP/2 preface", kern.ProtocolAuto, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", kern.ProtoHTTP, kern.PinUpgrade},
		{"RESP SET", kern.ProtocolAuto, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n", kern.ProtoRESP, kern.PinNone},
		{"RESP get lower case", kern.ProtocolAuto, "*2\r\n$3\r\nget\r\n$1\r\nk\r\n", kern.ProtoRESP, kern.PinNone},
		{"RESP 12 arguments", kern.ProtocolAuto, "*12\r\n$4\r\nMSET\r\n$1\r\na\r\n", kern.ProtoRESP, kern.PinNone},
		{"RESP AUTH", kern.ProtocolAuto, "*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n", kern.ProtoRESP, kern.PinStateful},
		{"RESP multi lower case", kern.ProtocolAuto, "*1\r\n$5\r\nmulti\r\n", kern.ProtoRESP, kern.PinStateful},
		{"RESP SELECT", kern.ProtocolAuto, "*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n", kern.ProtoRESP, kern.PinStateful},
		{"RESP SUBSCRIBE", kern.ProtocolAuto, "*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n", kern.ProtoRESP, kern.PinStateful},
		{"RESP PSUBSCRIBE", kern.ProtocolAuto, "*2\r\n$10\r\nPSUBSCRIBE\r\n$2\r\nc*\r\n", kern.ProtoRESP, kern.PinStateful},
		{"RESP HELLO 3", kern.ProtocolAuto, "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n", kern.ProtoRESP, kern.PinStateful},
		{"RESP CLIENT REPLY OFF", kern.ProtocolAuto, "*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$3\r\nOFF\r\n", kern.ProtoRESP, kern.PinStateful},
		{"RESP CLIENT SETINFO labels only", kern.ProtocolAuto, "*4\r\n$6\r\nCLIENT\r\n$7\r\nSETINFO\r\n$8\r\nLIB-NAME\r\n", kern.ProtoRESP, kern.PinNone},
		{"RESP SUBSTR is not SUBSCRIBE", kern.ProtocolAuto, "*4\r\n$6\r\nSUBSTR\r\n$1\r\nk\r\n", kern.ProtoRESP, kern.PinNone},
		{"RESP name cut by the segment", kern.ProtocolAuto, "*1\r\n$4\r\nAU", kern.ProtoRESP, kern.PinUnknown},
		{"RESP inline command", kern.ProtocolAuto, "PING\r\n", kern.ProtoHTTP, kern.PinUnknown},
		{"memcached get", kern.ProtocolAuto, "get k1 k2 k3\r\n", kern.ProtoMemcache, kern.PinNone},
		{"memcached meta get", kern.ProtocolAuto, "mg k v\r\n", kern.ProtoMemcache, kern.PinNone},
		{"memcached flush_all", kern.ProtocolAuto, "flush_all\r\n", kern.ProtoMemcache, kern.PinNone},
		{"unknown lower-case word", kern.ProtocolAuto, "hello there\r\n", kern.ProtoMemcache, kern.PinUnknown},
		{"binary", kern.ProtocolAuto, "\x00\x01\x02\x03", kern.ProtoOpaque, kern.PinUnknown},
		{"SSLv2-style hello", kern.ProtocolAuto, "\x80\x2e\x01\x00\x02", kern.ProtoOpaque, kern.PinUnknown},
		{"one byte", kern.ProtocolAuto, "G", kern.ProtoHTTP, kern.PinUnknown},
		{"raw pins everything", kern.ProtocolRaw, "GET / HTTP/1.1\r\n\r\n", kern.ProtoOpaque, kern.PinRaw},
		{"forced http, not a request", kern.ProtocolHTTP, "*1\r\n$4\r\nPING\r\n", kern.ProtoHTTP, kern.PinNotMsg},
		{"forced http, TLS", kern.ProtocolHTTP, string(tlsHello), kern.ProtoHTTP, kern.PinNotMsg},
		{"forced resp, HTTP", kern.ProtocolRESP, "GET / HTTP/1.1\r\n\r\n", kern.ProtoRESP, kern.PinNotMsg},
		{"forced resp, AUTH", kern.ProtocolRESP, "*2\r\n$4\r\nauth\r\n$1\r\np\r\n", kern.ProtoRESP, kern.PinStateful},
		{"forced memcache", kern.ProtocolMemcache, "set k 0 0 1\r\nv\r\n", kern.ProtoMemcache, kern.PinNone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			cfg := defaultConfig
			cfg.Protocol = tc.protocol
			d.setConfig(cfg)
			c, w := stdClientLeg(), stdWorkerLeg()
			d.putLeg(clientKey, c)
			d.putLeg(workerKey, w)
			d.pushIdle(workerKey)
			in := fromClient(seg{seq: c.PeerHi, ack: c.SndNxt, flags: tcpACK | tcpPSH, win: 502,
				opts: nopTS(c.PeerTSval+1, c.OurTSval), payload: []byte(tc.payload)}).build()
			v, _, delta := d.run(in)
			checkVerdict(t, v, xdpPass)
			want := []kern.Counter{kern.CounterTCP, kern.CounterBind, kern.CounterFwdToWorker, kern.CounterPass}
			if tc.pin != kern.PinNone {
				want = append(want, tc.pin.Counter())
			}
			checkCounters(t, delta, want...)
			gc, gw := d.mustLeg(clientKey), d.mustLeg(workerKey)
			if gc.Proto != tc.proto || gc.Pin != tc.pin || gw.Pin != tc.pin {
				t.Errorf("client %s pinned %q, worker leg pinned %q; want %s, %q on both", gc.Proto, gc.Pin, gw.Pin, tc.proto, tc.pin)
			}
			if gc.State != kern.LegBound {
				t.Errorf("client %s, want bound: the first data always binds", gc.State)
			}
			if b, ok := d.bind(workerKey); !ok || b.Proto != tc.proto {
				t.Errorf("worker leg's binding carries protocol %s, want %s", b.Proto, tc.proto)
			}
		})
	}
}

// respPair is answeredPair for a RESP client whose last command ended a
// write with CRLF.
func respPair() answered {
	a := answeredPair()
	a.c0.Proto = kern.ProtoRESP
	a.toW1, a.toC = oracleBind(clientKey, a.c0, workerKey, a.w0)
	a.c.Proto = kern.ProtoRESP
	a.c.Tail = kern.TailPSH | kern.TailCRLF
	return a
}

func memcachePair() answered {
	a := respPair()
	a.c0.Proto = kern.ProtoMemcache
	a.toW1, a.toC = oracleBind(clientKey, a.c0, workerKey, a.w0)
	a.c.Proto = kern.ProtoMemcache
	return a
}

// TestBoundaryEvidence: at a candidate boundary (every TCP condition holds)
// the client moves only on evidence: new data that starts a message, data
// before it that ended a write (and a line, for the line protocols), a pair
// not pinned. New data that is not a message start pins the pair.
func TestBoundaryEvidence(t *testing.T) {
	tests := []struct {
		name    string
		pair    func() answered
		state   func(a *answered)
		payload string
		move    bool
		pin     kern.PinReason
		// workerOnly: the pin is on the worker leg alone (set by the test)
		workerOnly bool
		want       []kern.Counter // besides tcp, request, fwd_to_worker, pass
	}{
		{name: "HTTP request: moves", pair: answeredPair, payload: string(request2), move: true,
			want: []kern.Counter{kern.CounterRemix}},
		{name: "HTTP, body bytes (not a method)", pair: answeredPair, payload: "\x00\x01{\"a\": 1}", pin: kern.PinNotMsg,
			want: []kern.Counter{kern.CounterPinNotMsg}},
		{name: "HTTP, lower-case word", pair: answeredPair, payload: "get / HTTP/1.1\r\n\r\n", pin: kern.PinNotMsg,
			want: []kern.Counter{kern.CounterPinNotMsg}},
		{name: "HTTP, method without a target", pair: answeredPair, payload: "GET  HTTP/1.1\r\n", pin: kern.PinNotMsg,
			want: []kern.Counter{kern.CounterPinNotMsg}},
		{name: "HTTP, CONNECT", pair: answeredPair, payload: "CONNECT a:443 HTTP/1.1\r\n\r\n", pin: kern.PinUpgrade,
			want: []kern.Counter{kern.CounterPinUpgrade}},
		{name: "HTTP, the write before went on (no PSH)", pair: answeredPair, payload: string(request2),
			state: func(a *answered) { a.c.Tail = 0 }, want: []kern.Counter{kern.CounterStayTail}},
		{name: "pinned pair stays", pair: answeredPair, payload: string(request2), pin: kern.PinTLS,
			state: func(a *answered) { a.c.Pin, a.w1.Pin = kern.PinTLS, kern.PinTLS }, want: []kern.Counter{kern.CounterStayPinned}},
		{name: "pinned worker leg alone stays", pair: answeredPair, payload: string(request2), pin: kern.PinPipelined, workerOnly: true,
			state: func(a *answered) { a.w1.Pin = kern.PinPipelined }, want: []kern.Counter{kern.CounterStayPinned}},
		{name: "RESP command: moves", pair: respPair, payload: "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", move: true,
			want: []kern.Counter{kern.CounterRemix}},
		{name: "RESP, mid-argument bytes", pair: respPair, payload: "$1024\r\nxxxx", pin: kern.PinNotMsg,
			want: []kern.Counter{kern.CounterPinNotMsg}},
		{name: "RESP, MULTI", pair: respPair, payload: "*1\r\n$5\r\nMULTI\r\n", pin: kern.PinStateful,
			want: []kern.Counter{kern.CounterPinStateful}},
		{name: "RESP, previous write did not end a line", pair: respPair, payload: "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
			state: func(a *answered) { a.c.Tail = kern.TailPSH }, want: []kern.Counter{kern.CounterStayTail}},
		{name: "memcache command: moves", pair: memcachePair, payload: "get k1 k2\r\n", move: true,
			want: []kern.Counter{kern.CounterRemix}},
		{name: "memcache, data block bytes", pair: memcachePair, payload: "value bytes\r\n", pin: kern.PinNotMsg,
			want: []kern.Counter{kern.CounterPinNotMsg}},
		{name: "memcache, no PSH before", pair: memcachePair, payload: "get k\r\n",
			state: func(a *answered) { a.c.Tail = kern.TailCRLF }, want: []kern.Counter{kern.CounterStayTail}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			a := tc.pair()
			if tc.state != nil {
				tc.state(&a)
			}
			a.store(d, true)
			s := a.next()
			s.payload = []byte(tc.payload)
			in := s.build()
			v, out, delta := d.run(in)
			checkVerdict(t, v, xdpPass)
			checkCounters(t, delta, append([]kern.Counter{kern.CounterTCP, kern.CounterRequest, kern.CounterFwdToWorker,
				kern.CounterPass}, tc.want...)...)
			gc, gw1 := d.mustLeg(clientKey), d.mustLeg(workerKey)
			if tc.move {
				if b, _ := d.bind(clientKey); b.To != worker2Key {
					t.Errorf("client bound to %s, want moved to W2", b.To)
				}
				return
			}
			checkTranslated(t, in, out, a.toW1)
			d.checkBind("stayed", clientKey, a.toW1)
			d.checkNoBind("stayed", worker2Key)
			cpin := tc.pin
			if tc.workerOnly {
				cpin = kern.PinNone
			}
			if gc.Pin != cpin || gw1.Pin != tc.pin {
				t.Errorf("client pinned %q, W1 pinned %q; want %q, %q", gc.Pin, gw1.Pin, cpin, tc.pin)
			}
			if gw1.ReqMark != a.w1.PeerHi {
				t.Errorf("W1 req_mark %#x, want its peer_hi %#x: a new exchange started on W1", gw1.ReqMark, a.w1.PeerHi)
			}
		})
	}
}

// TestWorkerEvidence: what the worker's data shows. The first segment of an
// HTTP answer: 101 pins (upgrade), an interim answer that ends in its
// segment is passed over (the exchange goes on), one that does not pins, no
// status line pins. New data acknowledging less than the client sent: the
// worker answered before it had the whole request (pipelined).
func TestWorkerEvidence(t *testing.T) {
	n := uint32(len(request))
	tests := []struct {
		name    string
		pair    func() answered
		seq     uint32 // offset from W1's answer start (its req_mark)
		ackLess uint32 // acknowledges this much less than sent
		payload string
		pin     kern.PinReason
		interim bool
	}{
		{name: "final answer", pair: answeredPair, payload: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		{name: "HTTP/1.0 answer", pair: answeredPair, payload: "HTTP/1.0 404 Not Found\r\n\r\n", pin: kern.PinClose},
		{name: "HTTP/1.0 answer, keep-alive", pair: answeredPair,
			payload: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: Keep-Alive\r\n\r\nok"},
		{name: "Connection: close (nginx's)", pair: answeredPair, payload: nginxAnswer("close"), pin: kern.PinClose},
		{name: "connection: CLOSE", pair: answeredPair,
			payload: "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: CLOSE\r\n\r\nok", pin: kern.PinClose},
		{name: "Connection: keep-alive", pair: answeredPair, payload: nginxAnswer("keep-alive")},
		{name: "Connection: close in the body, not the headers", pair: answeredPair,
			payload: "HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\n\nConnection: close\r\n"},
		{name: "Connection: close past the scanned bytes", pair: answeredPair,
			payload: "HTTP/1.1 200 OK\r\nX-Pad: " + strings.Repeat("p", 2100) + "\r\nConnection: close\r\n\r\n"},
		{name: "Connection: close in a later segment of the answer", pair: answeredPair, seq: 1400,
			payload: "X: y\r\nConnection: close\r\n\r\n"},
		{name: "101 Switching Protocols", pair: answeredPair, payload: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
			pin: kern.PinUpgrade},
		{name: "100 Continue", pair: answeredPair, payload: "HTTP/1.1 100 Continue\r\n\r\n", interim: true},
		{name: "103 Early Hints", pair: answeredPair, payload: "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n", interim: true},
		{name: "interim answer that goes on", pair: answeredPair, payload: "HTTP/1.1 103 Early Hints\r\nLink: </a.c",
			pin: kern.PinInterim},
		{name: "interim and final answer in one segment", pair: answeredPair,
			payload: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", pin: kern.PinInterim},
		{name: "no status line", pair: answeredPair, payload: "hello", pin: kern.PinNotMsg},
		{name: "HTTP/2 frame", pair: answeredPair, payload: "\x00\x00\x12\x04\x00\x00\x00\x00\x00", pin: kern.PinNotMsg},
		{name: "not the first segment of the answer", pair: answeredPair, seq: 1400, payload: "hello"},
		{name: "answers before the whole request", pair: answeredPair, ackLess: 10,
			payload: "HTTP/1.1 413 Payload Too Large\r\n\r\n", pin: kern.PinPipelined},
		{name: "RESP answers before the whole request", pair: respPair, ackLess: 1, payload: "+OK\r\n", pin: kern.PinPipelined},
		{name: "RESP answer: no status line to read", pair: respPair, payload: "+OK\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			a := tc.pair()
			// The request is in, not answered yet.
			a.w1.PeerHi = a.w1.ReqMark
			a.store(d, false)
			p := []byte(tc.payload)
			seq := a.w1.ReqMark + tc.seq
			in := fromWorker(seg{seq: seq, ack: a.w0.SndNxt + n - tc.ackLess, flags: tcpACK | tcpPSH, win: 300,
				opts: nopTS(a.w1.PeerTSval+1, a.w1.OurTSval), payload: p}).build()
			v, out, delta := d.run(in)
			checkVerdict(t, v, xdpPass)
			want := []kern.Counter{kern.CounterTCP, kern.CounterFwdToClient, kern.CounterPass}
			if tc.pin != kern.PinNone {
				want = append(want, tc.pin.Counter())
			}
			if tc.interim {
				want = append(want, kern.CounterInterim)
			}
			checkCounters(t, delta, want...)
			checkTranslated(t, in, out, a.toC)
			gc, gw1 := d.mustLeg(clientKey), d.mustLeg(workerKey)
			if gc.Pin != tc.pin || gw1.Pin != tc.pin {
				t.Errorf("client pinned %q, W1 pinned %q; want %q", gc.Pin, gw1.Pin, tc.pin)
			}
			wantMark := a.w1.ReqMark
			if tc.interim {
				wantMark = seq + uint32(len(p)) // the answer starts after the interim one
			}
			if gw1.ReqMark != wantMark {
				t.Errorf("W1 req_mark %#x, want %#x", gw1.ReqMark, wantMark)
			}
		})
	}
}

// TestContinueUpload: Expect: 100-continue. The headers, 100 Continue, the
// body (a continuation, not a boundary, though every TCP condition of one
// holds), the final answer, then the next request moves the client.
func TestContinueUpload(t *testing.T) {
	d := loadDataPlane(t)
	a := answeredPair()
	a.w1.PeerHi = a.w1.ReqMark // headers in, nothing answered
	a.store(d, true)
	n := uint32(len(request))
	cont := []byte("HTTP/1.1 100 Continue\r\n\r\n")
	body := []byte("\x01\x02 body bytes, not a method")
	final := answer(120)

	step := func(name string, s seg, want ...kern.Counter) {
		t.Helper()
		v, _, delta := d.run(s.build())
		checkVerdict(t, v, xdpPass)
		checkCounters(t, delta, append([]kern.Counter{kern.CounterTCP, kern.CounterPass}, want...)...)
		if c := d.mustLeg(clientKey); c.Pin != kern.PinNone {
			t.Fatalf("%s: pinned %q", name, c.Pin)
		}
	}
	w, c := a.w1, a.c
	step("100 Continue", fromWorker(seg{seq: w.PeerHi, ack: a.w0.SndNxt + n, flags: tcpACK | tcpPSH, win: 300,
		opts: nopTS(w.PeerTSval+1, w.OurTSval), payload: cont}), kern.CounterFwdToClient, kern.CounterInterim)
	cSnd := a.c0.SndNxt + uint32(len(cont))
	step("body, acknowledging the 100", fromClient(seg{seq: c.PeerHi, ack: cSnd, flags: tcpACK | tcpPSH, win: 400,
		opts: nopTS(c.PeerTSval+1, a.cOurTSval()+1), payload: body}), kern.CounterFwdToWorker)
	wAck := a.w0.SndNxt + n + uint32(len(body))
	step("final answer", fromWorker(seg{seq: w.PeerHi + uint32(len(cont)), ack: wAck, flags: tcpACK | tcpPSH, win: 300,
		opts: nopTS(w.PeerTSval+2, w.OurTSval+1), payload: final}), kern.CounterFwdToClient)
	cSnd += uint32(len(final))
	next := fromClient(seg{seq: c.PeerHi + uint32(len(body)), ack: cSnd, flags: tcpACK | tcpPSH, win: 400,
		opts: nopTS(c.PeerTSval+2, a.cOurTSval()+2), payload: request2})
	step("next request moves", next, kern.CounterRequest, kern.CounterRemix, kern.CounterFwdToWorker)
	if b, _ := d.bind(clientKey); b.To != worker2Key {
		t.Errorf("client bound to %s after the upload, want W2", b.To)
	}
}

// TestPinnedNeverReleased: idle release needs evidence too: a pinned pair,
// or a client whose last data did not end a write, is not parked.
func TestPinnedNeverReleased(t *testing.T) {
	for _, tc := range []struct {
		name  string
		state func(a *answered)
	}{
		{"pinned client", func(a *answered) { a.c.Pin, a.w1.Pin = kern.PinTLS, kern.PinTLS }},
		{"pinned worker leg", func(a *answered) { a.w1.Pin = kern.PinUpgrade }},
		{"last data did not end a write", func(a *answered) { a.c.Tail = 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			a := quiescentPair(t, d)
			tc.state(&a)
			d.putLeg(clientKey, a.c)
			d.putLeg(workerKey, a.w1)
			if d.ctl(kern.CtlPark, clientKey, 0) {
				t.Fatal("parked")
			}
			if s := d.mustLeg(clientKey).State; s != kern.LegBound {
				t.Errorf("client %s, want bound", s)
			}
		})
	}
}

// nginxAnswer is the head of an nginx answer to a GET, with the Connection
// header it writes (after about 200 bytes of others).
func nginxAnswer(connection string) string {
	return "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Wed, 02 Dec 2026 03:40:00 GMT\r\n" +
		"Content-Type: application/octet-stream\r\nContent-Length: 100\r\n" +
		"Last-Modified: Wed, 02 Dec 2026 02:50:00 GMT\r\nConnection: " + connection + "\r\n" +
		"ETag: \"6a4d-64\"\r\nAccept-Ranges: bytes\r\n\r\n" + strings.Repeat("b", 100)
}
