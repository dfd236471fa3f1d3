package e2e

// Short-lived clients (issue: connection-per-request traffic, and clients
// that leave unserved): a connection a request, through xlb, against nginx;
// the worker connections' fate read from nginx's own access log
// ($connection, the serial number of the connection that served each
// request); and nothing left behind once the clients are gone.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/internal/testproto"
	"github.com/xlb-lb/xlb/splice/demo"
	"github.com/xlb-lb/xlb/testnet"
)

// connNginx runs three nginx on 4171-4173 logging $connection per request,
// serving a 100-byte body at /b100 (and /bN for each of sizes); it returns
// their addresses and logs.
func connNginx(t *testing.T, ns *testnet.NS, sizes ...int) (addrs, logs []string) {
	t.Helper()
	root := testproto.WebRoot(t, append([]int{100}, sizes...)...)
	for i := 0; i < 3; i++ {
		addr := fmt.Sprintf("127.0.0.1:%d", 4171+i)
		log := filepath.Join(t.TempDir(), "access.log")
		startNginxConf(t, ns, testproto.Nginx{Listen: addr, Root: root, AccessLog: log})
		addrs, logs = append(addrs, addr), append(logs, log)
	}
	return addrs, logs
}

// connLogLine is "$status $request_uri $body_bytes_sent $connection $connection_requests".
var connLogLine = regexp.MustCompile(`^(\d+) (\S+) (\d+) (\d+) (\d+)$`)

// startConnXLB is the setup of the connection-per-request tests below: in a
// new namespace, the nginx of connNginx behind an xlb with its own socket
// and flags.
func startConnXLB(t *testing.T, flags ...string) (ns *testnet.NS, lb *testkit.Proc, logs []string) {
	t.Helper()
	testnet.RequireRoot(t)
	ns = testnet.New(t)
	addrs, logs := connNginx(t, ns)
	return ns, startXLB(t, ns, "lo", 8080, addrs, append(testkit.OwnSocket(t), flags...)...), logs
}

// connUse reads nginx access logs: requests logged, and the requests each
// connection (worker number and serial) served.
func connUse(t *testing.T, logs []string) (requests int, perConn map[string]int) {
	t.Helper()
	perConn = map[string]int{}
	for i, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			m := connLogLine.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			if m[1] != "200" {
				t.Errorf("nginx %d logged %q", i, line)
			}
			requests++
			perConn[fmt.Sprintf("%d/%s", i, m[4])]++
		}
	}
	return requests, perConn
}

// onePerConnection makes n requests from c clients, each on a connection of
// its own that the client closes once answered (HTTP/1.1: nginx keeps its
// side open), and checks every body.
func onePerConnection(t *testing.T, ns *testnet.NS, n, c int) {
	t.Helper()
	requestPerConnection(t, ns, n, c, "")
}

