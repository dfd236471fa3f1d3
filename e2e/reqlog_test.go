package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/internal/testproto"
	"github.com/xlb-lb/xlb/testnet"
)

// accessRecord is a line of xlb's --access-log.
type accessRecord struct {
	Time          string   `json:"time"`
	Client        string   `json:"client"`
	Worker        string   `json:"worker"`
	WorkerConn    uint16   `json:"worker_conn"`
	Request       uint32   `json:"request"`
	RequestBytes  uint32   `json:"request_bytes"`
	ResponseBytes uint32   `json:"response_bytes"`
	TTFBMs        *float64 `json:"ttfb_ms"`
	DurationMs    *float64 `json:"duration_ms"`
	End           string   `json:"end"`
	Pinned        string   `json:"pinned"`
}

// readAccessLog waits (bounded) until path holds n lines and parses them.
func readAccessLog(t *testing.T, path string, n int) []accessRecord {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(b) > 0 && (len(lines) >= n || time.Now().After(deadline)) {
			var recs []accessRecord
			for _, l := range lines {
				var r accessRecord
				if err := json.Unmarshal([]byte(l), &r); err != nil {
					t.Fatalf("access log line %q: %v", l, err)
				}
				recs = append(recs, r)
			}
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("access log %s: %d bytes after 10 s, want %d lines", path, len(b), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countingConn counts the bytes read from and written to a connection.
type countingConn struct {
	net.Conn
	read, written int
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.read += n
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.written += n
	return n, err
}

// TestAccessLog: keep-alive clients make requests through xlb to three
// nginx, pausing past --idle-release now and then, and close. Every request
// has one line in xlb's access log that says what the client did: its own
// address and port (nginx sees only xlb's), its request's number, the bytes
// it sent and received, which worker answered (as X-Worker and that nginx's
// own access log say), and how the exchange ended (the next request, an
// idle release, the client's close).
func TestAccessLog(t *testing.T) {
	testnet.RequireRoot(t)
	testkit.NeedTools(t, "nginx")
	const (
		clients  = 6
		requests = 8
	)
	ns := testnet.New(t)
	root, logs := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "index.html"), []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("0123456789abcdef", 4096) // 64 KB: answers of many segments
	if err := os.WriteFile(filepath.Join(root, "big"), []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	var addrs, nginxLogs []string
	for i := 0; i < 3; i++ {
		addr := fmt.Sprintf("127.0.0.1:%d", 4171+i)
		log := filepath.Join(logs, fmt.Sprintf("%d.log", 4171+i))
		startNginxConf(t, ns, testproto.Nginx{Listen: addr, Root: root, AccessLog: log,
			Server: "add_header X-Worker $server_addr:$server_port always;"})
		addrs = append(addrs, addr)
		nginxLogs = append(nginxLogs, log)
	}
	accessLog := filepath.Join(t.TempDir(), "access.log")
	lb := startXLB(t, ns, "lo", 8080, addrs, protoFlags(t, "--access-log", accessLog, "--idle-release", "100ms")...)
	defer lb.Stop()

	type sent struct {
		client           string
		worker, uri      string
		reqBytes, answer int
		paused           bool // the client paused after it (an idle release)
	}
	// The clients run at once: each one's requests in turn.
	sents := make([][]sent, clients)
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		var conn net.Conn
		if err := ns.Do(func() error {
			var err error
			conn, err = net.DialTimeout("tcp4", "127.0.0.1:8080", ioTimeout)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		go func() {
			defer conn.Close()
			cc := &countingConn{Conn: conn}
			r := bufio.NewReader(cc)
			for j := 1; j <= requests; j++ {
				path := "/"
				if j%4 == 0 {
					path = "/big"
				}
				uri := fmt.Sprintf("%s?c=%d&r=%d", path, i, j)
				req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: xlb\r\nUser-Agent: xlb-test/%d\r\n\r\n", uri, j)
				cc.SetDeadline(time.Now().Add(ioTimeout))
				before := cc.read
				if _, err := io.WriteString(cc, req); err != nil {
					errs <- err
					return
				}
				resp, err := http.ReadResponse(r, nil)
				if err != nil {
					errs <- fmt.Errorf("client %d request %d: %v", i, j, err)
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || (path == "/big" && string(body) != big) {
					errs <- fmt.Errorf("client %d request %d: %s, %d bytes, %v", i, j, resp.Status, len(body), err)
					return
				}
				if r.Buffered() != 0 {
					errs <- fmt.Errorf("client %d request %d: %d bytes past the answer", i, j, r.Buffered())
					return
				}
				s := sent{client: conn.LocalAddr().String(), worker: resp.Header.Get("X-Worker"), uri: uri,
					reqBytes: len(req), answer: cc.read - before, paused: j%3 == 0 && j < requests}
				sents[i] = append(sents[i], s)
				if s.paused {
					// Past --idle-release: the client gives its
					// worker connection back, which ends the
					// exchange's record.
					time.Sleep(700 * time.Millisecond)
				}
			}
			errs <- nil
		}()
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	var all []sent
	for _, s := range sents {
		all = append(all, s...)
	}
	// One more client asks the worker to close after its answer
	// (Connection: close): the pair is pinned, and both closing ends its
	// record.
	closer := dial(t, ns, "127.0.0.1:8080")
	closeReq := "GET /?closer HTTP/1.1\r\nHost: xlb\r\nConnection: close\r\n\r\n"
	closer.c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(closer.c, closeReq); err != nil {
		t.Fatal(err)
	}
	closeAnswer, err := io.ReadAll(closer.c) // to the worker's FIN
	if err != nil || !strings.HasPrefix(string(closeAnswer), "HTTP/1.1 200") {
		t.Fatalf("Connection: close request: %v %q", err, closeAnswer)
	}
	closerAddr := closer.c.LocalAddr().String()
	closer.c.Close()

	recs := readAccessLog(t, accessLog, len(all)+1)
	if len(recs) != len(all)+1 {
		t.Fatalf("%d access log lines for %d requests", len(recs), len(all)+1)
	}
	byKey := map[string]accessRecord{}
	for _, r := range recs {
		if r.Client == closerAddr {
			if r.End != "close" || r.Pinned != "close" || r.Request != 1 || int(r.RequestBytes) != len(closeReq) ||
				int(r.ResponseBytes) != len(closeAnswer) {
				t.Errorf("the Connection: close request's line: %+v; it sent %d bytes, got %d", r, len(closeReq), len(closeAnswer))
			}
			continue
		}
		k := fmt.Sprintf("%s #%d", r.Client, r.Request)
		if _, dup := byKey[k]; dup {
			t.Errorf("two lines for %s", k)
		}
		byKey[k] = r
	}
	workers := map[string]int{}
	ends := map[string]int{}
	for j, s := range all {
		n := j%requests + 1
		k := fmt.Sprintf("%s #%d", s.client, n)
		r, ok := byKey[k]
		if !ok {
			t.Errorf("no line for %s (%s)", k, s.uri)
			continue
		}
		want := "next"
		switch {
		case n == requests:
			want = "close"
		case s.paused:
			want = "release"
		}
		ends[r.End]++
		workers[r.Worker]++
		if r.Worker != s.worker || int(r.RequestBytes) != s.reqBytes || int(r.ResponseBytes) != s.answer || r.End != want {
			t.Errorf("%s (%s): logged worker %s, %d bytes in, %d out, end %s; the client saw worker %s, %d bytes in, %d out, end %s",
				k, s.uri, r.Worker, r.RequestBytes, r.ResponseBytes, r.End, s.worker, s.reqBytes, s.answer, want)
		}
		if r.TTFBMs == nil || r.DurationMs == nil || *r.TTFBMs > *r.DurationMs || *r.DurationMs > 5000 {
			t.Errorf("%s: times %v %v", k, r.TTFBMs, r.DurationMs)
		}
		if _, err := time.Parse(time.RFC3339Nano, r.Time); err != nil || r.WorkerConn == 0 {
			t.Errorf("%s: time %q, worker connection %d", k, r.Time, r.WorkerConn)
		}
		// The worker's own log has the request.
		i := indexOf(addrs, r.Worker)
		if i < 0 {
			t.Errorf("%s: worker %q is none of ours", k, r.Worker)
			continue
		}
		b, _ := os.ReadFile(nginxLogs[i])
		if !strings.Contains(string(b), " "+s.uri+" ") {
			t.Errorf("%s: %s's access log has no %s", k, r.Worker, s.uri)
		}
	}
	t.Logf("%d requests logged: by worker %v, by end %v", len(recs), workers, ends)
	if len(workers) < 2 {
		t.Errorf("every request on one worker (%v): no remix seen", workers)
	}
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// TestLatencyHistograms: two demo workers, one answering 50 ms late
// (--delay): the histograms in --metrics and the p50 and p99 in xlb stats
// say so, per worker, from the request records (--log-requests all).
func TestLatencyHistograms(t *testing.T) {
	testnet.RequireRoot(t)
	const (
		clients  = 4
		requests = 20
		metrics  = "127.0.0.1:9464"
	)
	ns := testnet.New(t)
	fast := startWorkers(t, ns, 1)[0]
	slow := "127.0.0.1:4172"
	p := testkit.Start(t, ns, "worker "+slow, testkit.XLB, "demo-worker", "--name", "w2", "--delay", "50ms", slow)
	p.WaitLines("listening on", 1, testkit.StartTimeout)
	sock := testkit.OwnSocket(t)
	lb := startXLB(t, ns, "lo", 8080, []string{fast, slow}, append(sock, "--log-requests", "all", "--policy", "rr",
		"--metrics", metrics)...)
	defer lb.Stop()

	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		c := dial(t, ns, "127.0.0.1:8080")
		go func() {
			defer c.c.Close()
			for j := 0; j < requests; j++ {
				if _, _, err := c.get("/bytes/100"); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for i := 0; i < clients; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Each client's last exchange ends with its close: its record comes
	// within a read of the ring (50 ms).
	var m map[string]uint64
	count := func(name, w string) uint64 { return m[name+`_count{worker="`+w+`"}`] }
	bucket := func(name, w, le string) uint64 { return m[name+`_bucket{worker="`+w+`",le="`+le+`"}`] }
	const dur, ttfb = "xlb_request_duration_seconds", "xlb_time_to_first_byte_seconds"
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		m = scrape(t, ns, metrics)
		if count(dur, fast)+count(dur, slow) >= clients*requests || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("duration: %s %d requests, %d within 25 ms; %s %d requests, %d within 25 ms, %d within 250 ms",
		fast, count(dur, fast), bucket(dur, fast, "0.025"), slow, count(dur, slow), bucket(dur, slow, "0.025"), bucket(dur, slow, "0.25"))
	if n := count(dur, fast) + count(dur, slow); n != clients*requests {
		t.Fatalf("the histograms count %d requests, want %d", n, clients*requests)
	}
	if count(dur, slow) == 0 || count(dur, fast) == 0 {
		t.Fatal("a worker has no request counted (rr should give both)")
	}
	if bucket(dur, slow, "0.025") != 0 || bucket(ttfb, slow, "0.025") != 0 {
		t.Errorf("%s answers 50 ms late, yet requests of it are counted within 25 ms", slow)
	}
	if b := bucket(dur, slow, "0.25"); b != count(dur, slow) {
		t.Errorf("%s: %d of %d requests within 250 ms", slow, b, count(dur, slow))
	}
	if b := bucket(dur, fast, "0.025"); b < count(dur, fast)*9/10 {
		t.Errorf("%s: only %d of %d requests within 25 ms", fast, b, count(dur, fast))
	}
	if c := count(ttfb, slow) + count(ttfb, fast); c != clients*requests {
		t.Errorf("time to first byte counts %d requests, want %d", c, clients*requests)
	}
	ws, err := listWorkers(ns, sock[1])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("xlb stats: %s p50 %.3f ms p99 %.3f ms; %s p50 %.3f ms p99 %.3f ms",
		fast, ws[fast].LatencyP50Ms, ws[fast].LatencyP99Ms, slow, ws[slow].LatencyP50Ms, ws[slow].LatencyP99Ms)
	if ws[slow].LatencyP50Ms < 45 || ws[slow].TTFBP50Ms < 45 || ws[fast].LatencyP50Ms > 20 || ws[fast].LatencyP50Ms <= 0 {
		t.Errorf("xlb stats: p50 %v ms (first byte %v) for %s, %v ms for %s", ws[slow].LatencyP50Ms, ws[slow].TTFBP50Ms, slow, ws[fast].LatencyP50Ms, fast)
	}
	out, err := ns.Command(testkit.XLB, "stats", "--socket", sock[1]).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "latency p50") {
		t.Errorf("xlb stats does not show the latencies (%v):\n%s", err, out)
	}
}

// TestAccessLogReopen: logrotate moves the access log away and sends
// SIGHUP; xlb writes on to a new file under the name, the old one keeps
// what came before, and xlb keeps running.
func TestAccessLogReopen(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 2)
	path := filepath.Join(t.TempDir(), "access.log")
	lb := startXLB(t, ns, "lo", 8080, workers, append(testkit.OwnSocket(t), "--access-log", path)...)
	defer lb.Stop()
	request := func() string {
		c := dial(t, ns, "127.0.0.1:8080")
		defer c.c.Close()
		if _, _, err := c.get("/bytes/100"); err != nil {
			t.Fatal(err)
		}
		return c.c.LocalAddr().String()
	}
	first := request()
	if recs := readAccessLog(t, path, 1); len(recs) != 1 || recs[0].Client != first {
		t.Fatalf("before the rotation: %+v, want one line of %s", recs, first)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := lb.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	lb.WaitLines("reopening the access log", 1, 5*time.Second)
	second := request()
	if recs := readAccessLog(t, path, 1); len(recs) != 1 || recs[0].Client != second {
		t.Errorf("after the rotation: %+v, want one line of %s", recs, second)
	}
	if recs := readAccessLog(t, path+".1", 1); len(recs) != 1 || recs[0].Client != first {
		t.Errorf("the rotated file: %+v, want the one line of %s", recs, first)
	}
	if strings.Contains(lb.Output(), "stopping") {
		t.Error("SIGHUP stopped xlb")
	}
}

// TestSIGHUPStopsWithoutAccessLog: with no access log file to reopen,
// SIGHUP (a closed terminal) stops xlb as SIGTERM does: cleanly, exit 0.
func TestSIGHUPStopsWithoutAccessLog(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 1)
	lb := startXLB(t, ns, "lo", 8080, workers, testkit.OwnSocket(t)...)
	if err := lb.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if !lb.Exited(testkit.StopTimeout) {
		t.Fatal("xlb still runs after SIGHUP")
	}
	if err := lb.Err(); err != nil || !strings.Contains(lb.Output(), "signal=hangup") {
		t.Errorf("exit %v; output:\n%s", err, lb.Output())
	}
}
