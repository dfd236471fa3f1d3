// Package kern embeds the XDP program built from the C sources in this folder
// and mirrors the layouts it shares with user space (structs.h).
package kern

import _ "embed"

// Object is the ELF object built by `make` from bpf/xlb.c (clang -target bpf).
//
//go:embed bpf/xlb.o
var Object []byte

// Object6 is the same C built for IPv6 (bpf/ipfam.h): programs named with a
// 6, loaded with Object's maps, in the tail-call slots after Object's.
// Object's xlb_xdp hands it every IPv6 frame.
//
//go:embed bpf/xlb6.o
var Object6 []byte

// Names of the programs and maps in Object.
const (
	ProgramName   = "xlb_xdp"   // the one attached
	BindProgName  = "xlb_bind"  // tail-called by xlb_xdp to bind a client leg
	SlowProgName  = "xlb_slow"  // tail-called by xlb_xdp for all but the fast path
	XlateProgName = "xlb_xlate" // tail-called by xlb_slow to translate
	CtlProgName   = "xlb_ctl"   // run by user space with BPF_PROG_TEST_RUN
	// The IPv6 programs of Object6: the same stages.
	ProgramName6   = "xlb_xdp6"
	BindProgName6  = "xlb_bind6"
	SlowProgName6  = "xlb_slow6"
	XlateProgName6 = "xlb_xlate6"
	StatsMapName   = "xlb_stats"
	ConfigMapName  = "xlb_config"
	LegsMapName    = "xlb_legs"
	BindsMapName   = "xlb_binds"
	HandshakesName = "xlb_hs"
	DialsName      = "xlb_dials"
	PoolMapName    = "xlb_pool"
	ReadyMapName   = "xlb_ready"
	ReadyMapName6  = "xlb_ready6" // the IPv6 workers' tokens
	SchedMapName   = "xlb_sched"
	SchedMapName6  = "xlb_sched6" // the IPv6 workers' schedule
	RRMapName      = "xlb_rr"
	WLoadMapName   = "xlb_wload"
	RematchMapName = "xlb_rematch"
	ProgsMapName   = "xlb_progs"
	SyncMapName    = "xlb_sync"
	PortsMapName   = "xlb_ports"
	WorkersMapName = "xlb_workers"
	WStatsMapName  = "xlb_wstats"
	WCfgMapName    = "xlb_wcfg"
	RetiredMapName = "xlb_retired"
	CoolingMapName = "xlb_cooling"
	EventsMapName  = "xlb_events"
	ReqLogMapName  = "xlb_reqlog"
	HeldMapName    = "xlb_held"
	SynBudgetName  = "xlb_syn_budget"
	FibMapName     = "xlb_fib"     // routed mode: next hops cached per CPU
	FibMapName6    = "xlb_fib6"    // ... IPv6's (Object6 only)
	FibGenName     = "xlb_fib_gen" // element 0: their generation (NextHopsChanged)
)

// Slots of xlb_progs (XLB_PROG_BIND, XLB_PROG_MAIN); IPv6's programs take
// the same slots plus ProgSlots6 (ipfam.h PROG_SLOT).
const (
	ProgBindSlot  = 0
	ProgMainSlot  = 1
	ProgSlowSlot  = 2
	ProgXlateSlot = 3
	ProgSlots6    = 4
)

// Counter indexes the per-CPU array xlb_stats (enum xlb_counter in
// structs.h; the constants, CounterPass to CounterMax, and their names are in
// zlayout.go).
type Counter uint32

func (c Counter) String() string {
	if c < CounterMax {
		return counterNames[c]
	}
	return "unknown"
}
