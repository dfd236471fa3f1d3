package ebpf

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// bpf(2) commands (enum bpf_cmd).
const (
	cmdMapCreate          = 0
	cmdMapLookupElem      = 1
	cmdMapUpdateElem      = 2
	cmdMapDeleteElem      = 3
	cmdMapGetNextKey      = 4
	cmdProgLoad           = 5
	cmdObjPin             = 6
	cmdObjGet             = 7
	cmdProgTestRun        = 10
	cmdProgGetFDByID      = 13
	cmdMapGetFDByID       = 14
	cmdObjGetInfoByFD     = 15
	cmdMapLookupAndDelete = 21
	cmdBTFLoad            = 18
	cmdMapLookupBatch     = 24
	cmdMapUpdateBatch     = 26
)

// objNameLen is BPF_OBJ_NAME_LEN: map_name and prog_name hold 15 characters
// and a NUL.
const objNameLen = 16

// Each attr struct below is one variant of union bpf_attr, laid out as in
// include/uapi/linux/bpf.h (kernel 6.x). Pointer fields are unsafe.Pointer so
// that the garbage collector sees them; they are 8 bytes on the 64-bit hosts
// we support (__aligned_u64 in the kernel). Fields we never set are kept so
// that offsets stay right; the kernel accepts a shorter or longer attr as long
// as the bytes it does not know are zero.

// mapCreateAttr is BPF_MAP_CREATE.
type mapCreateAttr struct {
	MapType               uint32
	KeySize               uint32
	ValueSize             uint32
	MaxEntries            uint32
	MapFlags              uint32
	InnerMapFD            uint32
	NumaNode              uint32
	MapName               [objNameLen]byte
	MapIfindex            uint32
	BTFFD                 uint32
	BTFKeyTypeID          uint32
	BTFValueTypeID        uint32
	BTFVmlinuxValueTypeID uint32
	MapExtra              uint64
}

// mapElemAttr is BPF_MAP_*_ELEM and BPF_MAP_GET_NEXT_KEY (Value is next_key).
type mapElemAttr struct {
	MapFD uint32
	_     uint32
	Key   unsafe.Pointer
	Value unsafe.Pointer
	Flags uint64
}

// mapBatchAttr is BPF_MAP_*_BATCH.
type mapBatchAttr struct {
	InBatch   unsafe.Pointer
	OutBatch  unsafe.Pointer
	Keys      unsafe.Pointer
	Values    unsafe.Pointer
	Count     uint32
	MapFD     uint32
	ElemFlags uint64
	Flags     uint64
}

// progLoadAttr is BPF_PROG_LOAD.
type progLoadAttr struct {
	ProgType           uint32
	InsnCnt            uint32
	Insns              unsafe.Pointer
	License            unsafe.Pointer
	LogLevel           uint32
	LogSize            uint32
	LogBuf             unsafe.Pointer
	KernVersion        uint32
	ProgFlags          uint32
	ProgName           [objNameLen]byte
	ProgIfindex        uint32
	ExpectedAttachType uint32
	ProgBTFFD          uint32
	FuncInfoRecSize    uint32
	FuncInfo           unsafe.Pointer
	FuncInfoCnt        uint32
	LineInfoRecSize    uint32
	LineInfo           unsafe.Pointer
	LineInfoCnt        uint32
	AttachBTFID        uint32
	AttachProgFD       uint32
	CoreReloCnt        uint32
	FDArray            unsafe.Pointer
	CoreRelos          unsafe.Pointer
	CoreReloRecSize    uint32
	LogTrueSize        uint32 // set by the kernel since 6.4
}

// btfLoadAttr is BPF_BTF_LOAD.
type btfLoadAttr struct {
	BTF            unsafe.Pointer
	BTFLogBuf      unsafe.Pointer
	BTFSize        uint32
	BTFLogSize     uint32
	BTFLogLevel    uint32
	BTFLogTrueSize uint32 // set by the kernel since 6.4
	BTFFlags       uint32
	BTFTokenFD     int32
}

// btfInfo is struct bpf_btf_info.
type btfInfo struct {
	BTF       unsafe.Pointer
	BTFSize   uint32
	ID        uint32
	Name      unsafe.Pointer
	NameLen   uint32
	KernelBTF uint32
}

// objAttr is BPF_OBJ_PIN and BPF_OBJ_GET.
type objAttr struct {
	Pathname  unsafe.Pointer
	BPFFD     uint32
	FileFlags uint32
	PathFD    int32
	_         uint32
}

