package kern

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/xlb-lb/xlb/ebpf"
)

// Spec parses the embedded object.
func Spec() (*ebpf.CollectionSpec, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(Object))
	if err != nil {
		return nil, fmt.Errorf("embedded XDP object: %w", err)
	}
	return spec, nil
}

// Spec6 parses the embedded IPv6 object.
func Spec6() (*ebpf.CollectionSpec, error) {
	spec, err := ebpf.LoadCollectionSpecFromReader(bytes.NewReader(Object6))
	if err != nil {
		return nil, fmt.Errorf("embedded IPv6 XDP object: %w", err)
	}
	return spec, nil
}

// Objects are the loaded program and maps of the data plane.
type Objects struct {
	Program    *ebpf.Program // xlb_xdp, the one attached
	Bind       *ebpf.Program // xlb_bind, in Progs
	Slow       *ebpf.Program // xlb_slow, in Progs
	Xlate      *ebpf.Program // xlb_xlate, in Progs
	Ctl        *ebpf.Program // xlb_ctl, run with TestRun
	Program6   *ebpf.Program // xlb_xdp6: IPv6 frames, tail-called by Program
	Bind6      *ebpf.Program // xlb_bind6, xlb_slow6, xlb_xlate6: the IPv6 stages, in Progs after IPv4's (ProgSlots6)
	Slow6      *ebpf.Program
	Xlate6     *ebpf.Program
	Stats      *ebpf.Map // per-CPU counters (Counter)
	Config     *ebpf.Map // element 0: Config
	Legs       *ebpf.Map // LegKey -> Leg
	Binds      *ebpf.Map // LegKey -> Binding
	Handshakes *ebpf.Map // LegKey -> Handshake (LRU)
	Dials      *ebpf.Map // LegKey -> Handshake: dialed SYNs under way
	Pool       *ebpf.Map // worker id -> queue of LegKey: idle worker legs
	Ready      *ebpf.Map // queue of worker ids: jiq tokens
	Sched      *ebpf.Map // slot -> worker id: weighted schedule (rr, least)
	Ready6     *ebpf.Map // ... of the IPv6 workers
	Sched6     *ebpf.Map
	WLoad      *ebpf.Map // worker id -> bound legs (int64)
	Rematch    *ebpf.Map // client LegKey -> worker id
	Progs      *ebpf.Map // tail-call slots
	Sync       *ebpf.Map // map-in-map updated only to wait for an RCU grace period
	Ports      *ebpf.Map // bitmap of the local ports of worker legs (1024 x uint64)
	Workers    *ebpf.Map // Endpoint -> WorkerInfo
	WStats     *ebpf.Map // per-CPU WorkerStats by worker id
	WCfg       *ebpf.Map // WorkerCfg by worker id
	Retired    *ebpf.Map // queue of LegKey: worker legs the data plane retired
	Events     *ebpf.Map // ring buffer of Event
	ReqLog     *ebpf.Map // ring buffer of ReqRecord (not pinned: a new process reads its own)
	Held       *ebpf.Map // LegKey -> Held: client frames kept while the pools were empty
	SynBudget  *ebpf.Map // element 0: int64, idle legs less the SYNs answered since (ConfigSynDemand)
	FibGen     *ebpf.Map // element 0: uint32, the generation of the next hops cached in xlb_fib (NextHopsChanged)
	coll       *ebpf.Collection
	coll6      *ebpf.Collection // Object6's programs (its maps are coll's)
}

// MapNames lists the maps of the data plane, for pinning and reuse.
// The prog array is not among them: its slots refer to the programs of one
// load, and it empties when the last process holding it goes. Nor are the
// next-hop cache and its generation (xlb_fib, xlb_fib_gen): a new load
// looks its next hops up afresh.
var MapNames = []string{StatsMapName, ConfigMapName, LegsMapName, BindsMapName,
	HandshakesName, DialsName, PoolMapName, ReadyMapName, SchedMapName, ReadyMapName6, SchedMapName6, RRMapName, WLoadMapName, RematchMapName,
	WorkersMapName, WStatsMapName, WCfgMapName, RetiredMapName, EventsMapName, SyncMapName, PortsMapName, CoolingMapName}

// LoadOptions adjust the data plane before it is loaded.
type LoadOptions struct {
	// MaxLegs sizes the leg and binding tables (0: the object's default).
	MaxLegs uint32
	// ReuseMaps are maps to use instead of creating new ones (pinned
	// state of a previous run), by name.
	ReuseMaps map[string]*ebpf.Map
}

