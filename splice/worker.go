package splice

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xlb-lb/xlb/kern"
)

// WorkerSpec is a worker as the user names it: HOST:PORT[@WEIGHT].
type WorkerSpec struct {
	Addr   netip.AddrPort
	Weight int
}

func (w WorkerSpec) String() string {
	if w.Weight == 1 {
		return w.Addr.String()
	}
	return fmt.Sprintf("%s@%d", w.Addr, w.Weight)
}

// DefaultWeight is a worker's weight when none is given.
const DefaultWeight = 1

// MaxWeight bounds a weight (weights are relative shares).
const MaxWeight = 1000

// ParseWorker parses HOST:PORT[@WEIGHT]; HOST is an IPv4 address, an IPv6
// address in brackets ([::1]:4171), or a name resolved now (to IPv4).
func ParseWorker(s string) (WorkerSpec, error) {
	spec := WorkerSpec{Weight: DefaultWeight}
	addr := s
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		addr = s[:i]
		w, err := strconv.Atoi(s[i+1:])
		if err != nil || w < 0 || w > MaxWeight {
			return spec, fmt.Errorf("worker %q: weight must be a number from 0 to %d", s, MaxWeight)
		}
		spec.Weight = w
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return spec, fmt.Errorf("worker %q: want HOST:PORT[@WEIGHT], e.g. 127.0.0.1:4171", s)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return spec, fmt.Errorf("worker %q: port must be 1-65535", s)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := net.DefaultResolver.LookupNetIP(context.Background(), "ip4", host)
		if lerr != nil || len(ips) == 0 {
			return spec, fmt.Errorf("worker %q: cannot resolve %q: %v", s, host, lerr)
		}
		ip = ips[0]
	}
	ip = ip.Unmap()
	if ip.Zone() != "" || ip.IsLinkLocalUnicast() {
		return spec, fmt.Errorf("worker %q: a link-local address (give the worker's global or loopback address)", s)
	}
	spec.Addr = netip.AddrPortFrom(ip, uint16(p))
	return spec, nil
}

// WorkerState is what the control plane knows of a worker's health.
type WorkerState int

const (
	WorkerStarting WorkerState = iota // no connection made yet
	WorkerUp                          // its pool connections succeed
	WorkerDown                        // connecting fails; retried with backoff
)

func (s WorkerState) String() string {
	return [...]string{"starting", "up", "down"}[s]
}

// stateName is what `xlb ctl list` shows: health, or the drain.
func (w *worker) stateName() string {
	switch {
	case w.removing:
		return "removing"
	case w.drained:
		return "drained"
	case w.draining:
		return "draining"
	case w.checkDown:
		return "down"
	}
	return w.state.String()
}

// Pool and retry settings.
const (
	// poolTick is how often a pool checks its idle legs without being asked.
	poolTick = 50 * time.Millisecond
	// connectTimeout bounds one connection attempt to a worker.
	connectTimeout = 2 * time.Second
	// backoffMin and backoffMax bound the retry delay of a worker that is down.
	backoffMin = 100 * time.Millisecond
	backoffMax = 5 * time.Second
	// maxConnectsPerRound bounds the connections a pool opens in one round.
	maxConnectsPerRound = 256
)

// WorkerMSS is the TCP_MAXSEG of worker legs for clients behind an interface
// of the given MTU: segments from a worker must fit the clients' MSS after
// translation, since the data plane cannot split them. On a 1500-byte
// network, 1400 leaves room for the options and the tunnels of the usual
// paths. On lo and jumbo-frame links it follows the MTU: a worker held to
// 1400 there sends 10 small segments after an idle spell (slow start after
// idle), which a client stack acknowledges late (measured: 100 KB responses
// at a tenth of the direct rate; 32767 gave 15k requests/s, like sticky).
func WorkerMSS(mtu int) int {
	if mtu <= 1500 {
		return max(min(1400, mtu-100), minMSS)
	}
	return min(mtu-72, maxMSS) // IPv6 (or IPv4 and 20 spare) + TCP headers + timestamps
}

