package ebpf

import (
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// The tests of this file load BTF and programs with BTF into the kernel
// (root).

func TestLoadObjectBTF(t *testing.T) {
	requireRoot(t)
	spec, err := LoadCollectionSpec(xlbObject(t))
	if err != nil {
		t.Fatal(err)
	}
	h, err := LoadBTF(spec.BTF)
	if err != nil {
		t.Fatal(err)
	}
	id, err := h.ID()
	if err != nil || id == 0 {
		t.Errorf("BTF id %d, %v", id, err)
	}
	if err := h.Close(); err != nil || h.Close() != nil || h.FD() != -1 {
		t.Errorf("close: %v", err)
	}
}

// TestClangBTFNeedsFixups loads the .BTF of the real object as clang 14
// wrote it: the kernel refuses it, which is why the loader fills in each
// DATASEC's size and its variables' offsets.
func TestClangBTFNeedsFixups(t *testing.T) {
	requireRoot(t)
	f, _, b := objectBTF(t, xlbObject(t))
	rejected := func(want string) {
		t.Helper()
		h, err := LoadBTF(b)
		if err == nil {
			h.Close()
			t.Fatalf("the kernel took clang's BTF (%s expected): clang now fills in datasecs?", want)
		}
		var be *BTFError
		if !errors.As(err, &be) || !errors.Is(err, unix.EINVAL) || !strings.Contains(be.Log, want) ||
			!strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "btf: kernel rejected the object's BTF") {
			t.Fatalf("error %v (%T), want a *BTFError saying %q", err, err, want)
		}
	}
	rejected("size == 0")
	// With the sizes alone, every variable is still at offset 0.
	for _, ty := range b.types {
		if ty.Kind == KindDatasec {
			ty.Size = uint32(f.Section(ty.Name).Size)
		}
	}
	rejected("Invalid offset")
}

// TestXLBProgramsCarryBTF: every program of the real object is loaded with
// the object's BTF and its func and line info.
func TestXLBProgramsCarryBTF(t *testing.T) {
	coll := loadXLB(t, nil)
	spec, err := LoadCollectionSpec(xlbObject(t))
	if err != nil {
		t.Fatal(err)
	}
	var btfID uint32
	for name, p := range coll.Programs {
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		ps := spec.Programs[name]
		// The verifier drops the line records of the dead code it
		// removes, so it may keep fewer than it was given.
		if info.BTFID == 0 || info.FuncInfoCount != uint32(len(ps.FuncInfo)) ||
			info.LineInfoCount == 0 || info.LineInfoCount > uint32(len(ps.LineInfo)) {
			t.Errorf("program %s: BTF id %d, %d func_info (want %d), %d line_info (want 1 to %d)",
				name, info.BTFID, info.FuncInfoCount, len(ps.FuncInfo), info.LineInfoCount, len(ps.LineInfo))
		}
		if btfID != 0 && info.BTFID != btfID {
			t.Errorf("program %s: BTF id %d, another program's is %d: one BTF load per collection", name, info.BTFID, btfID)
		}
		btfID = info.BTFID
	}
}

// TestVerifierLogSourceLines: with line_info, the log of a rejected program
// names the source line, and the error's summary quotes it.
func TestVerifierLogSourceLines(t *testing.T) {
	requireRoot(t)
	spec, err := LoadCollectionSpec(builtObject(t, "testdata/broken.c", "testdata/broken.o"))
	if err != nil {
		t.Fatal(err)
	}
	ps := spec.Programs["broken_xdp"]
	const source = "first_word = *(__u32 *)data; /* deliberately unchecked */"
	_, err = LoadProgram(ps)
	var ve *VerifierError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v, want *VerifierError", err)
	}
	if !strings.Contains(ve.Log, "; "+source+" @ broken.c:") || !strings.Contains(ve.Log, "invalid access to packet") {
		t.Errorf("log lacks the source line:\n%s", ve.Log)
	}
	if !strings.Contains(ve.Error(), source) || !strings.Contains(ve.Error(), "invalid access to packet") {
		t.Errorf("summary lacks the source line or the reason: %s", ve.Error())
	}
	t.Log(ve.Error())

	bare := *ps
	bare.BTF, bare.FuncInfo, bare.LineInfo = nil, nil, nil
	_, err = LoadProgram(&bare)
	if !errors.As(err, &ve) || strings.Contains(ve.Log, source) {
		t.Errorf("without line_info: %v", err)
	}
}

// TestGlobalFunction: with BTF, a global function is verified once,
// whatever the number of calls; without, at each call site.
func TestGlobalFunction(t *testing.T) {
	requireRoot(t)
	spec, err := LoadCollectionSpec(builtObject(t, "testdata/global.c", "testdata/global.o"))
	if err != nil {
		t.Fatal(err)
	}
	verified := func(ps *ProgramSpec) (uint32, *Program) {
		t.Helper()
		p, err := LoadProgram(ps)
		if err != nil {
			t.Fatal(err)
		}
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return info.VerifiedInstructions, p
	}
	withoutBTF := func(ps *ProgramSpec) *ProgramSpec {
		bare := *ps
		bare.BTF, bare.FuncInfo, bare.LineInfo = nil, nil, nil
		return &bare
	}
	many, pair := spec.Programs["global_xdp"], spec.Programs["global_pair"]
	manyBTF, prog := verified(many)
	pairBTF, _ := verified(pair)
	pairBare, _ := verified(withoutBTF(pair))
	t.Logf("verified instructions: 64 calls with BTF %d; 2 calls with BTF %d, without %d", manyBTF, pairBTF, pairBare)
	// With BTF, 62 more calls cost a few instructions each.
	if manyBTF > pairBTF+62*8 {
		t.Errorf("64 calls cost %d instructions, 2 calls %d: collatz verified more than once?", manyBTF, pairBTF)
	}
	// Without, each call walks collatz again.
	if pairBare < pairBTF*19/10 {
		t.Errorf("2 calls without BTF cost %d instructions, with BTF %d: want about twice", pairBare, pairBTF)
	}
	_, err = LoadProgram(withoutBTF(many))
	var ve *VerifierError
	if !errors.As(err, &ve) {
		t.Fatalf("64 calls without BTF: %v, want the verifier to refuse", err)
	}
	t.Logf("64 calls without BTF: %v", err)

	// And it runs: the 64th iterate from the packet's length.
	pkt := make([]byte, 64)
	x := uint32(len(pkt))
	for i := range 64 {
		x = collatz(x + uint32(i%4) + 1)
	}
	res, err := prog.TestRun(&TestRunOptions{Data: pkt})
	if err != nil {
		t.Fatal(err)
	}
	if res.Return != x {
		t.Errorf("global_xdp returned %d, want %d", res.Return, x)
	}
}

// collatz is testdata/global.c's.
func collatz(x uint32) uint32 {
	for range 2000 {
		if x&1 != 0 {
			x = 3*x + 1
		} else {
			x >>= 1
		}
	}
	return x & 0xffff
}

// TestLoopCallback: a bpf_loop callback, linked from .text.
func TestLoopCallback(t *testing.T) {
	requireRoot(t)
	coll := loadCollection(t, builtObject(t, "testdata/loop.c", "testdata/loop.o"), nil)
	res, err := coll.Programs["loop_xdp"].TestRun(&TestRunOptions{Data: tcpPacket()})
	if err != nil {
		t.Fatal(err)
	}
	if res.Return != xdpPass {
		t.Errorf("loop_xdp returned %d, want XDP_PASS (the callback summed 0..99)", res.Return)
	}
}
