package e2e

// Real protocols that break the three rules of DESIGN.md (TLS, interim
// responses, upgrades, pipelining), through xlb with its default flags. Each
// test checks every byte; none may see an error or a corrupted byte. They are
// the end-to-end proof of "Remix safety" (DESIGN.md): xlb moves a client only
// at a message boundary and pins the connections that do not follow the
// rules.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/internal/testproto"
	"github.com/xlb-lb/xlb/splice/demo"
	"github.com/xlb-lb/xlb/testnet"
)

// protoFlags are the xlb flags of the protocol tests: a control socket of
// its own, then extra, then $XLB_PROTO_FLAGS. That variable is for checking
// the tests themselves: with `--policy sticky --idle-release 0` xlb never
// moves a client, and every test here must pass (TestRedisOneCommandAtATime
// then does not check the balance).
func protoFlags(t testing.TB, extra ...string) []string {
	flags := append(testkit.OwnSocket(t), extra...)
	return append(flags, testkit.ProtoFlags()...)
}

// nginxFarm is n nginx workers on 127.0.0.1:4171.. serving root, each logging
// its requests to its own file and naming itself in X-Worker; with TLS when
// cert is set.
type nginxFarm struct {
	addrs []string
	logs  []string
}

func startNginxFarm(t testing.TB, ns *testnet.NS, n int, root, cert, key string) nginxFarm {
	t.Helper()
	var f nginxFarm
	dir := t.TempDir()
	for i := 0; i < n; i++ {
		addr := fmt.Sprintf("127.0.0.1:%d", 4171+i)
		log := filepath.Join(dir, fmt.Sprintf("access-%d.log", 4171+i))
		startNginxConf(t, ns, testproto.Nginx{Listen: addr, Root: root, Cert: cert, Key: key, AccessLog: log,
			Server: "add_header X-Worker $server_addr:$server_port always;"})
		f.addrs = append(f.addrs, addr)
		f.logs = append(f.logs, log)
	}
	return f
}

// accessLine is one line of a farm's access log.
type accessLine struct {
	worker      string
	status      string
	uri         string
	conn        string // nginx's connection serial number
	connRequest string
}

// requests reads every worker's access log, in order per worker. nginx
// writes a line when the request is finished (before or after the response
// left): callers that need all of them wait with waitRequests.
func (f nginxFarm) requests(t testing.TB) []accessLine {
	t.Helper()
	var lines []accessLine
	for i, path := range f.logs {
		b, err := os.ReadFile(path)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			fs := strings.Fields(l)
			if len(fs) != 5 {
				continue
			}
			lines = append(lines, accessLine{worker: f.addrs[i], status: fs[0], uri: fs[1], conn: fs[3], connRequest: fs[4]})
		}
	}
	return lines
}

