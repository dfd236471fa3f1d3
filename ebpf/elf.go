package ebpf

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// The object format (see kern/structs.h): clang -target bpf output without
// BTF; maps as struct xlb_map_def in a "maps" section; one program per
// "xdp"/"socket" section; a "license" section.
const (
	mapsSection    = "maps"
	licenseSection = "license"
	textSection    = ".text"
	// mapDefSize is sizeof(struct xlb_map_def): five __u32.
	mapDefSize = 20
	// relEntrySize is sizeof(Elf64_Rel).
	relEntrySize = 16
	// rBPF64_64 is R_BPF_64_64, the relocation of an ld_imm64 immediate.
	rBPF64_64 = 1
	// emBPF is EM_BPF.
	emBPF = elf.EM_BPF
)

// programSectionTypes maps a program section name, or its prefix before '/',
// to the program type.
var programSectionTypes = map[string]ProgType{
	"xdp":    XDP,
	"socket": SocketFilter,
}

// ignoredSections hold no code and nothing we load.
var ignoredSections = map[string]bool{
	".strtab": true, ".symtab": true, ".llvm_addrsig": true, ".BTF": true, ".BTF.ext": true,
}

// CollectionSpec is the content of an object file: map and program
// descriptions, keyed by symbol name.
type CollectionSpec struct {
	Maps     map[string]*MapSpec
	Programs map[string]*ProgramSpec
	License  string
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

type elfLoader struct {
	f        *elf.File
	syms     []elf.Symbol
	mapsIdx  int // section index of "maps", 0 if none
	progSecs map[int]*ProgramSpec
	spec     *CollectionSpec
	// innerTemplates maps the name of each inner map template to its
	// outer map (see resolveInnerMaps).
	innerTemplates map[string]string
}

func (l *elfLoader) load() (*CollectionSpec, error) {
	l.spec = &CollectionSpec{Maps: map[string]*MapSpec{}, Programs: map[string]*ProgramSpec{}}
	l.progSecs = map[int]*ProgramSpec{}
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
	if len(l.progSecs) == 0 {
		return nil, errors.New(`no program sections (SEC("xdp"), SEC("xdp/name"), SEC("socket"))`)
	}
	for _, sec := range rels {
		if err := l.relocate(sec); err != nil {
			return nil, err
		}
	}
	for _, p := range l.progSecs {
		p.License = l.spec.License
		l.spec.Programs[p.Name] = p
	}
	return l.spec, nil
}

// codeSection reads a section of instructions.
func (l *elfLoader) codeSection(idx int, sec *elf.Section) error {
	if sec.Name == textSection {
		if sec.Size != 0 {
			return errors.New("section .text holds code: function calls are not supported: mark helpers static __always_inline")
		}
		return nil
	}
	prefix, _, _ := strings.Cut(sec.Name, "/")
	typ, ok := programSectionTypes[prefix]
	if !ok {
		return fmt.Errorf(`section %s holds code but is not a program section (use SEC("xdp"), SEC("xdp/name") or SEC("socket"))`, sec.Name)
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
	var name string
	for _, s := range l.syms {
		if int(s.Section) != idx || elf.ST_TYPE(s.Info) != elf.STT_FUNC {
			continue
		}
		if s.Value != 0 {
			return fmt.Errorf("section %s: function %s at offset %d: one program per section, and function calls are not supported: mark helpers static __always_inline", sec.Name, s.Name, s.Value)
		}
		if elf.ST_BIND(s.Info) != elf.STB_GLOBAL {
			return fmt.Errorf("section %s: program %s is static; declare it without static", sec.Name, s.Name)
		}
		name = s.Name
	}
	if name == "" {
		return fmt.Errorf("section %s: no global function at offset 0", sec.Name)
	}
	for i, in := range insns {
		if in.OpCode == OpCall && uint8(in.Src()) == PseudoCall {
			return fmt.Errorf("program %s: instruction %d: function calls are not supported: mark helpers static __always_inline", name, i)
		}
	}
	l.progSecs[idx] = &ProgramSpec{Name: name, Section: sec.Name, Type: typ, Instructions: insns}
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
// map template. struct xlb_map_def has no room for one (and we do not read
// BTF), so the template is the map definition of the same section named
// "<outer>_inner":
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

// relocate records the map references of a program section's relocations.
func (l *elfLoader) relocate(sec *elf.Section) error {
	prog, ok := l.progSecs[int(sec.Info)]
	if !ok {
		// Relocations of sections we ignore (data, debug info).
		return nil
	}
	data, err := sec.Data()
	if err != nil {
		return fmt.Errorf("section %s: %w", sec.Name, err)
	}
	if len(data)%relEntrySize != 0 {
		return fmt.Errorf("section %s: size %d is not a multiple of %d", sec.Name, len(data), relEntrySize)
	}
	if prog.MapReferences == nil {
		prog.MapReferences = map[int]string{}
	}
	for off := 0; off < len(data); off += relEntrySize {
		rOff := binary.LittleEndian.Uint64(data[off:])
		rInfo := binary.LittleEndian.Uint64(data[off+8:])
		typ, symIdx := uint32(rInfo), rInfo>>32
		if rOff%InstructionSize != 0 || rOff/InstructionSize >= uint64(len(prog.Instructions)) {
			return fmt.Errorf("program %s: relocation at offset %d is outside the program", prog.Name, rOff)
		}
		insn := int(rOff / InstructionSize)
		if typ != rBPF64_64 {
			return fmt.Errorf("program %s: instruction %d: unsupported relocation type %d (only R_BPF_64_64 to a map is supported)", prog.Name, insn, typ)
		}
		// debug/elf drops the null symbol: index i is syms[i-1].
		if symIdx == 0 || symIdx > uint64(len(l.syms)) {
			return fmt.Errorf("program %s: instruction %d: relocation to bad symbol index %d", prog.Name, insn, symIdx)
		}
		sym := l.syms[symIdx-1]
		if sym.Section == elf.SHN_UNDEF {
			return fmt.Errorf("program %s: instruction %d: reference to undefined symbol %s (declare helpers as function pointers, see kern/bpf_helpers.h)", prog.Name, insn, sym.Name)
		}
		if outer, ok := l.innerTemplates[sym.Name]; ok && int(sym.Section) == l.mapsIdx {
			return fmt.Errorf("program %s: instruction %d: reference to %s, the inner map template of %s, which is not created as a map: look up the inner map in %s", prog.Name, insn, sym.Name, outer, outer)
		}
		if int(sym.Section) != l.mapsIdx || l.spec.Maps[sym.Name] == nil {
			where := fmt.Sprintf("section %d", sym.Section)
			if int(sym.Section) < len(l.f.Sections) {
				where = "section " + l.f.Sections[sym.Section].Name
			}
			name := sym.Name
			if name == "" {
				name = "<anonymous>"
			}
			return fmt.Errorf("program %s: instruction %d: reference to %s in %s: global variables are not supported; use a map", prog.Name, insn, name, where)
		}
		if prog.Instructions[insn].OpCode != OpLoadImm64 || insn+1 >= len(prog.Instructions) {
			return fmt.Errorf("program %s: instruction %d: map %s relocation on opcode %#02x, want ld_imm64 (0x18)", prog.Name, insn, sym.Name, prog.Instructions[insn].OpCode)
		}
		prog.MapReferences[insn] = sym.Name
	}
	return nil
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
		p, err := LoadProgram(&ps)
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

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
