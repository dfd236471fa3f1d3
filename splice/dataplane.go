package splice

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
	"golang.org/x/sys/unix"
)

// DataPlane is typed access to the maps of a loaded data plane.
type DataPlane struct {
	Objs   *kern.Objects
	pools  pools
	portMu sync.Mutex         // xlb_ports words are read, changed and written back
	marked [65536 / 64]uint64 // ports known to be set in xlb_ports (bits are never cleared)
}

// markPort sets port's bit in xlb_ports.
func (d *DataPlane) markPort(port uint16) error {
	d.portMu.Lock()
	defer d.portMu.Unlock()
	if d.marked[port/64]&(1<<(port%64)) != 0 {
		return nil
	}
	k := ebpf.Uint32Key(uint32(port) / 64)
	v := make([]byte, 8)
	if err := d.Objs.Ports.Lookup(k, v); err != nil {
		return fmt.Errorf("port map: %w", err)
	}
	binary.NativeEndian.PutUint64(v, binary.NativeEndian.Uint64(v)|1<<(port%64))
	if err := d.Objs.Ports.Update(k, v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("port map: %w", err)
	}
	d.marked[port/64] = binary.NativeEndian.Uint64(v)
	return nil
}

// SetConfig writes the global settings.
func (d *DataPlane) SetConfig(c kern.Config) error {
	v, err := c.MarshalBinary()
	if err != nil {
		return err
	}
	if err := d.Objs.Config.Update(ebpf.Uint32Key(0), v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("data plane config: %w", err)
	}
	return nil
}

// Config reads the global settings.
func (d *DataPlane) Config() (kern.Config, error) {
	var c kern.Config
	v := make([]byte, kern.ConfigSize)
	if err := d.Objs.Config.Lookup(ebpf.Uint32Key(0), v); err != nil {
		return c, fmt.Errorf("data plane config: %w", err)
	}
	return c, c.UnmarshalBinary(v)
}

// SetWorker tells the data plane about a worker, so that it learns the
// SYN-ACKs of connections to it.
func (d *DataPlane) SetWorker(addr netip.AddrPort, info kern.WorkerInfo) error {
	k, err := kern.Endpoint(addr).MarshalBinary()
	if err != nil {
		return err
	}
	v, _ := info.MarshalBinary()
	if err := d.Objs.Workers.Update(k, v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("data plane worker %s: %w", addr, err)
	}
	return nil
}

// DeleteWorker forgets a worker.
func (d *DataPlane) DeleteWorker(addr netip.AddrPort) error {
	k, err := kern.Endpoint(addr).MarshalBinary()
	if err != nil {
		return err
	}
	if err := d.Objs.Workers.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return err
	}
	return nil
}

// Handshake returns and forgets what the data plane learnt of a handshake.
func (d *DataPlane) Handshake(key kern.LegKey) (kern.Handshake, bool) {
	h, ok := readHandshake(d.Objs.Handshakes, key)
	if ok {
		d.deleteKey(d.Objs.Handshakes, key)
	}
	return h, ok
}

// readHandshake reads key's entry of a map of struct handshake (xlb_hs,
// xlb_dials).
func readHandshake(m *ebpf.Map, key kern.LegKey) (kern.Handshake, bool) {
	var h kern.Handshake
	k, err := key.MarshalBinary()
	if err != nil {
		return h, false
	}
	v := make([]byte, kern.HandshakeSize)
	if err := m.Lookup(k, v); err != nil {
		return h, false
	}
	return h, h.UnmarshalBinary(v) == nil
}

// deleteKey deletes key's entry of m, if any.
func (d *DataPlane) deleteKey(m *ebpf.Map, key kern.LegKey) {
	if k, err := key.MarshalBinary(); err == nil {
		m.Delete(k)
	}
}

// putDial writes a dialed connection's handshake entry (xlb_dials).
func (d *DataPlane) putDial(key kern.LegKey, h *kern.Handshake) error {
	k, err := key.MarshalBinary()
	if err != nil {
		return err
	}
	v, _ := h.MarshalBinary()
	if err := d.Objs.Dials.Update(k, v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("handshake entry %s: %w", key, err)
	}
	return nil
}

