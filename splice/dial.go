package splice

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/xlb-lb/xlb/kern"
	"golang.org/x/sys/unix"
)

// Dialed worker legs. A pool connection needs no socket of ours: user space
// sends the SYN itself (a raw IP socket, send-only), after telling the data
// plane what it offered (a handshake entry with HS_DIALED), and the data
// plane completes the handshake when the worker's SYN-ACK comes (kern
// dialed()): the leg is born out of its pool (user space pools it once it
// sees it; kern dialed() says why), and the program answers whatever our
// stack would have answered for it (its SYN-ACK again, FINs, stale data).
// A connection then costs user space a sendto and its share of a round's
// two batches (the handshake entries, the pooling) instead of about twenty
// system calls (socket, connect, the repair reads, registration, the
// silent close), and the kernel no socket of ours: with a worker that
// closes after every answer (HTTP/1.0, Connection: close) those were most
// of xlb's time. The default (DialAuto) for a worker whose answers reach
// the data plane (worker.dialsXDP).
//
// Our local ports are held by placeholder sockets, bound and never listening
// nor connected, so that the kernel gives them to no other connection; one
// port serves one connection to each worker at a time. A port a connection
// ended on waits in a FIFO behind others before it serves again. A --reuse
// handover passes the placeholders and names the dialed legs.

// Offered on dialed SYNs: the window scale our stack would choose for a
// default receive buffer, and the options a Linux peer offers.
const (
	dialWScale = 7
	dialOpts   = kern.OptTS | kern.OptSACK | kern.OptWScale
	// A freed port waits until this many others are free for the same
	// worker, so that a 4-tuple is not reused at once (the worker may hold
	// it in TIME-WAIT: our SYN is taken only if newer, see kern dialed()).
	portRest = 64
	// dialedSock stands in worker.legs for the socket a dialed leg does not
	// have.
	dialedSock sock = -2
)

// DialMode is how pool connections are opened (Config.Dial).
type DialMode uint8

const (
	DialAuto   DialMode = iota // DialXDP where it works (worker.dialsXDP), else DialSocket
	DialXDP                    // a raw SYN, the handshake completed by the data plane
	DialSocket                 // connect(), then the socket read in repair mode
)

// dialsXDP says whether w's pool connections are dialed (DialXDP), and,
// under DialAuto, decides it once: an IPv4 worker whose route leaves
// through an interface our program is attached to (its SYN-ACK comes back
// there, to the data plane; elsewhere our stack would reset it, as no
// socket of ours is connected).
func (w *worker) dialsXDP() bool {
	switch w.lb.cfg.Dial {
	case DialXDP:
		return true
	case DialSocket:
		return false
	}
	if w.lb.dialer == nil {
		return false
	}
	if w.dialAuto.Load() == 0 {
		d := uint32(2)
		if ifc, err := w.lb.dialer.routeIface(w.spec.Addr); err == nil && slices.Contains(w.lb.attached, ifc) {
			d = 1
		} else {
			w.lb.log.Debug("worker connections opened with sockets", "worker", w.spec.Addr, "route_iface", ifc, "err", err)
		}
		w.dialAuto.CompareAndSwap(0, d)
	}
	return w.dialAuto.Load() == 1
}

// routeIface names the interface that holds our address toward worker.
func (d *dialer) routeIface(worker netip.AddrPort) (string, error) {
	if !worker.Addr().Is4() {
		return "", errors.New("not IPv4")
	}
	d.mu.Lock()
	src, err := d.source(worker)
	d.mu.Unlock()
	if err != nil {
		return "", err
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, ifc := range ifs {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr() == src {
				return ifc.Name, nil
			}
		}
	}
	return "", fmt.Errorf("no interface holds %s", src)
}

// errRefused is a worker that reset our SYN: nothing listens there.
var errRefused = errors.New("connection refused")

type dialer struct {
	raw    int // AF_INET SOCK_RAW IPPROTO_RAW: send only, we write the IP header
	secret [16]byte

	mu      sync.Mutex
	src     map[netip.AddrPort]netip.Addr // worker -> our address toward it
	holders map[netip.Addr][]placeholder  // per local address, in order of creation
	ports   map[netip.AddrPort]*workerPorts
}

type placeholder struct {
	fd   int
	addr netip.AddrPort // local address and the port it holds
}

