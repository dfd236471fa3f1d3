package ebpf

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
)

// The object format (see kern/structs.h): clang -target bpf output, with or
// without BTF (clang -g); maps as struct xlb_map_def in a "maps" section; one
// program per "xdp"/"socket" section; functions the programs call, in
// ".text"; a "license" section.
const (
	mapsSection    = "maps"
	licenseSection = "license"
	textSection    = ".text"
	btfSection     = ".BTF"
	btfExtSection  = ".BTF.ext"
	btfMapsSection = ".maps" // BTF-defined maps (libbpf's style): refused
	// mapDefSize is sizeof(struct xlb_map_def): five __u32.
	mapDefSize = 20
	// relEntrySize is sizeof(Elf64_Rel).
	relEntrySize = 16
	// rBPF64_64 is R_BPF_64_64, the relocation of an ld_imm64 immediate
	// (a map, or a function's address).
	rBPF64_64 = 1
	// rBPF64_32 is R_BPF_64_32, the relocation of a call's immediate.
	rBPF64_32 = 10
	// emBPF is EM_BPF.
	emBPF = elf.EM_BPF
)

// programSectionTypes maps a program section name, or its prefix before '/',
// to the program type.
var programSectionTypes = map[string]ProgType{
	"xdp":    XDP,
	"socket": SocketFilter,
}

// ignoredSections hold no code and nothing we load (.BTF and .BTF.ext are
// read separately).
var ignoredSections = map[string]bool{
	".strtab": true, ".symtab": true, ".llvm_addrsig": true, btfSection: true, btfExtSection: true,
}

// CollectionSpec is the content of an object file: map and program
// descriptions, keyed by symbol name, and the object's BTF.
type CollectionSpec struct {
	Maps     map[string]*MapSpec
	Programs map[string]*ProgramSpec
	License  string
	// BTF is the object's type information (.BTF, with the fix-ups the
	// kernel needs), nil if it was built without clang -g. Every program
	// refers to it.
	BTF *BTF
}

// LoadCollectionSpec parses the object file at path.
func LoadCollectionSpec(path string) (*CollectionSpec, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bpf object: %w", err)
	}
	defer f.Close()
	spec, err := LoadCollectionSpecFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return spec, nil
}

// LoadCollectionSpecFromReader parses an object file (e.g. embedded bytes via
// bytes.NewReader).
func LoadCollectionSpecFromReader(r io.ReaderAt) (spec *CollectionSpec, err error) {
	// debug/elf validates headers but is not hardened against every
	// malformed input; a broken object must be an error, never a crash.
	defer func() {
		if p := recover(); p != nil {
			spec, err = nil, fmt.Errorf("bpf object: malformed ELF file: %v", p)
		}
	}()
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("bpf object: not a valid ELF file: %w", err)
	}
	if f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB || f.Machine != emBPF {
		return nil, fmt.Errorf("bpf object: %s %s %s, want a 64-bit little-endian EM_BPF object (clang -target bpf)",
			f.Class, f.Data, f.Machine)
	}
	l := &elfLoader{f: f}
	spec, err = l.load()
	if err != nil {
		return nil, fmt.Errorf("bpf object: %w", err)
	}
	return spec, nil
}

// codeSection is a section of instructions: a program, or .text.
type codeSection struct {
	idx   int
	name  string
	insns []Instruction
	// relocs holds the symbol of each relocated instruction.
	relocs map[int]elf.Symbol
	// funcs are the functions of .text, by start.
	funcs []textFunc
	// prog is the program of a program section (nil for .text).
	prog *ProgramSpec
}

// textFunc is a function in .text, instructions [start, end).
type textFunc struct {
	name       string
	start, end int
}

type elfLoader struct {
	f       *elf.File
	syms    []elf.Symbol
	mapsIdx int // section index of "maps", 0 if none
	code    map[int]*codeSection
	text    *codeSection // nil if .text is empty
	spec    *CollectionSpec
	ext     *BTFExt
	// innerTemplates maps the name of each inner map template to its
	// outer map (see resolveInnerMaps).
	innerTemplates map[string]string
}

