package kern_test

// Fixture 7: malformed packets on a leg's 4-tuple are passed or dropped,
// never translated, and never move the leg; what is not IPv4 TCP passes
// untouched.

import (
	"encoding/binary"
	"testing"

	"github.com/xlb-lb/xlb/kern"
)

// Offsets in frames built without IP options or extension headers.
const ipOff = 14

var tcpOff = ipOff + ipLen

// setTotLen sets the datagram's length (IPv6: payload_len + 40), totLen
// reads it.
func setTotLen(b []byte, n int) {
	if family6 {
		binary.BigEndian.PutUint16(b[ipOff+4:], uint16(n-40))
		return
	}
	binary.BigEndian.PutUint16(b[ipOff+2:], uint16(n))
}

func totLen(b []byte) int {
	if family6 {
		return 40 + int(binary.BigEndian.Uint16(b[ipOff+4:]))
	}
	return int(binary.BigEndian.Uint16(b[ipOff+2:]))
}

func TestMalformed(t *testing.T) {
	c := stdClientLeg()
	data := func(opts []byte, payload []byte, pad int) []byte {
		return fromClient(seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK | tcpPSH, win: 502,
			opts: opts, payload: payload, pad: pad}).build()
	}
	ts := nopTS(c.PeerTSval+1, c.OurTSval)
	// Headers the parser refuses: passed untouched, counted malformed.
	type parseCase struct {
		name string
		in   []byte
	}
	parse := []parseCase{
		{"Ethernet header only", data(ts, request, 0)[:14]},
		{"truncated IP header", data(ts, request, 0)[:ipOff+10]},
		{"tot_len larger than the frame", func() []byte { b := data(ts, request, 0); setTotLen(b, totLen(b)+1); fixChecksums(b); return b }()},
		{"tot_len 0xffff", func() []byte { b := data(ts, request, 0); setTotLen(b, 0xffff); return b }()},
		{"tot_len shorter than IP + TCP headers", func() []byte {
			b := data(ts, nil, 8) // doff 8: 32 bytes of TCP header
			setTotLen(b, ipLen+20)
			return b
		}()},
		{"truncated TCP header", func() []byte { b := data(ts, request, 0)[:tcpOff+12]; setTotLen(b, ipLen+12); return b }()},
		{"doff 4", func() []byte { b := data(ts, request, 0); b[tcpOff+12] = 0x40; return b }()},
		{"doff 0", func() []byte { b := data(ts, request, 0); b[tcpOff+12] = 0x00; return b }()},
		{"doff past the end of the frame", func() []byte { b := data(ts, nil, 0); b[tcpOff+12] = 0xf0; return b }()},
		{"doff past tot_len, inside Ethernet padding", func() []byte { b := data(ts, nil, 40); b[tcpOff+12] = 0xf0; return b }()},
	}
	if family6 {
		parse = append(parse,
			parseCase{"IP version 4 in an IPv6 frame", func() []byte { b := data(ts, request, 0); b[ipOff] = 0x45; return b }()},
			parseCase{"payload_len below the TCP header", func() []byte { b := data(ts, request, 0); setTotLen(b, 40+8); return b }()})
	} else {
		parse = append(parse, []parseCase{
			{"ihl 4", func() []byte { b := data(ts, request, 0); b[ipOff] = 0x44; return b }()},
			{"ihl 0", func() []byte { b := data(ts, request, 0); b[ipOff] = 0x40; return b }()},
			{"IP version 6 in an IPv4 frame", func() []byte { b := data(ts, request, 0); b[ipOff] = 0x65; return b }()},
			{"tot_len below ihl", func() []byte { b := data(ts, request, 0); setTotLen(b, 19); return b }()},
		}...)
	}
	// Options the program must not translate: dropped, counted bad_options.
	badOpts := []struct {
		name string
		opts []byte
	}{
		{"option length runs past the header", cat(ts, []byte{30, 8, 0, 0})},
		{"SACK length runs past the header", cat(ts, optNOP, optNOP, []byte{5, 18}, make([]byte, 10))},
		{"two TS options", cat(ts, ts)},
		{"two TS options, odd layout", cat(optTS(1, 2), optTS(3, 4), optNOP, optNOP, optNOP, optNOP)},
		{"zero-length option", cat([]byte{30, 0, 1, 1}, ts)},
		{"one-byte option length", cat([]byte{30, 1, 1, 1}, ts)},
		{"TS of length 8", cat(optNOP, optNOP, []byte{8, 8, 0, 0, 0, 1, 0, 0}, optNOP, optNOP, optNOP, optNOP)},
		{"SACK of length 12", cat(optNOP, optNOP, []byte{5, 12, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0}, ts)},
		{"SACK of length 2", cat(optNOP, optNOP, []byte{5, 2}, ts)},
		{"MSS of length 3", cat([]byte{2, 3, 5}, optNOP, ts)},
		{"kind without a length byte at the end", cat(ts, optNOP, optNOP, optNOP, []byte{30})},
	}
	setups := []struct {
		name  string
		setup func(d *dataPlane)
	}{
		{"bound pair", func(d *dataPlane) { d.bindPair(clientKey, c, workerKey, stdWorkerLeg()) }},
		{"idle client, idle worker queued", func(d *dataPlane) {
			d.putLeg(clientKey, c)
			d.putLeg(workerKey, stdWorkerLeg())
			d.pushIdle(workerKey)
		}},
	}
	for _, su := range setups {
		// unchanged fails unless every leg, binding and queue entry is
		// exactly as before, last_ns included: nothing looked at the leg.
		snapshot := func(d *dataPlane) (legs [2]kern.Leg, binds [2]kern.Binding) {
			legs[0], legs[1] = d.mustLeg(clientKey), d.mustLeg(workerKey)
			binds[0], _ = d.bind(clientKey)
			binds[1], _ = d.bind(workerKey)
			return
		}
		unchanged := func(t *testing.T, d *dataPlane, legs [2]kern.Leg, binds [2]kern.Binding) {
			t.Helper()
			l, b := snapshot(d)
			if l != legs || b != binds {
				t.Errorf("state changed:\n got  %+v %+v\n want %+v %+v", l, b, legs, binds)
			}
			if su.name != "bound pair" {
				if q := d.idleQueue(); len(q) != 1 || q[0] != workerKey {
					t.Errorf("idle queue %v, want [%s]", q, workerKey)
				}
			}
			checkEvents(t, d.drainEvents())
		}
		for _, tc := range parse {
			t.Run(su.name+"/"+tc.name, func(t *testing.T) {
				d := loadDataPlane(t)
				su.setup(d)
				legs, binds := snapshot(d)
				v, out, delta := d.run(tc.in)
				checkVerdict(t, v, xdpPass)
				checkCounters(t, delta, kern.CounterMalformed, kern.CounterPass)
				if string(out) != string(tc.in) {
					t.Errorf("malformed packet changed:\n got  % x\n want % x", out, tc.in)
				}
				unchanged(t, d, legs, binds)
			})
		}
		for _, tc := range badOpts {
			t.Run(su.name+"/"+tc.name, func(t *testing.T) {
				d := loadDataPlane(t)
				su.setup(d)
				legs, binds := snapshot(d)
				v, _, delta := d.run(data(tc.opts, request, 0))
				checkVerdict(t, v, xdpDrop)
				checkCounters(t, delta, kern.CounterTCP, kern.CounterBadOptions, kern.CounterDrop)
				unchanged(t, d, legs, binds)
			})
		}
	}
}

