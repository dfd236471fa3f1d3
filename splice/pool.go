package splice

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
	"golang.org/x/sys/unix"
)

// Pools, the schedule of the rr and least policies, and the control program
// (idle release, rematch): the parts of the data plane that are per worker.

// pools holds the fds of the workers' pool queues (inner maps of xlb_pool).
type pools struct {
	mu sync.Mutex
	q  map[uint32]*ebpf.Map
}

// EnsurePool gives worker id its pool queue: the one already in xlb_pool
// (state taken over with --reuse), or a new one.
func (d *DataPlane) EnsurePool(id uint32) error {
	d.pools.mu.Lock()
	defer d.pools.mu.Unlock()
	if d.pools.q == nil {
		d.pools.q = map[uint32]*ebpf.Map{}
	}
	if d.pools.q[id] != nil {
		return nil
	}
	outer := d.Objs.Pool
	if innerID, err := outer.LookupInnerID(ebpf.Uint32Key(id)); err == nil {
		q, err := ebpf.NewMapFromID(innerID)
		if err != nil {
			return fmt.Errorf("pool of worker %d: %w", id, err)
		}
		d.pools.q[id] = q
		return nil
	} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("pool of worker %d: %w", id, err)
	}
	spec, err := kern.InnerMapSpec(kern.PoolMapName)
	if err != nil {
		return err
	}
	spec.Name = fmt.Sprintf("xlb_pool_%d", id)
	q, err := ebpf.NewMap(spec)
	if err != nil {
		return fmt.Errorf("pool of worker %d: %w", id, err)
	}
	if err := outer.UpdateInner(ebpf.Uint32Key(id), q); err != nil {
		q.Close()
		return fmt.Errorf("pool of worker %d: %w", id, err)
	}
	d.pools.q[id] = q
	return nil
}

// DropPool removes a forgotten worker's pool.
func (d *DataPlane) DropPool(id uint32) {
	d.pools.mu.Lock()
	defer d.pools.mu.Unlock()
	if q := d.pools.q[id]; q != nil {
		q.Close()
		delete(d.pools.q, id)
	}
	d.Objs.Pool.Delete(ebpf.Uint32Key(id))
}

// closePools closes our fds of the pool queues (the maps live on in xlb_pool
// as long as it does).
func (d *DataPlane) closePools() {
	d.pools.mu.Lock()
	defer d.pools.mu.Unlock()
	for id, q := range d.pools.q {
		q.Close()
		delete(d.pools.q, id)
	}
}

// maxWarmRuns bounds the CTL_WARM runs of one Warm.
const maxWarmRuns = 1024

// Warm moves the worker legs that cooled long enough (a leaving client gave
// them back) to their pools: binds do it as clients come, this when none
// does.
func (d *DataPlane) Warm() error {
	for range maxWarmRuns {
		more, err := d.ctl(kern.CtlMsg{Op: kern.CtlWarm})
		if err != nil || !more {
			return err
		}
	}
	return nil
}

// PushIdle puts a newly registered worker leg (LegNew) into its worker's
// pool, with a jiq token, through the control program: the data plane
// counts it idle (an exact count, the pool's size), unless it died
// meanwhile.
func (d *DataPlane) PushIdle(key kern.LegKey, worker uint32) error {
	res, err := d.ctlLegs(kern.CtlPool, []ctlLeg{{key: key, arg: worker}})
	ok := err == nil && res[0] == kern.CtlDone
	if err != nil {
		return fmt.Errorf("pool of worker %d: %w", worker, err)
	}
	if !ok {
		return fmt.Errorf("pool of worker %d: leg %s was not pooled (it ended, or the worker has no pool)", worker, key)
	}
	return nil
}

func (p Policy) usesTokens() bool {
	c := p.code()
	return c == kern.PolicyJIQ || c == kern.PolicySticky
}

// SetSchedule writes the weighted schedule of the rr and least policies of
// family fam's workers (xlb_sched or xlb_sched6) and its length in the
// config.
func (d *DataPlane) SetSchedule(fam int, slots []uint32) error {
	m := d.Objs.Sched
	if fam == unix.AF_INET6 {
		m = d.Objs.Sched6
	}
	if len(slots) > int(m.MaxEntries()) {
		return fmt.Errorf("schedule of %d slots: at most %d", len(slots), m.MaxEntries())
	}
	for i, id := range slots {
		if err := m.Update(ebpf.Uint32Key(uint32(i)), ebpf.Uint32Key(id), ebpf.UpdateAny); err != nil {
			return fmt.Errorf("schedule: %w", err)
		}
	}
	c, err := d.Config()
	if err != nil {
		return err
	}
	if fam == unix.AF_INET6 {
		c.SchedLen6 = uint32(len(slots))
	} else {
		c.SchedLen = uint32(len(slots))
	}
	return d.SetConfig(c)
}

