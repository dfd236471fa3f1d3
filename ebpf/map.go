package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MapType is enum bpf_map_type.
type MapType uint32

// Map types (the values of enum bpf_map_type).
const (
	Hash           MapType = 1
	Array          MapType = 2
	ProgArray      MapType = 3
	PerfEventArray MapType = 4
	PerCPUHash     MapType = 5
	PerCPUArray    MapType = 6
	LRUHash        MapType = 9
	LRUPerCPUHash  MapType = 10
	LPMTrie        MapType = 11
	ArrayOfMaps    MapType = 12
	HashOfMaps     MapType = 13
	DevMap         MapType = 14
	CPUMap         MapType = 16
	XSKMap         MapType = 17
	Queue          MapType = 22
	Stack          MapType = 23
	DevMapHash     MapType = 25
	RingBuf        MapType = 27
)

var mapTypeNames = map[MapType]string{
	Hash: "Hash", Array: "Array", ProgArray: "ProgArray", PerfEventArray: "PerfEventArray",
	PerCPUHash: "PerCPUHash", PerCPUArray: "PerCPUArray", LRUHash: "LRUHash",
	LRUPerCPUHash: "LRUPerCPUHash", LPMTrie: "LPMTrie", ArrayOfMaps: "ArrayOfMaps", HashOfMaps: "HashOfMaps", DevMap: "DevMap", CPUMap: "CPUMap",
	XSKMap: "XSKMap", Queue: "Queue", Stack: "Stack", DevMapHash: "DevMapHash", RingBuf: "RingBuf",
}

func (t MapType) String() string {
	if s, ok := mapTypeNames[t]; ok {
		return s
	}
	return "MapType(" + strconv.FormatUint(uint64(t), 10) + ")"
}

// perCPU reports whether lookups return one value per possible CPU.
func (t MapType) perCPU() bool {
	return t == PerCPUHash || t == PerCPUArray || t == LRUPerCPUHash
}

// mapInMap reports whether the values are maps (an fd on update, an ID on
// lookup) described by MapSpec.InnerMap.
func (t MapType) mapInMap() bool {
	return t == ArrayOfMaps || t == HashOfMaps
}

// outerValueSize is the value size of a map-in-map: a __u32 fd or ID.
const outerValueSize = 4

// UpdateFlags are the flags of BPF_MAP_UPDATE_ELEM.
type UpdateFlags uint64

const (
	UpdateAny     UpdateFlags = 0 // BPF_ANY: create or replace
	UpdateNoExist UpdateFlags = 1 // BPF_NOEXIST: create only
	UpdateExist   UpdateFlags = 2 // BPF_EXIST: replace only
)

// perCPUValueAlign is the alignment of each CPU's slot in the buffer of a
// per-CPU map lookup (the kernel rounds value_size up to 8 bytes).
const perCPUValueAlign = 8

// MapSpec describes a map to create.
type MapSpec struct {
	Name       string
	Type       MapType
	KeySize    uint32
	ValueSize  uint32
	MaxEntries uint32
	Flags      uint32
	// InnerMap is the template of the inner maps of an ArrayOfMaps or
	// HashOfMaps (required for those, ignored otherwise). NewMap creates a
	// temporary map from it to describe the inner maps to the kernel;
	// every map stored later must match its type, key size, value size and
	// flags. The outer ValueSize is 4 (0 means 4).
	InnerMap *MapSpec
}

// Map is an open BPF map.
type Map struct {
	fd   int
	spec MapSpec
}

// NewMap creates a map (BPF_MAP_CREATE). The kernel name is the spec name cut
// to 15 characters; Name returns the full spec name.
func NewMap(spec *MapSpec) (*Map, error) {
	if spec.Type.mapInMap() {
		return newMapInMap(spec)
	}
	return newMap(spec, 0)
}

