package splice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
	"github.com/xlb-lb/xlb/xdp"
	"golang.org/x/sys/unix"

	"github.com/xlb-lb/xlb/internal/runstate"
)

// Config is what `xlb IFACE PORT WORKER...` asks for.
type Config struct {
	// Iface is the first interface of the command line's list: its
	// addresses are listened on, and the pins and the control socket are
	// named after it. Ifaces is the whole list, Iface first (empty: Iface
	// alone); the program is attached to each, in the same mode. In routed
	// mode the worker side's interface must be in it: SYN-ACKs and replies
	// arrive there.
	Iface   string
	Ifaces  []string
	Listen  []netip.Addr // empty: every address of Iface of the workers' families
	Port    uint16
	Workers []WorkerSpec
	Pool    int // legs per worker and unit of weight beyond its share of the busy ones
	Policy  Policy
	Mode    xdp.Mode
	Force   bool // replace another XDP program on Iface
	Reuse   bool // take over from the xlb running on Iface (see handover.go)
	Routed  bool // rewritten packets leave by XDP_TX/redirect, not through the local stack
	// KernelHandshake leaves clients' SYNs to the listener (each client
	// is then accepted, and its socket destroyed), instead of the data
	// plane answering them (kern.ConfigAnswerSyn).
	KernelHandshake bool
	// PassHTTP10 sends HTTP/1.0 requests without keep-alive on as they
	// are: the worker closes its connection after each answer. By default
	// (kern.ConfigKeepHttp10) the data plane adds "Connection: keep-alive"
	// to such a request, reads the answer's length, ends the client's
	// connection after it and keeps the worker's (README "Short-lived
	// clients", kern/bpf/xlb.c keep_request).
	PassHTTP10 bool
	// DropOnEmptyPool drops a client's data that finds no idle worker
	// connection, for the client to send again after its retransmission
	// timeout. By default (kern.ConfigHoldFirst) the data plane keeps it
	// and user space runs it through the program again once a connection
	// is pooled (held.go).
	DropOnEmptyPool bool
	// NoPoolAhead leaves the pools to grow from the clients' data. By
	// default (kern.ConfigSynDemand) the data plane reports the clients'
	// SYNs that outnumber the idle worker connections, and the pools grow
	// before those clients' first data comes.
	NoPoolAhead bool
	// Dial is how pool connections are opened: DialXDP without sockets
	// (user space sends the SYN, the data plane completes the handshake:
	// dial.go), DialSocket connect()ed, read in repair mode and
	// registered, DialAuto (the zero value) as DialXDP for the workers it
	// suits (worker.dialsXDP).
	Dial    DialMode
	Socket  string
	MaxLegs uint32
	// WorkerMSS is the TCP_MAXSEG of worker connections (0: from Iface's
	// MTU, see WorkerMSS).
	WorkerMSS int
	// WorkerConns caps the connections to each worker, idle or busy (0: no
	// cap): a pool does not grow past it when clients are many.
	WorkerConns int
	// IdleRelease is how long a client with no request in flight keeps
	// its worker connection (0: until its next request).
	IdleRelease time.Duration
	// Protocol is how message boundaries are told (--protocol): the
	// data plane classifies each connection (auto), or applies one rule
	// set, or pins every connection (raw).
	Protocol kern.Protocol
	// ClientTimeout: a client silent this long (its worker too) has its
	// connection closed (0: never).
	ClientTimeout time.Duration
	// QueueTimeout: a client whose request waited this long for a worker
	// connection is reset (0: never).
	QueueTimeout time.Duration
	// DrainTimeout bounds how long a draining worker waits for clients
	// pinned to it (a TLS session, an upgraded stream) to leave; then
	// their connections are closed (0: wait for ever).
	DrainTimeout time.Duration
	// Check is the active health check of every worker (--check; nil:
	// none, the passive check only).
	Check *CheckSpec
	// LogEvery: the data plane writes a request record for one request in
	// LogEvery (1: all, 0: none): the access log and the latency
	// histograms are made of them.
	LogEvery uint32
	// AccessLog is where the records go, one JSON object a line ("-":
	// standard output, "": nowhere).
	AccessLog string
	// SlowStart: a worker that comes back up (a check, a connection
	// after failures) has its weight ramped over this (0: at once).
	SlowStart time.Duration
	// Announce names the TUN device that is up while this xlb serves (a
	// worker takes requests), for a routing daemon to announce the
	// service address by (announce.go; "": none).
	Announce string

	// ShutdownTimeout bounds how long in-flight requests may take to finish
	// when xlb stops.
	ShutdownTimeout time.Duration
	// Linger is how long a finished leg's entries stay, so that late
	// retransmissions (a lost last ACK) are still translated.
	Linger time.Duration

	Log *slog.Logger
}

// Defaults.
const (
	// DefaultPool is the legs kept per worker and unit of weight beyond the
	// worker's share of those busy with clients. A burst of new clients
	// larger than the idle pool loses the first request of the surplus ones
	// (dropped, retransmitted after an RTO): with wrk -t2 -c50 against three
	// workers, a pool of 8 gave p99 of 80-150 ms, 32 gave 1.4 ms.
	DefaultPool            = 32
	DefaultShutdownTimeout = 10 * time.Second
	// DefaultDrainTimeout is how long a drain waits for pinned clients.
	DefaultDrainTimeout = 5 * time.Minute
	DefaultLinger       = 3 * time.Second
	// quietPeriod is how long a connection must be silent, all bytes
	// acknowledged, to count as having no request in flight.
	quietPeriod = 500 * time.Millisecond
	// maxRetiredPerTick bounds the retired legs ended per reaper tick.
	maxRetiredPerTick = 2048
	// maxQueued bounds the clients remembered as waiting for a worker
	// connection (queuedSince).
	maxQueued = 1 << 20
	// DefaultQueueTimeout is how long a client's request may wait for a
	// worker connection.
	DefaultQueueTimeout = 30 * time.Second
	// reapTick is how often finished legs are reaped and stuck ones found.
	reapTick = 250 * time.Millisecond
	// eventPoll and eventPollIdle: how often the event ring is looked at
	// for the events that do not wake us, while events come and else.
	eventPoll     = 5 * time.Millisecond
	eventPollIdle = 250 * time.Millisecond
	// stuckClosing is how long a leg may wait for the last ACK of a close
	// the data plane answered before it is reaped anyway. The data plane
	// cannot resend its FIN: when the peer's last ACK is lost, the peer
	// (in TIME-WAIT) sends nothing more. A peer still waiting for our FIN
	// resends its own, which refreshes the wait; one that resends after
	// the reap is reset by the stack, which costs a closing connection
	// nothing.
	stuckClosing = 10 * time.Second
	// sweepEvery is how often the leg table is swept (see sweep).
	sweepEvery = 7500 * time.Millisecond
	// DefaultClientTimeout is how long a client may stay silent.
	DefaultClientTimeout = 10 * time.Minute
)

