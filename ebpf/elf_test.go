package ebpf

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"math/rand"
	"os"
	"strings"
	"testing"
)

func TestLoadXLBObject(t *testing.T) {
	spec, err := LoadCollectionSpec(xlbObject(t))
	if err != nil {
		t.Fatal(err)
	}
	if spec.License != "GPL" {
		t.Errorf("license %q, want GPL", spec.License)
	}
	p := spec.Programs["xlb_xdp"]
	if p == nil {
		t.Fatalf("no program xlb_xdp; have %v", sortedKeys(spec.Programs))
	}
	if p.Type != XDP || p.Section != "xdp" || p.License != "GPL" {
		t.Errorf("program: type %s section %q license %q", p.Type, p.Section, p.License)
	}
	if len(p.MapReferences) == 0 {
		t.Fatal("xlb_xdp has no map references")
	}
	refsStats := false
	for idx, name := range p.MapReferences {
		if spec.Maps[name] == nil {
			t.Errorf("instruction %d references %q, which is not a map of the object", idx, name)
		}
		refsStats = refsStats || name == "xlb_stats"
		if p.Instructions[idx].OpCode != OpLoadImm64 {
			t.Errorf("instruction %d: opcode %#x, want ld_imm64", idx, p.Instructions[idx].OpCode)
		}
	}
	if !refsStats {
		t.Error("xlb_xdp never references xlb_stats")
	}
	m := spec.Maps["xlb_stats"]
	if m == nil {
		t.Fatalf("no map xlb_stats; have %v", sortedKeys(spec.Maps))
	}
	want := MapSpec{Name: "xlb_stats", Type: PerCPUArray, KeySize: 4, ValueSize: 8, MaxEntries: m.MaxEntries}
	if *m != want || m.MaxEntries < 9 {
		t.Errorf("map %+v, want %+v with max_entries >= 9", *m, want)
	}
}

// severalPrograms is an object with three programs and a static function
// in .text two of them call.
const severalPrograms = `
#include "bpf_helpers.h"
#include "structs.h"
struct xlb_map_def SEC("maps") counters = { .type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 8, .max_entries = 4 };
struct xlb_map_def SEC("maps") other = { .type = BPF_MAP_TYPE_HASH, .key_size = 8, .value_size = 4, .max_entries = 16 };
static __always_inline void bump(__u32 k) { __u64 *v = bpf_map_lookup_elem(&counters, &k); if (v) *v += 1; }
static __attribute__((noinline)) int count(__u32 k) { __u64 *v = bpf_map_lookup_elem(&counters, &k); if (v) *v += 1; return 0; }
SEC("xdp/one") int prog_one(struct xdp_md *ctx) { bump(0); return count(3) + XDP_PASS; }
SEC("xdp/two") int prog_two(struct xdp_md *ctx) { bump(1); __u64 k = 0; bpf_map_lookup_elem(&other, &k); return XDP_DROP; }
SEC("socket") int prog_sock(struct __sk_buff *skb) { bump(2); return count(3); }
char _license[] SEC("license") = "Dual MIT/GPL";
int unused_global_var = 3;
`

func TestLoadSeveralPrograms(t *testing.T) {
	obj := compileBPFSource(t, "multi", severalPrograms)
	spec, err := LoadCollectionSpec(obj)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		typ ProgType
		sec string
	}{"prog_one": {XDP, "xdp/one"}, "prog_two": {XDP, "xdp/two"}, "prog_sock": {SocketFilter, "socket"}}
	if len(spec.Programs) != len(want) {
		t.Fatalf("programs %v", sortedKeys(spec.Programs))
	}
	for name, w := range want {
		p := spec.Programs[name]
		if p == nil || p.Type != w.typ || p.Section != w.sec {
			t.Errorf("program %s: %+v, want %v", name, p, w)
		}
	}
	if got := len(spec.Programs["prog_two"].MapReferences); got != 2 {
		t.Errorf("prog_two: %d map references, want 2", got)
	}
	// count(), a static function in .text, is linked into both programs
	// that call it, with its map reference; prog_two does not get it.
	for name, want := range map[string]int{"prog_one": 2, "prog_two": 1, "prog_sock": 2} {
		p := spec.Programs[name]
		if len(p.FuncInfo) != want || len(p.MapReferences) != 2 {
			t.Errorf("%s: %d functions, %d map references; want %d and 2", name, len(p.FuncInfo), len(p.MapReferences), want)
		}
		for idx := range p.MapReferences {
			if p.Instructions[idx].OpCode != OpLoadImm64 {
				t.Errorf("%s: map reference on instruction %d, %v", name, idx, p.Instructions[idx])
			}
		}
	}
	if spec.Maps["other"] == nil || spec.Maps["other"].KeySize != 8 || spec.License != "Dual MIT/GPL" {
		t.Errorf("maps %v license %q", sortedKeys(spec.Maps), spec.License)
	}
}

// TestLoadSeveralProgramsKernel runs a program whose .text callee updates a
// map: the callee's map reference was moved with it.
func TestLoadSeveralProgramsKernel(t *testing.T) {
	requireRoot(t)
	coll := loadCollection(t, compileBPFSource(t, "multi", severalPrograms), nil)
	res, err := coll.Programs["prog_one"].TestRun(&TestRunOptions{Data: tcpPacket()})
	if err != nil || res.Return != xdpPass {
		t.Fatalf("prog_one: %+v, %v", res, err)
	}
	for k, want := range map[uint32]uint64{0: 1, 3: 1} {
		v := make([]byte, 8)
		err := coll.Maps["counters"].Lookup(Uint32Key(k), v)
		if err != nil || binary.LittleEndian.Uint64(v) != want {
			t.Errorf("counters[%d] = %x, %v; want %d", k, v, err, want)
		}
	}
}