// newMapInMap creates an ArrayOfMaps or HashOfMaps: the kernel takes the inner
// map description from an existing map (inner_map_fd), so a temporary map is
// created from the template and closed once the outer map exists.
func newMapInMap(spec *MapSpec) (*Map, error) {
	s := *spec
	if s.InnerMap == nil {
		return nil, fmt.Errorf("map %s: create %s: no inner map template (MapSpec.InnerMap)", s.Name, s.Type)
	}
	if s.ValueSize == 0 {
		s.ValueSize = outerValueSize
	}
	if s.ValueSize != outerValueSize {
		return nil, fmt.Errorf("map %s: create %s: value size %d, want %d (an inner map fd or ID)", s.Name, s.Type, s.ValueSize, outerValueSize)
	}
	innerSpec := *s.InnerMap
	s.InnerMap = &innerSpec
	if innerSpec.Name == "" {
		innerSpec.Name = s.Name + "_inner"
	}
	inner, err := NewMap(&innerSpec)
	if err != nil {
		return nil, fmt.Errorf("map %s: inner map template: %w", s.Name, err)
	}
	defer inner.Close()
	return newMap(&s, uint32(inner.FD()))
}

func newMap(spec *MapSpec, innerFD uint32) (*Map, error) {
	attr := mapCreateAttr{
		MapType:    uint32(spec.Type),
		KeySize:    spec.KeySize,
		ValueSize:  spec.ValueSize,
		MaxEntries: spec.MaxEntries,
		MapFlags:   spec.Flags,
		InnerMapFD: innerFD,
		MapName:    objName(spec.Name),
	}
	fd, err := sysMapCreate(&attr)
	if err != nil {
		return nil, fmt.Errorf("map %s: create %s (key %d, value %d, max_entries %d, flags %#x): %w",
			spec.Name, spec.Type, spec.KeySize, spec.ValueSize, spec.MaxEntries, spec.Flags, sysErrno(err))
	}
	return &Map{fd: fd, spec: *spec}, nil
}

// FD is the map's file descriptor, or -1 after Close.
func (m *Map) FD() int { return m.fd }

func (m *Map) Name() string       { return m.spec.Name }
func (m *Map) Type() MapType      { return m.spec.Type }
func (m *Map) KeySize() uint32    { return m.spec.KeySize }
func (m *Map) ValueSize() uint32  { return m.spec.ValueSize }
func (m *Map) MaxEntries() uint32 { return m.spec.MaxEntries }
func (m *Map) Flags() uint32      { return m.spec.Flags }

// Spec is a copy of the map's description.
func (m *Map) Spec() MapSpec { return m.spec }

// Close closes the file descriptor; the map lives on while pinned or used by a
// loaded program. Closing twice is harmless.
func (m *Map) Close() error {
	if m == nil || m.fd < 0 {
		return nil
	}
	err := unix.Close(m.fd)
	m.fd = -1
	if err != nil {
		return fmt.Errorf("map %s: close: %w", m.spec.Name, err)
	}
	return nil
}

// valueBufSize is the size of the value buffer a lookup or update takes: for
// per-CPU maps, one 8-byte-aligned slot per possible CPU.
func (m *Map) valueBufSize() (int, error) {
	if !m.spec.Type.perCPU() {
		return int(m.spec.ValueSize), nil
	}
	n, err := PossibleCPUs()
	if err != nil {
		return 0, err
	}
	return perCPUSlot(m.spec.ValueSize) * n, nil
}

func perCPUSlot(valueSize uint32) int {
	return (int(valueSize) + perCPUValueAlign - 1) &^ (perCPUValueAlign - 1)
}

func (m *Map) checkKey(op string, key []byte) error {
	if len(key) != int(m.spec.KeySize) {
		return fmt.Errorf("map %s: %s: key is %d bytes, want %d", m.spec.Name, op, len(key), m.spec.KeySize)
	}
	return nil
}

