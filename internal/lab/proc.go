package lab

// Proc files: the namespace's sockets from its /proc/net/sockstat,
// processes from /proc/PID/status and /proc/PID/fd, and the BPF maps a
// process holds from the fdinfo of its bpf-map descriptors (as
// bench/account.go does).

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
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

// BPFMap is one BPF map a process holds, from its fdinfo.
type BPFMap struct {
	ID                          string
	KeySize, ValueSize, Entries int64
	Memlock                     int64 // the kernel's charge for it
}

// ProcBPFMaps lists the BPF maps a process holds open, each once (by map
// id). Hash maps are preallocated: the charge is what the map costs, full
// or not; for those that are not (BPF_F_NO_PREALLOC) the kernel counts the
// elements present.
func ProcBPFMaps(pid int) []BPFMap {
	dir := "/proc/" + strconv.Itoa(pid)
	fds, _ := os.ReadDir(dir + "/fd")
	seen := map[string]bool{}
	var maps []BPFMap
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(dir, "fd", fd.Name()))
		if err != nil || target != "anon_inode:bpf-map" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "fdinfo", fd.Name()))
		if err != nil {
			continue
		}
		var m BPFMap
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			v = strings.TrimSpace(v)
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "map_id":
				m.ID = v
			case "key_size":
				m.KeySize = n
			case "value_size":
				m.ValueSize = n
			case "max_entries":
				m.Entries = n
			case "memlock":
				m.Memlock = n
			}
		}
		if m.ID == "" || seen[m.ID] {
			continue
		}
		seen[m.ID] = true
		maps = append(maps, m)
	}
	return maps
}

// SumMemlock adds up the charges of maps.
func SumMemlock(maps []BPFMap) int64 {
	var n int64
	for _, m := range maps {
		n += m.Memlock
	}
	return n
}

// Gnuplot writes script to dir/name.gp and runs gnuplot on it (a minute at
// most): the charts of the reports.
func Gnuplot(dir, name, script string) error {
	gp := filepath.Join(dir, name+".gp")
	if err := os.WriteFile(gp, []byte(script), 0o644); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "gnuplot", gp).CombinedOutput(); err != nil {
		return fmt.Errorf("gnuplot: %v: %s", err, out)
	}
	return nil
}
