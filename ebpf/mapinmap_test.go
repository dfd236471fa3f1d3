package ebpf

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func mapinmapObject(t *testing.T) string {
	return builtObject(t, "testdata/mapinmap.c", "testdata/mapinmap.o")
}

var queueTemplate = MapSpec{Name: "idle_q", Type: Queue, ValueSize: 40, MaxEntries: 8}

func TestMapTypeMapInMapString(t *testing.T) {
	if ArrayOfMaps.String() != "ArrayOfMaps" || HashOfMaps.String() != "HashOfMaps" {
		t.Fatalf("%s %s", ArrayOfMaps, HashOfMaps)
	}
	if ArrayOfMaps != 12 || HashOfMaps != 13 {
		t.Fatal("wrong enum bpf_map_type values")
	}
}

func TestArrayOfQueues(t *testing.T) {
	inner := queueTemplate
	outer := newTestMap(t, MapSpec{Name: "test_aom", Type: ArrayOfMaps, KeySize: 4, MaxEntries: 4, InnerMap: &inner})
	if outer.ValueSize() != 4 || outer.Type() != ArrayOfMaps || outer.Spec().InnerMap == nil ||
		outer.Spec().InnerMap == &inner {
		t.Fatalf("outer spec %+v (InnerMap must be a copy)", outer.Spec())
	}
	queues := make([]*Map, 4)
	for i := range queues {
		queues[i] = newTestMap(t, queueTemplate)
		if err := outer.UpdateInner(u32(uint32(i)), queues[i]); err != nil {
			t.Fatal(err)
		}
	}
	for i, q := range queues {
		want, err := q.ID()
		if err != nil {
			t.Fatal(err)
		}
		got, err := outer.LookupInnerID(u32(uint32(i)))
		if err != nil || got != want {
			t.Fatalf("slot %d: inner id %d, %v; want %d", i, got, err, want)
		}
		v := bytes.Repeat([]byte{byte(i + 1)}, 40)
		if err := q.Push(v); err != nil {
			t.Fatal(err)
		}
	}
	// Each value went to its own queue: reopen slot 3 by ID and pop.
	id, err := outer.LookupInnerID(u32(3))
	if err != nil {
		t.Fatal(err)
	}
	q3, err := NewMapFromID(id)
	if err != nil {
		t.Fatal(err)
	}
	defer q3.Close()
	if q3.Type() != Queue || q3.ValueSize() != 40 {
		t.Fatalf("inner map by id: %+v", q3.Spec())
	}
	v := make([]byte, 40)
	if err := q3.Pop(v); err != nil || !bytes.Equal(v, bytes.Repeat([]byte{4}, 40)) {
		t.Fatalf("pop slot 3: %x, %v", v, err)
	}
	for i, q := range queues {
		err := q.Pop(v)
		if i == 3 {
			if !errors.Is(err, ErrKeyNotExist) {
				t.Fatalf("queue 3 after pop through its ID: %v", err)
			}
			continue
		}
		if err != nil || !bytes.Equal(v, bytes.Repeat([]byte{byte(i + 1)}, 40)) {
			t.Fatalf("pop queue %d: %x, %v", i, v, err)
		}
	}

	// A map that does not match the template is refused.
	wrong := newTestMap(t, MapSpec{Name: "wrong_q", Type: Queue, ValueSize: 8, MaxEntries: 8})
	if err := outer.UpdateInner(u32(0), wrong); err == nil {
		t.Fatal("inner map with another value size accepted")
	}
	if err := outer.Delete(u32(1)); err != nil {
		t.Fatal(err)
	}
	if _, err := outer.LookupInnerID(u32(1)); !errors.Is(err, ErrKeyNotExist) {
		t.Fatalf("lookup of emptied slot: %v", err)
	}
	if err := queues[0].UpdateInner(nil, queues[1]); err == nil {
		t.Fatal("UpdateInner on a queue accepted")
	}
	if _, err := queues[0].LookupInnerID(nil); err == nil {
		t.Fatal("LookupInnerID on a queue accepted")
	}
}

func TestHashOfMaps(t *testing.T) {
	inner := queueTemplate
	outer := newTestMap(t, MapSpec{Name: "test_hom", Type: HashOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 4, InnerMap: &inner})
	q := newTestMap(t, queueTemplate)
	if err := outer.UpdateInner(u32(77), q); err != nil {
		t.Fatal(err)
	}
	want, _ := q.ID()
	if got, err := outer.LookupInnerID(u32(77)); err != nil || got != want {
		t.Fatalf("inner id %d, %v; want %d", got, err, want)
	}
}

func TestMapInMapSpecErrors(t *testing.T) {
	if _, err := NewMap(&MapSpec{Name: "no_inner", Type: ArrayOfMaps, KeySize: 4, MaxEntries: 4}); err == nil ||
		!strings.Contains(err.Error(), "inner map template") {
		t.Fatalf("missing InnerMap: %v", err)
	}
	inner := queueTemplate
	if _, err := NewMap(&MapSpec{Name: "bad_value", Type: ArrayOfMaps, KeySize: 4, ValueSize: 8, MaxEntries: 4, InnerMap: &inner}); err == nil ||
		!strings.Contains(err.Error(), "value size 8") {
		t.Fatalf("value size 8: %v", err)
	}
}

