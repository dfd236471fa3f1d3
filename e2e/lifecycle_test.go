package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/internal/testproto"
	"github.com/xlb-lb/xlb/splice/demo"
	"github.com/xlb-lb/xlb/testnet"
)

// reapTimeout bounds the wait for a finished leg to be forgotten: the linger
// (3 s) plus the reaper's tick, plus the pool's refill, with room to spare.
const reapTimeout = 15 * time.Second

// lifecyclePool is the --pool of these tests: small, so that a leak of one
// leg is visible in the counts.
const lifecyclePool = 4

// baselineLegs is the leg table of an xlb whose pools are full and which
// has no client: only idle worker legs.
func baselineLegs(workers int) map[string]int {
	return map[string]int{"worker/idle": workers * lifecyclePool}
}

// waitBaseline waits until the leg table is back to its baseline and the
// leg_closed counter moved by at least closed since from; it returns the
// status then. The sockets on port 8080 must be those of the start
// (baseSockets): the listener, and the TIME-WAIT of xlb's own probe of it.
func waitBaseline(t *testing.T, ns *testnet.NS, workers int, baseSockets []string, from testkit.StatusReport, closed uint64, what string) testkit.StatusReport {
	t.Helper()
	want := baselineLegs(workers)
	r := testkit.WaitStatus(t, ns, "lo", reapTimeout, what+": legs back to "+fmt.Sprint(want)+" (idle up to 2 more per worker)", func(r testkit.StatusReport) bool {
		return atBaseline(r.Legs, workers) && r.Counters["leg_closed"] >= from.Counters["leg_closed"]+closed
	})
	if s := testkit.Sockets(t, ns, "all", "( sport = :8080 )"); strings.Join(s, "\n") != strings.Join(baseSockets, "\n") {
		t.Errorf("%s: sockets on port 8080:\n%s\nwant those of the start:\n%s", what, strings.Join(s, "\n"), strings.Join(baseSockets, "\n"))
	}
	// The workers' connections are the pools' legs: read both until they
	// agree (a pool may be opening or losing one as we look). xlb holds no
	// socket of them: it dialed them from the data plane (--dial auto, on
	// lo).
	var s []string
	for i := 0; i < 50; i++ {
		s = testkit.Sockets(t, ns, "established", "( sport >= :4171 and sport <= :4173 )")
		if r = testkit.Status(t, ns, "lo"); len(s) == r.Legs["worker/idle"] && atBaseline(r.Legs, workers) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(s) != r.Legs["worker/idle"] {
		t.Errorf("%s: the workers hold %d connections, want the %d idle legs of the pools:\n%s", what, len(s), r.Legs["worker/idle"], strings.Join(s, "\n"))
	}
	if own := testkit.Sockets(t, ns, "established", "( dport >= :4171 and dport <= :4173 )"); len(own) > 0 {
		t.Errorf("%s: xlb holds %d sockets to its workers, want none (dialed connections):\n%s", what, len(own), strings.Join(own, "\n"))
	}
	return r
}

// TestClientCloseAndReset: clients that go away in every way (close or reset,
// idle or in the middle of a request or a response) leave nothing behind:
// every leg is reaped, the leg table returns to its baseline, the pools are
// full again, and no socket of xlb stays open.
func TestClientCloseAndReset(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 3)
	lb := // Sticky: no remix moves legs between pools meanwhile.
		startXLB(t, ns, "lo", 8080, workers, append(testkit.OwnSocket(t), "--policy", "sticky", "--pool", fmt.Sprint(lifecyclePool))...)
	r := testkit.WaitStatus(t, ns, "lo", testkit.StartTimeout, "full pools", func(r testkit.StatusReport) bool {
		return testkit.SameLegs(r.Legs, baselineLegs(len(workers)))
	})
	baseSockets := testkit.Sockets(t, ns, "all", "( sport = :8080 )")
	const n = 5 // clients per case
	large := demo.Body(8 << 20)
	cases := []struct {
		name string
		// closed is the least number of legs each client's end finishes:
		// its own, plus its worker leg when it was bound.
		closed uint64
		run    func(c *client) error
	}{
		{"close idle", 1, func(c *client) error { return c.c.Close() }},
		// The worker leg goes back to its pool: the client left between
		// two exchanges.
		{"requests then close", 1, func(c *client) error {
			for i := 0; i < 3; i++ {
				if _, _, err := c.get(fmt.Sprintf("/bytes/%d", 1000+i)); err != nil {
					return err
				}
			}
			return c.c.Close()
		}},
		{"reset idle", 1, func(c *client) error { return reset(c) }},
		{"requests then reset idle", 2, func(c *client) error {
			if _, _, err := c.get("/bytes/5000"); err != nil {
				return err
			}
			return reset(c)
		}},
		{"half a request then reset", 2, func(c *client) error {
			binds := testkit.Status(t, ns, "lo").Counters["bind"]
			if _, err := c.c.Write([]byte("GET /bytes/100 HTTP/1.1\r\nHo")); err != nil {
				return err
			}
			// The partial request went to a worker through a binding
			// before the reset goes: wait for the binding.
			if err := waitBind(t, ns, binds); err != nil {
				return err
			}
			return reset(c)
		}},
		{"reset mid-response", 2, func(c *client) error {
			c.c.SetDeadline(time.Now().Add(ioTimeout))
			if _, err := fmt.Fprintf(c.c, "GET /bytes/%d HTTP/1.1\r\nHost: xlb\r\n\r\n", len(large)); err != nil {
				return err
			}
			// Read a part of the body, checked, then go away.
			buf := make([]byte, 256<<10)
			got := 0
			var head []byte
			for got < len(buf) {
				m, err := c.r.Read(buf[got:])
				if err != nil {
					return err
				}
				got += m
			}
			head = buf[:got]
			i := strings.Index(string(head), "\r\n\r\n")
			if i < 0 || !strings.HasPrefix(string(head), "HTTP/1.1 200") {
				return fmt.Errorf("no response header in the first %d bytes", got)
			}
			if body := head[i+4:]; string(body) != string(large[:len(body)]) {
				return fmt.Errorf("the first %d bytes of the body differ", len(body))
			}
			return reset(c)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := r
			for i := 0; i < n; i++ {
				c := dialFrom(t, ns, "", "127.0.0.1:8080")
				if err := tc.run(c); err != nil {
					t.Fatalf("client %d: %v", i, err)
				}
			}
			r = waitBaseline(t, ns, len(workers), baseSockets, before, n*tc.closed, tc.name)
			t.Logf("%s: leg_closed +%d, fin_answered +%d, binds +%d", tc.name,
				r.Counters["leg_closed"]-before.Counters["leg_closed"],
				r.Counters["fin_answered"]-before.Counters["fin_answered"],
				r.Counters["bind"]-before.Counters["bind"])
		})
	}
	// The load balancer still serves after all that.
	c := dialFrom(t, ns, "", "127.0.0.1:8080")
	if _, _, err := c.get("/bytes/100000"); err != nil {
		t.Fatalf("request after the closes and resets: %v", err)
	}
	lb.Stop()
}