// TCP_MAXSEG bounds (the kernel's TCP_MIN_MSS and MAX_TCP_WINDOW).
const (
	minMSS = 88
	maxMSS = 32767
)

// worker is a worker and its pool of legs.
type worker struct {
	lb   *LB
	spec WorkerSpec
	id   uint32
	// dialAuto is dialsXDP's decision under DialAuto: 0 not made, 1 xdp,
	// 2 sockets.
	dialAuto atomic.Uint32

	mu         sync.Mutex
	state      WorkerState
	legs       map[kern.LegKey]sock // live legs (new, idle or bound)
	cfg        kern.WorkerCfg       // what the data plane was last told (drain, trim)
	draining   bool                 // xlb ctl drain/remove: no new requests
	drainSince time.Time            // when the drain began
	removing   bool                 // xlb ctl remove: forget it once drained
	// Health checks (check.go): down by a check takes no new requests.
	checkDown    bool
	checkOKs     int                     // checks passed in a row
	checkFails   int                     // checks failed in a row
	checkErr     error                   // why the last check failed (nil once up)
	checks       uint64                  // checks run
	failedChecks uint64                  // checks failed
	upSince      time.Time               // when it came back up (--slowstart ramps its weight from then)
	youngEnds    []time.Time             // pool connections it ended young, within passiveWindow
	born         map[kern.LegKey]bornLeg // pool connections' births, for the passive check
	schedWeight  int                     // weightNow when the schedule was last written for it
	drained      bool                    // drain completion logged
	deaths       atomic.Uint64           // legs that ended (reported by the data plane)
	lastDeaths   uint64                  // deaths at the last fill
	lastFill     time.Time
	surplusSince time.Time // when the pool's surplus began (zero: none)
	rttUs        float64   // round trip time of its new connections' handshakes, smoothed
	turnover     float64   // legs ended per second, smoothed
	backoff      time.Duration
	lastErr      error
	kick         chan struct{}
}

// takesRequests: not draining, not down by a health check.
func (w *worker) takesRequests() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.takesRequestsLocked()
}

// run keeps the worker's pool filled until ctx ends, or the worker is
// removed and has no connection left.
func (w *worker) run(ctx context.Context) {
	t := time.NewTicker(poolTick)
	defer t.Stop()
	for {
		if w.checkDrained() {
			return
		}
		wait := w.fill(ctx)
		if wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.kick:
		}
	}
}

