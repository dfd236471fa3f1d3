package ebpf

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ProgType is enum bpf_prog_type.
type ProgType uint32

const (
	SocketFilter ProgType = 1
	Kprobe       ProgType = 2
	SchedCLS     ProgType = 3
	SchedACT     ProgType = 4
	Tracepoint   ProgType = 5
	XDP          ProgType = 6
)

var progTypeNames = map[ProgType]string{
	SocketFilter: "SocketFilter", Kprobe: "Kprobe", SchedCLS: "SchedCLS",
	SchedACT: "SchedACT", Tracepoint: "Tracepoint", XDP: "XDP",
}

func (t ProgType) String() string {
	if s, ok := progTypeNames[t]; ok {
		return s
	}
	return "ProgType(" + strconv.FormatUint(uint64(t), 10) + ")"
}

// Limits of BPF_PROG_LOAD.
const (
	// progLoadRetries bounds the retries on EAGAIN (the verifier was
	// interrupted by a signal).
	progLoadRetries = 10
	// verifierLogMinSize is the first log buffer on a failed load.
	verifierLogMinSize = 64 << 10
	// verifierLogMaxSize caps the growth (x4 per ENOSPC).
	verifierLogMaxSize = 16 << 20
	// logLevelVerbose is BPF_LOG_LEVEL1.
	logLevelVerbose = 1
	// logLevelStats is BPF_LOG_STATS: one line of totals.
	logLevelStats = 4
)

// ProgramSpec describes a program to load.
type ProgramSpec struct {
	Name         string
	Section      string
	Type         ProgType
	Instructions []Instruction
	License      string
	// MapReferences maps the index of an ld_imm64 instruction to the name of
	// the map whose fd NewCollection writes into it (from the ELF
	// relocations). LoadProgram ignores it.
	MapReferences map[int]string
	// BTF is the type information FuncInfo and LineInfo refer to (the
	// object's, from clang -g); nil without. LoadProgram loads it into the
	// kernel and passes it with the program (NewCollection loads it once
	// for all programs).
	BTF *BTF
	// FuncInfo gives the BTF func of each function of the program (the
	// program itself at instruction 0, then each bpf-to-bpf callee), and
	// LineInfo the source line of the instructions; offsets are in
	// Instructions. The verifier needs FuncInfo to verify a global function
	// once on its own rather than at each call; LineInfo puts source lines
	// in its log.
	FuncInfo []FuncInfo
	LineInfo []LineInfo
}

// Program is a loaded BPF program.
type Program struct {
	fd   int
	name string
	typ  ProgType
}

// VerifierError is a load rejected by the verifier; Log is its whole output.
type VerifierError struct {
	Program   string
	Errno     error
	Log       string
	Truncated bool // Log is the tail of a log longer than the largest buffer
}

func (e *VerifierError) Error() string {
	tail, n := logSummary(e.Log)
	msg := "verifier rejected program " + e.Program
	if e.Errno != nil {
		msg += " (" + e.Errno.Error() + ")"
	}
	trunc := ""
	if e.Truncated {
		trunc = ", truncated"
	}
	return fmt.Sprintf("%s: %s (full log: %d lines%s)", msg, tail, n, trunc)
}

// logSummary is the last three lines of a verifier log that say something
// (not its statistics), joined, and the number of lines. With line info, the
// last source line the log names is added if those three lack one.
func logSummary(log string) (string, int) {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	var tail []string
	source := ""
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if strings.HasPrefix(l, "; ") {
			if source == "" {
				source = l
			}
			if len(tail) >= 3 {
				break
			}
		}
		if len(tail) >= 3 || l == "" || strings.HasPrefix(l, "processed ") || strings.HasPrefix(l, "verification time") ||
			strings.HasPrefix(l, "stack depth") {
			continue
		}
		tail = append([]string{l}, tail...)
	}
	if source != "" && !slices.Contains(tail, source) {
		tail = append([]string{source}, tail...)
	}
	return strings.Join(tail, " | "), len(lines)
}

func (e *VerifierError) Unwrap() error { return e.Errno }

// LoadProgram loads spec into the kernel (BPF_PROG_LOAD). Map references must
// already hold map fds (NewCollection does that). With FuncInfo or LineInfo,
// spec.BTF is loaded first and passed with the program.
func LoadProgram(spec *ProgramSpec) (*Program, error) {
	if spec.BTF == nil || len(spec.FuncInfo) == 0 && len(spec.LineInfo) == 0 {
		return loadProgram(spec, nil)
	}
	h, err := LoadBTF(spec.BTF)
	if err != nil {
		return nil, fmt.Errorf("program %s: %w", spec.Name, err)
	}
	defer h.Close()
	return loadProgram(spec, h)
}

