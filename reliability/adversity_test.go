package reliability

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/splice/demo"
	"github.com/xlb-lb/xlb/testnet"
	"golang.org/x/sys/unix"
)

// endTimeout bounds how long a client may wait for the end of a response
// whose worker died.
const endTimeout = 20 * time.Second

// prefixChecker checks that what it is written is a prefix of want.
type prefixChecker struct {
	mu   sync.Mutex
	want []byte
	n    int
	bad  int // offset of the first wrong byte, -1 if none
}

func (p *prefixChecker) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n+len(b) > len(p.want) {
		p.bad = p.n
		return 0, fmt.Errorf("%d bytes beyond the %d of the body", p.n+len(b)-len(p.want), len(p.want))
	}
	if !bytes.Equal(b, p.want[p.n:p.n+len(b)]) && p.bad < 0 {
		for i := range b {
			if b[i] != p.want[p.n+i] {
				p.bad = p.n + i
				break
			}
		}
	}
	p.n += len(b)
	return len(b), nil
}

func (p *prefixChecker) got() (int, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n, p.bad
}

// TestWorkerKilled: the only worker dies (SIGKILL) in the middle of a 64 MB
// response under 1% loss. The client sees the end of the stream within
// endTimeout, and every byte it got is the right one.
func TestWorkerKilled(t *testing.T) {
	tp := newTopo(t, topoOpts{routed: routedForwarding(), workers: 1})
	rec := tp.record("drop 1%, worker SIGKILLed mid-response")
	tp.impair(testnet.Impairment{Drop: 0.01, Seed: 700})
	const size = 64 << 20
	c := tp.dial()
	pc := &prefixChecker{want: demo.Body(size), bad: -1}
	start := time.Now()
	c.SetDeadline(start.Add(endTimeout + 10*time.Second))
	fmt.Fprintf(c, "GET /bytes/%d HTTP/1.1\r\nHost: xlb\r\n\r\n", size)
	done := make(chan error, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			done <- err
			return
		}
		_, err = io.Copy(pc, resp.Body)
		resp.Body.Close()
		done <- err
	}()
	// Kill the worker once a megabyte went through.
	deadline := time.Now().Add(endTimeout)
	for n, _ := pc.got(); n < 1<<20; n, _ = pc.got() {
		if time.Now().After(deadline) {
			t.Fatalf("only %d bytes of the response within %v", n, endTimeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	tp.workers[0].Kill()
	killed := time.Now()
	var err error
	select {
	case err = <-done:
	case <-time.After(endTimeout):
		t.Fatalf("the client saw no end of the response %v after its worker died (hung connection)", endTimeout)
	}
	n, bad := pc.got()
	rec.fill(result{requests: 1, bytes: int64(n), took: time.Since(start)}, tp.linkStats())
	t.Logf("client got %d of %d bytes, then %v, %v after the kill", n, size, err, time.Since(killed).Round(time.Millisecond))
	if bad >= 0 {
		rec.Failures = 1
		t.Fatalf("byte %d of the response is wrong", bad)
	}
	if err == nil && n != size {
		t.Errorf("the response ended cleanly after %d of %d bytes", n, size)
	}
	c.Close()
	// Nothing of this client stays in the tables.
	tp.waitStatus(reapTimeout, "no client leg and no binding left", func(r testkit.StatusReport) bool {
		return r.Legs["client/bound"]+r.Legs["client/idle"]+r.Legs["client/closing"]+r.Legs["client/dead"]+r.Legs["bindings"] == 0
	})
}

// TestClientKilled: a client process dies (SIGKILL) while its 64 MB
// response streams under 2% loss. Its kernel resets the connection; every
// leg goes back to the baseline.
//
// It found a data-plane bug (fixed: rst_exact in kern/bpf/xlb.c). The dying
// client's FIN goes first; its kernel then answers the worker's in-flight
// segments, whose ack does not cover the FIN, with RSTs at seq = peer_hi - 1.
// Linux accepts a RST at RCV.NXT - 1 after a FIN (tcp_reset_check), so the
// worker's connection was gone while the data plane, accepting only
// peer_hi, kept both legs bound forever.
func TestClientKilled(t *testing.T) {
	tp := newTopo(t, topoOpts{routed: routedForwarding()})
	rec := tp.record("drop 2%, client SIGKILLed mid-response")
	start := time.Now()
	tp.impair(testnet.Impairment{Drop: 0.02, Seed: 800})
	st0 := tp.status()
	cl := testkit.Start(t, tp.c, "client", testkit.XLB, "demo-client", "--conns", "1", "--requests", "1",
		"--sizes", fmt.Sprint(256<<20), fmt.Sprintf("%s:%d", frontAddr, servicePort))
	tp.waitStatus(endTimeout, "the response streaming", func(r testkit.StatusReport) bool {
		return r.Counters["fwd_to_client"] > st0.Counters["fwd_to_client"]+500
	})
	cl.Kill()
	tp.impair(testnet.Impairment{})
	tp.waitBaseline(1)
	rec.fill(result{requests: 1, took: time.Since(start)}, tp.linkStats())
	// And the service still works.
	if res := tp.run(load{conns: 2, requests: 10, sizes: small}); len(res.failures) > 0 {
		t.Fatalf("after the killed client: %v", res.failures[0])
	}
}

// TestSYNFlood: SYNs from thousands of source ports (the flooder never
// completes a handshake) while real clients run under 1% loss. The real
// clients are all served, the flood creates no leg, and the tables are
// back to the baseline afterwards.
func TestSYNFlood(t *testing.T) {
	tp := newTopo(t, topoOpts{routed: routedForwarding()})
	rec := tp.record("drop 1%, SYN flood")
	// Spoofed sources, as a real flood: nobody answers the SYN-ACKs (L
	// cannot even resolve the addresses).
	tp.impair(testnet.Impairment{Drop: 0.01, Seed: 900})
	st0 := tp.status()
	syns := pick(5000, 40000)
	var wg sync.WaitGroup
	var sent int
	var floodErr error
	wg.Add(1)
	floodDone := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(floodDone)
		sent, floodErr = tp.flood(syns, func(rng *rand.Rand, i int) testkit.Segment {
			return testkit.Segment{Src: spoofed(i), Dst: front, SPort: uint16(1024 + i%64000), DPort: servicePort,
				Seq: rng.Uint32(), Flags: testkit.FlagSYN, Window: 64240}
		})
	}()
	res := tp.runDuring(floodDone, load{conns: 4, requests: pick(20, 200), sizes: small})
	wg.Wait()
	tp.impair(testnet.Impairment{})
	if floodErr != nil {
		t.Fatal(floodErr)
	}
	st := tp.status()
	rec.fill(res, tp.linkStats())
	t.Logf("%d SYNs sent; %d requests, %d bytes verified in %v; data plane learned %d SYNs, legs %v",
		sent, res.requests, res.bytes, res.took.Round(time.Millisecond), st.Counters["syn"]-st0.Counters["syn"], st.Legs)
	for _, err := range res.failures[:min(len(res.failures), 5)] {
		t.Errorf("request failed: %v", err)
	}
	if st.Counters["syn"]-st0.Counters["syn"] < uint64(sent/2) {
		t.Errorf("the data plane saw %d of %d SYNs", st.Counters["syn"]-st0.Counters["syn"], sent)
	}
	if n := st.Legs["client/idle"] + st.Legs["client/bound"]; n > 4 {
		t.Errorf("%d client legs for 4 real clients: the flood made legs", n)
	}
	tp.closeClients()
	tp.waitBaseline(4)
}

// TestRandomPackets: a burst of random TCP segments (random ports but the
// real clients', flags, seq, ack, options, payload, mostly wrong checksums)
// hits the service address while real clients run. Every real request is
// answered intact, and the tables are back to the baseline afterwards.
func TestRandomPackets(t *testing.T) {
	tp := newTopo(t, topoOpts{routed: routedForwarding()})
	rec := tp.record("random segments burst")
	st0 := tp.status()
	n := pick(5000, 50000)
	var wg sync.WaitGroup
	var sent int
	var floodErr error
	// From spoofed sources: no segment can belong to a real client's
	// connection, so any harm to those is the data plane's.
	wg.Add(1)
	floodDone := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(floodDone)
		sent, floodErr = tp.flood(n, func(rng *rand.Rand, i int) testkit.Segment {
			dport := uint16(servicePort)
			if rng.IntN(4) == 0 {
				dport = uint16(1 + rng.IntN(65535))
			}
			var opts []byte
			if rng.IntN(2) == 0 {
				opts = make([]byte, 4*rng.IntN(11))
				for j := range opts {
					opts[j] = byte(rng.UintN(256))
				}
			}
			payload := make([]byte, rng.IntN(200))
			for j := range payload {
				payload[j] = byte(rng.UintN(256))
			}
			return testkit.Segment{Src: spoofed(i), Dst: front, SPort: uint16(1024 + rng.IntN(64000)), DPort: dport,
				Seq: rng.Uint32(), Ack: rng.Uint32(), Flags: byte(rng.UintN(256)), Window: 64240,
				Options: opts, Payload: payload, BadCsum: rng.IntN(4) != 0}
		})
	}()
	res := tp.runDuring(floodDone, load{conns: 4, requests: pick(20, 200), sizes: small})
	wg.Wait()
	if floodErr != nil {
		t.Fatal(floodErr)
	}
	st := tp.status()
	rec.fill(res, tp.linkStats())
	t.Logf("%d random segments sent; %d requests, %d bytes verified in %v; data plane: tcp %d foreign %d malformed %d",
		sent, res.requests, res.bytes, res.took.Round(time.Millisecond), st.Counters["tcp"]-st0.Counters["tcp"],
		st.Counters["foreign"]-st0.Counters["foreign"], st.Counters["malformed"]-st0.Counters["malformed"])
	for _, err := range res.failures[:min(len(res.failures), 5)] {
		t.Errorf("request failed: %v", err)
	}
	if res.requests == 0 || res.requests%(4*pick(20, 200)) != 0 {
		t.Errorf("%d requests answered intact, want rounds of %d", res.requests, 4*pick(20, 200))
	}
	tp.closeClients()
	tp.waitBaseline(4)
}

