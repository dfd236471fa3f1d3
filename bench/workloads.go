package main

// The workloads: wrk over keep-alive HTTP/1.1, one large transfer with curl,
// redis-benchmark without pipelining, and a connection per request (ab
// without keep-alive, where the worker closes first; the harness's own
// client, cpr.go, where the client closes first). Each run is bounded by
// its own duration or size and by a process timeout.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/xlb-lb/xlb/internal/lab"
)

// workload is one measured load.
type workload struct {
	name string // e.g. "c50 100B"
	kind string // "wrk", "curl", "redis", "ab", "close"
	// wrk; conns also for ab, close and redis
	threads, conns int
	path           string
	// redis-benchmark: the test (get or set)
	test string
}

var httpWorkloads = []workload{
	{name: "t1 c2 100B", kind: "wrk", threads: 1, conns: 2, path: "/b100"},
	{name: "t2 c50 100B", kind: "wrk", threads: 2, conns: 50, path: "/b100"},
	{name: "t2 c1000 100B", kind: "wrk", threads: 2, conns: 1000, path: "/b100"},
	{name: "t1 c2 100KB", kind: "wrk", threads: 1, conns: 2, path: "/b100k"},
	{name: "t2 c50 100KB", kind: "wrk", threads: 2, conns: 50, path: "/b100k"},
	{name: "t2 c1000 100KB", kind: "wrk", threads: 2, conns: 1000, path: "/b100k"},
	{name: "100MB", kind: "curl", path: "/b100m"},
}

// cprWorkloads open a connection per request. "ab": HTTP/1.0 without
// keep-alive (nginx closes after its answer unless the balancer asks it for
// keep-alive, as HAProxy and xlb --http10 keep do). "close": HTTP/1.1, the
// client closes once it has the answer and the worker would keep its side
// open, so a balancer may keep the worker connection for another client.
var cprWorkloads = []workload{
	{name: "ab c4 100B", kind: "ab", conns: 4, path: "/b100"},
	{name: "ab c50 100B", kind: "ab", conns: 50, path: "/b100"},
	{name: "close c4 100B", kind: "close", conns: 4, path: "/b100"},
	{name: "close c50 100B", kind: "close", conns: 50, path: "/b100"},
}

var redisWorkloads = []workload{
	{name: "redis GET c50", kind: "redis", conns: 50, test: "get"},
	{name: "redis SET c50", kind: "redis", conns: 50, test: "set"},
}

// result is one measurement of one workload through one balancer.
type result struct {
	Round     int     `json:"round"`
	Balancer  string  `json:"balancer"`
	Workload  string  `json:"workload"`
	Requests  int64   `json:"requests"`
	Seconds   float64 `json:"seconds"`
	RPS       float64 `json:"rps"`
	MBps      float64 `json:"mbps,omitempty"` // response bytes per second / 1e6
	P50us     float64 `json:"p50_us"`
	P99us     float64 `json:"p99_us"`
	P999us    float64 `json:"p999_us"`
	Errors    int64   `json:"errors"`
	Machine   float64 `json:"machine_cpu_s"`                  // busy CPU seconds of the machine
	Softirq   float64 `json:"softirq_cpu_s"`                  // of which softirq
	LB        float64 `json:"lb_cpu_s"`                       // the balancer process
	Client    float64 `json:"client_cpu_s"`                   // wrk / curl / redis-benchmark / ab / the cpr client
	LBRSS     int64   `json:"lb_rss_bytes"`                   // peak VmRSS of the balancer during the run
	LBMaps    int64   `json:"lb_maps_bytes"`                  // BPF map memlock the balancer holds
	LBIdleRSS int64   `json:"lb_idle_rss"`                    // VmRSS before the run
	LBPerLeg  float64 `json:"lb_map_bytes_per_leg,omitempty"` // xlb: memlock per entry of the maps sized by --max-legs
	LBLegMaps int     `json:"lb_leg_maps,omitempty"`          // how many such maps
	Note      string  `json:"note,omitempty"`                 // why the figures are missing

	// Connection per request, from the workers' access logs (connlog.go):
	WorkerConns     int64 `json:"worker_conns,omitempty"`      // worker connections opened for the run (serial above the last logged before it) that served a request in it
	WorkerConnsUsed int64 `json:"worker_conns_used,omitempty"` // distinct worker connections that served a request in the run
	WorkerSerials   int64 `json:"worker_serials,omitempty"`    // connections the workers accepted during the run, up to the last one logged (unused ones too)
	WorkerRequests  int64 `json:"worker_requests,omitempty"`   // requests the workers logged in the run
}

