package e2e

import (
	"fmt"
	"sync"
	"testing"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/testnet"
)

// TestKeepAliveSizes: one keep-alive client, many sequential requests, bodies
// from 1 byte to 8 MB, every one hash-checked.
func TestKeepAliveSizes(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 3)
	lb := startXLB(t, ns, "lo", 8080, workers)
	c := dial(t, ns, "127.0.0.1:8080")
	total := 0
	for _, n := range []int{1, 2, 100, 1000, 1460, 1461, 4096, 65535, 65536, 100000, 1 << 20, 8 << 20, 1, 17} {
		for rep := 0; rep < 3; rep++ {
			_, got, err := c.get(fmt.Sprintf("/bytes/%d", n))
			if err != nil {
				t.Fatalf("request for %d bytes (repeat %d): %v", n, rep, err)
			}
			total += got
		}
	}
	r := testkit.Status(t, ns, "lo")
	if r.Counters["fwd_to_client"] == 0 || r.Counters["bind"] != 1 {
		t.Errorf("counters %v: want traffic through one binding", r.Counters)
	}
	t.Logf("%d bytes verified over one spliced connection", total)
	lb.Stop()
}

// TestManyClients: 100 concurrent keep-alive clients, 10 requests each.
func TestManyClients(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 3)
	lb := startXLB(t, ns, "lo", 8080, workers, "--pool", "16")
	const clients, requests = 100, 10
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	conns := make([]*client, clients)
	for i := range conns {
		conns[i] = dial(t, ns, "127.0.0.1:8080")
	}
	perWorker := map[string]int{}
	var mu sync.Mutex
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(c *client, i int) {
			defer wg.Done()
			for j := 0; j < requests; j++ {
				w, _, err := c.get(fmt.Sprintf("/bytes/%d", 1000+i*37+j))
				if err != nil {
					errs <- fmt.Errorf("client %d request %d: %w", i, j, err)
					return
				}
				mu.Lock()
				perWorker[w]++
				mu.Unlock()
			}
		}(conns[i], i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	n := 0
	for _, v := range perWorker {
		n += v
	}
	if n != clients*requests {
		t.Errorf("%d responses, want %d", n, clients*requests)
	}
	t.Logf("responses per worker: %v", perWorker)
	lb.Stop()
}