func TestLoadMapInMapObject(t *testing.T) {
	spec, err := LoadCollectionSpec(mapinmapObject(t))
	if err != nil {
		t.Fatal(err)
	}
	if spec.Maps["outer_inner"] != nil {
		t.Errorf("template outer_inner is a map of the spec: %v", sortedKeys(spec.Maps))
	}
	o := spec.Maps["outer"]
	if o == nil || o.Type != ArrayOfMaps || o.KeySize != 4 || o.ValueSize != 4 || o.MaxEntries != 4 {
		t.Fatalf("outer: %+v", o)
	}
	want := MapSpec{Name: "outer_inner", Type: Queue, ValueSize: 40, MaxEntries: 8}
	if o.InnerMap == nil || *o.InnerMap != want {
		t.Fatalf("outer.InnerMap %+v, want %+v", o.InnerMap, want)
	}
}

func TestLoadMapInMapErrors(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"missing", `
struct xlb_map_def SEC("maps") outer = { .type = BPF_MAP_TYPE_ARRAY_OF_MAPS, .key_size = 4, .value_size = 4, .max_entries = 4 };
struct xlb_map_def SEC("maps") outer_template = { .type = BPF_MAP_TYPE_QUEUE, .value_size = 40, .max_entries = 8 };
SEC("xdp") int p(struct xdp_md *ctx) { __u32 k = 0; return bpf_map_lookup_elem(&outer, &k) ? XDP_PASS : XDP_DROP; }
`, "map outer: ArrayOfMaps needs an inner map template: define map outer_inner"},
		{"hash_missing", `
struct xlb_map_def SEC("maps") h = { .type = BPF_MAP_TYPE_HASH_OF_MAPS, .key_size = 4, .value_size = 4, .max_entries = 4 };
SEC("xdp") int p(struct xdp_md *ctx) { __u32 k = 0; return bpf_map_lookup_elem(&h, &k) ? XDP_PASS : XDP_DROP; }
`, "map h: HashOfMaps needs an inner map template: define map h_inner"},
		{"template_referenced", `
struct xlb_map_def SEC("maps") outer = { .type = BPF_MAP_TYPE_ARRAY_OF_MAPS, .key_size = 4, .value_size = 4, .max_entries = 4 };
struct xlb_map_def SEC("maps") outer_inner = { .type = BPF_MAP_TYPE_QUEUE, .value_size = 40, .max_entries = 8 };
SEC("xdp") int p(struct xdp_md *ctx) { __u8 v[40]; return bpf_map_pop_elem(&outer_inner, v) ? XDP_PASS : XDP_DROP; }
`, "reference to outer_inner, the inner map template of outer"},
		{"value_size", `
struct xlb_map_def SEC("maps") outer = { .type = BPF_MAP_TYPE_ARRAY_OF_MAPS, .key_size = 4, .value_size = 8, .max_entries = 4 };
struct xlb_map_def SEC("maps") outer_inner = { .type = BPF_MAP_TYPE_QUEUE, .value_size = 40, .max_entries = 8 };
SEC("xdp") int p(struct xdp_md *ctx) { __u32 k = 0; return bpf_map_lookup_elem(&outer, &k) ? XDP_PASS : XDP_DROP; }
`, "ArrayOfMaps value_size is 8, want 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "#include \"bpf_helpers.h\"\n#include \"structs.h\"\n" + tc.src + "char _license[] SEC(\"license\") = \"GPL\";\n"
			_, err := LoadCollectionSpec(compileBPFSource(t, "mim_"+tc.name, src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestMapInMapProgram(t *testing.T) {
	requireRoot(t)
	coll := loadCollection(t, mapinmapObject(t), nil)
	if coll.Maps["outer_inner"] != nil {
		t.Fatal("the template was created as a map")
	}
	outer := coll.Maps["outer"]
	q, err := NewMap(&MapSpec{Name: "idle_2", Type: Queue, ValueSize: 40, MaxEntries: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if err := q.Push(bytes.Repeat([]byte{9}, 40)); err != nil {
		t.Fatal(err)
	}
	if err := outer.UpdateInner(u32(2), q); err != nil {
		t.Fatal(err)
	}
	prog := coll.Programs["mapinmap_xdp"]
	pkt := make([]byte, 64)
	for i, want := range []uint32{xdpPass, xdpDrop} {
		res, err := prog.TestRun(&TestRunOptions{Data: pkt})
		if err != nil {
			t.Fatal(err)
		}
		if res.Return != want {
			t.Fatalf("run %d: return %d, want %d", i, res.Return, want)
		}
	}
	if err := q.Pop(make([]byte, 40)); !errors.Is(err, ErrKeyNotExist) {
		t.Fatalf("queue after the program popped: %v", err)
	}
}
