package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/splice/demo"
	"github.com/xlb-lb/xlb/testnet"
)

// slowShare runs conns keep-alive clients for d through xlb with the given
// policy over two demo workers and one with 5 ms of added service time; it
// returns the slow worker's share of the requests (every body verified).
func slowShare(t *testing.T, policy string, conns int, d time.Duration) (float64, int) {
	t.Helper()
	ns := testnet.New(t)
	workers := []string{"127.0.0.1:4171", "127.0.0.1:4172", "127.0.0.1:4173"}
	for i, addr := range workers {
		args := []string{testkit.XLB, "demo-worker", "--name", fmt.Sprintf("w%d", i+1)}
		if i == 2 {
			args = append(args, "--delay", "5ms")
		}
		testkit.Start(t, ns, "worker "+addr, append(args, addr)...).WaitLines("listening on", 1, testkit.StartTimeout)
	}
	lb := startXLB(t, ns, "lo", 8080, workers, append(testkit.OwnSocket(t), "--policy", policy, "--pool", "8")...)
	defer lb.Stop()
	var mu sync.Mutex
	by := map[string]int{}
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	deadline := time.Now().Add(d)
	for i := 0; i < conns; i++ {
		c := dial(t, ns, "127.0.0.1:8080")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100000 && time.Now().Before(deadline); j++ {
				w, _, err := c.get(fmt.Sprintf("/bytes/%d", 100+j%200))
				if err != nil {
					errs <- err
					return
				}
				mu.Lock()
				by[w]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("policy %s: %v", policy, err)
	}
	total := by["w1"] + by["w2"] + by["w3"]
	if total < 100 {
		t.Fatalf("policy %s: only %d requests in %v (%v)", policy, total, d, by)
	}
	t.Logf("policy %s: %d requests, by worker %v", policy, total, by)
	return float64(by["w3"]) / float64(total), total
}

// TestSlowWorkerGetsLess: one worker of three takes 5 ms longer per
// request. Round robin gives it its third regardless; jiq (its connections
// come back late) and least (it has more of them busy) give it less.
func TestSlowWorkerGetsLess(t *testing.T) {
	testnet.RequireRoot(t)
	const conns, d = 8, 2 * time.Second
	share := map[string]float64{}
	for _, p := range []string{"rr", "jiq", "least"} {
		share[p], _ = slowShare(t, p, conns, d)
	}
	t.Logf("slow worker's share: rr %.1f%%, jiq %.1f%%, least %.1f%%", 100*share["rr"], 100*share["jiq"], 100*share["least"])
	if share["rr"] < 0.25 {
		t.Errorf("rr gave the slow worker %.1f%%, want about a third", 100*share["rr"])
	}
	for _, p := range []string{"jiq", "least"} {
		if share[p] >= share["rr"]*0.85 {
			t.Errorf("%s gave the slow worker %.1f%%, not clearly less than rr's %.1f%%", p, 100*share[p], 100*share["rr"])
		}
	}
}

// TestRematch: xlb ctl rematch moves the named client's next request to the
// named worker, without a reconnect; under sticky it stays there.
func TestRematch(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 3)
	sock := testkit.OwnSocket(t)
	lb := startXLB(t, ns, "lo", 8080, workers, append(sock, "--policy", "sticky")...)
	defer lb.Stop()
	c := dial(t, ns, "127.0.0.1:8080")
	first, _, err := c.get("/bytes/1000")
	if err != nil {
		t.Fatal(err)
	}
	var clients []struct {
		Client, State, Worker string
	}
	if err := json.Unmarshal(ctl(t, ns, sock[1], "clients", "--json"), &clients); err != nil {
		t.Fatal(err)
	}
	me := c.c.LocalAddr().String()
	found := false
	for _, cl := range clients {
		found = found || cl.Client == me
	}
	if !found {
		t.Fatalf("xlb ctl clients does not list %s: %+v", me, clients)
	}
	for round, target := range []int{1, 2, 0} {
		name := fmt.Sprintf("w%d", target+1)
		if name == first && round == 0 {
			continue
		}
		ctl(t, ns, sock[1], "rematch", me, workers[target])
		for i := 0; i < 3; i++ {
			w, _, err := c.get(fmt.Sprintf("/bytes/%d", 500+i))
			if err != nil {
				t.Fatal(err)
			}
			if w != name {
				t.Fatalf("round %d: request %d after rematch to %s served by %s", round, i, name, w)
			}
		}
	}
	// Bad input: an unknown client, an unknown worker.
	for _, args := range [][]string{{"rematch", "127.0.0.1:1", workers[0]}, {"rematch", me, "127.0.0.1:9"}} {
		out, err := ns.Command(testkit.XLB, append([]string{"ctl", "--socket", sock[1]}, args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "no ") {
			t.Errorf("xlb ctl %v: %v, %s; want an error", args, err, out)
		}
	}
}

// TestManyIdleClients: 10,000 concurrent keep-alive clients, each doing a
// few requests with pauses, served by at most 32 connections per worker:
// idle clients give their worker connection back. Every body is verified;
// no client sees an error.
// workerConns counts the established connections of the worker at addr
// (their worker side), with ss in ns.
func workerConns(ns *testnet.NS, addr string) (int, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return 0, err
	}
	out, err := ns.Command("ss", "-Htn", "state", "established", fmt.Sprintf("( sport = :%d )", ap.Port())).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("ss: %v\n%s", err, out)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(line, addr) {
			n++
		}
	}
	return n, nil
}