// schedule spreads worker ids over slots in smooth weighted round-robin
// order (nginx's): each worker appears weight times, as evenly as it can.
// Weights whose sum passes max are scaled down to fit (a weight above 0
// keeps at least one slot).
func schedule(ids []uint32, weights []int, max int) []uint32 {
	total := 0
	for _, w := range weights {
		total += w
	}
	if total > max {
		scaled, sum := make([]int, len(weights)), total
		total = 0
		for i, w := range weights {
			if w > 0 {
				scaled[i] = w * (max - len(weights)) / sum
				scaled[i]++
			}
			total += scaled[i]
		}
		weights = scaled
	}
	out := make([]uint32, 0, total)
	cur := make([]int, len(weights))
	for range total {
		best := -1
		for i, w := range weights {
			cur[i] += w
			if w > 0 && (best < 0 || cur[i] > cur[best]) {
				best = i
			}
		}
		cur[best] -= total
		out = append(out, ids[best])
	}
	return out
}

// updateSchedule writes the schedules, one a family, of the workers that
// take requests (not draining, weight above 0).
func (lb *LB) updateSchedule() {
	lb.schedMu.Lock() // the slots, then the length in the config: one writer at a time
	defer lb.schedMu.Unlock()
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		var ids []uint32
		var weights []int
		now := time.Now()
		for _, w := range lb.workerList() {
			w.mu.Lock()
			if family(w.spec.Addr.Addr()) == fam {
				wt := w.weightNow(now)
				w.schedWeight = wt
				if wt > 0 {
					ids = append(ids, w.id)
					weights = append(weights, wt)
				}
			}
			w.mu.Unlock()
		}
		if err := lb.dp.SetSchedule(fam, schedule(ids, weights, int(lb.dp.Objs.Sched.MaxEntries()))); err != nil {
			lb.log.Error("writing the schedule of the data plane", "family", familyName(fam), "err", err)
		}
	}
}

// setupPools gives every worker its pool and writes the schedule, once the
// data plane is loaded.
func (lb *LB) setupPools() error {
	for _, w := range lb.workerList() {
		if err := lb.dp.EnsurePool(w.id); err != nil {
			return err
		}
	}
	lb.updateSchedule()
	return nil
}

// RetireIdle retires up to n idle legs of a worker that drains or has trim
// credits (the reaper then ends each with a FIN). Pops retire them too, but
// nothing pops a pool without traffic, or one the schedule (rr, least)
// leaves out.
func (d *DataPlane) RetireIdle(worker uint32, n int) error {
	spec, err := kern.InnerMapSpec(kern.PoolMapName)
	if err != nil {
		return err
	}
	for range min(n, int(spec.MaxEntries)) {
		if more, err := d.ctl(kern.CtlMsg{Op: kern.CtlRetireIdle, Worker: worker}); err != nil || !more {
			return err
		}
	}
	return nil
}

// ctl runs the control program on one command. It reports whether the data
// plane carried it out.
func (d *DataPlane) ctl(msg kern.CtlMsg) (bool, error) {
	b, err := msg.MarshalBinary()
	if err != nil {
		return false, err
	}
	res, err := d.Objs.Ctl.TestRun(&ebpf.TestRunOptions{Data: b})
	if err != nil {
		return false, err
	}
	return res.Return == xdpPass, nil
}

// XDP verdicts (enum xdp_action).
const (
	xdpPass     = 2
	xdpTX       = 3
	xdpRedirect = 4
)

// ctlLeg is one leg of a CtlPool (arg: its worker) or CtlForget (arg: its
// peer_hi as reported) command.
type ctlLeg struct {
	key kern.LegKey
	arg uint32
}

