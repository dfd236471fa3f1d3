package ebpf

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// errENOTSUPP is the kernel-internal ENOTSUPP (524) that bpf(2) leaks to user
// space; it has no name in x/sys/unix.
const errENOTSUPP = unix.Errno(524)

// sentinel is an error value that errors.Is also matches against the errnos it
// stands for, so callers may test for either ErrKeyNotExist or unix.ENOENT.
type sentinel struct {
	msg    string
	errnos []unix.Errno
}

func (s *sentinel) Error() string { return s.msg }

func (s *sentinel) Is(target error) bool {
	for _, n := range s.errnos {
		if target == error(n) {
			return true
		}
	}
	return false
}

var (
	// ErrKeyNotExist: the key is not in the map, the queue is empty, or
	// NextKey reached the end (ENOENT).
	ErrKeyNotExist error = &sentinel{"key does not exist", []unix.Errno{unix.ENOENT}}
	// ErrKeyExist: UpdateNoExist on a key that is present (EEXIST).
	ErrKeyExist error = &sentinel{"key already exists", []unix.Errno{unix.EEXIST}}
	// ErrNotSupported: the kernel does not support the operation on this
	// object (EOPNOTSUPP, ENOTSUPP).
	ErrNotSupported error = &sentinel{"not supported", []unix.Errno{unix.EOPNOTSUPP, errENOTSUPP}}
	// ErrNotPermitted: EPERM or EACCES from a bpf(2) command.
	ErrNotPermitted error = &sentinel{
		"operation not permitted: need root or CAP_BPF+CAP_NET_ADMIN; check RLIMIT_MEMLOCK (see RemoveMemlockLimit)",
		[]unix.Errno{unix.EPERM, unix.EACCES},
	}
	// ErrNotBPFFS: the path is not on a bpf filesystem.
	ErrNotBPFFS error = errors.New("not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)")
	// ErrClosed is returned by RingBufReader.Read after Close. It is
	// os.ErrClosed, so either name matches.
	ErrClosed = os.ErrClosed
)

// mapErrno turns the errno of a map element command into its sentinel.
func mapErrno(err error) error {
	switch {
	case errors.Is(err, unix.ENOENT):
		return ErrKeyNotExist
	case errors.Is(err, unix.EEXIST):
		return ErrKeyExist
	}
	return sysErrno(err)
}

// sysErrno turns the errnos that mean the same for every command into
// sentinels; others are returned unchanged.
func sysErrno(err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return ErrNotPermitted
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, errENOTSUPP):
		return ErrNotSupported
	}
	return err
}
