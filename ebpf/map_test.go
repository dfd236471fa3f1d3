package ebpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func newTestMap(t *testing.T, spec MapSpec) *Map {
	t.Helper()
	requireRoot(t)
	m, err := NewMap(&spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.NativeEndian.AppendUint64(nil, v) }

func TestMapKeyValueTypes(t *testing.T) {
	for _, typ := range []MapType{Hash, LRUHash, Array} {
		t.Run(typ.String(), func(t *testing.T) {
			m := newTestMap(t, MapSpec{Name: "test_" + typ.String(), Type: typ, KeySize: 4, ValueSize: 8, MaxEntries: 8})
			if m.Type() != typ || m.KeySize() != 4 || m.ValueSize() != 8 || m.MaxEntries() != 8 {
				t.Fatalf("accessors: %+v", m.Spec())
			}
			for k := uint32(0); k < 3; k++ {
				if err := m.Update(u32(k), u64(100+uint64(k)), UpdateAny); err != nil {
					t.Fatal(err)
				}
			}
			v := make([]byte, 8)
			for k := uint32(0); k < 3; k++ {
				if err := m.Lookup(u32(k), v); err != nil || binary.NativeEndian.Uint64(v) != 100+uint64(k) {
					t.Fatalf("lookup %d: %x, %v", k, v, err)
				}
			}
			if err := m.Update(u32(1), u64(7), UpdateExist); err != nil {
				t.Fatalf("UpdateExist on present key: %v", err)
			}
			if err := m.Lookup(u32(1), v); err != nil || binary.NativeEndian.Uint64(v) != 7 {
				t.Fatalf("after UpdateExist: %x, %v", v, err)
			}
			err := m.Update(u32(1), u64(8), UpdateNoExist)
			if !errors.Is(err, ErrKeyExist) || !errors.Is(err, unix.EEXIST) {
				t.Fatalf("UpdateNoExist on present key: %v", err)
			}
			if err := m.Update(u32(1), u64(8), 99); err == nil {
				t.Fatal("bad flags accepted")
			}
			if err := m.Lookup([]byte{1}, v); err == nil {
				t.Fatal("short key accepted")
			}
			if err := m.Lookup(u32(1), v[:4]); err == nil {
				t.Fatal("short value accepted")
			}
			if typ == Array {
				if err := m.Update(u32(8), u64(1), UpdateAny); err == nil {
					t.Fatal("array index out of range accepted")
				}
				return
			}
			err = m.Update(u32(5), u64(8), UpdateExist)
			if !errors.Is(err, ErrKeyNotExist) {
				t.Fatalf("UpdateExist on missing key: %v", err)
			}
			if err := m.Delete(u32(2)); err != nil {
				t.Fatal(err)
			}
			err = m.Lookup(u32(2), v)
			if !errors.Is(err, ErrKeyNotExist) || !errors.Is(err, unix.ENOENT) {
				t.Fatalf("lookup deleted key: %v", err)
			}
			if err := m.Delete(u32(2)); !errors.Is(err, ErrKeyNotExist) {
				t.Fatalf("delete missing key: %v", err)
			}
			if typ == Hash {
				if err := m.LookupAndDelete(u32(0), v); err != nil || binary.NativeEndian.Uint64(v) != 100 {
					t.Fatalf("lookup and delete: %x, %v", v, err)
				}
				if err := m.Lookup(u32(0), v); !errors.Is(err, ErrKeyNotExist) {
					t.Fatalf("after lookup and delete: %v", err)
				}
			}
		})
	}
}

func TestMapNextKey(t *testing.T) {
	m := newTestMap(t, MapSpec{Name: "test_iter", Type: Hash, KeySize: 4, ValueSize: 4, MaxEntries: 16})
	want := map[uint32]bool{}
	for k := uint32(10); k < 15; k++ {
		if err := m.Update(u32(k), u32(k), UpdateNoExist); err != nil {
			t.Fatal(err)
		}
		want[k] = true
	}
	seen := map[uint32]bool{}
	var key []byte
	for {
		next := make([]byte, 4)
		err := m.NextKey(key, next)
		if errors.Is(err, ErrKeyNotExist) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		k := binary.NativeEndian.Uint32(next)
		if seen[k] {
			t.Fatalf("key %d seen twice", k)
		}
		seen[k] = true
		key = next
	}
	if len(seen) != len(want) {
		t.Fatalf("iterated %v, want %v", seen, want)
	}
	for k := range want {
		if !seen[k] {
			t.Errorf("key %d not iterated", k)
		}
	}
}

func TestMapPerCPU(t *testing.T) {
	ncpu, err := PossibleCPUs()
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []MapType{PerCPUArray, PerCPUHash} {
		t.Run(typ.String(), func(t *testing.T) {
			m := newTestMap(t, MapSpec{Name: "test_percpu", Type: typ, KeySize: 4, ValueSize: 8, MaxEntries: 4})
			values := make([][]byte, ncpu)
			var sum uint64
			for i := range values {
				values[i] = u64(uint64(i*10 + 1))
				sum += uint64(i*10 + 1)
			}
			if err := m.UpdatePerCPU(u32(2), values, UpdateAny); err != nil {
				t.Fatal(err)
			}
			got, err := m.LookupPerCPU(u32(2))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != ncpu {
				t.Fatalf("%d values, want %d", len(got), ncpu)
			}
			for i := range got {
				if !bytes.Equal(got[i], values[i]) {
					t.Errorf("cpu %d: %x, want %x", i, got[i], values[i])
				}
			}
			if s, err := m.SumPerCPUUint64(u32(2)); err != nil || s != sum {
				t.Errorf("sum %d, %v; want %d", s, err, sum)
			}
			if err := m.Lookup(u32(2), make([]byte, 8)); ncpu > 1 && err == nil {
				t.Error("lookup with a single value buffer accepted on a per-CPU map")
			}
		})
	}
	// Values that are not a multiple of 8 bytes take 8-byte slots.
	m := newTestMap(t, MapSpec{Name: "test_percpu4", Type: PerCPUArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	values := make([][]byte, ncpu)
	for i := range values {
		values[i] = u32(uint32(0xa0 + i))
	}
	if err := m.UpdatePerCPU(u32(0), values, UpdateAny); err != nil {
		t.Fatal(err)
	}
	got, err := m.LookupPerCPU(u32(0))
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if !bytes.Equal(got[i], values[i]) {
			t.Errorf("4-byte value, cpu %d: %x, want %x", i, got[i], values[i])
		}
	}
}

func TestMapQueue(t *testing.T) {
	m := newTestMap(t, MapSpec{Name: "test_queue", Type: Queue, ValueSize: 4, MaxEntries: 4})
	v := make([]byte, 4)
	if err := m.Pop(v); !errors.Is(err, ErrKeyNotExist) {
		t.Fatalf("pop from empty queue: %v", err)
	}
	for i := uint32(1); i <= 4; i++ {
		if err := m.Push(u32(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Push(u32(5)); err == nil {
		t.Fatal("push onto a full queue succeeded")
	}
	if err := m.Lookup(nil, v); err != nil || binary.NativeEndian.Uint32(v) != 1 {
		t.Fatalf("peek: %x, %v", v, err)
	}
	for i := uint32(1); i <= 4; i++ {
		if err := m.Pop(v); err != nil || binary.NativeEndian.Uint32(v) != i {
			t.Fatalf("pop %d: %x, %v", i, v, err)
		}
	}
	if err := m.LookupAndDelete(nil, v); !errors.Is(err, ErrKeyNotExist) {
		t.Fatalf("pop after draining: %v", err)
	}
}

func TestMapLongNameAndClose(t *testing.T) {
	m := newTestMap(t, MapSpec{Name: "a_map_name_longer_than_15", Type: Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if m.Name() != "a_map_name_longer_than_15" {
		t.Errorf("Name() = %q", m.Name())
	}
	id, err := m.ID()
	if err != nil {
		t.Fatal(err)
	}
	same, err := NewMapFromID(id)
	if err != nil {
		t.Fatal(err)
	}
	defer same.Close()
	if same.Name() != "a_map_name_long" || same.Type() != Array || same.KeySize() != 4 {
		t.Errorf("map from id: %+v", same.Spec())
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil || m.FD() != -1 {
		t.Errorf("second close: %v, fd %d", err, m.FD())
	}
}

func TestNewMapError(t *testing.T) {
	requireRoot(t)
	_, err := NewMap(&MapSpec{Name: "bad", Type: Array, KeySize: 3, ValueSize: 4, MaxEntries: 1})
	if err == nil || !errors.Is(err, unix.EINVAL) {
		t.Fatalf("array with 3-byte key: %v", err)
	}
}

func TestMapForEach(t *testing.T) {
	requireRoot(t)
	m, err := NewMap(&MapSpec{Name: "foreach", Type: Hash, KeySize: 4, ValueSize: 4, MaxEntries: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := map[uint32]uint32{}
	for k := uint32(1); k <= 10; k++ {
		want[k] = k * 100
		if err := m.Update(Uint32Key(k), Uint32Key(k*100), UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	got := map[uint32]uint32{}
	if err := m.ForEach(func(k, v []byte) bool {
		got[binary.NativeEndian.Uint32(k)] = binary.NativeEndian.Uint32(v)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("walked %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("key %d: %d, want %d", k, got[k], v)
		}
	}
	n := 0
	m.ForEach(func(_, _ []byte) bool { n++; return n < 3 })
	if n != 3 {
		t.Errorf("stopped after %d entries, want 3", n)
	}
	// Deleting every entry while walking still ends.
	n = 0
	if err := m.ForEach(func(k, _ []byte) bool { n++; m.Delete(k); return true }); err != nil {
		t.Fatal(err)
	}
	if n == 0 || n > 17 {
		t.Errorf("walk while deleting visited %d entries", n)
	}
}

// TestMapForEachBatch: a batched walk of a hash map larger than one batch
// sees every entry once, with its value, and stops when asked.
func TestMapForEachBatch(t *testing.T) {
	requireRoot(t)
	const n = 3*batchSize + 17
	m, err := NewMap(&MapSpec{Name: "batch", Type: Hash, KeySize: 8, ValueSize: 4, MaxEntries: n + 100})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for i := uint64(0); i < n; i++ {
		k := binary.NativeEndian.AppendUint64(nil, i*7919)
		if err := m.Update(k, Uint32Key(uint32(i)), UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[uint64]bool{}
	err = m.ForEachBatch(func(k, v []byte) bool {
		key := binary.NativeEndian.Uint64(k)
		if seen[key] {
			t.Errorf("key %d seen twice", key)
		}
		seen[key] = true
		if got := binary.NativeEndian.Uint32(v); uint64(got)*7919 != key {
			t.Errorf("key %d has value %d", key, got)
		}
		return true
	})
	if err != nil || len(seen) != n {
		t.Fatalf("walk: %v, %d keys seen, want %d", err, len(seen), n)
	}
	calls := 0
	if err := m.ForEachBatch(func(k, v []byte) bool { calls++; return calls < 5 }); err != nil || calls != 5 {
		t.Errorf("stopping walk: %v after %d calls, want 5", err, calls)
	}
	empty, err := NewMap(&MapSpec{Name: "empty", Type: Hash, KeySize: 8, ValueSize: 4, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer empty.Close()
	if err := empty.ForEachBatch(func(k, v []byte) bool { t.Error("called on an empty map"); return true }); err != nil {
		t.Errorf("empty map: %v", err)
	}
}

// TestMapUpdateBatch: entries set in one call read back; a batch that does
// not fit stops at the full table and says how many it set.
func TestMapUpdateBatch(t *testing.T) {
	requireRoot(t)
	m, err := NewMap(&MapSpec{Name: "upbatch", Type: Hash, KeySize: 8, ValueSize: 4, MaxEntries: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var keys, values []byte
	for i := uint64(0); i < 12; i++ {
		keys = binary.NativeEndian.AppendUint64(keys, i*7919)
		values = append(values, Uint32Key(uint32(i))...)
	}
	if n, err := m.UpdateBatch(keys[:6*8], values[:6*4], UpdateAny); err != nil || n != 6 {
		t.Fatalf("6 entries: %d set, %v", n, err)
	}
	for i := uint64(0); i < 6; i++ {
		v := make([]byte, 4)
		if err := m.Lookup(binary.NativeEndian.AppendUint64(nil, i*7919), v); err != nil || binary.NativeEndian.Uint32(v) != uint32(i) {
			t.Errorf("key %d: %v, value %d", i*7919, err, binary.NativeEndian.Uint32(v))
		}
	}
	if n, err := m.UpdateBatch(keys, values, UpdateAny); err == nil || n != 10 {
		t.Errorf("12 entries into a table of 10: %d set, err %v; want 10 and an error", n, err)
	}
	if _, err := m.UpdateBatch(keys[:7], values[:4], UpdateAny); err == nil {
		t.Error("a short key accepted")
	}
}
