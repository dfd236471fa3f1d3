package e2e

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/testnet"
)

// TestReuseDuringTraffic: a second xlb takes over with --reuse while clients
// are mid-conversation; every client keeps its connection and no request
// fails, before, during and after. With --dial xdp, the worker connections
// the old process dialed (no socket: their ports held by placeholders) are
// taken over: each is closed properly when the new process stops (one it
// did not know would stay open at its worker).
func TestReuseDuringTraffic(t *testing.T) {
	for _, mode := range []string{"socket", "xdp"} {
		t.Run("dial "+mode, func(t *testing.T) { testReuseDuringTraffic(t, mode) })
	}
}

func testReuseDuringTraffic(t *testing.T, dialMode string) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 3)
	sock := t.TempDir() + "/ctl.sock"
	old := startXLB(t, ns, "lo", 8080, workers, "--socket", sock, "--dial", dialMode)
	workerConns := func() []string { return testkit.Sockets(t, ns, "established", "( sport >= :4171 and sport <= :4173 )") }

	const clients = 8
	var stop atomic.Bool
	var done sync.WaitGroup
	var requests atomic.Int64
	errs := make(chan error, clients)
	conns := make([]*client, clients)
	for i := range conns {
		conns[i] = dial(t, ns, "127.0.0.1:8080")
	}
	for i, c := range conns {
		done.Add(1)
		go func() {
			defer done.Done()
			for j := 0; j < 100000 && !stop.Load(); j++ {
				if _, _, err := c.get(fmt.Sprintf("/bytes/%d", 500+i*1000+j%977)); err != nil {
					errs <- fmt.Errorf("client %d request %d: %w", i, j, err)
					return
				}
				requests.Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	waitRequests := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(ioTimeout)
		for requests.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d requests done, waited for %d", requests.Load(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitRequests(200)

	newer := testkit.Start(t, ns, "xlb --reuse", testkit.XLB, "--reuse", "--idle-release", "100ms", "--socket", sock, "--dial", dialMode,
		"lo", "8080", workers[0], workers[1], workers[2])
	newer.WaitLines("took over", 1, testkit.StartTimeout)
	select {
	case <-old.Done():
		if old.Err() != nil {
			t.Errorf("the old xlb exited with %v", old.Err())
		}
	case <-time.After(testkit.StopTimeout):
		t.Fatal("the old xlb did not exit after the handover")
	}
	done0 := requests.Load()
	waitRequests(done0 + 400)

	// New clients are served by the new process.
	c := dial(t, ns, "127.0.0.1:8080")
	for i := 0; i < 20; i++ {
		if _, _, err := c.get("/bytes/3000"); err != nil {
			t.Fatalf("new client after the handover: %v", err)
		}
	}
	stop.Store(true)
	done.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d requests on %d connections that lived through the handover", requests.Load(), clients)

	// Idle release works in the process that took over (its map-in-map
	// templates come from the object, not from the pinned maps): the idle
	// clients give their connections back, and the next request binds again.
	r0 := testkit.Status(t, ns, "lo")
	testkit.WaitStatus(t, ns, "lo", ioTimeout, "idle clients released", func(r testkit.StatusReport) bool {
		return r.Counters["released"] > r0.Counters["released"]
	})
	if _, _, err := c.get("/bytes/3000"); err != nil {
		t.Fatalf("request after an idle release: %v", err)
	}
	select {
	case <-newer.Done():
		t.Fatalf("the xlb that took over exited: %v", newer.Err())
	default:
	}
	for _, cl := range append(conns, c) {
		cl.c.Close()
	}
	newer.Stop()
	// Every worker connection, the inherited ones too, was closed by the
	// stop (handed back to the kernel: a FIN), not left to the worker's
	// idle timeout.
	if left := workerConns(); len(left) > 0 {
		t.Errorf("%d worker connections still established after the stop, e.g. %s", len(left), left[0])
	}
}

// TestReuseWorkersUp: a worker whose connections a --reuse takeover adopted
// is up in the new process from the start. Its state used to be
// "starting" (xlb_worker_up 0) until its pool next dialed, which a full
// pool of kept connections may not do for a long time: make soak's restart
// waited 30 s for it. Here the pools are full and nothing uses them.
func TestReuseWorkersUp(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 3)
	sock := t.TempDir() + "/ctl.sock"
	old := startXLB(t, ns, "lo", 8080, workers, "--socket", sock)
	testkit.WaitPoolsFull(t, ns, "lo", ioTimeout)
	newer := testkit.Start(t, ns, "xlb --reuse", testkit.XLB, "--reuse", "--socket", sock,
		"lo", "8080", workers[0], workers[1], workers[2])
	newer.WaitLines("took over", 1, testkit.StartTimeout)
	if !old.Exited(testkit.StopTimeout) {
		t.Fatal("the old xlb did not exit after the handover")
	}
	ws, err := listWorkers(ns, sock)
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range workers {
		if w, ok := ws[addr]; !ok || w.State != "up" || w.Legs == 0 {
			t.Errorf("worker %s after the takeover: %+v, want up with its adopted connections", addr, w)
		}
	}
	newer.Stop()
}
