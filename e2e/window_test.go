package e2e

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/testnet"
)

// TestSmallWindowAfterLargeWindow: one worker connection serves a client
// whose receive window grew large, then a client with a small receive
// buffer. A worker keeps the largest window of a segment no newer than the
// last: had it kept the first client's, it would send the second more than
// it can take, the overflow would be dropped (TcpExtBeyondWindow) and
// resent after a timeout. With the rest window (kern/bpf/structs.h,
// rest_win), nothing in the namespace is dropped, and nothing is resent
// but spurious loss probes: a probe its receiver reports as a duplicate
// (D-SACK), sent when the receiver's delayed ACK outlasted the sender's
// probe timeout (seen in about one run in six while other tests loaded the
// machine: TCPLossProbes 1, TCPDSACKRecvSegs 1, DelayedACKLost 1).
func TestSmallWindowAfterLargeWindow(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 1)
	// One connection to the worker, given back 20 ms after each answer;
	// segments of 1400 bytes (the lo MTU would allow 32 KB, more than a
	// small window holds).
	lb := startXLB(t, ns, "lo", 8080, workers, "--worker-conns", "1", "--pool", "1",
		"--idle-release", "20ms", "--worker-mss", "1400")
	defer lb.Stop()

	const big = 1 << 20
	a := dial(t, ns, "127.0.0.1:8080")
	for i := 0; i < 8; i++ {
		if _, n, err := a.get(fmt.Sprintf("/bytes/%d", big)); err != nil || n != big {
			t.Fatalf("client A, request %d: %d bytes, %v", i, n, err)
		}
	}
	// A's connection is given back to the pool.
	testkit.WaitStatus(t, ns, "lo", 5*time.Second, "the worker connection idle", func(r testkit.StatusReport) bool {
		return r.Legs["worker/idle"] == 1
	})

	before := tcpCounters(t, ns)
	b := dialSmallWindow(t, ns, "127.0.0.1:8080", 8<<10)
	const size = 256 << 10
	for i := 0; i < 3; i++ {
		start := time.Now()
		if _, n, err := b.get(fmt.Sprintf("/bytes/%d", size)); err != nil || n != size {
			t.Fatalf("client B, request %d: %d bytes, %v", i, n, err)
		}
		t.Logf("client B, request %d: %v", i, time.Since(start))
		testkit.WaitStatus(t, ns, "lo", 5*time.Second, "the worker connection idle", func(r testkit.StatusReport) bool {
			return r.Legs["worker/idle"] == 1
		})
	}
	after := tcpCounters(t, ns)
	delta := func(k string) int64 { return after[k] - before[k] }
	for _, k := range []string{"TcpExtBeyondWindow", "TcpExtTCPTimeouts"} {
		if d := delta(k); d != 0 {
			t.Errorf("%s went up by %d while client B was served", k, d)
		}
	}
	if resent, dup := delta("TcpRetransSegs"), delta("TcpExtTCPDSACKRecvSegs"); resent > dup {
		t.Errorf("%d segments resent while client B was served, %d of them reported as duplicates (D-SACK): %d resent for a loss (loss probes %d)",
			resent, dup, resent-dup, delta("TcpExtTCPLossProbes"))
	}
	r := testkit.Status(t, ns, "lo")
	if r.Counters["bind"] < 2 {
		t.Errorf("binds %d: the clients did not take turns on the worker connection", r.Counters["bind"])
	}
}

// dialSmallWindow connects with a receive buffer of rcvbuf bytes set before
// the handshake, so that the client's window stays small.
func dialSmallWindow(t testing.TB, ns *testnet.NS, addr string, rcvbuf int) *client {
	t.Helper()
	var c net.Conn
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: ioTimeout, Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
			}); err != nil {
				return err
			}
			return serr
		}}
		var err error
		c, err = d.Dial("tcp4", addr)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c: c, r: bufio.NewReaderSize(c, 64<<10)}
}

// tcpCounters reads the TCP counters of ns (/proc/net/snmp and netstat), as
// nstat names them: TcpRetransSegs, TcpExtBeyondWindow, ...
func tcpCounters(t testing.TB, ns *testnet.NS) map[string]int64 {
	t.Helper()
	out, err := ns.Command("cat", "/proc/net/snmp", "/proc/net/netstat").Output()
	if err != nil {
		t.Fatalf("reading the TCP counters: %v", err)
	}
	m := map[string]int64{}
	lines := strings.Split(string(out), "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) < 2 || len(names) != len(values) || names[0] != values[0] {
			continue
		}
		prefix := strings.TrimSuffix(names[0], ":")
		for j := 1; j < len(names); j++ {
			if v, err := strconv.ParseInt(values[j], 10, 64); err == nil {
				m[prefix+names[j]] = v
			}
		}
		i++
	}
	return m
}