func (l *elfLoader) load() (*CollectionSpec, error) {
	l.spec = &CollectionSpec{Maps: map[string]*MapSpec{}, Programs: map[string]*ProgramSpec{}}
	l.code = map[int]*codeSection{}
	syms, err := l.f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("symbol table: %w", err)
	}
	l.syms = syms

	var rels []*elf.Section
	haveLicense := false
	for i, sec := range l.f.Sections {
		switch {
		case i == 0 || ignoredSections[sec.Name]:
		case sec.Name == mapsSection:
			l.mapsIdx = i
		case sec.Name == btfMapsSection:
			return nil, fmt.Errorf(`section %s: BTF-defined maps are not supported; define maps as struct xlb_map_def in SEC("maps")`, sec.Name)
		case sec.Name == licenseSection:
			data, err := sec.Data()
			if err != nil {
				return nil, fmt.Errorf("section %s: %w", sec.Name, err)
			}
			lic, _, _ := strings.Cut(string(data), "\x00")
			if lic == "" {
				return nil, errors.New("empty license section")
			}
			l.spec.License, haveLicense = lic, true
		case sec.Type == elf.SHT_REL:
			rels = append(rels, sec)
		case sec.Type == elf.SHT_RELA:
			return nil, fmt.Errorf("section %s: RELA relocations are not supported (build with clang -target bpf)", sec.Name)
		case sec.Flags&elf.SHF_EXECINSTR != 0:
			if err := l.codeSection(i, sec); err != nil {
				return nil, err
			}
		}
		// Other data sections (.data, .rodata*, .bss, .debug_*) are
		// ignored unless a program refers to them (see relocate).
	}
	if !haveLicense {
		return nil, errors.New(`missing license section (add: char _license[] SEC("license") = "GPL";)`)
	}
	if err := l.loadMaps(); err != nil {
		return nil, err
	}
	if len(l.code) == 0 || len(l.code) == 1 && l.text != nil {
		// .text alone holds no program.
		return nil, errors.New(`no program sections (SEC("xdp"), SEC("xdp/name"), SEC("socket"))`)
	}
	for _, sec := range rels {
		if err := l.relocate(sec); err != nil {
			return nil, err
		}
	}
	if err := l.loadBTF(); err != nil {
		return nil, err
	}
	for _, idx := range sortedInts(l.code) {
		cs := l.code[idx]
		if cs == l.text {
			continue
		}
		p, err := l.link(cs)
		if err != nil {
			return nil, err
		}
		l.spec.Programs[p.Name] = p
	}
	return l.spec, nil
}

// codeSection reads a section of instructions: a program section, or .text
// (the functions programs call).
func (l *elfLoader) codeSection(idx int, sec *elf.Section) error {
	if sec.Name == textSection && sec.Size == 0 {
		return nil
	}
	var typ ProgType
	if sec.Name != textSection {
		prefix, _, _ := strings.Cut(sec.Name, "/")
		var ok bool
		if typ, ok = programSectionTypes[prefix]; !ok {
			return fmt.Errorf(`section %s holds code but is not a program section (use SEC("xdp"), SEC("xdp/name") or SEC("socket"))`, sec.Name)
		}
	}
	data, err := sec.Data()
	if err != nil {
		return fmt.Errorf("section %s: %w", sec.Name, err)
	}
	insns, err := decodeInstructions(data)
	if err != nil {
		return fmt.Errorf("section %s: %w", sec.Name, err)
	}
	if len(insns) == 0 {
		return fmt.Errorf("section %s: no instructions", sec.Name)
	}
	cs := &codeSection{idx: idx, name: sec.Name, insns: insns, relocs: map[int]elf.Symbol{}}
	l.code[idx] = cs
	if sec.Name == textSection {
		l.text = cs
		return l.textFunctions(cs)
	}
	var name string
	for _, s := range l.syms {
		if int(s.Section) != idx || elf.ST_TYPE(s.Info) != elf.STT_FUNC {
			continue
		}
		if s.Value != 0 {
			return fmt.Errorf("section %s: function %s at offset %d: one program per section; put the functions it calls in .text (no SEC())", sec.Name, s.Name, s.Value)
		}
		if elf.ST_BIND(s.Info) != elf.STB_GLOBAL {
			return fmt.Errorf("section %s: program %s is static; declare it without static", sec.Name, s.Name)
		}
		name = s.Name
	}
	if name == "" {
		return fmt.Errorf("section %s: no global function at offset 0", sec.Name)
	}
	cs.prog = &ProgramSpec{Name: name, Section: sec.Name, Type: typ}
	return nil
}

