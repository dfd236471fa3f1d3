package ebpf

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// btfBuilder writes BTF by hand, for the tests of broken input.
type btfBuilder struct {
	types   []byte
	strings []byte
}

func newBTFBuilder() *btfBuilder { return &btfBuilder{strings: []byte{0}} }

// str adds s to the string section and returns its offset.
func (b *btfBuilder) str(s string) uint32 {
	if s == "" {
		return 0
	}
	off := len(b.strings)
	b.strings = append(append(b.strings, s...), 0)
	return uint32(off)
}

// typ appends a struct btf_type and the words that follow it.
func (b *btfBuilder) typ(name string, kind BTFKind, vlen uint32, kflag bool, sizeOrType uint32, extra ...uint32) {
	info := uint32(kind)<<24 | vlen
	if kflag {
		info |= 1 << 31
	}
	for _, w := range append([]uint32{b.str(name), info, sizeOrType}, extra...) {
		b.types = binary.LittleEndian.AppendUint32(b.types, w)
	}
}

func (b *btfBuilder) bytes() []byte {
	out := make([]byte, btfHeaderLen)
	le := binary.LittleEndian
	le.PutUint16(out, btfMagic)
	out[2] = btfVersion
	le.PutUint32(out[4:], btfHeaderLen)
	le.PutUint32(out[12:], uint32(len(b.types)))
	le.PutUint32(out[16:], uint32(len(b.types)))
	le.PutUint32(out[20:], uint32(len(b.strings)))
	return append(append(out, b.types...), b.strings...)
}

// Type IDs of sampleBTF.
const (
	sInt = iota + 1
	sPtr
	sPair
	sProto
	sFunc
	sVar
	sDatasec
	sArray
	sEnum
	sTypedef
	sConst
	sFlags
)

// sampleBTF has one type of most kinds.
func sampleBTF() *btfBuilder {
	b := newBTFBuilder()
	b.typ("int", KindInt, 0, false, 4, 1<<24|32)                                                   // 1
	b.typ("", KindPtr, 0, false, sInt)                                                             // 2
	b.typ("pair", KindStruct, 2, false, 8, b.str("a"), sInt, 0, b.str("b"), sInt, 32)              // 3
	b.typ("", KindFuncProto, 1, false, sInt, b.str("x"), sInt)                                     // 4
	b.typ("f", KindFunc, LinkageGlobal, false, sProto)                                             // 5
	b.typ("v", KindVar, 0, false, sInt, LinkageGlobal)                                             // 6
	b.typ(".data", KindDatasec, 1, false, 4, sVar, 0, 4)                                           // 7
	b.typ("", KindArray, 0, false, 0, sInt, sInt, 3)                                               // 8
	b.typ("e", KindEnum, 2, true, 4, b.str("A"), 1, b.str("B"), 0xffffffff)                        // 9
	b.typ("pair_t", KindTypedef, 0, false, sPair)                                                  // 10
	b.typ("", KindConst, 0, false, sTypedef)                                                       // 11
	b.typ("flags", KindStruct, 2, true, 4, b.str("lo"), sInt, 3<<24|0, b.str("hi"), sInt, 5<<24|3) // 12
	return b
}

func TestParseHandMadeBTF(t *testing.T) {
	raw := sampleBTF().bytes()
	b, err := ParseBTF(raw)
	if err != nil {
		t.Fatal(err)
	}
	if b.NumTypes() != sFlags {
		t.Fatalf("%d types, want %d", b.NumTypes(), sFlags)
	}
	if !bytes.Equal(b.marshal(), raw) {
		t.Error("marshal does not give back the input")
	}
	e, err := b.TypeByName(KindEnum, "e")
	if err != nil || len(e.Values) != 2 || int64(e.Values[1].Value) != -1 || e.Values[0].Name != "A" {
		t.Errorf("enum: %+v, %v", e, err)
	}
	for _, tt := range []struct {
		id   TypeID
		size uint32
	}{{sInt, 4}, {sPtr, 8}, {sPair, 8}, {sVar, 4}, {sArray, 12}, {sTypedef, 8}, {sConst, 8}, {sEnum, 4}} {
		if got, err := b.Sizeof(tt.id); err != nil || got != tt.size {
			t.Errorf("Sizeof(%d) = %d, %v; want %d", tt.id, got, err, tt.size)
		}
	}
	if _, err := b.Sizeof(sFunc); err == nil {
		t.Error("a func has a size")
	}
	l, err := b.StructLayout("pair_t")
	if err != nil {
		t.Fatal(err)
	}
	want := &StructLayout{Name: "pair_t", Size: 8, Members: []MemberLayout{
		{Name: "a", Offset: 0, Size: 4}, {Name: "b", Offset: 4, Size: 4, BitOffset: 32}}}
	if fmt.Sprint(l) != fmt.Sprint(want) {
		t.Errorf("layout %+v, want %+v", l, want)
	}
	l, err = b.StructLayout("flags")
	if err != nil {
		t.Fatal(err)
	}
	if hi, ok := l.Member("hi"); !ok || hi.BitOffset != 3 || hi.BitfieldSize != 5 || hi.Offset != 0 {
		t.Errorf("bitfield: %+v", l)
	}
	if _, err := b.StructLayout("nope"); !errors.Is(err, ErrTypeNotFound) {
		t.Errorf("missing struct: %v", err)
	}
	if _, err := b.TypeByID(99); err == nil {
		t.Error("type 99 found")
	}
}

