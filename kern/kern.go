// Package kern embeds the XDP program built from the C sources in this folder
// and mirrors the layouts it shares with user space (structs.h).
package kern

import _ "embed"

// Object is the ELF object built by `make` from bpf/xlb.c (clang -target bpf).
//
//go:embed bpf/xlb.o
var Object []byte

// Names of the programs and maps in Object.
const (
	ProgramName    = "xlb_xdp"   // the one attached
	BindProgName   = "xlb_bind"  // tail-called by xlb_xdp to bind a client leg
	SlowProgName   = "xlb_slow"  // tail-called by xlb_xdp for all but the fast path
	XlateProgName  = "xlb_xlate" // tail-called by xlb_slow to translate
	CtlProgName    = "xlb_ctl"   // run by user space with BPF_PROG_TEST_RUN
	StatsMapName   = "xlb_stats"
	ConfigMapName  = "xlb_config"
	LegsMapName    = "xlb_legs"
	BindsMapName   = "xlb_binds"
	HandshakesName = "xlb_hs"
	DialsName      = "xlb_dials"
	PoolMapName    = "xlb_pool"
	ReadyMapName   = "xlb_ready"
	SchedMapName   = "xlb_sched"
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
	HeldMapName    = "xlb_held"
	SynBudgetName  = "xlb_syn_budget"
	FibMapName     = "xlb_fib"     // routed mode: next hops cached per CPU
	FibGenName     = "xlb_fib_gen" // element 0: their generation (NextHopsChanged)
)

// Slots of xlb_progs (XLB_PROG_BIND, XLB_PROG_MAIN).
const (
	ProgBindSlot  = 0
	ProgMainSlot  = 1
	ProgSlowSlot  = 2
	ProgXlateSlot = 3
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