// fill opens legs until the worker has its pool of idle ones. It returns how
// long to back off after a failure (0 when all went well).
func (w *worker) fill(ctx context.Context) time.Duration {
	// One read of every worker's load: ours and the demand over all
	// workers come from the same instant.
	loads, err := w.lb.dp.Loads()
	if err != nil {
		w.lb.log.Error("reading worker load", "worker", w.spec.Addr, "err", err)
		return backoffMax
	}
	load := loads.of(w.id)
	bound, idle, cooling := load.Bound, load.Idle, load.Cooling
	w.lb.setSynBudget(loads)
	w.mu.Lock()
	// Out of the schedule (a drain, a failed health check): no pool, its
	// idle connections retired, clients moved at their next request.
	weight, draining, out := w.weightNow(time.Now()), w.draining, !w.takesRequestsLocked()
	reschedule := weight != w.schedWeight // --slowstart ramps it
	w.mu.Unlock()
	if reschedule {
		w.lb.updateSchedule()
	}
	turnover := w.updateTurnover()
	// The worker's live connections: idle, or busy with a client. Finished
	// ones that linger (their entries wait for late retransmissions) are
	// no longer its: a worker that closes after every answer would
	// otherwise look busier the faster it is.
	legs := idle + bound
	// A worker's share of the connections follows its weight, not how
	// long its requests take: the pool, plus its share of the connections
	// busy over all workers. A slow worker then has fewer idle, and the
	// policies that go by idle connections (jiq) give it less, as they
	// should; sizing each pool by its own idle count would give a slow
	// worker more connections and undo that.
	demand, weights := w.lb.demand(loads)
	target := w.lb.cfg.Pool*weight + demand*weight/max(weights, 1)
	// A worker that ends its connections (Connection: close, HTTP/1.0,
	// health checks) uses one up per request: keep what it uses up while a
	// refill takes, on top.
	target += int(turnover*refillHorizon.Seconds() + 0.5)
	cfg := kern.WorkerCfg{Weight: uint32(max(weight, 1))}
	// The data plane says when a take leaves half the idle target: the
	// refill starts before the pool runs dry.
	cfg.Low = uint32(max(1, (target-bound)/2))
	cfg.CoolUs = w.coolUs()
	if out {
		target = 0
		cfg.Flags = kern.WorkerDrain
	}
	// Cooling connections are not the pool's until they come back (within
	// 200 ms): counted as the pool, a leaving client's connection left its
	// pool one short for that time, and clients that open a connection
	// per request and close it first (python requests without a session)
	// had every connection cooling at once and waited out 200 ms RTOs on
	// an empty pool: the bench's close client, -c 4, on a fresh xlb made
	// about 500 requests a second (HAProxy about 10,000 in make bench).
	// Those that come back are a surplus only if the leaving stops
	// (trimmed below, after trimAfter).
	want := target - legs
	// Remixing moves idle legs from one worker's share to another's, and a
	// burst leaves more than the pool needs after it: ask the data plane
	// to retire the surplus as it takes legs from the queue, and retire a
	// part of it here (a pool nobody takes from keeps its surplus else).
	// Legs cooling now are idle soon: as many more idle are no surplus
	// (the cooling count swings with the rate of clients leaving).
	// A surplus is trimmed only once it has lasted trimAfter: the idle
	// count swings with the load, and trimming a swing only to open the
	// connections again costs the worker a connection a trim.
	surplus := min(legs-target-max(trimSlack(target), cooling), idle)
	w.mu.Lock()
	if surplus <= 0 || out {
		w.surplusSince = time.Time{}
	} else if w.surplusSince.IsZero() {
		w.surplusSince = time.Now()
	}
	lasting := !w.surplusSince.IsZero() && time.Since(w.surplusSince) >= trimAfter
	w.mu.Unlock()
	if !lasting {
		surplus = 0
	}
	if surplus > 0 {
		cfg.Trim = int32(surplus)
	}
	if cfg != w.cfg {
		if err := w.lb.dp.SetWorkerCfg(w.id, cfg); err != nil {
			w.lb.log.Error("worker settings for the data plane", "worker", w.spec.Addr, "err", err)
		} else {
			w.cfg = cfg
		}
	}
	if draining {
		w.drainTimeout()
	}
	if out && idle > 0 && w.cfg.Flags&kern.WorkerDrain != 0 {
		if err := w.lb.dp.RetireIdle(w.id, idle); err != nil {
			w.lb.log.Error("retiring a draining worker's idle connections", "worker", w.spec.Addr, "err", err)
		}
	} else if surplus > 0 && w.cfg.Trim > 0 {
		if err := w.lb.dp.RetireIdle(w.id, max(1, surplus/4)); err != nil {
			w.lb.log.Error("retiring surplus idle connections", "worker", w.spec.Addr, "err", err)
		}
	}
	if c := w.lb.cfg.WorkerConns; c > 0 {
		// The cap counts the cooling connections: they are open, and
		// back in the pool within 200 ms.
		want = min(want, c-load.Legs())
	}
	if room := w.lb.fileRoom(w); want > room {
		want = room
		if !w.lb.filesFull.Swap(true) {
			w.lb.log.Warn("worker connections capped by the open-file limit: clients wait for one; raise the limit (ulimit -n, LimitNOFILE=) or cap them with --worker-conns",
				"worker", w.spec.Addr, "budget", w.lb.files)
		}
	}
	if want <= 0 || ctx.Err() != nil {
		return 0
	}
	pooled, err := w.openLegs(ctx, min(want, maxConnectsPerRound))
	if pooled > 0 {
		w.succeeded()
	}
	if err != nil && ctx.Err() == nil {
		if pooled == 0 {
			return w.failed(err)
		}
		w.lb.log.Warn("pool connection failed", "worker", w.spec.Addr, "err", err)
	}
	if pooled == maxConnectsPerRound {
		return time.Nanosecond // more wanted: another round at once
	}
	return 0
}