// requestPerConnection is onePerConnection with header lines added to
// each request.
func requestPerConnection(t *testing.T, ns *testnet.NS, n, c int, header string) {
	t.Helper()
	want := demo.Body(100)
	var next, failed atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for g := 0; g < c; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				err := ns.Do(func() error {
					conn, err := net.DialTimeout("tcp4", "127.0.0.1:8080", ioTimeout)
					if err != nil {
						return err
					}
					defer conn.Close()
					conn.SetDeadline(time.Now().Add(ioTimeout))
					if _, err := io.WriteString(conn, "GET /b100 HTTP/1.1\r\nHost: xlb\r\n"+header+"\r\n"); err != nil {
						return err
					}
					resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
					if err != nil {
						return err
					}
					body, err := io.ReadAll(resp.Body)
					if err != nil {
						return err
					}
					if resp.StatusCode != 200 || demo.Sum(body) != demo.Sum(want) {
						return fmt.Errorf("%s, %d bytes, not the file", resp.Status, len(body))
					}
					return nil
				})
				if err != nil {
					failed.Add(1)
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d connection-per-request clients failed; first: %v", failed.Load(), n, firstErr)
	}
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// waitOnlyIdleWorkers waits until the leg table holds idle worker legs
// alone (every client leg reaped, nothing cooling, closing or bound), and
// xlb holds no socket on the service port.
func waitOnlyIdleWorkers(t *testing.T, ns *testnet.NS, timeout time.Duration, what string) testkit.StatusReport {
	t.Helper()
	r := testkit.WaitStatus(t, ns, "lo", timeout, what+": only idle worker legs", func(r testkit.StatusReport) bool {
		return testkit.OnlyIdleWorkers(r.Legs)
	})
	if s := testkit.Sockets(t, ns, "established", "( sport = :8080 )"); len(s) > 0 {
		t.Errorf("%s: xlb holds %d sockets on :8080:\n%s", what, len(s), strings.Join(s, "\n"))
	}
	return r
}

// clientSocketsLeft waits up to reapTimeout until no client socket to :8080
// is in one of states, and returns those that still are.
func clientSocketsLeft(t *testing.T, ns *testnet.NS, states ...string) []string {
	t.Helper()
	deadline := time.Now().Add(reapTimeout)
	for {
		var left []string
		for _, st := range states {
			left = append(left, testkit.Sockets(t, ns, st, "( dport = :8080 )")...)
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestConnectionPerRequest: HTTP/1.1 clients that open a connection for one
// request and close it once answered (scripts, curl in a loop, health
// checks): every answer intact; each client leaves between two exchanges,
// so its worker connection serves the next client (nginx's $connection
// serials: at most one new worker connection per 100 clients once the
// pools have settled); and the leg table goes back to idle worker legs.
func TestConnectionPerRequest(t *testing.T) {
	ns, lb, logs := startConnXLB(t)
	defer lb.Stop()

	// Until the pools have settled: a round of 1000 that opens no worker
	// connection (at most 8 rounds).
	const warmRound, measured, clients = 1000, 3000, 8
	warm := 0
	_, before := connUse(t, logs)
	for round := 0; round < 8; round++ {
		onePerConnection(t, ns, warmRound, clients)
		warm += warmRound
		_, now := connUse(t, logs)
		grew := len(now) - len(before)
		before = now
		if grew == 0 {
			break
		}
	}
	r0 := testkit.Status(t, ns, "lo")
	start := time.Now()
	onePerConnection(t, ns, measured, clients)
	took := time.Since(start)
	r1 := testkit.Status(t, ns, "lo")
	requests, after := connUse(t, logs)
	if requests != warm+measured {
		t.Errorf("nginx logged %d requests, want %d", requests, warm+measured)
	}
	opened := 0
	for c := range after {
		if _, ok := before[c]; !ok {
			opened++
		}
	}
	left := r1.Counters["client_left"] - r0.Counters["client_left"]
	t.Logf("%d connections a request in %v (%.0f/s): %d new worker connections, %d clients left between exchanges, %d worker connections served them all",
		measured, took.Round(time.Millisecond), float64(measured)/took.Seconds(), opened, left, len(after))
	if opened > measured/100 {
		t.Errorf("%d worker connections opened for %d client connections: want at most 1 per 100", opened, measured)
	}
	if left < measured*99/100 {
		t.Errorf("client_left +%d for %d clients that closed between exchanges", left, measured)
	}
	waitOnlyIdleWorkers(t, ns, reapTimeout, "after the clients")
}

// TestClientSendsConnectionClose: clients that ask the worker to close
// after its answer (Connection: close: Go's DisableKeepAlives, health
// checkers) and close their side as soon as they have it, racing the
// worker's own close. The answer says the worker closes (nginx writes
// Connection: close), so the pair is pinned (pin_close) and a client that
// leaves first does not give its worker connection back: the worker is
// closing it, and the next client's request sent into it would be reset.
// Before, the data plane pooled it after a short cooling (client_left), and
// one request of other clients in 1,000-8,000 was reset when nginx was
// descheduled between its answer and its close (make soak). Every request
// answered, none given back, each worker connection used once, nothing
// left behind.
func TestClientSendsConnectionClose(t *testing.T) {
	ns, lb, logs := startConnXLB(t)
	defer lb.Stop()
	const n, clients = 3000, 16
	r0 := testkit.Status(t, ns, "lo")
	requestPerConnection(t, ns, n, clients, "Connection: close\r\n")
	r1 := testkit.Status(t, ns, "lo")
	pinned := r1.Counters["pin_close"] - r0.Counters["pin_close"]
	left := r1.Counters["client_left"] - r0.Counters["client_left"]
	conns := oneRequestPerConn(t, logs, n, "after answering Connection: close")
	t.Logf("%d requests with Connection: close: pin_close +%d, client_left +%d, %d worker connections", n, pinned, left, conns)
	if pinned != n {
		t.Errorf("pin_close +%d for %d answers that said Connection: close", pinned, n)
	}
	if left != 0 {
		t.Errorf("client_left +%d: worker connections their worker was closing went back to the pool", left)
	}
	waitOnlyIdleWorkers(t, ns, reapTimeout, "after the clients")
}

// oneRequestPerConn checks in nginx's logs that want requests were served,
// each worker connection serving one (why: what makes the worker close);
// it returns the connections.
func oneRequestPerConn(t *testing.T, logs []string, want int, why string) int {
	t.Helper()
	requests, perConn := connUse(t, logs)
	if requests != want {
		t.Errorf("nginx logged %d requests, want %d", requests, want)
	}
	for c, n := range perConn {
		if n != 1 {
			t.Errorf("worker connection %s served %d requests %s", c, n, why)
			break
		}
	}
	return len(perConn)
}

// abPerConnection runs ab (HTTP/1.0, a connection per request) for n
// requests, c at a time, against the service: every request must complete,
// none fail. It returns ab's output.
func abPerConnection(t *testing.T, ns *testnet.NS, n, c int) string {
	t.Helper()
	out, err := ns.Command("ab", "-q", "-s", "10", "-n", fmt.Sprint(n), "-c", fmt.Sprint(c), "http://127.0.0.1:8080/b100").CombinedOutput()
	if err != nil {
		t.Fatalf("ab -c %d: %v\n%s", c, err, out)
	}
	s := string(out)
	if m := regexp.MustCompile(`Complete requests:\s+(\d+)`).FindStringSubmatch(s); m == nil || m[1] != fmt.Sprint(n) {
		t.Errorf("ab -c %d: not every request completed:\n%s", c, s)
	}
	if m := regexp.MustCompile(`Failed requests:\s+(\d+)`).FindStringSubmatch(s); m == nil || m[1] != "0" {
		t.Errorf("ab -c %d: failed requests:\n%s", c, s)
	}
	return s
}

// TestAbWithoutKeepAlive: ab without -k speaks HTTP/1.0 and so asks nginx
// to close after every answer. xlb (--http10 keep, the default) sends each
// such request on with "Connection: keep-alive", reads the answer's length,
// closes the client's connection itself after it and keeps nginx's for the
// next client: every request answered at -c 4 and -c 50, at most one worker
// connection per 100 client connections (nginx's own log, $connection),
// every client closed by the data plane after its whole answer
// (framed_close), none left to nginx (unframed), nothing left behind.
func TestAbWithoutKeepAlive(t *testing.T) {
	ns, lb, logs := startConnXLB(t)
	defer lb.Stop()
	// A first round grows the pools to what -c 50 needs; the steady
	// state is what follows.
	abPerConnection(t, ns, 2000, 50)
	before := testkit.Status(t, ns, "lo").Counters
	total := 0
	for _, c := range []int{4, 50} {
		const n = 4000
		s := abPerConnection(t, ns, n, c)
		rps := regexp.MustCompile(`Requests per second:\s+(\S+)`).FindStringSubmatch(s)
		longest := regexp.MustCompile(`100%\s+(\d+)`).FindStringSubmatch(s)
		if rps != nil && longest != nil {
			t.Logf("ab -c %d: %s req/s, longest %s ms", c, rps[1], longest[1])
		}
		total += n
	}
	requests, perConn := connUse(t, logs)
	if requests != total+2000 {
		t.Errorf("nginx logged %d requests, want %d", requests, total+2000)
	}
	after := testkit.Status(t, ns, "lo").Counters
	// What counts is what the clients made xlb open once the pools
	// were grown (nginx also logs connections the first round opened).
	opened := after["worker_synack"] - before["worker_synack"] // dialed or connect()ed
	pooled := int(before["worker_synack"])
	t.Logf("%d client connections, %d worker connections (%d opened while ab ran)", total, len(perConn), opened)
	if opened > uint64(total/100) {
		t.Errorf("xlb opened %d worker connections for %d clients, want at most 1 per 100", opened, total)
	}
	if len(perConn) > pooled+total/100 {
		t.Errorf("nginx saw %d connections for %d clients (%d pooled before them), want at most 1 more per 100",
			len(perConn), total, pooled)
	}
	for name, want := range map[string]uint64{"keep_http10": uint64(total), "framed_close": uint64(total), "unframed": 0} {
		if got := after[name] - before[name]; got != want {
			t.Errorf("counter %s +%d, want +%d", name, got, want)
		}
	}
	waitOnlyIdleWorkers(t, ns, reapTimeout, "after ab")
}

// TestAbPassHTTP10: with --http10 pass, HTTP/1.0 requests go on as they
// are and nginx closes every connection after its answer: a worker
// connection serves one request and is gone (an L4 splice cannot keep a
// connection its worker closed). Every request answered at -c 4 and -c 50,
// each worker connection used once, and nothing left behind.
func TestAbPassHTTP10(t *testing.T) {
	ns, lb, logs := startConnXLB(t, "--http10", "pass")
	defer lb.Stop()
	total := 0
	for _, c := range []int{4, 50} {
		const n = 2000
		abPerConnection(t, ns, n, c)
		total += n
	}
	oneRequestPerConn(t, logs, total, "(nginx closes after one HTTP/1.0 answer)")
	if got := testkit.Status(t, ns, "lo").Counters["keep_http10"]; got != 0 {
		t.Errorf("keep_http10 %d with --http10 pass, want 0", got)
	}
	waitOnlyIdleWorkers(t, ns, reapTimeout, "after ab")
}

// TestAbDialXDP: connection-per-request with --dial xdp: the pool
// connections are opened by a SYN user space sends and a handshake the data
// plane completes, so xlb holds no socket per worker connection. Under
// --http10 pass (nginx closes after each HTTP/1.0 answer: a worker
// connection per request, the dial path under churn), every request
// completes, each over its own worker connection, the data plane made them
// (dialed), and xlb has no TCP socket
// but its listener. At -c 50, a leg pooled before our ACK reached nginx had
// clients reset (kern dialed()): user space pools it now.
func TestAbDialXDP(t *testing.T) {
	ns, lb, logs := startConnXLB(t, "--dial", "xdp", "--http10", "pass")
	defer lb.Stop()
	before := testkit.Status(t, ns, "lo").Counters["dialed"]
	const n = 4000
	for _, c := range []int{4, 50} {
		abPerConnection(t, ns, n/2, c)
	}
	requests, perConn := connUse(t, logs)
	if requests != n {
		t.Errorf("nginx logged %d requests, want %d", requests, n)
	}
	if len(perConn) < n {
		t.Errorf("nginx logged %d connections for %d requests, want one each", len(perConn), n)
	}
	if dialed := testkit.Status(t, ns, "lo").Counters["dialed"] - before; dialed < n {
		t.Errorf("the data plane completed %d dialed handshakes, want at least %d", dialed, n)
	}
	ssOut, err := ns.Command("ss", "-Htanp").CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v\n%s", err, ssOut)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(ssOut)), "\n") {
		if strings.Contains(line, "xlb") && !strings.HasPrefix(line, "LISTEN") {
			t.Errorf("xlb holds a TCP socket besides its listener: %s", line)
		}
	}
	waitOnlyIdleWorkers(t, ns, reapTimeout, "after ab")
}

// TestAbSmallLegTable: connection-per-request through a leg table of 4096
// (--max-legs). Every request ends two legs (nginx closes after an HTTP/1.0
// answer), and finished legs linger 3 s for late retransmissions: at a few
// thousand requests a second they would fill the table, and new clients
// would be refused. Past a quarter of the table the oldest go early: every
// request completes, and the early ones are counted.
func TestAbSmallLegTable(t *testing.T) {
	sock := testkit.OwnSocket(t)
	ns, lb, _ := startConnXLB(t, append(sock, "--max-legs", "4096", "--pool", "8")...)
	defer lb.Stop()
	const n = 12000
	abPerConnection(t, ns, n, 20)
	r := testkit.Stats(t, ns, sock[1])
	if r.Unspliced != 0 || r.Counters["legs_full"] != 0 {
		t.Errorf("%d clients refused (no room for their leg): %d left to the listener, %d reset by the data plane",
			r.Unspliced+r.Counters["legs_full"], r.Unspliced, r.Counters["legs_full"])
	}
	if r.EarlyReaps == 0 {
		t.Errorf("no finished leg was forgotten early: %d requests through 4096 legs should need it", n)
	}
	t.Logf("%d finished legs forgotten early", r.EarlyReaps)
}

// TestClientsLeaveUnserved: 3,000 clients each send a request while the
// workers can take only a few at a time (--worker-conns 2, 50 ms a
// request), then close before their answer comes. A client whose FIN goes
// out is answered; one whose FIN waits behind its unacknowledged request
// (its kernel retransmits that with an ever longer backoff) is reset once
// its request waited --queue-timeout. No client socket is left open or in
// FIN-WAIT-1, xlb holds none of theirs, and the leg table goes back to idle
// worker legs within the queue timeout and a linger: nothing leaks.
func TestClientsLeaveUnserved(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 3, "--delay", "50ms")
	lb := startXLB(t, ns, "lo", 8080, workers, append(testkit.OwnSocket(t), "--pool", "2", "--worker-conns", "2", "--queue-timeout", "3s")...)
	defer lb.Stop()

	const n = 3000
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp4", "127.0.0.1:8080", ioTimeout)
			return err
		})
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		conns = append(conns, c)
		if _, err := fmt.Fprintf(c, "GET /bytes/%d HTTP/1.1\r\nHost: xlb\r\n\r\n", 100+i); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
	}
	// They wait for a worker connection: most have none yet.
	r := testkit.WaitStatus(t, ns, "lo", testkit.StartTimeout, "clients waiting for a worker connection", func(r testkit.StatusReport) bool {
		return r.Counters["no_idle_leg"] > 0
	})
	t.Logf("waiting: legs %v, no_idle_leg %d", r.Legs, r.Counters["no_idle_leg"])
	for _, c := range conns {
		c.Close()
	}
	conns = conns[:0]
	waitOnlyIdleWorkers(t, ns, 30*time.Second, "after the clients left")
	// The clients' side: every connection to :8080 ended (TIME-WAIT is
	// fine, FIN-WAIT-1 means a FIN nobody answered).
	if stuck := clientSocketsLeft(t, ns, "fin-wait-1", "established"); len(stuck) > 0 {
		t.Errorf("%d client sockets still open or in FIN-WAIT-1, e.g.:\n%s", len(stuck), strings.Join(stuck[:min(len(stuck), 5)], "\n"))
	}
}

