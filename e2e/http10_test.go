package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/splice/demo"
	"github.com/xlb-lb/xlb/testnet"
)

// http10Py fetches URL argv[1] argv[2] times with python's http.client
// speaking HTTP/1.0 (a new connection each time, as that version does
// without keep-alive) and prints, for each answer, its status, its
// Connection header and the SHA-256 of its body.
const http10Py = `
import hashlib, http.client, sys
http.client.HTTPConnection._http_vsn = 10
http.client.HTTPConnection._http_vsn_str = "HTTP/1.0"
host, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for _ in range(n):
    c = http.client.HTTPConnection(host, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    body = r.read()
    print(r.status, (r.getheader("Connection") or "-").strip(), hashlib.sha256(body).hexdigest())
    c.close()
`

// TestHTTP10Clients: HTTP/1.0 clients that ask for no keep-alive, as curl
// --http1.0, python's http.client and a hand-written client send them,
// through xlb (--http10 keep) to three nginx. Each gets its whole answer and
// then the end of its connection from xlb (the worker's connection stays
// open for the next client): 1 MiB bodies hash-checked, HEAD, 304 and 404
// answers (no body or nginx's own error page), every answer saying
// "Connection: close"; nginx's log shows its connections serving several
// clients each; a POST with a body goes on as it was sent (the worker closes
// after it). Counters: every GET and HEAD rewritten and closed by the data
// plane, none unframed.
func TestHTTP10Clients(t *testing.T) {
	testnet.RequireRoot(t)
	testkit.NeedTools(t, "curl", "python3", "nginx")
	ns := testnet.New(t)
	addrs, logs := connNginx(t, ns, 1<<20)
	lb := startXLB(t, ns, "lo", 8080, addrs, testkit.OwnSocket(t)...)
	defer lb.Stop()
	before := testkit.Status(t, ns, "lo").Counters
	rewritten := 0
	curl := func(args ...string) string {
		t.Helper()
		out, err := ns.Command("curl", append([]string{"-sS", "--http1.0", "--max-time", "10"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v\n%s", args, err, out)
		}
		return string(out)
	}

	// 1 MiB bodies: many segments, the FIN on the last.
	dir := t.TempDir()
	for i := 0; i < 5; i++ {
		f := filepath.Join(dir, fmt.Sprint(i))
		if got := curl("-o", f, "-w", "%{http_code}", "http://127.0.0.1:8080/b1048576"); got != "200" {
			t.Errorf("curl /b1048576: status %s", got)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if demo.Sum(b) != demo.Sum(demo.Body(1<<20)) {
			t.Errorf("curl /b1048576 #%d: %d bytes, not the file", i, len(b))
		}
		rewritten++
	}
	// HEAD: Content-Length names a body that is not sent.
	modified := "" // for If-Modified-Since: nginx's if_modified_since is exact
	for i := 0; i < 3; i++ {
		out := curl("-I", "http://127.0.0.1:8080/b100")
		if !strings.HasPrefix(out, "HTTP/1.1 200") || !strings.Contains(out, "Content-Length: 100") {
			t.Errorf("curl -I /b100:\n%s", out)
		}
		for _, l := range strings.Split(out, "\r\n") {
			if v, ok := strings.CutPrefix(l, "Last-Modified: "); ok {
				modified = v
			}
		}
		rewritten++
	}
	// 304 and 404: no body, and nginx's error page.
	for i := 0; i < 3; i++ {
		if got := curl("-o", "/dev/null", "-w", "%{http_code}", "-H", "If-Modified-Since: "+modified, "http://127.0.0.1:8080/b100"); got != "304" {
			t.Errorf("curl If-Modified-Since: status %s, want 304", got)
		}
		if got := curl("-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:8080/missing"); got != "404" {
			t.Errorf("curl /missing: status %s, want 404", got)
		}
		rewritten += 2
	}
	// python's http.client, HTTP/1.0.
	const py = 20
	out, err := ns.Command("python3", "-c", http10Py, "127.0.0.1:8080", "/b100", fmt.Sprint(py)).CombinedOutput()
	if err != nil {
		t.Fatalf("python3 http.client: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := fmt.Sprintf("200 close %s", demo.Sum(demo.Body(100)))
	if len(lines) != py {
		t.Errorf("python3 http.client: %d answers, want %d:\n%s", len(lines), py, out)
	}
	for _, l := range lines {
		if l != want {
			t.Errorf("python3 http.client: %q, want %q", l, want)
			break
		}
	}
	rewritten += py
	// A client reading until the connection ends, as HTTP/1.0 allows: it
	// must end (our FIN) right after the body.
	for i := 0; i < 5; i++ {
		err := ns.Do(func() error {
			conn, err := net.DialTimeout("tcp4", "127.0.0.1:8080", ioTimeout)
			if err != nil {
				return err
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(ioTimeout))
			if _, err := io.WriteString(conn, "GET /b100 HTTP/1.0\r\n\r\n"); err != nil {
				return err
			}
			all, err := io.ReadAll(conn)
			if err != nil {
				return fmt.Errorf("reading to the end: %v (%d bytes)", err, len(all))
			}
			resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(string(all))), nil)
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || demo.Sum(body) != demo.Sum(demo.Body(100)) {
				return fmt.Errorf("status %d, %d body bytes", resp.StatusCode, len(body))
			}
			// Go takes the header out (resp.Close says it): the raw bytes.
			if !resp.Close || !strings.Contains(string(all), "\r\nConnection: close     \r\n") {
				return fmt.Errorf("the answer does not say the connection closes:\n%s", all[:len(all)-len(body)])
			}
			return nil
		})
		if err != nil {
			t.Errorf("raw HTTP/1.0 client #%d: %v", i, err)
		}
		rewritten++
	}
	// A request with a body is not rewritten: nginx answers (405 for a
	// POST to a file) and closes.
	if got := curl("-o", "/dev/null", "-w", "%{http_code}", "-d", "x=1", "http://127.0.0.1:8080/b100"); got != "405" {
		t.Errorf("curl POST: status %s, want 405", got)
	}

	after := testkit.Status(t, ns, "lo").Counters
	for name, want := range map[string]uint64{"keep_http10": uint64(rewritten), "framed_close": uint64(rewritten), "unframed": 0} {
		if got := after[name] - before[name]; got != want {
			t.Errorf("counter %s +%d, want +%d", name, got, want)
		}
	}
	requests, perConn := 0, map[string]int{}
	for i, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if m := connLogLine.FindStringSubmatch(line); m != nil {
				requests++
				perConn[fmt.Sprintf("%d/%s", i, m[4])]++
			}
		}
	}
	reused := 0
	for _, n := range perConn {
		if n > 1 {
			reused++
		}
	}
	t.Logf("nginx: %d requests over %d connections, %d of them served several clients", requests, len(perConn), reused)
	if requests != rewritten+1 {
		t.Errorf("nginx logged %d requests, want %d", requests, rewritten+1)
	}
	if reused == 0 || len(perConn) >= requests {
		t.Errorf("nginx's connections served one client each (%d for %d requests): the worker connections were not kept", len(perConn), requests)
	}
	waitOnlyIdleWorkers(t, ns, reapTimeout, "after the HTTP/1.0 clients")
}