// Growing the pools ahead (kern.ConfigSynDemand): the data plane takes
// each new client's SYN from a budget of idle connections (the client's
// first bind gives it back), and past it tells us (kern.EventDemand, once
// a budget). Those clients have connected but not sent
// their requests: the connections they will take are idle still, so the
// idle count alone would grant them again; while SYNs come past the budget,
// the leg table is walked for them (freshClients), and they count as
// demand, and against the budget, until they send or freshFor passes.
const (
	freshFor   = time.Second           // a new client is demand this long, or until its first request
	freshEvery = 50 * time.Millisecond // the leg table is walked at most this often (a pool's tick)
)

// freshClients is how many clients connected within freshFor and sent no
// request yet, counted only while new clients' SYNs outnumber the idle
// connections (0 otherwise).
func (lb *LB) freshClients() int {
	at := lb.demandAt.Load()
	if lb.cfg.NoPoolAhead || at == 0 || time.Since(time.Unix(0, at)) > freshFor {
		return 0
	}
	lb.freshMu.Lock()
	defer lb.freshMu.Unlock()
	if time.Since(lb.freshAt) < freshEvery {
		return lb.fresh
	}
	now, n := monotonicNs(), 0
	err := kern.ForEachLeg(lb.dp.Objs.Legs, func(_ kern.LegKey, l *kern.Leg) bool {
		if l.Kind == kern.LegClient && l.State == kern.LegIdle && l.Requests == 0 && now-l.LastNs < uint64(freshFor) {
			n++
		}
		return true
	})
	if err != nil {
		lb.log.Error("counting new clients", "err", err)
	}
	lb.fresh, lb.freshAt = n, time.Now()
	return n
}

// setSynBudget gives the data plane the idle connections of every pool,
// less those new clients will take (freshClients), for new clients' SYNs
// to use up until the next fill looks.
func (lb *LB) setSynBudget(loads workerLoads) {
	if lb.cfg.NoPoolAhead {
		return
	}
	idle := -int64(lb.freshClients())
	for _, w := range lb.workerList() {
		if w.takesRequests() {
			idle += int64(loads.of(w.id).Idle)
		}
	}
	if err := lb.dp.SetSynBudget(idle); err != nil {
		lb.log.Error("idle connections for the data plane", "err", err)
	}
}

// demand is the connections busy with a client over the workers that take
// requests (loads), plus the clients that found no idle connection lately,
// whose data is held still, or that connected and will send (freshClients);
// and the sum of the weights.
func (lb *LB) demand(loads workerLoads) (bound, weights int) {
	bound = max(int(lb.waiting.Load()), lb.replay.pending(), lb.freshClients())
	for _, w := range lb.workerList() {
		w.mu.Lock()
		if wt := w.weightNow(time.Now()); wt > 0 {
			weights += wt
			bound += loads.of(w.id).Bound
		}
		w.mu.Unlock()
	}
	return bound, weights
}

// checkDrained logs a drain's completion (no connection left) and, for a
// removed worker, forgets it; it returns true when the worker is gone.
func (w *worker) checkDrained() bool {
	w.mu.Lock()
	done := w.draining && len(w.legs) == 0 && !w.drained
	if done {
		w.drained = true
	}
	remove := w.removing && len(w.legs) == 0
	w.mu.Unlock()
	if done {
		w.lb.log.Info("worker drained: no connection left", "worker", w.spec.Addr)
	}
	if remove {
		w.lb.forgetWorker(w)
		return true
	}
	return false
}

