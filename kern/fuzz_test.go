package kern_test

// Fixture 8: mutated packets against a state of two bound pairs, an idle
// client leg and an idle worker leg. Whatever a packet holds, the program
// never aborts, and it changes only the leg its 4-tuple names and that leg's
// partner; every other leg and binding stays as it was. With fix set, the
// mutated packet gets correct checksums first, and then any packet the
// program rewrites must leave with correct checksums too.
//
// go test runs the seed corpus; go test -fuzz FuzzDataPlane ./kern/ mutates.

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
)

var (
	client2Key = kern.LegKey{Peer: mustAddrPort("10.0.0.2:40001"), Local: serviceAddr}
	worker2Key = kern.LegKey{Peer: mustAddrPort("10.0.1.2:8080"), Local: mustAddrPort("10.0.0.100:50001")}
	client3Key = kern.LegKey{Peer: mustAddrPort("10.0.0.3:40002"), Local: serviceAddr}
	worker3Key = kern.LegKey{Peer: mustAddrPort("10.0.1.3:8080"), Local: mustAddrPort("10.0.0.100:50002")}
)

// fuzzState writes the fuzz state: pair A (standard legs after a request and
// its whole answer: the client's next request is a boundary), pair B (legs at
// the wrap, mid-request), idle client leg 3, idle worker leg 3 queued.
func fuzzState(d *dataPlane) {
	a := answeredPair()
	d.putLeg(clientKey, a.c)
	d.putLeg(workerKey, a.w1)
	d.putBind(clientKey, a.toW1)
	d.putBind(workerKey, a.toC)
	p := wrapPair()
	p.w.Worker = 2
	d.bindPair(client2Key, p.c, worker2Key, p.w)
	d.putLeg(client3Key, stdClientLeg())
	w3 := stdWorkerLeg()
	w3.Worker = 3
	d.putLeg(worker3Key, w3)
	d.pushIdle(worker3Key)
	for i, k := range []kern.LegKey{workerKey, worker2Key, worker3Key} {
		d.addWorker(k.Peer, uint32(i+1))
	}
}

// on addresses a segment on leg k (as its peer sends it).
func on(k kern.LegKey, s seg) []byte {
	s.src, s.dst = k.Peer, k.Local
	return s.build()
}