// progTestRunAttr is BPF_PROG_TEST_RUN.
type progTestRunAttr struct {
	ProgFD      uint32
	Retval      uint32
	DataSizeIn  uint32
	DataSizeOut uint32
	DataIn      unsafe.Pointer
	DataOut     unsafe.Pointer
	Repeat      uint32
	Duration    uint32
	CtxSizeIn   uint32
	CtxSizeOut  uint32
	CtxIn       unsafe.Pointer
	CtxOut      unsafe.Pointer
	Flags       uint32
	CPU         uint32
	BatchSize   uint32
	_           uint32
}

// getFDByIDAttr is BPF_PROG_GET_FD_BY_ID and BPF_MAP_GET_FD_BY_ID.
type getFDByIDAttr struct {
	ID        uint32
	NextID    uint32
	OpenFlags uint32
}

// objInfoAttr is BPF_OBJ_GET_INFO_BY_FD.
type objInfoAttr struct {
	BPFFD   uint32
	InfoLen uint32
	Info    unsafe.Pointer
}

// mapInfo is struct bpf_map_info (up to map_extra).
type mapInfo struct {
	Type                  uint32
	ID                    uint32
	KeySize               uint32
	ValueSize             uint32
	MaxEntries            uint32
	MapFlags              uint32
	Name                  [objNameLen]byte
	Ifindex               uint32
	BTFVmlinuxValueTypeID uint32
	NetnsDev              uint64
	NetnsIno              uint64
	BTFID                 uint32
	BTFKeyTypeID          uint32
	BTFValueTypeID        uint32
	BTFVmlinuxID          uint32
	MapExtra              uint64
}

// progInfo is struct bpf_prog_info (up to attach_btf_id).
type progInfo struct {
	Type                 uint32
	ID                   uint32
	Tag                  [8]byte
	JitedProgLen         uint32
	XlatedProgLen        uint32
	JitedProgInsns       unsafe.Pointer
	XlatedProgInsns      unsafe.Pointer
	LoadTime             uint64
	CreatedByUID         uint32
	NrMapIDs             uint32
	MapIDs               unsafe.Pointer
	Name                 [objNameLen]byte
	Ifindex              uint32
	GPLCompatible        uint32 // bit 0
	NetnsDev             uint64
	NetnsIno             uint64
	NrJitedKsyms         uint32
	NrJitedFuncLens      uint32
	JitedKsyms           unsafe.Pointer
	JitedFuncLens        unsafe.Pointer
	BTFID                uint32
	FuncInfoRecSize      uint32
	FuncInfo             unsafe.Pointer
	NrFuncInfo           uint32
	NrLineInfo           uint32
	LineInfo             unsafe.Pointer
	JitedLineInfo        unsafe.Pointer
	NrJitedLineInfo      uint32
	LineInfoRecSize      uint32
	JitedLineInfoRecSize uint32
	NrProgTags           uint32
	ProgTags             unsafe.Pointer
	RunTimeNs            uint64
	RunCnt               uint64
	RecursionMisses      uint64
	VerifiedInsns        uint32
	AttachBTFObjID       uint32
	AttachBTFID          uint32
	_                    uint32
}

// bpf issues one bpf(2) command. Callers keep attr alive with
// runtime.KeepAlive after the call.
// eintrRetries bounds the retries of a bpf(2) call interrupted by a signal
// (the Go runtime preempts goroutines with SIGURG; BPF_PROG_TEST_RUN in
// particular returns EINTR when a signal is pending).
const eintrRetries = 100

func bpf(cmd uintptr, attr unsafe.Pointer, size uintptr) (uintptr, error) {
	return bpfCall(unix.Syscall, cmd, attr, size)
}

// bpfQuick is bpf for commands that cannot block and take microseconds: an
// element looked up, updated or deleted (but a map-in-map's update or
// delete, which waits for an RCU grace period), a small batch, one test run. It
// does not tell the runtime it enters a system call (RawSyscall): a P in a
// system call for more than 20 us is taken back by sysmon and handed to
// another thread, and sysmon, finding work to retake, keeps polling every
// 20 us. At ten thousand connections a second each such call was a thread
// wakeup and a context switch, a VM exit apiece under the hypervisor here.
// The cost: the goroutine's P waits for the call (microseconds). Program
// and BTF loads, map creation and big batches go through bpf.
func bpfQuick(cmd uintptr, attr unsafe.Pointer, size uintptr) (uintptr, error) {
	return bpfCall(unix.RawSyscall, cmd, attr, size)
}

