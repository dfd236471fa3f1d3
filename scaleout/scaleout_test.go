package scaleout

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
)

// TestECMPScaleOut: three xlb hosts announce the VIP over BGP; the router
// spreads new clients over them by its ECMP route (L4 hash).
//
//   - New clients spread: each host carries 20-45% of 300.
//   - Long-lived clients stay on their host: every answer on a connection
//     comes from the xlb host of its first.
//   - Stopping x1's xlb withdraws its route (the device goes down first
//     thing); x1's clients see their connections end; new clients go to x2
//     and x3, with no error.
//   - Clients of x2 and x3 see no error, with one exception the router
//     makes, not xlb: a hash-threshold multipath route (what BIRD installs)
//     maps part of the hash space of the hosts that remain to another host
//     when a next hop goes or comes, and those flows reach a host that does
//     not know them. Each such client is found with `ip route get` and its
//     connection must have ended; every other one must have had no error.
//     With a resilient nexthop group (resilient) no flow of a remaining
//     host moves, and none may end.
//   - Starting x1's xlb again brings it back into the spread (resilient:
//     once the group's idle buckets migrated to it).
//   - A client the router moved off x2 (reset by the host it reached) that
//     connects again from its port once the route sends that port to x2
//     again is served there, over the old leg x2 still held.
//   - Restarting x2 with --reuse keeps its route; weighting its workers 0
//     withdraws it.
//   - Killing x3's xlb (SIGKILL) withdraws its route too: the device's
//     carrier goes off with the process.
func TestECMPScaleOut(t *testing.T) {
	t.Run("hash-threshold", func(t *testing.T) { testScaleOut(t, false) })
	t.Run("resilient", func(t *testing.T) { testScaleOut(t, true) })
}

func testScaleOut(t *testing.T, resilient bool) {
	cl := newCluster(t, resilient)
	all := []int{0, 1, 2}
	cl.checkShares("three hosts", cl.spread(300), all)

	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	long := cl.startLong(36, stop)
	t.Logf("long-lived clients by host %v", byHost(long))
	for _, n := range byHost(long) {
		if n == 0 {
			t.Fatalf("no long-lived client on one of the hosts: %v", byHost(long))
		}
	}
	cl.waitRequests(long, 5)

	// x1 stops.
	var others []*longClient // x2's and x3's
	for _, lc := range long {
		if lc.host != 0 {
			others = append(others, lc)
		}
	}
	errc := make(chan error, 1)
	go func() { errc <- cl.xlb[0].StopErr() }()
	took := cl.waitHosts([]int{1, 2}, convergeTimeout)
	t.Logf("x1 stopping: its route withdrawn %v after the signal", took.Round(time.Millisecond))
	if err := <-errc; err != nil {
		t.Errorf("x1's xlb: %v", err)
	}
	if n := cl.xlb[0].Count("announcement withdrawn"); n != 1 {
		t.Errorf("x1's xlb logged 'announcement withdrawn' %d times, want 1", n)
	}
	cl.checkEnded(long, 0)
	movedStop, atStop := cl.checkSurvivors(others, "x1 stopped"), len(others)
	cl.checkShares("x1 out", cl.spread(150), []int{1, 2})
	// Clients that come while x1 is out: a hash-threshold route moves
	// some of theirs to x1 when it is back.
	during := cl.startLong(24, stop)
	t.Logf("long-lived clients made while x1 is out, by host %v", byHost(during))
	long = append(long, during...)

	// x1 starts again.
	others = append(survivors(others), during...)
	cl.startXLB(0)
	took = cl.waitHosts(all, convergeTimeout)
	t.Logf("x1 back: its route in %v after 'announcing'", took.Round(time.Millisecond))
	if resilient {
		cl.waitBuckets(0, resBuckets/hosts-2)
	}
	movedStart := cl.checkSurvivors(others, "x1 back")
	// The clients the router moved off x2 or x3 when x1 stopped were
	// reset by the host they reached; their old host never heard of it
	// and still holds their legs. With x1 back, a hash-threshold route
	// sends those 4-tuples to their old host again: a new connection
	// from the same port meets the old leg there, and must be served
	// (the leg's ACK, the client's RST, its SYN again).
	cl.redial(movedStop)
	cl.checkShares("x1 back", cl.spread(300), all)
	cl.waitRequests(survivors(long), 3)
	t.Logf("clients of x2 and x3 whose flows the router moved: %d of %d when x1 stopped, %d of %d when it came back",
		len(movedStop), atStop, len(movedStart), len(others))
	if resilient && len(movedStop)+len(movedStart) > 0 {
		t.Errorf("resilient group: %d flows of the remaining hosts moved, want 0", len(movedStop)+len(movedStart))
	}

	// x2 is restarted with --reuse: the new xlb attaches a queue of the
	// device before the old one lets go of its, so the route never loses
	// x2, and x2's clients go on.
	var x2 []*longClient
	for _, lc := range survivors(long) {
		if lc.host == 1 {
			x2 = append(x2, lc)
		}
	}
	stopWatch := cl.watchRoute(1)
	old := cl.xlb[1]
	cl.startXLB(1, "--reuse")
	cl.xlb[1].WaitLines("took over", 1, testkit.StartTimeout)
	if !old.Exited(testkit.StopTimeout) {
		t.Fatalf("x2's old xlb did not exit after the handover")
	}
	if len(x2) > 0 {
		cl.waitRequests(x2, 3)
	}
	missing, reads := stopWatch()
	t.Logf("x2 handed over (--reuse): its route missing in %d of %d reads during it; its %d clients went on", missing, reads, len(x2))
	if missing > 0 || reads == 0 {
		t.Errorf("x2's route was withdrawn during its handover (%d of %d reads)", missing, reads)
	}

	// x2's workers weighted 0: no worker takes requests there, so its
	// announcement goes down; weighted 1 again, it comes back.
	for k := range workersPerHost {
		cl.ctl(1, "weight", fmt.Sprintf("10.30.2.2:%d", 4171+k), "0")
	}
	took = cl.waitHosts([]int{0, 2}, convergeTimeout)
	t.Logf("x2's workers weighted 0: its route withdrawn after %v", took.Round(time.Millisecond))
	if st := cl.stats(1); st.Announce != "down: no worker takes requests" {
		t.Errorf("xlb stats on x2: announce %q, want %q", st.Announce, "down: no worker takes requests")
	}
	for k := range workersPerHost {
		cl.ctl(1, "weight", fmt.Sprintf("10.30.2.2:%d", 4171+k), "1")
	}
	cl.waitHosts(all, convergeTimeout)
	if st := cl.stats(1); st.Announce != "up" {
		t.Errorf("xlb stats on x2: announce %q, want up", st.Announce)
	}

	// x3 is killed: its carrier goes, BIRD withdraws.
	cl.xlb[2].Kill()
	took = cl.waitHosts([]int{0, 1}, convergeTimeout)
	t.Logf("x3 killed: its route withdrawn %v after the kill", took.Round(time.Millisecond))
	// Its data plane and pins are left behind, as by any crash; --reuse
	// replaces them (and the test's cleanup stops it, removing them).
	cl.startXLB(2, "--reuse")
	cl.waitHosts(all, convergeTimeout)
	cl.checkShares("x3 back after a crash", cl.spread(150), all)

	for _, lc := range long {
		_, others, _ := lc.state()
		if others > 0 {
			t.Errorf("a client of x%d had %d answers carried by another host", lc.host+1, others)
		}
	}
}

