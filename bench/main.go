// Command bench is xlb's benchmark harness (`make bench`): inside a private
// network namespace it compares xlb against a direct connection to one
// worker and against HAProxy, with wrk, ab without keep-alive and a client
// of its own that closes first (cpr.go: a connection per request) against
// three nginx workers and redis-benchmark against three redis-server
// workers, in interleaved rounds; it measures the XDP program's per-packet
// cost with BPF_PROG_TEST_RUN (kern/bench_test.go); it writes
// docs/BENCHMARKS.md and a chart. With -topology veth (BENCH_TOPOLOGY=veth)
// it runs the keep-alive and 100 MB workloads over veth pairs instead, xlb
// in native mode (ns.go), and rewrites only that topology's section of the
// document.
//
// It is its own main package so that the xlb binary's dependencies stay as
// DESIGN.md allows. It needs root, the tools of `scripts/deps.sh bench`, and
// a built ./xlb (make).
//
//	go run ./bench [-duration 5s] [-rounds 3] [-out docs]
//	BENCH_DURATION=2s BENCH_ROUNDS=1 make bench      # quick check of the harness
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/xlb-lb/xlb/internal/lab"
)

// Defaults of a full run: about 15 minutes on a 2-core VM.
const (
	defaultDuration = 5 * time.Second
	defaultRounds   = 3
	defaultWarmup   = time.Second
	// redisPerSecond sizes redis-benchmark runs (-n) from the duration:
	// enough requests to last about that long through the slowest path.
	redisPerSecond = 15000
)

// xlbBin is the binary under test.
var xlbBin string

type options struct {
	duration, warmup time.Duration
	rounds           int
	out              string
	balancers        string // comma-separated names; "" is all
	workloads        string // comma-separated substrings of workload names; "" is all
	kern             bool
	quick            bool
	topology         string // "lo" or "veth" (ns.go)
}

func main() {
	if os.Getenv(cprEnv) == "cpr" { // the load generator of the "close" rows (cpr.go)
		os.Exit(cprMain(os.Args[1:]))
	}
	var o options
	flag.DurationVar(&o.duration, "duration", lab.EnvDuration("BENCH_DURATION", defaultDuration), "measured time of each wrk run (env BENCH_DURATION)")
	flag.DurationVar(&o.warmup, "warmup", lab.EnvDuration("BENCH_WARMUP", defaultWarmup), "unmeasured wrk run before each measured one (env BENCH_WARMUP)")
	flag.IntVar(&o.rounds, "rounds", lab.EnvInt("BENCH_ROUNDS", defaultRounds), "rounds; every configuration runs once per round (env BENCH_ROUNDS)")
	flag.StringVar(&o.out, "out", lab.EnvString("BENCH_OUT", "docs"), "directory of BENCHMARKS.md, the chart and the raw results (env BENCH_OUT)")
	flag.StringVar(&xlbBin, "xlb", lab.EnvString("BENCH_XLB", "./xlb"), "the xlb binary (make builds it) (env BENCH_XLB)")
	flag.StringVar(&o.balancers, "balancers", os.Getenv("BENCH_BALANCERS"), "only these configurations, e.g. direct,xlb (env BENCH_BALANCERS)")
	flag.StringVar(&o.workloads, "workloads", os.Getenv("BENCH_WORKLOADS"), "only workloads whose names contain one of these, e.g. c2,redis (env BENCH_WORKLOADS)")
	flag.StringVar(&o.topology, "topology", lab.EnvString("BENCH_TOPOLOGY", "lo"), "lo (everything on one namespace's lo, generic XDP) or veth (clients -- balancer -- workers over veth pairs, native XDP, xlb --routed) (env BENCH_TOPOLOGY)")
	flag.BoolVar(&o.kern, "kern", lab.EnvString("BENCH_KERN", "1") != "0", "also measure the XDP program's per-packet cost (env BENCH_KERN=0 to skip)")
	fromJSON := flag.String("report", "", "only write the document and chart again from the raw results of an earlier run (its "+rawName+"), with the same -duration/-rounds")
	flag.Parse()
	// wrk takes whole seconds.
	if flag.NArg() != 0 || o.duration < time.Second || o.duration%time.Second != 0 || o.warmup%time.Second != 0 || o.rounds < 1 || !slices.Contains(topologies, o.topology) {
		fmt.Fprintln(os.Stderr, "usage: bench [-duration Ns, N>=1] [-warmup Ns] [-rounds N>=1] [-out DIR] [-xlb PATH] [-balancers a,b] [-workloads a,b] [-kern=false] [-topology lo|veth]")
		os.Exit(2)
	}
	o.quick = o.duration < defaultDuration || o.rounds < defaultRounds
	if os.Geteuid() != 0 {
		fatalf("needs root (network namespaces, XDP): sudo make bench")
	}
	abs, err := filepath.Abs(xlbBin)
	if err != nil {
		fatalf("%v", err)
	}
	xlbBin = abs
	if _, err := os.Stat(xlbBin); err != nil {
		fatalf("xlb binary: %v (run make first)", err)
	}
	for _, tool := range []string{"wrk", "ab", "nginx", "haproxy", "redis-server", "redis-benchmark", "curl", "gnuplot", "nsenter"} {
		if _, err := exec.LookPath(lab.Sbin(tool)); err != nil {
			fatalf("%s not installed: run `bash scripts/deps.sh bench` (make bench does)", tool)
		}
	}
	if *fromJSON != "" {
		if err := rewrite(o, *fromJSON); err != nil {
			fatalf("%v", err)
		}
		return
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fatalf("%v", err)
	}
}