// workerPorts is what one worker's connections use of a local address's
// ports: next indexes the ports it never used, free those it used and may
// use again (oldest first), inUse those with a connection.
type workerPorts struct {
	next  int
	free  []uint16
	inUse map[uint16]bool
}

func newDialer() (*dialer, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, fmt.Errorf("raw socket for worker connections: %w", err)
	}
	d := &dialer{raw: fd, src: map[netip.AddrPort]netip.Addr{}, holders: map[netip.Addr][]placeholder{},
		ports: map[netip.AddrPort]*workerPorts{}}
	rand.Read(d.secret[:])
	return d, nil
}

func (d *dialer) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	unix.Close(d.raw)
	for _, hs := range d.holders {
		for _, h := range hs {
			unix.Close(h.fd)
		}
	}
	d.holders = map[netip.Addr][]placeholder{}
}

// source is our address toward worker: the one the kernel would choose.
func (d *dialer) source(worker netip.AddrPort) (netip.Addr, error) {
	if a, ok := d.src[worker]; ok {
		return a, nil
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return netip.Addr{}, err
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: worker.Addr().As4(), Port: int(worker.Port())}); err != nil {
		return netip.Addr{}, fmt.Errorf("no route to %s: %w", worker, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.Addr{}, err
	}
	a := netip.AddrFrom4(sa.(*unix.SockaddrInet4).Addr)
	d.src[worker] = a
	return a, nil
}

// take gives a local port for a new connection to worker, reserving a new
// one (mark: the data plane must look at its packets) when none is free.
func (d *dialer) take(worker netip.AddrPort, mark func(uint16) error) (netip.AddrPort, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	src, err := d.source(worker)
	if err != nil {
		return netip.AddrPort{}, err
	}
	wp := d.ports[worker]
	if wp == nil {
		wp = &workerPorts{inUse: map[uint16]bool{}}
		d.ports[worker] = wp
	}
	var port uint16
	hs := d.holders[src]
	switch {
	case len(wp.free) > portRest:
		port, wp.free = wp.free[0], wp.free[1:]
	case wp.next < len(hs):
		port = hs[wp.next].addr.Port()
		wp.next++
	default:
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("placeholder socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
			unix.Close(fd)
			return netip.AddrPort{}, fmt.Errorf("reserving a local port: %w", err)
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			unix.Close(fd)
			return netip.AddrPort{}, err
		}
		port = uint16(sa.(*unix.SockaddrInet4).Port)
		if err := mark(port); err != nil {
			unix.Close(fd)
			return netip.AddrPort{}, err
		}
		d.holders[src] = append(hs, placeholder{fd: fd, addr: netip.AddrPortFrom(src, port)})
		wp.next = len(d.holders[src])
	}
	wp.inUse[port] = true
	return netip.AddrPortFrom(src, port), nil
}

// placeholders are the placeholder sockets, per local address in the
// order they were made (a handover passes them on).
func (d *dialer) placeholders() []placeholder {
	d.mu.Lock()
	defer d.mu.Unlock()
	var all []placeholder
	for _, hs := range d.holders {
		all = append(all, hs...)
	}
	return all
}

func (d *dialer) placeholderCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, hs := range d.holders {
		n += len(hs)
	}
	return n
}

// adopt takes placeholders a handover passed, in their order.
func (d *dialer) adopt(hs []placeholder) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, h := range hs {
		src := h.addr.Addr()
		d.holders[src] = append(d.holders[src], h)
	}
}

// portsOf is worker's share of the ports: those it may use again, oldest
// first, and the index of the next never used.
func (d *dialer) portsOf(worker netip.AddrPort) ([]uint16, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if wp := d.ports[worker]; wp != nil {
		return slices.Clone(wp.free), wp.next
	}
	return nil, 0
}

// adoptPorts takes worker's share of the ports from a handover: inUse
// those of its dialed legs.
func (d *dialer) adoptPorts(worker netip.AddrPort, free []uint16, next int, legs []kern.LegKey) {
	d.mu.Lock()
	defer d.mu.Unlock()
	wp := &workerPorts{next: next, free: free, inUse: map[uint16]bool{}}
	for _, k := range legs {
		wp.inUse[k.Local.Port()] = true
	}
	d.ports[worker] = wp
}

// release gives back the local port of a connection to worker that ended.
func (d *dialer) release(key kern.LegKey) {
	d.mu.Lock()
	defer d.mu.Unlock()
	wp := d.ports[key.Peer]
	if wp == nil || !wp.inUse[key.Local.Port()] {
		return
	}
	delete(wp.inUse, key.Local.Port())
	wp.free = append(wp.free, key.Local.Port())
}

