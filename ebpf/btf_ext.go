package ebpf

import (
	"encoding/binary"
	"fmt"
	"sort"
)

// .BTF.ext: per code section, which BTF func starts at which instruction
// (func_info) and which source line each run of instructions comes from
// (line_info). Offsets in the section are in bytes from the start of the ELF
// section; ParseBTFExt turns them into instruction indexes.
//
// The third part clang may write, CO-RE relocations (core_relo, from
// __builtin_preserve_access_index), is refused: applying them needs the
// kernel's BTF, and ignoring them would load wrong field offsets.

const (
	btfExtMagic        = 0xeb9f
	btfExtHeaderLen    = 24 // up to line_info_len
	btfExtHeaderCORE   = 32 // with core_relo_off and core_relo_len
	funcInfoRecordSize = 8  // struct bpf_func_info
	lineInfoRecordSize = 16 // struct bpf_line_info
)

// FuncInfo says that the function of BTF type TypeID (a func) starts at
// instruction InsnOff (struct bpf_func_info).
type FuncInfo struct {
	InsnOff uint32
	TypeID  TypeID
}

// LineInfo says that the instructions from InsnOff on come from line Line,
// column Column of FileName, whose text is Source (struct bpf_line_info).
type LineInfo struct {
	InsnOff     uint32
	FileName    string
	Source      string
	Line        uint32
	Column      uint32
	fileNameOff uint32
	lineOff     uint32
}

// BTFExt is a parsed .BTF.ext: func and line records by ELF section name,
// each list sorted by instruction.
type BTFExt struct {
	FuncInfo map[string][]FuncInfo
	LineInfo map[string][]LineInfo
}

