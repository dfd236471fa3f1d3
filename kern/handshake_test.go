package kern_test

// Fixture 1: client legs learned from their handshake, worker SYN-ACKs.

import (
	"testing"

	"github.com/xlb-lb/xlb/kern"
	"github.com/xlb-lb/xlb/testnet"
)

func TestHandshakeLearning(t *testing.T) {
	const isn, ourISN = 0xfffffff0, 77_000_000 // the client's ISN wraps on its first bytes
	tests := []struct {
		name     string
		synOpts  []byte
		ackOpts  []byte
		wantHS   kern.Handshake
		wantLeg  kern.Leg
		ackWin   uint16
		ackPayld []byte
	}{
		{
			name:    "linux SYN, TS on the ACK",
			synOpts: linuxSYN(1460, 1000, 7),
			ackOpts: nopTS(1010, 5555),
			ackWin:  502,
			wantHS:  kern.Handshake{PeerISN: isn, PeerTSval: 1000, PeerMSS: 1460, PeerWScale: 7, Opts: kern.OptTS | kern.OptSACK | kern.OptWScale},
			wantLeg: kern.Leg{Kind: kern.LegClient, PeerWScale: 7, OurWScale: 7,
				Opts:    kern.OptSACK | kern.OptWScale | kern.OptTS | kern.OptPeerTS,
				PeerMSS: 1460, OurMSS: 1460, WinBound: winBound(7, 7),
				PeerHi: isn + 1, PeerAcked: ourISN + 1, PeerTSval: 1010, PeerWin: 502,
				SndNxt: ourISN + 1, OurTSval: 5555, SndWin: 0xffff >> 7, State: kern.LegIdle},
		},
		{
			name:    "no window scale: both scales 0",
			synOpts: cat(optMSS(536), optSACKPerm, optTS(1000, 0)),
			ackOpts: nopTS(1010, 5555),
			ackWin:  29200,
			wantHS:  kern.Handshake{PeerISN: isn, PeerTSval: 1000, PeerMSS: 536, PeerWScale: kern.NoWScale, Opts: kern.OptTS | kern.OptSACK},
			wantLeg: kern.Leg{Kind: kern.LegClient, Opts: kern.OptSACK | kern.OptTS | kern.OptPeerTS,
				PeerMSS: 536, OurMSS: 1460, WinBound: winBound(0, 0),
				PeerHi: isn + 1, PeerAcked: ourISN + 1, PeerTSval: 1010, PeerWin: 29200,
				SndNxt: ourISN + 1, OurTSval: 5555, SndWin: 0xffff, State: kern.LegIdle},
		},
		{
			name:    "no timestamps, no SACK, scale 14 clamps",
			synOpts: cat(optMSS(1400), optNOP, optWS(14)),
			ackWin:  100,
			wantHS:  kern.Handshake{PeerISN: isn, PeerMSS: 1400, PeerWScale: 14, Opts: kern.OptWScale},
			wantLeg: kern.Leg{Kind: kern.LegClient, PeerWScale: 14, OurWScale: 7, Opts: kern.OptWScale,
				PeerMSS: 1400, OurMSS: 1460, WinBound: winBound(14, 7),
				PeerHi: isn + 1, PeerAcked: ourISN + 1, PeerWin: 100,
				SndNxt: ourISN + 1, SndWin: 0xffff >> 7, State: kern.LegIdle},
		},
		{
			name:     "handshake ACK carrying data: payload cut",
			synOpts:  linuxSYN(1460, 1000, 7),
			ackOpts:  nopTS(1010, 5555),
			ackWin:   502,
			ackPayld: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
			wantHS:   kern.Handshake{PeerISN: isn, PeerTSval: 1000, PeerMSS: 1460, PeerWScale: 7, Opts: kern.OptTS | kern.OptSACK | kern.OptWScale},
			wantLeg: kern.Leg{Kind: kern.LegClient, PeerWScale: 7, OurWScale: 7,
				Opts:    kern.OptSACK | kern.OptWScale | kern.OptTS | kern.OptPeerTS,
				PeerMSS: 1460, OurMSS: 1460, WinBound: winBound(7, 7),
				PeerHi: isn + 1, PeerAcked: ourISN + 1, PeerTSval: 1010, PeerWin: 502,
				SndNxt: ourISN + 1, OurTSval: 5555, SndWin: 0xffff >> 7, State: kern.LegIdle},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)

			syn := fromClient(seg{seq: isn, flags: tcpSYN, win: 64240, opts: tc.synOpts}).build()
			v, out, delta := d.run(syn)
			checkVerdict(t, v, xdpPass)
			if string(out) != string(syn) {
				t.Errorf("SYN was changed:\n got  % x\n want % x", out, syn)
			}
			checkCounters(t, delta, kern.CounterTCP, kern.CounterSyn, kern.CounterPass)
			hs, ok := d.handshake(clientKey)
			if !ok {
				t.Fatal("SYN not recorded in the handshake map")
			}
			hs.Ns = 0
			if hs != tc.wantHS {
				t.Errorf("handshake:\n got  %+v\n want %+v", hs, tc.wantHS)
			}
			if _, ok := d.leg(clientKey); ok {
				t.Error("a leg exists before the handshake completed")
			}

			ack := fromClient(seg{seq: isn + 1, ack: ourISN + 1, flags: tcpACK, win: tc.ackWin,
				opts: tc.ackOpts, payload: tc.ackPayld}).build()
			v, out, delta = d.run(ack)
			checkVerdict(t, v, xdpPass)
			if tc.ackPayld == nil {
				checkCounters(t, delta, kern.CounterTCP, kern.CounterClientLeg, kern.CounterPass)
				if string(out) != string(ack) {
					t.Errorf("handshake ACK was changed:\n got  % x\n want % x", out, ack)
				}
			} else {
				checkCounters(t, delta, kern.CounterTCP, kern.CounterClientLeg, kern.CounterHSData, kern.CounterPass)
				in, got := mustParse(t, ack), mustParse(t, out)
				if len(got.payload) != 0 {
					t.Errorf("payload of %d bytes left on the handshake ACK", len(got.payload))
				}
				if got.totLen != in.totLen-len(tc.ackPayld) || len(out) != len(ack)-len(tc.ackPayld) {
					t.Errorf("tot_len %d, frame %d bytes; want %d, %d", got.totLen, len(out), in.totLen-len(tc.ackPayld), len(ack)-len(tc.ackPayld))
				}
				if got.seq != in.seq || got.ack != in.ack || got.flags != in.flags || got.win != in.win ||
					got.src != in.src || got.dst != in.dst || string(got.opts) != string(in.opts) {
					t.Errorf("header changed beyond the payload cut:\n got  %+v\n want %+v", got, in)
				}
			}
			checkLeg(t, "client leg", d.mustLeg(clientKey), tc.wantLeg)
			if _, ok := d.handshake(clientKey); ok {
				t.Error("handshake entry left behind after the leg was made")
			}
			// No event: user space adopts the client when it accepts it
			// (a ring record a connection cost more than it told).
			checkEvents(t, d.drainEvents())

			// A second ACK (duplicate) does not make another leg nor an event.
			// (The leg exists now: it is an ACK on an idle client leg.)
			v, _, delta = d.run(fromClient(seg{seq: isn + 1, ack: ourISN + 1, flags: tcpACK, win: tc.ackWin, opts: tc.ackOpts}).build())
			checkVerdict(t, v, xdpDrop)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterUnboundACK, kern.CounterDrop)
			checkEvents(t, d.drainEvents())
		})
	}
}