// isn is a 4-tuple's initial sequence number: as the kernel's, a clock of
// 64 ns ticks plus a keyed hash of the tuple, so that a new connection of a
// tuple starts after the last one's bytes (a TIME-WAIT takes its SYN).
func (d *dialer) isn(key kern.LegKey) uint32 {
	h := fnv.New32a()
	h.Write(d.secret[:])
	b, _ := key.MarshalBinary()
	h.Write(b)
	return h.Sum32() + uint32(fineNs()>>6)
}

// tsNow is our timestamp clock for dialed SYNs: milliseconds, as Linux's.
func tsNow() uint32 { return uint32(fineNs() / 1e6) }

// synPacket is the IPv4 SYN from key.Local to key.Peer: MSS, SACK
// permitted, timestamps and window scale offered, checksums computed (the
// kernel fills the IP header's).
func synPacket(key kern.LegKey, isn, tsval uint32, mss uint16) []byte {
	b := make([]byte, 60)
	src, dst := key.Local.Addr().As4(), key.Peer.Addr().As4()
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], 60)
	binary.BigEndian.PutUint16(b[6:], 0x4000) // DF
	b[8] = 64
	b[9] = unix.IPPROTO_TCP
	copy(b[12:], src[:])
	copy(b[16:], dst[:])
	t := b[20:]
	binary.BigEndian.PutUint16(t[0:], key.Local.Port())
	binary.BigEndian.PutUint16(t[2:], key.Peer.Port())
	binary.BigEndian.PutUint32(t[4:], isn)
	t[12] = 10 << 4 // 40 bytes of header
	t[13] = 0x02    // SYN
	binary.BigEndian.PutUint16(t[14:], 0xffff)
	o := t[20:]
	o[0], o[1] = 2, 4 // MSS
	binary.BigEndian.PutUint16(o[2:], mss)
	o[4], o[5] = 4, 2 // SACK permitted
	o[6], o[7] = 8, 10
	binary.BigEndian.PutUint32(o[8:], tsval)
	o[16] = 1 // NOP
	o[17], o[18], o[19] = 3, 3, dialWScale
	setTCPChecksum(b)
	return b
}

// setTCPChecksum computes the TCP checksum of IP packet b (pseudo header
// and segment; options in the header, odd lengths padded) in full. An IPv6
// packet has TCP right after its header (the data plane takes no other).
func setTCPChecksum(b []byte) {
	hlen, addrs := int(b[0]&0x0f)*4, b[12:20]
	if b[0]>>4 == 6 {
		hlen, addrs = 40, b[8:40]
	}
	t := b[hlen:]
	t[16], t[17] = 0, 0
	var sum uint32
	add := func(p []byte) {
		for len(p) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(p))
			p = p[2:]
		}
		if len(p) == 1 {
			sum += uint32(p[0]) << 8
		}
	}
	add(addrs) // source and destination
	sum += unix.IPPROTO_TCP + uint32(len(t))
	add(t)
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(t[16:], ^uint16(sum))
}

// pendingSyn is a dialed connection waiting for its worker's answer.
type pendingSyn struct {
	key   kern.LegKey
	isn   uint32
	sent  time.Time
	tries int
	// gone: the last look found neither its leg nor its handshake entry
	// (the leg may have been made between the two looks: once more).
	gone bool
}

// handshake is the entry the data plane answers p's SYN-ACK with, made at
// now (monotonicNs, read once for a round of dials).
func (p *pendingSyn) handshake(worker uint32, mss int, now uint64) kern.Handshake {
	return kern.Handshake{OurISN: p.isn, Flags: kern.HSDialed, OurMSS: uint16(mss), OurWScale: dialWScale,
		OurOpts: dialOpts, Ns: now, Worker: worker}
}

// send writes the handshake entry, then the SYN (a SYN sent again).
func (d *dialer) send(dp *DataPlane, p *pendingSyn, worker uint32, mss int) error {
	hs := p.handshake(worker, mss, monotonicNs())
	if err := dp.putDial(p.key, &hs); err != nil {
		return err
	}
	return d.sendSyn(p, mss)
}