// putDials writes the handshake entries of dialed connections in one
// call; it returns how many it wrote, in order, before an error.
func (d *DataPlane) putDials(ps []*pendingSyn, hs []kern.Handshake) (int, error) {
	keys := make([]byte, 0, len(ps)*kern.LegKeySize)
	vals := make([]byte, 0, len(ps)*kern.HandshakeSize)
	for i, p := range ps {
		k, err := p.key.MarshalBinary()
		if err != nil {
			return 0, err
		}
		v, _ := hs[i].MarshalBinary()
		keys, vals = append(keys, k...), append(vals, v...)
	}
	n, err := d.Objs.Dials.UpdateBatch(keys, vals, ebpf.UpdateAny)
	if err != nil {
		return n, fmt.Errorf("handshake entries: %w", err)
	}
	return n, nil
}

// peekDial reads a dialed connection's handshake entry and leaves it.
func (d *DataPlane) peekDial(key kern.LegKey) (kern.Handshake, bool) {
	return readHandshake(d.Objs.Dials, key)
}

// dropDial deletes a dialed connection's handshake entry.
func (d *DataPlane) dropDial(key kern.LegKey) { d.deleteKey(d.Objs.Dials, key) }

// RegisterLeg adds a leg; it fails if the key exists. A worker leg's local
// port is marked in xlb_ports, so that its packets are looked at.
func (d *DataPlane) RegisterLeg(key kern.LegKey, leg *kern.Leg) error {
	k, err := key.MarshalBinary()
	if err != nil {
		return err
	}
	if leg.Kind == kern.LegWorker {
		if err := d.markPort(key.Local.Port()); err != nil {
			return err
		}
	}
	v, _ := leg.MarshalBinary()
	if err := d.Objs.Legs.Update(k, v, ebpf.UpdateNoExist); err != nil {
		return fmt.Errorf("register leg %s: %w", key, err)
	}
	return nil
}

// Leg reads a leg.
func (d *DataPlane) Leg(key kern.LegKey) (kern.Leg, error) {
	var l kern.Leg
	k, err := key.MarshalBinary()
	if err != nil {
		return l, err
	}
	v := make([]byte, kern.LegSize)
	if err := d.Objs.Legs.Lookup(k, v); err != nil {
		return l, err
	}
	return l, l.UnmarshalBinary(v)
}

// Binding reads the binding of a leg.
func (d *DataPlane) Binding(key kern.LegKey) (kern.Binding, error) {
	var b kern.Binding
	k, err := key.MarshalBinary()
	if err != nil {
		return b, err
	}
	v := make([]byte, kern.BindingSize)
	if err := d.Objs.Binds.Lookup(k, v); err != nil {
		return b, err
	}
	return b, b.UnmarshalBinary(v)
}

// ForgetLeg deletes a leg, its binding and any handshake under its key.
func (d *DataPlane) ForgetLeg(key kern.LegKey) {
	k, err := key.MarshalBinary()
	if err != nil {
		return
	}
	d.Objs.Binds.Delete(k)
	d.Objs.Legs.Delete(k)
	d.Objs.Handshakes.Delete(k)
}

// forgetFinished deletes a finished (or stuck closing) leg's entries if the
// leg under key is still the one that finished at peerHi (the data plane checks and deletes
// in one run: a client reconnecting from the same port has a new leg under
// the key, and a handshake, which stay).
func (d *DataPlane) forgetFinished(key kern.LegKey, peerHi uint32) bool {
	res, err := d.ctlLegs(kern.CtlForget, []ctlLeg{{key: key, arg: peerHi}})
	return err == nil && res[0] == kern.CtlDone
}

// forgetAll is forgetFinished for many legs, in few runs.
func (d *DataPlane) forgetAll(items []reapItem) error {
	legs := make([]ctlLeg, len(items))
	for i, it := range items {
		legs[i] = ctlLeg{key: it.key, arg: it.peerHi}
	}
	_, err := d.ctlLegs(kern.CtlForget, legs)
	return err
}

// SetWorkerCfg writes a worker's settings for the data plane.
func (d *DataPlane) SetWorkerCfg(id uint32, c kern.WorkerCfg) error {
	v, _ := c.MarshalBinary()
	if err := d.Objs.WCfg.Update(ebpf.Uint32Key(id), v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("worker %d settings: %w", id, err)
	}
	return nil
}