// textFunctions finds the functions of .text from their symbols: they must
// tile the section.
func (l *elfLoader) textFunctions(cs *codeSection) error {
	for _, s := range l.syms {
		if int(s.Section) != cs.idx || elf.ST_TYPE(s.Info) != elf.STT_FUNC {
			continue
		}
		if s.Value%InstructionSize != 0 || s.Size%InstructionSize != 0 || s.Size == 0 ||
			s.Value/InstructionSize+s.Size/InstructionSize > uint64(len(cs.insns)) {
			return fmt.Errorf("section %s: function %s at byte %d, %d bytes: not whole instructions inside the section", cs.name, s.Name, s.Value, s.Size)
		}
		start := int(s.Value / InstructionSize)
		cs.funcs = append(cs.funcs, textFunc{name: s.Name, start: start, end: start + int(s.Size/InstructionSize)})
	}
	sort.Slice(cs.funcs, func(i, j int) bool { return cs.funcs[i].start < cs.funcs[j].start })
	next := 0
	for _, fn := range cs.funcs {
		if fn.start != next {
			return fmt.Errorf("section %s: instructions %d to %d belong to no function symbol (or functions overlap at %s)", cs.name, next, fn.start, fn.name)
		}
		next = fn.end
	}
	if next != len(cs.insns) {
		return fmt.Errorf("section %s: instructions %d to %d belong to no function symbol", cs.name, next, len(cs.insns))
	}
	return nil
}

// loadMaps reads the struct xlb_map_def of every symbol in "maps".
func (l *elfLoader) loadMaps() error {
	if l.mapsIdx == 0 {
		return nil
	}
	sec := l.f.Sections[l.mapsIdx]
	data, err := sec.Data()
	if err != nil {
		return fmt.Errorf("section %s: %w", sec.Name, err)
	}
	for _, s := range l.syms {
		if int(s.Section) != l.mapsIdx || elf.ST_TYPE(s.Info) == elf.STT_SECTION {
			continue
		}
		if elf.ST_BIND(s.Info) != elf.STB_GLOBAL {
			return fmt.Errorf("map %s is static; declare it without static", s.Name)
		}
		if s.Size != mapDefSize {
			return fmt.Errorf("map %s: definition is %d bytes, want %d (struct xlb_map_def)", s.Name, s.Size, mapDefSize)
		}
		if s.Value > uint64(len(data)) || uint64(len(data))-s.Value < mapDefSize {
			return fmt.Errorf("map %s: definition at offset %d is outside section %s", s.Name, s.Value, sec.Name)
		}
		d := data[s.Value : s.Value+mapDefSize]
		le := binary.LittleEndian
		l.spec.Maps[s.Name] = &MapSpec{
			Name:       s.Name,
			Type:       MapType(le.Uint32(d[0:])),
			KeySize:    le.Uint32(d[4:]),
			ValueSize:  le.Uint32(d[8:]),
			MaxEntries: le.Uint32(d[12:]),
			Flags:      le.Uint32(d[16:]),
		}
	}
	return l.resolveInnerMaps()
}

// innerMapSuffix names the inner map template of a map-in-map in "maps".
const innerMapSuffix = "_inner"