// runDuring runs the load in rounds (each on new connections) until done is
// closed, at least once and at most maxRounds times.
func (tp *topo) runDuring(done <-chan struct{}, l load) result {
	const maxRounds = 100
	total := result{perWorker: map[string]int{}}
	for round := 0; round < maxRounds; round++ {
		r := tp.run(l)
		total.requests += r.requests
		total.bytes += r.bytes
		total.failures = append(total.failures, r.failures...)
		total.took += r.took
		if len(r.failures) > 0 {
			break
		}
		select {
		case <-done:
			return total
		default:
		}
	}
	return total
}

// flood sends n IPv4 TCP segments made by mk from C to the service address
// through a raw socket, as fast as the link takes them (bounded by n and by
// endTimeout).
func (tp *topo) flood(n int, mk func(rng *rand.Rand, i int) testkit.Segment) (int, error) {
	sent := 0
	err := testkit.RawIPv4(tp.c, func(send func([]byte) error) error {
		rng := rand.New(rand.NewPCG(uint64(n), 1))
		deadline := time.Now().Add(endTimeout)
		for i := 0; i < n && time.Now().Before(deadline); i++ {
			if err := send(mk(rng, i).IPv4()); err != nil {
				if err == unix.ENOBUFS || err == unix.EAGAIN {
					time.Sleep(time.Millisecond)
					continue
				}
				return fmt.Errorf("raw send: %w", err)
			}
			sent++
			if i%200 == 199 {
				time.Sleep(time.Millisecond) // the link forwarder is one core
			}
		}
		return nil
	})
	return sent, err
}