// wantFiles is the descriptor limit xlb asks for: it holds a socket for
// every worker connection, and one that ended holds its port for Linger
// (a worker that closes after every answer, at 10k requests a second,
// holds 30k).
const wantFiles = 1 << 20

// raiseFileLimit raises RLIMIT_NOFILE towards wantFiles (Go already took
// the soft limit up to the hard one); without CAP_SYS_RESOURCE it says
// what the limit stays at.
func raiseFileLimit(log *slog.Logger) {
	var l unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &l) != nil || l.Max >= wantFiles {
		return
	}
	want := unix.Rlimit{Cur: wantFiles, Max: wantFiles}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &want); err != nil {
		log.Info("open files limited", "limit", l.Max, "err", err)
	}
}

// fileBudget is how many descriptors worker connections may take: the
// open-file limit less a reserve for everything else (listeners, the
// control socket and its clients, maps, the metrics server). Worker
// connections past it would starve those: accept() and the control socket
// fail with EMFILE, and xlb can no longer be asked what is wrong.
func fileBudget() int {
	var l unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &l) != nil {
		return 1 << 30
	}
	cur := int(min(l.Cur, 1<<30))
	return cur - max(cur/16, 256)
}

// Policy decides which worker leg a request goes to.
type Policy string

// Policies.
const (
	// PolicyJIQ (join the idle queue, the default) moves a client at every
	// request boundary to the worker connection idle the longest, so a slow
	// worker, whose connections come back late, gets fewer requests.
	PolicyJIQ Policy = "jiq"
	// PolicyRR gives each request to the next worker in turn (weighted).
	PolicyRR Policy = "rr"
	// PolicyLeast gives each request to the worker with the fewest
	// connections busy with a client, per unit of weight.
	PolicyLeast Policy = "least"
	// PolicySticky keeps a client on the connection it was first given,
	// unless told otherwise (xlb ctl rematch) or its worker drains.
	PolicySticky Policy = "sticky"
)

// Policies lists the policy names, for help and errors.
const Policies = "jiq, rr, least or sticky"

// Protocols lists the --protocol values, for help and errors.
const Protocols = "auto, http, resp, memcache or raw"

// ParseProtocol checks a --protocol value.
func ParseProtocol(s string) (kern.Protocol, error) {
	if p, ok := kern.Protocols[s]; ok {
		return p, nil
	}
	return 0, fmt.Errorf("unknown protocol %q: want %s", s, Protocols)
}

// ParsePolicy checks a policy name.
func ParsePolicy(s string) (Policy, error) {
	if _, ok := policyCodes[Policy(s)]; ok {
		return Policy(s), nil
	}
	return "", fmt.Errorf("unknown policy %q: want %s", s, Policies)
}

var policyCodes = map[Policy]kern.Policy{
	PolicyJIQ: kern.PolicyJIQ, PolicyRR: kern.PolicyRR, PolicyLeast: kern.PolicyLeast, PolicySticky: kern.PolicySticky,
}

// code is the data plane's number of the policy ("" is jiq).
func (p Policy) code() kern.Policy { return policyCodes[p] }

// PinDir is where the state of the instance on iface is pinned.
func PinDir(iface string) string { return runstate.PinDir(iface) }

// LB is a running load balancer.
type LB struct {
	cfg Config
	log *slog.Logger
	dp  *DataPlane

	listeners []*net.TCPListener
	reqlog    *reqLog     // request records: the access log, the latency histograms
	files     int         // descriptors worker connections may take (fileBudget)
	filesFull atomic.Bool // the budget capped a pool (logged once)
	dialer    *dialer     // pool connections without sockets (nil with DialSocket, unless a takeover passed dialed legs)
	replay    *replayer   // client data held while the pools were empty (nil with DropOnEmptyPool)
	workerMSS int         // TCP_MAXSEG of worker legs (Config.WorkerMSS, or from the MTU)
	schedMu   sync.Mutex  // serialises updateSchedule

	wmu     sync.RWMutex // guards workers, byID and nextID (workers come and go: xlb ctl)
	nextID  uint32       // the id of the next worker added
	workers []*worker
	byID    map[uint32]*worker

	mu         sync.Mutex
	reapQueue  reapQueue
	earlyDue   []reapItem    // taken off reapQueue early, forgotten by readEvents
	earlySpare []reapItem    // earlyDue's other buffer (reapEarly's, in readEvents)
	adopted    atomic.Uint64 // client connections adopted
	unspliced  atomic.Uint64 // accepted connections without a client leg
	waiting    atomic.Int64  // clients that found the pool empty, this reaper tick
	demandAt   atomic.Int64  // when a new client's SYN last found the idle connections counted for (kern.EventDemand), Unix ns
	freshMu    sync.Mutex
	fresh      int                          // new clients without a request yet (freshClients), as last counted
	freshAt    time.Time                    // when
	queued     map[kern.LegKey]queuedClient // clients whose request found no worker connection
	mismatches atomic.Uint64                // client legs whose numbers disagree with the socket
	earlyReaps atomic.Uint64                // finished legs forgotten before Linger (a full table)

	events      *ebpf.RingBufReader
	control     *net.UnixListener
	attached    []string // interfaces our program is attached to
	progID      uint32   // our program's id: what we detach, and what a takeover must leave attached for us to resume
	pinned      bool
	reused      map[string]*ebpf.Map // pinned maps taken over (--reuse); we close them
	announcer   *announcer           // --announce: nil without
	cancel      context.CancelFunc
	loopCtx     context.Context // of the running loops (workers added later run in it)
	pausing     atomic.Bool
	handingOver atomic.Bool // a takeover is under way (giveHandover)
	wg          sync.WaitGroup
	done        chan struct{} // closed when the load balancer handed over and stopped
}

type reapItem struct {
	key    kern.LegKey
	at     time.Time
	peerHi uint32 // the finished leg's, which tells it from a new leg of the same 4-tuple
}

