package ebpf

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The offsets and sizes of include/uapi/linux/bpf.h (checked against the
// kernel headers with offsetof).
func TestAttrLayout(t *testing.T) {
	tests := []struct {
		name      string
		got, want uintptr
	}{
		{"mapCreateAttr", unsafe.Sizeof(mapCreateAttr{}), 72},
		{"mapCreateAttr.MapExtra", unsafe.Offsetof(mapCreateAttr{}.MapExtra), 64},
		{"mapElemAttr", unsafe.Sizeof(mapElemAttr{}), 32},
		{"progLoadAttr", unsafe.Sizeof(progLoadAttr{}), 144},
		{"progLoadAttr.FDArray", unsafe.Offsetof(progLoadAttr{}.FDArray), 120},
		{"progLoadAttr.CoreReloRecSize", unsafe.Offsetof(progLoadAttr{}.CoreReloRecSize), 136},
		{"progLoadAttr.LogTrueSize", unsafe.Offsetof(progLoadAttr{}.LogTrueSize), 140},
		{"objAttr.FileFlags", unsafe.Offsetof(objAttr{}.FileFlags), 12},
		{"progTestRunAttr.CtxIn", unsafe.Offsetof(progTestRunAttr{}.CtxIn), 48},
		{"progTestRunAttr.BatchSize", unsafe.Offsetof(progTestRunAttr{}.BatchSize), 72},
		{"getFDByIDAttr", unsafe.Sizeof(getFDByIDAttr{}), 12},
		{"objInfoAttr", unsafe.Sizeof(objInfoAttr{}), 16},
		{"mapInfo", unsafe.Sizeof(mapInfo{}), 88},
		{"mapInfo.NetnsDev", unsafe.Offsetof(mapInfo{}.NetnsDev), 48},
		{"progInfo", unsafe.Sizeof(progInfo{}), 232},
		{"progInfo.MapIDs", unsafe.Offsetof(progInfo{}.MapIDs), 56},
		{"progInfo.Name", unsafe.Offsetof(progInfo{}.Name), 64},
		{"progInfo.NetnsDev", unsafe.Offsetof(progInfo{}.NetnsDev), 88},
		{"progInfo.RunTimeNs", unsafe.Offsetof(progInfo{}.RunTimeNs), 192},
		{"progInfo.AttachBTFID", unsafe.Offsetof(progInfo{}.AttachBTFID), 224},
		{"progInfo.BTFID", unsafe.Offsetof(progInfo{}.BTFID), 128},
		{"progInfo.NrLineInfo", unsafe.Offsetof(progInfo{}.NrLineInfo), 148},
		{"progInfo.VerifiedInsns", unsafe.Offsetof(progInfo{}.VerifiedInsns), 216},
		{"progLoadAttr.ProgBTFFD", unsafe.Offsetof(progLoadAttr{}.ProgBTFFD), 72},
		{"progLoadAttr.FuncInfo", unsafe.Offsetof(progLoadAttr{}.FuncInfo), 80},
		{"progLoadAttr.LineInfo", unsafe.Offsetof(progLoadAttr{}.LineInfo), 96},
		{"btfLoadAttr", unsafe.Sizeof(btfLoadAttr{}), 40},
		{"btfLoadAttr.BTFLogTrueSize", unsafe.Offsetof(btfLoadAttr{}.BTFLogTrueSize), 28},
		{"btfLoadAttr.BTFTokenFD", unsafe.Offsetof(btfLoadAttr{}.BTFTokenFD), 36},
		{"btfInfo", unsafe.Sizeof(btfInfo{}), 32},
		{"btfInfo.ID", unsafe.Offsetof(btfInfo{}.ID), 12},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %d, want %d", tt.name, tt.got, tt.want)
		}
	}
}