// ParseBTFExt decodes and checks a .BTF.ext section against the BTF it
// refers to (section names, func types and source lines are in it). Every
// error wraps ErrBTF.
func ParseBTFExt(raw []byte, b *BTF) (*BTFExt, error) {
	le := binary.LittleEndian
	if len(raw) < btfExtHeaderLen {
		return nil, fmt.Errorf("btf.ext: header: %d bytes, want at least %d: %w", len(raw), btfExtHeaderLen, ErrBTF)
	}
	if m := le.Uint16(raw); m != btfExtMagic {
		return nil, fmt.Errorf("btf.ext: bad magic %#04x, want %#04x: %w", m, btfExtMagic, ErrBTF)
	}
	if raw[2] != btfVersion || raw[3] != 0 {
		return nil, fmt.Errorf("btf.ext: version %d flags %#x, want version %d flags 0: %w", raw[2], raw[3], btfVersion, ErrBTF)
	}
	hdrLen := le.Uint32(raw[4:])
	if hdrLen < btfExtHeaderLen || uint64(hdrLen) > uint64(len(raw)) {
		return nil, fmt.Errorf("btf.ext: header length %d, want %d to %d (the data): %w", hdrLen, btfExtHeaderLen, len(raw), ErrBTF)
	}
	body := raw[hdrLen:]
	sec := func(name string, off, n uint32) ([]byte, error) {
		if uint64(off)+uint64(n) > uint64(len(body)) {
			return nil, fmt.Errorf("btf.ext: %s at %d, %d bytes, ends past the data (%d bytes after the header): %w",
				name, off, n, len(body), ErrBTF)
		}
		return body[off : off+n], nil
	}
	if hdrLen >= btfExtHeaderCORE {
		if n := le.Uint32(raw[28:]); n != 0 {
			return nil, fmt.Errorf("btf.ext: %d bytes of CO-RE relocations: not supported (build without __builtin_preserve_access_index / BPF_CORE_READ)", n)
		}
	}
	funcSec, err := sec("func_info", le.Uint32(raw[8:]), le.Uint32(raw[12:]))
	if err != nil {
		return nil, err
	}
	lineSec, err := sec("line_info", le.Uint32(raw[16:]), le.Uint32(raw[20:]))
	if err != nil {
		return nil, err
	}
	ext := &BTFExt{FuncInfo: map[string][]FuncInfo{}, LineInfo: map[string][]LineInfo{}}
	err = walkExtInfo("func_info", funcSec, funcInfoRecordSize, b, func(secName string, i int, rec []byte) error {
		fi := FuncInfo{TypeID: TypeID(le.Uint32(rec[4:]))}
		var err error
		if fi.InsnOff, err = extInsnOff(rec); err != nil {
			return err
		}
		if t, err := b.TypeByID(fi.TypeID); err != nil || t.Kind != KindFunc {
			what := "missing"
			if err == nil {
				what = "a " + t.Kind.String()
			}
			return fmt.Errorf("type %d is %s, want a func: %w", fi.TypeID, what, ErrBTF)
		}
		if prev := ext.FuncInfo[secName]; len(prev) > 0 && prev[len(prev)-1].InsnOff >= fi.InsnOff {
			return fmt.Errorf("instruction %d after instruction %d: records must be in increasing order: %w",
				fi.InsnOff, prev[len(prev)-1].InsnOff, ErrBTF)
		}
		ext.FuncInfo[secName] = append(ext.FuncInfo[secName], fi)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = walkExtInfo("line_info", lineSec, lineInfoRecordSize, b, func(secName string, i int, rec []byte) error {
		li := LineInfo{fileNameOff: le.Uint32(rec[4:]), lineOff: le.Uint32(rec[8:])}
		lineCol := le.Uint32(rec[12:])
		li.Line, li.Column = lineCol>>10, lineCol&0x3ff
		var err error
		if li.InsnOff, err = extInsnOff(rec); err != nil {
			return err
		}
		if li.FileName, err = b.String(li.fileNameOff); err != nil {
			return fmt.Errorf("file name: %w", err)
		}
		if li.Source, err = b.String(li.lineOff); err != nil {
			return fmt.Errorf("source line: %w", err)
		}
		if prev := ext.LineInfo[secName]; len(prev) > 0 && prev[len(prev)-1].InsnOff >= li.InsnOff {
			return fmt.Errorf("instruction %d after instruction %d: records must be in increasing order: %w",
				li.InsnOff, prev[len(prev)-1].InsnOff, ErrBTF)
		}
		ext.LineInfo[secName] = append(ext.LineInfo[secName], li)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return ext, nil
}

// extInsnOff is the instruction index of a record's byte offset.
func extInsnOff(rec []byte) (uint32, error) {
	off := binary.LittleEndian.Uint32(rec)
	if off%InstructionSize != 0 {
		return 0, fmt.Errorf("instruction offset %d is not a multiple of %d bytes: %w", off, InstructionSize, ErrBTF)
	}
	return off / InstructionSize, nil
}

// walkExtInfo calls fn for every record of a func_info or line_info part:
// a record size, then per ELF section its name, a count and the records.
func walkExtInfo(part string, data []byte, wantSize uint32, b *BTF, fn func(sec string, i int, rec []byte) error) error {
	if len(data) == 0 {
		return nil
	}
	le := binary.LittleEndian
	if len(data) < 4 {
		return fmt.Errorf("btf.ext: %s: %d bytes, too short for a record size: %w", part, len(data), ErrBTF)
	}
	if size := le.Uint32(data); size != wantSize {
		return fmt.Errorf("btf.ext: %s: record size %d, want %d: %w", part, size, wantSize, ErrBTF)
	}
	seen := map[string]bool{}
	for off := 4; off < len(data); {
		if len(data)-off < 8 {
			return fmt.Errorf("btf.ext: %s: truncated section header at byte %d: %w", part, off, ErrBTF)
		}
		nameOff, n := le.Uint32(data[off:]), le.Uint32(data[off+4:])
		off += 8
		name, err := b.String(nameOff)
		if err != nil {
			return fmt.Errorf("btf.ext: %s: section name: %w", part, err)
		}
		if name == "" || n == 0 {
			return fmt.Errorf("btf.ext: %s: section %q with %d records: %w", part, name, n, ErrBTF)
		}
		if seen[name] {
			return fmt.Errorf("btf.ext: %s: section %s listed twice: %w", part, name, ErrBTF)
		}
		seen[name] = true
		if uint64(n)*uint64(wantSize) > uint64(len(data)-off) {
			return fmt.Errorf("btf.ext: %s: section %s: %d records of %d bytes, only %d bytes left: %w",
				part, name, n, wantSize, len(data)-off, ErrBTF)
		}
		for i := range int(n) {
			if err := fn(name, i, data[off:off+int(wantSize)]); err != nil {
				return fmt.Errorf("btf.ext: %s: section %s: record %d: %w", part, name, i, err)
			}
			off += int(wantSize)
		}
	}
	return nil
}

// insnRecord is a pointer to a record about an instruction: *FuncInfo or
// *LineInfo.
type insnRecord[R any] interface {
	*R
	insnOff() *uint32
}

func (r *FuncInfo) insnOff() *uint32 { return &r.InsnOff }
func (r *LineInfo) insnOff() *uint32 { return &r.InsnOff }

// recordsIn is the part of recs (sorted by instruction) for instructions
// [start, end), moved by delta (the position of start in the program as
// loaded, minus start).
func recordsIn[R any, P insnRecord[R]](recs []R, start, end uint32, delta int) []R {
	lo := sort.Search(len(recs), func(i int) bool { return *P(&recs[i]).insnOff() >= start })
	var out []R
	for _, r := range recs[lo:] {
		off := P(&r).insnOff()
		if *off >= end {
			break
		}
		*off = uint32(int(*off) + delta)
		out = append(out, r)
	}
	return out
}

// marshalFuncInfo is recs as BPF_PROG_LOAD's func_info array.
func marshalFuncInfo(recs []FuncInfo) []byte {
	out := make([]byte, 0, len(recs)*funcInfoRecordSize)
	for _, r := range recs {
		out = binary.LittleEndian.AppendUint32(out, r.InsnOff)
		out = binary.LittleEndian.AppendUint32(out, uint32(r.TypeID))
	}
	return out
}

// marshalLineInfo is recs as BPF_PROG_LOAD's line_info array.
func marshalLineInfo(recs []LineInfo) []byte {
	out := make([]byte, 0, len(recs)*lineInfoRecordSize)
	for _, r := range recs {
		out = binary.LittleEndian.AppendUint32(out, r.InsnOff)
		out = binary.LittleEndian.AppendUint32(out, r.fileNameOff)
		out = binary.LittleEndian.AppendUint32(out, r.lineOff)
		out = binary.LittleEndian.AppendUint32(out, r.Line<<10|r.Column&0x3ff)
	}
	return out
}
