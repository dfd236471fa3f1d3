package e2e

// IPv6: clients and workers over [::1], the IPv6 programs (xlb6.o) doing
// the splicing and the remixing, checked with real clients and servers.

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/internal/testproto"
	"github.com/xlb-lb/xlb/splice/demo"
	"github.com/xlb-lb/xlb/testnet"
)

// TestIPv6NginxRemix: wrk over [::1] through xlb to three nginx listening on
// [::1]: every request is remixed, nginx's own access logs show each worker
// serving its share; 1 MB bodies over one curl connection arrive intact.
func TestIPv6NginxRemix(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	const big = 1 << 20
	root := testproto.WebRoot(t, 100, big)
	logs := t.TempDir()
	var workers []string
	for i := 0; i < 3; i++ {
		addr := fmt.Sprintf("[::1]:%d", 4171+i)
		startNginxConf(t, ns, testproto.Nginx{Listen: addr, Root: root, AccessLog: filepath.Join(logs, fmt.Sprintf("%d.log", 4171+i))})
		workers = append(workers, addr)
	}
	lb := startXLB(t, ns, "lo", 8080, workers)
	counts, total := wrkShares(t, ns, "http://[::1]:8080/b100", workers, logs)
	r := testkit.Status(t, ns, "lo")
	if r.Counters["bind"] != 2 || r.Counters["remix"] < uint64(total)/2 {
		t.Errorf("binds %d, remixes %d for %d requests on 2 connections", r.Counters["bind"], r.Counters["remix"], total)
	}
	t.Logf("requests per worker %v; remixes %d", counts, r.Counters["remix"])

	// 1 MB bodies, one connection, each request remixed.
	const n = 8
	dir := t.TempDir()
	args := []string{"-sS", "--max-time", "30"}
	for i := 0; i < n; i++ {
		args = append(args, "-o", filepath.Join(dir, fmt.Sprint(i)), fmt.Sprintf("http://[::1]:8080/b%d", big))
	}
	if out, err := ns.Command("curl", args...).CombinedOutput(); err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	want := sha256.Sum256(demo.Body(big))
	for i := 0; i < n; i++ {
		got, err := os.ReadFile(filepath.Join(dir, fmt.Sprint(i)))
		if err != nil || sha256.Sum256(got) != want {
			t.Fatalf("1 MB body %d: %d bytes, SHA-256 matches: %v (%v)", i, len(got), sha256.Sum256(got) == want, err)
		}
	}
	if st, err := ns.Command(testkit.XLB, "stats").CombinedOutput(); err != nil || !strings.Contains(string(st), "[::1]:4171") {
		t.Errorf("xlb stats does not name the IPv6 workers as [addr]:port (%v):\n%s", err, st)
	}
	lb.Stop()
}

