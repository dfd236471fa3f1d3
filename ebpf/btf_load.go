package ebpf

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BTFHandle is BTF loaded into the kernel (BPF_BTF_LOAD): programs refer to
// it by fd (prog_btf_fd), and hold their own reference, so it may be closed
// once they are loaded.
type BTFHandle struct {
	fd int
}

// BTFError is BTF the kernel refused; Log is the whole log of its checks.
type BTFError struct {
	Errno     error
	Log       string
	Truncated bool // Log is the tail of a log longer than the largest buffer
}

func (e *BTFError) Error() string {
	tail, n := logSummary(e.Log)
	trunc := ""
	if e.Truncated {
		trunc = ", truncated"
	}
	return fmt.Sprintf("btf: kernel rejected the object's BTF (%v): %s (full log: %d lines%s)", e.Errno, tail, n, trunc)
}

func (e *BTFError) Unwrap() error { return e.Errno }

// LoadBTF loads b into the kernel. It loads without a log and, if the kernel
// refuses, again with one, to return a *BTFError that says why.
func LoadBTF(b *BTF) (*BTFHandle, error) {
	raw := b.marshal()
	attr := btfLoadAttr{BTF: bytePtr(raw), BTFSize: uint32(len(raw))}
	fd, err := sysBTFLoad(&attr)
	if err == nil {
		return &BTFHandle{fd: fd}, nil
	}
	fd, log, truncated, err := retryWithLog(func(buf []byte) (int, uint32, error) {
		attr.BTFLogLevel, attr.BTFLogSize, attr.BTFLogBuf, attr.BTFLogTrueSize = logLevelVerbose, uint32(len(buf)), bytePtr(buf), 0
		fd, err := sysBTFLoad(&attr)
		return fd, attr.BTFLogTrueSize, err
	})
	if err == nil {
		return &BTFHandle{fd: fd}, nil
	}
	if log == "" {
		return nil, fmt.Errorf("btf: load: %w", sysErrno(err))
	}
	return nil, &BTFError{Errno: err, Log: log, Truncated: truncated}
}

// FD is the handle's file descriptor, or -1 after Close.
func (h *BTFHandle) FD() int { return h.fd }

// ID is the kernel's ID of the loaded BTF (what ProgramInfo.BTFID shows).
func (h *BTFHandle) ID() (uint32, error) {
	var info btfInfo
	attr := objInfoAttr{BPFFD: uint32(h.fd), InfoLen: uint32(unsafe.Sizeof(info)), Info: unsafe.Pointer(&info)}
	if err := sysObjGetInfoByFD(&attr); err != nil {
		return 0, fmt.Errorf("btf: get info: %w", sysErrno(err))
	}
	return info.ID, nil
}

// Close closes the file descriptor; closing twice is harmless.
func (h *BTFHandle) Close() error {
	if h == nil || h.fd < 0 {
		return nil
	}
	err := unix.Close(h.fd)
	h.fd = -1
	if err != nil {
		return fmt.Errorf("btf: close: %w", err)
	}
	return nil
}

// retryWithLog runs a load that failed without a log again with a log
// buffer (BPF_LOG_LEVEL1) that grows while the kernel says it is too small.
// load gets the buffer and returns the fd, the kernel's log_true_size (0 if
// it does not report it) and the error. The log is returned when the load
// fails again; truncated says it did not fit in the largest buffer.
func retryWithLog(load func(buf []byte) (int, uint32, error)) (fd int, log string, truncated bool, err error) {
	for size := uint32(verifierLogMinSize); ; {
		buf := make([]byte, size)
		fd, trueSize, err := load(buf)
		if err == nil {
			return fd, "", false, nil
		}
		if errors.Is(err, unix.ENOSPC) && size < verifierLogMaxSize {
			next := size * 4
			if trueSize > size {
				next = trueSize
			}
			size = min(next, verifierLogMaxSize)
			continue
		}
		return -1, cName(buf), errors.Is(err, unix.ENOSPC), err
	}
}