// TestWrkBurstLeavesNothing: wrk opens a burst of connections at once (as
// many as this machine's descriptor limit allows, up to 20,000), sends
// keep-alive requests for two seconds and exits; every leg of those
// clients is reaped within reapTimeout and the clients' sockets all end.
func TestWrkBurstLeavesNothing(t *testing.T) {
	sock := testkit.OwnSocket(t)
	ns, lb, _ := startConnXLB(t, append(sock, "--queue-timeout", "5s")...)
	defer lb.Stop()
	defer func() {
		// A leg left behind (rare, under CPU load): which clients, and
		// what the kernel still has of them, for the next look.
		if t.Failed() {
			t.Logf("xlb ctl clients:\n%s", ctl(t, ns, sock[1], "clients"))
			t.Logf("client sockets of :8080 (any state):\n%s", ns.Run("ss", "-Htanoi", "dport", "=", ":8080"))
		}
	}()
	conns := burstConns(20000)
	out, err := ns.Command("wrk", "-t2", fmt.Sprintf("-c%d", conns), "-d2s", "--timeout", "5s", "http://127.0.0.1:8080/b100").CombinedOutput()
	if err != nil {
		t.Fatalf("wrk: %v\n%s", err, out)
	}
	if m := wrkRequests.FindStringSubmatch(string(out)); m == nil {
		t.Fatalf("wrk output without a request count:\n%s", out)
	} else {
		t.Logf("wrk -c%d: %s requests", conns, m[1])
	}
	waitOnlyIdleWorkers(t, ns, 30*time.Second, "after the burst")
	if stuck := clientSocketsLeft(t, ns, "fin-wait-1"); len(stuck) > 0 {
		t.Errorf("%d client sockets in FIN-WAIT-1 after the burst, e.g.:\n%s", len(stuck), strings.Join(stuck[:min(len(stuck), 5)], "\n"))
	}
}