func TestParseBrokenBTF(t *testing.T) {
	good := sampleBTF().bytes()
	patch := func(off int, v uint32) []byte {
		b := bytes.Clone(good)
		binary.LittleEndian.PutUint32(b[off:], v)
		return b
	}
	// Offsets in good: the header, then type 1 (int) at 24.
	const typeStart = btfHeaderLen
	one := func(build func(b *btfBuilder)) []byte {
		b := newBTFBuilder()
		build(b)
		return b.bytes()
	}
	tests := []struct {
		name string
		raw  []byte
		want string
	}{
		{"empty", nil, "header: 0 bytes, want at least 24"},
		{"truncated header", good[:20], "header: 20 bytes, want at least 24"},
		{"bad magic", append([]byte{0x34, 0x12}, good[2:]...), "bad magic 0x1234"},
		{"big endian", append([]byte{0xeb, 0x9f}, good[2:]...), "big-endian BTF is not supported"},
		{"version", append(append([]byte{}, good[:2]...), append([]byte{2}, good[3:]...)...), "version 2, want 1"},
		{"flags", append(append([]byte{}, good[:3]...), append([]byte{1}, good[4:]...)...), "flags 0x1, want 0"},
		{"header too short", patch(4, 8), "header length 8"},
		{"header past the data", patch(4, 1<<20), "header length 1048576"},
		{"type section past the data", patch(12, 1<<20), "type section at 0, 1048576 bytes, ends past the data"},
		{"string section past the data", patch(20, 1<<20), "string section at"},
		{"unaligned type section", patch(8, 2), "not 4-byte aligned"},
		{"sections overlap", patch(16, 0), "overlap"},
		{"string section without final NUL", func() []byte {
			b := bytes.Clone(good)
			b[len(b)-1] = 'x'
			return b
		}(), "string section must start and end with a NUL byte"},
		{"name offset out of range", patch(typeStart, 9999), "type 1: name: string offset 9999 is outside the string section"},
		{"member name out of range", one(func(b *btfBuilder) {
			b.typ("int", KindInt, 0, false, 4, 32)
			b.typ("s", KindStruct, 1, false, 4, 9999, 1, 0)
		}), "type 2: struct \"s\": member 0 name: string offset 9999"},
		{"type id out of range", one(func(b *btfBuilder) { b.typ("", KindPtr, 0, false, 7) }),
			"type 1 (ptr (anon)): type refers to type 7, but there are only 1 types"},
		{"member type out of range", one(func(b *btfBuilder) { b.typ("s", KindStruct, 1, false, 4, 0, 42, 0) }),
			"member 0 () refers to type 42"},
		{"kind 0", one(func(b *btfBuilder) { b.typ("x", KindVoid, 0, false, 0) }), "type 1: unknown kind 0"},
		{"kind 20", one(func(b *btfBuilder) { b.typ("x", 20, 0, false, 0) }), "type 1: unknown kind 20"},
		{"truncated type", good[:len(good)-len(sampleBTF().strings)-2], "type section"},
		{"truncated record", one(func(b *btfBuilder) { b.typ("int", KindInt, 0, false, 4) }),
			"type 1: int \"int\": truncated: 0 bytes follow, want 4"},
		{"struct members past the end", one(func(b *btfBuilder) { b.typ("s", KindStruct, 0xffff, false, 4) }),
			"truncated: 0 bytes follow, want 786420"},
		{"vlen too large", one(func(b *btfBuilder) { b.typ("s", KindStruct, 0x10000, false, 4) }), "vlen 65536, more than 65535"},
		{"vlen on an int", one(func(b *btfBuilder) { b.typ("int", KindInt, 1, false, 4, 32) }), "int \"int\": vlen 1, want 0"},
		{"kind flag on a ptr", one(func(b *btfBuilder) { b.typ("", KindPtr, 0, true, 0) }), "kind flag set"},
		{"int of 3 bytes", one(func(b *btfBuilder) { b.typ("i", KindInt, 0, false, 3, 24) }), "size 3, want 1, 2, 4, 8 or 16"},
		{"int bits past its size", one(func(b *btfBuilder) { b.typ("i", KindInt, 0, false, 4, 8<<16|32) }), "32 bits at bit 8 do not fit in 4 bytes"},
		{"int encoding", one(func(b *btfBuilder) { b.typ("i", KindInt, 0, false, 4, 3<<24|32) }), "encoding 3"},
		{"func linkage", one(func(b *btfBuilder) {
			b.typ("", KindFuncProto, 0, false, 0)
			b.typ("f", KindFunc, 3, false, 1)
		}), "linkage 3"},
		{"func of an int", one(func(b *btfBuilder) {
			b.typ("int", KindInt, 0, false, 4, 32)
			b.typ("f", KindFunc, 0, false, 1)
		}), "type 2 (func f): type 1 is a int, want a func_proto"},
		{"var of void", one(func(b *btfBuilder) { b.typ("v", KindVar, 0, false, 0, 1) }), "variable of type 0 (void)"},
		{"var linkage", one(func(b *btfBuilder) {
			b.typ("int", KindInt, 0, false, 4, 32)
			b.typ("v", KindVar, 0, false, 1, 7)
		}), "var \"v\": linkage 7"},
		{"datasec of an int", one(func(b *btfBuilder) {
			b.typ("int", KindInt, 0, false, 4, 32)
			b.typ(".data", KindDatasec, 1, false, 4, 1, 0, 4)
		}), "variable 0: type 1 is a int, want a var"},
		{"array of void", one(func(b *btfBuilder) { b.typ("", KindArray, 0, false, 0, 0, 0, 1) }), "array of void"},
		{"decl_tag index", one(func(b *btfBuilder) {
			b.typ("int", KindInt, 0, false, 4, 32)
			b.typ("s", KindStruct, 1, false, 4, b.str("a"), 1, 0)
			b.typ("tag", KindDeclTag, 0, false, 2, 5)
		}), "component index 5"},
		{"struct containing itself", one(func(b *btfBuilder) {
			b.typ("int", KindInt, 0, false, 4, 32)
			b.typ("a", KindStruct, 2, false, 8, b.str("x"), 1, 0, 0, 3, 32)
			b.typ("", KindArray, 0, false, 0, 4, 1, 2)
			b.typ("", KindStruct, 1, false, 4, 0, 2, 0)
		}), "contains itself through member"},
		{"decl_tag of a func with a bad proto", one(func(b *btfBuilder) {
			b.typ("tag", KindDeclTag, 0, false, 2, 0)
			b.typ("f", KindFunc, 0, false, 99)
		}), "type 2 (func f): type refers to type 99"},
		{"typedef loop", one(func(b *btfBuilder) {
			b.typ("a", KindTypedef, 0, false, 2)
			b.typ("b", KindConst, 0, false, 1)
		}), "a loop?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseBTF(tt.raw)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrBTF) {
				t.Fatalf("error %v, want %q wrapping ErrBTF", err, tt.want)
			}
		})
	}
}