// cachedSpec is Spec parsed once, for lookups that must not modify it.
var cachedSpec = sync.OnceValues(Spec)

// InnerMapSpec is the inner map template of a map-in-map of the object (a
// map opened from a pin or an ID has none).
func InnerMapSpec(outer string) (*ebpf.MapSpec, error) {
	spec, err := cachedSpec()
	if err != nil {
		return nil, err
	}
	ms := spec.Maps[outer]
	if ms == nil || ms.InnerMap == nil {
		return nil, fmt.Errorf("embedded XDP object: %s is not a map-in-map", outer)
	}
	inner := *ms.InnerMap
	return &inner, nil
}

// Load creates the maps and loads the program into the kernel.
func Load() (*Objects, error) { return LoadWith(LoadOptions{}) }

// LoadWith is Load with options.
func LoadWith(opts LoadOptions) (*Objects, error) {
	spec, err := Spec()
	if err != nil {
		return nil, err
	}
	opts.size(spec)
	if err := ebpf.RemoveMemlockLimit(); err != nil {
		return nil, err
	}
	coll, err := ebpf.NewCollection(spec, &ebpf.CollectionOptions{ReplaceMaps: opts.ReuseMaps})
	if err != nil {
		return nil, fmt.Errorf("loading the XDP program: %w%s", err, saveVerifierLog(err))
	}
	o := &Objects{
		Program:    coll.Programs[ProgramName],
		Bind:       coll.Programs[BindProgName],
		Slow:       coll.Programs[SlowProgName],
		Xlate:      coll.Programs[XlateProgName],
		Ctl:        coll.Programs[CtlProgName],
		Stats:      coll.Maps[StatsMapName],
		Config:     coll.Maps[ConfigMapName],
		Legs:       coll.Maps[LegsMapName],
		Binds:      coll.Maps[BindsMapName],
		Handshakes: coll.Maps[HandshakesName],
		Dials:      coll.Maps[DialsName],
		Pool:       coll.Maps[PoolMapName],
		Ready:      coll.Maps[ReadyMapName],
		Sched:      coll.Maps[SchedMapName],
		Ready6:     coll.Maps[ReadyMapName6],
		Sched6:     coll.Maps[SchedMapName6],
		WLoad:      coll.Maps[WLoadMapName],
		Rematch:    coll.Maps[RematchMapName],
		Progs:      coll.Maps[ProgsMapName],
		Sync:       coll.Maps[SyncMapName],
		Ports:      coll.Maps[PortsMapName],
		Workers:    coll.Maps[WorkersMapName],
		WStats:     coll.Maps[WStatsMapName],
		WCfg:       coll.Maps[WCfgMapName],
		Retired:    coll.Maps[RetiredMapName],
		Events:     coll.Maps[EventsMapName],
		ReqLog:     coll.Maps[ReqLogMapName],
		Held:       coll.Maps[HeldMapName],
		SynBudget:  coll.Maps[SynBudgetName],
		FibGen:     coll.Maps[FibGenName],
		coll:       coll,
	}
	if o.Program == nil || o.Bind == nil || o.Slow == nil || o.Xlate == nil || o.Ctl == nil {
		coll.Close()
		return nil, fmt.Errorf("embedded XDP object lacks one of the programs %s, %s, %s, %s, %s", ProgramName, BindProgName, SlowProgName, XlateProgName, CtlProgName)
	}
	for _, name := range append(MapNames, ProgsMapName, HeldMapName, SynBudgetName, FibMapName, FibGenName) {
		if o.Map(name) == nil {
			coll.Close()
			return nil, fmt.Errorf("embedded XDP object lacks map %s", name)
		}
	}
	if err := o.load6(opts); err != nil {
		coll.Close()
		return nil, err
	}
	for slot, p := range map[uint32]*ebpf.Program{ProgBindSlot: o.Bind, ProgMainSlot: o.Program, ProgSlowSlot: o.Slow, ProgXlateSlot: o.Xlate,
		ProgSlots6 + ProgBindSlot: o.Bind6, ProgSlots6 + ProgMainSlot: o.Program6, ProgSlots6 + ProgSlowSlot: o.Slow6, ProgSlots6 + ProgXlateSlot: o.Xlate6} {
		if err := o.Progs.Update(ebpf.Uint32Key(slot), ebpf.Uint32Key(uint32(p.FD())), ebpf.UpdateAny); err != nil {
			o.Close()
			return nil, fmt.Errorf("tail-call slot %d (%s): %w", slot, p.Name(), err)
		}
	}
	return o, nil
}