// Start brings the load balancer up: data plane loaded and attached, pool
// filling, listening. Stop it with Shutdown.
func Start(cfg Config) (*LB, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Pool <= 0 {
		cfg.Pool = DefaultPool
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.Linger <= 0 {
		cfg.Linger = DefaultLinger
	}
	raiseFileLimit(cfg.Log)
	reqlog, err := openReqLog(cfg.AccessLog)
	if err != nil {
		return nil, err
	}
	lb := &LB{
		reqlog:    reqlog,
		files:     fileBudget(),
		cfg:       cfg,
		log:       cfg.Log,
		byID:      map[uint32]*worker{},
		queued:    map[kern.LegKey]queuedClient{},
		done:      make(chan struct{}),
		workerMSS: cfg.WorkerMSS,
	}
	if lb.workerMSS == 0 {
		lb.workerMSS = WorkerMSS(1500)
		if ifc, err := net.InterfaceByName(cfg.Iface); err == nil {
			lb.workerMSS = WorkerMSS(ifc.MTU)
		}
	}
	if cfg.Dial != DialSocket {
		d, err := newDialer()
		switch {
		case err == nil:
			lb.dialer = d
		case cfg.Dial == DialAuto:
			cfg.Log.Warn("worker connections opened with sockets", "err", err, "hint", "CAP_NET_RAW lets xlb open them without")
		default:
			return nil, err
		}
	}
	if !lb.cfg.DropOnEmptyPool {
		r, err := newReplayer()
		if err != nil {
			cfg.Log.Warn("client data that finds no idle worker connection is dropped (--empty-pool drop)", "err", err, "hint", "CAP_NET_RAW lets xlb hold it")
			lb.cfg.DropOnEmptyPool = true
		}
		lb.replay = r
	}
	if cfg.Announce != "" {
		// Before the takeover (--reuse): the old process's queue and
		// ours overlap, the device stays up.
		a, err := openAnnounce(cfg.Announce)
		if err != nil {
			lb.teardown()
			return nil, err
		}
		lb.announcer = a
		if a.up {
			cfg.Log.Info("announcing: the device is up, held by another xlb (a takeover keeps it up)", "device", a.name)
		}
	}
	if err := lb.start(); err != nil {
		lb.teardown()
		return nil, err
	}
	return lb, nil
}

func (lb *LB) start() error {
	cfg := lb.cfg
	if len(cfg.Workers) == 0 {
		return errors.New("no workers given: name at least one HOST:PORT")
	}
	fams := workerFamilies(cfg.Workers)
	if fams[unix.AF_INET6] && cfg.Dial == DialXDP {
		return errors.New("--dial xdp: the data plane dials IPv4 workers only; IPv6 workers are dialed with sockets (--dial socket, or auto)")
	}
	addrs, err := listenAddrs(cfg.Iface, cfg.Listen, fams)
	if err != nil {
		return err
	}
	if list, err := ParseIfaces(strings.Join(cfg.ifaces(), ",")); err != nil || list[0] != cfg.Iface {
		return fmt.Errorf("Config.Ifaces %q must start with Config.Iface %q and name each interface once (%v)", cfg.Ifaces, cfg.Iface, err)
	}
	if err := ebpf.RemoveMemlockLimit(); err != nil {
		return err
	}
	stale := map[string]bool{} // interfaces holding the program of an xlb that died
	if cfg.Reuse {
		err := lb.takeOver()
		if err == nil || !errors.Is(err, ErrNoInstance) {
			return err
		}
		lb.log.Warn("--reuse: no running xlb to take over from; starting afresh", "reason", err)
		if err := os.RemoveAll(PinDir(cfg.Iface)); err != nil {
			return fmt.Errorf("removing stale pins: %w", err)
		}
		// A data plane left attached by an xlb that died is ours to replace.
		for _, ifc := range cfg.ifaces() {
			if st, err := xdp.Query(ifc); err == nil && st.Attached {
				if p, m, err := kern.Attached(st.ProgID); err == nil {
					p.Close()
					m.Close()
					stale[ifc] = true
				}
			}
		}
	}
	for _, ifc := range cfg.ifaces() {
		st, err := xdp.Query(ifc)
		if err != nil {
			return err
		}
		if st.Attached && !cfg.Force && !stale[ifc] {
			if _, _, err := kern.Attached(st.ProgID); err == nil {
				return fmt.Errorf("an xlb data plane is already attached to %s (program id %d): another xlb runs there; stop it, or restart with --reuse to take over", ifc, st.ProgID)
			}
			return fmt.Errorf("another XDP program (id %d) is attached to %s; use --force to replace it", st.ProgID, ifc)
		}
	}
	objs, err := kern.LoadWith(kern.LoadOptions{MaxLegs: cfg.MaxLegs})
	if err != nil {
		return err
	}
	if err := lb.useObjects(objs); err != nil {
		return err
	}

	// The service's ports are bound now (another program holding one is
	// an error before anything is attached) but listened on only once the
	// data plane is attached: a client that connected in between would
	// reach a socket the data plane knows nothing of, and be closed
	// ("client connection without a leg"). Until then SYNs to them are
	// refused, as before xlb ran.
	reserved := make([]int, 0, len(addrs))
	defer func() {
		for _, fd := range reserved {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}()
	for _, a := range addrs {
		fd, err := bindPort(netip.AddrPortFrom(a, cfg.Port))
		if err != nil {
			return err
		}
		reserved = append(reserved, fd)
	}
	// A listener on another port of the same address announces the same
	// window scale and MSS: the first address of each family says what
	// the data plane announces to that family's clients.
	kc := kern.Config{ListenPort: cfg.Port, Flags: cfg.flags(), Policy: cfg.Policy.code(),
		Protocol: cfg.Protocol, RestWin: uint32(2 * lb.workerMSS), LogEvery: cfg.LogEvery}
	probed := map[int]bool{}
	for _, a := range addrs {
		if probed[family(a)] {
			continue
		}
		probed[family(a)] = true
		wscale, mss, err := probeAddr(a)
		if err != nil {
			return fmt.Errorf("probing the listener's window scale on %s: %w", a, err)
		}
		if len(probed) == 1 {
			kc.OurWScale = wscale
		}
		if family(a) == unix.AF_INET6 {
			kc.OurMSS6 = mss
		} else {
			kc.OurMSS = mss
		}
	}
	if kc.OurMSS == 0 {
		kc.OurMSS = kc.OurMSS6 // an IPv6-only service: both say the same
	}
	switch {
	case len(addrs) == 1:
		kc.ListenAddr = addrs[0]
	case len(fams) == 1:
		kc.ListenAddr = unspecified(family(addrs[0])) // any address of that family (listenAddrs)
	default:
		// The zero Addr: any local address of either family.
	}
	if err := lb.dp.SetConfig(kc); err != nil {
		return err
	}
	for i, ws := range cfg.Workers {
		w := &worker{lb: lb, spec: ws, id: uint32(i), legs: map[kern.LegKey]sock{}, born: map[kern.LegKey]bornLeg{}, kick: make(chan struct{}, 1)}
		if err := lb.dp.SetWorker(ws.Addr, kern.WorkerInfo{ID: w.id}); err != nil {
			return err
		}
		lb.addWorker(w)
	}
	if err := lb.setupPools(); err != nil {
		return err
	}
	if err := lb.checkControlFree(); err != nil {
		return err
	}
	mode := cfg.Mode
	for _, ifc := range cfg.ifaces() {
		// The first attach settles an auto mode; the others follow it.
		if mode, err = xdp.Attach(ifc, objs.Program.FD(), xdp.AttachOptions{Mode: mode, Force: cfg.Force || stale[ifc]}); err != nil {
			return err // teardown detaches from the ones before
		}
		lb.attached = append(lb.attached, ifc)
	}
	for i, a := range addrs {
		ln, err := listenBound(reserved[i], netip.AddrPortFrom(a, cfg.Port))
		if err != nil {
			return err
		}
		reserved[i] = -1 // the listener holds it now
		lb.listeners = append(lb.listeners, ln)
	}
	lb.log.Info("data plane attached", "iface", strings.Join(lb.attached, ","), "mode", mode.String(), "listen", fmt.Sprint(addrs), "port", cfg.Port,
		"window_scale", kc.OurWScale, "workers", len(cfg.Workers), "pool", cfg.Pool)

	if runstate.PinsTransient() {
		lb.log.Warn("the data plane's pins will not outlive this process: --reuse cannot take over from it, and should it be killed its program loses its tail calls", "reason", runstate.TransientHint)
	}
	if err := lb.dp.Objs.Pin(PinDir(cfg.Iface)); err != nil {
		return fmt.Errorf("pinning the data plane (needed for --reuse): %w", err)
	}
	lb.pinned = true
	return lb.startLoops()
}

// socketPath is the control socket's path.
func (lb *LB) socketPath() string {
	if lb.cfg.Socket != "" {
		return lb.cfg.Socket
	}
	return DefaultSocket(lb.cfg.Iface)
}

// checkControlFree fails early if another xlb answers on our control socket.
func (lb *LB) checkControlFree() error {
	if c, err := net.DialTimeout("unix", lb.socketPath(), time.Second); err == nil {
		c.Close()
		return fmt.Errorf("control socket %s is in use: an xlb already runs there (use --reuse to take over, or --socket to choose another)", lb.socketPath())
	}
	return nil
}

// startLoops starts the goroutines that run the load balancer: events,
// pools, accept loops, reaper, control socket.
func (lb *LB) startLoops() error {
	var err error
	if lb.events == nil { // a takeover makes its reader before the swap
		if lb.events, err = ebpf.NewRingBufReader(lb.dp.Objs.Events); err != nil {
			return err
		}
	}
	if lb.control == nil {
		if lb.control, err = listenControl(lb.socketPath()); err != nil {
			return err
		}
		go lb.serveControl(lb.control)
	}
	lb.runLoops()
	return nil
}

// runLoops starts the goroutines of startLoops, once the event reader is
// made.
func (lb *LB) runLoops() {
	ctx, cancel := context.WithCancel(context.Background())
	lb.cancel, lb.loopCtx = cancel, ctx
	lb.pausing.Store(false)
	events := lb.events
	lb.goroutine(func() { lb.readEvents(events) })
	for _, w := range lb.workerList() {
		lb.goroutine(func() { w.run(ctx) })
		lb.goroutine(func() { w.checkLoop(ctx) })
	}
	for _, ln := range lb.listeners {
		ln.SetDeadline(time.Time{})
		lb.goroutine(func() { lb.accept(ln) })
	}
	lb.goroutine(func() { lb.reaper(ctx) })
	if lb.cfg.LogEvery > 0 {
		if rd, err := ebpf.NewRingBufReader(lb.dp.Objs.ReqLog); err != nil {
			lb.log.Error("request records: no access log, no latency histograms", "err", err)
		} else {
			lb.goroutine(func() { lb.readRequests(ctx, rd) })
		}
	}
	lb.goroutine(func() { lb.releaser(ctx) })
	if lb.replay != nil {
		lb.goroutine(func() { lb.replayLoop(ctx) })
	}
	if lb.cfg.Routed {
		lb.goroutine(func() { lb.watchNextHops(ctx) })
	}
	if lb.announcer != nil {
		lb.goroutine(func() { lb.announceLoop(ctx.Done()) })
	}
}

// stopLoops stops what startLoops started, but the control socket.
func (lb *LB) stopLoops() {
	lb.pausing.Store(true)
	if lb.cancel != nil {
		lb.cancel()
	}
	for _, ln := range lb.listeners {
		ln.SetDeadline(time.Now()) // wakes Accept
	}
	if lb.events != nil {
		lb.events.Close()
		lb.events = nil
	}
	lb.wg.Wait()
}

func (lb *LB) goroutine(fn func()) {
	lb.wg.Add(1)
	go func() {
		defer lb.wg.Done()
		fn()
	}()
}

// workerFamilies are the address families of a service's workers
// (AF_INET, AF_INET6). The data plane splices a client onto worker
// connections of its own family only (it rewrites addresses, not IP
// headers): the service listens on its workers' families, and a client of
// each goes to that family's workers (their own tokens and schedule).
func workerFamilies(ws []WorkerSpec) map[int]bool {
	fams := map[int]bool{}
	for _, w := range ws {
		fams[family(w.Addr.Addr())] = true
	}
	return fams
}

// examplePair is want with an address of fam added, for a message.
func examplePair(fam int, want []netip.Addr) string {
	s := make([]string, 0, len(want)+1)
	for _, a := range want {
		s = append(s, a.String())
	}
	if fam == unix.AF_INET6 {
		return strings.Join(append(s, "::1"), ",")
	}
	return strings.Join(append(s, "127.0.0.1"), ",")
}

// unspecified is 0.0.0.0 or :: for fam.
func unspecified(fam int) netip.Addr {
	if fam == unix.AF_INET6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// familyName names fam for messages.
func familyName(fam int) string {
	if fam == unix.AF_INET6 {
		return "IPv6"
	}
	return "IPv4"
}

// listenAddrs returns the addresses to listen on: want if given (each of
// one of the families fams), else every address of the interface of those
// families (IPv6: not the link-local ones, which need a zone). Each
// family must have one: its workers would serve nobody.
func listenAddrs(iface string, want []netip.Addr, fams map[int]bool) ([]netip.Addr, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("interface %q not found (see `ip link`): %w", iface, xdp.ErrNoInterface)
	}
	out := want
	for _, a := range want {
		if !fams[family(a)] || a.Zone() != "" {
			return nil, fmt.Errorf("--listen %s: no worker is %s (a client is spliced onto worker connections of its own family); listen on addresses of the workers' families, without a zone", a, familyName(family(a)))
		}
	}
	if len(want) == 0 {
		as, err := ifi.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", iface, err)
		}
		for _, a := range as {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && fams[family(ip)] && !ip.IsLinkLocalUnicast() {
					out = append(out, ip.Unmap())
				}
			}
		}
	}
	for fam := range fams {
		if slices.ContainsFunc(out, func(a netip.Addr) bool { return family(a) == fam }) {
			continue
		}
		if len(want) > 0 {
			return nil, fmt.Errorf("--listen: no %s address, but workers are %s: they would serve nobody (add one, e.g. --listen %s)", familyName(fam), familyName(fam), examplePair(fam, want))
		}
		return nil, fmt.Errorf("interface %s has no %s address to listen on, and workers are %s (give one with --listen, or add one)", iface, familyName(fam), familyName(fam))
	}
	return out, nil
}

