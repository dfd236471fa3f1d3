package ebpf

import (
	"encoding/binary"
	"fmt"
)

// InstructionSize is the size of one raw BPF instruction (struct bpf_insn);
// ld_imm64 takes two.
const InstructionSize = 8

// Opcodes the loader and tests need.
const (
	OpLoadImm64 uint8 = 0x18 // BPF_LD | BPF_DW | BPF_IMM: first half of ld_imm64
	OpMov64Imm  uint8 = 0xb7 // BPF_ALU64 | BPF_MOV | BPF_K
	OpCall      uint8 = 0x85 // BPF_JMP | BPF_CALL
	OpExit      uint8 = 0x95 // BPF_JMP | BPF_EXIT
	OpLdxW      uint8 = 0x61 // BPF_LDX | BPF_W | BPF_MEM
)

// Source register values with a special meaning.
const (
	PseudoMapFD uint8 = 1 // BPF_PSEUDO_MAP_FD on ld_imm64: imm is a map fd
	PseudoCall  uint8 = 1 // BPF_PSEUDO_CALL on call: a bpf-to-bpf call
	PseudoFunc  uint8 = 4 // BPF_PSEUDO_FUNC on ld_imm64: imm is a function's offset (a callback)
)

// Register is a BPF register, R0 to R10.
type Register uint8

const (
	R0 Register = iota
	R1
	R2
	R3
	R4
	R5
	R6
	R7
	R8
	R9
	R10
)

// Instruction is one raw, 8-byte BPF instruction (struct bpf_insn).
type Instruction struct {
	OpCode   uint8
	Regs     uint8 // destination register in the low nibble, source in the high nibble
	Offset   int16
	Constant int32
}

func (i Instruction) Dst() Register { return Register(i.Regs & 0x0f) }
func (i Instruction) Src() Register { return Register(i.Regs >> 4) }

// WithSrc is i with its source register replaced.
func (i Instruction) WithSrc(src uint8) Instruction {
	i.Regs = i.Regs&0x0f | src<<4
	return i
}

func (i Instruction) String() string {
	return fmt.Sprintf("op %#02x dst r%d src r%d off %d imm %d", i.OpCode, i.Dst(), i.Src(), i.Offset, i.Constant)
}

func regs(dst, src Register) uint8 { return uint8(dst)&0x0f | uint8(src)<<4 }

// Mov64Imm is "dst = imm".
func Mov64Imm(dst Register, imm int32) Instruction {
	return Instruction{OpCode: OpMov64Imm, Regs: regs(dst, 0), Constant: imm}
}

// LoadMem32 is "dst = *(u32 *)(src + off)".
func LoadMem32(dst, src Register, off int16) Instruction {
	return Instruction{OpCode: OpLdxW, Regs: regs(dst, src), Offset: off}
}

// LoadMapFD is the two-instruction ld_imm64 "dst = map fd".
func LoadMapFD(dst Register, fd int) []Instruction {
	return []Instruction{
		{OpCode: OpLoadImm64, Regs: regs(dst, Register(PseudoMapFD)), Constant: int32(fd)},
		{},
	}
}

// Call calls helper fn (enum bpf_func_id).
func Call(fn int32) Instruction { return Instruction{OpCode: OpCall, Constant: fn} }

// Exit returns r0.
func Exit() Instruction { return Instruction{OpCode: OpExit} }

// encodeInstructions is the kernel's byte layout of insns (little-endian host).
func encodeInstructions(insns []Instruction) []byte {
	out := make([]byte, 0, len(insns)*InstructionSize)
	for _, in := range insns {
		out = append(out, in.OpCode, in.Regs)
		out = binary.LittleEndian.AppendUint16(out, uint16(in.Offset))
		out = binary.LittleEndian.AppendUint32(out, uint32(in.Constant))
	}
	return out
}

// decodeInstructions parses raw little-endian BPF code.
func decodeInstructions(b []byte) ([]Instruction, error) {
	if len(b)%InstructionSize != 0 {
		return nil, fmt.Errorf("code is %d bytes, not a multiple of %d", len(b), InstructionSize)
	}
	out := make([]Instruction, len(b)/InstructionSize)
	for i := range out {
		r := b[i*InstructionSize:]
		out[i] = Instruction{
			OpCode:   r[0],
			Regs:     r[1],
			Offset:   int16(binary.LittleEndian.Uint16(r[2:])),
			Constant: int32(binary.LittleEndian.Uint32(r[4:])),
		}
	}
	return out, nil
}