// waitRequests waits until the farm logged n requests (bounded) and returns
// them.
func (f nginxFarm) waitRequests(t testing.TB, n int) []accessLine {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		lines := f.requests(t)
		if len(lines) >= n || time.Now().After(deadline) {
			return lines
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// perWorker counts lines by worker and status, e.g.
// "127.0.0.1:4171: 7 (200: 5, 400: 2)".
func perWorker(lines []accessLine) string {
	count := map[string]map[string]int{}
	for _, l := range lines {
		if count[l.worker] == nil {
			count[l.worker] = map[string]int{}
		}
		count[l.worker][l.status]++
	}
	if len(count) == 0 {
		return "no request"
	}
	var parts []string
	for _, w := range sortedKeys(count) {
		n := 0
		var st []string
		for _, s := range sortedKeys(count[w]) {
			n += count[w][s]
			st = append(st, fmt.Sprintf("%s: %d", s, count[w][s]))
		}
		parts = append(parts, fmt.Sprintf("%s: %d (%s)", w, n, strings.Join(st, ", ")))
	}
	return strings.Join(parts, "; ")
}

// tlsSizes are the files the TLS tests fetch: around a TLS record (16 KB)
// and across many.
var tlsSizes = []int{0, 100, 1000, 16383, 16384, 16385, 100000, 1000000}

// tlsFarm starts three nginx TLS workers serving tlsSizes.
func tlsFarm(t *testing.T, ns *testnet.NS) nginxFarm {
	t.Helper()
	cert, key, err := testproto.SelfSignedCert(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return startNginxFarm(t, ns, 3, testproto.WebRoot(t, tlsSizes...), cert, key)
}

var curlReused = regexp.MustCompile(`(?i)re-?using existing connection`)

// curlTail is the last lines of curl's verbose output, for failure messages.
func curlTail(out []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestTLSCurlKeepAlive: three nginx TLS workers; three runs of curl -k, each
// fetching 16 URLs of varied sizes over one keep-alive TLS connection through
// xlb (TLS 1.3, whose server sends session tickets after the handshake
// unasked, and one run with TLS 1.2). Every run exits 0, reuses its
// connection, every body is the file byte for byte, and the workers logged
// every request with status 200.
func TestTLSCurlKeepAlive(t *testing.T) {
	testnet.RequireRoot(t)
	testkit.NeedTools(t, "nginx", "curl")
	ns := testnet.New(t)
	farm := tlsFarm(t, ns)
	lb := startXLB(t, ns, "lo", 8080, farm.addrs, protoFlags(t)...)
	const runs = 3
	out := t.TempDir()
	var sizes []int
	for _, n := range tlsSizes {
		sizes = append(sizes, n, n)
	}
	failed := 0
	for run := 0; run < runs; run++ {
		args := []string{"-k", "-sS", "-v", "--max-time", "30"}
		if run == 1 {
			args = append(args, "--tls-max", "1.2")
		}
		for i, n := range sizes {
			args = append(args, "-o", filepath.Join(out, fmt.Sprintf("%d-%d", run, i)), fmt.Sprintf("https://127.0.0.1:8080/b%d", n))
		}
		b, err := ns.Command("curl", args...).CombinedOutput()
		if err != nil {
			t.Errorf("curl run %d (one TLS connection, %d requests): %v; last lines:\n%s", run, len(sizes), err, curlTail(b, 15))
			failed++
			continue
		}
		if reused := len(curlReused.FindAll(b, -1)); reused != len(sizes)-1 {
			t.Errorf("curl run %d reused its connection %d times, want %d", run, reused, len(sizes)-1)
		}
		for i, n := range sizes {
			got, err := os.ReadFile(filepath.Join(out, fmt.Sprintf("%d-%d", run, i)))
			if err != nil || !bytes.Equal(got, demo.Body(n)) {
				t.Errorf("curl run %d request %d (/b%d): %d bytes, intact=%v (%v)", run, i, n, len(got), bytes.Equal(got, demo.Body(n)), err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d curl runs failed; the workers logged %v", failed, runs, perWorker(farm.requests(t)))
	}
	lines := farm.waitRequests(t, runs*len(sizes))
	if len(lines) != runs*len(sizes) {
		t.Errorf("the workers logged %d requests, want %d", len(lines), runs*len(sizes))
	}
	for _, l := range lines {
		if l.status != "200" {
			t.Errorf("worker %s answered %s to %s", l.worker, l.status, l.uri)
		}
	}
	t.Logf("%d TLS requests on %d connections; per worker %v", len(lines), runs, perWorker(lines))
	lb.Stop()
}

// tlsGet sends GET path on a TLS connection and checks the response against
// the file of that size.
func tlsGet(c *tls.Conn, r *bufio.Reader, size int) error {
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := fmt.Fprintf(c, "GET /b%d HTTP/1.1\r\nHost: %s\r\n\r\n", size, testproto.ServerName); err != nil {
		return fmt.Errorf("GET /b%d: write: %w", size, err)
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return fmt.Errorf("GET /b%d: %w", size, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("GET /b%d: body after %d bytes: %w", size, len(body), err)
	}
	if resp.StatusCode != 200 || !bytes.Equal(body, demo.Body(size)) {
		return fmt.Errorf("GET /b%d: %s from %s, %d bytes, intact=%v", size, resp.Status, resp.Header.Get("X-Worker"), len(body), bytes.Equal(body, demo.Body(size)))
	}
	return nil
}

// TestTLSPausesPastIdleRelease: two Go crypto/tls clients (TLS 1.3 and 1.2)
// each make one TLS connection through xlb (--idle-release 200ms) and send a
// request, pause 600 ms (three idle releases), send the next, ... Every
// response is intact, and one nginx connection served each client.
func TestTLSPausesPastIdleRelease(t *testing.T) {
	testnet.RequireRoot(t)
	testkit.NeedTools(t, "nginx")
	ns := testnet.New(t)
	farm := tlsFarm(t, ns)
	lb := startXLB(t, ns, "lo", 8080, farm.addrs, protoFlags(t, "--idle-release", "200ms")...)
	sizes := []int{100, 1000000, 16385, 0, 100000}
	versions := []uint16{tls.VersionTLS13, tls.VersionTLS12}
	errs := make(chan error, len(versions))
	for _, v := range versions {
		raw := dial(t, ns, "127.0.0.1:8080").c
		go func() {
			errs <- func() error {
				name := tls.VersionName(v)
				c := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, ServerName: testproto.ServerName, MinVersion: v, MaxVersion: v})
				c.SetDeadline(time.Now().Add(ioTimeout))
				if err := c.Handshake(); err != nil {
					return fmt.Errorf("%s handshake through xlb: %w", name, err)
				}
				r := bufio.NewReaderSize(c, 64<<10)
				for i, n := range sizes {
					if i > 0 {
						time.Sleep(600 * time.Millisecond) // the pause is the point: xlb's idle release runs meanwhile
					}
					if err := tlsGet(c, r, n); err != nil {
						return fmt.Errorf("%s request %d (after %d pauses of 600 ms): %w", name, i, i, err)
					}
				}
				return nil
			}()
		}()
	}
	for range versions {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if t.Failed() {
		t.Fatalf("the workers logged %v", farm.requests(t))
	}
	want := len(versions) * len(sizes)
	lines := farm.waitRequests(t, want)
	if len(lines) != want {
		t.Fatalf("the workers logged %d requests, want %d: %v", len(lines), want, lines)
	}
	conns := map[string]int{}
	for _, l := range lines {
		conns[l.worker+" connection "+l.conn]++
	}
	if len(conns) != len(versions) {
		t.Errorf("%d TLS connections served by %d nginx connections, want one each: %v", len(versions), len(conns), conns)
	}
	t.Logf("%d requests over %d TLS connections with pauses of 600 ms; nginx connections %v", len(lines), len(versions), conns)
	lb.Stop()
}

// xWorker finds the last X-Worker header in curl's header dump (-D).
var xWorker = regexp.MustCompile(`(?mi)^x-worker: (\S+)`)

// uploadSizes are the bodies of TestExpectContinueUploads: 2 to 8 MB, none
// a round number.
var uploadSizes = []int{2 << 20, 3<<20 + 1, 8 << 20, 2<<20 + 333, 5<<20 + 7, 4 << 20, 6<<20 - 5, 2<<20 + 4096, 7<<20 + 100, 3 << 20}

// TestExpectContinueUploads: curl uploads 10 bodies of 2 to 8 MB with
// `Expect: 100-continue` to demo workers through xlb, in three curl runs of
// 4, 3 and 3 uploads each on one keep-alive connection (--next). The worker
// answers 100 Continue, reads the body and answers its SHA-256: every
// answer must be the SHA-256 of the file sent.
func TestExpectContinueUploads(t *testing.T) {
	testnet.RequireRoot(t)
	testkit.NeedTools(t, "curl")
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 3)
	lb := startXLB(t, ns, "lo", 8080, workers, protoFlags(t)...)
	dir := t.TempDir()
	want := make([]string, len(uploadSizes))
	for i, n := range uploadSizes {
		body := demo.Body(n)
		want[i] = demo.Sum(body)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("up%d", i)), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	groups := [][]int{{0, 1, 2, 3}, {4, 5, 6}, {7, 8, 9}}
	bad := 0
	for g, group := range groups {
		var args []string
		for k, i := range group {
			if k > 0 {
				args = append(args, "--next")
			}
			args = append(args, "-sS", "-v", "--max-time", "15")
			if g < 2 {
				// The last run relies on curl's own choice (it asks
				// for large bodies); the count of 100s checks it did.
				args = append(args, "-H", "Expect: 100-continue")
			}
			args = append(args, "-D", filepath.Join(dir, fmt.Sprintf("headers%d", i)),
				"--data-binary", "@"+filepath.Join(dir, fmt.Sprintf("up%d", i)),
				"-o", filepath.Join(dir, fmt.Sprintf("answer%d", i)),
				"http://127.0.0.1:8080"+demo.UploadPath)
		}
		out, err := ns.Command("curl", args...).CombinedOutput()
		if err != nil {
			t.Errorf("curl run %d (%d uploads on one connection): %v; last lines:\n%s", g, len(group), err, curlTail(out, 15))
		}
		if n := bytes.Count(out, []byte("< HTTP/1.1 100 Continue")); err == nil && n != len(group) {
			t.Errorf("curl run %d: %d interim 100 Continue for %d uploads", g, n, len(group))
		}
		if reused := len(curlReused.FindAll(out, -1)); err == nil && reused != len(group)-1 {
			t.Errorf("curl run %d reused its connection %d times, want %d", g, reused, len(group)-1)
		}
		for _, i := range group {
			got, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("answer%d", i)))
			if string(got) != want[i]+"\n" {
				bad++
				hdr, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("headers%d", i)))
				worker := "no response:"
				if m := xWorker.FindAllSubmatch(hdr, -1); m != nil {
					worker = string(m[len(m)-1][1])
				} else if len(hdr) > 0 {
					worker = "a worker's HTTP server itself (no X-Worker, the handler never ran)"
				}
				t.Errorf("upload %d (%d bytes, curl run %d): %s answered %q, want the body's SHA-256 %s", i, uploadSizes[i], g, worker, bytes.TrimSpace(got[:min(len(got), 200)]), want[i])
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d uploads came back wrong", bad, len(uploadSizes))
	}
	lb.Stop()
}

// TestUpgradeEchoStream: a client upgrades to the demo worker's echo protocol
// (101 Switching Protocols) through xlb (--idle-release 200ms) and runs a
// long bidirectional exchange: echoes of 0 B to 300 KB, several frames in
// flight at once, pushes the worker sends on its own (also while the client
// is silent), pauses of 500 ms. Every echoed and pushed byte is checked, and
// every frame must come from the worker that answered the upgrade.
func TestUpgradeEchoStream(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 3)
	lb := startXLB(t, ns, "lo", 8080, workers, protoFlags(t, "--idle-release", "200ms")...)
	cl := dial(t, ns, "127.0.0.1:8080")
	cl.c.SetDeadline(time.Now().Add(ioTimeout))
	worker, err := demo.Upgrade(cl.c, cl.r, "xlb-echo")
	if err != nil {
		t.Fatalf("upgrade through xlb: %v", err)
	}
	t.Logf("upgraded by %s", worker)

	// One reader: frames arrive while the client writes.
	type frame struct {
		op  byte
		p   []byte
		err error
	}
	frames := make(chan frame, 1024)
	go func() {
		for {
			cl.c.SetReadDeadline(time.Now().Add(ioTimeout))
			op, p, err := demo.ReadFrame(cl.r)
			frames <- frame{op, p, err}
			if err != nil {
				return
			}
		}
	}()
	rng := rand.New(rand.NewPCG(11, 11))
	sizes := []int{0, 1, 5, 100, 1399, 1400, 1401, 4096, 16384, 65535, 65536, 65537, 100000, 300000}
	pushSize := 3000
	var pending [][]byte // echoes awaited, in order
	pushesDue, echoes, pushes := 0, 0, 0
	// collect reads frames until want echoes are outstanding at most.
	collect := func(round, want int) bool {
		for len(pending) > want {
			var f frame
			select {
			case f = <-frames:
			case <-time.After(ioTimeout):
				t.Errorf("round %d: no frame within %v; %d echoes and %d pushes awaited", round, ioTimeout, len(pending), pushesDue-pushes)
				return false
			}
			if f.err != nil {
				t.Errorf("round %d: after %d echoes and %d pushes: %v", round, echoes, pushes, f.err)
				return false
			}
			if f.op == demo.FramePushed {
				if err := demo.CheckFrame(f.op, f.p, demo.FramePushed, worker, demo.Body(pushSize)); err != nil {
					t.Errorf("round %d: push %d: %v", round, pushes, err)
					return false
				}
				pushes++
				if pushes > pushesDue {
					t.Errorf("round %d: %d pushes, only %d asked for", round, pushes, pushesDue)
					return false
				}
				continue
			}
			if err := demo.CheckFrame(f.op, f.p, demo.FrameEchoed, worker, pending[0]); err != nil {
				t.Errorf("round %d: echo %d: %v", round, echoes, err)
				return false
			}
			pending = pending[1:]
			echoes++
		}
		return true
	}
	send := func(op byte, p []byte) bool {
		cl.c.SetWriteDeadline(time.Now().Add(ioTimeout))
		if err := demo.WriteFrame(cl.c, op, p); err != nil {
			t.Errorf("write after %d echoes and %d pushes: %v", echoes, pushes, err)
			return false
		}
		return true
	}
	const rounds = 60
	ok := true
	for round := 0; round < rounds && ok; round++ {
		switch {
		case round%15 == 7:
			// The worker speaks while the client is silent for longer
			// than the idle release.
			ok = send(demo.FramePush, demo.PushRequest(4, pushSize, 100*time.Millisecond))
			pushesDue += 4
			time.Sleep(500 * time.Millisecond)
		case round%15 == 14:
			time.Sleep(500 * time.Millisecond)
		case round%5 == 2:
			ok = send(demo.FramePush, demo.PushRequest(3, pushSize, 0))
			pushesDue += 3
		}
		// 1 to 4 frames in flight at once.
		for k := 1 + rng.IntN(4); k > 0 && ok; k-- {
			p := demo.Body(sizes[rng.IntN(len(sizes))])
			pending = append(pending, p)
			ok = send(demo.FrameEcho, p)
		}
		ok = ok && collect(round, 0)
	}
	if ok {
		// The pushes still on their way.
		deadline := time.After(ioTimeout)
		for pushes < pushesDue && ok {
			select {
			case f := <-frames:
				if f.err == nil {
					f.err = demo.CheckFrame(f.op, f.p, demo.FramePushed, worker, demo.Body(pushSize))
				}
				if f.err != nil {
					t.Errorf("push %d of %d: %v", pushes, pushesDue, f.err)
					ok = false
				}
				pushes++
			case <-deadline:
				t.Errorf("%d of %d pushes arrived", pushes, pushesDue)
				ok = false
			}
		}
	}
	t.Logf("%d echoes and %d of %d pushes verified, all from %s", echoes, pushes, pushesDue, worker)
	cl.c.Close()
	lb.Stop()
}

// pipelineSizes are the files of the HTTP pipelining test: 100 different
// sizes up to about 100 KB.
func pipelineSizes() []int {
	var s []int
	for i := 0; i < 100; i++ {
		s = append(s, 1+i*1013+i%7)
	}
	return s
}

// TestHTTPPipelining: 100 GETs of different files written in one write,
// then the 100 responses read in order and each body checked against its
// file, through xlb to three nginx. The requests are padded to 2 KB (a 200
// KB batch: more than the worker's first receive window, so that nginx
// answers the first requests while the rest is still arriving; a 50 KB batch
// arrives whole first), on lo's own MTU (64 KB segments) and on lo with MTU
// 1500 (about 140 segments). A third shape streams the batch in pieces of
// 3001 bytes 3 ms apart, the way a client sends requests as it thinks of
// them: nginx answers every complete request before the next piece comes,
// the client acknowledges every answer, and the next piece starts in the
// middle of a request.
func TestHTTPPipelining(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mtu   int
		pad   int
		piece int // write the batch in pieces of this size, 3 ms apart (0: at once)
	}{
		{"lo-mtu-65536", 0, 2000, 0},
		{"lo-mtu-1500", 1500, 2000, 0},
		{"streamed-pieces", 0, 2000, 3001},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testnet.RequireRoot(t)
			testkit.NeedTools(t, "nginx")
			ns := testnet.New(t)
			if tc.mtu > 0 {
				ns.Run("ip", "link", "set", "lo", "mtu", fmt.Sprint(tc.mtu))
			}
			sizes := pipelineSizes()
			farm := startNginxFarm(t, ns, 3, testproto.WebRoot(t, sizes...), "", "")
			lb := startXLB(t, ns, "lo", 8080, farm.addrs, protoFlags(t)...)
			cl := dial(t, ns, "127.0.0.1:8080")
			var batch []byte
			pad := strings.Repeat("p", tc.pad)
			for i, n := range sizes {
				batch = append(batch, fmt.Sprintf("GET /b%d HTTP/1.1\r\nHost: xlb\r\nX-Request: %d\r\nX-Pad: %s\r\n\r\n", n, i, pad)...)
			}
			cl.c.SetDeadline(time.Now().Add(ioTimeout))
			// The writer runs on its own: nginx answers while the batch
			// is still going out, and a client that only wrote could
			// fill both directions' buffers.
			werr := make(chan error, 1)
			go func() {
				if tc.piece == 0 {
					_, err := cl.c.Write(batch)
					werr <- err
					return
				}
				for k := 0; k < len(batch); k += tc.piece {
					if k > 0 {
						time.Sleep(3 * time.Millisecond) // the client's pace, not a wait for an event
					}
					if _, err := cl.c.Write(batch[k:min(k+tc.piece, len(batch))]); err != nil {
						werr <- err
						return
					}
				}
				werr <- nil
			}()
			for i, n := range sizes {
				if err := readFile(cl.r, n); err != nil {
					t.Errorf("response %d of %d (batch of %d bytes): %v; the workers logged %v", i, len(sizes), len(batch), err, perWorker(farm.requests(t)))
					break
				}
			}
			if err := <-werr; err != nil {
				t.Errorf("writing the batch: %v", err)
			}
			var lines []accessLine
			if t.Failed() {
				lines = farm.requests(t)
			} else {
				lines = farm.waitRequests(t, len(sizes))
			}
			t.Logf("batch of %d requests, %d bytes; the workers logged %v", len(sizes), len(batch), perWorker(lines))
			if len(lines) != len(sizes) {
				t.Errorf("the workers logged %d requests, want %d", len(lines), len(sizes))
			}
			if t.Failed() {
				return
			}
			lb.Stop()
		})
	}
}