// An ACK whose seq is not the SYN's ISN + 1, or with no SYN seen, makes no leg.
func TestHandshakeACKMismatch(t *testing.T) {
	d := loadDataPlane(t)
	v, _, delta := d.run(fromClient(seg{seq: 100, ack: 200, flags: tcpACK, win: 1}).build())
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterForeign, kern.CounterPass)

	d.run(fromClient(seg{seq: 100, flags: tcpSYN, win: 1, opts: linuxSYN(1460, 1, 7)}).build())
	v, _, delta = d.run(fromClient(seg{seq: 5000, ack: 200, flags: tcpACK, win: 1}).build())
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterForeign, kern.CounterPass)
	if _, ok := d.leg(clientKey); ok {
		t.Error("a leg was made from an ACK that does not follow the SYN")
	}
	checkEvents(t, d.drainEvents())
}

func TestHandshakeNotService(t *testing.T) {
	d := loadDataPlane(t)
	for _, dst := range []string{"10.0.0.100:81", "10.0.0.99:80"} {
		s := seg{src: clientAddr, dst: mustAddrPort(dst), seq: 1, flags: tcpSYN, win: 1, opts: linuxSYN(1460, 1, 7)}
		v, _, delta := d.run(s.build())
		checkVerdict(t, v, xdpPass)
		checkCounters(t, delta, kern.CounterTCP, kern.CounterForeign, kern.CounterPass)
		if _, ok := d.handshake(kern.LegKey{Peer: clientAddr, Local: mustAddrPort(dst)}); ok {
			t.Errorf("SYN to %s (not the service) was learned", dst)
		}
	}
}