// resolveInnerMaps gives every ArrayOfMaps/HashOfMaps definition its inner
// map template. struct xlb_map_def has no room for one, so the template is
// the map definition of the same section named "<outer>_inner":
//
//	struct xlb_map_def SEC("maps") idle = { .type = BPF_MAP_TYPE_ARRAY_OF_MAPS,
//		.key_size = 4, .value_size = 4, .max_entries = 64 };
//	struct xlb_map_def SEC("maps") idle_inner = { .type = BPF_MAP_TYPE_QUEUE,
//		.value_size = 40, .max_entries = 1024 };
//
// The template becomes the outer MapSpec's InnerMap and is removed from
// CollectionSpec.Maps: NewCollection does not create it as a map of its own,
// and a program may not reference it (reach inner maps through the outer
// map). A missing template is an error; value_size 0 of an outer map means 4.
func (l *elfLoader) resolveInnerMaps() error {
	l.innerTemplates = map[string]string{}
	for _, name := range sortedKeys(l.spec.Maps) {
		ms := l.spec.Maps[name]
		if !ms.Type.mapInMap() {
			continue
		}
		tname := name + innerMapSuffix
		inner := l.spec.Maps[tname]
		if inner == nil {
			return fmt.Errorf("map %s: %s needs an inner map template: define map %s in section %s", name, ms.Type, tname, mapsSection)
		}
		if inner.Type.mapInMap() {
			return fmt.Errorf("map %s: inner map template %s is itself a %s; nested map-in-map is not supported", name, tname, inner.Type)
		}
		if ms.ValueSize == 0 {
			ms.ValueSize = outerValueSize
		}
		if ms.ValueSize != outerValueSize {
			return fmt.Errorf("map %s: %s value_size is %d, want %d (an inner map fd or ID)", name, ms.Type, ms.ValueSize, outerValueSize)
		}
		ms.InnerMap = inner
		l.innerTemplates[tname] = name
	}
	for tname := range l.innerTemplates {
		delete(l.spec.Maps, tname)
	}
	return nil
}

// relocate records the relocations of a code section: map references and
// function addresses on ld_imm64, calls to functions in .text.
func (l *elfLoader) relocate(sec *elf.Section) error {
	cs, ok := l.code[int(sec.Info)]
	if !ok {
		// Relocations of sections we ignore (data, debug info, BTF).
		return nil
	}
	data, err := sec.Data()
	if err != nil {
		return fmt.Errorf("section %s: %w", sec.Name, err)
	}
	if len(data)%relEntrySize != 0 {
		return fmt.Errorf("section %s: size %d is not a multiple of %d", sec.Name, len(data), relEntrySize)
	}
	for off := 0; off < len(data); off += relEntrySize {
		rOff := binary.LittleEndian.Uint64(data[off:])
		rInfo := binary.LittleEndian.Uint64(data[off+8:])
		typ, symIdx := uint32(rInfo), rInfo>>32
		if rOff%InstructionSize != 0 || rOff/InstructionSize >= uint64(len(cs.insns)) {
			return fmt.Errorf("section %s: relocation at offset %d is outside the section", cs.name, rOff)
		}
		insn := int(rOff / InstructionSize)
		where := fmt.Sprintf("section %s: instruction %d", cs.name, insn)
		// debug/elf drops the null symbol: index i is syms[i-1].
		if symIdx == 0 || symIdx > uint64(len(l.syms)) {
			return fmt.Errorf("%s: relocation to bad symbol index %d", where, symIdx)
		}
		sym := l.syms[symIdx-1]
		in := cs.insns[insn]
		switch {
		case typ == rBPF64_32 && in.OpCode == OpCall && in.Src() == Register(PseudoCall):
			if l.text == nil || int(sym.Section) != l.text.idx {
				return fmt.Errorf("%s: call to %s, which is not a function in %s", where, symName(sym), textSection)
			}
		case typ == rBPF64_64:
			if err := l.checkLoadReloc(cs, insn, sym); err != nil {
				return fmt.Errorf("%s: %w", where, err)
			}
		default:
			return fmt.Errorf("%s: unsupported relocation type %d on opcode %#02x (supported: R_BPF_64_64 on ld_imm64 to a map or a function, R_BPF_64_32 on a call)",
				where, typ, in.OpCode)
		}
		cs.relocs[insn] = sym
	}
	return nil
}

