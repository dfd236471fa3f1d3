package kern_test

// Packets for the data-plane fixtures: a builder for Ethernet + IP + TCP
// segments with options, a strict parser for what the program hands back, and
// an Internet checksum written from RFC 1071 without looking at csum.h, so that
// the program's incremental checksums are checked against an independent full
// computation.
//
// The fixtures run over IPv4, or, with XLB_KERN_FAMILY=6 (make test runs
// both), over IPv6: every address they name, a.b.c.d, becomes
// 2001:db8::a.b.c.d (mustAddrPort), the builder makes IPv6 frames of IPv6
// addresses (IPv4 options become a destination options header), and the
// parser reads either, so that the same fixtures check xlb6.o's programs.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"testing"
)

// family6: the fixtures run over IPv6 (XLB_KERN_FAMILY=6).
var family6 = os.Getenv("XLB_KERN_FAMILY") == "6"

// ipLen is the length of the IP header of a frame built without options.
var ipLen = map[bool]int{false: 20, true: 40}[family6]

// mustAddrPort parses an address of the fixtures: IPv4 as written, or
// under family6 2001:db8::/96 with the IPv4 address in its last four bytes.
func mustAddrPort(s string) netip.AddrPort {
	ap := netip.MustParseAddrPort(s)
	if !ap.Addr().Is4() {
		return ap
	}
	return netip.AddrPortFrom(fixtureAddr(ap.Addr()), ap.Port())
}

// fixtureAddr is IPv4 address a as the fixtures use it: itself, or under
// family6 its IPv6 counterpart.
func fixtureAddr(a netip.Addr) netip.Addr {
	if family6 {
		return to6(a)
	}
	return a
}

// to6 is the IPv6 address of the fixtures for IPv4 address a.
func to6(a netip.Addr) netip.Addr {
	b := [16]byte{0x20, 0x01, 0x0d, 0xb8}
	a4 := a.As4()
	copy(b[12:], a4[:])
	return netip.AddrFrom16(b)
}

// v4Only skips a test that is about IPv4 itself (its header's fields) in an
// IPv6 run.
func v4Only(t testing.TB) {
	t.Helper()
	if family6 {
		t.Skip("about IPv4 headers: not run over IPv6")
	}
}

// TCP flags (byte 13 of the header).
const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpPSH = 0x08
	tcpACK = 0x10
)

// XDP verdicts (enum xdp_action).
const (
	xdpAborted = 0
	xdpDrop    = 1
	xdpPass    = 2
	xdpTX      = 3
)

var verdictNames = map[uint32]string{xdpAborted: "XDP_ABORTED", xdpDrop: "XDP_DROP", xdpPass: "XDP_PASS", xdpTX: "XDP_TX", 4: "XDP_REDIRECT"}

func verdictName(v uint32) string {
	if n, ok := verdictNames[v]; ok {
		return n
	}
	return fmt.Sprintf("verdict(%d)", v)
}

var (
	macA = [6]byte{0x02, 0, 0, 0, 0, 0x0a}
	macB = [6]byte{0x02, 0, 0, 0, 0, 0x0b}
)

// seg describes one segment to build. Options are raw bytes; the builder pads
// them with EOL to a multiple of 4 (doff counts 32-bit words).
type seg struct {
	src, dst netip.AddrPort
	seq, ack uint32
	flags    uint8
	win      uint16
	opts     []byte
	payload  []byte
	ipOpts   []byte // IPv4 options (multiple of 4)
	pad      int    // Ethernet padding after the IP datagram
}