// waitRequests waits until each live client has made n more requests.
func (cl *cluster) waitRequests(ls []*longClient, n int) {
	cl.t.Helper()
	base := map[*longClient]int{}
	for _, lc := range ls {
		base[lc], _, _ = lc.state()
	}
	end := time.Now().Add(ioTimeout + time.Duration(n)*requestEvery*4)
	for _, lc := range ls {
		for {
			r, _, err := lc.state()
			if err != nil {
				cl.t.Fatalf("a client of x%d failed: %v", lc.host+1, err)
			}
			if r >= base[lc]+n {
				break
			}
			if time.Now().After(end) {
				cl.t.Fatalf("a client of x%d made %d requests, want %d more than %d", lc.host+1, r, n, base[lc])
			}
			time.Sleep(requestEvery / 2)
		}
	}
}

// watchRoute reads the router's route every 5 ms until the returned stop
// is called, which says in how many reads host j was missing.
func (cl *cluster) watchRoute(j int) (stop func() (missing, reads int)) {
	cl.t.Helper()
	quit, done := make(chan struct{}), make(chan struct{})
	var missing, reads int
	end := time.Now().Add(convergeTimeout + testkit.StartTimeout)
	go func() {
		defer close(done)
		for time.Now().Before(end) {
			select {
			case <-quit:
				return
			case <-time.After(5 * time.Millisecond):
			}
			hs, err := cl.bgpHosts()
			if err != nil {
				continue
			}
			reads++
			if !slices.Contains(hs, j) {
				missing++
			}
		}
	}()
	return func() (int, int) {
		close(quit)
		<-done
		return missing, reads
	}
}

// ctl runs `xlb ctl ARGS` against host j's xlb.
func (cl *cluster) ctl(j int, args ...string) {
	cl.t.Helper()
	cl.x[j].Run(testkit.XLB, append([]string{"ctl", "--socket", cl.sock(j)}, args...)...)
}

// stats reads `xlb stats --json` of host j's xlb.
func (cl *cluster) stats(j int) (st struct {
	Announce string `json:"announce"`
}) {
	cl.t.Helper()
	out := cl.x[j].Run(testkit.XLB, "stats", "--json", "--socket", cl.sock(j))
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		cl.t.Fatalf("xlb stats --json: %v\n%s", err, out)
	}
	return st
}