// checkLoadReloc checks an R_BPF_64_64 relocation: an ld_imm64 of a map or
// of a function's address (a callback, e.g. of bpf_loop).
func (l *elfLoader) checkLoadReloc(cs *codeSection, insn int, sym elf.Symbol) error {
	if sym.Section == elf.SHN_UNDEF {
		return fmt.Errorf("reference to undefined symbol %s (declare helpers as function pointers, see kern/bpf_helpers.h)", sym.Name)
	}
	if cs.insns[insn].OpCode != OpLoadImm64 || insn+1 >= len(cs.insns) {
		return fmt.Errorf("relocation to %s on opcode %#02x, want ld_imm64 (0x18)", symName(sym), cs.insns[insn].OpCode)
	}
	if l.text != nil && int(sym.Section) == l.text.idx {
		return nil
	}
	if outer, ok := l.innerTemplates[sym.Name]; ok && int(sym.Section) == l.mapsIdx {
		return fmt.Errorf("reference to %s, the inner map template of %s, which is not created as a map: look up the inner map in %s", sym.Name, outer, outer)
	}
	if int(sym.Section) != l.mapsIdx || l.spec.Maps[sym.Name] == nil {
		where := fmt.Sprintf("section %d", sym.Section)
		if int(sym.Section) < len(l.f.Sections) {
			where = "section " + l.f.Sections[sym.Section].Name
		}
		return fmt.Errorf("reference to %s in %s: global variables are not supported; use a map", symName(sym), where)
	}
	return nil
}

func symName(s elf.Symbol) string {
	if s.Name == "" {
		return "<anonymous>"
	}
	return s.Name
}

// loadBTF parses .BTF and .BTF.ext, if the object has them, and fills in
// what the compiler left to the loader.
func (l *elfLoader) loadBTF() error {
	btfSec, extSec := l.f.Section(btfSection), l.f.Section(btfExtSection)
	if btfSec == nil {
		if extSec != nil {
			return fmt.Errorf("section %s without %s", btfExtSection, btfSection)
		}
		return nil
	}
	data, err := btfSec.Data()
	if err != nil {
		return fmt.Errorf("section %s: %w", btfSection, err)
	}
	b, err := ParseBTF(data)
	if err != nil {
		return err
	}
	if err := l.fixupDatasecs(b); err != nil {
		return err
	}
	l.spec.BTF = b
	if extSec == nil {
		return nil
	}
	if data, err = extSec.Data(); err != nil {
		return fmt.Errorf("section %s: %w", btfExtSection, err)
	}
	if l.ext, err = ParseBTFExt(data, b); err != nil {
		return err
	}
	for _, recs := range []map[string]int{countKeys(l.ext.FuncInfo), countKeys(l.ext.LineInfo)} {
		for name := range recs {
			if s := l.f.Section(name); s == nil || s.Flags&elf.SHF_EXECINSTR == 0 {
				return fmt.Errorf("btf.ext: records for section %s, which is not a code section of the object: %w", name, ErrBTF)
			}
		}
	}
	return nil
}

