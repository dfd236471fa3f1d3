package xdp

import (
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// passInsns is `r0 = XDP_PASS; exit`.
var passInsns = []byte{
	0xb7, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // mov r0, 2
	0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // exit
}

// progLoadAttr is the BPF_PROG_LOAD variant of union bpf_attr, up to
// prog_name; the kernel zero-extends shorter attrs.
type progLoadAttr struct {
	ProgType    uint32
	InsnCnt     uint32
	Insns       unsafe.Pointer
	License     unsafe.Pointer
	LogLevel    uint32
	LogSize     uint32
	LogBuf      unsafe.Pointer
	KernVersion uint32
	ProgFlags   uint32
	ProgName    [unix.BPF_OBJ_NAME_LEN]byte
}

// loadPass loads a trivial XDP program returning XDP_PASS and returns its fd
// (closed at test cleanup) and id. It does not use package ebpf on purpose.
func loadPass(t testing.TB) (fd int, id uint32) {
	t.Helper()
	license := []byte("GPL\x00")
	attr := progLoadAttr{
		ProgType: unix.BPF_PROG_TYPE_XDP,
		InsnCnt:  uint32(len(passInsns) / 8),
		Insns:    unsafe.Pointer(&passInsns[0]),
		License:  unsafe.Pointer(&license[0]),
	}
	copy(attr.ProgName[:], "xlb_test_pass")
	var r uintptr
	var errno unix.Errno
	for range 5 {
		r, _, errno = unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		if errno != unix.EAGAIN {
			break
		}
	}
	runtime.KeepAlive(license)
	if errno != 0 {
		t.Fatalf("BPF_PROG_LOAD: %v", errno)
	}
	fd = int(r)
	t.Cleanup(func() { unix.Close(fd) })
	return fd, progID(t, fd)
}

// progID returns the id of a program fd (BPF_OBJ_GET_INFO_BY_FD; struct
// bpf_prog_info starts with __u32 type, __u32 id).
func progID(t testing.TB, fd int) uint32 {
	t.Helper()
	var info [2]uint32
	attr := struct {
		BpfFD   uint32
		InfoLen uint32
		Info    unsafe.Pointer
	}{BpfFD: uint32(fd), InfoLen: uint32(unsafe.Sizeof(info)), Info: unsafe.Pointer(&info)}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_OBJ_GET_INFO_BY_FD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(&info)
	if errno != 0 {
		t.Fatalf("BPF_OBJ_GET_INFO_BY_FD: %v", errno)
	}
	return info[1]
}
