package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// BTF (BPF Type Format) as clang -g writes it into an object's .BTF section
// and as BPF_BTF_LOAD takes it: a header, a type section and a string section
// (include/uapi/linux/btf.h, Documentation/bpf/btf.rst). ParseBTF decodes and
// checks it; marshal encodes it again after the loader's fix-ups.

// ErrBTF is wrapped by every error about malformed BTF or .BTF.ext (not by
// those about valid BTF the loader does not support, e.g. CO-RE relocations).
var ErrBTF = errors.New("malformed BTF")

// Limits and constants of the format.
const (
	btfMagic        = 0xeb9f
	btfVersion      = 1
	btfHeaderLen    = 24 // struct btf_header up to str_len
	btfTypeLen      = 12 // struct btf_type
	btfMaxType      = 0xfffff
	btfMaxNameOff   = 0xffffff
	btfMaxVlen      = 0xffff // the kernel's BTF_MAX_VLEN
	btfMaxDepth     = 32     // the kernel's MAX_RESOLVE_DEPTH
	btfPointerSize  = 8      // the BPF target's pointers
	btfFuncLinkages = 3      // static, global, extern
)

// BTFKind is the kind of a BTF type (BTF_KIND_*).
type BTFKind uint8

const (
	KindVoid BTFKind = iota // BTF_KIND_UNKN: only type 0, void, has it
	KindInt
	KindPtr
	KindArray
	KindStruct
	KindUnion
	KindEnum
	KindFwd
	KindTypedef
	KindVolatile
	KindConst
	KindRestrict
	KindFunc
	KindFuncProto
	KindVar
	KindDatasec
	KindFloat
	KindDeclTag
	KindTypeTag
	KindEnum64
	kindCount
)

var btfKindNames = [kindCount]string{
	"void", "int", "ptr", "array", "struct", "union", "enum", "fwd", "typedef", "volatile",
	"const", "restrict", "func", "func_proto", "var", "datasec", "float", "decl_tag", "type_tag", "enum64",
}