// wrkScript prints exact figures when wrk is done: latency percentiles in
// microseconds from wrk's own histogram, and the summary counters.
const wrkScript = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("XLB requests %d\n", summary.requests))
  io.write(string.format("XLB duration_us %d\n", summary.duration))
  io.write(string.format("XLB bytes %d\n", summary.bytes))
  io.write(string.format("XLB errors %d\n", e.connect + e.read + e.write + e.status + e.timeout))
  io.write(string.format("XLB p50 %d\n", latency:percentile(50)))
  io.write(string.format("XLB p99 %d\n", latency:percentile(99)))
  io.write(string.format("XLB p999 %d\n", latency:percentile(99.9)))
end
`

// measure runs fn with the CPU and memory of the machine and of the
// balancer accounted around it.
func measure(lb *running, r *result, fn func() (clientCPU float64, err error)) error {
	pid := 0
	if lb.p != nil {
		pid = lb.p.Pid()
		r.LBIdleRSS = procRSS(pid)
	}
	m0, l0 := readMachineCPU(), procCPU(pid)
	stop := make(chan struct{})
	peak := make(chan int64, 1)
	go func() { // sample the balancer's RSS while the load runs
		var max int64
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if pid != 0 {
				if v := procRSS(pid); v > max {
					max = v
				}
			}
			select {
			case <-stop:
				peak <- max
				return
			case <-t.C:
			}
		}
	}()
	client, err := fn()
	m1, l1 := readMachineCPU(), procCPU(pid)
	close(stop)
	r.LBRSS = <-peak
	if pid != 0 {
		maps := lab.ProcBPFMaps(pid)
		r.LBMaps = lab.SumMemlock(maps)
		for _, m := range maps {
			if m.Entries == xlbMaxLegs {
				r.LBPerLeg += float64(m.Memlock) / float64(m.Entries)
				r.LBLegMaps++
			}
		}
		r.LB = l1 - l0
	}
	d := m1.sub(m0)
	r.Machine, r.Softirq, r.Client = d.busy, d.softirq, client
	return err
}

// runWrk runs wrk for d (after a warm-up of warm, not measured: new client
// connections fill xlb's pool and HAProxy's server connections).
func runWrk(ctx context.Context, ns *lab.Netns, dir string, lb *running, w workload, d, warm time.Duration, r *result) error {
	script := filepath.Join(dir, "report.lua")
	if err := os.WriteFile(script, []byte(wrkScript), 0o644); err != nil {
		return err
	}
	url := "http://" + lb.hostPort() + w.path
	args := func(d time.Duration) []string {
		return []string{"-t", fmt.Sprint(w.threads), "-c", fmt.Sprint(w.conns), "-d", fmt.Sprintf("%ds", int(d.Seconds())),
			"--timeout", "5s", "-s", script, url}
	}
	if warm > 0 {
		if _, _, err := ns.RunCtx(ctx, warm+30*time.Second, "wrk", args(warm)...); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	var out string
	err := measure(lb, r, func() (float64, error) {
		o, st, err := ns.RunCtx(ctx, d+60*time.Second, "wrk", args(d)...)
		out = o
		return cpuOf(st), err
	})
	if err != nil {
		return err
	}
	v, err := summary(out, "wrk", r)
	if err != nil {
		return err
	}
	// wrk checks statuses, not bodies: at least count the bytes.
	if size := webFiles[strings.TrimPrefix(w.path, "/")]; r.Requests > 0 && v["bytes"]/float64(r.Requests) < float64(size) {
		return fmt.Errorf("wrk: %.0f bytes in %d responses, fewer than the %d-byte file each", v["bytes"], r.Requests, size)
	}
	return nil
}

// summary puts the summary a client printed (wrk's report.lua or the cpr
// client: lines "XLB name value") into r: requests, time, errors, latency
// percentiles and rates. It returns every value; who names the client when
// there is no summary.
func summary(out, who string, r *result) (map[string]float64, error) {
	v := scriptValues(out)
	if _, ok := v["requests"]; !ok {
		return nil, fmt.Errorf("%s printed no summary:\n%s", who, lab.LastLines(out, 20))
	}
	r.Requests = int64(v["requests"])
	r.Seconds = v["duration_us"] / 1e6
	r.Errors = int64(v["errors"])
	r.P50us, r.P99us, r.P999us = v["p50"], v["p99"], v["p999"]
	if r.Seconds > 0 {
		r.RPS = float64(r.Requests) / r.Seconds
		r.MBps = v["bytes"] / r.Seconds / 1e6
	}
	return v, nil
}

func scriptValues(out string) map[string]float64 {
	v := map[string]float64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "XLB" {
			n, err := strconv.ParseFloat(f[2], 64)
			if err == nil {
				v[f[1]] = n
			}
		}
	}
	return v
}

// runCurl fetches the large file n times in a row, each over a new
// connection (one curl each), and reports the total throughput; P50us is
// the median time of one transfer.
func runCurl(ctx context.Context, ns *lab.Netns, lb *running, w workload, n int, r *result) error {
	url := "http://" + lb.hostPort() + w.path
	size := webFiles[strings.TrimPrefix(w.path, "/")]
	var times []float64
	var bytes float64
	err := measure(lb, r, func() (float64, error) {
		var cpu float64
		for range n {
			out, st, err := ns.RunCtx(ctx, 90*time.Second, "curl", "-sS", "--max-time", "60", "-o", "/dev/null",
				"-w", "XLB bytes %{size_download}\nXLB seconds %{time_total}\nXLB code %{http_code}\n", url)
			cpu += cpuOf(st)
			if err != nil {
				return cpu, curlError(url, err)
			}
			v := scriptValues(out)
			if v["code"] != 200 || int(v["bytes"]) != size {
				return cpu, fmt.Errorf("curl: status %v, %v bytes, want 200 and %d bytes:\n%s", v["code"], v["bytes"], size, out)
			}
			times = append(times, v["seconds"])
			bytes += v["bytes"]
		}
		return cpu, nil
	})
	if err != nil {
		return err
	}
	r.Requests = int64(n)
	for _, t := range times {
		r.Seconds += t
	}
	if r.Seconds > 0 {
		r.MBps = bytes / r.Seconds / 1e6
		r.RPS = float64(n) / r.Seconds
	}
	sort.Float64s(times)
	r.P50us = times[len(times)/2] * 1e6
	return nil
}

// curlError names curl's own message ("curl: (28) ...") first: the
// command line, whose -w format spans lines, would hide it in the first
// line that the report keeps.
func curlError(url string, err error) error {
	for _, l := range strings.Split(err.Error(), "\n") {
		if i := strings.Index(l, "curl: ("); i >= 0 {
			return fmt.Errorf("%s: %s\n%w", url, l[i:], err)
		}
	}
	return err
}

// runRedis runs redis-benchmark: n requests of one test, no pipelining,
// keep-alive clients; it prints requests/s and percentiles in ms (--csv).
func runRedis(ctx context.Context, ns *lab.Netns, lb *running, w workload, n int, r *result) error {
	var out string
	start := time.Now()
	err := measure(lb, r, func() (float64, error) {
		o, st, err := ns.RunCtx(ctx, 120*time.Second, "redis-benchmark", "-h", lb.host, "-p", fmt.Sprint(lb.port),
			"-c", fmt.Sprint(w.conns), "-n", fmt.Sprint(n), "-P", "1", "-k", "1", "-t", w.test, "--csv")
		out = o
		return cpuOf(st), err
	})
	if err != nil {
		return err
	}
	elapsed := time.Since(start).Seconds()
	// "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(strings.ReplaceAll(strings.TrimSpace(line), `"`, ""), ",")
		if len(f) < 7 || !strings.EqualFold(f[0], w.test) {
			continue
		}
		rps, _ := strconv.ParseFloat(f[1], 64)
		p50, _ := strconv.ParseFloat(f[4], 64)
		p99, _ := strconv.ParseFloat(f[6], 64)
		r.RPS, r.P50us, r.P99us = rps, p50*1000, p99*1000
		r.Requests = int64(n)
		if rps > 0 {
			r.Seconds = float64(n) / rps
		} else {
			r.Seconds = elapsed
		}
		return nil
	}
	return fmt.Errorf("redis-benchmark printed no %s line:\n%s", w.test, lab.LastLines(out, 20))
}