// Cooling: a worker connection a leaving client gave back stays quiet
// coolRTTs of the worker's round trips (within these bounds) before it
// serves another client: the rest of an answer the client did not wait for
// would come within about one.
const (
	coolRTTs = 8
	coolMin  = 2 * time.Millisecond
	coolMax  = 200 * time.Millisecond
)

// noteRTT folds a handshake's round trip into the worker's smoothed one.
func (w *worker) noteRTT(us float64) {
	w.mu.Lock()
	if w.rttUs == 0 {
		w.rttUs = us
	} else {
		w.rttUs += (us - w.rttUs) / 16
	}
	w.mu.Unlock()
}

// coolUs is worker_cfg.cool_us for this worker.
func (w *worker) coolUs() uint32 {
	w.mu.Lock()
	rtt := time.Duration(w.rttUs) * time.Microsecond
	w.mu.Unlock()
	if rtt == 0 {
		return 0 // the data plane's default
	}
	return uint32(min(max(coolRTTs*rtt, coolMin), coolMax) / time.Microsecond)
}

// trimAfter is how long a pool's surplus must last before it is trimmed.
const trimAfter = 2 * time.Second

// refillHorizon is how long a pool's refill may take: a worker's pool
// holds, beyond its target, the connections its clients use up in that
// time (turnover). A refill is late when the machine is busy (the
// clients, the workers and softirq on every core): with `ab -n 60000 -c 4`
// through three nginx that close after each answer (6k connections a
// second each), no_idle_leg counted 16 per run at 50 ms, 4 at 100 ms, 0
// in two runs at 200 ms (runs after the first, pools warm; every one was
// all pools empty at once); each drops a client's first data, which then
// waits out its 200 ms RTO.
// --worker-conns caps what this holds open.
const refillHorizon = 200 * time.Millisecond

// updateTurnover is the rate at which the worker's connections end, legs a
// second, smoothed over the fills.
func (w *worker) updateTurnover() float64 {
	now := time.Now()
	d := w.deaths.Load()
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.lastFill.IsZero() {
		if dt := now.Sub(w.lastFill).Seconds(); dt > 0.001 {
			rate := float64(d-w.lastDeaths) / dt
			a := min(dt/turnoverWindow.Seconds(), 1)
			w.turnover += a * (rate - w.turnover)
		} else {
			return w.turnover
		}
	}
	w.lastFill, w.lastDeaths = now, d
	return w.turnover
}

// turnoverWindow is the time constant of the turnover's smoothing.
const turnoverWindow = time.Second

// drainTimeout closes the connections of clients still on a draining
// worker once --drain-timeout has passed: clients pinned to it (a TLS
// session, an upgraded stream) never move on their own.
func (w *worker) drainTimeout() {
	w.mu.Lock()
	since := w.drainSince
	w.mu.Unlock()
	limit := w.lb.cfg.DrainTimeout
	if limit <= 0 || since.IsZero() || time.Since(since) < limit {
		return
	}
	var pairs []kern.LegKey
	w.lb.dp.ForEachLeg(func(k kern.LegKey, l *kern.Leg) bool {
		if l.Kind == kern.LegClient && (l.State == kern.LegBound || l.State == kern.LegParked) {
			if b, err := w.lb.dp.Binding(k); err == nil && b.Worker == w.id {
				pairs = append(pairs, k)
			}
		}
		return true
	})
	if len(pairs) == 0 {
		return
	}
	closed := 0
	for _, k := range pairs {
		if err := w.lb.endPair(k); err != nil {
			w.lb.log.Warn("drain timeout: closing a client's connections", "worker", w.spec.Addr, "client", k.Peer, "err", err)
			continue
		}
		closed++
	}
	w.lb.log.Warn("drain timeout: closed the connections of clients still on the worker", "worker", w.spec.Addr,
		"clients", closed, "after", limit)
}

// trimSlack is how far above its target a pool may grow before it is trimmed:
// retiring and reopening connections on every small swing would cost more
// than a few idle ones.
func trimSlack(target int) int { return max(2, target/2) }