// loadProgram is LoadProgram with the BTF already loaded (nil: none).
func loadProgram(spec *ProgramSpec, btf *BTFHandle) (*Program, error) {
	if len(spec.Instructions) == 0 {
		return nil, fmt.Errorf("program %s: no instructions", spec.Name)
	}
	insns := encodeInstructions(spec.Instructions)
	license, err := cString(spec.License)
	if err != nil {
		return nil, fmt.Errorf("program %s: license: %w", spec.Name, err)
	}
	attr := progLoadAttr{
		ProgType: uint32(spec.Type),
		InsnCnt:  uint32(len(spec.Instructions)),
		Insns:    bytePtr(insns),
		License:  bytePtr(license),
		ProgName: objName(spec.Name),
	}
	switch {
	case btf != nil:
		funcInfo, lineInfo := marshalFuncInfo(spec.FuncInfo), marshalLineInfo(spec.LineInfo)
		attr.ProgBTFFD = uint32(btf.fd)
		if len(spec.FuncInfo) > 0 {
			attr.FuncInfoRecSize, attr.FuncInfo, attr.FuncInfoCnt = funcInfoRecordSize, bytePtr(funcInfo), uint32(len(spec.FuncInfo))
		}
		if len(spec.LineInfo) > 0 {
			attr.LineInfoRecSize, attr.LineInfo, attr.LineInfoCnt = lineInfoRecordSize, bytePtr(lineInfo), uint32(len(spec.LineInfo))
		}
	case len(spec.FuncInfo) > 0 || len(spec.LineInfo) > 0:
		return nil, fmt.Errorf("program %s: func_info or line_info without BTF (ProgramSpec.BTF)", spec.Name)
	}
	var stats []byte
	if os.Getenv("XLB_VERIFIER_STATS") != "" {
		// Debugging the verifier budget: its statistics line on stderr.
		stats = make([]byte, 4096)
		attr.LogLevel, attr.LogSize, attr.LogBuf = logLevelStats, uint32(len(stats)), bytePtr(stats)
	}
	fd, err := progLoad(&attr)
	if stats != nil {
		fmt.Fprintf(os.Stderr, "verifier %s: %s\n", spec.Name, bytes.TrimSpace(bytes.TrimRight(stats, "\x00")))
		attr.LogLevel, attr.LogSize, attr.LogBuf = 0, 0, nil
	}
	if err == nil {
		return &Program{fd: fd, name: spec.Name, typ: spec.Type}, nil
	}

	// Load again with a log to say why.
	fd, log, truncated, err := retryWithLog(func(buf []byte) (int, uint32, error) {
		attr.LogLevel, attr.LogSize, attr.LogBuf, attr.LogTrueSize = logLevelVerbose, uint32(len(buf)), bytePtr(buf), 0
		fd, err := progLoad(&attr)
		return fd, attr.LogTrueSize, err
	})
	if err == nil {
		return &Program{fd: fd, name: spec.Name, typ: spec.Type}, nil
	}
	if log == "" {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("program %s: load: %w", spec.Name, ErrNotPermitted)
		}
		return nil, fmt.Errorf("program %s: load: %w", spec.Name, sysErrno(err))
	}
	return nil, &VerifierError{Program: spec.Name, Errno: err, Log: log, Truncated: truncated}
}

// progLoad is BPF_PROG_LOAD retried on EAGAIN.
func progLoad(attr *progLoadAttr) (int, error) {
	var err error
	for range progLoadRetries {
		var fd int
		fd, err = sysProgLoad(attr)
		if !errors.Is(err, unix.EAGAIN) {
			return fd, err
		}
	}
	return -1, err
}

// FD is the program's file descriptor, or -1 after Close.
func (p *Program) FD() int { return p.fd }

func (p *Program) Name() string   { return p.name }
func (p *Program) Type() ProgType { return p.typ }

// Close closes the file descriptor; the program lives on while pinned or
// attached. Closing twice is harmless.
func (p *Program) Close() error {
	if p == nil || p.fd < 0 {
		return nil
	}
	err := unix.Close(p.fd)
	p.fd = -1
	if err != nil {
		return fmt.Errorf("program %s: close: %w", p.name, err)
	}
	return nil
}

// Pin pins the program at path, which must be on a bpf filesystem.
func (p *Program) Pin(path string) error {
	if err := pinFD(p.fd, path); err != nil {
		return fmt.Errorf("program %s: %w", p.name, err)
	}
	return nil
}

// LoadPinnedProgram opens the program pinned at path.
func LoadPinnedProgram(path string) (*Program, error) {
	fd, err := getPinned(path)
	if err != nil {
		return nil, fmt.Errorf("load pinned program: %w", err)
	}
	p, err := newProgramFromFD(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("load pinned program %s: %w", path, err)
	}
	return p, nil
}

// NewProgramFromID opens the program with the given kernel ID.
func NewProgramFromID(id uint32) (*Program, error) {
	attr := getFDByIDAttr{ID: id}
	fd, err := sysGetFDByID(cmdProgGetFDByID, &attr)
	if err != nil {
		return nil, fmt.Errorf("program id %d: get fd: %w", id, sysErrno(err))
	}
	p, err := newProgramFromFD(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("program id %d: %w", id, err)
	}
	return p, nil
}