func (m *Map) checkValue(op string, value []byte) error {
	want, err := m.valueBufSize()
	if err != nil {
		return fmt.Errorf("map %s: %s: %w", m.spec.Name, op, err)
	}
	if len(value) != want {
		return fmt.Errorf("map %s: %s: value is %d bytes, want %d", m.spec.Name, op, len(value), want)
	}
	return nil
}

func (m *Map) elem(cmd uintptr, op string, key, value []byte, flags uint64) error {
	attr := mapElemAttr{MapFD: uint32(m.fd), Key: bytePtr(key), Value: bytePtr(value), Flags: flags}
	// An update or delete of a map-in-map waits for an RCU grace period
	// (milliseconds: programs may still hold the old inner map): not
	// quick (bpfQuick).
	quick := cmd == cmdMapLookupElem || cmd == cmdMapGetNextKey || !m.spec.Type.mapInMap()
	if err := sysMapElem(cmd, &attr, quick); err != nil {
		return fmt.Errorf("map %s: %s: %w", m.spec.Name, op, mapErrno(err))
	}
	return nil
}

// Lookup copies the value of key into value, which must be ValueSize bytes
// (the whole per-CPU buffer for per-CPU maps; see LookupPerCPU).
func (m *Map) Lookup(key, value []byte) error {
	if err := m.checkKey("lookup", key); err != nil {
		return err
	}
	if err := m.checkValue("lookup", value); err != nil {
		return err
	}
	return m.elem(cmdMapLookupElem, "lookup", key, value, 0)
}

// Update sets key to value (sized as for Lookup).
func (m *Map) Update(key, value []byte, flags UpdateFlags) error {
	if err := m.checkKey("update", key); err != nil {
		return err
	}
	if err := m.checkValue("update", value); err != nil {
		return err
	}
	return m.elem(cmdMapUpdateElem, "update", key, value, uint64(flags))
}

// UpdateBatch sets many entries in one system call (BPF_MAP_UPDATE_BATCH):
// keys and values hold them back to back, as many values as keys. It
// returns how many were set, in order, before any error.
func (m *Map) UpdateBatch(keys, values []byte, flags UpdateFlags) (int, error) {
	ks, vs := int(m.spec.KeySize), int(m.spec.ValueSize)
	n := len(keys) / ks
	if len(keys) != n*ks || len(values) != n*vs {
		return 0, fmt.Errorf("map %s: update batch: %d bytes of keys and %d of values, want %d-byte keys and as many %d-byte values",
			m.spec.Name, len(keys), len(values), ks, vs)
	}
	if n == 0 {
		return 0, nil
	}
	attr := mapBatchAttr{Keys: bytePtr(keys), Values: bytePtr(values), Count: uint32(n), MapFD: uint32(m.fd), ElemFlags: uint64(flags)}
	if err := sysMapBatch(cmdMapUpdateBatch, &attr, !m.spec.Type.mapInMap()); err != nil {
		return int(attr.Count), fmt.Errorf("map %s: update batch: %w", m.spec.Name, sysErrno(err))
	}
	return int(attr.Count), nil
}

// Delete removes key.
func (m *Map) Delete(key []byte) error {
	if err := m.checkKey("delete", key); err != nil {
		return err
	}
	return m.elem(cmdMapDeleteElem, "delete", key, nil, 0)
}

// NextKey stores in next the key that follows key; key == nil asks for the
// first key. At the end it returns ErrKeyNotExist.
func (m *Map) NextKey(key, next []byte) error {
	if key != nil {
		if err := m.checkKey("next key", key); err != nil {
			return err
		}
	}
	if len(next) != int(m.spec.KeySize) {
		return fmt.Errorf("map %s: next key: next is %d bytes, want %d", m.spec.Name, len(next), m.spec.KeySize)
	}
	return m.elem(cmdMapGetNextKey, "next key", key, next, 0)
}