// fixupDatasecs fills in what clang leaves to the loader in each DATASEC
// (the variables of an ELF section): its size, which clang writes as 0, and
// the offsets of its variables, which clang writes as 0 with a relocation in
// .rel.BTF against each variable's symbol. Both come from the ELF section
// and symbol tables, as libbpf's btf_fixup_datasec does. The kernel also
// wants the variables in offset order.
func (l *elfLoader) fixupDatasecs(b *BTF) error {
	for _, t := range b.types[1:] {
		if t.Kind != KindDatasec {
			continue
		}
		sec := l.f.Section(t.Name)
		if sec == nil {
			return fmt.Errorf("btf: datasec %s: the object has no section of that name: %w", t.Name, ErrBTF)
		}
		secIdx := elf.SectionIndex(slices.Index(l.f.Sections, sec))
		fillOffsets := t.Size == 0
		if fillOffsets {
			if sec.Size == 0 || sec.Size >= 1<<32 {
				return fmt.Errorf("btf: datasec %s: section size %d: %w", t.Name, sec.Size, ErrBTF)
			}
			t.Size = uint32(sec.Size)
		}
		for i := range t.Vars {
			v := &t.Vars[i]
			vt := b.types[v.Type] // a var: ParseBTF checked
			if vt.Linkage == LinkageExtern {
				return fmt.Errorf("btf: datasec %s: extern variable %s: not supported", t.Name, vt.Name)
			}
			if fillOffsets {
				sym, ok := l.symbol(secIdx, vt.Name)
				if !ok {
					return fmt.Errorf("btf: datasec %s: variable %s has no symbol in section %s: %w", t.Name, vt.Name, t.Name, ErrBTF)
				}
				if sym.Value >= 1<<32 {
					return fmt.Errorf("btf: datasec %s: variable %s at offset %d: %w", t.Name, vt.Name, sym.Value, ErrBTF)
				}
				v.Offset = uint32(sym.Value)
			}
			if uint64(v.Offset)+uint64(v.Size) > uint64(t.Size) {
				return fmt.Errorf("btf: datasec %s: variable %s at offset %d, %d bytes, ends past the section (%d bytes): %w",
					t.Name, vt.Name, v.Offset, v.Size, t.Size, ErrBTF)
			}
		}
		sort.SliceStable(t.Vars, func(i, j int) bool { return t.Vars[i].Offset < t.Vars[j].Offset })
		for i := 1; i < len(t.Vars); i++ {
			if prev := t.Vars[i-1]; prev.Offset+prev.Size > t.Vars[i].Offset {
				return fmt.Errorf("btf: datasec %s: variables %s and %s overlap: %w",
					t.Name, b.types[prev.Type].Name, b.types[t.Vars[i].Type].Name, ErrBTF)
			}
		}
	}
	return nil
}

// symbol finds the data symbol called name in section idx.
func (l *elfLoader) symbol(idx elf.SectionIndex, name string) (elf.Symbol, bool) {
	for _, s := range l.syms {
		if s.Section == idx && s.Name == name && elf.ST_TYPE(s.Info) != elf.STT_SECTION {
			return s, true
		}
	}
	return elf.Symbol{}, false
}

// segment is a run of a linked program's instructions copied from a code
// section.
type segment struct {
	from      *codeSection
	fromStart int // first instruction in from
	at        int // first instruction in the linked program
	n         int
}