// btfExtBuilder writes .BTF.ext by hand: func_info and line_info parts.
func btfExtBytes(hdrLen uint32, funcInfo, lineInfo []byte, extra ...uint32) []byte {
	le := binary.LittleEndian
	out := make([]byte, 0, 64)
	out = le.AppendUint16(out, btfExtMagic)
	out = append(out, btfVersion, 0)
	out = le.AppendUint32(out, hdrLen)
	out = le.AppendUint32(out, 0)
	out = le.AppendUint32(out, uint32(len(funcInfo)))
	out = le.AppendUint32(out, uint32(len(funcInfo)))
	out = le.AppendUint32(out, uint32(len(lineInfo)))
	for _, w := range extra {
		out = le.AppendUint32(out, w)
	}
	return append(append(out, funcInfo...), lineInfo...)
}

func words(ws ...uint32) []byte {
	var out []byte
	for _, w := range ws {
		out = binary.LittleEndian.AppendUint32(out, w)
	}
	return out
}

func TestParseBTFExt(t *testing.T) {
	bb := sampleBTF()
	secName, file, line := bb.str("xdp"), bb.str("prog.c"), bb.str("return x;")
	b, err := ParseBTF(bb.bytes())
	if err != nil {
		t.Fatal(err)
	}
	funcInfo := words(8, secName, 1, 0, sFunc)
	lineInfo := words(16, secName, 2, 0, file, line, 7<<10|3, 16, file, line, 8<<10|1)
	good := btfExtBytes(btfExtHeaderLen, funcInfo, lineInfo)
	ext, err := ParseBTFExt(good, b)
	if err != nil {
		t.Fatal(err)
	}
	if fi := ext.FuncInfo["xdp"]; len(fi) != 1 || fi[0] != (FuncInfo{0, sFunc}) {
		t.Errorf("func_info %+v", ext.FuncInfo)
	}
	li := ext.LineInfo["xdp"]
	if len(li) != 2 || li[1].InsnOff != 2 || li[0].Line != 7 || li[0].Column != 3 || li[0].FileName != "prog.c" || li[0].Source != "return x;" {
		t.Errorf("line_info %+v", ext.LineInfo)
	}
	if got := marshalLineInfo(li); !bytes.Equal(got, words(0, file, line, 7<<10|3, 2, file, line, 8<<10|1)) {
		t.Errorf("marshalled line_info %x", got)
	}
	if got := marshalFuncInfo(ext.FuncInfo["xdp"]); !bytes.Equal(got, words(0, sFunc)) {
		t.Errorf("marshalled func_info %x", got)
	}

	tests := []struct {
		name string
		raw  []byte
		want string
	}{
		{"truncated header", good[:10], "btf.ext: header: 10 bytes"},
		{"bad magic", append([]byte{0, 0}, good[2:]...), "bad magic 0x0000"},
		{"version", append(append([]byte{}, good[:2]...), append([]byte{9}, good[3:]...)...), "version 9 flags 0x0"},
		{"header too short", btfExtBytes(8, funcInfo, lineInfo), "header length 8"},
		{"part past the data", btfExtBytes(btfExtHeaderLen, funcInfo, nil)[:btfExtHeaderLen+4], "func_info at 0, 20 bytes, ends past the data"},
		{"func_info record size wrong", btfExtBytes(btfExtHeaderLen, words(12, secName, 1, 0, sFunc, 0), nil), "func_info: record size 12, want 8"},
		{"line_info record size wrong", btfExtBytes(btfExtHeaderLen, nil, words(8, secName, 1, 0, file)), "line_info: record size 8, want 16"},
		{"record size only", btfExtBytes(btfExtHeaderLen, words(8)[:2], nil), "too short for a record size"},
		{"section name out of range", btfExtBytes(btfExtHeaderLen, words(8, 9999, 1, 0, sFunc), nil), "section name: string offset 9999"},
		{"no section name", btfExtBytes(btfExtHeaderLen, words(8, 0, 1, 0, sFunc), nil), "section \"\" with 1 records"},
		{"section listed twice", btfExtBytes(btfExtHeaderLen, words(8, secName, 1, 0, sFunc, secName, 1, 8, sFunc), nil), "section xdp listed twice"},
		{"truncated section header", btfExtBytes(btfExtHeaderLen, words(8, secName), nil), "truncated section header"},
		{"more records than bytes", btfExtBytes(btfExtHeaderLen, words(8, secName, 5, 0, sFunc), nil), "5 records of 8 bytes, only 8 bytes left"},
		{"offset inside an instruction", btfExtBytes(btfExtHeaderLen, words(8, secName, 1, 4, sFunc), nil), "instruction offset 4 is not a multiple of 8"},
		{"func_info of an int", btfExtBytes(btfExtHeaderLen, words(8, secName, 1, 0, sInt), nil), "type 1 is a int, want a func"},
		{"func_info of a missing type", btfExtBytes(btfExtHeaderLen, words(8, secName, 1, 0, 99), nil), "type 99 is missing"},
		{"func_info out of order", btfExtBytes(btfExtHeaderLen, words(8, secName, 2, 8, sFunc, 0, sFunc), nil), "records must be in increasing order"},
		{"line_info source out of range", btfExtBytes(btfExtHeaderLen, nil, words(16, secName, 1, 0, file, 9999, 1)), "source line: string offset 9999"},
		{"line_info file out of range", btfExtBytes(btfExtHeaderLen, nil, words(16, secName, 1, 0, 9999, line, 1)), "file name: string offset 9999"},
		{"CO-RE relocations", btfExtBytes(btfExtHeaderCORE, nil, nil, 0, 16), "CO-RE relocations: not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseBTFExt(tt.raw, b)
			malformed := !strings.Contains(tt.want, "not supported")
			if err == nil || !strings.Contains(err.Error(), tt.want) || errors.Is(err, ErrBTF) != malformed {
				t.Fatalf("error %v, want %q wrapping ErrBTF", err, tt.want)
			}
		})
	}
}

