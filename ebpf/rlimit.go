package ebpf

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// RemoveMemlockLimit lifts RLIMIT_MEMLOCK where that matters. Kernels since
// 5.11 charge BPF memory to the memory cgroup and ignore the limit; older
// kernels count maps and programs against it and fail with EPERM when it is
// low. Without CAP_SYS_RESOURCE the limit cannot be raised past its hard
// value: then the soft limit is raised to the hard one and, if a small map can
// still be created, the limit is not in the way (memcg accounting) and this
// is not an error.
func RemoveMemlockLimit() error {
	inf := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &inf)
	if err == nil {
		return nil
	}
	var cur unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_MEMLOCK, &cur) == nil && cur.Cur < cur.Max {
		cur.Cur = cur.Max
		_ = unix.Setrlimit(unix.RLIMIT_MEMLOCK, &cur)
	}
	probe, perr := NewMap(&MapSpec{Name: "xlb_memlock", Type: Array, KeySize: 4, ValueSize: 4096, MaxEntries: 64})
	if perr == nil {
		probe.Close()
		return nil
	}
	return fmt.Errorf("remove memlock limit: %w (needs root or CAP_SYS_RESOURCE on kernels before 5.11)", err)
}