func newProgramFromFD(fd int) (*Program, error) {
	p := &Program{fd: fd}
	info, err := p.Info()
	if err != nil {
		return nil, err
	}
	p.name, p.typ = info.Name, info.Type
	return p, nil
}

// ProgramInfo is what the kernel reports about a loaded program. RunTimeNs and
// RunCount stay zero unless the sysctl kernel.bpf_stats_enabled is 1.
type ProgramInfo struct {
	ID        uint32
	Name      string
	Type      ProgType
	MapIDs    []uint32
	RunTimeNs uint64
	RunCount  uint64
	// BTFID is the ID of the program's BTF (0 without), FuncInfoCount and
	// LineInfoCount the records the kernel kept.
	BTFID         uint32
	FuncInfoCount uint32
	LineInfoCount uint32
	// VerifiedInstructions is the number of instructions the verifier
	// processed ("processed N insns" in its log; kernel 5.16 on).
	VerifiedInstructions uint32
}

// Info is BPF_OBJ_GET_INFO_BY_FD on the program, with the IDs of its maps.
func (p *Program) Info() (*ProgramInfo, error) {
	var info progInfo
	if err := p.getInfo(&info); err != nil {
		return nil, err
	}
	var ids []uint32
	if n := info.NrMapIDs; n > 0 {
		// Second call with room for the map IDs; the count cannot change
		// for a loaded program.
		ids = make([]uint32, n)
		info = progInfo{NrMapIDs: n, MapIDs: unsafe.Pointer(&ids[0])}
		if err := p.getInfo(&info); err != nil {
			return nil, err
		}
		ids = ids[:min(n, info.NrMapIDs)]
	}
	return &ProgramInfo{
		ID:        info.ID,
		Name:      cName(info.Name[:]),
		Type:      ProgType(info.Type),
		MapIDs:    ids,
		RunTimeNs: info.RunTimeNs,
		RunCount:  info.RunCnt,

		BTFID:                info.BTFID,
		FuncInfoCount:        info.NrFuncInfo,
		LineInfoCount:        info.NrLineInfo,
		VerifiedInstructions: info.VerifiedInsns,
	}, nil
}

func (p *Program) getInfo(info *progInfo) error {
	attr := objInfoAttr{BPFFD: uint32(p.fd), InfoLen: uint32(unsafe.Sizeof(*info)), Info: unsafe.Pointer(info)}
	if err := sysObjGetInfoByFD(&attr); err != nil {
		return fmt.Errorf("program %s: get info: %w", p.name, sysErrno(err))
	}
	return nil
}

// testRunDataSlack is the room added to the output buffer by default: XDP
// programs may grow the packet (bpf_xdp_adjust_head/tail).
const testRunDataSlack = 256

// testRunMinData is ETH_HLEN: BPF_PROG_TEST_RUN rejects shorter packets.
const testRunMinData = 14

// TestRunOptions is the input of BPF_PROG_TEST_RUN.
type TestRunOptions struct {
	Data       []byte
	DataOutCap int    // size of the output buffer; 0 means len(Data)+256
	Repeat     uint32 // runs; 0 means 1
	Context    []byte // optional context (struct xdp_md for XDP)
}

// TestRunResult is the output of BPF_PROG_TEST_RUN.
type TestRunResult struct {
	Return   uint32
	Data     []byte
	Duration time.Duration // mean time of one run, measured by the kernel
}

// TestRun runs the program once (or Repeat times) on opts.Data without
// attaching it (BPF_PROG_TEST_RUN).
func (p *Program) TestRun(opts *TestRunOptions) (*TestRunResult, error) {
	outCap := opts.DataOutCap
	if outCap == 0 {
		outCap = len(opts.Data) + testRunDataSlack
	}
	out := make([]byte, outCap)
	attr := progTestRunAttr{
		ProgFD:      uint32(p.fd),
		DataSizeIn:  uint32(len(opts.Data)),
		DataSizeOut: uint32(len(out)),
		DataIn:      bytePtr(opts.Data),
		DataOut:     bytePtr(out),
		Repeat:      opts.Repeat,
		CtxSizeIn:   uint32(len(opts.Context)),
		CtxIn:       bytePtr(opts.Context),
	}
	if err := sysProgTestRun(&attr); err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return nil, fmt.Errorf("program %s: test run: output is %d bytes, more than DataOutCap %d: %w",
				p.name, attr.DataSizeOut, outCap, err)
		}
		if errors.Is(err, unix.EINVAL) && len(opts.Data) < testRunMinData {
			return nil, fmt.Errorf("program %s: test run: data is %d bytes, the kernel wants at least %d bytes (an Ethernet header): %w",
				p.name, len(opts.Data), testRunMinData, err)
		}
		return nil, fmt.Errorf("program %s: test run: %w", p.name, sysErrno(err))
	}
	return &TestRunResult{
		Return:   attr.Retval,
		Data:     out[:min(int(attr.DataSizeOut), len(out))],
		Duration: time.Duration(attr.Duration),
	}, nil
}
