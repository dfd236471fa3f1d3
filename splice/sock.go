package splice

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/xlb-lb/xlb/kern"
	"golang.org/x/sys/unix"
)

// sock is a socket xlb holds for a worker leg: a bare descriptor, outside
// Go's poller. No byte is ever read from it or written to it (the data
// plane carries them), so registering it with epoll would only cost system
// calls: a worker that closes after every answer costs a connection per
// request.
type sock int

// noSock is the absence of a socket.
const noSock sock = -1

// closeSilently closes the socket without a FIN or RST on the wire: in
// repair mode the kernel forgets the connection.
func (s sock) closeSilently() error {
	if s < 0 {
		return nil // a dialed leg's: no socket
	}
	err := unix.SetsockoptInt(int(s), unix.IPPROTO_TCP, unix.TCP_REPAIR, tcpRepairOn)
	cerr := unix.Close(int(s))
	if err != nil {
		return fmt.Errorf("TCP_REPAIR before a silent close: %w (the socket was closed normally)", err)
	}
	return cerr
}

// close closes the socket normally (a connection nobody spliced yet).
func (s sock) close() error {
	if s < 0 {
		return nil
	}
	return unix.Close(int(s))
}

// pendingDial is a connection to a worker on its way.
type pendingDial struct {
	fd  int
	key kern.LegKey
	err error
}

// dialLegs opens n connections to addr at once, non-blocking, and waits
// for their handshakes together (one round trip for all, however far the
// worker is), up to connectTimeout or ctx. Each comes back with its leg key,
// or its error (its descriptor then closed).
func dialLegs(ctx context.Context, addr netip.AddrPort, mss, n int) []pendingDial {
	sa := sockaddr(addr)
	out := make([]pendingDial, 0, n)
	var wait []int // indexes of out still connecting
	for range n {
		d := pendingDial{fd: -1}
		fd, err := unix.Socket(family(addr.Addr()), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			d.err = fmt.Errorf("dial %s: socket: %w", addr, err)
			out = append(out, d)
			break // out of descriptors or memory: the rest would fail too
		}
		d.fd = fd
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG, mss); err != nil {
			d.err = fmt.Errorf("dial %s: TCP_MAXSEG: %w", addr, err)
		} else if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
			d.err = fmt.Errorf("dial %s: %w", addr, err)
		} else if err != nil {
			wait = append(wait, len(out))
		}
		out = append(out, d)
		if d.err != nil {
			break
		}
	}
	deadline := time.Now().Add(connectTimeout)
	for len(wait) > 0 {
		left := time.Until(deadline)
		if ctx.Err() != nil || left <= 0 {
			for _, i := range wait {
				out[i].err = fmt.Errorf("dial %s: %w", addr, errTimeout(ctx))
			}
			break
		}
		pfds := make([]unix.PollFd, len(wait))
		for j, i := range wait {
			pfds[j] = unix.PollFd{Fd: int32(out[i].fd), Events: unix.POLLOUT}
		}
		// Short slices, so that a cancelled ctx is seen soon.
		if _, err := unix.Poll(pfds, int(min(left, 100*time.Millisecond)/time.Millisecond)+1); err != nil && !errors.Is(err, unix.EINTR) {
			for _, i := range wait {
				out[i].err = fmt.Errorf("dial %s: poll: %w", addr, err)
			}
			break
		}
		var still []int
		for j, i := range wait {
			if pfds[j].Revents == 0 {
				still = append(still, i)
				continue
			}
			if e, err := unix.GetsockoptInt(out[i].fd, unix.SOL_SOCKET, unix.SO_ERROR); err != nil {
				out[i].err = fmt.Errorf("dial %s: %w", addr, err)
			} else if e != 0 {
				out[i].err = fmt.Errorf("dial %s: %w", addr, unix.Errno(e))
			}
		}
		wait = still
	}
	for i := range out {
		if out[i].err == nil {
			local, err := unix.Getsockname(out[i].fd)
			if l, ok := addrPort(local); err == nil && ok {
				out[i].key = kern.LegKey{Peer: addr, Local: l}
			} else {
				out[i].err = fmt.Errorf("dial %s: getsockname: %v", addr, err)
			}
		}
		if out[i].err != nil && out[i].fd >= 0 {
			unix.Close(out[i].fd)
			out[i].fd = -1
		}
	}
	return out
}

func errTimeout(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("no answer within %v", connectTimeout)
}