// reset makes the client's close a RST: linger 0, then close.
func reset(c *client) error {
	if err := c.c.(*net.TCPConn).SetLinger(0); err != nil {
		return err
	}
	return c.c.Close()
}

// waitBind polls until the bind counter passes since.
func waitBind(t *testing.T, ns *testnet.NS, since uint64) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := testkit.Status(t, ns, "lo")
		if r.Counters["bind"] > since {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no binding within 5s: legs %v", r.Legs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWorkerIdleTimeout: nginx workers close keep-alive connections idle for
// more than a second, pool legs included. The data plane completes those
// closes itself, the legs die, the pools refill, and clients that come after
// are served, every body intact.
func TestWorkerIdleTimeout(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	sizes := []int{1, 1000, 100000, 1 << 20}
	root := testproto.WebRoot(t, sizes...)
	var workers []string
	for i := 0; i < 3; i++ {
		port := 4171 + i
		// A pool leg that never carried a request is closed after
		// client_header_timeout; one that did, after keepalive_timeout.
		startNginx(t, ns, port, root, "keepalive_timeout 1s; client_header_timeout 1s;")
		workers = append(workers, fmt.Sprintf("127.0.0.1:%d", port))
	}
	lb := startXLB(t, ns, "lo", 8080, workers, append(testkit.OwnSocket(t), "--pool", fmt.Sprint(lifecyclePool))...)
	full := len(workers) * lifecyclePool

	// Every leg of the first fill is closed by nginx after a second; the
	// data plane answers each FIN; the pools refill. Wait for two rounds of
	// that, so that the refilled legs are known to die and refill too.
	r0 := testkit.Status(t, ns, "lo")
	r := testkit.WaitStatus(t, ns, "lo", 10*time.Second, "two rounds of idle legs closed by nginx", func(r testkit.StatusReport) bool {
		return r.Counters["fin_answered"] >= r0.Counters["fin_answered"]+uint64(2*full) &&
			r.Counters["leg_closed"] >= r0.Counters["leg_closed"]+uint64(2*full)
	})
	t.Logf("idle legs closed by nginx and answered by the data plane: fin_answered %d, leg_closed %d",
		r.Counters["fin_answered"], r.Counters["leg_closed"])
	// At least full: a worker that ends connections gets a share of its
	// turnover on top (refillHorizon).
	testkit.WaitStatus(t, ns, "lo", 5*time.Second, "pools refilled", func(r testkit.StatusReport) bool {
		return r.Legs["worker/idle"] >= full
	})

	// New clients are served by the refilled pools.
	for i := 0; i < 12; i++ {
		c := dialFrom(t, ns, "", "127.0.0.1:8080")
		for _, n := range sizes {
			if err := c.getWant(fmt.Sprintf("/b%d", n), demo.Body(n)); err != nil {
				r := testkit.Status(t, ns, "lo")
				t.Fatalf("client %d, %d bytes: %v\nlegs %v\ncounters %v", i, n, err, r.Legs, r.Counters)
			}
		}
		c.c.Close()
	}
	r = testkit.Status(t, ns, "lo")
	if r.Counters["no_idle_leg"] != 0 {
		t.Errorf("%d client segments found no idle leg", r.Counters["no_idle_leg"])
	}

	// A client that stays idle longer than keepalive_timeout: nginx closes
	// its worker leg, the FIN reaches the client through the binding, and
	// both legs are finished once the client closes too.
	r0 = testkit.Status(t, ns, "lo")
	c := dialFrom(t, ns, "", "127.0.0.1:8080")
	if err := c.getWant("/b1000", demo.Body(1000)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.c.SetDeadline(time.Now().Add(ioTimeout))
	if n, err := c.r.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle client: read %d bytes, %v; want EOF from nginx's keepalive_timeout", n, err)
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Errorf("idle client got EOF after %v, before nginx's keepalive_timeout (1s)", d)
	} else {
		t.Logf("idle client got nginx's FIN after %v", d.Round(time.Millisecond))
	}
	c.c.Close()
	testkit.WaitStatus(t, ns, "lo", reapTimeout, "the idle client's legs reaped and pools full", func(r testkit.StatusReport) bool {
		return r.Legs["client/bound"]+r.Legs["client/dead"]+r.Legs["bindings"]+r.Legs["worker/bound"] == 0 &&
			r.Legs["worker/idle"] >= full && r.Counters["leg_closed"] >= r0.Counters["leg_closed"]+2
	})
	lb.Stop()
}

// TestWorkerKilledAndRestarted: a worker dies with legs idle and bound. Its
// legs die, xlb reports it down while it cannot connect, the other workers
// serve every new client; once it is back on the same port, xlb reports it
// up, the pools refill and new clients reach it again.
func TestWorkerKilledAndRestarted(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	addrs := []string{"127.0.0.1:4171", "127.0.0.1:4172", "127.0.0.1:4173"}
	procs := startWorkersAt(t, ns, addrs...)
	// Sticky: the clients below are tied to the worker that dies (with the
	// default policy their next request would simply go elsewhere).
	sock := testkit.OwnSocket(t)
	lb := startXLB(t, ns, "lo", 8080, addrs, append(sock, "--policy", "sticky", "--pool", fmt.Sprint(lifecyclePool))...)
	full := len(addrs) * lifecyclePool
	testkit.WaitStatus(t, ns, "lo", testkit.StartTimeout, "full pools", func(r testkit.StatusReport) bool { return r.Legs["worker/idle"] == full })

	// Clients bound to every worker, one request each so far; w2 gets two.
	bound := map[string][]*client{}
	for i := 0; i < 60 && (len(bound["w1"]) == 0 || len(bound["w2"]) < 2 || len(bound["w3"]) == 0); i++ {
		c := dialFrom(t, ns, "", "127.0.0.1:8080")
		w, _, err := c.get("/bytes/1000")
		if err != nil {
			t.Fatalf("client %d before the kill: %v", i, err)
		}
		bound[w] = append(bound[w], c)
	}
	if len(bound["w2"]) < 2 {
		t.Fatalf("fewer than 2 of 60 clients reached w2: %v", bound)
	}
	// One client of w2 has a request in flight when it dies: the body is
	// 8 MB and it reads none of it yet, so the worker is blocked writing.
	inflight, idle := bound["w2"][0], bound["w2"][1:]
	inflight.c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := fmt.Fprintf(inflight.c, "GET /bytes/%d HTTP/1.1\r\nHost: xlb\r\n\r\n", 8<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := inflight.r.Peek(1); err != nil {
		t.Fatalf("in-flight request: %v", err)
	}
	// The pools grow by the connections now busy (each worker its share):
	// wait until they stop changing, then count w2's.
	var last map[string]int
	r0 := testkit.WaitStatus(t, ns, "lo", 5*time.Second, "pools refilled after the binds", func(r testkit.StatusReport) bool {
		settled := last != nil && testkit.SameLegs(last, r.Legs) && r.Legs["worker/idle"] > 0
		last = r.Legs
		if !settled {
			time.Sleep(300 * time.Millisecond)
		}
		return settled
	})
	w2Legs := ctlWorkers(t, ns, sock[1])[addrs[1]].Legs

	procs[1].Kill()
	lb.WaitLines("worker down", 1, 10*time.Second)
	for _, l := range strings.Split(lb.Output(), "\n") {
		if strings.Contains(l, "worker down") && !strings.Contains(l, "worker=127.0.0.1:4172") {
			t.Errorf("a worker that was not killed is reported down: %s", l)
		}
	}
	// Its kernel closes the dead worker's connections. The idle clients of
	// w2 see the end of their connection; the one in flight gets what the
	// worker had written, then the end: a truncated response.
	for i, c := range idle {
		c.c.SetDeadline(time.Now().Add(ioTimeout))
		if n, err := c.r.Read(make([]byte, 1)); err != io.EOF {
			t.Errorf("idle client %d of the killed worker: read %d bytes, %v; want EOF", i, n, err)
		}
		c.c.Close()
	}
	resp, err := http.ReadResponse(inflight.r, nil)
	if err == nil {
		var body []byte
		body, err = io.ReadAll(resp.Body)
		if err == nil {
			t.Errorf("in-flight client got a whole response (%d bytes) from a killed worker", len(body))
		} else if !bytes.Equal(body, demo.Body(8 << 20)[:len(body)]) {
			t.Errorf("in-flight client: the %d bytes received before the kill are corrupt", len(body))
		} else {
			t.Logf("in-flight client: %d of %d bytes, then %v", len(body), 8<<20, err)
		}
	}
	inflight.c.Close()
	// The legs of w2 are finished: its idle ones, and every pair.
	r := testkit.WaitStatus(t, ns, "lo", 10*time.Second, "w2's legs closed", func(r testkit.StatusReport) bool {
		// All of w2's connections, including any its pool opened since
		// r0: one still open would take a new client's request and
		// answer it with a reset.
		return r.Counters["leg_closed"] >= r0.Counters["leg_closed"]+uint64(w2Legs+len(bound["w2"])) &&
			r.Legs["client/bound"] == len(bound["w1"])+len(bound["w3"]) &&
			ctlWorkers(t, ns, sock[1])[addrs[1]].Legs == 0
	})
	t.Logf("after the kill: legs %v, leg_closed +%d", r.Legs, r.Counters["leg_closed"]-r0.Counters["leg_closed"])
	// The clients of the others are unaffected.
	for _, w := range []string{"w1", "w3"} {
		for i, c := range bound[w] {
			if got, _, err := c.get("/bytes/70000"); err != nil || got != w {
				t.Errorf("client %d of %s after the kill: answered by %q, %v", i, w, got, err)
			}
		}
	}
	// New clients are served by w1 and w3 without an error.
	for i := 0; i < 20; i++ {
		c := dialFrom(t, ns, "", "127.0.0.1:8080")
		w, _, err := c.get(fmt.Sprintf("/bytes/%d", 1000+i))
		if err != nil {
			t.Fatalf("new client %d while w2 is down: %v", i, err)
		}
		if w == "w2" {
			t.Fatalf("new client %d answered by the dead worker", i)
		}
		c.c.Close()
	}

	// Back on the same port.
	testkit.Start(t, ns, "worker 127.0.0.1:4172 (restarted)", testkit.XLB, "demo-worker", "--name", "w2", addrs[1]).
		WaitLines("listening on", 1, testkit.StartTimeout)
	lb.WaitLines(`msg="worker up" worker=127.0.0.1:4172`, 2, 15*time.Second)
	testkit.WaitStatus(t, ns, "lo", 10*time.Second, "w2's pool refilled", func(r testkit.StatusReport) bool {
		return ctlWorkers(t, ns, sock[1])[addrs[1]].Legs >= lifecyclePool
	})
	served := map[string]int{}
	for i := 0; i < 60 && served["w2"] == 0; i++ {
		c := dialFrom(t, ns, "", "127.0.0.1:8080")
		w, _, err := c.get(fmt.Sprintf("/bytes/%d", 100000+i))
		if err != nil {
			t.Fatalf("new client %d after the restart: %v", i, err)
		}
		served[w]++
		c.c.Close()
	}
	if served["w2"] == 0 {
		t.Fatalf("no new client reached the restarted worker: %v", served)
	}
	t.Logf("after the restart: %v", served)
	lb.Stop()
}

// atBaseline: no client leg, no binding, no worker leg bound or dead; the
// pools full (each worker's may be up to the trim slack above its target:
// the pools grow with the connections busy, and the workers close idle ones
// now and then, which are replaced).
func atBaseline(legs map[string]int, workers int) bool {
	idle := legs["worker/idle"]
	for k, v := range legs {
		if k != "worker/idle" && v != 0 {
			return false
		}
	}
	return idle >= workers*lifecyclePool && idle <= workers*(lifecyclePool+2)
}
