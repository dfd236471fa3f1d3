package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/testnet"
)

// What an operator sees: xlb stats, xlb top, the metrics endpoint.

// scrape reads the metrics endpoint at addr (inside ns) and returns its
// samples by "name{labels}".
func scrape(t testing.TB, ns *testnet.NS, addr string) map[string]uint64 {
	t.Helper()
	c := dial(t, ns, addr)
	defer c.c.Close()
	c.c.SetDeadline(time.Now().Add(ioTimeout))
	fmt.Fprintf(c.c, "GET /metrics HTTP/1.1\r\nHost: xlb\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("scrape %s: %s, content type %q", addr, resp.Status, resp.Header.Get("Content-Type"))
	}
	m := map[string]uint64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i > 0 && strings.Contains(line[:i], "_sum") {
			if _, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				continue // a histogram's sum of seconds: the counts are what tests read
			}
		}
		v, err := strconv.ParseUint(line[i+1:], 10, 64)
		if i < 0 || err != nil {
			t.Fatalf("scrape %s: bad sample line %q", addr, line)
		}
		m[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	return m
}

func workerRequests(m map[string]uint64, addr string) uint64 {
	return m[`xlb_worker_requests_total{worker="`+addr+`"}`]
}

// TestMetricsMatchStats scrapes --metrics while clients send requests: the
// request counters move, and lie between what `xlb stats` said just before
// and just after; once the traffic stops, metrics and stats agree exactly.
func TestMetricsMatchStats(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 2)
	sock := t.TempDir() + "/ctl.sock"
	const metricsAddr = "127.0.0.1:9464"
	lb := startXLB(t, ns, "lo", 8080, workers, "--socket", sock, "--metrics", metricsAddr)
	lb.WaitLines("serving metrics", 1, testkit.StartTimeout)

	m0 := scrape(t, ns, metricsAddr)
	tr := startTraffic(t, ns, 3)
	tr.wait(t, 300)
	before := testkit.Stats(t, ns, sock)
	m1 := scrape(t, ns, metricsAddr)
	after := testkit.Stats(t, ns, sock)
	moved := uint64(0)
	for i, w := range before.Workers {
		got := workerRequests(m1, w.Addr)
		moved += got - workerRequests(m0, w.Addr)
		if got < w.Requests || got > after.Workers[i].Requests {
			t.Errorf("worker %s: scraped %d requests during traffic, outside what xlb stats said before (%d) and after (%d)",
				w.Addr, got, w.Requests, after.Workers[i].Requests)
		}
	}
	if moved < 100 {
		t.Errorf("request counters moved by %d over at least 300 requests", moved)
	}
	if m1["xlb_client_legs_open"] != 3 {
		t.Errorf("xlb_client_legs_open = %d, want 3", m1["xlb_client_legs_open"])
	}

	tr.stop.Store(true)
	tr.wg.Wait()
	for _, err := range tr.errs {
		t.Error(err)
	}
	// Quiet now: the figures hold still, so both views must agree.
	st := testkit.Stats(t, ns, sock)
	m2 := scrape(t, ns, metricsAddr)
	var sum uint64
	for _, w := range st.Workers {
		sum += w.Requests
		for name, v := range map[string]uint64{
			"xlb_worker_requests_total":       w.Requests,
			"xlb_worker_request_bytes_total":  w.BytesIn,
			"xlb_worker_response_bytes_total": w.BytesOut,
			"xlb_worker_releases_total":       w.Releases,
		} {
			if got := m2[name+`{worker="`+w.Addr+`"}`]; got != v {
				t.Errorf("%s{worker=%q} = %d, xlb stats says %d", name, w.Addr, got, v)
			}
		}
		if m2[`xlb_worker_up{worker="`+w.Addr+`"}`] != 1 || w.State != "up" {
			t.Errorf("worker %s: state %q, xlb_worker_up %d", w.Addr, w.State, m2[`xlb_worker_up{worker="`+w.Addr+`"}`])
		}
	}
	if n := uint64(tr.count.Load()); sum < n {
		t.Errorf("xlb stats counts %d requests, the clients made %d", sum, n)
	}
	for _, c := range []string{"request", "remix", "no_idle_leg"} {
		key := `xlb_dataplane_` + c + `_total`
		if c == "no_idle_leg" {
			key = `xlb_drops_total{reason="no_idle_leg"}`
		}
		if got, want := m2[key], st.Counters[c]; got != want {
			t.Errorf("%s = %d, xlb stats says %d", key, got, want)
		}
	}
	if st.Counters["request"] == 0 || st.Counters["fwd_to_worker"] == 0 {
		t.Errorf("data-plane counters did not move: %v", st.Counters)
	}
	checkWorkerLegs(t, ns, sock, metricsAddr)
	lb.Stop()
}

