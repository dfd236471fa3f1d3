package e2e

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/testnet"
)

func ctl(t testing.TB, ns *testnet.NS, sock string, args ...string) []byte {
	t.Helper()
	out, err := ns.Command(testkit.XLB, append([]string{"ctl", "--socket", sock}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("xlb ctl %v: %v\n%s", args, err, out)
	}
	return out
}

// ctlWorkers is `xlb ctl list --json` by address (the workers of xlb stats).
func ctlWorkers(t testing.TB, ns *testnet.NS, sock string) map[string]testkit.StatsWorker {
	t.Helper()
	m, err := listWorkers(ns, sock)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// listWorkers is `xlb ctl list --json` by address, for goroutines other
// than the test's (which may not call t.Fatal).
func listWorkers(ns *testnet.NS, sock string) (map[string]testkit.StatsWorker, error) {
	out, err := ns.Command(testkit.XLB, "ctl", "--socket", sock, "list", "--json").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("xlb ctl list: %v\n%s", err, out)
	}
	var st testkit.StatsReport
	if err := json.Unmarshal(out, &st); err != nil {
		return nil, err
	}
	m := map[string]testkit.StatsWorker{}
	for _, w := range st.Workers {
		m[w.Addr] = w
	}
	return m, nil
}

// traffic is a set of keep-alive clients sending requests until stopped,
// recording which worker served each request and when it was sent.
type traffic struct {
	mu    sync.Mutex
	sent  []time.Time
	by    []string
	errs  []error
	stop  atomic.Bool
	wg    sync.WaitGroup
	count atomic.Int64
}

func startTraffic(t *testing.T, ns *testnet.NS, conns int) *traffic {
	tr := &traffic{}
	for i := 0; i < conns; i++ {
		c := dial(t, ns, "127.0.0.1:8080")
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for j := 0; j < 1000000 && !tr.stop.Load(); j++ {
				at := time.Now()
				w, _, err := c.get(fmt.Sprintf("/bytes/%d", 100+j%500))
				tr.mu.Lock()
				if err != nil {
					tr.errs = append(tr.errs, err)
					tr.mu.Unlock()
					return
				}
				tr.sent, tr.by = append(tr.sent, at), append(tr.by, w)
				tr.mu.Unlock()
				tr.count.Add(1)
				time.Sleep(time.Millisecond)
			}
		}()
	}
	t.Cleanup(func() { tr.stop.Store(true); tr.wg.Wait() })
	return tr
}

// end stops the clients and reports their failed requests.
func (tr *traffic) end(t *testing.T) {
	t.Helper()
	tr.stop.Store(true)
	tr.wg.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	for _, err := range tr.errs {
		t.Error(err)
	}
}

// wait waits until n requests are done in all (polling the counter: the
// clients have no event to wait on).
func (tr *traffic) wait(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for tr.count.Load() < n {
		if time.Now().After(deadline) {
			tr.mu.Lock()
			errs := tr.errs
			tr.mu.Unlock()
			t.Fatalf("only %d requests, waited for %d; failed requests: %v", tr.count.Load(), n, errs)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// since counts the requests sent after t0, by worker.
func (tr *traffic) since(t0 time.Time) (map[string]int, int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	m, n := map[string]int{}, 0
	for i, at := range tr.sent {
		if at.After(t0) {
			m[tr.by[i]]++
			n++
		}
	}
	return m, n
}

// TestCtlAddAndDrain: a worker added with `xlb ctl add` takes requests from
// existing connections at their next request; a drained worker gets no new
// request and its connections close; no client ever reconnects.
func TestCtlAddAndDrain(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 3) // w1, w2, w3; xlb starts with two
	sock := t.TempDir() + "/ctl.sock"
	lb := startXLB(t, ns, "lo", 8080, workers[:2], "--socket", sock)
	tr := startTraffic(t, ns, 4)
	tr.wait(t, 200)

	ctl(t, ns, sock, "add", workers[2])
	added := time.Now()
	tr.wait(t, tr.count.Load()+1500)
	after, n := tr.since(added)
	if share := float64(after["w3"]) / float64(n); share < 0.15 {
		t.Errorf("the added worker served %.1f%% of the %d requests after it was added (%v), want at least 15%%", 100*share, n, after)
	}
	t.Logf("after add: %v", after)

	r0 := testkit.Status(t, ns, "lo")
	ctl(t, ns, sock, "drain", workers[0])
	drained := time.Now()
	tr.wait(t, tr.count.Load()+1500)
	after, n = tr.since(drained)
	r1 := testkit.Status(t, ns, "lo")
	// A request meets the drained worker only when no other leg was idle at
	// its boundary (remix_no_idle: it stays where it is).
	if stayed := r1.Counters["remix_no_idle"] - r0.Counters["remix_no_idle"]; uint64(after["w1"]) > stayed {
		t.Errorf("the drained worker served %d of %d requests after the drain (stays for lack of an idle leg: %d)", after["w1"], n, stayed)
	}
	t.Logf("after drain: %v (retired %d)", after, r1.Counters["retired"]-r0.Counters["retired"])
	deadline := time.Now().Add(ioTimeout)
	for {
		w := ctlWorkers(t, ns, sock)[workers[0]]
		if w.State == "drained" && w.Legs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("drained worker still has connections: %+v", w)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctl(t, ns, sock, "remove", workers[0])
	deadline = time.Now().Add(ioTimeout)
	for {
		if _, ok := ctlWorkers(t, ns, sock)[workers[0]]; !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("removed worker still listed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	tr.stop.Store(true)
	tr.wg.Wait()
	for _, err := range tr.errs {
		t.Error(err)
	}
	lb.Stop()
}

// TestDrainWithoutTraffic: a drained worker's idle connections close even
// when nothing takes them from its pool: no traffic, and under rr, where
// the schedule leaves a draining worker out. Then remove forgets it.
func TestDrainWithoutTraffic(t *testing.T) {
	testnet.RequireRoot(t)
	for _, policy := range []string{"rr", "jiq"} {
		t.Run(policy, func(t *testing.T) {
			ns := testnet.New(t)
			workers := startWorkers(t, ns, 2)
			sock := t.TempDir() + "/ctl.sock"
			lb := startXLB(t, ns, "lo", 8080, workers, "--socket", sock, "--policy", policy, "--pool", "4")
			defer lb.Stop()
			if w := ctlWorkers(t, ns, sock)[workers[0]]; w.Legs == 0 {
				t.Fatalf("worker %s has no connection to drain: %+v", workers[0], w)
			}
			ctl(t, ns, sock, "drain", workers[0])
			deadline := time.Now().Add(10 * time.Second)
			for {
				w := ctlWorkers(t, ns, sock)[workers[0]]
				if w.State == "drained" && w.Legs == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("drained worker still %+v after 10s", w)
				}
				time.Sleep(100 * time.Millisecond)
			}
			ctl(t, ns, sock, "remove", workers[0])
			deadline = time.Now().Add(10 * time.Second)
			for _, ok := ctlWorkers(t, ns, sock)[workers[0]]; ok; _, ok = ctlWorkers(t, ns, sock)[workers[0]] {
				if time.Now().After(deadline) {
					t.Fatal("removed worker still listed after 10s")
				}
				time.Sleep(100 * time.Millisecond)
			}
			// The other still serves.
			if w, _, err := dial(t, ns, "127.0.0.1:8080").get("/bytes/100"); err != nil || w != "w2" {
				t.Fatalf("request after the remove: %q, %v", w, err)
			}
		})
	}
}
