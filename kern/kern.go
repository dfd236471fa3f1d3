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
)

// Slots of xlb_progs (XLB_PROG_BIND, XLB_PROG_MAIN).
const (
	ProgBindSlot  = 0
	ProgMainSlot  = 1
	ProgSlowSlot  = 2
	ProgXlateSlot = 3
)

// Counter indexes the per-CPU array xlb_stats (enum xlb_counter in structs.h).
type Counter uint32

const (
	CounterPass Counter = iota
	CounterDrop
	CounterTX
	CounterRedirect
	CounterAborted
	CounterNotIPv4
	CounterNotTCP
	CounterMalformed
	CounterTCP
	CounterForeign
	CounterSyn
	CounterClientLeg
	CounterWorkerSynack
	CounterBind
	CounterFwdToWorker
	CounterFwdToClient
	CounterNoIdleLeg
	CounterStaleAcked
	CounterImplausible
	CounterRSTIgnored
	CounterUnboundACK
	CounterBadOptions
	CounterFINAnswered
	CounterLegClosed
	CounterEventLost
	CounterUnsolicited
	CounterHSData
	CounterFIBFail
	CounterDeadLeg
	CounterRequest
	CounterRemix
	CounterRemixNoIdle
	CounterStayGap
	CounterStayResponse
	CounterStayRequest
	CounterRetired
	CounterParkedDrop
	CounterReleased
	CounterRematch
	CounterTailFail
	CounterBindRace
	CounterPinTLS
	CounterPinUpgrade
	CounterPinInterim
	CounterPinPipelined
	CounterPinNotMsg
	CounterPinRaw
	CounterPinUnknown
	CounterPinStateful
	CounterInterim
	CounterStayPinned
	CounterStayTail
	CounterClientLeft
	CounterUnserved
	CounterMax
)

var counterNames = [CounterMax]string{
	CounterPass:         "pass",
	CounterDrop:         "drop",
	CounterTX:           "tx",
	CounterRedirect:     "redirect",
	CounterAborted:      "aborted",
	CounterNotIPv4:      "not_ipv4",
	CounterNotTCP:       "not_tcp",
	CounterMalformed:    "malformed",
	CounterTCP:          "tcp",
	CounterForeign:      "foreign",
	CounterSyn:          "syn",
	CounterClientLeg:    "client_leg",
	CounterWorkerSynack: "worker_synack",
	CounterBind:         "bind",
	CounterFwdToWorker:  "fwd_to_worker",
	CounterFwdToClient:  "fwd_to_client",
	CounterNoIdleLeg:    "no_idle_leg",
	CounterStaleAcked:   "stale_acked",
	CounterImplausible:  "implausible",
	CounterRSTIgnored:   "rst_ignored",
	CounterUnboundACK:   "unbound_ack",
	CounterBadOptions:   "bad_options",
	CounterFINAnswered:  "fin_answered",
	CounterLegClosed:    "leg_closed",
	CounterEventLost:    "event_lost",
	CounterUnsolicited:  "unsolicited",
	CounterHSData:       "hs_data",
	CounterFIBFail:      "fib_fail",
	CounterDeadLeg:      "dead_leg",
	CounterRequest:      "request",
	CounterRemix:        "remix",
	CounterRemixNoIdle:  "remix_no_idle",
	CounterStayGap:      "stay_gap",
	CounterStayResponse: "stay_response",
	CounterStayRequest:  "stay_request",
	CounterRetired:      "retired",
	CounterParkedDrop:   "parked_drop",
	CounterReleased:     "released",
	CounterRematch:      "rematch",
	CounterTailFail:     "tail_fail",
	CounterBindRace:     "bind_race",
	CounterPinTLS:       "pin_tls",
	CounterPinUpgrade:   "pin_upgrade",
	CounterPinInterim:   "pin_interim",
	CounterPinPipelined: "pin_pipelined",
	CounterPinNotMsg:    "pin_not_msg",
	CounterPinRaw:       "pin_raw",
	CounterPinUnknown:   "pin_unknown",
	CounterPinStateful:  "pin_stateful",
	CounterInterim:      "interim",
	CounterStayPinned:   "stay_pinned",
	CounterStayTail:     "stay_tail",
	CounterClientLeft:   "client_left",
	CounterUnserved:     "unserved",
}

func (c Counter) String() string {
	if c < CounterMax {
		return counterNames[c]
	}
	return "unknown"
}
