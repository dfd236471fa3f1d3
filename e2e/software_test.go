package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/internal/testproto"
	"github.com/xlb-lb/xlb/splice/demo"
	"github.com/xlb-lb/xlb/testnet"
)

// startNginx runs nginx on 127.0.0.1:port in ns, serving root, with extra
// lines in its http block.
func startNginx(t testing.TB, ns *testnet.NS, port int, root, extra string, serverExtra ...string) *testkit.Proc {
	t.Helper()
	return startNginxConf(t, ns, testproto.Nginx{
		Listen: fmt.Sprintf("127.0.0.1:%d", port), Root: root, HTTP: extra, Server: strings.Join(serverExtra, "\n"),
	})
}

// startNginxConf runs nginx in ns as n says (Dir: a new temporary directory)
// and waits until it accepts connections.
func startNginxConf(t testing.TB, ns *testnet.NS, n testproto.Nginx) *testkit.Proc {
	t.Helper()
	if _, err := exec.LookPath("nginx"); err != nil {
		t.Fatalf("nginx not installed (make test installs it: scripts/deps.sh test): %v", err)
	}
	n.Dir = t.TempDir()
	args, err := n.WriteConfig()
	if err != nil {
		t.Fatal(err)
	}
	p := testkit.Start(t, ns, "nginx "+n.Listen, args...)
	// nginx prints nothing when it starts well: wait until it accepts.
	p.WaitAccepts(ns, n.Listen)
	return p
}

// TestCurlReusesOneConnection: curl fetches the same URL many times over one
// connection through xlb; every body is intact.
func TestCurlReusesOneConnection(t *testing.T) {
	testnet.RequireRoot(t)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl not installed (make test installs it)")
	}
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 3)
	lb := startXLB(t, ns, "lo", 8080, workers)
	const n = 50
	dir := t.TempDir()
	args := []string{"-sS", "-v", "--max-time", "30"}
	for i := 0; i < n; i++ {
		args = append(args, "-o", filepath.Join(dir, fmt.Sprint(i)), "http://127.0.0.1:8080/bytes/65537")
	}
	out, err := ns.Command("curl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	if reused := strings.Count(string(out), "Re-using existing connection"); reused != n-1 {
		t.Errorf("curl reused the connection %d times, want %d", reused, n-1)
	}
	want := demo.Body(65537)
	for i := 0; i < n; i++ {
		got, err := os.ReadFile(filepath.Join(dir, fmt.Sprint(i)))
		if err != nil || string(got) != string(want) {
			t.Fatalf("response %d: %d bytes, intact=%v (%v)", i, len(got), string(got) == string(want), err)
		}
	}
	lb.Stop()
}

var wrkRequests = regexp.MustCompile(`(\d+) requests in`)

// TestWrkNginx: wrk -t1 -c2 against three nginx workers through xlb, zero
// errors; the load balancer's own sockets carry almost none of the bytes:
// with --dial socket its pool connections' sockets received nothing, and
// by default (on lo, dialed from the data plane) it has none.
func TestWrkNginx(t *testing.T) {
	for _, mode := range []string{"auto", "socket"} {
		t.Run("dial "+mode, func(t *testing.T) { testWrkNginx(t, mode) })
	}
}

func testWrkNginx(t *testing.T, dialMode string) {
	testnet.RequireRoot(t)
	if _, err := exec.LookPath("wrk"); err != nil {
		t.Fatal("wrk not installed (make test installs it)")
	}
	ns := testnet.New(t)
	root := testproto.WebRoot(t, 100, 100000)
	var workers []string
	for i := 0; i < 3; i++ {
		port := 4171 + i
		startNginx(t, ns, port, root, "")
		workers = append(workers, fmt.Sprintf("127.0.0.1:%d", port))
	}
	lb := startXLB(t, ns, "lo", 8080, workers, "--dial", dialMode)
	for _, path := range []string{"/b100", "/b100000"} {
		out, err := ns.Command("wrk", "-t1", "-c2", "-d2s", "http://127.0.0.1:8080"+path).CombinedOutput()
		if err != nil {
			t.Fatalf("wrk: %v\n%s", err, out)
		}
		s := string(out)
		if strings.Contains(s, "Socket errors") || strings.Contains(s, "Non-2xx") {
			t.Errorf("wrk %s reports errors:\n%s", path, s)
		}
		m := wrkRequests.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("wrk output without a request count:\n%s", s)
		}
		if n, _ := strconv.Atoi(m[1]); n < 100 {
			t.Errorf("wrk %s: only %d requests in 2s:\n%s", path, n, s)
		}
		t.Logf("wrk %s: %s requests", path, m[1])
	}
	// Payload never reaches user space: xlb holds no socket of a client
	// once it adopted it (the kernel never sees a packet of the client leg
	// again), and its pool connections received nothing while clients
	// moved megabytes.
	ss, err := ns.Command("ss", "-Htn", "state", "established", "( sport = :8080 )").Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	if s := strings.TrimSpace(string(ss)); s != "" {
		t.Errorf("client legs: xlb still holds sockets on :8080:\n%s", s)
	}
	ssw, err := ns.Command("ss", "-tin", "state", "established", "( dport = :4171 or dport = :4172 or dport = :4173 )").Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	if dialMode == "socket" {
		checkQuietSockets(t, string(ssw), "worker legs")
	} else if s := testkit.Sockets(t, ns, "established", "( dport >= :4171 and dport <= :4173 )"); len(s) > 0 {
		t.Errorf("worker legs: xlb holds %d sockets to its workers, want none (dialed connections):\n%s", len(s), strings.Join(s, "\n"))
	}
	lb.Stop()
}

var bytesReceived = regexp.MustCompile(`bytes_received:(\d+)`)
var bytesAcked = regexp.MustCompile(`bytes_acked:(\d+)`)

// checkQuietSockets checks that the sockets in ss -tin output (one per
// connection xlb holds) received and sent no payload: ss prints
// bytes_received/bytes_acked only when they are not zero, and a handshake
// counts as 1 acked byte.
func checkQuietSockets(t *testing.T, ss, what string) {
	t.Helper()
	sockets := strings.Count(ss, "127.0.0.1:") / 2
	if sockets == 0 {
		t.Fatalf("%s: ss lists no socket:\n%s", what, ss)
	}
	for _, m := range bytesReceived.FindAllStringSubmatch(ss, -1) {
		if v, _ := strconv.Atoi(m[1]); v > 0 {
			t.Errorf("%s: a socket of xlb received %d bytes of payload", what, v)
		}
	}
	for _, m := range bytesAcked.FindAllStringSubmatch(ss, -1) {
		if v, _ := strconv.Atoi(m[1]); v > 1 {
			t.Errorf("%s: a socket of xlb sent %d bytes", what, v)
		}
	}
	t.Logf("%s: %d sockets held by xlb, none carried payload", what, sockets)
}