// size applies MaxLegs to an object's maps.
func (opts LoadOptions) size(spec *ebpf.CollectionSpec) {
	if opts.MaxLegs == 0 {
		return
	}
	for _, name := range []string{LegsMapName, BindsMapName, ReadyMapName, ReadyMapName6} {
		if m := spec.Maps[name]; m != nil {
			m.MaxEntries = opts.MaxLegs
		}
	}
	// Handshakes under way: a quarter of the legs, never fewer than the
	// object's default. A burst of new clients larger than the table
	// evicts some, and their ACK meets the listener's reset.
	if m := spec.Maps[HandshakesName]; m != nil {
		m.MaxEntries = max(m.MaxEntries, opts.MaxLegs/4)
	}
}

// load6 loads Object6's programs against o's maps (its own: the IPv6
// next-hop cache).
func (o *Objects) load6(opts LoadOptions) error {
	spec, err := Spec6()
	if err != nil {
		return err
	}
	opts.size(spec)
	maps := map[string]*ebpf.Map{}
	for name := range spec.Maps {
		if m := o.coll.Maps[name]; m != nil {
			maps[name] = m
		}
	}
	coll, err := ebpf.NewCollection(spec, &ebpf.CollectionOptions{ReplaceMaps: maps})
	if err != nil {
		return fmt.Errorf("loading the IPv6 XDP programs: %w%s", err, saveVerifierLog(err))
	}
	for _, name := range []string{ProgramName6, BindProgName6, SlowProgName6, XlateProgName6} {
		if coll.Programs[name] == nil {
			coll.Close()
			return fmt.Errorf("embedded IPv6 XDP object lacks program %s", name)
		}
	}
	if coll.Maps[FibMapName6] == nil {
		coll.Close()
		return fmt.Errorf("embedded IPv6 XDP object lacks map %s", FibMapName6)
	}
	o.coll6 = coll
	o.Program6, o.Bind6, o.Slow6, o.Xlate6 = coll.Programs[ProgramName6], coll.Programs[BindProgName6], coll.Programs[SlowProgName6], coll.Programs[XlateProgName6]
	return nil
}

// NextHopsChanged makes the data plane look up every next hop again
// (routed mode): it moves the generation of those it cached in xlb_fib.
// User space calls it when a route, a neighbour, an address or a link may
// have changed; one caller at a time.
func (o *Objects) NextHopsChanged() error {
	v := make([]byte, 4)
	if err := o.FibGen.Lookup(ebpf.Uint32Key(0), v); err != nil {
		return fmt.Errorf("map %s: %w", FibGenName, err)
	}
	binary.NativeEndian.PutUint32(v, binary.NativeEndian.Uint32(v)+1)
	if err := o.FibGen.Update(ebpf.Uint32Key(0), v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("map %s: %w", FibGenName, err)
	}
	return nil
}

// saveVerifierLog writes the whole log of a rejected program (or of the
// object's BTF, which the kernel checks first) to a file and returns where,
// for the error message (the summary is short).
func saveVerifierLog(err error) string {
	var ve *ebpf.VerifierError
	var be *ebpf.BTFError
	var log string
	switch {
	case errors.As(err, &ve):
		log = ve.Log
	case errors.As(err, &be):
		log = be.Log
	}
	if log == "" {
		return ""
	}
	f, ferr := os.CreateTemp("", "xlb-verifier-*.log")
	if ferr != nil {
		return ""
	}
	defer f.Close()
	if _, ferr := f.WriteString(log); ferr != nil {
		return ""
	}
	return "; the whole verifier log is in " + f.Name()
}

// Map returns the map called name, or nil.
func (o *Objects) Map(name string) *ebpf.Map { return o.coll.Maps[name] }

// Close releases the file descriptors; an attached program stays attached.
func (o *Objects) Close() {
	if o.coll6 != nil {
		o.coll6.Close()
	}
	o.coll.Close()
}

// Counters are the summed per-CPU counters of xlb_stats.
type Counters [CounterMax]uint64

// ReadCounters sums every counter of the stats map over the CPUs.
func ReadCounters(stats *ebpf.Map) (Counters, error) {
	var c Counters
	for i := range c {
		key := []byte{byte(i), byte(i >> 8), byte(i >> 16), byte(i >> 24)}
		v, err := stats.SumPerCPUUint64(key)
		if err != nil {
			return c, fmt.Errorf("reading counter %s: %w", Counter(i), err)
		}
		c[i] = v
	}
	return c, nil
}