func listen(ap netip.AddrPort) (*net.TCPListener, error) {
	lc := net.ListenConfig{KeepAlive: -1} // accepted sockets must stay quiet
	ln, err := lc.Listen(context.Background(), network(ap.Addr()), ap.String())
	if err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, errPortInUse(ap)
		}
		return nil, fmt.Errorf("listen on %s: %w", ap, err)
	}
	return ln.(*net.TCPListener), nil
}

// errPortInUse says that another program holds ap.
func errPortInUse(ap netip.AddrPort) error {
	return fmt.Errorf("port %d on %s is in use by another program (see `ss -ltnp 'sport = %d'`)", ap.Port(), ap.Addr(), ap.Port())
}

// bindPort binds a TCP socket to ap without listening: it holds the port
// (SYNs to it are refused) until listenBound makes it a listener. Options
// as net.Listen sets them.
func bindPort(ap netip.AddrPort) (int, error) {
	fd, err := unix.Socket(family(ap.Addr()), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, fmt.Errorf("listen on %s: %w", ap, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("listen on %s: %w", ap, err)
	}
	if family(ap.Addr()) == unix.AF_INET6 {
		// One family a listener, as the data plane's service address.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("listen on %s: %w", ap, err)
		}
	}
	if err := unix.Bind(fd, sockaddr(ap)); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EADDRINUSE) {
			return -1, errPortInUse(ap)
		}
		return -1, fmt.Errorf("listen on %s: %w", ap, err)
	}
	return fd, nil
}