func (cl *cluster) sock(j int) string { return filepath.Join(cl.dir, fmt.Sprintf("x%d.sock", j+1)) }

// survivors are the clients still running.
func survivors(ls []*longClient) []*longClient {
	var out []*longClient
	for _, lc := range ls {
		if _, _, err := lc.state(); err == nil {
			out = append(out, lc)
		}
	}
	return out
}

// checkEnded: every client of host j sees its connection end.
func (cl *cluster) checkEnded(ls []*longClient, j int) {
	cl.t.Helper()
	end := time.Now().Add(2 * ioTimeout)
	n := 0
	for _, lc := range ls {
		if lc.host != j {
			continue
		}
		select {
		case <-lc.done:
		case <-time.After(time.Until(end)):
		}
		if _, _, err := lc.state(); err == nil {
			cl.t.Errorf("a client of x%d still runs after its xlb stopped", j+1)
			continue
		}
		n++
	}
	cl.t.Logf("x%d's %d long-lived clients saw their connections end", j+1, n)
}

// checkSurvivors classifies clients (those of the hosts that stay, live
// before the change) by where the router sends their flows now: those it
// moved to another host must end (that host does not know them), the
// others must go on without an error. It returns those it moved.
func (cl *cluster) checkSurvivors(ls []*longClient, when string) []*longClient {
	cl.t.Helper()
	var moved, kept []*longClient
	for _, lc := range ls {
		to, err := cl.routedTo(lc.clientHost, lc.from)
		if err != nil {
			cl.t.Fatal(err)
		}
		if to != lc.host {
			moved = append(moved, lc)
		} else {
			kept = append(kept, lc)
		}
	}
	end := time.Now().Add(2 * ioTimeout)
	for _, lc := range moved {
		select {
		case <-lc.done:
		case <-time.After(time.Until(end)):
			cl.t.Errorf("%s: a client of x%d whose flow the router moved still runs", when, lc.host+1)
		}
	}
	for _, lc := range kept {
		if _, _, err := lc.state(); err != nil {
			cl.t.Errorf("%s: a client of x%d whose flow stayed there failed: %v", when, lc.host+1, err)
		}
	}
	if len(kept) > 0 && !cl.t.Failed() {
		cl.waitRequests(kept, 3) // fails on any error
	}
	cl.t.Logf("%s: %d clients kept their host with no error, %d were moved by the router and ended", when, len(kept), len(moved))
	return moved
}

// redial opens a connection from each client's own address and port again
// and sends a request on it. Where the router sends that 4-tuple to the
// host the client was on, the host still holds the client's old leg: the
// request must be answered, by that host, within a dial timeout. Ports the
// client's stack gave to another connection since are skipped.
func (cl *cluster) redial(ls []*longClient) {
	cl.t.Helper()
	n := 0
	for _, lc := range ls {
		to, err := cl.routedTo(lc.clientHost, lc.from)
		if err != nil {
			cl.t.Fatal(err)
		}
		if to != lc.host {
			continue
		}
		start := time.Now()
		before := cl.counters()[lc.host]
		c, err := cl.dialFrom(lc.clientHost, &net.TCPAddr{IP: net.ParseIP(lc.from.addr), Port: lc.from.port})
		if errors.Is(err, syscall.EADDRINUSE) {
			continue
		}
		if err != nil {
			cl.t.Errorf("a new connection from %s:%d (a client of x%d reset elsewhere, its leg still there): %v", lc.from.addr, lc.from.port, lc.host+1, err)
			continue
		}
		h, err := get(c, bufio.NewReader(c))
		c.Close()
		if err != nil || h != lc.host {
			cl.t.Errorf("a new connection from %s:%d: answered by x%d, %v; want x%d", lc.from.addr, lc.from.port, h+1, err, lc.host+1)
			continue
		}
		n++
		after := cl.counters()[lc.host]
		cl.t.Logf("a new connection from %s:%d, over x%d's old leg of that port: served after %v (its counters: stale_acked +%d, dead_leg +%d, syn +%d)", lc.from.addr, lc.from.port, lc.host+1, time.Since(start).Round(time.Millisecond),
			after["stale_acked"]-before["stale_acked"], after["dead_leg"]-before["dead_leg"], after["syn"]-before["syn"])
	}
	cl.t.Logf("%d of %d clients reset elsewhere connected again from their port through their old host", n, len(ls))
}

// waitBuckets waits until host j holds at least n of the resilient group's
// buckets (idle buckets migrate to a member that comes back).
func (cl *cluster) waitBuckets(j, n int) {
	cl.t.Helper()
	end := time.Now().Add(convergeTimeout)
	for {
		b := cl.bucketShares()
		if b[j] >= n {
			cl.t.Logf("buckets by host %v", b)
			return
		}
		if time.Now().After(end) {
			cl.t.Fatalf("x%d holds %d buckets (%v), want %d within %v", j+1, b[j], b, n, convergeTimeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
