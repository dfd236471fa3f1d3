package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/internal/testproto"
	"github.com/xlb-lb/xlb/testnet"
)

// nginxGet sends GET path on a keep-alive connection and returns the worker
// that answered (nginx's X-Worker).
func nginxGet(c *client, path string) (string, error) {
	c.c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := fmt.Fprintf(c.c, "GET %s HTTP/1.1\r\nHost: xlb\r\n\r\n", path); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := bufio.NewReader(resp.Body).WriteTo(&b); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK || b.String() != "hello\n" {
		return "", fmt.Errorf("GET %s: %s %q", path, resp.Status, b.String())
	}
	return resp.Header.Get("X-Worker"), nil
}

// TestHealthCheckHTTP: three nginx, each with a check path that answers 500
// while a file exists. One starts failing: xlb marks it down within fall x
// interval (plus one check's timeout), and from then on it gets no request,
// not even from the keep-alive clients that were on it; the others serve
// everything without an error. Its check passes again: it is back within
// rise x interval and gets requests again.
func TestHealthCheckHTTP(t *testing.T) {
	testnet.RequireRoot(t)
	testkit.NeedTools(t, "nginx")
	const (
		interval = 200 * time.Millisecond
		timeout  = 150 * time.Millisecond
		fall     = 3
		rise     = 2
		clients  = 4
		rounds   = 50 // 200 requests: past the tokens of every pool (jiq takes them in turn)
	)
	ns := testnet.New(t)
	root, flags, logs := t.TempDir(), t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "index.html"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var addrs, accessLogs []string
	for i := 0; i < 3; i++ {
		addr := fmt.Sprintf("127.0.0.1:%d", 4171+i)
		log := filepath.Join(logs, fmt.Sprintf("%d.log", 4171+i))
		startNginxConf(t, ns, testproto.Nginx{Listen: addr, Root: root, AccessLog: log, Server: fmt.Sprintf(
			"add_header X-Worker $server_addr:$server_port always;\n"+
				"location = /health { if (-f %s/%d) { return 500; } return 200 \"ok\\n\"; }", flags, 4171+i)})
		addrs = append(addrs, addr)
		accessLogs = append(accessLogs, log)
	}
	sick := addrs[1]
	sickFlag := filepath.Join(flags, "4172")
	sock := testkit.OwnSocket(t)
	// The sick worker weighs 4: once back, --slowstart ramps it from 1.
	xlbWorkers := append([]string{}, addrs...)
	xlbWorkers[1] += "@4"
	lb := startXLB(t, ns, "lo", 8080, xlbWorkers, append(sock, "--check", "http:/health",
		"--check-interval", interval.String(), "--check-timeout", timeout.String(),
		"--fall", fmt.Sprint(fall), "--rise", fmt.Sprint(rise), "--slowstart", "1s")...)
	defer lb.Stop()

	var cs []*client
	for i := 0; i < clients; i++ {
		c := dial(t, ns, "127.0.0.1:8080")
		defer c.c.Close()
		cs = append(cs, c)
	}
	// served makes rounds requests on every client (one at a time, each
	// client in turn) and counts them by worker.
	served := func(what string) map[string]int {
		t.Helper()
		got := map[string]int{}
		for r := 0; r < rounds; r++ {
			for i, c := range cs {
				w, err := nginxGet(c, "/")
				if err != nil {
					t.Fatalf("%s: client %d request %d: %v", what, i, r, err)
				}
				got[w]++
			}
		}
		t.Logf("%s: %v", what, got)
		return got
	}
	// requests is how many requests other than checks a worker logged.
	requests := func(i int) int {
		b, err := os.ReadFile(accessLogs[i])
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		n := 0
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 5 && f[1] != "/health" {
				n++
			}
		}
		return n
	}

	if got := served("all up"); got[sick] == 0 {
		t.Fatalf("%s got no request while up: %v", sick, got)
	}
	if err := os.WriteFile(sickFlag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	failing := time.Now()
	lb.WaitLines("worker down: health check failed", 1, 5*time.Second)
	took := time.Since(failing)
	t.Logf("%s marked down %v after its check began failing (fall x interval = %v)", sick, took.Round(time.Millisecond), fall*interval)
	if limit := fall*interval + timeout; took > limit {
		t.Errorf("marked down after %v, want within %v (fall x interval, plus a check's timeout)", took, limit)
	}
	if !strings.Contains(lb.Output(), "worker="+sick) || !strings.Contains(lb.Output(), "HTTP 500") {
		t.Errorf("the log does not say which worker is down and why:\n%s", lb.Output())
	}
	ws, err := listWorkers(ns, sock[1])
	if err != nil {
		t.Fatal(err)
	}
	for a, w := range ws {
		if want := map[bool]string{true: "down", false: "up"}[a == sick]; w.State != want {
			t.Errorf("xlb stats: %s is %s, want %s", a, w.State, want)
		}
	}
	before := requests(1)
	if got := served("one down"); got[sick] != 0 {
		t.Errorf("%s answered %d requests while down", sick, got[sick])
	}
	// X-Worker is what nginx says; its own log must agree.
	if after := requests(1); after != before {
		t.Errorf("%s logged %d requests while down", sick, after-before)
	}

	if err := os.Remove(sickFlag); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	lb.WaitLines("worker up: health check passed", 1, 5*time.Second)
	took = time.Since(healed)
	t.Logf("%s back up %v after its check passed again (rise x interval = %v)", sick, took.Round(time.Millisecond), rise*interval)
	if limit := rise*interval + timeout; took > limit {
		t.Errorf("back up after %v, want within %v", took, limit)
	}
	// Slow start: its weight ramps from 1 to 4 over a second.
	ws, err = listWorkers(ns, sock[1])
	if err != nil {
		t.Fatal(err)
	}
	if w := ws[sick]; w.WeightNow < 1 || w.WeightNow >= 4 || w.Weight != 4 {
		t.Errorf("right after it came back: weight %d, weight now %d; want 4 and 1 to 3 (--slowstart 1s)", w.Weight, w.WeightNow)
	}
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ws, err := listWorkers(ns, sock[1])
		if err != nil {
			t.Fatal(err)
		}
		if ws[sick].WeightNow == 4 {
			t.Logf("full weight %v after it came back", time.Since(healed).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("weight now %d 3 s after it came back, want 4", ws[sick].WeightNow)
		}
	}
	// Its pool refills within a tick or two: wait for its idle
	// connections (an event of the pool, read from xlb's status).
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		ws, err := listWorkers(ns, sock[1])
		if err != nil {
			t.Fatal(err)
		}
		if ws[sick].Idle > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no idle connection 5 s after it came back: %+v", sick, ws[sick])
		}
	}
	if got := served("back up"); got[sick] == 0 {
		t.Errorf("%s got no request after it came back: %v", sick, got)
	}
}