// listenBound makes fd, bound by bindPort, a listener. The listener holds
// a descriptor of its own: fd is closed, also on error.
func listenBound(fd int, ap netip.AddrPort) (*net.TCPListener, error) {
	f := os.NewFile(uintptr(fd), "xlb listener "+ap.String())
	defer f.Close()
	if err := unix.Listen(fd, listenBacklog()); err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, errPortInUse(ap)
		}
		return nil, fmt.Errorf("listen on %s: %w", ap, err)
	}
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", ap, err)
	}
	return ln.(*net.TCPListener), nil
}

// listenBacklog is the kernel's limit on a listener's backlog
// (net.core.somaxconn), as Go's net.Listen uses it.
func listenBacklog() int {
	b, err := os.ReadFile("/proc/sys/net/core/somaxconn")
	if err != nil {
		return unix.SOMAXCONN
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return unix.SOMAXCONN
	}
	return min(n, 1<<16-1)
}

// probeAddr reads the window scale and MSS a listener on addr announces,
// from one on a port of its own (probeListener).
func probeAddr(addr netip.Addr) (uint8, uint16, error) {
	ln, err := listen(netip.AddrPortFrom(addr, 0))
	if err != nil {
		return 0, 0, err
	}
	defer ln.Close()
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	return probeListener(netip.AddrPortFrom(addr, ap.Port()), ln)
}

// probeListener connects to the listener before the data plane is attached
// and reads the window scale and MSS the listener announces: the data plane
// needs them for client legs, which it builds from the handshake alone.
func probeListener(ap netip.AddrPort, ln *net.TCPListener) (uint8, uint16, error) {
	d := net.Dialer{Timeout: connectTimeout, KeepAlive: -1}
	c, err := d.Dial(network(ap.Addr()), ap.String())
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	ln.SetDeadline(time.Now().Add(connectTimeout))
	defer ln.SetDeadline(time.Time{})
	for i := 0; i < 16; i++ { // another client may have come first
		s, err := ln.AcceptTCP()
		if err != nil {
			return 0, 0, err
		}
		same := s.RemoteAddr().String() == c.LocalAddr().String()
		var st SocketState
		if same {
			st, err = connState(s)
		}
		s.Close()
		if !same {
			continue
		}
		if err != nil {
			return 0, 0, err
		}
		if st.Options&tcpiOptWScale == 0 {
			return 0, uint16(min(st.AdvMSS, 0xffff)), nil
		}
		return st.RcvWScale, uint16(min(st.AdvMSS, 0xffff)), nil
	}
	return 0, 0, errors.New("the probe connection was not accepted")
}

// accept adopts every client connection.
func (lb *LB) accept(ln *net.TCPListener) {
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || lb.pausing.Load() {
				return
			}
			lb.log.Warn("accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		key, err := legKeyOf(c)
		if err != nil {
			c.Close()
			continue
		}
		lb.adoptClient(c, key)
	}
}

// crossCheckEvery: the first crossCheckFirst client sockets, then one in
// this many, are compared with the leg the data plane built from the
// handshake (reading a socket in repair mode costs eight system calls).
const (
	crossCheckFirst = 64
	crossCheckEvery = 64
)

// adoptClient takes over an accepted client connection. The data plane
// learnt its leg from the handshake and handles every packet of it from now
// on; the kernel's socket, which will never see a packet of it again, is
// destroyed silently. Keeping it would keep the 4-tuple: a client that
// reconnects from the same port (it closed second, so it has no TIME-WAIT)
// would have its SYN taken by the stale socket, answered with a challenge
// ACK, and retried a second later.
func (lb *LB) adoptClient(c *net.TCPConn, key kern.LegKey) {
	leg, err := lb.dp.Leg(key)
	if err != nil {
		// No client leg: the handshake happened before the data plane was
		// attached, or the leg table is full. The kernel owns this
		// connection; end it properly.
		lb.unspliced.Add(1)
		lb.log.Warn("client connection without a leg, closing it", "client", key.Peer, "err", err)
		c.Close()
		return
	}
	check := false
	if n := lb.adopted.Add(1); n <= crossCheckFirst || n%crossCheckEvery == 0 {
		check = true
	}
	err = rawControl(c, func(fd int) error {
		if check {
			lb.crossCheck(key, fd, leg)
		}
		return unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, tcpRepairOn)
	})
	if cerr := c.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		lb.log.Warn("destroying an adopted client socket", "client", key.Peer, "err", err)
	}
	// Every client takes a worker leg at its first request: top the pools up
	// now, while the client is still writing it.
	for _, w := range lb.workerList() {
		w.poke()
	}
}