func TestLoadBrokenObjects(t *testing.T) {
	const header = "#include \"bpf_helpers.h\"\n#include \"structs.h\"\n"
	const license = "char _license[] SEC(\"license\") = \"GPL\";\n"
	const mapDef = "struct xlb_map_def SEC(\"maps\") m = { .type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 8, .max_entries = 1 };\n"
	const useMap = "SEC(\"xdp\") int p(struct xdp_md *ctx) { __u32 k = 0; return bpf_map_lookup_elem(&m, &k) ? XDP_PASS : XDP_DROP; }\n"
	tests := []struct {
		name, src, want string
	}{
		{"missing license", header + mapDef + useMap, "missing license section"},
		{"static map", header + "static " + mapDef + useMap + license, "map m is static; declare it without static"},
		{"global variable", header + "__u32 counter;\nSEC(\"xdp\") int p(struct xdp_md *ctx) { counter++; return XDP_PASS; }\n" + license,
			"global variables are not supported"},
		{"rodata variable", header + "volatile const __u32 verdict = XDP_PASS;\nSEC(\"xdp\") int p(struct xdp_md *ctx) { return verdict; }\n" + license,
			"global variables are not supported"},
		{"function in a program section", header + "__attribute__((noinline, section(\"xdp\"))) int helper(int x) { return x + 1; }\nSEC(\"xdp\") int p(struct xdp_md *ctx) { return helper(1); }\n" + license,
			"one program per section; put the functions it calls in .text (no SEC())"},
		{"call to an extern function", header + "extern int helper(int x);\nSEC(\"xdp\") int p(struct xdp_md *ctx) { return helper(1); }\n" + license,
			"call to helper, which is not a function in .text"},
		{"bad map size", header + "struct big { __u32 a[6]; };\nstruct big SEC(\"maps\") m = {};\nSEC(\"xdp\") int p(struct xdp_md *ctx) { return XDP_PASS; }\n" + license,
			"map m: definition is 24 bytes, want 20"},
		{"unknown code section", header + "SEC(\"kprobe/foo\") int p(void *ctx) { return 0; }\n" + license,
			"section kprobe/foo holds code but is not a program section"},
		{"no programs", header + mapDef + license, "no program sections"},
		{"BTF-defined map", header + "struct { int (*type)[BPF_MAP_TYPE_ARRAY]; int (*max_entries)[1]; __u32 *key; __u64 *value; } bm SEC(\".maps\");\n" + mapDef + useMap + license,
			"section .maps: BTF-defined maps are not supported"},
		{"only .text", header + "__attribute__((noinline)) int helper(int x) { return x + 1; }\n" + license, "no program sections"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj := compileBPFSource(t, "broken", tt.src)
			_, err := LoadCollectionSpec(obj)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func readXLBObject(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(xlbObject(t))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLoadPatchedObjects(t *testing.T) {
	obj := readXLBObject(t)
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		t.Fatal(err)
	}
	rel := f.Section(".relxdp")
	if rel == nil {
		t.Fatal("no .relxdp section in xlb.o")
	}
	patch := func(fn func(b []byte)) []byte {
		b := bytes.Clone(obj)
		fn(b)
		return b
	}
	tests := []struct {
		name string
		obj  []byte
		want string
	}{
		{"truncated header", obj[:40], "not a valid ELF file"},
		{"truncated body", obj[:len(obj)/2], "bpf object"},
		{"garbage", bytes.Repeat([]byte("garbage!"), 64), "not a valid ELF file"},
		{"empty", nil, "not a valid ELF file"},
		{"wrong machine", patch(func(b []byte) { binary.LittleEndian.PutUint16(b[18:], uint16(elf.EM_X86_64)) }),
			"want a 64-bit little-endian EM_BPF object"},
		{"unknown relocation type", patch(func(b []byte) { binary.LittleEndian.PutUint32(b[rel.Offset+8:], 10) }),
			"unsupported relocation type 10"},
		{"relocation symbol out of range", patch(func(b []byte) { binary.LittleEndian.PutUint32(b[rel.Offset+12:], 9999) }),
			"bad symbol index 9999"},
		{"relocation off the program", patch(func(b []byte) { binary.LittleEndian.PutUint64(b[rel.Offset:], 1<<20) }),
			"relocation at offset 1048576 is outside the section"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadCollectionSpecFromReader(bytes.NewReader(tt.obj))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// TestLoadCorruptObjectsNoPanic feeds every truncation and many random byte
// flips of the real object to the loader: errors are fine, panics are not.
func TestLoadCorruptObjectsNoPanic(t *testing.T) {
	obj := readXLBObject(t)
	for n := 0; n < len(obj); n += 3 {
		LoadCollectionSpecFromReader(bytes.NewReader(obj[:n]))
	}
	rng := rand.New(rand.NewSource(1))
	for range 3000 {
		b := bytes.Clone(obj)
		for range 1 + rng.Intn(4) {
			b[rng.Intn(len(b))] = byte(rng.Intn(256))
		}
		LoadCollectionSpecFromReader(bytes.NewReader(b))
	}
}

func FuzzLoadCollectionSpec(f *testing.F) {
	if b, err := os.ReadFile("../kern/bpf/xlb.o"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("\x7fELF"))
	f.Fuzz(func(t *testing.T, b []byte) {
		LoadCollectionSpecFromReader(bytes.NewReader(b))
	})
}