// TestBurstEmptyPools: 300 clients connect, then each sends its first
// request at the same moment, on pools of one connection per worker
// (--pool 1). What each of xlb's answers to that burst buys, against the
// old behaviour (drop: a request that finds no idle worker connection is
// dropped and waits for its client's retransmission):
//
//   - hold (--empty-pool hold): the data plane keeps each such request and
//     xlb sends it on once a connection is pooled, well before the client's
//     timer would send it again;
//   - ahead (the default without --no-pool-ahead): the clients' SYNs grow
//     the pools before any request comes, and no request finds them empty.
//
// The clients' timer is set to 1 s (tcp_rto_min_us, 200 ms by default,
// bounds the tail loss probe of a lone segment and the timeout), so that a
// loaded machine's slower pool growth does not race it.
func TestBurstEmptyPools(t *testing.T) {
	const clients, timer = 300, time.Second
	for _, tc := range []struct {
		name  string
		flags []string
	}{
		{"drop", []string{"--empty-pool", "drop", "--no-pool-ahead"}},
		{"hold", []string{"--empty-pool", "hold", "--no-pool-ahead"}},
		{"ahead", []string{"--empty-pool", "drop"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := testkit.OwnSocket(t)
			ns, lb, _ := startConnXLB(t, append(append(sock, "--pool", "1"), tc.flags...)...)
			defer lb.Stop()
			ns.Run("sysctl", "-qw", fmt.Sprintf("net.ipv4.tcp_rto_min_us=%d", timer.Microseconds()))
			conns := make([]net.Conn, 0, clients)
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			if err := ns.Do(func() error {
				for range clients {
					c, err := net.DialTimeout("tcp4", "127.0.0.1:8080", ioTimeout)
					if err != nil {
						return err
					}
					conns = append(conns, c)
				}
				return nil
			}); err != nil {
				t.Fatalf("%d clients connected: %v", len(conns), err)
			}
			idle := func() (n int) {
				for _, w := range testkit.Stats(t, ns, sock[1]).Workers {
					n += w.Idle
				}
				return n
			}
			if tc.name == "ahead" {
				// The pools grow from the SYNs alone: no request has come.
				deadline := time.Now().Add(10 * time.Second)
				for idle() < clients {
					if time.Now().After(deadline) {
						t.Fatalf("%d idle worker connections 10 s after %d clients connected, want as many", idle(), clients)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			idleBefore := idle()
			before := tcpCounters(t, ns)
			took := make([]time.Duration, clients)
			errs := make([]error, clients)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i, c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					c.SetDeadline(time.Now().Add(ioTimeout))
					t0 := time.Now()
					if _, err := io.WriteString(c, "GET /b100 HTTP/1.1\r\nHost: xlb\r\n\r\n"); err != nil {
						errs[i] = err
						return
					}
					resp, err := http.ReadResponse(bufio.NewReader(c), nil)
					if err != nil {
						errs[i] = err
						return
					}
					body, err := io.ReadAll(resp.Body)
					took[i] = time.Since(t0)
					if err == nil && (resp.StatusCode != 200 || len(body) != 100) {
						err = fmt.Errorf("status %d, %d bytes", resp.StatusCode, len(body))
					}
					errs[i] = err
				}()
			}
			close(start)
			wg.Wait()
			after := tcpCounters(t, ns)
			if err := errors.Join(errs...); err != nil {
				t.Fatalf("first requests: %v", err)
			}
			slices.Sort(took)
			late := len(took) - sort.Search(len(took), func(i int) bool { return took[i] >= timer })
			r := testkit.Stats(t, ns, sock[1])
			empty := r.Counters["no_idle_leg"]
			t.Logf("%d idle worker connections before the requests; no idle leg %d, held %d, sent on %d, dropped %d; first requests: median %v, slowest %v, %d took the client's timer (%v) or more; retransmitted %d, checksum errors %d",
				idleBefore, empty, r.Held, r.Replayed, r.HeldDropped, took[len(took)/2], took[len(took)-1], late, timer,
				after["TcpRetransSegs"]-before["TcpRetransSegs"], after["TcpInCsumErrors"]-before["TcpInCsumErrors"])
			if n := after["TcpInCsumErrors"] - before["TcpInCsumErrors"]; n != 0 {
				t.Errorf("%d segments with a bad checksum", n)
			}
			switch tc.name {
			case "drop":
				if empty == 0 || late == 0 || r.Held != 0 {
					t.Errorf("%d requests found no idle connection, %d waited for the client's timer, %d were held: want some, some, none", empty, late, r.Held)
				}
			case "hold":
				if empty == 0 || r.Held == 0 || r.Replayed == 0 {
					t.Errorf("%d requests found no idle connection, %d held, %d sent on: want some of each", empty, r.Held, r.Replayed)
				}
				if late > int(r.HeldDropped) {
					t.Errorf("%d first requests waited for the client's timer, more than the %d held ones not sent on", late, r.HeldDropped)
				}
			case "ahead":
				if empty != 0 || late != 0 {
					t.Errorf("%d requests found no idle connection, %d waited for the client's timer: want none", empty, late)
				}
			}
		})
	}
}

// burstConns is want, or what the descriptor limit leaves room for (wrk
// needs one descriptor a connection, and a few more).
func burstConns(want int) int {
	out, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		return min(want, 1000)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 5 && strings.HasPrefix(l, "Max open files") {
			if hard, err := strconv.Atoi(f[4]); err == nil {
				return min(want, hard-100)
			}
		}
	}
	return min(want, 1000)
}

