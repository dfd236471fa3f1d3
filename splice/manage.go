package splice

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/xlb-lb/xlb/kern"
)

// Managing workers at run time (xlb ctl add, drain, remove, weight). A worker
// keeps its id for its life; ids are never reused while its legs may live.

func (lb *LB) findWorker(addr string) (*worker, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		spec, perr := ParseWorker(addr)
		if perr != nil {
			return nil, perr
		}
		ap = spec.Addr
	}
	for _, w := range lb.workerList() {
		if w.spec.Addr == ap {
			return w, nil
		}
	}
	return nil, fmt.Errorf("no worker %s (see xlb ctl list)", addr)
}

// AddWorker starts balancing over a new worker: its pool fills, and existing
// clients reach it at their next request boundary.
func (lb *LB) AddWorker(spec WorkerSpec) error {
	if w, err := lb.findWorker(spec.Addr.String()); err == nil {
		w.mu.Lock()
		defer w.mu.Unlock()
		if !w.removing {
			return fmt.Errorf("worker %s is already there (state %s)", spec.Addr, w.stateName())
		}
		return fmt.Errorf("worker %s is being removed; add it again once it is gone", spec.Addr)
	}
	if fams := workerFamilies(lb.cfg.Workers); !fams[family(spec.Addr.Addr())] {
		return fmt.Errorf("worker %s: the service has no %s workers, so it does not listen on %s: its clients are spliced onto worker connections of their own family (restart it with one)", spec.Addr, familyName(family(spec.Addr.Addr())), familyName(family(spec.Addr.Addr())))
	}
	// Ids are never reused in a run: the data plane's per-worker counters
	// of a forgotten worker stay under its id.
	lb.wmu.Lock()
	id := lb.nextID
	lb.nextID++
	lb.wmu.Unlock()
	if id >= lb.dp.Objs.WCfg.MaxEntries() {
		return fmt.Errorf("too many workers (at most %d ids over a run)", lb.dp.Objs.WCfg.MaxEntries())
	}
	w := &worker{lb: lb, spec: spec, id: id, legs: map[kern.LegKey]sock{}, born: map[kern.LegKey]bornLeg{}, kick: make(chan struct{}, 1)}
	if err := lb.dp.SetWorkerCfg(id, kern.WorkerCfg{}); err != nil {
		return err
	}
	if err := lb.dp.SetWorker(spec.Addr, kern.WorkerInfo{ID: id}); err != nil {
		return err
	}
	if err := lb.dp.EnsurePool(id); err != nil {
		return err
	}
	lb.addWorker(w)
	lb.updateSchedule()
	lb.goroutine(func() { w.run(lb.loopCtx) })
	lb.goroutine(func() { w.checkLoop(lb.loopCtx) })
	lb.log.Info("worker added", "worker", spec.Addr, "weight", spec.Weight, "id", id)
	return nil
}

// DrainWorker stops giving the worker new requests: its idle connections are
// retired as the data plane meets them, a busy one when its request ends.
func (lb *LB) DrainWorker(addr string) error {
	w, err := lb.findWorker(addr)
	if err != nil {
		return err
	}
	w.mu.Lock()
	if !w.draining {
		w.drainSince = time.Now()
	}
	w.draining = true
	w.mu.Unlock()
	lb.updateSchedule()
	w.poke()
	lb.log.Info("worker draining", "worker", w.spec.Addr)
	return nil
}

// RemoveWorker drains the worker and forgets it once it has no connection.
func (lb *LB) RemoveWorker(addr string) error {
	w, err := lb.findWorker(addr)
	if err != nil {
		return err
	}
	w.mu.Lock()
	if !w.draining {
		w.drainSince = time.Now()
	}
	w.draining, w.removing = true, true
	w.mu.Unlock()
	lb.updateSchedule()
	w.poke()
	lb.log.Info("worker removing", "worker", w.spec.Addr)
	return nil
}

// SetWeight changes a worker's share: its pool is Pool x weight idle legs
// (0: no new connections; existing ones are trimmed away).
func (lb *LB) SetWeight(addr string, weight int) error {
	if weight < 0 || weight > MaxWeight {
		return fmt.Errorf("weight must be from 0 to %d", MaxWeight)
	}
	w, err := lb.findWorker(addr)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.spec.Weight = weight
	w.mu.Unlock()
	lb.updateSchedule()
	w.poke()
	lb.log.Info("worker weight", "worker", w.spec.Addr, "weight", weight)
	return nil
}

// forgetWorker removes a drained worker that has no connection left.
func (lb *LB) forgetWorker(w *worker) {
	lb.dp.DeleteWorker(w.spec.Addr)
	lb.wmu.Lock()
	for i, x := range lb.workers {
		if x == w {
			lb.workers = append(lb.workers[:i], lb.workers[i+1:]...)
			break
		}
	}
	delete(lb.byID, w.id)
	lb.wmu.Unlock()
	lb.dp.DropPool(w.id)
	lb.log.Info("worker removed", "worker", w.spec.Addr)
}