func (k BTFKind) String() string {
	if k < kindCount {
		return btfKindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// TypeID numbers the types of a BTF blob; 0 is void.
type TypeID uint32

// Linkages of a FUNC (in its vlen) and of a VAR.
const (
	LinkageStatic = 0
	LinkageGlobal = 1
	LinkageExtern = 2
)

// BTFType is one decoded type. Which fields mean something depends on Kind;
// the others are zero.
type BTFType struct {
	ID       TypeID
	Kind     BTFKind
	Name     string
	KindFlag bool
	// Size in bytes: int, struct, union, enum, enum64, datasec, float.
	Size uint32
	// Type is the type referred to: ptr, typedef, volatile, const,
	// restrict, type_tag, var, decl_tag (the tagged type), func (its
	// func_proto), func_proto (the return type, 0 for void).
	Type TypeID
	// Int: encoding (BTF_INT_SIGNED 1, CHAR 2, BOOL 4), bit offset and
	// number of bits.
	IntEncoding, IntOffset, IntBits uint8
	// Array: element type, index type, number of elements.
	ElemType, IndexType TypeID
	Nelems              uint32
	Members             []BTFMember  // struct, union
	Values              []BTFEnum    // enum, enum64
	Params              []BTFParam   // func_proto
	Vars                []BTFVarInfo // datasec
	// Linkage of a func (LinkageStatic, LinkageGlobal, LinkageExtern) or
	// a var.
	Linkage uint32
	// ComponentIdx of a decl_tag: -1 for the tagged type itself, else the
	// member or parameter index.
	ComponentIdx int32

	nameOff uint32
	vlen    uint32 // as encoded (a func's linkage)
}

// BTFMember is a member of a struct or union.
type BTFMember struct {
	Name         string
	Type         TypeID
	BitOffset    uint32
	BitfieldSize uint8 // 0 unless the member is a bitfield
	nameOff      uint32
}

// BTFEnum is a value of an enum or enum64; the parent's KindFlag says
// whether it is signed.
type BTFEnum struct {
	Name    string
	Value   uint64
	nameOff uint32
}

// BTFParam is a parameter of a func_proto; a last parameter of type 0 means
// "...".
type BTFParam struct {
	Name    string
	Type    TypeID
	nameOff uint32
}

// BTFVarInfo is a variable of a datasec (struct btf_var_secinfo).
type BTFVarInfo struct {
	Type   TypeID // a var
	Offset uint32
	Size   uint32
}

// BTF is a parsed type section with its strings.
type BTF struct {
	types   []*BTFType // indexed by TypeID; types[0] is void
	strings []byte
}

func (t *BTFType) String() string {
	name := t.Name
	if name == "" {
		name = "(anon)"
	}
	return fmt.Sprintf("type %d (%s %s)", t.ID, t.Kind, name)
}

// btfReader decodes little-endian words from a bounded slice.
type btfReader struct {
	b   []byte
	off int
}

func (r *btfReader) left() int { return len(r.b) - r.off }

func (r *btfReader) u32() uint32 {
	v := binary.LittleEndian.Uint32(r.b[r.off:])
	r.off += 4
	return v
}

// ParseBTF decodes and checks a .BTF section. Every error wraps ErrBTF and
// says what is wrong where.
func ParseBTF(raw []byte) (*BTF, error) {
	if len(raw) < btfHeaderLen {
		return nil, fmt.Errorf("btf: header: %d bytes, want at least %d: %w", len(raw), btfHeaderLen, ErrBTF)
	}
	le := binary.LittleEndian
	magic := le.Uint16(raw[0:])
	if magic != btfMagic {
		if magic == 0x9feb {
			return nil, fmt.Errorf("btf: big-endian BTF is not supported: %w", ErrBTF)
		}
		return nil, fmt.Errorf("btf: bad magic %#04x, want %#04x: %w", magic, btfMagic, ErrBTF)
	}
	if v := raw[2]; v != btfVersion {
		return nil, fmt.Errorf("btf: version %d, want %d: %w", v, btfVersion, ErrBTF)
	}
	if f := raw[3]; f != 0 {
		return nil, fmt.Errorf("btf: flags %#x, want 0: %w", f, ErrBTF)
	}
	hdrLen := le.Uint32(raw[4:])
	typeOff, typeLen := le.Uint32(raw[8:]), le.Uint32(raw[12:])
	strOff, strLen := le.Uint32(raw[16:]), le.Uint32(raw[20:])
	if hdrLen < btfHeaderLen || uint64(hdrLen) > uint64(len(raw)) {
		return nil, fmt.Errorf("btf: header length %d, want %d to %d (the data): %w", hdrLen, btfHeaderLen, len(raw), ErrBTF)
	}
	// A longer header (the layout section of newer compilers) is accepted;
	// what it adds is not loaded (marshal writes the 24-byte header).
	body := raw[hdrLen:]
	sec := func(name string, off, n uint32) ([]byte, error) {
		if uint64(off)+uint64(n) > uint64(len(body)) {
			return nil, fmt.Errorf("btf: %s section at %d, %d bytes, ends past the data (%d bytes after the header): %w",
				name, off, n, len(body), ErrBTF)
		}
		return body[off : off+n], nil
	}
	if typeOff%4 != 0 {
		return nil, fmt.Errorf("btf: type section offset %d is not 4-byte aligned: %w", typeOff, ErrBTF)
	}
	typeSec, err := sec("type", typeOff, typeLen)
	if err != nil {
		return nil, err
	}
	strSec, err := sec("string", strOff, strLen)
	if err != nil {
		return nil, err
	}
	if typeOff < strOff+strLen && strOff < typeOff+typeLen {
		return nil, fmt.Errorf("btf: type section [%d, %d) and string section [%d, %d) overlap: %w",
			typeOff, typeOff+typeLen, strOff, strOff+strLen, ErrBTF)
	}
	if len(strSec) == 0 || strSec[0] != 0 || strSec[len(strSec)-1] != 0 {
		return nil, fmt.Errorf("btf: string section must start and end with a NUL byte: %w", ErrBTF)
	}
	if len(strSec) > btfMaxNameOff+1 {
		return nil, fmt.Errorf("btf: string section is %d bytes, more than the %d the kernel accepts: %w", len(strSec), btfMaxNameOff+1, ErrBTF)
	}
	b := &BTF{types: []*BTFType{{Kind: KindVoid}}, strings: strSec}
	r := &btfReader{b: typeSec}
	for r.left() > 0 {
		id := TypeID(len(b.types))
		if id > btfMaxType {
			return nil, fmt.Errorf("btf: more than %d types: %w", btfMaxType, ErrBTF)
		}
		t, err := b.decodeType(r, id)
		if err != nil {
			return nil, fmt.Errorf("btf: type %d: %w", id, err)
		}
		b.types = append(b.types, t)
	}
	// Every reference in range first: the checks of kinds look through
	// one type at another's references.
	for _, t := range b.types[1:] {
		for _, r := range t.refs() {
			if int(r.id) >= len(b.types) {
				return nil, fmt.Errorf("btf: %s: %s refers to type %d, but there are only %d types: %w", t, r.what, r.id, len(b.types)-1, ErrBTF)
			}
		}
	}
	for _, t := range b.types[1:] {
		if err := b.checkRefs(t); err != nil {
			return nil, fmt.Errorf("btf: %s: %w", t, err)
		}
	}
	for _, t := range b.types[1:] {
		if err := b.checkChain(t); err != nil {
			return nil, fmt.Errorf("btf: %s: %w", t, err)
		}
	}
	if err := b.checkContainment(); err != nil {
		return nil, err
	}
	return b, nil
}

// String is the NUL-terminated string at off in the string section.
func (b *BTF) String(off uint32) (string, error) {
	if uint64(off) >= uint64(len(b.strings)) {
		return "", fmt.Errorf("string offset %d is outside the string section (%d bytes): %w", off, len(b.strings), ErrBTF)
	}
	for i := off; int(i) < len(b.strings); i++ {
		if b.strings[i] == 0 {
			return string(b.strings[off:i]), nil
		}
	}
	// Unreachable: ParseBTF checks the section ends with a NUL.
	return "", fmt.Errorf("string at offset %d is not NUL-terminated: %w", off, ErrBTF)
}

// vlenRecordSize is the size of each of the vlen records after a type of
// kind k, and extraSize the size of the single record some kinds have.
var (
	vlenRecordSize = [kindCount]int{KindStruct: 12, KindUnion: 12, KindEnum: 8, KindFuncProto: 8, KindDatasec: 12, KindEnum64: 12}
	extraSize      = [kindCount]int{KindInt: 4, KindArray: 12, KindVar: 4, KindDeclTag: 4}
)

// Kinds that use the kind flag: struct and union (bitfield members), enum
// and enum64 (signed), fwd (a union), decl_tag and type_tag (attributes).
var kindFlagAllowed = [kindCount]bool{KindStruct: true, KindUnion: true, KindEnum: true, KindEnum64: true,
	KindFwd: true, KindDeclTag: true, KindTypeTag: true}

func (b *BTF) decodeType(r *btfReader, id TypeID) (*BTFType, error) {
	if r.left() < btfTypeLen {
		return nil, fmt.Errorf("truncated: %d bytes left of the type section, want %d: %w", r.left(), btfTypeLen, ErrBTF)
	}
	nameOff, info, sizeOrType := r.u32(), r.u32(), r.u32()
	kind := BTFKind(info >> 24 & 0x7f)
	vlen := info & 0xffffff
	t := &BTFType{ID: id, Kind: kind, KindFlag: info>>31 == 1, nameOff: nameOff, vlen: vlen}
	if kind == KindVoid || kind >= kindCount {
		return nil, fmt.Errorf("unknown kind %d: %w", kind, ErrBTF)
	}
	var err error
	if t.Name, err = b.String(nameOff); err != nil {
		return nil, fmt.Errorf("name: %w", err)
	}
	if t.KindFlag && !kindFlagAllowed[kind] {
		return nil, fmt.Errorf("%s %q: kind flag set, which %s does not use: %w", kind, t.Name, kind, ErrBTF)
	}
	switch {
	case kind == KindFunc:
		if vlen >= btfFuncLinkages {
			return nil, fmt.Errorf("func %q: linkage %d, want 0 (static), 1 (global) or 2 (extern): %w", t.Name, vlen, ErrBTF)
		}
		t.Linkage = vlen
	case vlenRecordSize[kind] == 0 && vlen != 0:
		return nil, fmt.Errorf("%s %q: vlen %d, want 0: %w", kind, t.Name, vlen, ErrBTF)
	case vlen > btfMaxVlen:
		return nil, fmt.Errorf("%s %q: vlen %d, more than %d: %w", kind, t.Name, vlen, btfMaxVlen, ErrBTF)
	}
	need := extraSize[kind] + int(vlen)*vlenRecordSize[kind]
	if r.left() < need {
		return nil, fmt.Errorf("%s %q: truncated: %d bytes follow, want %d: %w", kind, t.Name, r.left(), need, ErrBTF)
	}
	switch kind {
	case KindInt, KindStruct, KindUnion, KindEnum, KindEnum64, KindDatasec, KindFloat:
		t.Size = sizeOrType
	default:
		t.Type = TypeID(sizeOrType)
	}
	switch kind {
	case KindInt:
		v := r.u32()
		t.IntEncoding, t.IntOffset, t.IntBits = uint8(v>>24&0x0f), uint8(v>>16), uint8(v)
		if v&0xf0000000 != 0 || v&0xff00 != 0 {
			return nil, fmt.Errorf("int %q: reserved bits set in %#08x: %w", t.Name, v, ErrBTF)
		}
		switch t.Size {
		case 1, 2, 4, 8, 16:
		default:
			return nil, fmt.Errorf("int %q: size %d, want 1, 2, 4, 8 or 16: %w", t.Name, t.Size, ErrBTF)
		}
		if t.IntBits == 0 || uint32(t.IntOffset)+uint32(t.IntBits) > t.Size*8 {
			return nil, fmt.Errorf("int %q: %d bits at bit %d do not fit in %d bytes: %w", t.Name, t.IntBits, t.IntOffset, t.Size, ErrBTF)
		}
		if e := t.IntEncoding; e != 0 && e != 1 && e != 2 && e != 4 {
			return nil, fmt.Errorf("int %q: encoding %d, want 0, 1 (signed), 2 (char) or 4 (bool): %w", t.Name, e, ErrBTF)
		}
	case KindArray:
		t.ElemType, t.IndexType, t.Nelems = TypeID(r.u32()), TypeID(r.u32()), r.u32()
	case KindStruct, KindUnion:
		t.Members = make([]BTFMember, vlen)
		for i := range t.Members {
			m := &t.Members[i]
			m.nameOff, m.Type = r.u32(), TypeID(r.u32())
			off := r.u32()
			if m.Name, err = b.String(m.nameOff); err != nil {
				return nil, fmt.Errorf("%s %q: member %d name: %w", kind, t.Name, i, err)
			}
			m.BitOffset = off
			if t.KindFlag {
				m.BitOffset, m.BitfieldSize = off&0xffffff, uint8(off>>24)
			}
		}
	case KindEnum, KindEnum64:
		t.Values = make([]BTFEnum, vlen)
		for i := range t.Values {
			v := &t.Values[i]
			v.nameOff = r.u32()
			switch {
			case kind == KindEnum64:
				lo, hi := r.u32(), r.u32()
				v.Value = uint64(hi)<<32 | uint64(lo)
			case t.KindFlag: // signed
				v.Value = uint64(int64(int32(r.u32())))
			default:
				v.Value = uint64(r.u32())
			}
			if v.Name, err = b.String(v.nameOff); err != nil {
				return nil, fmt.Errorf("%s %q: value %d name: %w", kind, t.Name, i, err)
			}
		}
	case KindFuncProto:
		t.Params = make([]BTFParam, vlen)
		for i := range t.Params {
			p := &t.Params[i]
			p.nameOff, p.Type = r.u32(), TypeID(r.u32())
			if p.Name, err = b.String(p.nameOff); err != nil {
				return nil, fmt.Errorf("func_proto: parameter %d name: %w", i, err)
			}
		}
	case KindVar:
		t.Linkage = r.u32()
		if t.Linkage >= btfFuncLinkages {
			return nil, fmt.Errorf("var %q: linkage %d, want 0 (static), 1 (global) or 2 (extern): %w", t.Name, t.Linkage, ErrBTF)
		}
	case KindDatasec:
		t.Vars = make([]BTFVarInfo, vlen)
		for i := range t.Vars {
			t.Vars[i] = BTFVarInfo{Type: TypeID(r.u32()), Offset: r.u32(), Size: r.u32()}
		}
	case KindDeclTag:
		t.ComponentIdx = int32(r.u32())
	}
	return t, nil
}

// refs lists the type IDs t refers to, each with what refers.
func (t *BTFType) refs() []struct {
	what string
	id   TypeID
} {
	type ref = struct {
		what string
		id   TypeID
	}
	var out []ref
	switch t.Kind {
	case KindPtr, KindTypedef, KindVolatile, KindConst, KindRestrict, KindTypeTag, KindVar, KindDeclTag,
		KindFunc, KindFuncProto:
		out = append(out, ref{"type", t.Type})
	case KindArray:
		out = append(out, ref{"element type", t.ElemType}, ref{"index type", t.IndexType})
	}
	for i, m := range t.Members {
		out = append(out, ref{fmt.Sprintf("member %d (%s)", i, m.Name), m.Type})
	}
	for i, p := range t.Params {
		out = append(out, ref{fmt.Sprintf("parameter %d", i), p.Type})
	}
	for i, v := range t.Vars {
		out = append(out, ref{fmt.Sprintf("variable %d", i), v.Type})
	}
	return out
}

// checkRefs checks, once every type is decoded and every reference is in
// range, that t's references are of a kind that makes sense there.
func (b *BTF) checkRefs(t *BTFType) error {
	kindOf := func(id TypeID) BTFKind { return b.types[id].Kind }
	switch t.Kind {
	case KindFunc:
		if kindOf(t.Type) != KindFuncProto {
			return fmt.Errorf("type %d is a %s, want a func_proto: %w", t.Type, kindOf(t.Type), ErrBTF)
		}
	case KindVar:
		if t.Type == 0 || kindOf(t.Type) == KindFunc || kindOf(t.Type) == KindFuncProto ||
			kindOf(t.Type) == KindDatasec || kindOf(t.Type) == KindVar {
			return fmt.Errorf("variable of type %d (%s): %w", t.Type, kindOf(t.Type), ErrBTF)
		}
	case KindDatasec:
		for i, v := range t.Vars {
			if kindOf(v.Type) != KindVar {
				return fmt.Errorf("variable %d: type %d is a %s, want a var: %w", i, v.Type, kindOf(v.Type), ErrBTF)
			}
		}
	case KindArray:
		if t.ElemType == 0 {
			return fmt.Errorf("array of void: %w", ErrBTF)
		}
	case KindDeclTag:
		target := b.types[t.Type]
		n := int32(-1)
		switch target.Kind {
		case KindStruct, KindUnion:
			n = int32(len(target.Members))
		case KindFunc:
			if proto := b.types[target.Type]; proto.Kind == KindFuncProto {
				n = int32(len(proto.Params))
			}
		case KindVar, KindTypedef:
		default:
			return fmt.Errorf("tags type %d, a %s: %w", t.Type, target.Kind, ErrBTF)
		}
		if t.ComponentIdx < -1 || t.ComponentIdx >= n && t.ComponentIdx != -1 {
			return fmt.Errorf("component index %d of %s: %w", t.ComponentIdx, target, ErrBTF)
		}
	}
	for i, m := range t.Members {
		if m.Type == 0 {
			return fmt.Errorf("member %d (%s) is void: %w", i, m.Name, ErrBTF)
		}
	}
	return nil
}

// checkChain checks that the typedefs, qualifiers, type tags and array
// elements from t reach another kind within btfMaxDepth steps: a longer
// chain is a loop (the kernel says "Loop detected").
func (b *BTF) checkChain(t *BTFType) error {
	if b.held(t.ID) == nil {
		return fmt.Errorf("more than %d typedefs, qualifiers and arrays in a row (a loop?): %w", btfMaxDepth, ErrBTF)
	}
	return nil
}

// contained is the struct or union a member of type id holds by value
// (through typedefs, qualifiers and arrays), or nil. ParseBTF has checked
// these chains end.
func (b *BTF) contained(id TypeID) *BTFType {
	if t := b.held(id); t != nil && (t.Kind == KindStruct || t.Kind == KindUnion) {
		return t
	}
	return nil
}

// held follows typedefs, qualifiers, type tags and array elements from id
// to the first type of another kind, or nil after btfMaxDepth steps.
func (b *BTF) held(id TypeID) *BTFType {
	for range btfMaxDepth {
		t := b.types[id]
		switch t.Kind {
		case KindTypedef, KindVolatile, KindConst, KindRestrict, KindTypeTag:
			id = t.Type
		case KindArray:
			id = t.ElemType
		default:
			return t
		}
	}
	return nil
}

// checkContainment checks that no struct or union contains itself by value,
// directly or through its members (the kernel says "Loop detected").
func (b *BTF) checkContainment() error {
	const (
		unseen = iota
		open
		done
	)
	state := make([]uint8, len(b.types))
	type frame struct {
		t    *BTFType
		next int
	}
	for _, root := range b.types[1:] {
		if (root.Kind != KindStruct && root.Kind != KindUnion) || state[root.ID] != unseen {
			continue
		}
		// Depth-first, with an explicit stack: nesting is not bounded
		// by anything but the number of types.
		stack := []frame{{t: root}}
		state[root.ID] = open
		for len(stack) > 0 {
			f := &stack[len(stack)-1]
			if f.next == len(f.t.Members) {
				state[f.t.ID] = done
				stack = stack[:len(stack)-1]
				continue
			}
			m := f.t.Members[f.next]
			f.next++
			inner := b.contained(m.Type)
			if inner == nil {
				continue
			}
			switch state[inner.ID] {
			case open:
				return fmt.Errorf("btf: %s: contains itself through member %s of %s: %w", inner, m.Name, f.t, ErrBTF)
			case unseen:
				state[inner.ID] = open
				stack = append(stack, frame{t: inner})
			}
		}
	}
	return nil
}

// marshal encodes b as BPF_BTF_LOAD wants it: a 24-byte header, the types,
// the strings.
func (b *BTF) marshal() []byte {
	types := make([]byte, 0, 64*len(b.types))
	le := binary.LittleEndian
	u32 := func(v uint32) { types = le.AppendUint32(types, v) }
	for _, t := range b.types[1:] {
		vlen := t.vlen
		switch t.Kind {
		case KindStruct, KindUnion:
			vlen = uint32(len(t.Members))
		case KindEnum, KindEnum64:
			vlen = uint32(len(t.Values))
		case KindFuncProto:
			vlen = uint32(len(t.Params))
		case KindDatasec:
			vlen = uint32(len(t.Vars))
		case KindFunc:
			vlen = t.Linkage
		}
		info := uint32(t.Kind)<<24 | vlen
		if t.KindFlag {
			info |= 1 << 31
		}
		u32(t.nameOff)
		u32(info)
		switch t.Kind {
		case KindInt, KindStruct, KindUnion, KindEnum, KindEnum64, KindDatasec, KindFloat:
			u32(t.Size)
		default:
			u32(uint32(t.Type))
		}
		switch t.Kind {
		case KindInt:
			u32(uint32(t.IntEncoding)<<24 | uint32(t.IntOffset)<<16 | uint32(t.IntBits))
		case KindArray:
			u32(uint32(t.ElemType))
			u32(uint32(t.IndexType))
			u32(t.Nelems)
		case KindStruct, KindUnion:
			for _, m := range t.Members {
				u32(m.nameOff)
				u32(uint32(m.Type))
				if t.KindFlag {
					u32(uint32(m.BitfieldSize)<<24 | m.BitOffset)
				} else {
					u32(m.BitOffset)
				}
			}
		case KindEnum:
			for _, v := range t.Values {
				u32(v.nameOff)
				u32(uint32(v.Value))
			}
		case KindEnum64:
			for _, v := range t.Values {
				u32(v.nameOff)
				u32(uint32(v.Value))
				u32(uint32(v.Value >> 32))
			}
		case KindFuncProto:
			for _, p := range t.Params {
				u32(p.nameOff)
				u32(uint32(p.Type))
			}
		case KindVar:
			u32(t.Linkage)
		case KindDatasec:
			for _, v := range t.Vars {
				u32(uint32(v.Type))
				u32(v.Offset)
				u32(v.Size)
			}
		case KindDeclTag:
			u32(uint32(t.ComponentIdx))
		}
	}
	out := make([]byte, btfHeaderLen, btfHeaderLen+len(types)+len(b.strings))
	le.PutUint16(out[0:], btfMagic)
	out[2] = btfVersion
	le.PutUint32(out[4:], btfHeaderLen)
	le.PutUint32(out[8:], 0)
	le.PutUint32(out[12:], uint32(len(types)))
	le.PutUint32(out[16:], uint32(len(types)))
	le.PutUint32(out[20:], uint32(len(b.strings)))
	out = append(out, types...)
	return append(out, b.strings...)
}

// NumTypes is the number of types, void not counted; IDs run from 1 to
// NumTypes.
func (b *BTF) NumTypes() int { return len(b.types) - 1 }

// Types lists the types in ID order, void left out. They are b's own: do not
// modify them.
func (b *BTF) Types() []*BTFType { return append([]*BTFType(nil), b.types[1:]...) }

// TypeByID returns type id (0 is void).
func (b *BTF) TypeByID(id TypeID) (*BTFType, error) {
	if int(id) >= len(b.types) {
		return nil, fmt.Errorf("btf: no type %d (there are %d)", id, len(b.types)-1)
	}
	return b.types[id], nil
}

// ErrTypeNotFound: no type of that kind and name in the BTF.
var ErrTypeNotFound = errors.New("type not found")

// TypeByName returns the type of that kind and name.
func (b *BTF) TypeByName(kind BTFKind, name string) (*BTFType, error) {
	for _, t := range b.types[1:] {
		if t.Kind == kind && t.Name == name {
			return t, nil
		}
	}
	return nil, fmt.Errorf("btf: %s %q: %w", kind, name, ErrTypeNotFound)
}

// skipQualifiers follows typedefs, qualifiers and type tags to the type
// they name.
func (b *BTF) skipQualifiers(id TypeID) (*BTFType, error) {
	for range btfMaxDepth {
		t, err := b.TypeByID(id)
		if err != nil {
			return nil, err
		}
		switch t.Kind {
		case KindTypedef, KindVolatile, KindConst, KindRestrict, KindTypeTag:
			id = t.Type
		default:
			return t, nil
		}
	}
	return nil, fmt.Errorf("btf: type %d: more than %d typedefs and qualifiers (a loop?): %w", id, btfMaxDepth, ErrBTF)
}

// Sizeof is the size in bytes of a value of type id.
func (b *BTF) Sizeof(id TypeID) (uint32, error) {
	n := uint64(1)
	for range btfMaxDepth {
		t, err := b.TypeByID(id)
		if err != nil {
			return 0, err
		}
		switch t.Kind {
		case KindInt, KindStruct, KindUnion, KindEnum, KindEnum64, KindDatasec, KindFloat:
			return sizeTimes(n, uint64(t.Size), t)
		case KindPtr:
			return sizeTimes(n, btfPointerSize, t)
		case KindTypedef, KindVolatile, KindConst, KindRestrict, KindTypeTag, KindVar:
			id = t.Type
		case KindArray:
			n *= uint64(t.Nelems)
			if n > 1<<32 {
				return 0, fmt.Errorf("btf: %s: size overflows: %w", t, ErrBTF)
			}
			id = t.ElemType
		default:
			return 0, fmt.Errorf("btf: %s has no size", t)
		}
	}
	return 0, fmt.Errorf("btf: type %d: more than %d levels to its size (a loop?): %w", id, btfMaxDepth, ErrBTF)
}

func sizeTimes(n, size uint64, t *BTFType) (uint32, error) {
	if n*size >= 1<<32 {
		return 0, fmt.Errorf("btf: %s: size overflows: %w", t, ErrBTF)
	}
	return uint32(n * size), nil
}

// StructLayout is the size and the members of a struct or union, as the
// object's compiler laid it out.
type StructLayout struct {
	Name    string
	Size    uint32
	Members []MemberLayout
}

// MemberLayout is where a member lives. Members of anonymous struct and
// union members are listed in their place, as C lets them be named.
type MemberLayout struct {
	Name   string
	Offset uint32 // bytes from the start of the struct
	Size   uint32 // bytes; for a bitfield, of its declared type
	// BitOffset and BitfieldSize locate a bitfield (BitfieldSize 0 for
	// other members; BitOffset is then Offset*8).
	BitOffset    uint32
	BitfieldSize uint8
}

// Member returns the member called name.
func (l *StructLayout) Member(name string) (MemberLayout, bool) {
	for _, m := range l.Members {
		if m.Name == name {
			return m, true
		}
	}
	return MemberLayout{}, false
}

// StructLayout returns the layout of struct name (or union name, or a
// typedef of either).
func (b *BTF) StructLayout(name string) (*StructLayout, error) {
	var t *BTFType
	for _, c := range b.types[1:] {
		if c.Name != name {
			continue
		}
		if c.Kind == KindStruct || c.Kind == KindUnion {
			t = c
			break
		}
		if c.Kind == KindTypedef {
			if u, err := b.skipQualifiers(c.ID); err == nil && (u.Kind == KindStruct || u.Kind == KindUnion) {
				t = u
			}
		}
	}
	if t == nil {
		return nil, fmt.Errorf("btf: struct %q: %w", name, ErrTypeNotFound)
	}
	l := &StructLayout{Name: name, Size: t.Size}
	budget := btfMaxLayoutMembers
	if err := b.appendMembers(l, t, 0, 0, &budget); err != nil {
		return nil, fmt.Errorf("btf: struct %q: %w", name, err)
	}
	return l, nil
}

// btfMaxLayoutMembers bounds the members StructLayout visits, anonymous
// ones included: anonymous members of anonymous members can multiply.
const btfMaxLayoutMembers = 1 << 16

func (b *BTF) appendMembers(l *StructLayout, t *BTFType, base uint32, depth int, budget *int) error {
	if depth > btfMaxDepth {
		return fmt.Errorf("anonymous members nested more than %d deep: %w", btfMaxDepth, ErrBTF)
	}
	for _, m := range t.Members {
		if *budget--; *budget < 0 {
			return fmt.Errorf("more than %d members, counting those of anonymous members: %w", btfMaxLayoutMembers, ErrBTF)
		}
		bitOff := base + m.BitOffset
		if m.Name == "" {
			if inner, err := b.skipQualifiers(m.Type); err == nil && (inner.Kind == KindStruct || inner.Kind == KindUnion) {
				if bitOff%8 != 0 {
					return fmt.Errorf("anonymous member at bit %d: %w", bitOff, ErrBTF)
				}
				if err := b.appendMembers(l, inner, bitOff, depth+1, budget); err != nil {
					return err
				}
				continue
			}
		}
		size, err := b.Sizeof(m.Type)
		if err != nil {
			return fmt.Errorf("member %s: %w", m.Name, err)
		}
		l.Members = append(l.Members, MemberLayout{
			Name: m.Name, Offset: bitOff / 8, Size: size, BitOffset: bitOff, BitfieldSize: m.BitfieldSize,
		})
	}
	return nil
}