// fuzzSeeds are the fixtures' packets, addressed to the fuzz state's legs.
func fuzzSeeds() [][]byte {
	// Pair A (a, ac, aw) and the idle legs 3 (c, w).
	a, c, w, wp := answeredPair(), stdClientLeg(), stdWorkerLeg(), wrapPair()
	ac, aw := a.c, a.w1
	sack := optSACK([2]uint32{ac.PeerAcked + 1, ac.PeerAcked + 9}, [2]uint32{ac.PeerAcked + 20, ac.PeerAcked + 30})
	boundary := func(f func(s *seg)) []byte {
		s := a.next()
		f(&s)
		return on(clientKey, s)
	}
	seeds := [][]byte{
		// The next request of pair A: a boundary (remix onto worker leg 3),
		// and with each condition failing.
		boundary(func(s *seg) {}),
		boundary(func(s *seg) { s.flags |= tcpFIN }),
		boundary(func(s *seg) { s.seq += 100 }),
		boundary(func(s *seg) { s.ack -= 10 }),
		boundary(func(s *seg) { s.seq -= uint32(len(request)); s.payload = request }),
		// W1 retransmits the tail of its answer.
		on(workerKey, seg{seq: aw.PeerHi - 100, ack: aw.PeerAcked, flags: tcpACK | tcpPSH, win: 300, opts: nopTS(aw.PeerTSval, aw.OurTSval), payload: make([]byte, 100)}),
		on(clientKey, seg{seq: ac.PeerHi, ack: ac.PeerAcked, flags: tcpACK | tcpPSH, win: 502, opts: nopTS(ac.PeerTSval+1, ac.OurTSval), payload: request}),
		on(clientKey, seg{seq: ac.PeerHi, ack: ac.PeerAcked, flags: tcpACK, win: 502, opts: cat(nopTS(ac.PeerTSval, ac.OurTSval), optNOP, optNOP, sack)}),
		on(clientKey, seg{seq: ac.PeerHi, ack: ac.PeerAcked, flags: tcpACK, win: 3000, opts: cat(optNOP, optTS(ac.PeerTSval, ac.OurTSval), optNOP)}),
		on(clientKey, seg{seq: ac.PeerHi, ack: ac.PeerAcked, flags: tcpFIN | tcpACK, win: 502, opts: nopTS(ac.PeerTSval, ac.OurTSval)}),
		on(clientKey, seg{seq: ac.PeerHi, flags: tcpRST}),
		on(clientKey, seg{seq: ac.PeerHi + ac.WinBound + 1, ack: ac.PeerAcked, flags: tcpACK, win: 1, payload: request}),
		on(workerKey, seg{seq: aw.PeerHi, ack: aw.PeerAcked, flags: tcpACK | tcpPSH, win: 128, opts: nopTS(aw.PeerTSval+3, aw.OurTSval), payload: []byte("HTTP/1.1 200 OK\r\n\r\n")}),
		on(workerKey, seg{seq: aw.PeerHi, ack: aw.PeerAcked, flags: tcpACK, win: 128, opts: cat(optNOP, optNOP, optSACK([2]uint32{1, 2}, [2]uint32{3, 4}, [2]uint32{5, 6}, [2]uint32{7, 8}))}),
		on(workerKey, seg{seq: aw.PeerHi, ack: aw.PeerAcked, flags: tcpFIN | tcpACK, win: 128, opts: nopTS(aw.PeerTSval, aw.OurTSval)}),
		on(client2Key, seg{seq: wp.c.PeerHi, ack: wp.c.PeerAcked, flags: tcpACK | tcpPSH, win: 502, opts: nopTS(wp.c.PeerTSval+5, wp.c.OurTSval), payload: make([]byte, 1000)}),
		on(worker2Key, seg{seq: wp.w.PeerHi, ack: wp.w.PeerAcked, flags: tcpACK, win: 128, opts: nopTS(wp.w.PeerTSval, wp.w.OurTSval), payload: make([]byte, 1400)}),
		on(client3Key, seg{seq: c.PeerHi, ack: c.SndNxt, flags: tcpACK | tcpPSH, win: 502, opts: nopTS(c.PeerTSval+7, c.OurTSval), payload: request}),
		on(client3Key, seg{seq: c.PeerHi - 100, ack: c.SndNxt, flags: tcpACK, win: 502, opts: nopTS(c.PeerTSval, c.OurTSval), payload: make([]byte, 100), pad: 6}),
		on(worker3Key, seg{seq: w.PeerHi - 1000, ack: w.SndNxt, flags: tcpACK, win: 128, opts: nopTS(w.PeerTSval, w.OurTSval), payload: make([]byte, 500)}),
		on(worker3Key, seg{seq: w.PeerHi, ack: w.SndNxt, flags: tcpFIN | tcpACK, win: 128, opts: nopTS(w.PeerTSval, w.OurTSval)}),
		on(worker3Key, seg{seq: w.PeerHi, ack: w.SndNxt, flags: tcpSYN | tcpACK, win: 128, opts: linuxSYN(1400, 1, 9)}),
		on(clientKey, seg{seq: ac.PeerHi, ack: ac.PeerAcked, flags: tcpACK, win: 502, opts: nopTS(1, 2), ipOpts: []byte{1, 1, 1, 0}, payload: []byte("odd")}),
		on(clientKey, seg{seq: ac.PeerHi, ack: ac.PeerAcked, flags: tcpACK, win: 502, opts: cat(optTS(1, 2), optTS(3, 4), optNOP, optNOP, optNOP, optNOP)}),
		seg{src: mustAddrPort("10.0.0.9:1234"), dst: serviceAddr, seq: 7, flags: tcpSYN, win: 1, opts: linuxSYN(1460, 1, 7)}.build(),
	}
	return seeds
}

// namedKey is the leg key of the packet's 4-tuple, if it has one.
func namedKey(b []byte) (kern.LegKey, bool) {
	ip, tcp, ok := splitFrame(b)
	if !ok {
		return kern.LegKey{}, false
	}
	src, dst := ipAddrs(ip)
	sp := binary.BigEndian.Uint16(tcp[0:])
	dp := binary.BigEndian.Uint16(tcp[2:])
	return kern.LegKey{Peer: netip.AddrPortFrom(src, sp), Local: netip.AddrPortFrom(dst, dp)}, true
}

