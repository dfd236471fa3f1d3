package testkit

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/xlb-lb/xlb/testnet"
)

// TCP flags.
const (
	FlagFIN = 0x01
	FlagSYN = 0x02
	FlagRST = 0x04
	FlagPSH = 0x08
	FlagACK = 0x10
)

// Segment is an IPv4 TCP segment to build by hand.
type Segment struct {
	Src, Dst     netip.Addr // IPv4
	SPort, DPort uint16
	Seq, Ack     uint32
	Flags        byte
	Window       uint16
	Options      []byte // a multiple of 4 bytes, at most 40
	Payload      []byte
	BadCsum      bool // a wrong TCP checksum (the right one with bits flipped)
}

// TCP is the segment's TCP header, options and payload.
func (s Segment) TCP() []byte {
	seg := make([]byte, 20+len(s.Options)+len(s.Payload))
	binary.BigEndian.PutUint16(seg[0:], s.SPort)
	binary.BigEndian.PutUint16(seg[2:], s.DPort)
	binary.BigEndian.PutUint32(seg[4:], s.Seq)
	binary.BigEndian.PutUint32(seg[8:], s.Ack)
	seg[12] = byte(5+len(s.Options)/4) << 4
	seg[13] = s.Flags
	binary.BigEndian.PutUint16(seg[14:], s.Window)
	copy(seg[20:], s.Options)
	copy(seg[20+len(s.Options):], s.Payload)
	sum := TCPChecksum(s.Src, s.Dst, seg)
	if s.BadCsum {
		sum ^= 0x5a5a
	}
	binary.BigEndian.PutUint16(seg[16:], sum)
	return seg
}

// IPv4 is the segment behind an IPv4 header (TTL 64) whose checksum and id
// are left to the kernel (an IPPROTO_RAW send fills them in).
func (s Segment) IPv4() []byte {
	seg := s.TCP()
	pkt := make([]byte, 20+len(seg))
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	pkt[8] = 64
	pkt[9] = unix.IPPROTO_TCP
	src, dst := s.Src.As4(), s.Dst.As4()
	copy(pkt[12:16], src[:])
	copy(pkt[16:20], dst[:])
	copy(pkt[20:], seg)
	return pkt
}

// TCPChecksum is the RFC 793 checksum of an IPv4 TCP segment between src
// and dst (the segment's checksum field zero; with the field filled in, a
// right checksum makes it 0).
func TCPChecksum(src, dst netip.Addr, seg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	s4, d4 := src.As4(), dst.As4()
	add(s4[:])
	add(d4[:])
	sum += unix.IPPROTO_TCP + uint32(len(seg))
	add(seg)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// RawIPv4 opens a raw IPv4 socket (IPPROTO_RAW: the packets carry their IP
// header) in ns and calls fn with a function that sends one packet to its
// destination address; the socket is closed when fn returns.
func RawIPv4(ns *testnet.NS, fn func(send func(pkt []byte) error) error) error {
	return ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return fn(func(pkt []byte) error {
			if len(pkt) < 20 {
				return errors.New("raw send: shorter than an IPv4 header")
			}
			dst := &unix.SockaddrInet4{}
			copy(dst.Addr[:], pkt[16:20])
			return unix.Sendto(fd, pkt, 0, dst)
		})
	})
}