func (d *dialer) sendSyn(p *pendingSyn, mss int) error {
	pkt := synPacket(p.key, p.isn, tsNow(), uint16(mss))
	if err := sendRaw(d.raw, pkt, p.key.Peer.Addr().As4()); err != nil {
		return fmt.Errorf("sending a SYN to %s: %w", p.key.Peer, err)
	}
	p.sent, p.tries = time.Now(), p.tries+1
	return nil
}

// sendRaw sends an IP packet on the raw socket fd to dst. On lo the
// worker's whole handshake runs inside this call (the SYN, its SYN-ACK
// through the data plane, our ACK: tens of microseconds), so it does not
// tell the runtime it enters a system call (as ebpf's bpfQuick; sysmon
// would hand its P to another thread, a wakeup and a context switch a
// connection) and does not wait: a full send buffer takes the ordinary
// path.
func sendRaw(fd int, pkt []byte, dst [4]byte) error {
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: dst}
	_, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(&pkt[0])), uintptr(len(pkt)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa))
	runtime.KeepAlive(pkt)
	switch errno {
	case 0:
		return nil
	case unix.EAGAIN, unix.EINTR:
		return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: dst})
	}
	return errno
}

// sendRaw6 is sendRaw for an IPv6 packet, on an AF_INET6 raw socket of
// protocol IPPROTO_RAW (which takes the IPv6 header from the packet).
func sendRaw6(fd int, pkt []byte, dst [16]byte) error {
	return unix.Sendto(fd, pkt, unix.MSG_DONTWAIT, &unix.SockaddrInet6{Addr: dst})
}

// Resending an unanswered SYN: as the kernel, after a second.
const synResend = time.Second

// dialLegs opens n dialed connections to worker w and waits for them (on
// lo the handshake is done before the SYN's sendto returns; elsewhere one
// round trip) up to connectTimeout or ctx. It returns how many it pooled,
// and the first error.
//
// A connection costs a sendto; its handshake entry and its pooling are
// batches of the round (BPF_MAP_UPDATE_BATCH, CTL_POOL items). Each is in
// w.legs from before its SYN: the event of a leg that ends at once finds
// it there (forget), whatever this loop saw.
func (w *worker) dialLegs(ctx context.Context, n int) (int, error) {
	d, dp, addr, mss := w.lb.dialer, w.lb.dp, w.spec.Addr, w.lb.workerMSS
	if !addr.Addr().Is4() {
		return 0, fmt.Errorf("worker %s: only IPv4 workers are supported", addr)
	}
	var first error
	pending := make([]*pendingSyn, 0, n)
	hs := make([]kern.Handshake, 0, n)
	now := monotonicNs()
	for range n {
		local, err := d.take(addr, dp.markPort)
		if err != nil {
			first = err
			break
		}
		key := kern.LegKey{Peer: addr, Local: local}
		p := &pendingSyn{key: key, isn: d.isn(key)}
		pending = append(pending, p)
		hs = append(hs, p.handshake(w.id, mss, now))
	}
	set, err := dp.putDials(pending, hs)
	if err != nil {
		first = cmp.Or(first, err)
		for _, p := range pending[set:] {
			d.release(p.key)
		}
		pending = pending[:set]
	}
	w.mu.Lock()
	for _, p := range pending {
		w.legs[p.key] = dialedSock
	}
	w.mu.Unlock()
	sent := pending[:0]
	for _, p := range pending {
		if err := d.sendSyn(p, mss); err != nil {
			first = cmp.Or(first, err)
			w.dialFailed(p)
			continue
		}
		sent = append(sent, p)
	}
	pending = sent
	pooled := 0
	deadline := time.Now().Add(connectTimeout)
	wait := 100 * time.Microsecond
	// No socket to ask for an RTT: the quickest of the round's handshakes,
	// to the poll that found it made, stands in: a round trip and a poll
	// interval at most (the last SYN sent waits least for the poll; the
	// first waits for the others' sendto, milliseconds on a busy machine).
	// Without it the data plane cooled every leg its default 20 ms; with
	// each handshake's own time, the first SYNs' wait for the others
	// counted as round trips, and coolUs is 8 of them.
	fastest := time.Duration(math.MaxInt64)
	defer func() {
		if fastest != math.MaxInt64 {
			w.noteRTT(float64(fastest.Microseconds()))
		}
	}()
	for len(pending) > 0 {
		res := w.poolDialed(pending)
		still := pending[:0]
		for i, p := range pending {
			switch err := w.dialOutcome(p, res[i]); {
			case err == nil:
				pooled++
				if l, err := dp.Leg(p.key); err == nil {
					w.mu.Lock()
					w.born[p.key] = bornLeg{time.Now(), l.PeerHi}
					w.mu.Unlock()
				}
				if p.tries == 1 {
					fastest = min(fastest, time.Since(p.sent))
				}
			case errors.Is(err, errPending):
				still = append(still, p)
			default:
				first = cmp.Or(first, err)
			}
		}
		pending = still
		if len(pending) == 0 {
			break
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			for _, p := range pending {
				dp.dropDial(p.key)
			}
			// A late SYN-ACK may have made the leg meanwhile: it is the
			// pool's then.
			res := w.poolDialed(pending)
			for i, p := range pending {
				switch res[i] {
				case kern.CtlDone:
					pooled++
				case kern.CtlNoLeg:
					w.dialFailed(p)
				}
			}
			first = cmp.Or(first, fmt.Errorf("dial %s: %w", addr, errTimeout(ctx)))
			break
		}
		// The data plane has no event for a handshake done: look again
		// soon, then less often (a remote worker answers in a round trip).
		time.Sleep(wait)
		wait = min(2*wait, 50*time.Millisecond)
	}
	return pooled, first
}

