package kern_test

// Packets for the data-plane fixtures: a builder for Ethernet + IPv4 + TCP
// segments with options, a strict parser for what the program hands back, and
// an Internet checksum written from RFC 1071 without looking at csum.h, so that
// the program's incremental checksums are checked against an independent full
// computation.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
)

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

	tcp := b[14+ipLen : 14+tot]
	binary.BigEndian.PutUint16(tcp[0:], s.src.Port())
	binary.BigEndian.PutUint16(tcp[2:], s.dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], s.seq)
	binary.BigEndian.PutUint32(tcp[8:], s.ack)
	tcp[12] = byte(tcpLen/4) << 4
	tcp[13] = s.flags
	binary.BigEndian.PutUint16(tcp[14:], s.win)
	copy(tcp[20:], opts)
	copy(tcp[tcpLen:], s.payload)
	fixChecksums(b)
	return b
}

// fixChecksums recomputes the IP header and TCP checksums of a frame in place
// (full computation). It does nothing to frames it cannot parse.
func fixChecksums(b []byte) {
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

func pseudoHeader(ip []byte, tcpLen int) []byte {
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
	ttl            uint8
	id             uint16
	totLen         int
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

// parsePkt parses an IPv4 TCP frame strictly: every length consistent, every
// option well formed, both checksums valid (full computation).
func parsePkt(b []byte) (*pkt, error) {
	if len(b) < 14+20+20 {
		return nil, fmt.Errorf("frame of %d bytes is too short for IPv4 TCP", len(b))
	}
	if et := binary.BigEndian.Uint16(b[12:]); et != 0x0800 {
		return nil, fmt.Errorf("ethertype %#04x", et)
	}
	p := &pkt{}
	copy(p.ethDst[:], b[0:6])
	copy(p.ethSrc[:], b[6:12])
	ip := b[14:]
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
	tcp := ip[ihl:p.totLen]
	if c := checksum(pseudoHeader(ip, len(tcp)), tcp); c != 0 {
		return nil, fmt.Errorf("TCP checksum invalid (residue %#04x)", c)
	}
	p.src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[12:16])), binary.BigEndian.Uint16(tcp[0:]))
	p.dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), binary.BigEndian.Uint16(tcp[2:]))
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