// quickBatch is the largest batch bpfQuick takes.
const quickBatch = 256

func bpfCall(call func(trap, a1, a2, a3 uintptr) (uintptr, uintptr, unix.Errno), cmd uintptr, attr unsafe.Pointer, size uintptr) (uintptr, error) {
	for i := 0; ; i++ {
		r, _, errno := call(unix.SYS_BPF, cmd, uintptr(attr), size)
		if errno == unix.EINTR && i < eintrRetries {
			continue
		}
		if errno != 0 {
			return r, errno
		}
		return r, nil
	}
}

func sysMapCreate(attr *mapCreateAttr) (int, error) {
	fd, err := bpf(cmdMapCreate, unsafe.Pointer(attr), unsafe.Sizeof(*attr))
	runtime.KeepAlive(attr)
	return int(fd), err
}

func sysMapElem(cmd uintptr, attr *mapElemAttr, quick bool) error {
	call := bpf
	if quick {
		call = bpfQuick
	}
	_, err := call(cmd, unsafe.Pointer(attr), unsafe.Sizeof(*attr))
	runtime.KeepAlive(attr)
	return err
}

func sysMapBatch(cmd uintptr, attr *mapBatchAttr, quick bool) error {
	call := bpf
	if quick && attr.Count <= quickBatch {
		call = bpfQuick
	}
	_, err := call(cmd, unsafe.Pointer(attr), unsafe.Sizeof(*attr))
	runtime.KeepAlive(attr)
	return err
}

func sysProgLoad(attr *progLoadAttr) (int, error) {
	fd, err := bpf(cmdProgLoad, unsafe.Pointer(attr), unsafe.Sizeof(*attr))
	runtime.KeepAlive(attr)
	return int(fd), err
}

func sysBTFLoad(attr *btfLoadAttr) (int, error) {
	fd, err := bpf(cmdBTFLoad, unsafe.Pointer(attr), unsafe.Sizeof(*attr))
	runtime.KeepAlive(attr)
	return int(fd), err
}

func sysObjPin(attr *objAttr) error {
	_, err := bpf(cmdObjPin, unsafe.Pointer(attr), unsafe.Sizeof(*attr))
	runtime.KeepAlive(attr)
	return err
}

func sysObjGet(attr *objAttr) (int, error) {
	fd, err := bpf(cmdObjGet, unsafe.Pointer(attr), unsafe.Sizeof(*attr))
	runtime.KeepAlive(attr)
	return int(fd), err
}

func sysProgTestRun(attr *progTestRunAttr) error {
	call := bpf
	if attr.Repeat <= 1 {
		call = bpfQuick
	}
	_, err := call(cmdProgTestRun, unsafe.Pointer(attr), unsafe.Sizeof(*attr))
	runtime.KeepAlive(attr)
	return err
}

func sysGetFDByID(cmd uintptr, attr *getFDByIDAttr) (int, error) {
	fd, err := bpf(cmd, unsafe.Pointer(attr), unsafe.Sizeof(*attr))
	runtime.KeepAlive(attr)
	return int(fd), err
}

func sysObjGetInfoByFD(attr *objInfoAttr) error {
	_, err := bpf(cmdObjGetInfoByFD, unsafe.Pointer(attr), unsafe.Sizeof(*attr))
	runtime.KeepAlive(attr)
	return err
}

// bytePtr is the address of b's first byte, or nil for an empty slice.
func bytePtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

// cString is s as a NUL-terminated byte slice for a pathname or license.
func cString(s string) ([]byte, error) {
	p, err := unix.BytePtrFromString(s)
	if err != nil {
		return nil, err
	}
	return unsafe.Slice(p, len(s)+1), nil
}

// objName is a name for map_name / prog_name: at most 15 characters, and only
// the characters the kernel accepts (letters, digits, '_' and '.'); others
// become '_'.
func objName(s string) [objNameLen]byte {
	var out [objNameLen]byte
	for i := 0; i < len(s) && i < objNameLen-1; i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.':
		default:
			c = '_'
		}
		out[i] = c
	}
	return out
}

// cName is the Go string of a NUL-padded kernel name.
func cName(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