// checkWorkerLegs checks that xlb stats, the metrics and xlb ctl list give
// each worker the same connections, bound, idle and cooling, from one read
// of the data plane's counts each (legs = bound + idle + cooling). Pools
// still settle (idle release, refills): the three are read again, a bounded
// number of times, until they agree.
func checkWorkerLegs(t *testing.T, ns *testnet.NS, sock, metricsAddr string) {
	t.Helper()
	const tries = 20
	var diffs []string
	for try := 0; try < tries; try++ {
		st := testkit.Stats(t, ns, sock)
		m := scrape(t, ns, metricsAddr)
		list := ctlWorkers(t, ns, sock)
		diffs = nil
		if len(st.Workers) == 0 {
			t.Fatal("xlb stats shows no worker")
		}
		for _, w := range st.Workers {
			for state, v := range map[string]int{"bound": w.Bound, "idle": w.Idle, "cooling": w.Cooling} {
				if got := m[`xlb_worker_legs{worker="`+w.Addr+`",state="`+state+`"}`]; got != uint64(v) {
					diffs = append(diffs, fmt.Sprintf("%s: xlb_worker_legs %s %d, stats %d", w.Addr, state, got, v))
				}
			}
			if l := list[w.Addr]; l.Legs != w.Legs || l.Idle != w.Idle {
				diffs = append(diffs, fmt.Sprintf("%s: ctl list legs %d idle %d, stats %d %d", w.Addr, l.Legs, l.Idle, w.Legs, w.Idle))
			}
		}
		if len(diffs) == 0 {
			for _, w := range st.Workers {
				if w.Legs == 0 {
					t.Errorf("worker %s shows no connection: its pool is full when idle (%+v)", w.Addr, w)
				}
			}
			return
		}
		time.Sleep(100 * time.Millisecond) // the pools move on their own: no event says they settled
	}
	t.Errorf("worker connections disagree after %d reads: %s", tries, strings.Join(diffs, "; "))
}

// tmuxCapture runs args in a detached 80-column tmux session inside ns and
// returns the screen once it shows until (or fails after ioTimeout).
func tmuxCapture(t *testing.T, ns *testnet.NS, until string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux not installed (make test installs it: scripts/deps.sh test)")
	}
	server := fmt.Sprintf("xlbt-%d-%d", os.Getpid(), time.Now().UnixNano())
	tmux := func(a ...string) *exec.Cmd {
		c := ns.Command("tmux", append([]string{"-L", server, "-f", "/dev/null"}, a...)...)
		c.Env = append(os.Environ(), "TERM=xterm")
		return c
	}
	// The pane's command ends by waiting on its terminal, so the screen
	// stays until the session is killed.
	script := `"$@"; echo "[exit $?]"; exec cat`
	start := append([]string{"new-session", "-d", "-x", "80", "-y", "60", "sh", "-c", script, "sh"}, args...)
	if out, err := tmux(start...).CombinedOutput(); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	t.Cleanup(func() { tmux("kill-server").Run() })
	deadline := time.Now().Add(ioTimeout)
	for {
		// -J joins lines the terminal wrapped: a wrapped line shows as one
		// longer than the pane.
		out, err := tmux("capture-pane", "-p", "-J").Output()
		if err != nil {
			t.Fatalf("tmux capture-pane: %v", err)
		}
		if strings.Contains(string(out), until) {
			return string(out)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the terminal never showed %q:\n%s", until, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkScreen checks that every line fits 80 columns and that the screen
// shows each of want.
func checkScreen(t *testing.T, what, screen string, want ...string) {
	t.Helper()
	for _, l := range strings.Split(screen, "\n") {
		if n := len([]rune(strings.TrimRight(l, " "))); n > 80 {
			t.Errorf("%s: line of %d columns: %q", what, n, l)
		}
	}
	for _, w := range want {
		if !strings.Contains(screen, w) {
			t.Errorf("%s: screen lacks %q:\n%s", what, w, screen)
		}
	}
}

// TestStatsAndTopInTerminal runs `xlb stats` and `xlb top` in an 80-column
// terminal (tmux) during traffic.
func TestStatsAndTopInTerminal(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 3)
	sock := t.TempDir() + "/ctl.sock"
	lb := startXLB(t, ns, "lo", 8080, workers, "--socket", sock)
	tr := startTraffic(t, ns, 2)
	tr.wait(t, 100)

	screen := tmuxCapture(t, ns, "[exit ", testkit.XLB, "stats", "--socket", sock)
	t.Logf("xlb stats in 80 columns:\n%s", screen)
	checkScreen(t, "xlb stats", screen, "[exit 0]", "WORKER", "IDLE/LEGS", "REQUESTS", "RELEASES",
		workers[0], workers[1], workers[2], "2 client legs open",
		"data plane verdicts:", "drop reasons:", "no_idle_leg", "data plane counters:", "fwd_to_worker", "leg table:", "client/bound")
	workerLines := 0
	for _, line := range strings.Split(screen, "\n") {
		if f := strings.Fields(line); len(f) == 8 && f[0] == workers[0] {
			workerLines++
			if f[1] != "up" || f[4] == "0" {
				t.Errorf("xlb stats: worker line %q: want state up and requests", line)
			}
		}
	}
	if workerLines != 1 {
		t.Errorf("xlb stats: %d lines of 8 columns for %s, want 1 (the layout changed?)", workerLines, workers[0])
	}

	screen = tmuxCapture(t, ns, "[exit ", testkit.XLB, "top", "--socket", sock, "--interval", "300ms", "--count", "3")
	t.Logf("xlb top in 80 columns:\n%s", screen)
	checkScreen(t, "xlb top", screen, "[exit 0]", "REQ/S", "Ctrl-C to quit", workers[0], "drop reasons:")
	if strings.Count(screen, "WORKER") != 1 {
		t.Errorf("xlb top: want one frame on the screen (cleared between refreshes):\n%s", screen)
	}
	tr.stop.Store(true)
	tr.wg.Wait()
	lb.Stop()
}
