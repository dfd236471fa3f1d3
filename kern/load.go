package kern

import (
	"bytes"
	"errors"
	"fmt"

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

// Objects are the loaded program and maps of the data plane.
type Objects struct {
	Program *ebpf.Program
	Stats   *ebpf.Map
	coll    *ebpf.Collection
}

// Load creates the maps and loads the program into the kernel.
func Load() (*Objects, error) {
	spec, err := Spec()
	if err != nil {
		return nil, err
	}
	if err := ebpf.RemoveMemlockLimit(); err != nil {
		return nil, err
	}
	coll, err := ebpf.NewCollection(spec, nil)
	if err != nil {
		return nil, fmt.Errorf("loading the XDP program: %w", err)
	}
	o := &Objects{Program: coll.Programs[ProgramName], Stats: coll.Maps[StatsMapName], coll: coll}
	if o.Program == nil || o.Stats == nil {
		coll.Close()
		return nil, fmt.Errorf("embedded XDP object lacks program %s or map %s", ProgramName, StatsMapName)
	}
	return o, nil
}

// Close releases the file descriptors; an attached program stays attached.
func (o *Objects) Close() { o.coll.Close() }

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
	for _, id := range info.MapIDs {
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue
		}
		if m.Name() == StatsMapName {
			return prog, m, nil
		}
		m.Close()
	}
	prog.Close()
	return nil, nil, fmt.Errorf("XDP program id %d is named %s but has no %s map", progID, ProgramName, StatsMapName)
}