// readFile reads one response and checks that it is 200 with the body of
// the file of that size.
func readFile(r *bufio.Reader, size int) error {
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return fmt.Errorf("/b%d: %w", size, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("/b%d: body after %d bytes: %w", size, len(body), err)
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("/b%d: %s from %s", size, resp.Status, resp.Header.Get("X-Worker"))
	}
	if !bytes.Equal(body, demo.Body(size)) {
		sum := sha256.Sum256(body)
		return fmt.Errorf("/b%d: %d bytes from %s hashing to %s..., not the file", size, len(body), resp.Header.Get("X-Worker"), hex.EncodeToString(sum[:8]))
	}
	return nil
}

// sortedKeys returns m's keys in order (for stable messages).
func sortedKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

var abField = regexp.MustCompile(`(?m)^(Complete requests|Failed requests|Non-2xx responses|Keep-Alive requests):\s+(\d+)`)

// TestAbKeepAlive: ApacheBench (HTTP/1.0 keep-alive, -k -c 2) through xlb
// to three nginx, over plain HTTP and over TLS: every request complete, no
// failed request (ab checks every response's length against the first),
// every one kept alive. Over plain HTTP the requests must also spread over
// the three workers (per-request balancing of a client that follows the
// rules).
func TestAbKeepAlive(t *testing.T) {
	for _, scheme := range []string{"http", "https"} {
		t.Run(scheme, func(t *testing.T) {
			testnet.RequireRoot(t)
			testkit.NeedTools(t, "nginx", "ab")
			ns := testnet.New(t)
			var cert, key string
			if scheme == "https" {
				var err error
				if cert, key, err = testproto.SelfSignedCert(t.TempDir()); err != nil {
					t.Fatal(err)
				}
			}
			farm := startNginxFarm(t, ns, 3, testproto.WebRoot(t, 1000, 20000), cert, key)
			lb := startXLB(t, ns, "lo", 8080, farm.addrs, protoFlags(t)...)
			const n = 600
			total := 0
			for _, size := range []int{1000, 20000} {
				cmd := ns.Command("ab", "-k", "-c", "2", "-n", fmt.Sprint(n/2), "-s", "20", fmt.Sprintf("%s://127.0.0.1:8080/b%d", scheme, size))
				out, err := runBounded(cmd, 60*time.Second)
				got := map[string]string{}
				for _, m := range abField.FindAllStringSubmatch(string(out), -1) {
					got[m[1]] = m[2]
				}
				if err != nil || got["Complete requests"] != fmt.Sprint(n/2) || got["Failed requests"] != "0" || got["Non-2xx responses"] != "" || got["Keep-Alive requests"] != fmt.Sprint(n/2) {
					t.Errorf("ab -k -c 2 -n %d %s://.../b%d: %v %v\n%s", n/2, scheme, size, err, got, curlTail(out, 30))
					continue
				}
				total += n / 2
			}
			if t.Failed() {
				t.Fatalf("the workers logged %s", perWorker(farm.requests(t)))
			}
			lines := farm.waitRequests(t, total)
			t.Logf("%d requests; the workers logged %s", total, perWorker(lines))
			if len(lines) != total {
				t.Errorf("the workers logged %d requests, want %d", len(lines), total)
			}
			if scheme == "http" && os.Getenv("XLB_PROTO_FLAGS") == "" {
				per := map[string]int{}
				for _, l := range lines {
					per[l.worker]++
				}
				for _, w := range farm.addrs {
					if per[w] < total/10 {
						t.Errorf("worker %s served %d of %d requests: per-request balancing should give each at least a tenth", w, per[w], total)
					}
				}
			}
			lb.Stop()
		})
	}
}
