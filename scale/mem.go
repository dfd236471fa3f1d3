package main

// Memory accounting of a turn: the whole machine from /proc/meminfo, the
// rest from the proc files internal/lab reads.

import "github.com/xlb-lb/xlb/internal/lab"

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
	mi := lab.ReadKV("/proc/meminfo")
	s.Used = (mi["MemTotal"] - mi["MemFree"] - mi["Buffers"] - mi["Cached"]) << 10
	s.Slab = mi["Slab"] << 10
	s.TCPInuse, s.TCPTimeWait, s.TCPMem = lab.Sockstat(nsPid)
	for _, pid := range balancer {
		s.BalancerRSS += lab.ProcRSS(pid)
		fds, socks := lab.ProcFDs(pid)
		s.BalancerFDs += fds
		s.BalancerSockets += socks
		s.BPFMemlock += lab.SumMemlock(lab.ProcBPFMaps(pid))
	}
	for _, pid := range clients {
		s.ClientRSS += lab.ProcRSS(pid)
	}
	return s
}