// crossCheck compares the client leg the data plane built from the
// handshake with the socket the kernel made of it: options and window
// scales always; sequence numbers while the leg has had no data yet (after
// that the data plane has moved them on).
func (lb *LB) crossCheck(key kern.LegKey, fd int, leg kern.Leg) {
	st, err := ReadSocketState(fd)
	if err != nil {
		lb.log.Warn("reading a client socket", "client", key.Peer, "err", err)
		return
	}
	fresh := leg.State == kern.LegIdle && leg.Requests == 0 && leg.Proto == kern.ProtoNone
	if bad := CheckClientLeg(leg, st, fresh); len(bad) > 0 {
		lb.mismatches.Add(1)
		lb.log.Warn("client leg built from the handshake disagrees with the socket", "client", key.Peer, "diff", strings.Join(bad, "; "))
	}
}

// readEvents consumes the data plane's events until the reader is closed.
func (lb *LB) readEvents(r *ebpf.RingBufReader) {
	var last time.Time // of the last event
	buf := make([]byte, 0, 256)
	for {
		rec, ok := r.TryReadAppend(buf)
		if !ok {
			// Caught up: the legs due early go now, in one run or a few,
			// before we wait. Finished legs' events do not wake us (kern
			// emit()) until a batch of them waits: look every
			// eventPoll while they come, every eventPollIdle else.
			lb.reapEarly()
			wait := eventPollIdle
			if time.Since(last) < time.Second {
				wait = eventPoll
			}
			var err error
			if rec, err = r.ReadTimeout(wait); errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			} else if err != nil {
				if !errors.Is(err, os.ErrClosed) {
					lb.log.Error("event ring", "err", err)
				}
				return
			}
		}
		last = time.Now()
		var ev kern.Event
		if err := ev.UnmarshalBinary(rec); err != nil {
			lb.log.Warn("bad event from the data plane", "err", err)
			continue
		}
		lb.handleEvent(ev)
	}
}

func (lb *LB) handleEvent(ev kern.Event) {
	switch ev.Type {
	case kern.EventLegClosed:
		if ev.Kind == kern.LegWorker {
			if w := lb.workerByID(ev.Worker); w != nil {
				w.mu.Lock()
				born := w.born[ev.Key]
				w.mu.Unlock()
				// Its socket goes now (silently: the connection ended
				// through the data plane); the entries linger for late
				// retransmissions. Holding sockets until then would hold
				// a descriptor and a port per connection for Linger: a
				// worker that closes after each answer, at 10k requests
				// a second, would take 30k of each.
				if c := w.forget(ev.Key); c != noSock {
					if err := c.closeSilently(); err != nil {
						lb.log.Warn("closing a finished worker connection", "leg", ev.Key, "err", err)
					}
				}
				w.deaths.Add(1)
				if ev.State == kern.LegIdle || ev.State == kern.LegClosing {
					w.poke() // an idle connection is gone: replace it
					w.pooledEnded(born, ev.PeerHi)
				}
			}
		}
		lb.mu.Lock()
		lb.reapQueue.push(reapItem{key: ev.Key, at: time.Now().Add(lb.cfg.Linger), peerHi: ev.PeerHi})
		// Finished legs wait out Linger, but not at the cost of new ones:
		// a client per request against a worker that closes after each
		// answer ends two legs a request, 138k in 3 s at the 23k requests
		// a second of ab -c50 (docs/BENCHMARKS.md), more than the table
		// holds (new clients would be refused). Past a quarter of the
		// table, the oldest go at once: at the end of this batch of
		// events (readEvents), or once a run's worth is due.
		var flush bool
		if lb.reapQueue.len() > int(lb.dp.Objs.Legs.MaxEntries()/4) {
			lb.earlyDue = append(lb.earlyDue, lb.reapQueue.pop())
			flush = len(lb.earlyDue) > kern.CtlItemsMax
		}
		lb.mu.Unlock()
		if flush {
			lb.reapEarly()
		}
	case kern.EventDemand:
		// New clients' SYNs used up the idle connections: they are
		// counted (freshClients) and the pools grow for them.
		lb.demandAt.Store(time.Now().UnixNano())
		for _, w := range lb.workerList() {
			w.poke()
		}
	case kern.EventPoolEmpty, kern.EventHeld:
		// A client's first request found no idle connection (it will
		// retransmit, or the data plane held it): count it into the
		// demand the pools are sized by, so that a burst of new clients
		// gets its connections in one round rather than a few dozen per
		// round.
		lb.waiting.Add(1)
		if ev.Type == kern.EventHeld && lb.replay != nil {
			lb.replay.note(ev.Key)
		}
		// Remembered for endQueued, the only reader and deleter: without a
		// queue timeout it never runs, and the entries would stay.
		if lb.cfg.QueueTimeout > 0 {
			lb.mu.Lock()
			if q, ok := lb.queued[ev.Key]; (!ok || q.peerHi != ev.PeerHi) && len(lb.queued) < maxQueued {
				lb.queued[ev.Key] = queuedClient{since: time.Now(), peerHi: ev.PeerHi}
			}
			lb.mu.Unlock()
		}
		for _, w := range lb.workerList() {
			w.poke()
		}
	case kern.EventPoolLow:
		// A take left a pool at its low watermark: refill it now.
		if w := lb.workerByID(ev.Worker); w != nil {
			w.poke()
		}
	}
}

// reaper forgets finished legs once their linger is over, and legs stuck
// waiting for the last ACK of a close.
func (lb *LB) reaper(ctx context.Context) {
	t := time.NewTicker(reapTick)
	defer t.Stop()
	lastScan := time.Now()
	var lastLost, lastFull uint64
	var due []reapItem
	if c, err := kern.ReadCounters(lb.dp.Objs.Stats); err == nil {
		lastFull = c[kern.CounterLegsFull] // counted before us (--reuse): said by them
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lb.waiting.Store(0) // by now their connections are open (or the pools capped)
		if err := lb.dp.Warm(); err != nil {
			lb.log.Error("pooling cooled worker connections", "err", err)
		}
		now := time.Now()
		lb.mu.Lock()
		due = lb.reapQueue.popDue(now, due[:0])
		lb.mu.Unlock()
		if len(due) > 0 {
			lb.reap(due)
		}
		lb.endRetired()
		lb.endQueued(now)
		// Finished legs are reaped on their events; when the ring lost
		// some (a burst of connections ending at once), a sweep finds
		// them now rather than at the next slow one.
		lost := uint64(0)
		if c, err := kern.ReadCounters(lb.dp.Objs.Stats); err == nil {
			lost = c[kern.CounterEventLost]
			if full := c[kern.CounterLegsFull]; full != lastFull {
				lb.log.Warn("leg table full: new clients are reset; raise --max-legs", "refused", full-lastFull, "max_legs", lb.dp.Objs.Legs.MaxEntries())
				lastFull = full
			}
		}
		if lostNow := lost != lastLost; now.Sub(lastScan) > sweepEvery || lostNow {
			lastScan, lastLost = now, lost
			lb.sweep(lostNow)
		}
	}
}