// SetSynBudget tells the data plane how many idle worker legs the pools
// hold (kern.ConfigSynDemand): clients' SYNs past that many are reported
// (kern.EventDemand).
func (d *DataPlane) SetSynBudget(idle int64) error {
	v := make([]byte, 8)
	binary.NativeEndian.PutUint64(v, uint64(idle))
	if err := d.Objs.SynBudget.Update(ebpf.Uint32Key(0), v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("SYN budget: %w", err)
	}
	return nil
}

// PopRetired returns a worker leg the data plane retired, if any.
func (d *DataPlane) PopRetired() (kern.LegKey, bool) {
	var k kern.LegKey
	v := make([]byte, kern.LegKeySize)
	if err := d.Objs.Retired.Pop(v); err != nil {
		return k, false
	}
	return k, k.UnmarshalBinary(v) == nil
}

// WorkerStats sums a worker's per-CPU counters.
func (d *DataPlane) WorkerStats(id uint32) (kern.WorkerStats, error) {
	var w kern.WorkerStats
	vals, err := d.Objs.WStats.LookupPerCPU(ebpf.Uint32Key(id))
	if err != nil {
		return w, err
	}
	for _, v := range vals {
		w.AddPerCPU(v)
	}
	return w, nil
}

// workerLoad is one worker's entry of xlb_wload: the data plane's exact
// count of its legs bound to a client, idle in its pool, and cooling (given
// back by a leaving client, soon idle). Every per-worker number of the
// control plane (pool sizing, demand, stats, metrics) is derived from one
// read of these, so that they agree.
type workerLoad struct {
	Bound, Idle, Cooling int
}

// Legs is the worker's live connections: bound, idle or cooling.
func (l workerLoad) Legs() int { return l.Bound + l.Idle + l.Cooling }

// workerLoads is xlb_wload read at once, indexed by worker id.
type workerLoads []workerLoad

// of is worker id's load (none for an id out of range).
func (ls workerLoads) of(id uint32) workerLoad {
	if int(id) < len(ls) {
		return ls[id]
	}
	return workerLoad{}
}

// Loads reads every worker's load in one walk of xlb_wload (kept by the
// data plane with atomics; a count a racing update left below zero reads
// as zero).
func (d *DataPlane) Loads() (workerLoads, error) {
	ls := make(workerLoads, d.Objs.WLoad.MaxEntries())
	err := d.Objs.WLoad.ForEachBatch(func(k, v []byte) bool {
		var l kern.WorkerLoad
		id := binary.NativeEndian.Uint32(k)
		if int(id) < len(ls) && l.UnmarshalBinary(v) == nil {
			ls[id] = workerLoad{Bound: int(max(l.Bound, 0)), Idle: int(max(l.Idle, 0)), Cooling: int(max(l.Cooling, 0))}
		}
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("worker loads: %w", err)
	}
	return ls, nil
}

// ForEachLeg calls fn for every leg (a snapshot walk: legs may come and go
// meanwhile). It stops early if fn returns false.
func (d *DataPlane) ForEachLeg(fn func(kern.LegKey, *kern.Leg) bool) error {
	return kern.ForEachLeg(d.Objs.Legs, fn)
}

// monotonicNs is the data plane's clock (now_ns(): CLOCK_MONOTONIC_COARSE).
// A system call (golang.org/x/sys does not use the vDSO), so read once for
// a batch where it can be.
func monotonicNs() uint64 { return clockNs(unix.CLOCK_MONOTONIC_COARSE) }

// fineNs is CLOCK_MONOTONIC (bpf_ktime_get_ns) without a system call: the
// runtime's monotonic clock (the vDSO) since a base read once. ClockGettime
// is a VM exit under some hypervisors: the three clock reads of each dial
// (ISN, SYN timestamp, handshake entry) were 12% of xlb's samples under
// connection-per-request load here. (Not for the coarse clock the
// data plane compares with: the fine one runs up to a tick ahead of it.)
func fineNs() uint64 { return monoBase.ns + uint64(time.Since(monoBase.at)) }

var monoBase = func() (b struct {
	ns uint64
	at time.Time
}) {
	b.ns = clockNs(unix.CLOCK_MONOTONIC)
	b.at = time.Now()
	return b
}()

// clockNs reads a clock in nanoseconds.
func clockNs(id int32) uint64 {
	var ts unix.Timespec
	unix.ClockGettime(id, &ts)
	return uint64(ts.Nano())
}