func TestWorkerSynAckLearned(t *testing.T) {
	d := loadDataPlane(t)
	d.addWorker(workerAddr, 1)
	const wISN, ourISN = 900, 0 // our ISN 0: ack 1, our_isn = ack - 1
	synack := fromWorker(seg{seq: wISN, ack: ourISN + 1, flags: tcpSYN | tcpACK, win: 65160,
		opts: linuxSYN(1400, 4242, 9)}).build()
	v, out, delta := d.run(synack)
	checkVerdict(t, v, xdpPass)
	if string(out) != string(synack) {
		t.Error("SYN-ACK was changed")
	}
	checkCounters(t, delta, kern.CounterTCP, kern.CounterWorkerSynack, kern.CounterPass)
	hs, ok := d.handshake(workerKey)
	if !ok {
		t.Fatal("worker SYN-ACK not recorded")
	}
	hs.Ns = 0
	want := kern.Handshake{PeerISN: wISN, PeerTSval: 4242, PeerMSS: 1400, PeerWScale: 9,
		Opts: kern.OptTS | kern.OptSACK | kern.OptWScale, OurISN: ourISN}
	if hs != want {
		t.Errorf("handshake:\n got  %+v\n want %+v", hs, want)
	}

	// The same SYN-ACK from an address that is not a worker is foreign.
	other := seg{src: mustAddrPort("10.0.1.2:8080"), dst: poolAddr, seq: 1, ack: 1, flags: tcpSYN | tcpACK, win: 1, opts: linuxSYN(1400, 1, 9)}
	v, _, delta = d.run(other.build())
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterForeign, kern.CounterPass)
	if _, ok := d.handshake(kern.LegKey{Peer: other.src, Local: other.dst}); ok {
		t.Error("SYN-ACK of a non-worker was learned")
	}
}

// answeringConfig is the default config with the program answering SYNs.
var answeringConfig = func() kern.Config {
	c := defaultConfig
	c.Flags |= kern.ConfigAnswerSyn
	return c
}()

