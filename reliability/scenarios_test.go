package reliability

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/testnet"
)

// routedForwarding: the scenarios run with xlb --routed (translated packets
// leave by XDP redirect) unless XLB_RELIABILITY_FORWARD=stack, which lets
// L's kernel forward them (xlb's behaviour without --routed).
func routedForwarding() bool { return os.Getenv("XLB_RELIABILITY_FORWARD") != "stack" }

func forwardingName(routed bool) string {
	if routed {
		return "xdp (--routed)"
	}
	return "L's stack"
}

// pick returns the long value under XLB_RELIABILITY=long.
func pick[T any](short, long_ T) T {
	if long {
		return long_
	}
	return short
}

// scenario is a load under an impairment of every link direction.
type scenario struct {
	imp  testnet.Impairment
	load load
	opts topoOpts
	// expectRemix: the default policy must have moved clients.
	expectRemix bool
	// drive, when set, is the client instead of load (a real protocol's):
	// it returns what it saw; want is the number of requests it must see
	// answered intact and clients the connections it opens.
	drive         func(tp *topo) result
	want, clients int
}

func describe(im testnet.Impairment) string {
	var parts []string
	if im.Drop > 0 {
		parts = append(parts, fmt.Sprintf("drop %g%%", im.Drop*100))
	}
	if im.Duplicate > 0 {
		parts = append(parts, fmt.Sprintf("duplicate %g%%", im.Duplicate*100))
	}
	if im.Reorder > 0 {
		k := im.ReorderAfter
		if k == 0 {
			k = 3
		}
		parts = append(parts, fmt.Sprintf("reorder %g%% (after %d)", im.Reorder*100, k))
	}
	if im.Delay > 0 {
		parts = append(parts, fmt.Sprintf("delay %v", im.Delay))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ") + fmt.Sprintf(", seed %d", im.Seed)
}

func linkSummary(s testnet.Stats) string {
	return fmt.Sprintf("%d frames: %d dropped, %d duplicated, %d reordered", s.In, s.Dropped, s.Duplicated, s.Reordered)
}

// runScenario builds the topology, impairs every link direction, drives the
// load and checks: every request answered with the exact bytes, no checksum
// error in any kernel, the impairment really applied, traffic really
// translated, and every leg back to the baseline once the clients leave.
func runScenario(t *testing.T, s scenario) {
	s.opts.routed = routedForwarding()
	tp := newTopo(t, s.opts)
	rec := tp.record(describe(s.imp))
	csum0, st0, link0 := tp.csumErrors(), tp.status(), tp.linkStats()
	tp.impair(s.imp)
	want, clients := s.load.conns*s.load.requests, s.load.conns
	var res result
	if s.drive != nil {
		want, clients = s.want, s.clients
		res = s.drive(tp)
	} else {
		res = tp.run(s.load)
	}
	tp.impair(testnet.Impairment{})
	link := tp.linkStats()
	link.In -= link0.In
	rec.fill(res, link)
	t.Logf("%d requests, %d bytes verified in %v, %d failures; workers %v; links %s",
		res.requests, res.bytes, res.took.Round(time.Millisecond), len(res.failures), res.perWorker, linkSummary(link))
	for _, err := range res.failures[:min(len(res.failures), 5)] {
		t.Errorf("request failed: %v", err)
	}
	if res.requests != want {
		t.Errorf("%d requests answered intact, want %d", res.requests, want)
	}
	if d := tp.csumErrors() - csum0; d != 0 {
		t.Errorf("kernels of C, L and W counted %d TCP checksum errors", d)
	}
	// (A client that failed at once may have sent too little to see every
	// impairment: not worth a second error.)
	if len(res.failures) == 0 && (s.imp.Drop > 0 && link.Dropped == 0 || s.imp.Duplicate > 0 && link.Duplicated == 0 || s.imp.Reorder > 0 && link.Reordered == 0) {
		t.Errorf("the impairment was not applied: %+v", link)
	}
	st := tp.status()
	delta := func(name string) uint64 { return st.Counters[name] - st0.Counters[name] }
	if delta("fwd_to_worker") == 0 || delta("fwd_to_client") == 0 {
		t.Errorf("the data plane translated nothing: counters %v", st.Counters)
	}
	if s.opts.routed && delta("redirect")+delta("tx") == 0 {
		t.Errorf("--routed, yet no packet left by XDP_TX or XDP_REDIRECT: counters %v", st.Counters)
	}
	if s.expectRemix && delta("remix") == 0 {
		t.Errorf("no remix under the default policy: counters %v", st.Counters)
	}
	t.Logf("data plane: fwd_to_worker %d fwd_to_client %d redirect %d tx %d pass %d remix %d implausible %d fib_fail %d",
		delta("fwd_to_worker"), delta("fwd_to_client"), delta("redirect"), delta("tx"), delta("pass"), delta("remix"), delta("implausible"), delta("fib_fail"))
	if t.Failed() {
		return
	}
	// The clients leave: every leg must go (zero hung connections).
	tp.closeClients()
	tp.waitBaseline(clients)
}

// closeClients runs the test's cleanups of the client connections now: the
// clients close (FIN).
func (tp *topo) closeClients() {
	for _, c := range tp.clients {
		c.Close()
	}
}

var small = []int{100, 1000, 10000, 100000}

func TestClean(t *testing.T) {
	runScenario(t, scenario{load: load{conns: 4, requests: pick(20, 200), sizes: small}})
}

func TestLoss(t *testing.T) {
	runScenario(t, scenario{
		imp:  testnet.Impairment{Drop: 0.02, Seed: 100},
		load: load{conns: 4, requests: pick(20, 300), sizes: small},
	})
}

func TestReorder(t *testing.T) {
	runScenario(t, scenario{
		imp:  testnet.Impairment{Reorder: 0.05, Seed: 200},
		load: load{conns: 4, requests: pick(20, 300), sizes: small},
	})
}

func TestDuplicate(t *testing.T) {
	runScenario(t, scenario{
		imp:  testnet.Impairment{Duplicate: 0.01, Seed: 300},
		load: load{conns: 4, requests: pick(20, 300), sizes: small},
	})
}

func TestCombined(t *testing.T) {
	runScenario(t, scenario{
		imp:  testnet.Impairment{Drop: 0.02, Duplicate: 0.01, Reorder: 0.05, Delay: time.Millisecond, Seed: 400},
		load: load{conns: 4, requests: pick(20, 300), sizes: small},
	})
}

// TestIPv6Combined: TestCombined over IPv6 (every address of the topology,
// the service's and the workers'): the IPv6 programs translate, remix and
// route under loss, duplication and reordering.
func TestIPv6Combined(t *testing.T) {
	runScenario(t, scenario{
		imp:         testnet.Impairment{Drop: 0.02, Duplicate: 0.01, Reorder: 0.05, Delay: time.Millisecond, Seed: 410},
		load:        load{conns: 4, requests: pick(20, 300), sizes: small},
		opts:        topoOpts{ipv6: true},
		expectRemix: true,
	})
}

// TestIPv6LargeUnderLoss: 16 MB answers over IPv6 under loss.
func TestIPv6LargeUnderLoss(t *testing.T) {
	runScenario(t, scenario{
		imp:  testnet.Impairment{Drop: 0.02, Seed: 510},
		load: load{conns: 1, requests: pick(2, 8), sizes: []int{16 << 20}},
		opts: topoOpts{ipv6: true},
	})
}

func TestLargeUnderLoss(t *testing.T) {
	runScenario(t, scenario{
		imp:  testnet.Impairment{Drop: 0.02, Seed: 500},
		load: load{conns: 1, requests: pick(2, 8), sizes: []int{16 << 20}},
	})
}

func TestManyShortRemix(t *testing.T) {
	runScenario(t, scenario{
		imp:         testnet.Impairment{Drop: 0.02, Reorder: 0.05, Seed: 600},
		load:        load{conns: 8, requests: pick(40, 500), sizes: []int{10, 100, 1000, 3000}},
		expectRemix: true,
	})
}

// TestConnPerRequestImpaired: clients that open a connection per request
// (connect, one GET, close) under loss, duplication and reordering: the
// data plane answers every handshake itself (SYN-ACKs and handshake ACKs
// lost, duplicated, reordered, data before the ACK), and every client's
// FIN; every body arrives intact and the legs go back to the baseline.
func TestConnPerRequestImpaired(t *testing.T) {
	const clients = 8
	requests := pick(15, 150)
	runScenario(t, scenario{
		imp:     testnet.Impairment{Drop: 0.03, Duplicate: 0.02, Reorder: 0.05, Seed: 1700},
		want:    clients * requests,
		clients: clients,
		drive: func(tp *topo) result {
			st0 := tp.status()
			res := tp.runPerConnection(clients, requests, small, false)
			st := tp.status()
			if d := st.Counters["syn_answered"] - st0.Counters["syn_answered"]; d < uint64(res.requests) {
				tp.t.Errorf("the data plane answered %d SYNs for %d connections", d, res.requests)
			}
			return res
		},
	})
}

// TestHTTP10Impaired: HTTP/1.0 clients (a connection per request, no
// keep-alive, reading to the end of the connection) under loss, duplication
// and reordering. The data plane grows each request by "Connection:
// keep-alive" (a retransmitted request again, identically), frames the
// answer, puts a FIN on its last segment (on a retransmitted one again) and
// keeps the worker's connection: every body intact and followed by the end
// of its connection, every client closed by the data plane (framed_close),
// the worker connections reused.
func TestHTTP10Impaired(t *testing.T) {
	const clients = 8
	requests := pick(15, 150)
	runScenario(t, scenario{
		imp:     testnet.Impairment{Drop: 0.03, Duplicate: 0.02, Reorder: 0.05, Seed: 1800},
		want:    clients * requests,
		clients: clients,
		drive: func(tp *topo) result {
			st0 := tp.status()
			res := tp.runPerConnection(clients, requests, small, true)
			// A client's ACK of our FIN (which frames the close) may
			// still be on its way when the client has read the end.
			st := tp.waitStatus(10*time.Second, "a framed close for every client", func(st testkit.StatusReport) bool {
				return st.Counters["framed_close"]-st0.Counters["framed_close"] >= uint64(res.requests)
			})
			delta := func(name string) uint64 { return st.Counters[name] - st0.Counters[name] }
			var moved []string
			for name := range st.Counters {
				if d := delta(name); d != 0 {
					moved = append(moved, fmt.Sprintf("%s %d", name, d))
				}
			}
			sort.Strings(moved)
			tp.t.Logf("counters: %s", strings.Join(moved, ", "))
			if d := delta("keep_http10"); d != uint64(res.requests+len(res.failures)) {
				tp.t.Errorf("keep_http10 +%d for %d HTTP/1.0 requests", d, res.requests+len(res.failures))
			}
			if d := delta("framed_close"); d != uint64(res.requests) {
				tp.t.Errorf("framed_close +%d for %d HTTP/1.0 clients", d, res.requests)
			}
			if d := delta("worker_synack"); d > uint64(res.requests/4) {
				tp.t.Errorf("%d worker connections opened for %d clients: not kept", d, res.requests)
			}
			return res
		},
	})
}