func cpuOf(st *os.ProcessState) float64 {
	if st == nil {
		return 0
	}
	return (st.UserTime() + st.SystemTime()).Seconds()
}

// abPerSecond sizes ab's -n: ab stops at -t, or at -n requests if that
// comes first; no connection-per-request path reaches this rate.
const abPerSecond = 200000

// runAB runs ab without keep-alive (HTTP/1.0: a new connection per request,
// closed by the worker after its answer) for d, after an unmeasured run of
// warm; latency percentiles are ab's (-e: its "Percentage of the requests
// served" table, to the microsecond).
func runAB(ctx context.Context, ns *lab.Netns, dir string, lb *running, w workload, d, warm time.Duration, r *result) error {
	url := "http://" + lb.hostPort() + w.path
	csv := filepath.Join(dir, "ab-percentiles.csv")
	args := func(d time.Duration) []string {
		secs := int(d.Seconds())
		// -t before -n: -t sets -n to 50000, the -n after it raises it.
		// -r: a receive error is counted, not fatal.
		return []string{"-q", "-r", "-s", "5", "-c", fmt.Sprint(w.conns), "-t", fmt.Sprint(secs),
			"-n", fmt.Sprint(abPerSecond * secs), "-e", csv, url}
	}
	if warm > 0 {
		if _, _, err := ns.RunCtx(ctx, warm+30*time.Second, "ab", args(warm)...); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	os.Remove(csv)
	var out string
	err := countWorkerConns(dir, r, func() error {
		return measure(lb, r, func() (float64, error) {
			o, st, err := ns.RunCtx(ctx, d+60*time.Second, "ab", args(d)...)
			out = o
			return cpuOf(st), err
		})
	})
	if err != nil {
		return err
	}
	return parseAB(out, csv, webFiles[strings.TrimPrefix(w.path, "/")], r)
}

var (
	abField = regexp.MustCompile(`(?m)^([A-Za-z0-9 -]+):\s+([\d.]+)`)
	abPct   = regexp.MustCompile(`(?m)^\s*(\d+)%\s+(\d+)`)
)

// parseAB reads ab's report and the CSV of its percentiles (ms, to the
// microsecond; the report's table is in whole ms, the fallback).
func parseAB(out, csv string, size int, r *result) error {
	f := map[string]float64{}
	for _, m := range abField.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		f[strings.TrimSpace(m[1])] = v
	}
	if _, ok := f["Complete requests"]; !ok {
		return fmt.Errorf("ab printed no report:\n%s", lab.LastLines(out, 20))
	}
	if doc := f["Document Length"]; int(doc) != size {
		return fmt.Errorf("ab: document length %v, want %d:\n%s", doc, size, lab.LastLines(out, 30))
	}
	r.Requests = int64(f["Complete requests"])
	r.Errors = int64(f["Failed requests"] + f["Non-2xx responses"])
	r.Seconds = f["Time taken for tests"]
	r.RPS = f["Requests per second"]
	r.MBps = f["Total transferred"] / r.Seconds / 1e6
	pct := map[int]float64{} // percent -> ms
	if b, err := os.ReadFile(csv); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			p, v, ok := strings.Cut(strings.TrimSpace(line), ",")
			n, err1 := strconv.Atoi(p)
			ms, err2 := strconv.ParseFloat(v, 64)
			if ok && err1 == nil && err2 == nil {
				pct[n] = ms
			}
		}
	}
	if len(pct) == 0 {
		for _, m := range abPct.FindAllStringSubmatch(out, -1) {
			n, _ := strconv.Atoi(m[1])
			ms, _ := strconv.ParseFloat(m[2], 64)
			pct[n] = ms
		}
	}
	r.P50us, r.P99us = pct[50]*1000, pct[99]*1000 // ab has no p99.9
	return nil
}