// ctlLegs runs op on legs, kern.CtlItemsMax of them a run, and returns
// what became of each (kern.CtlDone, kern.CtlRefused: the leg is not in
// the state op wants, kern.CtlNoLeg). On an error, the runs before it were
// done and reported.
func (d *DataPlane) ctlLegs(op kern.CtlOp, legs []ctlLeg) ([]uint32, error) {
	res := make([]uint32, len(legs))
	for start := 0; start < len(legs); start += kern.CtlItemsMax {
		run := legs[start:min(len(legs), start+kern.CtlItemsMax)]
		// The message's own leg is left zero (none): the items say what
		// became of theirs.
		b, err := (&kern.CtlMsg{Op: op, Items: uint32(len(run))}).MarshalBinary()
		if err != nil {
			return res, err
		}
		for _, l := range run {
			ib, err := (&kern.CtlItem{Key: l.key, Arg: l.arg}).MarshalBinary()
			if err != nil {
				return res, err
			}
			b = append(b, ib...)
		}
		out, err := d.Objs.Ctl.TestRun(&ebpf.TestRunOptions{Data: b})
		if err != nil {
			return res, err
		}
		if len(out.Data) < len(b) {
			return res, fmt.Errorf("control program: %d bytes back, sent %d", len(out.Data), len(b))
		}
		for i := range run {
			var it kern.CtlItem
			it.UnmarshalBinary(out.Data[kern.CtlMsgSize+i*kern.CtlItemSize:])
			res[start+i] = it.Done
		}
	}
	return res, nil
}

// sync waits until no program runs any more with what it read before the
// call: updating a map-in-map makes the kernel wait for an RCU grace period.
func (d *DataPlane) sync() error {
	spec, err := kern.InnerMapSpec(kern.SyncMapName)
	if err != nil {
		return fmt.Errorf("grace period: %w", err)
	}
	inner, err := ebpf.NewMap(spec)
	if err != nil {
		return fmt.Errorf("grace period: %w", err)
	}
	defer inner.Close()
	if err := d.Objs.Sync.UpdateInner(ebpf.Uint32Key(0), inner); err != nil {
		return fmt.Errorf("grace period: %w", err)
	}
	return nil
}

// releaseReq asks to release client leg key if both peers have been silent
// for minIdleNs.
type releaseReq struct {
	key       kern.LegKey
	minIdleNs uint64
}

// release gives the worker legs of quiescent client legs back to their
// pools: park them all (no more data goes to their worker legs), wait for a
// grace period (no packet still in flight through the programs read them
// before), then unbind each one still quiescent. It returns how many were
// released.
func (d *DataPlane) release(reqs []releaseReq) (int, error) {
	var parked []kern.LegKey
	for _, r := range reqs {
		ok, err := d.ctl(kern.CtlMsg{Op: kern.CtlPark, Key: r.key, MinIdleNs: r.minIdleNs})
		if err != nil {
			return 0, err
		}
		if ok {
			parked = append(parked, r.key)
		}
	}
	if len(parked) == 0 {
		return 0, nil
	}
	op := kern.CtlRelease
	syncErr := d.sync()
	if syncErr != nil {
		op = kern.CtlUnpark // without the grace period, releasing could race a packet
	}
	n := 0
	for _, k := range parked {
		ok, err := d.ctl(kern.CtlMsg{Op: op, Key: k})
		if err != nil {
			return n, err
		}
		if ok && op == kern.CtlRelease {
			n++
		}
	}
	return n, syncErr
}

// Idle release (the many-clients-over-a-small-pool feature).
const (
	// DefaultIdleRelease is how long a client with no request in flight
	// keeps its worker connection before giving it back.
	DefaultIdleRelease = time.Second
	// drainIdle is how long a client of a draining worker must be silent
	// before it is moved off at once (it rebinds elsewhere on its next
	// request).
	drainIdle = 100 * time.Millisecond
	// maxReleasePerTick bounds the legs one round parks.
	maxReleasePerTick = 4096
)

// releaseTick is how often idle clients are looked for.
func (lb *LB) releaseTick() time.Duration {
	if lb.cfg.IdleRelease <= 0 {
		return reapTick
	}
	return min(max(lb.cfg.IdleRelease/2, 10*time.Millisecond), time.Second)
}

// releaser gives idle clients' worker legs back until ctx ends.
func (lb *LB) releaser(ctx context.Context) {
	t := time.NewTicker(lb.releaseTick())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := lb.releaseIdle(); err != nil {
			lb.log.Error("idle release", "err", err, "released", n)
		}
	}
}