// build returns the frame with correct IP header and TCP checksums.
func (s seg) build() []byte {
	opts := append([]byte(nil), s.opts...)
	for len(opts)%4 != 0 {
		opts = append(opts, 0)
	}
	if s.src.Addr().Is6() {
		return s.build6(opts)
	}
	ipLen := 20 + len(s.ipOpts)
	tcpLen := 20 + len(opts)
	tot := ipLen + tcpLen + len(s.payload)
	b := make([]byte, 14+tot+s.pad)
	copy(b[0:6], macB[:])
	copy(b[6:12], macA[:])
	binary.BigEndian.PutUint16(b[12:], 0x0800)

	ip := b[14 : 14+ipLen]
	ip[0] = 0x40 | byte(ipLen/4)
	ip[1] = 0 // tos
	binary.BigEndian.PutUint16(ip[2:], uint16(tot))
	binary.BigEndian.PutUint16(ip[4:], 0x1234) // id
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	ip[8] = 64
	ip[9] = 6
	src, dst := s.src.Addr().As4(), s.dst.Addr().As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	copy(ip[20:], s.ipOpts)

	s.putTCP(b[14+ipLen:14+tot], opts)
	fixChecksums(b)
	return b
}

// putTCP writes the TCP header (options opts, padded) and payload into tcp.
func (s seg) putTCP(tcp, opts []byte) {
	tcpLen := 20 + len(opts)
	binary.BigEndian.PutUint16(tcp[0:], s.src.Port())
	binary.BigEndian.PutUint16(tcp[2:], s.dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], s.seq)
	binary.BigEndian.PutUint32(tcp[8:], s.ack)
	tcp[12] = byte(tcpLen/4) << 4
	tcp[13] = s.flags
	binary.BigEndian.PutUint16(tcp[14:], s.win)
	copy(tcp[20:], opts)
	copy(tcp[tcpLen:], s.payload)
}

// build6 is build for IPv6 addresses: ipOpts, if any, become a destination
// options header of Pad1 options, as long as they rounded up to 8 bytes.
func (s seg) build6(opts []byte) []byte {
	ext := 0
	if len(s.ipOpts) > 0 {
		ext = (len(s.ipOpts) + 2 + 7) / 8 * 8
	}
	tcpLen := 20 + len(opts)
	tot := 40 + ext + tcpLen + len(s.payload)
	b := make([]byte, 14+tot+s.pad)
	copy(b[0:6], macB[:])
	copy(b[6:12], macA[:])
	binary.BigEndian.PutUint16(b[12:], 0x86dd)
	ip := b[14:]
	ip[0] = 0x60
	ip[1], ip[2], ip[3] = 0x0a, 0xbc, 0xde // a flow label the program must clear
	binary.BigEndian.PutUint16(ip[4:], uint16(tot-40))
	ip[6] = 6
	ip[7] = 64
	src, dst := s.src.Addr().As16(), s.dst.Addr().As16()
	copy(ip[8:24], src[:])
	copy(ip[24:40], dst[:])
	if ext > 0 {
		ip[6] = 60 // destination options
		ip[40] = 6
		ip[41] = byte(ext/8 - 1)
	}
	s.putTCP(ip[40+ext:tot], opts)
	fixChecksums(b)
	return b
}

// ip6Walk finds TCP in an IPv6 datagram (ip from its header on, n bytes
// long by payload_len): the offset of the TCP header after hop-by-hop and
// destination options headers; -1 if there is no TCP header there.
func ip6Walk(ip []byte, n int) int {
	off, next := 40, ip[6]
	for next == 0 || next == 60 {
		if off+2 > n {
			return -1
		}
		next = ip[off]
		off += (int(ip[off+1]) + 1) * 8
	}
	if next != 6 || off+20 > n {
		return -1
	}
	return off
}

