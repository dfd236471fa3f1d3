package main

// The private network namespace of a benchmark run (internal/lab: removed
// by Close, which also runs on Ctrl-C and SIGTERM; what a killed run left
// is removed by the next).

import (
	"fmt"

	"github.com/xlb-lb/xlb/internal/lab"
)

// nsPrefix starts the name of every namespace the harness makes; then its
// pid, so that leftovers of a killed run can be recognised.
const nsPrefix = "xlbb-"

// nofile is the open-file limit of the harness and of every process it
// starts: wrk -c1000 through a proxy needs two descriptors per connection
// and more.
const nofile = 20000

// ephemeralPorts is the first port of the namespace's ephemeral range,
// above every port the harness listens on (lbPort0 + 1000 at most).
const ephemeralPorts = 10000

func newNetns() (*lab.Netns, error) {
	if err := lab.RaiseNofile(nofile); err != nil {
		return nil, err
	}
	lab.Logf = logf
	// A client that closes first leaves its side in TIME-WAIT, and every
	// client of the connection-per-request rows connects from 127.0.0.1 to
	// one address: with the default 28,232 ephemeral ports, connect() spends
	// its time searching for a free one (TIME-WAIT is reused after 1 s at
	// the earliest), about 100 µs a connection at 15k/s. Ports from
	// ephemeralPorts up: no listening port of the harness is among them.
	return lab.NewNetns(nsPrefix, "run", []string{fmt.Sprintf("net.ipv4.ip_local_port_range=%d 65000", ephemeralPorts)})
}