// TestClientCloseWorkerFate: the fate of a worker connection when its client
// leaves, read from nginx's own log. A client that closes after its whole
// answer leaves the connection to the next client (the same $connection
// serial); one that leaves in the middle of an answer takes it along (the
// next client gets a new one). One worker connection at a time
// (--worker-conns 1), so there is no other to pick.
func TestClientCloseWorkerFate(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	root := t.TempDir()
	os.Chmod(root, 0o755)
	for name, n := range map[string]int{"b100": 100, "big": 4 << 20} {
		if err := os.WriteFile(filepath.Join(root, name), demo.Body(n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	log := filepath.Join(t.TempDir(), "access.log")
	startNginxConf(t, ns, testproto.Nginx{Listen: "127.0.0.1:4171", Root: root, AccessLog: log,
		Server: "location = /big { limit_rate 200k; }"})
	lb := startXLB(t, ns, "lo", 8080, []string{"127.0.0.1:4171"}, append(testkit.OwnSocket(t), "--pool", "1", "--worker-conns", "1")...)
	defer lb.Stop()

	serial := func(n int) string { // the $connection of the n-th logged request
		t.Helper()
		var lines []string
		deadline := time.Now().Add(ioTimeout)
		for {
			b, _ := os.ReadFile(log)
			lines = strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) >= n && lines[0] != "" || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(lines) < n {
			t.Fatalf("nginx logged %d requests, want %d", len(lines), n)
		}
		m := connLogLine.FindStringSubmatch(lines[n-1])
		if m == nil {
			t.Fatalf("access log line %q", lines[n-1])
		}
		return m[4]
	}
	get := func(what string) {
		t.Helper()
		c := dial(t, ns, "127.0.0.1:8080")
		if err := c.getWant("/b100", demo.Body(100)); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		c.c.Close()
	}
	get("client A")
	get("client B")
	if a, b := serial(1), serial(2); a != b {
		c := testkit.Status(t, ns, "lo").Counters
		t.Errorf("client A was served on nginx connection %s, B on %s: A left between exchanges, its connection should have served B "+
			"(client_left %d, fin_answered %d, retired %d, unsolicited %d, no_idle_leg %d, worker_synack %d)", a, b,
			c["client_left"], c["fin_answered"], c["retired"], c["unsolicited"], c["no_idle_leg"], c["worker_synack"])
	}
	// C leaves in the middle of a 4 MB answer sent at 200 KB/s.
	c := dial(t, ns, "127.0.0.1:8080")
	c.c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(c.c, "GET /big HTTP/1.1\r\nHost: xlb\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.r.Peek(64 << 10); err != nil {
		t.Fatalf("client C: %v", err)
	}
	c.c.Close()
	get("client D")
	if cs, d := serial(3), serial(4); cs == d {
		t.Errorf("client D was served on nginx connection %s, the one client C left in the middle of an answer", d)
	}
}

// TestLegTableFull: a leg table too small for the clients (--max-legs 64)
// refuses the clients it has no room for with a reset, counted and logged
// with the flag that raises it; clients that have a leg are not affected.
func TestLegTableFull(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 1)
	sock := testkit.OwnSocket(t)
	lb := startXLB(t, ns, "lo", 8080, workers, append(sock, "--max-legs", "64", "--pool", "4")...)
	defer lb.Stop()

	get := func(c *client) error {
		c.c.SetDeadline(time.Now().Add(ioTimeout))
		_, _, err := c.get("/bytes/100")
		return err
	}
	var first []*client
	for i := 0; i < 20; i++ {
		c := dial(t, ns, "127.0.0.1:8080")
		if err := get(c); err != nil {
			t.Fatalf("client %d, before the table is full: %v", i, err)
		}
		first = append(first, c)
	}
	refused := 0
	for i := 0; i < 100; i++ {
		// The SYN is answered before the leg is made: the reset comes
		// to the handshake's ACK, before or after connect returns.
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = (&net.Dialer{Timeout: ioTimeout}).Dial("tcp4", "127.0.0.1:8080")
			return err
		})
		if err == nil {
			defer c.Close()
			err = get(&client{c: c, r: bufio.NewReader(c)})
		}
		if err != nil {
			if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) {
				t.Errorf("a client with no room got %v, want a reset", err)
			}
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("120 clients fitted in 64 legs")
	}
	for i, c := range first {
		if err := get(c); err != nil {
			t.Errorf("client %d, which had a leg, after the table filled: %v", i, err)
		}
	}
	if r := testkit.Stats(t, ns, sock[1]); r.Counters["legs_full"] < uint64(refused) {
		t.Errorf("legs_full %d, %d clients refused", r.Counters["legs_full"], refused)
	}
	lb.WaitLines("leg table full: new clients are reset; raise --max-legs", 1, 5*time.Second)
	t.Logf("%d of 100 clients refused", refused)
}