// front is the service address, for segments made by hand.
var front = netip.MustParseAddr(frontAddr)

// spoofed is the i-th of 100 source addresses next to C's that nobody owns.
func spoofed(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, 0, byte(100 + i%100)}) }

// takeOverDuringTraffic starts an xlb --reuse like the running one once
// clients' requests are under way, and waits until it took over and the old
// one exited. It runs in a goroutine of its own: errors are returned.
func (tp *topo) takeOverDuringTraffic() (*testkit.Proc, error) {
	old := tp.lb
	deadline := time.Now().Add(testkit.StartTimeout)
	for { // the data plane counts the requests: traffic is under way at a few
		r, err := testkit.StatusErr(tp.l, frontIface)
		if err != nil {
			return nil, err
		}
		if r.Counters["request"] >= 8 {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no traffic within %v before the takeover: counters %v", testkit.StartTimeout, r.Counters)
		}
		time.Sleep(50 * time.Millisecond)
	}
	args := append([]string{testkit.XLB, "--reuse"}, old.Args[1:]...)
	next, err := testkit.Spawn(tp.t, tp.l, "xlb (reuse)", args...)
	if err != nil {
		return nil, err
	}
	if err := next.AwaitLines("took over", 1, testkit.StartTimeout); err != nil {
		return next, err
	}
	if !old.Exited(testkit.StopTimeout) {
		return next, errors.New("the old xlb did not exit after the handover")
	}
	return next, nil
}

// TestReuseUnderLoss: the control plane restarts (xlb --reuse takes over the
// sockets and the data plane) while clients run under 1% loss both ways:
// no request fails, every body is intact, and the legs go back to the
// baseline afterwards.
func TestReuseUnderLoss(t *testing.T) {
	tp := newTopo(t, topoOpts{routed: routedForwarding()})
	rec := tp.record("drop 1%, xlb --reuse takeover during traffic")
	start := time.Now()
	tp.impair(testnet.Impairment{Drop: 0.01, Seed: 900})
	// The takeover runs in a goroutine while the test's drives the
	// traffic; it reports through next and err (t.Fatal belongs to the
	// test's goroutine), read once handedOver is closed.
	handedOver := make(chan struct{})
	var next *testkit.Proc
	var err error
	go func() {
		defer close(handedOver)
		next, err = tp.takeOverDuringTraffic()
	}()
	res := tp.runDuring(handedOver, load{conns: 4, requests: pick(20, 100), sizes: small})
	<-handedOver
	if err != nil {
		t.Fatal(err)
	}
	tp.lb = next
	rec.fill(res, tp.linkStats())
	rec.Took = time.Since(start) // the handover's, not only the clients'
	for i, err := range res.failures {
		if i < 3 {
			t.Error(err)
		}
	}
	if len(res.failures) > 0 {
		t.Fatalf("%d requests failed through the handover", len(res.failures))
	}
	if tp.lb.Count("took over") == 0 {
		t.Fatal("no handover happened during the traffic")
	}
	// More after it, then every leg goes.
	if r := tp.run(load{conns: 2, requests: 10, sizes: small}); len(r.failures) > 0 {
		t.Fatalf("after the handover: %v", r.failures[0])
	}
	tp.impair(testnet.Impairment{})
	tp.closeClients()
	tp.waitBaseline(6)
	t.Logf("%d requests, %d bytes verified through the handover in %v", res.requests, res.bytes, res.took)
}