// TestIPv6Uploads: uploads over [::1] to demo workers on [::1], with and
// without Expect: 100-continue, two on one connection (the second may be
// remixed); each worker's SHA-256 of the body is the file's.
func TestIPv6Uploads(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := []string{"[::1]:4171", "[::1]:4172", "[::1]:4173"}
	startWorkersAt(t, ns, workers...)
	lb := startXLB(t, ns, "lo", 8080, workers)
	body := make([]byte, 1<<20+12345)
	rand.Read(body)
	file := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(file, body, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	want := hex.EncodeToString(sum[:])
	for _, expect := range []string{"Expect: 100-continue", "Expect:"} {
		url := "http://[::1]:8080" + demo.UploadPath
		out, err := ns.Command("curl", "-sS", "--max-time", "30", "-H", expect, "--data-binary", "@"+file, url,
			"--next", "-sS", "--max-time", "30", "-H", expect, "--data-binary", "@"+file, url).CombinedOutput()
		if err != nil {
			t.Fatalf("curl (%s): %v\n%s", expect, err, out)
		}
		if got := strings.Fields(string(out)); len(got) != 2 || got[0] != want || got[1] != want {
			t.Errorf("uploads with %q: the workers hashed %q, want %s twice", expect, out, want)
		}
	}
	lb.Stop()
}

// TestDualStack: one service with IPv4 and IPv6 workers listens on
// 127.0.0.1 and ::1 (--listen, two families); keep-alive clients of both families, at once,
// are each remixed over the workers of their own family only (a client is
// spliced onto worker connections of its own family), and every body is
// intact.
func TestDualStack(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := []string{"127.0.0.1:4171", "127.0.0.1:4172", "[::1]:4173", "[::1]:4174"}
	startWorkersAt(t, ns, workers...) // w1, w2 IPv4; w3, w4 IPv6
	sock := testkit.OwnSocket(t)
	lb := startXLB(t, ns, "lo", 8080, workers, append(sock, "--listen", "127.0.0.1,::1")...)
	type seen struct {
		addr    string
		workers map[string]int
		err     error
	}
	results := make(chan seen, 4)
	var froms []string // the clients' addresses, as xlb ctl clients must print them
	for _, addr := range []string{"127.0.0.1:8080", "[::1]:8080", "127.0.0.1:8080", "[::1]:8080"} {
		c := dial(t, ns, addr)
		froms = append(froms, c.c.LocalAddr().String())
		go func() {
			s := seen{addr: addr, workers: map[string]int{}}
			for i := 0; i < 200 && s.err == nil; i++ {
				var w string
				w, _, s.err = c.get(fmt.Sprintf("/bytes/%d", 100+i*37))
				s.workers[w]++
			}
			results <- s
		}()
	}
	own := map[string]map[string]bool{"127.0.0.1:8080": {"w1": true, "w2": true}, "[::1]:8080": {"w3": true, "w4": true}}
	for range 4 {
		s := <-results
		if s.err != nil {
			t.Fatalf("client of %s: %v", s.addr, s.err)
		}
		for w, n := range s.workers {
			if !own[s.addr][w] {
				t.Errorf("client of %s: %d answers from %s, a worker of the other family", s.addr, n, w)
			}
		}
		if len(s.workers) != 2 {
			t.Errorf("client of %s: answers from %v, want both workers of its family (remixed per request)", s.addr, s.workers)
		}
		t.Logf("client of %s: %v", s.addr, s.workers)
	}
	if r := testkit.Status(t, ns, "lo"); r.Counters["remix"] == 0 || r.Counters["bind"] != 4 {
		t.Errorf("remixes %d, binds %d for 4 clients", r.Counters["remix"], r.Counters["bind"])
	}
	// The clients are still connected: xlb ctl clients names each, IPv6
	// ones as [addr]:port.
	text := string(ctl(t, ns, sock[1], "clients"))
	for _, from := range froms {
		if !strings.Contains(text, from) {
			t.Errorf("xlb ctl clients does not list client %s:\n%s", from, text)
		}
	}
	lb.Stop()
}

// TestIPv6FamilyErrors: what xlb refuses about families, at start and
// from xlb ctl.
func TestIPv6FamilyErrors(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	code, out := runXLB(t, ns, nil, "--listen", "127.0.0.1", "lo", "8080", "[::1]:4172")
	wantFailure(t, "an IPv4 --listen for IPv6 workers", code, out, "--listen 127.0.0.1: no worker is IPv4")
	code, out = runXLB(t, ns, nil, "--listen", "127.0.0.1", "lo", "8080", "127.0.0.1:4171", "[::1]:4172")
	wantFailure(t, "an IPv4 --listen for workers of both families", code, out, "--listen: no IPv6 address, but workers are IPv6", "--listen 127.0.0.1,::1")
	code, out = runXLB(t, ns, nil, "--listen", "127.0.0.1,nope", "lo", "8080", "127.0.0.1:4171")
	if code != 2 || !strings.Contains(out, `"nope" is not an IP address`) {
		t.Errorf("--listen 127.0.0.1,nope: exit %d, want 2 (usage):\n%s", code, out)
	}
	code, out = runXLB(t, ns, nil, "--dial", "xdp", "lo", "8080", "[::1]:4172")
	wantFailure(t, "--dial xdp for IPv6 workers", code, out, "dials IPv4 workers only")
	assertDetached(t, ns)

	// An IPv4 service does not listen on IPv6: no IPv6 worker can join it.
	flags := testkit.OwnSocket(t)
	lb := startXLB(t, ns, "lo", 8080, startWorkers(t, ns, 1), flags...)
	out2, err := ns.Command(testkit.XLB, append(append([]string{"ctl"}, flags...), "add", "[::1]:4179")...).CombinedOutput()
	if err == nil || !strings.Contains(string(out2), "the service has no IPv6 workers") {
		t.Errorf("xlb ctl add [::1]:4179 on an IPv4 service: %v\n%s", err, out2)
	}
	lb.Stop()
}
