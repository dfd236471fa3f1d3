package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/internal/testproto"
	"github.com/xlb-lb/xlb/testnet"
)

// TestRemixSpreadsTwoConnections: wrk -t1 -c2 over keep-alive against three
// nginx workers. With two client connections and three workers, balancing
// connections can never give every worker a quarter of the requests; per
// request remixing does. The shares come from nginx's own access logs.
func TestRemixSpreadsTwoConnections(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	root := testproto.WebRoot(t, 100)
	logs := t.TempDir()
	var workers []string
	for i := 0; i < 3; i++ {
		port := 4171 + i
		startNginx(t, ns, port, root, "", fmt.Sprintf("access_log %s/%d.log;", logs, port))
		workers = append(workers, fmt.Sprintf("127.0.0.1:%d", port))
	}
	lb := startXLB(t, ns, "lo", 8080, workers)
	counts, total := wrkShares(t, ns, "http://127.0.0.1:8080/b100", workers, logs)
	r := testkit.Status(t, ns, "lo")
	if r.Counters["bind"] != 2 || r.Counters["remix"] < uint64(total)/2 {
		t.Errorf("binds %d, remixes %d for %d requests on 2 connections", r.Counters["bind"], r.Counters["remix"], total)
	}
	t.Logf("requests per worker %v; remixes %d, requests seen %d", counts, r.Counters["remix"], r.Counters["request"])
	lb.Stop()
}

// wrkShares runs wrk -t1 -c2 -d2s at url in ns (failing on its errors)
// and checks, from each worker's access log (logs/PORT.log, workers[i] on
// port 4171+i), that
// at least 1000 requests reached the workers and each served a quarter or
// more of them: per request balancing over two client connections. It
// returns the requests per worker and their total.
func wrkShares(t *testing.T, ns *testnet.NS, url string, workers []string, logs string) (map[string]int, int) {
	t.Helper()
	out, err := ns.Command("wrk", "-t1", "-c2", "-d2s", url).CombinedOutput()
	if err != nil {
		t.Fatalf("wrk: %v\n%s", err, out)
	}
	if s := string(out); strings.Contains(s, "Socket errors") || strings.Contains(s, "Non-2xx") {
		t.Fatalf("wrk reports errors:\n%s", s)
	}
	counts := map[string]int{}
	total := 0
	for i, w := range workers {
		b, err := os.ReadFile(filepath.Join(logs, fmt.Sprintf("%d.log", 4171+i)))
		if err != nil {
			t.Fatal(err)
		}
		counts[w] = bytes.Count(b, []byte("\n"))
		total += counts[w]
	}
	if total < 1000 {
		t.Fatalf("only %d requests reached the workers: %v\n%s", total, counts, out)
	}
	for w, n := range counts {
		if share := float64(n) / float64(total); share < 0.25 {
			t.Errorf("worker %s served %.1f%% of %d requests, want at least 25%%", w, 100*share, total)
		}
	}
	return counts, total
}

// TestStickyKeepsConnections: with --policy sticky the same two connections
// stay on the worker connections they were first given.
func TestStickyKeepsConnections(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 3)
	lb := startXLB(t, ns, "lo", 8080, workers, "--policy", "sticky")
	for i := 0; i < 2; i++ {
		c := dial(t, ns, "127.0.0.1:8080")
		first := ""
		for j := 0; j < 50; j++ {
			w, _, err := c.get("/bytes/1000")
			if err != nil {
				t.Fatal(err)
			}
			if first == "" {
				first = w
			} else if w != first {
				t.Fatalf("sticky client moved from %s to %s at request %d", first, w, j)
			}
		}
	}
	if r := testkit.Status(t, ns, "lo"); r.Counters["remix"] != 0 || r.Counters["request"] < 98 {
		t.Errorf("sticky: remix %d (want 0), requests seen %d", r.Counters["remix"], r.Counters["request"])
	}
	lb.Stop()
}