func TestManyIdleClients(t *testing.T) {
	testnet.RequireRoot(t)
	const (
		clients  = 10000
		requests = 3
		perConn  = 32
	)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 8)
	sock := testkit.OwnSocket(t)
	lb := startXLB(t, ns, "lo", 8080, workers, append(sock, "--pool", "16",
		"--worker-conns", fmt.Sprint(perConn), "--idle-release", "20ms")...)
	defer lb.Stop()

	var maxLegs atomic.Int64
	var watchErr error
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for i := 0; i < 10000; i++ {
			// Two reads 20 ms apart, the lower count of each worker:
			// a leg changing state moves two counters of xlb_wload one
			// after the other (cool(): cooling, then bound), and a read
			// between the two counts it twice. On this VM a vCPU can be
			// held between them for milliseconds; a connection over
			// the cap stays.
			ws, err := listWorkers(ns, sock[1])
			if err == nil {
				time.Sleep(20 * time.Millisecond)
				var again map[string]testkit.StatsWorker
				if again, err = listWorkers(ns, sock[1]); err == nil {
					for a, w := range again {
						if p, ok := ws[a]; ok && w.Legs < p.Legs {
							ws[a] = w
						}
					}
				}
			}
			if err != nil {
				watchErr = err
				return
			}
			for a, w := range ws {
				legs := int64(w.Legs)
				if legs > perConn {
					// The counters say over the cap: count the
					// worker's own connections (its side of
					// them; xlb holds no socket for them), the
					// truth the counters approximate.
					if open, err := workerConns(ns, a); err == nil {
						t.Logf("worker %s: %d legs counted, %d connections open", a, legs, open)
						legs = int64(open)
					}
				}
				if legs > maxLegs.Load() {
					maxLegs.Store(legs)
				}
			}
			select {
			case <-stopWatch:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()

	var served, bytes atomic.Int64
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64) // connections being opened at once
	start := time.Now()
	for i := 0; i < clients; i++ {
		sem <- struct{}{}
		var c net.Conn
		err := ns.Do(func() error {
			var err error
			c, err = net.DialTimeout("tcp4", "127.0.0.1:8080", ioTimeout)
			return err
		})
		<-sem
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := bufio.NewReaderSize(c, 4096)
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			// Spread the first requests over the time the dials take.
			time.Sleep(time.Duration(rng.IntN(5000)) * time.Millisecond)
			for j := 0; j < requests; j++ {
				n := 100 + rng.IntN(3000)
				_, got, err := demo.Get(c, r, fmt.Sprintf("/bytes/%d", n))
				if err != nil {
					errs <- fmt.Errorf("client %d request %d: %w", i, j, err)
					return
				}
				served.Add(1)
				bytes.Add(int64(got))
				time.Sleep(time.Duration(3000+rng.IntN(3000)) * time.Millisecond)
			}
		}(i)
	}
	dialed := time.Since(start)
	wg.Wait()
	close(stopWatch)
	<-watched
	if watchErr != nil {
		t.Fatalf("watching the connections per worker: %v", watchErr)
	}
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 5 {
			t.Error(err)
		}
	}
	if n > 0 {
		t.Fatalf("%d clients saw errors", n)
	}
	r := testkit.Status(t, ns, "lo")
	t.Logf("%d clients (dialed in %v), %d requests, %d bytes verified in %v; at most %d connections per worker; released %d, no idle leg %d, parked drops %d",
		clients, dialed.Round(time.Millisecond), served.Load(), bytes.Load(), time.Since(start).Round(time.Millisecond),
		maxLegs.Load(), r.Counters["released"], r.Counters["no_idle_leg"], r.Counters["parked_drop"])
	if served.Load() != clients*requests {
		t.Errorf("%d requests served, want %d", served.Load(), clients*requests)
	}
	if m := maxLegs.Load(); m > perConn || m == 0 {
		t.Errorf("a worker had %d connections, want at most %d", m, perConn)
	}
	if r.Counters["released"] == 0 {
		t.Error("no idle client gave its worker connection back")
	}
	if l := r.Legs["client/idle"] + r.Legs["client/bound"]; l < clients*9/10 {
		t.Errorf("only %d client legs at the end, want the %d clients still connected", l, clients)
	}
}
