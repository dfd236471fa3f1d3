package splice

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/xlb-lb/xlb/kern"
	"golang.org/x/sys/unix"
)

// Handing a leg back to the kernel: the socket xlb holds for a leg is frozen
// at the numbers of its handshake (or of its registration), so closing it
// would put stale sequence numbers on the wire. Instead the old socket is
// destroyed silently and a new one is made in repair mode (as CRIU restores
// connections) with the leg's current positions; once the data plane forgets
// the leg, packets reach that socket, and closing it ends the connection
// properly (FIN, retransmissions, TIME_WAIT: all the kernel's).

// legPositions are a leg's numbers at hand-back time.
type legPositions struct {
	key                   kern.LegKey
	sndNxt, rcvNxt        uint32
	ourTSval              uint32
	peerWin, ourWin       uint32 // bytes
	peerWScale, ourWScale uint8
	opts                  uint8
	mss                   uint16
}

// positionsOf computes the current positions of leg l (key k): a bound leg's
// send side follows from its partner through the binding.
func (lb *LB) positionsOf(k kern.LegKey, l *kern.Leg) (legPositions, error) {
	p := legPositions{
		key: k, sndNxt: l.SndNxt, rcvNxt: l.PeerHi, ourTSval: l.OurTSval,
		peerWScale: l.PeerWScale, ourWScale: l.OurWScale, opts: l.Opts, mss: l.PeerMSS,
		peerWin: l.PeerWin << l.PeerWScale, ourWin: l.SndWin << l.OurWScale,
	}
	if l.State == kern.LegBound || l.State == kern.LegParked {
		b, err := lb.dp.Binding(k)
		if err != nil {
			return p, fmt.Errorf("binding of %s: %w", k, err)
		}
		z, err := lb.dp.Leg(b.To)
		if err != nil {
			return p, fmt.Errorf("partner of %s: %w", k, err)
		}
		p.sndNxt = z.PeerHi - b.AckOff
		p.ourTSval = z.PeerTSval - b.TSecrOff
		p.ourWin = z.PeerWin << z.PeerWScale
	}
	if p.mss == 0 {
		p.mss = 536
	}
	return p, nil
}

// handBackAll hands every live leg back to the kernel and closes it. Legs
// already finishing are destroyed silently. It returns how many were handed
// back.
func (lb *LB) handBackAll() int {
	type item struct {
		k kern.LegKey
		l kern.Leg
	}
	var items []item
	lb.dp.ForEachLeg(func(k kern.LegKey, l *kern.Leg) bool {
		items = append(items, item{k, *l})
		return true
	})
	// Positions first, for every leg, while all bindings still exist.
	pos := make(map[kern.LegKey]legPositions, len(items))
	for _, it := range items {
		switch it.l.State {
		case kern.LegIdle, kern.LegBound, kern.LegParked:
		case kern.LegCooling, kern.LegNew:
			// A worker connection a leaving client gave back, or one not
			// pooled yet: unbound, as an idle one.
		default:
			continue
		}
		if it.l.RxFlags != 0 {
			continue // the peer already closed or reset: nothing to hand back
		}
		p, err := lb.positionsOf(it.k, &it.l)
		if err != nil {
			lb.log.Warn("hand-back: positions", "leg", it.k, "err", err)
			continue
		}
		pos[it.k] = p
	}
	n := 0
	for _, it := range items {
		c := lb.takeConn(it.k)
		p, ok := pos[it.k]
		// A client leg's socket was destroyed when it was adopted: its
		// repaired socket is made from the positions alone.
		if !ok || (c == noSock && it.l.Kind != kern.LegClient) {
			lb.dp.ForgetLeg(it.k)
			if c != noSock {
				c.closeSilently()
			}
			continue
		}
		if err := lb.handBack(c, p); err != nil {
			lb.log.Warn("hand-back failed: connection dropped silently", "leg", it.k, "err", err)
			lb.dp.ForgetLeg(it.k)
			continue
		}
		n++
	}
	return n
}

// endPair closes client leg ck and the worker leg it is bound to: both are
// handed back to the kernel with their positions and closed, so each peer
// gets a FIN. A drain's last resort for a pair that never comes apart.
func (lb *LB) endPair(ck kern.LegKey) error {
	c, err := lb.dp.Leg(ck)
	if err != nil {
		return err
	}
	b, err := lb.dp.Binding(ck)
	if err != nil {
		return err
	}
	w, err := lb.dp.Leg(b.To)
	if err != nil {
		return err
	}
	// Positions of both first, while the bindings exist.
	pc, err := lb.positionsOf(ck, &c)
	if err != nil {
		return err
	}
	pw, err := lb.positionsOf(b.To, &w)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range []legPositions{pc, pw} {
		conn := lb.takeConn(p.key)
		if conn == noSock && p.key != ck { // a client's socket: destroyed at its adoption
			lb.dp.ForgetLeg(p.key)
			continue
		}
		if err := lb.handBack(conn, p); err != nil {
			lb.dp.ForgetLeg(p.key)
			errs = append(errs, fmt.Errorf("leg %s: %w", p.key, err))
		}
	}
	return errors.Join(errs...)
}