// splitFrame finds the IP header and the TCP segment (to the datagram's
// end) of an IPv4 or IPv6 TCP frame; ok false if it has none that fits.
func splitFrame(b []byte) (ip, tcp []byte, ok bool) {
	switch {
	case len(b) >= 14+40 && binary.BigEndian.Uint16(b[12:]) == 0x86dd && b[14]>>4 == 6:
		n := 40 + int(binary.BigEndian.Uint16(b[18:]))
		if 14+n > len(b) {
			return nil, nil, false
		}
		off := ip6Walk(b[14:], n)
		if off < 0 {
			return nil, nil, false
		}
		return b[14 : 14+off], b[14+off : 14+n], true
	case len(b) >= 14+20 && binary.BigEndian.Uint16(b[12:]) == 0x0800:
		ihl := int(b[14]&0x0f) * 4
		tot := int(binary.BigEndian.Uint16(b[16:]))
		if ihl < 20 || tot < ihl+20 || 14+tot > len(b) || b[14+9] != 6 {
			return nil, nil, false
		}
		return b[14 : 14+ihl], b[14+ihl : 14+tot], true
	}
	return nil, nil, false
}

// ipAddrs are the source and destination of an IP header (either family).
func ipAddrs(ip []byte) (src, dst netip.Addr) {
	if ip[0]>>4 == 6 {
		return netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
	}
	return netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
}

// fixChecksums recomputes the IP header and TCP checksums of a frame in place
// (full computation). It does nothing to frames it cannot parse.
func fixChecksums(b []byte) {
	if len(b) >= 14+40 && binary.BigEndian.Uint16(b[12:]) == 0x86dd {
		ip := b[14:]
		n := 40 + int(binary.BigEndian.Uint16(ip[4:]))
		off := ip6Walk(ip, n)
		if n > len(ip) || off < 0 {
			return
		}
		tcp := ip[off:n]
		tcp[16], tcp[17] = 0, 0
		binary.BigEndian.PutUint16(tcp[16:], checksum(pseudoHeader(ip, len(tcp)), tcp))
		return
	}
	if len(b) < 14+20 || binary.BigEndian.Uint16(b[12:]) != 0x0800 {
		return
	}
	ihl := int(b[14]&0x0f) * 4
	tot := int(binary.BigEndian.Uint16(b[16:]))
	if ihl < 20 || tot < ihl+20 || 14+tot > len(b) || b[14+9] != 6 {
		return
	}
	ip := b[14 : 14+ihl]
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	tcp := b[14+ihl : 14+tot]
	tcp[16], tcp[17] = 0, 0
	binary.BigEndian.PutUint16(tcp[16:], checksum(pseudoHeader(ip, len(tcp)), tcp))
}