// link builds the program of section cs: its own instructions, then each
// function of .text it calls (directly or through other functions, or whose
// address it takes), appended once, with call offsets, map references and
// func/line info moved to where the instructions landed. This is what the
// kernel expects of bpf-to-bpf calls: one instruction array per program,
// subprograms after the main one.
func (l *elfLoader) link(cs *codeSection) (*ProgramSpec, error) {
	p := cs.prog
	p.License = l.spec.License
	p.BTF = l.spec.BTF
	p.MapReferences = map[int]string{}
	p.Instructions = append([]Instruction(nil), cs.insns...)
	segs := []segment{{from: cs, n: len(cs.insns)}}
	placed := map[int]int{} // .text function start -> position in the program
	place := func(target int) (int, error) {
		if at, ok := placed[target]; ok {
			return at, nil
		}
		i := sort.Search(len(l.text.funcs), func(i int) bool { return l.text.funcs[i].end > target })
		if i == len(l.text.funcs) || l.text.funcs[i].start != target {
			return 0, fmt.Errorf("target is instruction %d of %s, not the start of a function", target, textSection)
		}
		fn := l.text.funcs[i]
		at := len(p.Instructions)
		p.Instructions = append(p.Instructions, l.text.insns[fn.start:fn.end]...)
		segs = append(segs, segment{from: l.text, fromStart: fn.start, at: at, n: fn.end - fn.start})
		placed[target] = at
		return at, nil
	}
	for s := 0; s < len(segs); s++ {
		seg := segs[s]
		for i := range seg.n {
			src, at := seg.fromStart+i, seg.at+i
			in := p.Instructions[at]
			sym, hasReloc := seg.from.relocs[src]
			where := fmt.Sprintf("program %s: instruction %d (%s %d)", p.Name, at, seg.from.name, src)
			switch {
			case in.OpCode == OpCall && in.Src() == Register(PseudoCall):
				var target int
				switch {
				case hasReloc:
					// A global function: its symbol and imm -1; a
					// static one: the section symbol and imm = its
					// start - 1. Either way:
					target = int(sym.Value/InstructionSize) + int(in.Constant) + 1
				case seg.from == l.text:
					target = src + int(in.Constant) + 1
				default:
					return nil, fmt.Errorf("%s: call without a relocation inside program section %s; put the functions a program calls in .text (no SEC())", where, seg.from.name)
				}
				if l.text == nil {
					return nil, fmt.Errorf("%s: call, but the object has no code in %s", where, textSection)
				}
				to, err := place(target)
				if err != nil {
					return nil, fmt.Errorf("%s: call: %w", where, err)
				}
				p.Instructions[at].Constant = int32(to - at - 1)
			case hasReloc && in.OpCode == OpLoadImm64 && l.text != nil && int(sym.Section) == l.text.idx:
				// The address of a function (a callback).
				off := int64(sym.Value) + int64(in.Constant)
				if off%InstructionSize != 0 || off < 0 {
					return nil, fmt.Errorf("%s: address of %s at byte %d of %s, not an instruction", where, symName(sym), off, textSection)
				}
				to, err := place(int(off / InstructionSize))
				if err != nil {
					return nil, fmt.Errorf("%s: address of %s: %w", where, symName(sym), err)
				}
				p.Instructions[at] = in.WithSrc(PseudoFunc)
				p.Instructions[at].Constant = int32(to - at - 1)
				p.Instructions[at+1].Constant = 0
			case hasReloc && in.OpCode == OpLoadImm64:
				p.MapReferences[at] = sym.Name
			}
		}
		if l.ext != nil {
			end := uint32(seg.fromStart + seg.n)
			delta := seg.at - seg.fromStart
			p.FuncInfo = append(p.FuncInfo, recordsIn(l.ext.FuncInfo[seg.from.name], uint32(seg.fromStart), end, delta)...)
			p.LineInfo = append(p.LineInfo, recordsIn(l.ext.LineInfo[seg.from.name], uint32(seg.fromStart), end, delta)...)
		}
	}
	// With func_info, the kernel wants one record at the start of each
	// function and no other.
	if len(p.FuncInfo) > 0 {
		for i, seg := range segs {
			if i >= len(p.FuncInfo) || int(p.FuncInfo[i].InsnOff) != seg.at || i+1 < len(p.FuncInfo) && int(p.FuncInfo[i+1].InsnOff) < seg.at+seg.n {
				return nil, fmt.Errorf("program %s: the function at %s instruction %d does not have exactly one BTF func_info record, at its start: %w",
					p.Name, seg.from.name, seg.fromStart, ErrBTF)
			}
		}
		if len(p.FuncInfo) != len(segs) {
			return nil, fmt.Errorf("program %s: %d func_info records for %d functions: %w", p.Name, len(p.FuncInfo), len(segs), ErrBTF)
		}
	}
	return p, nil
}

// CollectionOptions changes how NewCollection creates objects.
type CollectionOptions struct {
	// ReplaceMaps are existing maps (e.g. pinned ones) used instead of
	// creating the map of the same name. They must match the spec's type,
	// key size, value size and max entries. The Collection does not close
	// them.
	ReplaceMaps map[string]*Map
}