// releaseIdle releases the bound client legs that have been idle long
// enough: IdleRelease (unless the policy is sticky), or drainIdle on a
// draining worker (any policy).
func (lb *LB) releaseIdle() (int, error) {
	draining := map[uint32]bool{}
	for _, w := range lb.workerList() {
		if !w.takesRequests() {
			draining[w.id] = true // drained or down: its silent clients move now
		}
	}
	idle := lb.cfg.IdleRelease
	if lb.cfg.Policy == PolicySticky {
		idle = 0
	}
	if idle <= 0 && len(draining) == 0 {
		return 0, nil
	}
	now := monotonicNs()
	var reqs []releaseReq
	err := lb.dp.ForEachLeg(func(k kern.LegKey, l *kern.Leg) bool {
		if l.Kind != kern.LegClient || l.State != kern.LegBound {
			return true
		}
		silent := time.Duration(int64(now - l.LastNs)) // signed: a packet may be newer than now
		if idle > 0 && silent >= idle {
			reqs = append(reqs, releaseReq{k, uint64(idle)})
		} else if len(draining) > 0 && silent >= drainIdle {
			if b, err := lb.dp.Binding(k); err == nil && draining[b.Worker] {
				reqs = append(reqs, releaseReq{k, uint64(drainIdle)})
			}
		}
		return len(reqs) < maxReleasePerTick
	})
	if err != nil {
		return 0, err
	}
	return lb.dp.release(reqs)
}

// Rematch moves a client's next request to a worker (xlb ctl rematch). The
// data plane applies it at the client's next request boundary; a client
// with no request in flight is released now, so that its next request binds
// to that worker.
func (lb *LB) Rematch(client, worker string) error {
	ca, err := netip.ParseAddrPort(client)
	if err != nil {
		return fmt.Errorf("client %q: want HOST:PORT as the client connects from (see xlb ctl clients): %w", client, err)
	}
	w, err := lb.findWorker(worker)
	if err != nil {
		return err
	}
	w.mu.Lock()
	takes, state := w.takesRequestsLocked(), w.stateName()
	w.mu.Unlock()
	if !takes {
		return fmt.Errorf("worker %s is %s: it takes no new requests", w.spec.Addr, state)
	}
	var key kern.LegKey
	found := false
	lb.dp.ForEachLeg(func(k kern.LegKey, l *kern.Leg) bool {
		if l.Kind == kern.LegClient && k.Peer == ca && l.State != kern.LegDead {
			key, found = k, true
			return false
		}
		return true
	})
	if !found {
		return fmt.Errorf("no client connection from %s (see xlb ctl clients)", ca)
	}
	if family(key.Peer.Addr()) != family(w.spec.Addr.Addr()) {
		return fmt.Errorf("client %s and worker %s are of two address families: a client is spliced onto worker connections of its own family", ca, w.spec.Addr)
	}
	if l, err := lb.dp.Leg(key); err == nil && l.Pin != kern.PinNone {
		return fmt.Errorf("client %s is pinned to its worker connection for life (%s): it cannot be moved; "+
			"xlb ctl drain its worker to close it after --drain-timeout", ca, l.Pin)
	}
	k, err := key.MarshalBinary()
	if err != nil {
		return err
	}
	if err := lb.dp.Objs.Rematch.Update(k, ebpf.Uint32Key(w.id), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("rematch: %w", err)
	}
	if b, err := lb.dp.Binding(key); err == nil && b.Worker == w.id {
		lb.dp.Objs.Rematch.Delete(k) // already there
		return nil
	}
	_, err = lb.dp.release([]releaseReq{{key, 0}})
	lb.log.Info("rematch", "client", ca, "worker", w.spec.Addr)
	return err
}

// ClientInfo is a client connection as xlb ctl clients shows it.
type ClientInfo struct {
	Client   string `json:"client"`
	State    string `json:"state"`
	Worker   string `json:"worker,omitempty"` // bound: the worker serving it
	Requests uint32 `json:"requests"`
	Protocol string `json:"protocol"`         // what its first bytes were (- before any)
	Pinned   string `json:"pinned,omitempty"` // why it stays on its worker connection for life
}

// maxClientsListed bounds xlb ctl clients.
const maxClientsListed = 100000

// Clients lists the client connections the data plane knows.
func (lb *LB) Clients() []ClientInfo {
	var out []ClientInfo
	lb.dp.ForEachLeg(func(k kern.LegKey, l *kern.Leg) bool {
		if l.Kind != kern.LegClient {
			return true
		}
		ci := ClientInfo{Client: k.Peer.String(), State: l.State.String(), Requests: l.Requests,
			Protocol: l.Proto.String(), Pinned: l.Pin.String()}
		if b, err := lb.dp.Binding(k); err == nil {
			if w := lb.workerByID(b.Worker); w != nil {
				ci.Worker = w.spec.Addr.String()
			}
		}
		out = append(out, ci)
		return len(out) < maxClientsListed
	})
	slices.SortFunc(out, func(a, b ClientInfo) int { return strings.Compare(a.Client, b.Client) })
	return out
}