// checksum is the Internet checksum (RFC 1071) of the concatenation of parts:
// the one's complement of the one's-complement sum of 16-bit big-endian words.
func checksum(parts ...[]byte) uint16 {
	data := bytes.Join(parts, nil)
	var sum uint64
	for i := 0; i+1 < len(data); i += 2 {
		sum += uint64(data[i])<<8 | uint64(data[i+1])
	}
	if len(data)%2 == 1 {
		sum += uint64(data[len(data)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// pseudoHeader is TCP's pseudo header for the IP header ip (either family).
func pseudoHeader(ip []byte, tcpLen int) []byte {
	if ip[0]>>4 == 6 {
		ph := make([]byte, 40)
		copy(ph[0:32], ip[8:40])
		binary.BigEndian.PutUint32(ph[32:], uint32(tcpLen))
		ph[39] = 6
		return ph
	}
	ph := make([]byte, 12)
	copy(ph[0:8], ip[12:20])
	ph[9] = 6
	binary.BigEndian.PutUint16(ph[10:], uint16(tcpLen))
	return ph
}

// Options. Layouts are the caller's: ts() alone is 10 bytes, the usual
// NOP NOP TS layout is nopnop(ts(...)).
func optTS(tsval, tsecr uint32) []byte {
	o := []byte{8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(o[2:], tsval)
	binary.BigEndian.PutUint32(o[6:], tsecr)
	return o
}

func optSACK(blocks ...[2]uint32) []byte {
	o := []byte{5, byte(2 + 8*len(blocks))}
	for _, bl := range blocks {
		o = binary.BigEndian.AppendUint32(o, bl[0])
		o = binary.BigEndian.AppendUint32(o, bl[1])
	}
	return o
}

func optMSS(mss uint16) []byte { return []byte{2, 4, byte(mss >> 8), byte(mss)} }
func optWS(s uint8) []byte     { return []byte{3, 3, s} }

var (
	optNOP      = []byte{1}
	optSACKPerm = []byte{4, 2}
)

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// nopTS is the layout Linux sends on every segment: NOP NOP TS.
func nopTS(tsval, tsecr uint32) []byte { return cat(optNOP, optNOP, optTS(tsval, tsecr)) }

// linuxSYN are the options of a Linux SYN: MSS, SACK_PERM, TS, NOP, WS.
func linuxSYN(mss uint16, tsval uint32, ws uint8) []byte {
	return cat(optMSS(mss), optSACKPerm, optTS(tsval, 0), optNOP, optWS(ws))
}

// pkt is a parsed frame as the program handed it back.
type pkt struct {
	ethDst, ethSrc [6]byte
	ttl            uint8  // IPv6: the hop limit
	id             uint16 // IPv6: 0
	flowLabel      uint32 // IPv6
	totLen         int    // IPv6: 40 + payload_len
	src, dst       netip.AddrPort
	seq, ack       uint32
	flags          uint8
	win            uint16
	doff           int
	opts           []byte
	hasTS          bool
	tsval, tsecr   uint32
	nTS            int
	sack           [][2]uint32
	payload        []byte
}

// parsePkt parses an IPv4 or IPv6 TCP frame strictly: every length
// consistent, every option well formed, the checksums valid (full
// computation). Over IPv6 it skips hop-by-hop and destination options.
func parsePkt(b []byte) (*pkt, error) {
	if len(b) < 14+20+20 {
		return nil, fmt.Errorf("frame of %d bytes is too short for IPv4 TCP", len(b))
	}
	p := &pkt{}
	copy(p.ethDst[:], b[0:6])
	copy(p.ethSrc[:], b[6:12])
	ip := b[14:]
	if et := binary.BigEndian.Uint16(b[12:]); et == 0x86dd {
		return p.parse6(ip)
	} else if et != 0x0800 {
		return nil, fmt.Errorf("ethertype %#04x", et)
	}
	if ip[0]>>4 != 4 {
		return nil, fmt.Errorf("IP version %d", ip[0]>>4)
	}
	ihl := int(ip[0]&0x0f) * 4
	p.totLen = int(binary.BigEndian.Uint16(ip[2:]))
	if ihl < 20 || p.totLen < ihl+20 || p.totLen > len(ip) {
		return nil, fmt.Errorf("ihl %d, tot_len %d, %d bytes after Ethernet", ihl, p.totLen, len(ip))
	}
	if c := checksum(ip[:ihl]); c != 0 {
		return nil, fmt.Errorf("IP header checksum invalid (residue %#04x)", c)
	}
	if ip[9] != 6 {
		return nil, fmt.Errorf("IP protocol %d", ip[9])
	}
	p.ttl = ip[8]
	p.id = binary.BigEndian.Uint16(ip[4:])
	return p.parseTCP(ip, ip[ihl:p.totLen])
}

// parse6 is parsePkt's IPv6 header.
func (p *pkt) parse6(ip []byte) (*pkt, error) {
	if len(ip) < 40+20 || ip[0]>>4 != 6 {
		return nil, fmt.Errorf("IPv6 frame of %d bytes after Ethernet, version %d", len(ip), ip[0]>>4)
	}
	p.totLen = 40 + int(binary.BigEndian.Uint16(ip[4:]))
	if p.totLen > len(ip) {
		return nil, fmt.Errorf("payload_len %d, %d bytes after Ethernet", p.totLen-40, len(ip))
	}
	off := ip6Walk(ip, p.totLen)
	if off < 0 {
		return nil, fmt.Errorf("no TCP header after the IPv6 header (next header %d)", ip[6])
	}
	p.ttl = ip[7]
	p.flowLabel = binary.BigEndian.Uint32(ip[0:]) & 0xfffff
	return p.parseTCP(ip, ip[off:p.totLen])
}

// parseTCP is parsePkt's TCP segment (checksum, ports, header, options)
// after the IP header ip.
func (p *pkt) parseTCP(ip, tcp []byte) (*pkt, error) {
	if c := checksum(pseudoHeader(ip, len(tcp)), tcp); c != 0 {
		return nil, fmt.Errorf("TCP checksum invalid (residue %#04x)", c)
	}
	src, dst := ipAddrs(ip)
	p.src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(tcp[0:]))
	p.dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(tcp[2:]))
	p.seq = binary.BigEndian.Uint32(tcp[4:])
	p.ack = binary.BigEndian.Uint32(tcp[8:])
	p.doff = int(tcp[12]>>4) * 4
	p.flags = tcp[13]
	p.win = binary.BigEndian.Uint16(tcp[14:])
	if p.doff < 20 || p.doff > len(tcp) {
		return nil, fmt.Errorf("doff %d with %d TCP bytes", p.doff, len(tcp))
	}
	p.opts = tcp[20:p.doff]
	p.payload = tcp[p.doff:]
	for i := 0; i < len(p.opts); {
		switch k := p.opts[i]; k {
		case 0:
			i = len(p.opts)
		case 1:
			i++
		default:
			if i+2 > len(p.opts) || p.opts[i+1] < 2 || i+int(p.opts[i+1]) > len(p.opts) {
				return nil, fmt.Errorf("option %d at %d runs past the header", k, i)
			}
			o := p.opts[i : i+int(p.opts[i+1])]
			switch k {
			case 8:
				p.hasTS, p.nTS = true, p.nTS+1
				p.tsval, p.tsecr = binary.BigEndian.Uint32(o[2:]), binary.BigEndian.Uint32(o[6:])
			case 5:
				for j := 2; j+8 <= len(o); j += 8 {
					p.sack = append(p.sack, [2]uint32{binary.BigEndian.Uint32(o[j:]), binary.BigEndian.Uint32(o[j+4:])})
				}
			}
			i += len(o)
		}
	}
	return p, nil
}

func mustParse(t testing.TB, b []byte) *pkt {
	t.Helper()
	p, err := parsePkt(b)
	if err != nil {
		t.Fatalf("output packet: %v\n% x", err, b)
	}
	return p
}

// TestChecksumReference pins the checksum function to RFC 1071's example and
// to a real IPv4 header, so that the fixtures' verdicts on the program's
// checksums rest on something checked.
func TestChecksumReference(t *testing.T) {
	// RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
	if got := checksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}); got != ^uint16(0xddf2) {
		t.Errorf("RFC 1071 example: %#04x, want %#04x", got, ^uint16(0xddf2))
	}
	// A header from the wire (Wikipedia's IPv4 checksum example): b861.
	h := []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0, 0, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	if got := checksum(h); got != 0xb861 {
		t.Errorf("IPv4 header example: %#04x, want 0xb861", got)
	}
	// Odd length pads with a zero byte, split parts join before summing.
	if checksum([]byte{1, 2, 3}) != checksum([]byte{1}, []byte{2, 3, 0}) {
		t.Error("parts are not joined before summing")
	}
	b := seg{src: clientAddr, dst: serviceAddr, seq: 1, ack: 2, flags: tcpACK, win: 3,
		opts: nopTS(4, 5), payload: []byte("odd")}.build()
	if _, err := parsePkt(b); err != nil {
		t.Errorf("built packet does not parse: %v", err)
	}
	b[len(b)-1] ^= 1
	if _, err := parsePkt(b); err == nil {
		t.Error("a flipped payload bit kept the TCP checksum valid")
	}
}