func (w *worker) failed(err error) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.backoff == 0 {
		w.backoff = backoffMin
	} else {
		w.backoff = min(2*w.backoff, backoffMax)
	}
	if w.state != WorkerDown || w.lastErr == nil || w.lastErr.Error() != err.Error() {
		w.lb.log.Warn("worker down: pool connection failed, retrying", "worker", w.spec.Addr, "err", err, "retry_in", w.backoff)
	}
	w.state, w.lastErr = WorkerDown, err
	return w.backoff
}

func (w *worker) succeeded() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != WorkerUp {
		w.lb.log.Info("worker up", "worker", w.spec.Addr)
		if w.state == WorkerDown {
			w.upSince = time.Now() // --slowstart: back from a failure
		}
	}
	w.state, w.backoff, w.lastErr = WorkerUp, 0, nil
}

// openLeg connects to the worker, reads the connection's state and registers
// it with the data plane as an idle leg.
// openLegs opens up to n pool connections to the worker at once and puts
// those that come up into its pool. It returns how many it pooled, and the
// first error.
func (w *worker) openLegs(ctx context.Context, n int) (int, error) {
	if w.dialsXDP() {
		return w.dialLegs(ctx, n)
	}
	pooled := 0
	var first error
	for _, d := range dialLegs(ctx, w.spec.Addr, w.lb.workerMSS, n) {
		if d.err != nil {
			first = cmp.Or(first, d.err)
			continue
		}
		if err := w.register(sock(d.fd), d.key); err != nil {
			first = cmp.Or(first, err)
			continue
		}
		pooled++
	}
	return pooled, first
}

// register makes a new connection a leg of the data plane and puts it in
// the worker's pool; on failure the socket is closed.
func (w *worker) register(c sock, key kern.LegKey) error {
	hs, ok := w.lb.dp.Handshake(key)
	if !ok {
		// The data plane did not see the SYN-ACK (not attached yet, or its
		// table evicted it): without the worker's TSval the leg cannot be
		// spliced. The connection was never used: close it normally.
		c.close()
		return fmt.Errorf("the data plane did not see the handshake of %s", key)
	}
	st, err := FreshSocketState(int(c), hs.OurISN, hs.PeerISN)
	if err != nil {
		c.close()
		return fmt.Errorf("new connection %s: %w", key, err)
	}
	leg, err := WorkerLeg(st, hs, w.id, monotonicNs())
	if err != nil {
		c.close()
		return err
	}
	w.mu.Lock()
	w.legs[key] = c
	w.born[key] = bornLeg{time.Now(), leg.PeerHi}
	w.mu.Unlock()
	w.noteRTT(float64(st.RTTus))
	if err := w.lb.dp.RegisterLeg(key, &leg); err != nil {
		w.forget(key)
		c.close()
		return err
	}
	if err := w.lb.dp.PushIdle(key, w.id); err != nil {
		// Registered but not queued: nobody can take it; retire it.
		w.lb.dp.ForgetLeg(key)
		w.forget(key)
		c.closeSilently()
		return err
	}
	w.lb.replay.poke() // held client data may go now
	return nil
}

func (w *worker) forget(key kern.LegKey) sock {
	if w.lb.dialer != nil {
		w.lb.dialer.release(key) // its port, if it was a dialed leg's
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	c, ok := w.legs[key]
	if !ok {
		return noSock
	}
	delete(w.legs, key)
	delete(w.born, key)
	return c
}

func (w *worker) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// fileRoom is how many more connections w may open within the descriptor
// budget: a connect()ed one is a socket; a dialed one needs a port, held
// by a placeholder socket, that no other connection to w uses (ports are
// shared between workers), so only w's own count against it.
func (lb *LB) fileRoom(w *worker) int {
	if w.dialsXDP() {
		return lb.files - w.legCount()
	}
	n := 0
	for _, o := range lb.workerList() {
		if !o.dialsXDP() {
			n += o.legCount()
		}
	}
	if lb.dialer != nil {
		n += lb.dialer.placeholderCount()
	}
	return lb.files - n
}

func (w *worker) legCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.legs)
}