// takeConn removes and returns the socket held for a leg (noSock: none;
// client legs have none).
func (lb *LB) takeConn(k kern.LegKey) sock {
	for _, w := range lb.workerList() {
		if c := w.forget(k); c != noSock {
			return c
		}
	}
	return noSock
}

// handBack replaces the held socket c of leg p.key (noSock: none) by a
// repaired one with the leg's positions, makes the data plane forget the
// leg, and closes the new socket: the kernel sends a proper FIN.
func (lb *LB) handBack(c sock, p legPositions) error {
	if c != noSock {
		if err := c.closeSilently(); err != nil {
			return err
		}
	}
	fd, err := repairedSocket(p)
	if err != nil {
		return err
	}
	lb.dp.ForgetLeg(p.key)
	// Linger off: close() sends FIN and returns; the kernel finishes the close.
	return unix.Close(fd)
}

// resetLeg ends leg p.key with a RST from a repaired socket with its
// positions (no socket of it is held: a client leg), and makes the data
// plane forget it.
func (lb *LB) resetLeg(p legPositions) error {
	fd, err := repairedSocket(p)
	if err != nil {
		return err
	}
	lb.dp.ForgetLeg(p.key)
	// Linger on with a zero timeout: close() sends a RST.
	if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("SO_LINGER: %w", err)
	}
	return unix.Close(fd)
}

// repairedSocket makes an established socket with the given positions
// without a packet on the wire.
func repairedSocket(p legPositions) (int, error) {
	fd, err := unix.Socket(family(p.key.Local.Addr()), unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	ok := false
	defer func() {
		if !ok {
			unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, tcpRepairOn)
			unix.Close(fd)
		}
	}()
	set := func(what string, opt, v int) error {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, opt, v); err != nil {
			return fmt.Errorf("repair %s: %w", what, err)
		}
		return nil
	}
	if err := set("on", unix.TCP_REPAIR, tcpRepairOn); err != nil {
		return -1, err
	}
	if err := set("send queue", unix.TCP_REPAIR_QUEUE, tcpSendQueue); err != nil {
		return -1, err
	}
	if err := set("snd_nxt", unix.TCP_QUEUE_SEQ, int(int32(p.sndNxt))); err != nil {
		return -1, err
	}
	if err := set("recv queue", unix.TCP_REPAIR_QUEUE, tcpRecvQueue); err != nil {
		return -1, err
	}
	if err := set("rcv_nxt", unix.TCP_QUEUE_SEQ, int(int32(p.rcvNxt))); err != nil {
		return -1, err
	}
	if err := set("no queue", unix.TCP_REPAIR_QUEUE, tcpNoQueue); err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, sockaddr(p.key.Local)); err != nil {
		return -1, fmt.Errorf("repair bind %s: %w", p.key.Local, err)
	}
	if err := unix.Connect(fd, sockaddr(p.key.Peer)); err != nil {
		return -1, fmt.Errorf("repair connect %s: %w", p.key.Peer, err)
	}
	opts := []unix.TCPRepairOpt{{Code: unix.TCPOPT_MAXSEG, Val: uint32(p.mss)}}
	if p.opts&kern.OptWScale != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_WINDOW, Val: uint32(p.peerWScale) | uint32(p.ourWScale)<<16})
	}
	if p.opts&kern.OptSACK != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_SACK_PERMITTED})
	}
	if p.opts&kern.OptTS != 0 {
		opts = append(opts, unix.TCPRepairOpt{Code: unix.TCPOPT_TIMESTAMP})
	}
	if err := unix.SetsockoptTCPRepairOpt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_OPTIONS, opts); err != nil {
		return -1, fmt.Errorf("repair options: %w", err)
	}
	if p.opts&kern.OptTS != 0 {
		if err := set("timestamp", unix.TCP_TIMESTAMP, int(int32(p.ourTSval))); err != nil {
			return -1, err
		}
	}
	win := tcpRepairWindow{SndWl1: p.rcvNxt, SndWnd: max(p.peerWin, 1), MaxWindow: max(p.peerWin, 1),
		RcvWnd: max(p.ourWin, 1024), RcvWup: p.rcvNxt}
	if err := setRepairWindow(fd, &win); err != nil {
		return -1, err
	}
	if err := set("off", unix.TCP_REPAIR, 0); err != nil {
		return -1, err
	}
	// Leaving repair mode clears the socket's address reuse (the kernel
	// sets sk_reuse to SK_NO_REUSE), and the TIME-WAIT this connection ends
	// in would keep the service port from a new xlb's listener for a
	// minute. Reuse like the listener's accepted sockets.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return -1, fmt.Errorf("handed-back socket: SO_REUSEADDR: %w", err)
	}
	ok = true
	return fd, nil
}

// tcpRepairWindow is struct tcp_repair_window (include/uapi/linux/tcp.h).
type tcpRepairWindow struct {
	SndWl1, SndWnd, MaxWindow, RcvWnd, RcvWup uint32
}

func setRepairWindow(fd int, w *tcpRepairWindow) error {
	_, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_REPAIR_WINDOW,
		uintptr(unsafe.Pointer(w)), unsafe.Sizeof(*w), 0)
	if errno != 0 {
		return fmt.Errorf("repair window: %w", errors.Join(errno))
	}
	return nil
}