func TestInstructionEncoding(t *testing.T) {
	insns := append(LoadMapFD(R1, 7), Mov64Imm(R0, -2), LoadMem32(R2, R1, 4), Call(1), Exit())
	got := encodeInstructions(insns)
	want := []byte{
		0x18, 0x11, 0, 0, 7, 0, 0, 0, // ld_imm64 r1 (src = BPF_PSEUDO_MAP_FD), imm 7
		0, 0, 0, 0, 0, 0, 0, 0, // second half
		0xb7, 0x00, 0, 0, 0xfe, 0xff, 0xff, 0xff, // r0 = -2
		0x61, 0x12, 4, 0, 0, 0, 0, 0, // r2 = *(u32 *)(r1 + 4)
		0x85, 0, 0, 0, 1, 0, 0, 0, // call 1
		0x95, 0, 0, 0, 0, 0, 0, 0, // exit
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoding\n got %x\nwant %x", got, want)
	}
	back, err := decodeInstructions(got)
	if err != nil {
		t.Fatal(err)
	}
	for i := range insns {
		if back[i] != insns[i] {
			t.Errorf("instruction %d: decoded %v, want %v", i, back[i], insns[i])
		}
	}
	if in := insns[3]; in.Dst() != R2 || in.Src() != R1 || in.Offset != 4 {
		t.Errorf("registers of %v", in)
	}
	if in := Mov64Imm(R3, 0).WithSrc(PseudoMapFD); in.Dst() != R3 || in.Src() != 1 {
		t.Errorf("WithSrc: %v", in)
	}
	if _, err := decodeInstructions(make([]byte, 9)); err == nil {
		t.Error("9 bytes of code decoded")
	}
	if unsafe.Sizeof(Instruction{}) != InstructionSize {
		t.Errorf("Instruction is %d bytes", unsafe.Sizeof(Instruction{}))
	}
}

func TestParseCPUList(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
	}{
		{"0", 1}, {"0-1", 2}, {"0-1\n", 2}, {"0-3,5,7-8", 7}, {"0,2-3", 3}, {"0-127", 128},
	} {
		got, err := parseCPUList(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseCPUList(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "x", "1-", "3-1", "0,,1", "-1"} {
		if n, err := parseCPUList(bad); err == nil {
			t.Errorf("parseCPUList(%q) = %d, want an error", bad, n)
		}
	}
	n, err := PossibleCPUs()
	if err != nil || n < 1 {
		t.Errorf("PossibleCPUs() = %d, %v", n, err)
	}
}

func TestObjName(t *testing.T) {
	long, odd := objName("a_very_long_map_name"), objName("xdp/foo-bar")
	if got := cName(long[:]); got != "a_very_long_map" {
		t.Errorf("objName truncates to %q", got)
	}
	if got := cName(odd[:]); got != "xdp_foo_bar" {
		t.Errorf("objName sanitizes to %q", got)
	}
}

func TestSentinelsMatchErrno(t *testing.T) {
	for _, tt := range []struct {
		err   error
		errno unix.Errno
	}{
		{ErrKeyNotExist, unix.ENOENT}, {ErrKeyExist, unix.EEXIST}, {ErrNotPermitted, unix.EPERM},
		{ErrNotPermitted, unix.EACCES}, {ErrNotSupported, unix.EOPNOTSUPP},
	} {
		wrapped := mapErrno(tt.errno)
		if !errors.Is(wrapped, tt.err) || !errors.Is(wrapped, tt.errno) {
			t.Errorf("mapErrno(%v) = %v: not both %v and the errno", tt.errno, wrapped, tt.err)
		}
	}
	if errors.Is(ErrKeyNotExist, unix.EEXIST) {
		t.Error("ErrKeyNotExist matches EEXIST")
	}
	if !strings.Contains(ErrNotPermitted.Error(), "CAP_BPF+CAP_NET_ADMIN") {
		t.Errorf("ErrNotPermitted says %q", ErrNotPermitted)
	}
}

func TestVerifierErrorSummary(t *testing.T) {
	e := &VerifierError{
		Program: "p",
		Errno:   unix.EACCES,
		Log:     "func#0 @0\n0: R1=ctx() R10=fp0\n0: (95) exit\nR0 !read_ok\nprocessed 1 insns (limit 1000000) max_states_per_insn 0\n",
	}
	msg := e.Error()
	for _, want := range []string{"verifier rejected program p", "(95) exit | R0 !read_ok", "full log: 5 lines"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "processed") {
		t.Errorf("%q keeps the statistics line", msg)
	}
	if !errors.Is(e, unix.EACCES) {
		t.Error("VerifierError does not unwrap to its errno")
	}
}
