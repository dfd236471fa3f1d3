package lab

// Proc files: the namespace's sockets from its /proc/net/sockstat,
// processes from /proc/PID/status and /proc/PID/fd, and the BPF maps a
// process holds from the fdinfo of its bpf-map descriptors (as
// bench/account.go does).

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ReadKV reads a file of "Key: value [kB]" lines.
func ReadKV(path string) map[string]int64 {
	m := map[string]int64{}
	b, err := os.ReadFile(path)
	if err != nil {
		return m
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		m[k] = n
	}
	return m
}

// Sockstat reads "TCP: inuse N orphan N tw N alloc N mem N" of the
// namespace pid is in; mem is in pages, returned in bytes.
func Sockstat(pid int) (inuse, tw, mem int64) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/net/sockstat")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "TCP:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		for i := 0; i+1 < len(f); i += 2 {
			n, _ := strconv.ParseInt(f[i+1], 10, 64)
			switch f[i] {
			case "inuse":
				inuse = n
			case "tw":
				tw = n
			case "mem":
				mem = n * int64(os.Getpagesize())
			}
		}
	}
	return
}

// ProcRSS is VmRSS of a process in bytes.
func ProcRSS(pid int) int64 {
	return ReadKV("/proc/" + strconv.Itoa(pid) + "/status")["VmRSS"] << 10
}

// ProcFDs counts a process's open descriptors, and the sockets among them.
func ProcFDs(pid int) (fds, sockets int64) {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		fds++
		if t, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(t, "socket:") {
			sockets++
		}
	}
	return
}

// ProcBPFMaps returns the memlock charge of every BPF map a process holds
// open, each map once (by map id). Hash maps are preallocated: the charge
// is what the map costs, full or not; for those that are not
// (BPF_F_NO_PREALLOC) the kernel counts the elements present.
func ProcBPFMaps(pid int) map[string]int64 {
	dir := "/proc/" + strconv.Itoa(pid)
	fds, _ := os.ReadDir(dir + "/fd")
	maps := map[string]int64{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
		if err != nil || target != "anon_inode:bpf-map" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "fdinfo", fd.Name()))
		if err != nil {
			continue
		}
		var id string
		var memlock int64
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			v = strings.TrimSpace(v)
			switch k {
			case "map_id":
				id = v
			case "memlock":
				memlock, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		if id != "" {
			maps[id] = memlock
		}
	}
	return maps
}

// SumMemlock adds up the charges ProcBPFMaps returns.
func SumMemlock(maps map[string]int64) int64 {
	var n int64
	for _, m := range maps {
		n += m
	}
	return n
}