// LookupAndDelete copies the value of key into value and removes it. For a
// queue or stack key is nil.
// ForEach calls fn with every key and value of the map, stopping early if fn
// returns false. It is a snapshot walk: an entry deleted meanwhile is
// skipped, and it visits at most MaxEntries+1 keys, so it ends even when a
// deletion makes the kernel restart the walk. key and value are reused
// between calls: copy what you keep.
func (m *Map) ForEach(fn func(key, value []byte) bool) error {
	var key []byte
	next := make([]byte, m.spec.KeySize)
	value := make([]byte, m.spec.ValueSize)
	for i := uint32(0); i <= m.spec.MaxEntries; i++ {
		if err := m.NextKey(key, next); err != nil {
			if errors.Is(err, ErrKeyNotExist) {
				return nil
			}
			return err
		}
		key = append(key[:0], next...)
		if err := m.Lookup(key, value); err != nil {
			if errors.Is(err, ErrKeyNotExist) {
				continue // deleted meanwhile
			}
			return err
		}
		if !fn(key, value) {
			return nil
		}
	}
	return nil
}

// batchSize is how many entries one BPF_MAP_LOOKUP_BATCH call asks for.
const batchSize = 4096

// ForEachBatch is ForEach with BPF_MAP_LOOKUP_BATCH: a few system calls for
// thousands of entries instead of two per entry. Hash maps and arrays (an
// array's batch token is an index, which fits the room below). The walk is
// not atomic either: entries added or deleted meanwhile may or may not be
// seen. It visits at most MaxEntries entries.
func (m *Map) ForEachBatch(fn func(key, value []byte) bool) error {
	ks, vs := int(m.spec.KeySize), int(m.spec.ValueSize)
	// No bigger than the map: a 256-entry array is read often (a worker's
	// every refill), and 4096 entries of room were 112 KiB of garbage a read
	// (4-byte keys, 24-byte values).
	batch := min(batchSize, max(int(m.spec.MaxEntries), 1))
	keys := make([]byte, batch*ks)
	values := make([]byte, batch*vs)
	// The batch token of a hash map is a bucket index (4 bytes); room for
	// a key is what libbpf gives it.
	in, out := make([]byte, max(ks, 8)), make([]byte, max(ks, 8))
	seen := 0
	for first := true; seen <= int(m.spec.MaxEntries); first = false {
		attr := mapBatchAttr{
			OutBatch: bytePtr(out),
			Keys:     bytePtr(keys),
			Values:   bytePtr(values),
			Count:    uint32(batch),
			MapFD:    uint32(m.fd),
		}
		if !first {
			attr.InBatch = bytePtr(in)
		}
		err := sysMapBatch(cmdMapLookupBatch, &attr, true)
		done := errors.Is(err, unix.ENOENT)
		if err != nil && !done {
			return fmt.Errorf("map %s: lookup batch: %w", m.spec.Name, sysErrno(err))
		}
		for i := 0; i < int(attr.Count) && i < batch; i++ {
			seen++
			if !fn(keys[i*ks:(i+1)*ks], values[i*vs:(i+1)*vs]) {
				return nil
			}
		}
		if done {
			return nil
		}
		copy(in, out)
	}
	return nil
}

func (m *Map) LookupAndDelete(key, value []byte) error {
	if err := m.checkKey("lookup and delete", key); err != nil {
		return err
	}
	if err := m.checkValue("lookup and delete", value); err != nil {
		return err
	}
	return m.elem(cmdMapLookupAndDelete, "lookup and delete", key, value, 0)
}

// Push appends value to a queue or stack map.
func (m *Map) Push(value []byte) error { return m.Update(nil, value, UpdateAny) }

// Pop removes the head of a queue (top of a stack) into value; on an empty map
// it returns ErrKeyNotExist.
func (m *Map) Pop(value []byte) error { return m.LookupAndDelete(nil, value) }

