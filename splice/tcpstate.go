package splice

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SocketState is what the kernel tells about a live TCP connection through
// TCP_REPAIR, TCP_TIMESTAMP and TCP_INFO: the exact numbers a leg is
// registered with.
type SocketState struct {
	State     uint8  // TCP_ESTABLISHED, ...
	SndNxt    uint32 // next sequence number we send (write_seq)
	RcvNxt    uint32 // next sequence number we expect
	TSClock   uint32 // our timestamp clock now (>= every TSval sent)
	Options   uint8  // TCPI_OPT_* bits
	SndWScale uint8  // the peer's window scale (applies to windows it sends)
	RcvWScale uint8  // our window scale (applies to windows we send)
	SndMSS    uint32
	AdvMSS    uint32
	Unacked   uint32 // segments sent and not acknowledged
	NotSent   uint32 // bytes written and not sent
	SndWnd    uint32 // the peer's window, bytes
	RcvWnd    uint32 // our window, bytes
	BytesRecv uint64
	BytesAckd uint64
	RTTus     uint32 // smoothed round trip time (a new connection: its handshake's)
}

// TCP_INFO option bits (include/uapi/linux/tcp.h).
const (
	tcpiOptTimestamps = 1
	tcpiOptSACK       = 2
	tcpiOptWScale     = 4
)

// tcpEstablished is TCP_ESTABLISHED of include/net/tcp_states.h.
const tcpEstablished = 1

// Values of TCP_REPAIR and TCP_REPAIR_QUEUE (include/uapi/linux/tcp.h).
const (
	tcpRepairOn      = 1
	tcpRepairOffNoWP = -1 // off without the window probe TCP_REPAIR_OFF sends
	tcpNoQueue       = 0
	tcpRecvQueue     = 1
	tcpSendQueue     = 2
)

// ErrRepair is returned when TCP_REPAIR is refused (it needs CAP_NET_ADMIN).
var ErrRepair = errors.New("TCP_REPAIR refused (needs CAP_NET_ADMIN)")

// ReadSocketState reads the state of the connection on fd. It switches the
// socket into repair mode for the two queue reads and back out without the
// window probe, which leaves the live connection as it was. (Leaving repair
// mode also clears address reuse, which is put back: a socket of the
// service port that ended in TIME-WAIT without it kept a restarted xlb from
// listening for a minute.)
func ReadSocketState(fd int) (SocketState, error) {
	var s SocketState
	reuse, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR)
	if err != nil {
		return s, fmt.Errorf("SO_REUSEADDR: %w", err)
	}
	defer unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, reuse)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, tcpRepairOn); err != nil {
		if errors.Is(err, unix.EPERM) {
			return s, ErrRepair
		}
		return s, fmt.Errorf("TCP_REPAIR on: %w", err)
	}
	seqs, qerr := readQueueSeqs(fd)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, tcpRepairOffNoWP); err != nil {
		return s, fmt.Errorf("TCP_REPAIR off: %w", err)
	}
	if qerr != nil {
		return s, qerr
	}
	s.SndNxt, s.RcvNxt = seqs[0], seqs[1]
	ts, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
	if err != nil {
		return s, fmt.Errorf("TCP_TIMESTAMP: %w", err)
	}
	s.TSClock = uint32(ts)
	info, raw, err := tcpInfo(fd)
	if err != nil {
		return s, err
	}
	fillFromInfo(&s, info, raw)
	return s, nil
}

// errNotFresh: a new pool connection that has exchanged data already (a
// worker that speaks first: xlb cannot serve such a protocol).
var errNotFresh = errors.New("the worker sent data before any request (a server-speaks-first protocol, which xlb cannot balance)")

// FreshSocketState is ReadSocketState for a connection that has just
// completed its handshake and exchanged nothing: its sequence numbers follow
// from the handshake the data plane learnt (our ISN and the peer's), so the
// repair-mode reads (eight system calls) are not needed. TCP_INFO tells the
// rest, and that nothing was exchanged.
func FreshSocketState(fd int, ourISN, peerISN uint32) (SocketState, error) {
	var s SocketState
	ts, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
	if err != nil {
		return s, fmt.Errorf("TCP_TIMESTAMP: %w", err)
	}
	info, raw, err := tcpInfo(fd)
	if err != nil {
		return s, err
	}
	if info.State != tcpEstablished {
		return s, fmt.Errorf("connection in TCP state %d, not established", info.State)
	}
	if info.Bytes_received != 0 {
		return s, errNotFresh
	}
	if info.Unacked != 0 || info.Notsent_bytes != 0 {
		return s, errors.New("a new connection has data in flight")
	}
	s.SndNxt, s.RcvNxt = ourISN+1, peerISN+1
	s.TSClock = uint32(ts)
	fillFromInfo(&s, info, raw)
	return s, nil
}

// fillFromInfo copies what TCP_INFO tells into s.
func fillFromInfo(s *SocketState, info *unix.TCPInfo, raw []byte) {
	s.State = info.State
	s.Options = info.Options
	// tcpi_snd_wscale:4, tcpi_rcv_wscale:4 share the byte after tcpi_options,
	// which the Go struct leaves as padding.
	s.SndWScale = raw[6] & 0x0f
	s.RcvWScale = raw[6] >> 4
	s.SndMSS, s.AdvMSS = info.Snd_mss, info.Advmss
	s.Unacked, s.NotSent = info.Unacked, info.Notsent_bytes
	s.SndWnd, s.RcvWnd = info.Snd_wnd, info.Rcv_wnd
	s.BytesRecv, s.BytesAckd = info.Bytes_received, info.Bytes_acked
	s.RTTus = info.Rtt
}

func readQueueSeqs(fd int) ([2]uint32, error) {
	var out [2]uint32
	for i, q := range []int{tcpSendQueue, tcpRecvQueue} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q); err != nil {
			return out, fmt.Errorf("TCP_REPAIR_QUEUE: %w", err)
		}
		v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
		if err != nil {
			return out, fmt.Errorf("TCP_QUEUE_SEQ: %w", err)
		}
		out[i] = uint32(v)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpNoQueue); err != nil {
		return out, fmt.Errorf("TCP_REPAIR_QUEUE: %w", err)
	}
	return out, nil
}

func tcpInfo(fd int) (*unix.TCPInfo, []byte, error) {
	var info unix.TCPInfo
	size := uint32(unsafe.Sizeof(info))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_INFO,
		uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&size)), 0)
	if errno != 0 {
		return nil, nil, fmt.Errorf("TCP_INFO: %w", errno)
	}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&info)), unsafe.Sizeof(info))
	return &info, raw, nil
}
