package main

// The network of a benchmark run (internal/lab: namespaces removed by
// Close, which also runs on Ctrl-C and SIGTERM; what a killed run left is
// removed by the next). Two topologies:
//
//   - lo (the default): clients, balancers and workers in one namespace,
//     all on its lo, where xlb's program runs in generic mode;
//   - veth: three namespaces, C (clients) -- L (the balancer) -- W
//     (workers), joined by two veth pairs; L routes between them. xlb runs
//     in native mode on both of L's ends with --routed, as on a host with a
//     front and a back interface: translated packets go from one end to
//     the other by XDP_REDIRECT after a FIB lookup and never enter L's
//     stack. direct is C to W through L's kernel forwarding; HAProxy runs
//     in L.

import (
	"context"
	"fmt"
	"strings"
	"time"

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

// Addresses and interfaces of the veth topology (those of reliability/'s
// C -- L -- W, over veth pairs instead of TAP links).
const (
	vethClientAddr = "10.1.0.2"
	vethFrontAddr  = "10.1.0.1" // L toward C: where the balancers listen
	vethBackAddr   = "10.2.0.1" // L toward W: the source of worker connections
	vethWorkerAddr = "10.2.0.2"
	vethClientIf   = "c0"
	vethFrontIf    = "l0"
	vethBackIf     = "l1"
	vethWorkerIf   = "w0"
)

// topology is where clients, balancers and workers run, and the addresses
// between them.
type topology struct {
	name                 string // "lo" or "veth"
	client, lb, workers  *lab.Netns
	workerHost, listenAt string // the workers' address; where balancers listen
	// xlbIface and xlbFlags: xlb's interface argument and the flags that
	// go with it (mode, listen address, routing).
	xlbIface string
	xlbFlags []string
	all      []*lab.Netns
}

var topologies = []string{"lo", "veth"}

// newTopology builds the network named name.
func newTopology(name string) (tp *topology, err error) {
	if err := lab.RaiseNofile(nofile); err != nil {
		return nil, err
	}
	lab.Logf = logf
	// A client that closes first leaves its side in TIME-WAIT, and every
	// client of the connection-per-request rows connects from one address
	// to one address: with the default 28,232 ephemeral ports, connect()
	// spends its time searching for a free one (TIME-WAIT is reused after
	// 1 s at the earliest), about 100 µs a connection at 15k/s. Ports from
	// ephemeralPorts up: no listening port of the harness is among them.
	ports := fmt.Sprintf("net.ipv4.ip_local_port_range=%d 65000", ephemeralPorts)
	tp = &topology{name: name}
	defer func() {
		if err != nil {
			tp.Close()
		}
	}()
	ns := func(turn string, sysctls ...string) (*lab.Netns, error) {
		n, err := lab.NewNetns(nsPrefix, turn, append([]string{ports}, sysctls...))
		if err == nil {
			tp.all = append(tp.all, n)
		}
		return n, err
	}
	switch name {
	case "lo":
		n, err := ns("run")
		if err != nil {
			return nil, err
		}
		tp.client, tp.lb, tp.workers = n, n, n
		tp.workerHost, tp.listenAt = "127.0.0.1", "127.0.0.1"
		tp.xlbIface = "lo"
		return tp, nil
	case "veth":
	default:
		return nil, fmt.Errorf("topology %q: want lo or veth", name)
	}
	if tp.client, err = ns("c"); err != nil {
		return nil, err
	}
	// L forwards (direct, and what xlb passes), and accepts packets that
	// carry its own addresses as their source (xlb's translated ones);
	// set for "default" before its interfaces exist, so they inherit it.
	var l []string
	for _, dev := range []string{"all", "default"} {
		l = append(l, "net.ipv4.conf."+dev+".accept_local=1", "net.ipv4.conf."+dev+".rp_filter=0",
			"net.ipv4.conf."+dev+".send_redirects=0")
	}
	if tp.lb, err = ns("l", append([]string{"net.ipv4.ip_forward=1"}, l...)...); err != nil {
		return nil, err
	}
	if tp.workers, err = ns("w"); err != nil {
		return nil, err
	}
	if err := lab.Veth(tp.client, vethClientIf, vethClientAddr+"/24", tp.lb, vethFrontIf, vethFrontAddr+"/24"); err != nil {
		return nil, err
	}
	if err := lab.Veth(tp.lb, vethBackIf, vethBackAddr+"/24", tp.workers, vethWorkerIf, vethWorkerAddr+"/24"); err != nil {
		return nil, err
	}
	for _, c := range []struct {
		ns        *lab.Netns
		gw, iface string
	}{{tp.client, vethFrontAddr, vethClientIf}, {tp.workers, vethBackAddr, vethWorkerIf}} {
		if _, _, err := c.ns.RunCtx(context.Background(), 10*time.Second, lab.Sbin("ip"), "route", "add", "default", "via", c.gw); err != nil {
			return nil, err
		}
		// A veth delivers the frames that L's native program sends on
		// (XDP_TX, XDP_REDIRECT) only to a peer that has an XDP program
		// too (GRO instead lost most of them here): xlb's own, without a
		// service, which passes every packet. It stays for every
		// configuration, so each pays it alike.
		if _, _, err := c.ns.RunCtx(context.Background(), 20*time.Second, xlbBin, "attach", "--mode", "native", c.iface); err != nil {
			return nil, err
		}
	}
	tp.workerHost, tp.listenAt = vethWorkerAddr, vethFrontAddr
	tp.xlbIface = vethFrontIf + "," + vethBackIf
	tp.xlbFlags = []string{"--mode", "native", "--routed", "--listen", vethFrontAddr}
	return tp, nil
}

// Close removes the namespaces (and with them the veth pairs and the
// programs attached to them).
func (tp *topology) Close() error {
	var first error
	for i := len(tp.all) - 1; i >= 0; i-- {
		if err := tp.all[i].Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// names of the namespaces, for the log.
func (tp *topology) names() string {
	var s []string
	for _, n := range tp.all {
		s = append(s, n.Name)
	}
	return strings.Join(s, ", ")
}