var errPending = errors.New("no answer yet")

// poolDialed puts the dialed legs the data plane made (LEG_NEW) into
// their pool, in one run for up to kern.CtlItemsMax: what became of each
// (kern.CtlDone, kern.CtlRefused, kern.CtlNoLeg). The data plane does not
// pool them itself: our ACK must have made the connection at the worker
// first (kern dialed()).
func (w *worker) poolDialed(pending []*pendingSyn) []uint32 {
	legs := make([]ctlLeg, len(pending))
	for i, p := range pending {
		legs[i] = ctlLeg{key: p.key, arg: w.id}
	}
	res, err := w.lb.dp.ctlLegs(kern.CtlPool, legs)
	if err != nil {
		w.lb.log.Error("pooling dialed connections", "worker", w.spec.Addr, "err", err)
	}
	if slices.Contains(res, kern.CtlDone) {
		w.lb.replay.poke() // held client data may go now
	}
	return res // what the runs before an error did; CtlNoLeg (0) after it
}

// dialOutcome judges a dialed connection by its pooling's result: nil when
// it is pooled, errPending while its worker has not answered (its SYN sent
// again after a TIME-WAIT's reset or a second of silence), or why it
// failed.
func (w *worker) dialOutcome(p *pendingSyn, pooled uint32) error {
	dp, d := w.lb.dp, w.lb.dialer
	switch pooled {
	case kern.CtlDone:
		return nil
	case kern.CtlRefused:
		// Made, but ended before it was pooled (its event forgets it and
		// frees the port), or its worker has no pool (retired: endRetired
		// ends it).
		return fmt.Errorf("dial %s: the connection ended before it was pooled", p.key.Peer)
	}
	hs, ok := dp.peekDial(p.key)
	switch {
	case !ok && !p.gone:
		p.gone = true
		return errPending
	case !ok:
		// Neither a leg nor a handshake, twice: the connection ended and
		// was forgotten already (its event freed the port).
		return fmt.Errorf("dial %s: the connection ended before it was pooled", p.key.Peer)
	case hs.Flags&kern.HSRefused != 0:
		dp.dropDial(p.key)
		w.dialFailed(p)
		return fmt.Errorf("dial %s: %w", p.key.Peer, errRefused)
	case hs.Flags&kern.HSRetry != 0 || time.Since(p.sent) >= synResend:
		if p.tries >= 4 {
			dp.dropDial(p.key)
			w.dialFailed(p)
			return fmt.Errorf("dial %s: no answer to %d SYNs", p.key.Peer, p.tries)
		}
		if err := d.send(dp, p, w.id, w.lb.workerMSS); err != nil {
			dp.dropDial(p.key)
			w.dialFailed(p)
			return err
		}
	}
	p.gone = false
	return errPending
}

// dialFailed forgets a dialed connection that made no leg: out of w.legs,
// its port free.
func (w *worker) dialFailed(p *pendingSyn) {
	w.mu.Lock()
	if w.legs[p.key] == dialedSock {
		delete(w.legs, p.key)
	}
	w.mu.Unlock()
	w.lb.dialer.release(p.key)
}
