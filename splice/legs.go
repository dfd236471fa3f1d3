package splice

import (
	"errors"
	"fmt"
	"net"

	"github.com/xlb-lb/xlb/kern"
	"golang.org/x/sys/unix"
)

// winBound is the largest window either end of a leg can advertise, as
// win_bound() in kern/bpf/xlb.c computes it.
func winBound(a, b uint8) uint32 {
	s := max(a, b)
	if s >= 14 {
		return 1 << 30
	}
	return 0xffff<<s + 0xffff
}

// WorkerLeg builds the leg of a fresh pool connection from its socket state
// and the SYN-ACK the data plane saw. The connection must be quiet: nothing
// in flight either way, nothing received.
func WorkerLeg(st SocketState, hs kern.Handshake, worker uint32, now uint64) (kern.Leg, error) {
	var l kern.Leg
	switch {
	case st.State != unix.BPF_TCP_ESTABLISHED:
		return l, fmt.Errorf("worker connection in TCP state %d, not established", st.State)
	case st.Unacked != 0 || st.NotSent != 0:
		return l, errors.New("worker connection has unacknowledged or unsent data")
	case st.BytesRecv != 0:
		return l, fmt.Errorf("worker sent %d bytes before any request", st.BytesRecv)
	case hs.PeerISN+1 != st.RcvNxt:
		return l, fmt.Errorf("worker SYN-ACK seen by the data plane (ISN %d) does not match the socket (rcv_nxt %d)", hs.PeerISN, st.RcvNxt)
	}
	l = kern.Leg{
		Kind:      kern.LegWorker,
		PeerMSS:   uint16(min(st.SndMSS, 0xffff)),
		OurMSS:    uint16(min(st.AdvMSS, 0xffff)),
		Worker:    worker,
		PeerHi:    st.RcvNxt,
		PeerAcked: st.SndNxt,
		SndNxt:    st.SndNxt,
		OurTSval:  st.TSClock,
		State:     kern.LegNew, // the control program pools it (DataPlane.PushIdle)
		LastNs:    now,
	}
	if st.Options&tcpiOptWScale != 0 {
		l.Opts |= kern.OptWScale
		l.PeerWScale, l.OurWScale = st.SndWScale, st.RcvWScale
	}
	if st.Options&tcpiOptTimestamps != 0 {
		l.Opts |= kern.OptTS | kern.OptPeerTS
		l.PeerTSval = hs.PeerTSval
	}
	if st.Options&tcpiOptSACK != 0 {
		l.Opts |= kern.OptSACK
	}
	l.PeerWin = min(st.SndWnd>>l.PeerWScale, 0xffff)
	l.SndWin = min(st.RcvWnd>>l.OurWScale, 0xffff)
	l.WinBound = winBound(l.PeerWScale, l.OurWScale)
	return l, nil
}

// CheckClientLeg compares a client leg the data plane built from the
// handshake with what the kernel says of the accepted socket: the
// negotiated options always, and with seqs set (the leg has had no data
// yet) its positions. It returns a description of each mismatch.
func CheckClientLeg(ev kern.Leg, st SocketState, seqs bool) []string {
	var bad []string
	if seqs && ev.SndNxt != st.SndNxt {
		bad = append(bad, fmt.Sprintf("snd_nxt %d, socket %d", ev.SndNxt, st.SndNxt))
	}
	if seqs && ev.PeerHi != st.RcvNxt {
		bad = append(bad, fmt.Sprintf("peer_hi %d, socket rcv_nxt %d", ev.PeerHi, st.RcvNxt))
	}
	if (ev.Opts&kern.OptTS != 0) != (st.Options&tcpiOptTimestamps != 0) {
		bad = append(bad, "timestamps negotiated differently")
	}
	if (ev.Opts&kern.OptSACK != 0) != (st.Options&tcpiOptSACK != 0) {
		bad = append(bad, "SACK negotiated differently")
	}
	if st.Options&tcpiOptWScale != 0 {
		if ev.PeerWScale != st.SndWScale || ev.OurWScale != st.RcvWScale {
			bad = append(bad, fmt.Sprintf("window scales %d/%d, socket %d/%d", ev.PeerWScale, ev.OurWScale, st.SndWScale, st.RcvWScale))
		}
	} else if ev.Opts&kern.OptWScale != 0 {
		bad = append(bad, "window scaling negotiated differently")
	}
	return bad
}

// rawControl runs fn on the connection's file descriptor.
func rawControl(c *net.TCPConn, fn func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// connState reads the TCP state of a held connection.
func connState(c *net.TCPConn) (SocketState, error) {
	var st SocketState
	err := rawControl(c, func(fd int) error {
		var err error
		st, err = ReadSocketState(fd)
		return err
	})
	return st, err
}

// legKeyOf is the key of the leg a held connection is: packets from its peer.
func legKeyOf(c net.Conn) (kern.LegKey, error) {
	r, ok1 := c.RemoteAddr().(*net.TCPAddr)
	l, ok2 := c.LocalAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return kern.LegKey{}, errors.New("not a TCP connection")
	}
	k := kern.LegKey{Peer: r.AddrPort(), Local: l.AddrPort()}
	k.Peer = netipUnmap(k.Peer)
	k.Local = netipUnmap(k.Local)
	return k, nil
}