type fuzzSnapshot struct {
	legs  map[kern.LegKey]kern.Leg
	binds map[kern.LegKey]kern.Binding
}

// snapshotAll reads every leg (without its clock) and binding.
func (d *dataPlane) snapshotAll() fuzzSnapshot {
	d.t.Helper()
	s := fuzzSnapshot{legs: map[kern.LegKey]kern.Leg{}, binds: map[kern.LegKey]kern.Binding{}}
	each := func(m *ebpf.Map, fn func(k kern.LegKey, v []byte)) {
		err := m.ForEach(func(kb, v []byte) bool {
			var k kern.LegKey
			if err := k.UnmarshalBinary(kb); err != nil {
				d.t.Fatal(err)
			}
			fn(k, v)
			return true
		})
		if err != nil {
			d.t.Fatal(err)
		}
	}
	each(d.objs.Legs, func(k kern.LegKey, v []byte) {
		var l kern.Leg
		l.UnmarshalBinary(v)
		s.legs[k] = noClock(l)
	})
	each(d.objs.Binds, func(k kern.LegKey, v []byte) {
		var b kern.Binding
		b.UnmarshalBinary(v)
		s.binds[k] = b
	})
	return s
}

// checksumsOK reports whether an IP TCP frame carries a valid IPv4 header
// checksum (IPv6 has none) and TCP checksum (full computation over the
// datagram's length).
func checksumsOK(b []byte) bool {
	ip, tcp, ok := splitFrame(b)
	if !ok {
		return false
	}
	return (ip[0]>>4 == 6 || checksum(ip) == 0) && checksum(pseudoHeader(ip, len(tcp)), tcp) == 0
}

func FuzzDataPlane(f *testing.F) {
	for i, s := range fuzzSeeds() {
		f.Add(s, i%2 == 0)
	}
	f.Fuzz(func(t *testing.T, frame []byte, fix bool) {
		if len(frame) < 14 {
			return // BPF_PROG_TEST_RUN refuses frames shorter than Ethernet
		}
		d := loadDataPlane(t)
		fuzzState(d)
		if fix {
			fixChecksums(frame)
		}
		in := append([]byte(nil), frame...)
		validIn := checksumsOK(in)
		before := d.snapshotAll()

		v, out, delta := d.run(frame)
		switch v {
		case xdpDrop, xdpPass, xdpTX:
		default:
			t.Fatalf("verdict %s on\n% x", verdictName(v), in)
		}
		if delta[kern.CounterAborted] != 0 {
			t.Errorf("aborted counter moved")
		}
		if validIn && (v == xdpPass || v == xdpTX) && string(out) != string(in) && !checksumsOK(out) {
			t.Errorf("valid checksums in, invalid out (%s):\n in  % x\n out % x", verdictName(v), in, out)
		}

		after := d.snapshotAll()
		allowed := map[kern.LegKey]bool{}
		if k, ok := namedKey(in); ok {
			allowed[k] = true
			if b, ok := before.binds[k]; ok {
				allowed[b.To] = true
			}
			if b, ok := after.binds[k]; ok {
				allowed[b.To] = true
			}
		}
		for k, l := range before.legs {
			if a, ok := after.legs[k]; (!ok || a != l) && !allowed[k] {
				t.Errorf("leg %s changed by a packet of another leg:\n before %+v\n after  %+v (present %v)\n packet % x", k, l, a, ok, in)
			}
		}
		for k, l := range after.legs {
			if _, ok := before.legs[k]; !ok && !allowed[k] {
				t.Errorf("leg %s appeared: %+v\n packet % x", k, l, in)
			}
		}
		for k, b := range before.binds {
			if a, ok := after.binds[k]; (!ok || a != b) && !allowed[k] {
				t.Errorf("binding %s changed by a packet of another leg:\n before %+v\n after  %+v (present %v)", k, b, a, ok)
			}
		}
		for k, b := range after.binds {
			if _, ok := before.binds[k]; !ok && !allowed[k] {
				t.Errorf("binding %s appeared: %+v", k, b)
			}
		}
		if !allowed[worker3Key] {
			if q := d.idleQueue(); len(q) != 1 || q[0] != worker3Key {
				t.Errorf("idle queue %v, want [%s]", q, worker3Key)
			}
		}
	})
}