// reap forgets a finished leg's entries once its linger is over (its
// socket, if it had one, is gone already).
//
// A client may have reconnected from the same port meanwhile (it closed
// second, so it has no TIME-WAIT): the data plane then forgot the finished
// leg at the new SYN, and the entries under the key are the new
// connection's, its handshake included. Only the finished leg itself is
// forgotten, told by its positions, checked and deleted in one run of the
// data plane's control program (CTL_FORGET); a finished leg whose
// positions moved after its death is left to the sweep.
func (lb *LB) reap(items []reapItem) {
	if err := lb.dp.forgetAll(items); err != nil {
		lb.log.Error("forgetting finished legs", "err", err)
	}
}

// reapEarly forgets the legs handleEvent took off the reap queue early.
func (lb *LB) reapEarly() {
	lb.mu.Lock()
	due := lb.earlyDue
	lb.earlyDue = lb.earlySpare[:0]
	lb.mu.Unlock()
	if len(due) > 0 {
		lb.reap(due)
		lb.earlyReaps.Add(uint64(len(due)))
	}
	lb.earlySpare = due
}

// queuedClient is a client whose request found no worker connection: when,
// and its peer_hi then.
type queuedClient struct {
	since  time.Time
	peerHi uint32
}

// endQueued resets the clients whose request has waited for a worker
// connection longer than QueueTimeout (a worker too slow, or --worker-conns
// too small for the load). The client gets a RST, as from a server that
// could not take it: it would otherwise retransmit its request with an
// ever longer backoff, and after it gave up and closed, its FIN would wait
// behind the unacknowledged request (minutes in FIN-WAIT-1), its leg with
// it. Clients that got a connection meanwhile are forgotten.
func (lb *LB) endQueued(now time.Time) {
	if lb.cfg.QueueTimeout <= 0 {
		return
	}
	var due []kern.LegKey
	lb.mu.Lock()
	for k, q := range lb.queued {
		if now.Sub(q.since) > lb.cfg.QueueTimeout/4 {
			due = append(due, k)
		}
	}
	lb.mu.Unlock()
	reset := 0
	for _, k := range due {
		l, err := lb.dp.Leg(k)
		lb.mu.Lock()
		q := lb.queued[k]
		// Still waiting: idle, and no byte of it taken since its request
		// found no connection (a request served moves peer_hi on).
		if err != nil || l.Kind != kern.LegClient || l.State != kern.LegIdle || l.PeerHi != q.peerHi {
			delete(lb.queued, k) // served, gone, or closing
			lb.mu.Unlock()
			continue
		}
		lb.mu.Unlock()
		if now.Sub(q.since) < lb.cfg.QueueTimeout {
			continue
		}
		// Its request may be held (replayHeld): not sent on now, and the
		// leg read again, with no replay under way that could bind it
		// between that read and the reset (the reset deletes the leg, and
		// a worker leg bound to it would be left bound for ever).
		unlock := lb.replay.stop(k)
		if lb.replay != nil {
			lb.dropHeld(k)
			l, err = lb.dp.Leg(k)
			if err != nil || l.State != kern.LegIdle || l.PeerHi != q.peerHi {
				unlock()
				lb.mu.Lock()
				delete(lb.queued, k)
				lb.mu.Unlock()
				continue
			}
		}
		p, err := lb.positionsOf(k, &l)
		if err == nil {
			err = lb.resetLeg(p)
		}
		unlock()
		if err != nil {
			lb.log.Warn("resetting a client that waited too long", "client", k.Peer, "err", err)
			lb.dp.ForgetLeg(k)
		}
		lb.mu.Lock()
		delete(lb.queued, k)
		lb.mu.Unlock()
		reset++
	}
	if reset > 0 {
		lb.log.Warn("reset clients whose request waited too long for a worker connection", "count", reset, "queue_timeout", lb.cfg.QueueTimeout)
	}
}

// endRetired ends the worker legs the data plane took out of the pool (a
// trim): they were idle, so they count as idle deaths, and the connection is
// handed back to the kernel and closed, so that the worker sees a FIN.
func (lb *LB) endRetired() {
	for i := 0; i < maxRetiredPerTick; i++ {
		k, ok := lb.dp.PopRetired()
		if !ok {
			return
		}
		l, err := lb.dp.Leg(k)
		if err != nil {
			continue
		}
		c := lb.takeConn(k)
		if c == noSock {
			lb.dp.ForgetLeg(k)
			continue
		}
		p, err := lb.positionsOf(k, &l)
		if err == nil {
			err = lb.handBack(c, p)
		}
		if err != nil {
			lb.log.Warn("ending a retired worker connection", "leg", k, "err", err)
			lb.dp.ForgetLeg(k)
		}
	}
}

// sweep walks the leg table for legs that would otherwise stay for ever:
//   - finished legs whose reap was never scheduled (their event was lost)
//     or was skipped (their positions moved after their death): forgotten
//     once silent for Linger (lost events) or twice Linger;
//   - legs waiting in CLOSING for an ACK that never came (stuckClosing);
//   - client legs whose client has been silent for ClientTimeout (it may
//     have vanished without a FIN): an unbound one is handed back to the
//     kernel and closed (a FIN), a bound pair ended both ways (endPair).
func (lb *LB) sweep(eventsLost bool) {
	now := monotonicNs()
	// (A finished leg silent for two lingers is done: lingering is for
	// late retransmissions. It used to wait 30 s.)
	dead := 2 * lb.cfg.Linger
	if eventsLost {
		dead = lb.cfg.Linger
	}
	var stuck []reapItem
	var idle, bound []kern.LegKey
	lb.dp.ForEachLeg(func(k kern.LegKey, l *kern.Leg) bool {
		silent := time.Duration(int64(now - l.LastNs))
		switch {
		case l.State == kern.LegDead && silent > dead, l.State == kern.LegClosing && silent > stuckClosing:
			stuck = append(stuck, reapItem{key: k, peerHi: l.PeerHi})
		case l.Kind == kern.LegClient && lb.cfg.ClientTimeout > 0 && silent > lb.cfg.ClientTimeout:
			if l.State == kern.LegIdle {
				idle = append(idle, k)
			} else if l.State == kern.LegBound {
				bound = append(bound, k)
			}
		}
		return true
	})
	for _, it := range stuck {
		// As reap does: only that leg, not a new one of the same 4-tuple.
		if !lb.dp.forgetFinished(it.key, it.peerHi) {
			continue
		}
		lb.log.Debug("reaping a finished or stuck leg", "leg", it.key)
		if c := lb.takeConn(it.key); c != noSock {
			c.closeSilently()
		}
	}
	for _, k := range idle {
		l, err := lb.dp.Leg(k)
		if err != nil || l.State != kern.LegIdle {
			continue
		}
		p, err := lb.positionsOf(k, &l)
		if err == nil {
			err = lb.handBack(noSock, p)
		}
		if err != nil {
			lb.log.Warn("closing a silent client", "client", k.Peer, "err", err)
			lb.dp.ForgetLeg(k)
		}
	}
	for _, k := range bound {
		if w, err := lb.dp.Binding(k); err == nil {
			if wl, err := lb.dp.Leg(w.To); err != nil || time.Duration(int64(now-wl.LastNs)) < lb.cfg.ClientTimeout {
				continue // its worker is still talking: not silent
			}
		}
		if err := lb.endPair(k); err != nil {
			lb.log.Warn("closing a silent client", "client", k.Peer, "err", err)
		}
	}
	if n := len(idle) + len(bound); n > 0 {
		lb.log.Info("closed silent clients", "count", n, "timeout", lb.cfg.ClientTimeout)
	}
}