// UpdateInner stores inner at key of an ArrayOfMaps or HashOfMaps (the
// kernel takes the fd and keeps its own reference: inner may be closed
// afterwards). inner must match the outer map's InnerMap template.
func (m *Map) UpdateInner(key []byte, inner *Map) error {
	if !m.spec.Type.mapInMap() {
		return fmt.Errorf("map %s: update inner: %s is not a map-in-map", m.spec.Name, m.spec.Type)
	}
	if inner == nil || inner.fd < 0 {
		return fmt.Errorf("map %s: update inner: inner map is nil or closed", m.spec.Name)
	}
	return m.Update(key, binary.NativeEndian.AppendUint32(nil, uint32(inner.fd)), UpdateAny)
}

// LookupInnerID returns the kernel ID of the inner map at key of an
// ArrayOfMaps or HashOfMaps (open it with NewMapFromID). An empty slot is
// ErrKeyNotExist.
func (m *Map) LookupInnerID(key []byte) (uint32, error) {
	if !m.spec.Type.mapInMap() {
		return 0, fmt.Errorf("map %s: lookup inner: %s is not a map-in-map", m.spec.Name, m.spec.Type)
	}
	v := make([]byte, outerValueSize)
	if err := m.Lookup(key, v); err != nil {
		return 0, err
	}
	return binary.NativeEndian.Uint32(v), nil
}

// LookupPerCPU returns the value of key on each possible CPU of a per-CPU map.
func (m *Map) LookupPerCPU(key []byte) ([][]byte, error) {
	if !m.spec.Type.perCPU() {
		return nil, fmt.Errorf("map %s: lookup per CPU: %s is not a per-CPU map", m.spec.Name, m.spec.Type)
	}
	size, err := m.valueBufSize()
	if err != nil {
		return nil, fmt.Errorf("map %s: lookup per CPU: %w", m.spec.Name, err)
	}
	buf := make([]byte, size)
	if err := m.Lookup(key, buf); err != nil {
		return nil, err
	}
	slot := perCPUSlot(m.spec.ValueSize)
	out := make([][]byte, size/slot)
	for i := range out {
		out[i] = buf[i*slot : i*slot+int(m.spec.ValueSize) : i*slot+int(m.spec.ValueSize)]
	}
	return out, nil
}

// UpdatePerCPU sets key of a per-CPU map to values[cpu] on each possible CPU.
func (m *Map) UpdatePerCPU(key []byte, values [][]byte, flags UpdateFlags) error {
	if !m.spec.Type.perCPU() {
		return fmt.Errorf("map %s: update per CPU: %s is not a per-CPU map", m.spec.Name, m.spec.Type)
	}
	size, err := m.valueBufSize()
	if err != nil {
		return fmt.Errorf("map %s: update per CPU: %w", m.spec.Name, err)
	}
	slot := perCPUSlot(m.spec.ValueSize)
	if len(values) != size/slot {
		return fmt.Errorf("map %s: update per CPU: %d values, want one per possible CPU (%d)", m.spec.Name, len(values), size/slot)
	}
	buf := make([]byte, size)
	for i, v := range values {
		if len(v) != int(m.spec.ValueSize) {
			return fmt.Errorf("map %s: update per CPU: value %d is %d bytes, want %d", m.spec.Name, i, len(v), m.spec.ValueSize)
		}
		copy(buf[i*slot:], v)
	}
	return m.Update(key, buf, flags)
}

// SumPerCPUUint64 is the sum over CPUs of the 8-byte value of key in a
// per-CPU map (counters).
func (m *Map) SumPerCPUUint64(key []byte) (uint64, error) {
	if m.spec.ValueSize != 8 {
		return 0, fmt.Errorf("map %s: sum per CPU: value is %d bytes, want 8", m.spec.Name, m.spec.ValueSize)
	}
	vals, err := m.LookupPerCPU(key)
	if err != nil {
		return 0, err
	}
	var sum uint64
	for _, v := range vals {
		sum += binary.NativeEndian.Uint64(v)
	}
	return sum, nil
}