func TestNotOurs(t *testing.T) {
	c := stdClientLeg()
	leg := fromClient(seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 502, opts: nopTS(c.PeerTSval, c.OurTSval), payload: request}).build()
	withProto := func(proto byte) []byte {
		b := append([]byte(nil), leg...)
		if family6 {
			b[ipOff+6] = proto // next header
			return b
		}
		b[ipOff+9] = proto
		fixChecksums(b)
		binary.BigEndian.PutUint16(b[ipOff+10:], 0)
		binary.BigEndian.PutUint16(b[ipOff+10:], checksum(b[ipOff:tcpOff]))
		return b
	}
	withFrag := func(frag uint16) []byte {
		b := append([]byte(nil), leg...)
		if family6 {
			// A fragment header (8 bytes) before TCP, offset frag.
			b = cat(b[:tcpOff], []byte{6, 0, byte(frag >> 8), byte(frag), 0, 0, 0, 1}, b[tcpOff:])
			b[ipOff+6] = 44
			setTotLen(b, totLen(b)+8)
			return b
		}
		binary.BigEndian.PutUint16(b[ipOff+6:], frag)
		fixChecksums(b)
		return b
	}
	// The other family's ethertype on the frame: its bytes do not parse.
	otherEthertype := map[bool]uint16{false: 0x86dd, true: 0x0800}[family6]
	withEthertype := func(et uint16) []byte {
		b := append([]byte(nil), leg...)
		binary.BigEndian.PutUint16(b[12:], et)
		return b
	}
	tests := []struct {
		name string
		in   []byte
		want []kern.Counter
	}{
		{"ARP", cat(leg[:12], []byte{0x08, 0x06}, make([]byte, 28)), []kern.Counter{kern.CounterNotIPv4, kern.CounterPass}},
		{"the other IP version's ethertype", withEthertype(otherEthertype), []kern.Counter{kern.CounterMalformed, kern.CounterPass}},
		{"VLAN tagged IPv4 (not parsed)", cat(leg[:12], []byte{0x81, 0x00, 0x00, 0x05}, leg[12:]), []kern.Counter{kern.CounterNotIPv4, kern.CounterPass}},
		{"UDP", withProto(17), []kern.Counter{kern.CounterNotTCP, kern.CounterPass}},
		{"ICMP", withProto(1), []kern.Counter{kern.CounterNotTCP, kern.CounterPass}},
		{"first fragment of a leg's segment", withFrag(0x2000), []kern.Counter{kern.CounterNotTCP, kern.CounterPass}},
		{"later fragment", withFrag(0x0010), []kern.Counter{kern.CounterNotTCP, kern.CounterPass}},
		{"TCP to the service, of no leg", seg{src: mustAddrPort("10.0.0.2:40000"), dst: serviceAddr, seq: 1, ack: 1, flags: tcpACK, win: 1, payload: request}.build(),
			[]kern.Counter{kern.CounterTCP, kern.CounterForeign, kern.CounterPass}},
		{"TCP to another port", seg{src: clientAddr, dst: mustAddrPort("10.0.0.100:22"), seq: c.PeerHi, ack: 1, flags: tcpACK, win: 1, payload: request}.build(),
			[]kern.Counter{kern.CounterTCP, kern.CounterForeign, kern.CounterPass}},
		{"RST to the service, of no leg", seg{src: mustAddrPort("10.0.0.2:40000"), dst: serviceAddr, seq: 1, flags: tcpRST}.build(),
			[]kern.Counter{kern.CounterTCP, kern.CounterForeign, kern.CounterPass}},
	}
	if family6 {
		// Extension headers are not walked (parsing.h): a leg's segment
		// behind one is the stack's (IPv4 options are taken: fixture 3).
		ext := fromClient(seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 502, opts: nopTS(c.PeerTSval, c.OurTSval),
			ipOpts: []byte{1, 1, 1, 0}, payload: request}).build()
		tests = append(tests, struct {
			name string
			in   []byte
			want []kern.Counter
		}{"destination options before TCP", ext, []kern.Counter{kern.CounterNotTCP, kern.CounterPass}})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := loadDataPlane(t)
			d.bindPair(clientKey, c, workerKey, stdWorkerLeg())
			before := d.mustLeg(clientKey)
			v, out, delta := d.run(tc.in)
			checkVerdict(t, v, xdpPass)
			checkCounters(t, delta, tc.want...)
			if string(out) != string(tc.in) {
				t.Errorf("packet changed:\n got  % x\n want % x", out, tc.in)
			}
			if after := d.mustLeg(clientKey); after != before {
				t.Errorf("leg changed:\n got  %+v\n want %+v", after, before)
			}
		})
	}
}