// runClose runs the harness's own client (cpr.go: a new HTTP/1.1
// connection per request, closed by the client once it has the answer) for
// d, after an unmeasured run of warm.
func runClose(ctx context.Context, ns *lab.Netns, dir string, lb *running, w workload, d, warm time.Duration, r *result) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	addr := lb.hostPort()
	args := func(d time.Duration) []string {
		return []string{cprEnv + "=cpr", exe, "-c", fmt.Sprint(w.conns), "-d", d.String(), "-timeout", "5s", addr, w.path}
	}
	if warm > 0 {
		if _, _, err := ns.RunCtx(ctx, warm+30*time.Second, "env", args(warm)...); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	var out string
	var cpu float64
	err = countWorkerConns(dir, r, func() error {
		return measure(lb, r, func() (float64, error) {
			o, st, err := ns.RunCtx(ctx, d+60*time.Second, "env", args(d)...)
			out, cpu = o, cpuOf(st)
			return cpu, err
		})
	})
	if err != nil {
		return err
	}
	v, err := summary(out, "the cpr client", r)
	if err != nil {
		return err
	}
	if c, ok := v["cpu_us"]; ok {
		r.Client = c / 1e6 // its own getrusage: the same process as cpuOf's
	}
	if r.Errors > 0 {
		for _, line := range strings.Split(out, "\n") {
			if e, ok := strings.CutPrefix(line, "XLBERR "); ok {
				logf("%s through %s: %d errors, the first: %s", w.name, lb.b.name, r.Errors, e)
			}
		}
	}
	return nil
}