// Uint32Key is k encoded as a map key in host byte order (array indexes).
func Uint32Key(k uint32) []byte {
	return binary.NativeEndian.AppendUint32(nil, k)
}

// Pin pins the map at path, which must be on a bpf filesystem.
func (m *Map) Pin(path string) error {
	if err := pinFD(m.fd, path); err != nil {
		return fmt.Errorf("map %s: %w", m.spec.Name, err)
	}
	return nil
}

// LoadPinnedMap opens the map pinned at path.
func LoadPinnedMap(path string) (*Map, error) {
	fd, err := getPinned(path)
	if err != nil {
		return nil, fmt.Errorf("load pinned map: %w", err)
	}
	m, err := newMapFromFD(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("load pinned map %s: %w", path, err)
	}
	return m, nil
}

// NewMapFromID opens the map with the given kernel ID.
func NewMapFromID(id uint32) (*Map, error) {
	attr := getFDByIDAttr{ID: id}
	fd, err := sysGetFDByID(cmdMapGetFDByID, &attr)
	if err != nil {
		return nil, fmt.Errorf("map id %d: get fd: %w", id, sysErrno(err))
	}
	m, err := newMapFromFD(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("map id %d: %w", id, err)
	}
	return m, nil
}

// newMapFromFD describes an existing map from its info. The kernel does not
// report the inner map template of a map-in-map: Spec().InnerMap is nil (not
// needed by UpdateInner or LookupInnerID).
func newMapFromFD(fd int) (*Map, error) {
	info, err := getMapInfo(fd)
	if err != nil {
		return nil, err
	}
	return &Map{fd: fd, spec: MapSpec{
		Name:       cName(info.Name[:]),
		Type:       MapType(info.Type),
		KeySize:    info.KeySize,
		ValueSize:  info.ValueSize,
		MaxEntries: info.MaxEntries,
		Flags:      info.MapFlags,
	}}, nil
}

func getMapInfo(fd int) (*mapInfo, error) {
	var info mapInfo
	attr := objInfoAttr{BPFFD: uint32(fd), InfoLen: uint32(unsafe.Sizeof(info)), Info: unsafe.Pointer(&info)}
	if err := sysObjGetInfoByFD(&attr); err != nil {
		return nil, fmt.Errorf("get map info: %w", sysErrno(err))
	}
	return &info, nil
}

// ID is the map's kernel ID.
func (m *Map) ID() (uint32, error) {
	info, err := getMapInfo(m.fd)
	if err != nil {
		return 0, fmt.Errorf("map %s: %w", m.spec.Name, err)
	}
	return info.ID, nil
}

// possibleCPUsFile lists the CPUs the kernel sizes per-CPU values for.
const possibleCPUsFile = "/sys/devices/system/cpu/possible"

var possibleCPUs = sync.OnceValues(func() (int, error) {
	b, err := os.ReadFile(possibleCPUsFile)
	if err != nil {
		return 0, fmt.Errorf("possible CPUs: %w", err)
	}
	return parseCPUList(string(b))
})

// PossibleCPUs is the number of possible CPUs (num_possible_cpus() in the
// kernel): the number of values a per-CPU map holds per key.
func PossibleCPUs() (int, error) { return possibleCPUs() }

// parseCPUList counts the CPUs of a kernel CPU list such as "0-3,5,7-8".
func parseCPUList(s string) (int, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("possible CPUs: empty list")
	}
	n := 0
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := strconv.ParseUint(lo, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("possible CPUs: bad list %q", s)
		}
		last := first
		if isRange {
			if last, err = strconv.ParseUint(hi, 10, 32); err != nil || last < first {
				return 0, fmt.Errorf("possible CPUs: bad list %q", s)
			}
		}
		n += int(last-first) + 1
	}
	return n, nil
}
