package splice

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/xlb-lb/xlb/kern"
)

// TestSynPacket: the SYN user space sends for a dialed connection is an
// IPv4 header the kernel completes and a TCP SYN whose checksum (over the
// pseudo header) is right: on lo nothing checks it, a routed worker does.
func TestSynPacket(t *testing.T) {
	key := kern.LegKey{Peer: netip.MustParseAddrPort("10.1.2.3:4171"), Local: netip.MustParseAddrPort("10.9.8.7:40001")}
	b := synPacket(key, 0xdeadbeef, 123456, 1400)
	if len(b) != 60 || b[0] != 0x45 || b[9] != 6 {
		t.Fatalf("not a 20-byte IPv4 header of TCP then 40 bytes: % x", b)
	}
	tcp := b[20:]
	if got := netip.AddrFrom4([4]byte(b[12:16])); got != key.Local.Addr() {
		t.Errorf("source %v, want %v", got, key.Local.Addr())
	}
	if got := netip.AddrFrom4([4]byte(b[16:20])); got != key.Peer.Addr() {
		t.Errorf("destination %v, want %v", got, key.Peer.Addr())
	}
	if sp, dp := binary.BigEndian.Uint16(tcp), binary.BigEndian.Uint16(tcp[2:]); sp != 40001 || dp != 4171 {
		t.Errorf("ports %d > %d, want 40001 > 4171", sp, dp)
	}
	if seq, flags := binary.BigEndian.Uint32(tcp[4:]), tcp[13]; seq != 0xdeadbeef || flags != 0x02 {
		t.Errorf("seq %#x flags %#x, want 0xdeadbeef and SYN", seq, flags)
	}
	o := tcp[20:]
	if o[0] != 2 || binary.BigEndian.Uint16(o[2:]) != 1400 || o[4] != 4 || o[6] != 8 ||
		binary.BigEndian.Uint32(o[8:]) != 123456 || o[17] != 3 || o[19] != dialWScale {
		t.Errorf("options % x: want MSS 1400, SACK permitted, TS 123456, window scale %d", o, dialWScale)
	}
	// The one's complement sum of pseudo header and segment, checksum
	// included, is all ones.
	var sum uint32
	for _, p := range [][]byte{b[12:20], {0, 6, 0, 40}, tcp} {
		for i := 0; i+1 < len(p); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(p[i:]))
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	if sum != 0xffff {
		t.Errorf("TCP checksum %#04x does not verify (sum %#04x)", binary.BigEndian.Uint16(tcp[16:]), sum)
	}
}