// workerList is a snapshot of the workers.
func (lb *LB) workerList() []*worker {
	lb.wmu.RLock()
	defer lb.wmu.RUnlock()
	return append([]*worker(nil), lb.workers...)
}

func (lb *LB) workerByID(id uint32) *worker {
	lb.wmu.RLock()
	defer lb.wmu.RUnlock()
	return lb.byID[id]
}

func (lb *LB) addWorker(w *worker) {
	lb.wmu.Lock()
	defer lb.wmu.Unlock()
	lb.nextID = max(lb.nextID, w.id+1)
	lb.workers = append(lb.workers, w)
	lb.byID[w.id] = w
}

// Done is closed when the load balancer stopped because another xlb took
// over (--reuse).
func (lb *LB) Done() <-chan struct{} { return lb.done }

// Shutdown stops accepting, lets in-flight requests finish (up to the
// shutdown timeout), hands every remaining connection back to the kernel,
// which closes it properly, detaches and removes the data plane.
func (lb *LB) Shutdown() error {
	select {
	case <-lb.done:
		return nil // handed over: nothing is ours any more
	default:
	}
	lb.withdraw()
	for _, ln := range lb.listeners {
		ln.Close()
	}
	lb.waitQuiet(lb.cfg.ShutdownTimeout)
	lb.stopLoops()
	handed := lb.handBackAll()
	lb.log.Info("connections handed back to the kernel", "count", handed)
	return lb.teardown()
}

// teardown releases everything Start made: detach, unpin, close.
func (lb *LB) teardown() error {
	var errs []error
	if lb.control != nil {
		lb.control.Close()
	}
	for _, ifc := range lb.attached {
		// Ours only, by id: another program may have replaced ours since
		// (xlb attach --force, another tool); it stays.
		err := xdp.Detach(ifc, lb.progID)
		switch {
		case err == nil, errors.Is(err, xdp.ErrNotAttached):
		case errors.Is(err, xdp.ErrAlreadyAttached):
			lb.log.Warn("our program was replaced by another; leaving that one attached", "iface", ifc, "err", err)
		default:
			errs = append(errs, err)
		}
	}
	lb.attached = nil
	lb.closeAnnounce()
	if err := lb.reqlog.close(); err != nil {
		errs = append(errs, fmt.Errorf("access log: %w", err))
	}
	lb.replay.close()
	if lb.dialer != nil {
		lb.dialer.close()
	}
	if lb.pinned {
		if err := runstate.RemovePins(lb.cfg.Iface); err != nil {
			errs = append(errs, fmt.Errorf("removing pins: %w", err))
		}
		lb.pinned = false
	}
	for _, ln := range lb.listeners {
		ln.Close()
	}
	lb.stopLoops()
	lb.closeObjects()
	return errors.Join(errs...)
}

// useObjects makes objs (loaded, not attached yet) the data plane.
func (lb *LB) useObjects(objs *kern.Objects) error {
	lb.dp = &DataPlane{Objs: objs}
	var err error
	lb.progID, err = programID(objs.Program)
	return err
}

// programID is the kernel's id of a loaded program.
func programID(p *ebpf.Program) (uint32, error) {
	info, err := p.Info()
	if err != nil {
		return 0, fmt.Errorf("reading our program's id: %w", err)
	}
	return info.ID, nil
}

func (lb *LB) closeObjects() {
	if lb.dp != nil {
		lb.dp.closePools()
		lb.dp.Objs.Close()
	}
	for _, m := range lb.reused {
		m.Close()
	}
}

// waitQuiet waits until no client leg has a request or response in flight,
// or the timeout.
func (lb *LB) waitQuiet(timeout time.Duration) {
	lb.log.Info("waiting for requests in flight", "count", lb.inFlight(), "timeout", timeout)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if lb.inFlight() == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	lb.log.Warn("shutdown timeout: requests still in flight", "count", lb.inFlight())
}

// inFlight counts bound client legs that look busy: bytes not yet
// acknowledged in either direction, or a packet on either leg within the
// last quietPeriod (a response being streamed can have everything acked at
// the instant we look).
func (lb *LB) inFlight() int {
	n := 0
	now := monotonicNs()
	lb.dp.ForEachLeg(func(k kern.LegKey, c *kern.Leg) bool {
		if c.Kind != kern.LegClient || (c.State != kern.LegBound && c.State != kern.LegParked) {
			return true
		}
		b, err := lb.dp.Binding(k)
		if err != nil {
			return true
		}
		w, err := lb.dp.Leg(b.To)
		if err != nil {
			return true
		}
		// What was sent to each peer, derived as the data plane does.
		cSnd := w.PeerHi - b.AckOff
		wSnd := c.PeerHi + b.SeqOff
		// Signed: a packet may have come after we read the clock.
		recent := int64(now-c.LastNs) < int64(quietPeriod) || int64(now-w.LastNs) < int64(quietPeriod)
		if c.PeerAcked != cSnd || w.PeerAcked != wSnd || recent {
			n++
		}
		return true
	})
	return n
}

// ParseIfaces parses the command line's IFACE: an interface name, or a
// comma-separated list of names (routed mode: the clients' side and the
// workers' side, e.g. eth0,eth1).
func ParseIfaces(s string) ([]string, error) {
	list := strings.Split(s, ",")
	for i, name := range list {
		if name == "" {
			return nil, fmt.Errorf("interface list %q: name %d is empty (write IFACE or IFACE,IFACE,...)", s, i+1)
		}
		if slices.Contains(list[:i], name) {
			return nil, fmt.Errorf("interface list %q: %s is named twice", s, name)
		}
	}
	return list, nil
}

// ifaces returns every interface the data plane goes on, Iface first.
func (c *Config) ifaces() []string {
	if len(c.Ifaces) == 0 {
		return []string{c.Iface}
	}
	return c.Ifaces
}