func run(ctx context.Context, o options) error {
	start := time.Now()
	rep := &report{opts: o, start: start, machine: describeMachine()}

	if o.kern {
		logf("XDP per-packet cost: go test -bench ./kern/")
		k, err := runKernBench(ctx)
		if err != nil {
			logf("kern benchmark failed: %v", err)
			rep.kernErr = err.Error()
		}
		rep.kern = k
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}

	dir, err := os.MkdirTemp("", "xlb-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	if err := makeWebRoot(dir); err != nil {
		return err
	}
	tp, err := newTopology(o.topology)
	if err != nil {
		return err
	}
	defer func() {
		if err := tp.Close(); err != nil {
			logf("cleanup: %v", err)
		}
	}()
	logf("topology %s: namespaces %s, workers starting", tp.name, tp.names())
	if err := startNginx(ctx, tp, dir); err != nil {
		return err
	}
	type group struct {
		workers   []string
		balancers []balancer
		workloads []workload
	}
	groups := []group{
		{addrs(tp.workerHost, nginxPort0), httpBalancers, httpWorkloads},
		// Connection per request: the workers' logging port, so that the
		// worker connections each run opened can be counted.
		{addrs(tp.workerHost, nginxLogPort0), cprBalancers, cprWorkloads},
		{addrs(tp.workerHost, redisPort0), redisBalancers, redisWorkloads},
		// IPv6: the same nginx on [::1], t1 c2 100 B.
		{addrs("::1", nginxPort0), ipv6Balancers, httpWorkloads[:1]},
		// Request records (issue 15): on for all, one in 100; off is
		// xlb's own row.
		{addrs(tp.workerHost, nginxPort0), logBalancers, httpWorkloads[:1]},
	}
	if tp.name == "veth" {
		groups = []group{{addrs(tp.workerHost, nginxPort0), vethBalancers, httpWorkloads}}
	} else if err := startRedis(ctx, tp, dir); err != nil {
		return err
	}
	for round := 1; round <= o.rounds; round++ {
		for _, g := range groups {
			bs := selectBalancers(g.balancers, o.balancers)
			ws := selectWorkloads(g.workloads, o.workloads)
			if len(bs) == 0 || len(ws) == 0 {
				continue
			}
			// Each round starts with another configuration, so that none
			// always runs first (or right after another's load).
			for i := range bs {
				b := bs[(i+round-1)%len(bs)]
				if ctx.Err() != nil {
					return ctx.Err()
				}
				rep.results = append(rep.results, runBalancer(ctx, tp, dir, o, round, b, g.workers, ws)...)
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	rep.end = time.Now()
	return rep.write(dir)
}

// rewrite writes the document and chart from raw results.
func rewrite(o options, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var raw rawResults
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	dir, err := os.MkdirTemp("", "xlb-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rep := &report{opts: o, start: raw.Start, end: raw.End, machine: raw.Machine, results: raw.Results, kern: raw.Kern}
	return rep.write(dir)
}

// runBalancer starts b, runs every workload through it, stops it. A failure
// is recorded in the results (and logged), not fatal: the other
// configurations still run.
func runBalancer(ctx context.Context, tp *topology, dir string, o options, round int, b balancer, workers []string, ws []workload) []result {
	var out []result
	fail := func(w workload, err error) {
		logf("round %d %s %s: %v", round, b.name, w.name, err)
		out = append(out, result{Round: round, Balancer: b.name, Workload: w.name, Note: firstLine(err.Error())})
	}
	lb, err := startBalancer(ctx, tp, dir, b, workers)
	ns := tp.client
	if err != nil {
		for _, w := range ws {
			fail(w, err)
		}
		return out
	}
	for _, w := range ws {
		if ctx.Err() != nil {
			break
		}
		r := result{Round: round, Balancer: b.name, Workload: w.name}
		var err error
		switch w.kind {
		case "wrk":
			err = runWrk(ctx, ns, dir, lb, w, o.duration, o.warmup, &r)
		case "curl":
			err = runCurl(ctx, ns, lb, w, curlTransfers(o.duration), &r)
		case "redis":
			err = runRedis(ctx, ns, lb, w, redisPerSecond*int(o.duration.Seconds()), &r)
		case "ab":
			err = runAB(ctx, ns, dir, lb, w, o.duration, o.warmup, &r)
		case "close":
			err = runClose(ctx, ns, dir, lb, w, o.duration, o.warmup, &r)
		}
		if err != nil {
			fail(w, err)
			if lb.p != nil && isDone(lb.p) {
				break // the balancer died: the rest would fail the same way
			}
			continue
		}
		logf("round %d %-12s %-15s %9.0f req/s  p50 %6.0fus  p99 %7.0fus  %s errors %d%s",
			round, b.name, w.name, r.RPS, r.P50us, r.P99us, mbps(r), r.Errors, connsPer100(r))
		out = append(out, r)
	}
	if err := lb.stop(); err != nil {
		logf("round %d %s: stop: %v", round, b.name, err)
	}
	return out
}

// curlTransfers is how many large transfers a measurement makes: about one
// per second of the duration, at least 3.
func curlTransfers(d time.Duration) int { return max(3, int(d.Seconds())) }

func isDone(p *lab.Proc) bool {
	select {
	case <-p.Done:
		return true
	default:
		return false
	}
}

func mbps(r result) string {
	if r.MBps == 0 {
		return ""
	}
	return fmt.Sprintf("%.0f MB/s", r.MBps)
}

func selectBalancers(all []balancer, only string) []balancer {
	if only == "" {
		return all
	}
	var out []balancer
	for _, b := range all {
		for _, n := range strings.Split(only, ",") {
			if strings.TrimSpace(n) == b.name {
				out = append(out, b)
			}
		}
	}
	return out
}

func selectWorkloads(all []workload, only string) []workload {
	if only == "" {
		return all
	}
	var out []workload
	for _, w := range all {
		for _, n := range strings.Split(only, ",") {
			if n = strings.TrimSpace(n); n != "" && strings.Contains(w.name, n) {
				out = append(out, w)
				break
			}
		}
	}
	return out
}

// kernResult is one benchmark of kern/bench_test.go.
type kernResult struct {
	Name     string  `json:"name"`
	NsPerPkt float64 `json:"ns_per_packet"`
	RawNs    float64 `json:"raw_ns"`      // as the kernel timed a single run
	Overhead float64 `json:"overhead_ns"` // the timer's share, subtracted
}

var kernLine = regexp.MustCompile(`^Benchmark(\w+)-\d+\s+\d+\s+.*?([\d.]+) ns/pkt`)

// runKernBench runs the per-packet benchmarks of the XDP program.
func runKernBench(ctx context.Context) ([]kernResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, "go", "test", "-count=1", "-run", "^$", "-bench", "^BenchmarkXDP", "-benchtime", "20000x", "./kern/")
	c.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := c.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go test -bench ./kern/: %v\n%s", err, lab.LastLines(string(out), 20))
	}
	var res []kernResult
	for _, line := range strings.Split(string(out), "\n") {
		m := kernLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		r := kernResult{Name: strings.TrimPrefix(m[1], "XDP")}
		r.NsPerPkt, _ = strconv.ParseFloat(m[2], 64)
		r.RawNs = metric(line, "raw-ns/pkt")
		r.Overhead = metric(line, "timer-ns")
		res = append(res, r)
		logf("XDP %-22s %6.1f ns/packet", r.Name, r.NsPerPkt)
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("go test -bench ./kern/ printed no result:\n%s", lab.LastLines(string(out), 20))
	}
	return res, nil
}

// metric is the value before unit in a benchmark line.
func metric(line, unit string) float64 {
	f := strings.Fields(line)
	for i := 1; i < len(f); i++ {
		if f[i] == unit {
			v, _ := strconv.ParseFloat(f[i-1], 64)
			return v
		}
	}
	return 0
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func fatalf(format string, args ...any) {
	logf(format, args...)
	os.Exit(1)
}