// Collection is the loaded content of an object.
type Collection struct {
	Maps     map[string]*Map
	Programs map[string]*Program
	owned    map[string]bool // maps created (and closed) by this Collection
}

// NewCollection creates the maps of spec (or takes the replacements), writes
// their fds into the programs' map references and loads the programs. On
// error it closes everything it created.
func NewCollection(spec *CollectionSpec, opts *CollectionOptions) (_ *Collection, err error) {
	if opts == nil {
		opts = &CollectionOptions{}
	}
	c := &Collection{Maps: map[string]*Map{}, Programs: map[string]*Program{}, owned: map[string]bool{}}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	for name := range opts.ReplaceMaps {
		if spec.Maps[name] == nil {
			return nil, fmt.Errorf("replace map %s: no such map in the object", name)
		}
	}
	for _, name := range sortedKeys(spec.Maps) {
		ms := spec.Maps[name]
		if m := opts.ReplaceMaps[name]; m != nil {
			if err := compatible(ms, m); err != nil {
				return nil, err
			}
			c.Maps[name] = m
			continue
		}
		m, err := NewMap(ms)
		if err != nil {
			return nil, err
		}
		c.Maps[name], c.owned[name] = m, true
	}
	// One BTF load for every program of the object; each program keeps
	// its own reference, so the handle is closed once they are loaded.
	var btf *BTFHandle
	for _, ps := range spec.Programs {
		if ps.BTF != nil && (len(ps.FuncInfo) > 0 || len(ps.LineInfo) > 0) {
			if ps.BTF != spec.BTF {
				return nil, fmt.Errorf("program %s: its BTF is not the collection's", ps.Name)
			}
			if btf == nil {
				if btf, err = LoadBTF(spec.BTF); err != nil {
					return nil, err
				}
				defer btf.Close()
			}
		}
	}
	for _, name := range sortedKeys(spec.Programs) {
		ps := *spec.Programs[name]
		ps.Instructions = append([]Instruction(nil), ps.Instructions...)
		for idx, mapName := range ps.MapReferences {
			m := c.Maps[mapName]
			if m == nil {
				return nil, fmt.Errorf("program %s: instruction %d: unknown map %s", ps.Name, idx, mapName)
			}
			if idx < 0 || idx+1 >= len(ps.Instructions) || ps.Instructions[idx].OpCode != OpLoadImm64 {
				return nil, fmt.Errorf("program %s: instruction %d: map %s reference is not an ld_imm64", ps.Name, idx, mapName)
			}
			ps.Instructions[idx] = ps.Instructions[idx].WithSrc(PseudoMapFD)
			ps.Instructions[idx].Constant = int32(m.FD())
			ps.Instructions[idx+1].Constant = 0
		}
		var h *BTFHandle
		if ps.BTF != nil {
			h = btf
		}
		p, err := loadProgram(&ps, h)
		if err != nil {
			return nil, err
		}
		c.Programs[name] = p
	}
	return c, nil
}

// compatible checks that an existing map can stand in for spec.
func compatible(spec *MapSpec, m *Map) error {
	if m.Type() != spec.Type || m.KeySize() != spec.KeySize || m.ValueSize() != spec.ValueSize ||
		m.MaxEntries() != spec.MaxEntries {
		return fmt.Errorf("replace map %s: existing map is %s key %d value %d max_entries %d, object wants %s key %d value %d max_entries %d (remove the stale pin)",
			spec.Name, m.Type(), m.KeySize(), m.ValueSize(), m.MaxEntries(),
			spec.Type, spec.KeySize, spec.ValueSize, spec.MaxEntries)
	}
	return nil
}

// Close closes the programs and the maps the Collection created.
func (c *Collection) Close() {
	for _, p := range c.Programs {
		p.Close()
	}
	for name, m := range c.Maps {
		if c.owned[name] {
			m.Close()
		}
	}
}

func sortedInts[V any](m map[int]V) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	return keys
}

func countKeys[V any](m map[string][]V) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = len(v)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
