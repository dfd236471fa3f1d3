package kern_test

// Fixture 1: client legs learned from their handshake, worker SYN-ACKs.

import (
	"testing"

	"github.com/xlb-lb/xlb/kern"
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