// TestAnsweredHandshake: with CFG_ANSWER_SYN the program turns the client's
// SYN into our SYN-ACK (the options the client offered, answered as the
// listener would), keeps its ISN for a retransmitted SYN, and makes the leg
// from the ACK that answers it, which the stack never sees.
func TestAnsweredHandshake(t *testing.T) {
	const isn = 0xfffffff0
	tests := []struct {
		name    string
		synOpts []byte
		// what the SYN-ACK must offer
		sack, ts, ws bool
		wantLeg      func(ourISN, ourTS uint32) kern.Leg
	}{
		{
			name: "linux SYN", synOpts: linuxSYN(1460, 1000, 7), sack: true, ts: true, ws: true,
			wantLeg: func(ourISN, ourTS uint32) kern.Leg {
				return kern.Leg{Kind: kern.LegClient, PeerWScale: 7, OurWScale: 7,
					Opts:    kern.OptSACK | kern.OptWScale | kern.OptTS | kern.OptPeerTS,
					PeerMSS: 1460, OurMSS: 1460, WinBound: winBound(7, 7),
					PeerHi: isn + 1, PeerAcked: ourISN + 1, PeerTSval: 1010, PeerWin: 502,
					SndNxt: ourISN + 1, OurTSval: ourTS, SndWin: 0xffff >> 7, State: kern.LegIdle}
			},
		},
		{
			name: "MSS only: no SACK, no timestamps, no scaling", synOpts: optMSS(536),
			wantLeg: func(ourISN, ourTS uint32) kern.Leg {
				return kern.Leg{Kind: kern.LegClient, PeerMSS: 536, OurMSS: 1460, WinBound: winBound(0, 0),
					PeerHi: isn + 1, PeerAcked: ourISN + 1, PeerWin: 502,
					SndNxt: ourISN + 1, SndWin: 0xffff, State: kern.LegIdle}
			},
		},
		{
			name: "no options at all: the frame grows", synOpts: nil,
			wantLeg: func(ourISN, ourTS uint32) kern.Leg {
				return kern.Leg{Kind: kern.LegClient, OurMSS: 1460, WinBound: winBound(0, 0),
					PeerHi: isn + 1, PeerAcked: ourISN + 1, PeerWin: 502,
					SndNxt: ourISN + 1, SndWin: 0xffff, State: kern.LegIdle}
			},
		},
		{
			name: "SACK and scale, no timestamps", synOpts: cat(optMSS(1400), optSACKPerm, optNOP, optWS(14)), sack: true, ws: true,
			wantLeg: func(ourISN, ourTS uint32) kern.Leg {
				return kern.Leg{Kind: kern.LegClient, PeerWScale: 14, OurWScale: 7, Opts: kern.OptSACK | kern.OptWScale,
					PeerMSS: 1400, OurMSS: 1460, WinBound: winBound(14, 7),
					PeerHi: isn + 1, PeerAcked: ourISN + 1, PeerWin: 502,
					SndNxt: ourISN + 1, SndWin: 0xffff >> 7, State: kern.LegIdle}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			d.setConfig(answeringConfig)

			syn := fromClient(seg{seq: isn, flags: tcpSYN, win: 64240, opts: tc.synOpts}).build()
			v, out, delta := d.run(syn)
			checkVerdict(t, v, xdpTX)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterSyn, kern.CounterSynAnswered, kern.CounterTX)
			in, sa := mustParse(t, syn), mustParse(t, out)
			hs, ok := d.handshake(clientKey)
			if !ok {
				t.Fatal("answered SYN not recorded in the handshake map")
			}
			check := func(name string, got, want any) {
				t.Helper()
				if got != want {
					t.Errorf("SYN-ACK %s: got %v, want %v", name, got, want)
				}
			}
			check("eth dst", sa.ethDst, in.ethSrc)
			check("eth src", sa.ethSrc, in.ethDst)
			check("source", sa.src, serviceAddr)
			check("destination", sa.dst, clientAddr)
			check("flags", sa.flags, uint8(tcpSYN|tcpACK))
			check("seq", sa.seq, hs.OurISN)
			check("ack", sa.ack, uint32(isn+1))
			check("window", sa.win, uint16(0xffff))
			check("payload bytes", len(sa.payload), 0)
			check("frame length", len(out), 14+ipLen+40)
			check("handshake flags", hs.Flags, uint32(kern.HSAnswered))
			mss, sack, ws, wsOK := optionsOf(t, sa.opts)
			check("MSS", mss, defaultConfig.OurMSS)
			check("SACK permitted", sack, tc.sack)
			check("timestamps", sa.hasTS, tc.ts)
			check("window scale offered", wsOK, tc.ws)
			if tc.ws {
				check("window scale", ws, defaultConfig.OurWScale)
			}
			if tc.ts {
				check("TSecr", sa.tsecr, in.tsval)
			}

			// The SYN again (our SYN-ACK was lost): the same ISN.
			_, out2, _ := d.run(syn)
			if again := mustParse(t, out2); again.seq != sa.seq {
				t.Errorf("retransmitted SYN answered with ISN %#x, first %#x", again.seq, sa.seq)
			}

			// An ACK that does not answer our SYN-ACK makes nothing.
			v, _, delta = d.run(fromClient(seg{seq: isn + 1, ack: sa.seq + 2, flags: tcpACK, win: 502}).build())
			checkVerdict(t, v, xdpPass)
			checkCounters(t, delta, kern.CounterTCP, kern.CounterForeign, kern.CounterPass)
			if _, ok := d.leg(clientKey); ok {
				t.Fatal("a leg was made from an ACK of another ISN")
			}

			var ackOpts []byte
			if tc.ts {
				ackOpts = nopTS(1010, sa.tsval)
			}
			ack := fromClient(seg{seq: isn + 1, ack: sa.seq + 1, flags: tcpACK, win: 502, opts: ackOpts}).build()
			v, _, delta = d.run(ack)
			checkVerdict(t, v, xdpDrop) // the stack must not see it: the handshake was ours
			checkCounters(t, delta, kern.CounterTCP, kern.CounterClientLeg, kern.CounterDrop)
			checkLeg(t, "client leg", d.mustLeg(clientKey), tc.wantLeg(sa.seq, sa.tsval))
			if _, ok := d.handshake(clientKey); ok {
				t.Error("handshake entry left behind after the leg was made")
			}
			checkEvents(t, d.drainEvents())
		})
	}
}