// TestXLBObjectBTF reads the BTF of the real object: what clang 14 wrote,
// with the loader's fix-ups, and the func and line info of each program.
func TestXLBObjectBTF(t *testing.T) {
	obj := xlbObject(t)
	spec, err := LoadCollectionSpec(obj)
	if err != nil {
		t.Fatal(err)
	}
	if spec.BTF == nil {
		t.Fatal("no BTF in xlb.o: build it with clang -g (BPF_CFLAGS)")
	}
	f, raw, clangBTF := objectBTF(t, obj)
	if !bytes.Equal(clangBTF.marshal(), raw) {
		t.Error("marshal of the object's BTF does not give back its bytes")
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	// What clang leaves for the loader: every DATASEC of size 0 with its
	// variables at offset 0. The fixed-up BTF has the ELF section's size
	// and the symbols' offsets, in order.
	for _, name := range []string{mapsSection, licenseSection} {
		before, err := clangBTF.TypeByName(KindDatasec, name)
		if err != nil {
			t.Fatal(err)
		}
		after, err := spec.BTF.TypeByName(KindDatasec, name)
		if err != nil {
			t.Fatal(err)
		}
		if before.Size != 0 {
			t.Errorf("clang wrote datasec %s with size %d: clang now fills it in?", name, before.Size)
		}
		if after.Size != uint32(f.Section(name).Size) {
			t.Errorf("datasec %s: size %d, section %d", name, after.Size, f.Section(name).Size)
		}
		for i, v := range after.Vars {
			vt, _ := spec.BTF.TypeByID(v.Type)
			var sym elf.Symbol
			for _, s := range syms {
				if s.Name == vt.Name {
					sym = s
				}
			}
			if uint64(v.Offset) != sym.Value || uint64(v.Size) != sym.Size {
				t.Errorf("datasec %s: %s at %d (%d bytes), symbol at %d (%d bytes)", name, vt.Name, v.Offset, v.Size, sym.Value, sym.Size)
			}
			if i > 0 && after.Vars[i-1].Offset >= v.Offset {
				t.Errorf("datasec %s: variables out of order at %d", name, i)
			}
		}
	}
	for name, p := range spec.Programs {
		if p.BTF != spec.BTF || len(p.FuncInfo) == 0 || p.FuncInfo[0].InsnOff != 0 {
			t.Errorf("program %s: func_info %+v", name, p.FuncInfo)
			continue
		}
		fn, _ := spec.BTF.TypeByID(p.FuncInfo[0].TypeID)
		if fn.Kind != KindFunc || fn.Name != name || fn.Linkage != LinkageGlobal {
			t.Errorf("program %s: func_info names %s", name, fn)
		}
		// Then the functions of .text it calls, linked after it in order
		// (http_connection, global, and its bpf_loop step, static).
		for i, fi := range p.FuncInfo[1:] {
			sub, _ := spec.BTF.TypeByID(fi.TypeID)
			if sub.Kind != KindFunc || fi.InsnOff <= p.FuncInfo[i].InsnOff || int(fi.InsnOff) >= len(p.Instructions) {
				t.Errorf("program %s: func_info %d (%s) at instruction %d", name, i+1, sub, fi.InsnOff)
			}
		}
		if len(p.LineInfo) == 0 || p.LineInfo[0].InsnOff != 0 || !strings.HasSuffix(p.LineInfo[0].FileName, "xlb.c") {
			t.Errorf("program %s: line_info starts %+v", name, p.LineInfo[:min(1, len(p.LineInfo))])
		}
		for _, li := range p.LineInfo {
			if int(li.InsnOff) >= len(p.Instructions) {
				t.Errorf("program %s: line_info at instruction %d of %d", name, li.InsnOff, len(p.Instructions))
			}
		}
	}
}

// TestXLBObjectLayouts looks up layouts in the real object's BTF. clang
// writes BTF for the types of global variables and of the arguments of
// functions that are not inlined: struct xdp_md (the programs' argument)
// and struct xlb_map_def (the maps) are there. The structs of the data
// plane (leg_key, leg, binding, ...) are only used inside inlined
// functions and through map definitions that give sizes, not types; the
// global variable of kern/bpf/anchors.h puts them in (kern generates its Go
// layouts from them).
func TestXLBObjectLayouts(t *testing.T) {
	spec, err := LoadCollectionSpec(xlbObject(t))
	if err != nil {
		t.Fatal(err)
	}
	md, err := spec.BTF.StructLayout("xdp_md")
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := md.Member("data_end"); md.Size != 24 || len(md.Members) != 6 || !ok || m.Offset != 4 || m.Size != 4 {
		t.Errorf("struct xdp_md: %+v", md)
	}
	def, err := spec.BTF.StructLayout("xlb_map_def")
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := def.Member("max_entries"); def.Size != mapDefSize || !ok || m.Offset != 12 {
		t.Errorf("struct xlb_map_def: %+v", def)
	}
	key, err := spec.BTF.StructLayout("leg_key")
	if err != nil {
		t.Fatalf("%v (kern/bpf/anchors.h, included by xlb.c, puts it there)", err)
	}
	if m, ok := key.Member("family"); key.Size != 40 || !ok || m.Offset != 36 {
		t.Errorf("struct leg_key: %+v", key)
	}
}

// TestStructLayouts reads testdata/layouts.c's struct, which has one
// member of each interesting sort.
func TestStructLayouts(t *testing.T) {
	obj := builtObject(t, "testdata/layouts.c", "testdata/layouts.o")
	spec, err := LoadCollectionSpec(obj)
	if err != nil {
		t.Fatal(err)
	}
	l, err := spec.BTF.StructLayout("sample")
	if err != nil {
		t.Fatal(err)
	}
	want := []MemberLayout{
		{Name: "id", Offset: 0, Size: 8},
		{Name: "word", Offset: 8, Size: 4, BitOffset: 64},   // anonymous union
		{Name: "bytes", Offset: 8, Size: 4, BitOffset: 64},  // same union
		{Name: "inner", Offset: 12, Size: 4, BitOffset: 96}, // struct inner
		{Name: "kind", Offset: 16, Size: 4, BitOffset: 128, BitfieldSize: 3},
		{Name: "mode", Offset: 16, Size: 4, BitOffset: 131, BitfieldSize: 5},
		{Name: "port", Offset: 18, Size: 2, BitOffset: 144},    // __be16, a typedef, after 8 bits of bitfields
		{Name: "counter", Offset: 20, Size: 4, BitOffset: 160}, // const volatile
		{Name: "next", Offset: 24, Size: 8, BitOffset: 192},    // pointer
		{Name: "grid", Offset: 32, Size: 15, BitOffset: 256},   // __u8[3][5]
		{Name: "tail", Offset: 47, Size: 1, BitOffset: 376},    // after an odd array
		{Name: "a", Offset: 48, Size: 4, BitOffset: 384},       // anonymous struct
		{Name: "b", Offset: 52, Size: 4, BitOffset: 416},       // same struct
	}
	if l.Size != 56 || fmt.Sprint(l.Members) != fmt.Sprint(want) {
		t.Errorf("struct sample: size %d\n got %+v\nwant %+v", l.Size, l.Members, want)
	}
	td, err := spec.BTF.StructLayout("sample_t")
	if err != nil || td.Size != 56 || len(td.Members) != len(want) {
		t.Errorf("typedef sample_t: %+v, %v", td, err)
	}
}

// TestLinkSubprograms checks what the loader does with bpf-to-bpf calls
// and callbacks: each function of .text a program uses is appended once,
// calls point at it, and its func and line info move with it.
func TestLinkSubprograms(t *testing.T) {
	spec, err := LoadCollectionSpec(builtObject(t, "testdata/global.c", "testdata/global.o"))
	if err != nil {
		t.Fatal(err)
	}
	p := spec.Programs["global_xdp"]
	if p == nil || len(p.FuncInfo) != 2 || p.FuncInfo[0].InsnOff != 0 {
		t.Fatalf("global_xdp: %+v", p)
	}
	callee := int(p.FuncInfo[1].InsnOff)
	fn, _ := spec.BTF.TypeByID(p.FuncInfo[1].TypeID)
	if fn.Name != "collatz" || fn.Linkage != LinkageGlobal {
		t.Errorf("second function: %s", fn)
	}
	calls := 0
	for i, in := range p.Instructions[:callee] {
		if in.OpCode == OpCall && in.Src() == Register(PseudoCall) {
			calls++
			if i+1+int(in.Constant) != callee {
				t.Errorf("call at %d goes to %d, collatz is at %d", i, i+1+int(in.Constant), callee)
			}
		}
	}
	if calls != 64 {
		t.Errorf("%d calls, want 64", calls)
	}
	// collatz's lines follow, moved to its place.
	var first *LineInfo
	for i := range p.LineInfo {
		if int(p.LineInfo[i].InsnOff) >= callee {
			first = &p.LineInfo[i]
			break
		}
	}
	if first == nil || int(first.InsnOff) != callee || !strings.Contains(first.Source, "collatz") {
		t.Errorf("first line of collatz: %+v", first)
	}

	spec, err = LoadCollectionSpec(builtObject(t, "testdata/loop.c", "testdata/loop.o"))
	if err != nil {
		t.Fatal(err)
	}
	p = spec.Programs["loop_xdp"]
	if p == nil || len(p.FuncInfo) != 2 {
		t.Fatalf("loop_xdp: %+v", p)
	}
	found := false
	for i, in := range p.Instructions {
		if in.OpCode == OpLoadImm64 && in.Src() == Register(PseudoFunc) {
			found = true
			if i+1+int(in.Constant) != int(p.FuncInfo[1].InsnOff) {
				t.Errorf("callback address at %d points at %d, add is at %d", i, i+1+int(in.Constant), p.FuncInfo[1].InsnOff)
			}
		}
	}
	if !found {
		t.Error("no BPF_PSEUDO_FUNC ld_imm64 in loop_xdp")
	}
}

// TestLoadPatchedBTF breaks the BTF of the real object in place.
func TestLoadPatchedBTF(t *testing.T) {
	obj := readXLBObject(t)
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		t.Fatal(err)
	}
	btfSec, extSec := f.Section(btfSection), f.Section(btfExtSection)
	if btfSec == nil || extSec == nil {
		t.Fatal("xlb.o has no .BTF or .BTF.ext: build it with clang -g")
	}
	le := binary.LittleEndian
	strStart := int(btfSec.Offset) + int(le.Uint32(obj[btfSec.Offset+4:])) + int(le.Uint32(obj[btfSec.Offset+16:]))
	// rename replaces a string of .BTF's string section.
	rename := func(from, to string) []byte {
		b := bytes.Clone(obj)
		i := bytes.Index(b[strStart:btfSec.Offset+btfSec.Size], []byte("\x00"+from+"\x00"))
		if i < 0 {
			t.Fatalf("no string %q in .BTF", from)
		}
		copy(b[strStart+i+1:], to)
		return b
	}
	patch := func(off uint64, v uint32) []byte {
		b := bytes.Clone(obj)
		le.PutUint32(b[off:], v)
		return b
	}
	tests := []struct {
		name string
		obj  []byte
		want string
	}{
		{"bad magic", patch(btfSec.Offset, 0x1234), "btf: bad magic 0x1234"},
		{"datasec without a section", rename("maps", "mapz"), "btf: datasec mapz: the object has no section of that name"},
		{"variable without a symbol", rename("xlb_stats", "xlb_statz"), "btf: datasec maps: variable xlb_statz has no symbol in section maps"},
		{"func_info record size", patch(extSec.Offset+uint64(le.Uint32(obj[extSec.Offset+4:]))+uint64(le.Uint32(obj[extSec.Offset+8:])), 12),
			"btf.ext: func_info: record size 12, want 8"},
		{"ext magic", patch(extSec.Offset, 0), "btf.ext: bad magic"},
		{"records of a missing section", rename("xdp/ctl", "xdp/ctx"), "records for section xdp/ctx, which is not a code section"},
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

// TestDumpBTF prints the types and func/line info of an object, for
// looking at what clang wrote (no bpftool here):
//
//	XLB_BTF_DUMP=kern/bpf/xlb.o go test ./ebpf -run TestDumpBTF -v
func TestDumpBTF(t *testing.T) {
	path := os.Getenv("XLB_BTF_DUMP")
	if path == "" {
		t.Skip("set XLB_BTF_DUMP to an object file to print its BTF")
	}
	if !strings.HasPrefix(path, "/") {
		path = "../" + path
	}
	spec, err := LoadCollectionSpec(path)
	if err != nil {
		t.Fatal(err)
	}
	if spec.BTF == nil {
		t.Fatal("no BTF")
	}
	for _, ty := range spec.BTF.Types() {
		line := fmt.Sprintf("[%d] %s %q", ty.ID, ty.Kind, ty.Name)
		switch ty.Kind {
		case KindInt, KindEnum, KindEnum64, KindFloat:
			line += fmt.Sprintf(" size=%d", ty.Size)
		case KindStruct, KindUnion, KindDatasec:
			line += fmt.Sprintf(" size=%d members=%+v vars=%+v", ty.Size, ty.Members, ty.Vars)
		case KindArray:
			line += fmt.Sprintf(" elem=%d n=%d", ty.ElemType, ty.Nelems)
		case KindFunc, KindVar:
			line += fmt.Sprintf(" type=%d linkage=%d", ty.Type, ty.Linkage)
		case KindFuncProto:
			line += fmt.Sprintf(" ret=%d params=%+v", ty.Type, ty.Params)
		default:
			line += fmt.Sprintf(" type=%d", ty.Type)
		}
		t.Log(line)
	}
	for _, name := range sortedKeys(spec.Programs) {
		p := spec.Programs[name]
		t.Logf("program %s: %d instructions, func_info %+v, %d line_info", name, len(p.Instructions), p.FuncInfo, len(p.LineInfo))
	}
}

// FuzzParseBTF: no input makes the parser panic; what it accepts encodes
// back to itself and every layout and size can be asked for.
func FuzzParseBTF(f *testing.F) {
	f.Add(sampleBTF().bytes())
	if obj, err := elf.Open("../kern/bpf/xlb.o"); err == nil {
		if raw, err := obj.Section(btfSection).Data(); err == nil {
			f.Add(raw)
		}
		obj.Close()
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		b, err := ParseBTF(raw)
		if err != nil {
			if !errors.Is(err, ErrBTF) {
				t.Fatalf("error %v does not wrap ErrBTF", err)
			}
			return
		}
		again, err := ParseBTF(b.marshal())
		if err != nil || again.NumTypes() != b.NumTypes() {
			t.Fatalf("marshalled BTF does not parse again: %v", err)
		}
		for _, ty := range b.Types() {
			b.Sizeof(ty.ID)
			if ty.Kind == KindStruct || ty.Kind == KindUnion || ty.Kind == KindTypedef {
				b.StructLayout(ty.Name)
			}
		}
	})
}

// FuzzParseBTFExt: no .BTF.ext makes the parser panic.
func FuzzParseBTFExt(f *testing.F) {
	bb := sampleBTF()
	secName, file := bb.str("xdp"), bb.str("prog.c")
	b, err := ParseBTF(bb.bytes())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(btfExtBytes(btfExtHeaderLen, words(8, secName, 1, 0, sFunc), words(16, secName, 1, 0, file, file, 1<<10)))
	f.Add(btfExtBytes(btfExtHeaderCORE, words(8, secName, 2, 0, sFunc, 8, sFunc), nil, 0, 0))
	f.Fuzz(func(t *testing.T, raw []byte) {
		if _, err := ParseBTFExt(raw, b); err != nil && !errors.Is(err, ErrBTF) && !strings.Contains(err.Error(), "not supported") {
			t.Fatalf("error %v does not wrap ErrBTF", err)
		}
	})
}
