// Package kern embeds the XDP program built from the C sources in this folder
// and mirrors the layouts it shares with user space (structs.h).
package kern

import _ "embed"

// Object is the ELF object built by `make` from bpf/xlb.c (clang -target bpf).
//
//go:embed bpf/xlb.o
var Object []byte

// Names of the program and maps in Object.
const (
	ProgramName  = "xlb_xdp"
	StatsMapName = "xlb_stats"
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
	CounterMax
)

var counterNames = [CounterMax]string{
	CounterPass:      "pass",
	CounterDrop:      "drop",
	CounterTX:        "tx",
	CounterRedirect:  "redirect",
	CounterAborted:   "aborted",
	CounterNotIPv4:   "not_ipv4",
	CounterNotTCP:    "not_tcp",
	CounterMalformed: "malformed",
	CounterTCP:       "tcp",
}

func (c Counter) String() string {
	if c < CounterMax {
		return counterNames[c]
	}
	return "unknown"
}