// ErrNotOurs is returned when the program on an interface is not xlb's.
var ErrNotOurs = errors.New("the attached XDP program is not xlb's")

// Attached opens the program with the given id and, if it is xlb's, its
// stats map. The caller closes both.
func Attached(progID uint32) (*ebpf.Program, *ebpf.Map, error) {
	prog, maps, err := AttachedMaps(progID)
	if err != nil {
		return nil, nil, err
	}
	stats := maps[StatsMapName]
	for name, m := range maps {
		if name != StatsMapName {
			m.Close()
		}
	}
	if stats == nil {
		prog.Close()
		return nil, nil, fmt.Errorf("XDP program id %d is named %s but has no %s map", progID, ProgramName, StatsMapName)
	}
	return prog, stats, nil
}

// AttachedMaps opens the program with the given id and, if it is xlb's,
// every map it uses, by name. The caller closes them.
func AttachedMaps(progID uint32) (*ebpf.Program, map[string]*ebpf.Map, error) {
	prog, err := ebpf.NewProgramFromID(progID)
	if err != nil {
		return nil, nil, fmt.Errorf("opening XDP program id %d: %w", progID, err)
	}
	info, err := prog.Info()
	if err != nil {
		prog.Close()
		return nil, nil, fmt.Errorf("reading XDP program id %d: %w", progID, err)
	}
	if info.Name != ProgramName {
		prog.Close()
		return nil, nil, fmt.Errorf("%w (id %d, name %q)", ErrNotOurs, progID, info.Name)
	}
	maps := map[string]*ebpf.Map{}
	for _, id := range info.MapIDs {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue
		}
		maps[m.Name()] = m
	}
	return prog, maps, nil
}

// ForEachLeg calls fn for every leg of a leg table (a batched walk, see
// ebpf.Map.ForEachBatch), stopping early if fn returns false.
func ForEachLeg(legs *ebpf.Map, fn func(LegKey, *Leg) bool) error {
	return legs.ForEachBatch(func(kb, vb []byte) bool {
		var k LegKey
		var l Leg
		if k.UnmarshalBinary(kb) != nil || l.UnmarshalBinary(vb) != nil {
			return true
		}
		return fn(k, &l)
	})
}

// PinnedLegs is the kind under which LegCounts counts live pinned client
// legs by reason ("pinned/tls").
const PinnedLegs = "pinned"

// LegCounts counts the legs of a leg table by kind and state, e.g.
// "client/bound": 3. Bindings are counted under "bindings", live pinned
// client legs again under "pinned/<reason>".
func LegCounts(legs, binds *ebpf.Map) (map[string]int, error) {
	out := map[string]int{}
	err := ForEachLeg(legs, func(_ LegKey, l *Leg) bool {
		out[l.Kind.String()+"/"+l.State.String()]++
		if l.Kind == LegClient && l.Pin != PinNone && l.State != LegDead {
			out[PinnedLegs+"/"+l.Pin.String()]++
		}
		return true
	})
	if err == nil && binds != nil {
		err = binds.ForEachBatch(func(_, _ []byte) bool {
			out["bindings"]++
			return true
		})
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ProgramPinName is the pin name of the program in a pin directory.
const ProgramPinName = "prog"

// Pin pins the program and every map under dir (replacing dir atomically),
// for a later run to take over with --reuse. The prog array is pinned too,
// though never reused: the pin keeps its slots filled should the process
// that loaded it die with the program attached.
func (o *Objects) Pin(dir string) error {
	if err := ebpf.EnsureBPFFS(ebpf.DefaultBPFFS); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return fmt.Errorf("pin: %w", err)
	}
	objs := map[string]ebpf.Pinner{ProgramPinName: o.Program, ProgsMapName: o.Progs}
	for _, name := range MapNames {
		objs[name] = o.Map(name)
	}
	return ebpf.PinDir(dir, objs)
}

// OpenPinnedMaps opens the maps pinned under dir by name. The caller closes
// them (or hands them to LoadWith as ReuseMaps).
func OpenPinnedMaps(dir string) (map[string]*ebpf.Map, error) {
	maps := map[string]*ebpf.Map{}
	for _, name := range MapNames {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name))
		if err != nil {
			for _, m := range maps {
				m.Close()
			}
			return nil, fmt.Errorf("pinned map %s: %w", name, err)
		}
		maps[name] = m
	}
	return maps, nil
}
