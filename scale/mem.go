package main

// Memory accounting: the whole machine from /proc/meminfo, the namespace's
// sockets from its /proc/net/sockstat, processes from /proc/PID/status and
// /proc/PID/fd, and the BPF maps a process holds from the fdinfo of its
// bpf-map descriptors (as bench/account.go does).

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// snapshot is the memory of one moment of a turn. Sizes in bytes.
type snapshot struct {
	// Used is MemTotal - MemFree - Buffers - Cached: every page not free
	// and not page cache (anonymous memory, kernel slab, page tables,
	// kernel stacks, vmalloc, per-CPU areas). Page cache is left out: the
	// files the run reads or logs are not per connection.
	Used int64 `json:"used"`
	Slab int64 `json:"slab"` // kernel slab (SReclaimable + SUnreclaim): socket structs live there
	// The namespace's sockstat: TCP sockets in use, in TIME-WAIT, and the
	// pages charged to TCP buffers (the mem field, a machine-wide count).
	TCPInuse    int64 `json:"tcp_inuse"`
	TCPTimeWait int64 `json:"tcp_tw"`
	TCPMem      int64 `json:"tcp_mem"`
	// The balancer's processes (one xlb; every haproxy process).
	BalancerRSS     int64 `json:"balancer_rss"`
	BalancerFDs     int64 `json:"balancer_fds"`
	BalancerSockets int64 `json:"balancer_sockets"` // of those fds, sockets
	BPFMemlock      int64 `json:"bpf_memlock"`      // xlb's maps
	ClientRSS       int64 `json:"client_rss"`       // every client process
}

// take measures the moment: nsPid is any process of the namespace (for its
// sockstat), balancer and clients the pids to add up.
func take(nsPid int, balancer, clients []int) snapshot {
	var s snapshot
	mi := readKV("/proc/meminfo")
	s.Used = (mi["MemTotal"] - mi["MemFree"] - mi["Buffers"] - mi["Cached"]) << 10
	s.Slab = mi["Slab"] << 10
	s.TCPInuse, s.TCPTimeWait, s.TCPMem = sockstat(nsPid)
	for _, pid := range balancer {
		s.BalancerRSS += procRSS(pid)
		fds, socks := procFDs(pid)
		s.BalancerFDs += fds
		s.BalancerSockets += socks
		s.BPFMemlock += sumMemlock(procBPFMaps(pid))
	}
	for _, pid := range clients {
		s.ClientRSS += procRSS(pid)
	}
	return s
}

// readKV reads a file of "Key: value [kB]" lines.
func readKV(path string) map[string]int64 {
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

// sockstat reads "TCP: inuse N orphan N tw N alloc N mem N" of the
// namespace pid is in; mem is in pages, returned in bytes.
func sockstat(pid int) (inuse, tw, mem int64) {
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

// procRSS is VmRSS of a process in bytes.
func procRSS(pid int) int64 {
	return readKV("/proc/" + strconv.Itoa(pid) + "/status")["VmRSS"] << 10
}

// procFDs counts a process's open descriptors, and the sockets among them.
func procFDs(pid int) (fds, sockets int64) {
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

// procBPFMaps returns the memlock charge of every BPF map a process holds
// open, each map once (by map id). Hash maps are preallocated: the charge
// is what the map costs, full or not; for those that are not
// (BPF_F_NO_PREALLOC) the kernel counts the elements present.
func procBPFMaps(pid int) map[string]int64 {
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

func sumMemlock(maps map[string]int64) int64 {
	var n int64
	for _, m := range maps {
		n += m
	}
	return n
}