// TestPassiveCheck: a worker that accepts connections and closes them at
// once (a broken process behind a live port) is marked down by what it does
// to its pool connections, without --check; the clients are served by the
// other worker without an error.
func TestPassiveCheck(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 1)
	var ln net.Listener
	if err := ns.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", "127.0.0.1:4172")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	sock := testkit.OwnSocket(t)
	lb := startXLB(t, ns, "lo", 8080, append(workers, "127.0.0.1:4172"), sock...)
	defer lb.Stop()
	lb.WaitLines("worker down: it ends the connections it is given", 1, 10*time.Second)
	if !strings.Contains(lb.Output(), "worker=127.0.0.1:4172") {
		t.Errorf("the log does not name the worker:\n%s", lb.Output())
	}
	// The log says it is down; its pool empties at the pool's next round
	// (its idle connections retired): requests after that go to w1 only.
	// Before it, one may still take a connection the worker already
	// ended, and be reset, as any request to it was before.
	end := time.Now().Add(10 * time.Second)
	for {
		w := ctlWorkers(t, ns, sock[1])["127.0.0.1:4172"]
		if w.State == "down" && w.Idle == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the worker that ends its connections: %+v, want down with no idle connection", w)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c := dial(t, ns, "127.0.0.1:8080")
	defer c.c.Close()
	for i := 0; i < 50; i++ {
		w, _, err := c.get("/bytes/1000")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if w != "w1" {
			t.Fatalf("request %d answered by %q", i, w)
		}
	}
}