// optionsOf reads MSS, SACK permitted and window scale from SYN options.
func optionsOf(t testing.TB, opts []byte) (mss uint16, sack bool, ws uint8, wsOK bool) {
	t.Helper()
	for i := 0; i < len(opts); {
		switch opts[i] {
		case 0:
			return
		case 1:
			i++
			continue
		}
		if i+1 >= len(opts) || int(opts[i+1]) < 2 || i+int(opts[i+1]) > len(opts) {
			t.Fatalf("bad options % x", opts)
		}
		o := opts[i : i+int(opts[i+1])]
		switch o[0] {
		case 2:
			mss = uint16(o[2])<<8 | uint16(o[3])
		case 3:
			ws, wsOK = o[2], true
		case 4:
			sack = true
		}
		i += len(o)
	}
	return
}

// TestAnsweredHandshakeACKWithData: the pure ACK was lost and the first data
// segment completes the handshake: the leg is made and the request goes to
// a worker leg in the same pass, no retransmission needed.
func TestAnsweredHandshakeACKWithData(t *testing.T) {
	const isn = 5000
	d := loadDataPlane(t)
	d.setConfig(answeringConfig)
	w := stdWorkerLeg()
	d.putLeg(workerKey, w)
	d.pushIdle(workerKey)

	_, out, _ := d.run(fromClient(seg{seq: isn, flags: tcpSYN, win: 64240, opts: linuxSYN(1460, 1000, 7)}).build())
	sa := mustParse(t, out)
	in := fromClient(seg{seq: isn + 1, ack: sa.seq + 1, flags: tcpACK | tcpPSH, win: 502,
		opts: nopTS(1010, sa.tsval), payload: request}).build()
	v, out, delta := d.run(in)
	checkVerdict(t, v, xdpPass)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterClientLeg, kern.CounterBind, kern.CounterFwdToWorker, kern.CounterPass)
	c := d.mustLeg(clientKey)
	if c.State != kern.LegBound || c.PeerHi != isn+1+uint32(len(request)) || c.Requests != 1 {
		t.Errorf("client leg after its first data: state %v, peer_hi %d (want %d), requests %d", c.State, c.PeerHi, isn+1+len(request), c.Requests)
	}
	b, ok := d.bind(clientKey)
	if !ok {
		t.Fatal("client leg not bound")
	}
	checkTranslated(t, in, out, b)
	checkEvents(t, d.drainEvents())
}

// TestAnsweredHandshakeTableFull: a handshake the program answered, whose
// ACK finds no room in the leg table, gets a reset; nothing is left behind.
func TestAnsweredHandshakeTableFull(t *testing.T) {
	const isn = 9000
	d := loadDataPlane(t)
	t.Cleanup(d.reset)
	d.setConfig(answeringConfig)
	_, out, _ := d.run(fromClient(seg{seq: isn, flags: tcpSYN, win: 64240, opts: linuxSYN(1460, 1000, 7)}).build())
	sa := mustParse(t, out)

	d.fillLegs()
	in := fromClient(seg{seq: isn + 1, ack: sa.seq + 1, flags: tcpACK, win: 502, opts: nopTS(1010, sa.tsval)}).build()
	v, out, delta := d.run(in)
	checkVerdict(t, v, xdpTX)
	checkCounters(t, delta, kern.CounterTCP, kern.CounterLegsFull, kern.CounterTX)
	rst := mustParse(t, out)
	if rst.flags != tcpRST || rst.seq != sa.seq+1 || rst.dst != clientAddr || rst.src != serviceAddr {
		t.Errorf("answer to a handshake with no room: flags %#x seq %#x %v -> %v; want a RST, seq %#x, to the client",
			rst.flags, rst.seq, rst.src, rst.dst, sa.seq+1)
	}
	if _, ok := d.leg(clientKey); ok {
		t.Error("a leg was made in a full table")
	}
	if _, ok := d.handshake(clientKey); ok {
		t.Error("handshake entry left behind")
	}
}

// TestHandshakeTableSize: the table of handshakes under way is a quarter of
// the leg table (--max-legs), never below the object's default.
func TestHandshakeTableSize(t *testing.T) {
	testnet.RequireRoot(t)
	for _, tc := range []struct{ legs, want uint32 }{{4096, 16384}, {262144, 65536}} {
		objs, err := kern.LoadWith(kern.LoadOptions{MaxLegs: tc.legs})
		if err != nil {
			t.Fatal(err)
		}
		got := objs.Handshakes.MaxEntries()
		objs.Close()
		if got != tc.want {
			t.Errorf("--max-legs %d: handshake table of %d, want %d", tc.legs, got, tc.want)
		}
	}
}