// TestKernelHandshake: with --handshake kernel the listener answers every
// SYN, and each client is accepted and its socket destroyed (the path a
// SYN the data plane cannot answer still takes): ab with and without
// keep-alive, every request served, no SYN answered by the data plane, no
// client left to the kernel.
func TestKernelHandshake(t *testing.T) {
	sock := testkit.OwnSocket(t)
	ns, lb, _ := startConnXLB(t, append(sock, "--handshake", "kernel")...)
	defer lb.Stop()
	const n = 3000
	for _, args := range [][]string{{}, {"-k"}} {
		cmd := append([]string{"-q", "-s", "10", "-n", fmt.Sprint(n), "-c", "8"}, args...)
		out, err := ns.Command("ab", append(cmd, "http://127.0.0.1:8080/b100")...).CombinedOutput()
		if err != nil {
			t.Fatalf("ab %v: %v\n%s", args, err, out)
		}
		if m := regexp.MustCompile(`Complete requests:\s+(\d+)`).FindStringSubmatch(string(out)); m == nil || m[1] != fmt.Sprint(n) {
			t.Errorf("ab %v: not every request completed:\n%s", args, out)
		}
		if m := regexp.MustCompile(`Failed requests:\s+(\d+)`).FindStringSubmatch(string(out)); m == nil || m[1] != "0" {
			t.Errorf("ab %v: failed requests:\n%s", args, out)
		}
	}
	r := testkit.Stats(t, ns, sock[1])
	if r.Counters["syn_answered"] != 0 {
		t.Errorf("%d SYNs answered by the data plane under --handshake kernel", r.Counters["syn_answered"])
	}
	if r.Counters["client_leg"] < n+8 {
		t.Errorf("client_leg %d: want the %d connections of ab without -k and the 8 of ab -k", r.Counters["client_leg"], n+8)
	}
	if r.Unspliced != 0 {
		t.Errorf("%d clients left to the kernel (no leg for them)", r.Unspliced)
	}
	if r.Mismatches != 0 {
		t.Errorf("%d client legs built from the handshake disagree with the kernel's socket", r.Mismatches)
	}
}
