package main

// docs/BENCHMARKS.md, the chart (gnuplot, PNG) and the raw results (JSON).
// Every figure of a configuration is the median over the rounds.

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/xlb-lb/xlb/internal/lab"
)

// Names of the output files in the output directory.
const (
	docName   = "BENCHMARKS.md"
	chartName = "bench.png"
	rawName   = "bench-results.json"
	// The veth topology's raw results; its section of docName sits
	// between the markers of vethBlock.
	rawVethName = "bench-results-veth.json"
	vethBlock   = "veth"
)

// xlbMaxLegs is xlb's default --max-legs: the maps sized by it are the ones
// whose entries a connection occupies.
const xlbMaxLegs = 65536

type report struct {
	opts       options
	start, end time.Time
	machine    []string
	results    []result
	kern       []kernResult
	kernErr    string
}

// agg is the median over rounds of one balancer and workload.
type agg struct {
	n                            int
	rps, mbps, p50, p99, p999    float64
	machine, softirq, lb, client float64 // CPU ms per 1000 requests
	rss, idleRSS, maps           float64
	conns                        float64 // worker connections opened per 100 requests (-1: not counted)
	errors                       int64
	notes                        []string
}

func (rep *report) aggregate(b, w string) agg {
	var rs []result
	var a agg
	for _, r := range rep.results {
		if r.Balancer != b || r.Workload != w {
			continue
		}
		if r.Note != "" {
			a.notes = append(a.notes, fmt.Sprintf("round %d: %s", r.Round, r.Note))
			continue
		}
		rs = append(rs, r)
		a.errors += r.Errors
	}
	a.n = len(rs)
	if a.n == 0 {
		return a
	}
	med := func(f func(r result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		sort.Float64s(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	per1k := func(cpu func(r result) float64) func(r result) float64 {
		return func(r result) float64 {
			if r.Requests == 0 {
				return 0
			}
			return cpu(r) * 1000 / float64(r.Requests) * 1000 // ms per 1000 requests
		}
	}
	a.rps = med(func(r result) float64 { return r.RPS })
	a.mbps = med(func(r result) float64 { return r.MBps })
	a.p50 = med(func(r result) float64 { return r.P50us })
	a.p99 = med(func(r result) float64 { return r.P99us })
	a.p999 = med(func(r result) float64 { return r.P999us })
	a.machine = med(per1k(func(r result) float64 { return r.Machine }))
	a.softirq = med(per1k(func(r result) float64 { return r.Softirq }))
	a.lb = med(per1k(func(r result) float64 { return r.LB }))
	a.client = med(per1k(func(r result) float64 { return r.Client }))
	a.rss = med(func(r result) float64 { return float64(r.LBRSS) })
	a.idleRSS = med(func(r result) float64 { return float64(r.LBIdleRSS) })
	a.maps = med(func(r result) float64 { return float64(r.LBMaps) })
	a.conns = med(func(r result) float64 {
		if r.WorkerRequests == 0 || r.Requests == 0 {
			return -1
		}
		return float64(r.WorkerConns) * 100 / float64(r.Requests)
	})
	return a
}

// rawResults is the content of rawName.
type rawResults struct {
	Start   time.Time    `json:"start"`
	End     time.Time    `json:"end"`
	Machine []string     `json:"machine"`
	Results []result     `json:"results"`
	Kern    []kernResult `json:"kern"`
}

func (rep *report) write(tmp string) error {
	if err := os.MkdirAll(rep.opts.out, 0o755); err != nil {
		return err
	}
	raw := rawResults{rep.start, rep.end, rep.machine, rep.results, rep.kern}
	rawPath := filepath.Join(rep.opts.out, rawName)
	if rep.opts.topology == "veth" {
		rawPath = filepath.Join(rep.opts.out, rawVethName)
	}
	if err := writeJSON(rawPath, raw); err != nil {
		return err
	}
	path := filepath.Join(rep.opts.out, docName)
	old, _ := os.ReadFile(path) // absent: a new document
	var doc string
	chartErr := fmt.Errorf("not drawn for the veth topology")
	if rep.opts.topology == "veth" {
		// Only this topology's section changes: the rest of the document
		// (the lo run's) stays as it is.
		var b strings.Builder
		rep.vethSection(&b)
		doc = replaceBlock(string(old), vethBlock, b.String())
	} else {
		if chartErr = rep.chart(tmp); chartErr != nil {
			logf("chart: %v", chartErr)
		}
		var b strings.Builder
		rep.markdown(&b, chartErr == nil)
		// Sections marked in the old document (the veth run's, notes
		// written by hand) are kept, before "How to run".
		doc = b.String()
		for _, blk := range markedBlocks(string(old)) {
			doc = insertBefore(doc, howToRun, blk+"\n")
		}
	}
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		return err
	}
	logf("wrote %s and %s (%v)", path, rawPath, rep.end.Sub(rep.start).Round(time.Second))
	if chartErr == nil {
		logf("wrote %s", filepath.Join(rep.opts.out, chartName))
	}
	return nil
}

// howToRun is the heading of the document's last section; kept and
// generated blocks go before it.
const howToRun = "## How to run\n"

// Blocks of the document that a run of the lo topology does not write:
// "<!-- begin NAME -->" to "<!-- end NAME -->", each on a line of its own.
func blockBegin(name string) string { return "<!-- begin " + name + " -->\n" }
func blockEnd(name string) string   { return "<!-- end " + name + " -->\n" }

// markedBlocks are the marked blocks of doc, markers included, in order.
func markedBlocks(doc string) []string {
	var out []string
	for {
		i := strings.Index(doc, "<!-- begin ")
		if i < 0 {
			return out
		}
		name, _, ok := strings.Cut(doc[i+len("<!-- begin "):], " -->\n")
		j := strings.Index(doc[i:], blockEnd(name))
		if !ok || j < 0 {
			return out
		}
		j += i + len(blockEnd(name))
		out = append(out, doc[i:j])
		doc = doc[j:]
	}
}

// replaceBlock puts body, marked as block name, in place of that block of
// doc, or before its "How to run" when it has none, or at its end.
func replaceBlock(doc, name, body string) string {
	blk := blockBegin(name) + body + blockEnd(name)
	if i := strings.Index(doc, blockBegin(name)); i >= 0 {
		if j := strings.Index(doc[i:], blockEnd(name)); j >= 0 {
			return doc[:i] + blk + doc[i+j+len(blockEnd(name)):]
		}
	}
	if doc == "" {
		doc = "# Benchmarks\n\n"
	}
	return insertBefore(doc, howToRun, blk+"\n")
}

// insertBefore inserts s before the line mark of doc, or at its end.
func insertBefore(doc, mark, s string) string {
	if i := strings.Index(doc, mark); i >= 0 && (i == 0 || doc[i-1] == '\n') {
		return doc[:i] + s + doc[i:]
	}
	if !strings.HasSuffix(doc, "\n\n") {
		doc += "\n"
	}
	return doc + s
}

func (rep *report) workloadNames(kinds ...string) []string {
	var names []string
	for _, ws := range [][]workload{httpWorkloads, cprWorkloads, redisWorkloads} {
		for _, w := range ws {
			for _, k := range kinds {
				if w.kind == k && rep.has(w.name) {
					names = append(names, w.name)
				}
			}
		}
	}
	return names
}

func (rep *report) has(workload string) bool {
	for _, r := range rep.results {
		if r.Workload == workload {
			return true
		}
	}
	return false
}

var httpBalancers = []balancer{direct, xlbSticky, xlbDefault, xlbOne, xlbDrop, haproxyHTTP, haproxyTCP}
var redisBalancers = []balancer{direct, xlbDefault, haproxyTCP}

func (rep *report) markdown(b *strings.Builder, chart bool) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format+"\n", args...) }
	p("# Benchmarks")
	p("")
	p("Generated by `make bench` (the harness is [`bench/`](../bench/main.go)) on %s, in %v.",
		rep.start.UTC().Format("2006-01-02 15:04 MST"), rep.end.Sub(rep.start).Round(time.Second))
	if rep.opts.quick {
		p("")
		p("> **Quick run** (%v per measurement, %d round(s)): a check of the harness, not a result.", rep.opts.duration, rep.opts.rounds)
		p("> Numbers from a shared or busy machine are noise; run `make bench` on an idle one.")
	}
	p("")
	p("Every configuration runs once per round, rounds interleave them (each round starts with another one),")
	p("and each figure is the **median over %d round(s)**. Ratios matter more than absolute numbers:", rep.opts.rounds)
	p("these VMs drift. Everything runs inside one private network namespace on `lo`: clients,")
	p("balancer and workers share the machine's CPUs. The section *On a veth pair, native XDP* comes")
	p("from a run of its own (`BENCH_TOPOLOGY=veth`), which rewrites only that section.")
	p("")
	if chart {
		p("![requests/s relative to a direct connection](%s)", chartName)
		p("")
	}
	p("## Machine")
	p("")
	for _, l := range rep.machine {
		p("- %s", l)
	}
	p("")
	p("## Configurations")
	p("")
	listed := map[string]bool{}
	for _, bl := range slices.Concat(httpBalancers, ipv6Balancers, logBalancers, cprBalancers) {
		if !listed[bl.name] {
			listed[bl.name] = true
			p("- **%s**: %s", bl.name, bl.descr)
		}
	}
	p("")
	p("Workers: three nginx (one process each, keep-alive without a request limit, `sendfile on`, no")
	p("access log but on the port of the connection-per-request rows) serving files of 100 B, 100 KB and")
	p("100 MB; three `redis-server` (no persistence). xlb runs on `lo` in the namespace (generic XDP),")
	p("default `--pool` and `--max-legs`. The namespace's ephemeral ports are %d–65000 (clients that", ephemeralPorts)
	p("close first leave TIME-WAIT behind, all towards one address).")
	p("")
	rep.httpTable(p)
	rep.cprTable(p)
	rep.largeTable(p)
	rep.redisTable(p)
	rep.memoryTable(p)
	rep.kernTable(p)
	rep.targets(p)
	rep.method(p)
}

func fmtRatio(a, b float64) string {
	if a == 0 || b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func fmtUs(v float64) string {
	switch {
	case v == 0:
		return "–"
	case v >= 10000:
		return fmt.Sprintf("%.1f ms", v/1000)
	default:
		return fmt.Sprintf("%.0f µs", v)
	}
}

func fmtNum(v float64) string {
	if v == 0 {
		return "–"
	}
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

// fmtLB is a balancer's own CPU: none for direct, and a 0 that is a
// measurement (less than a clock tick, 10 ms, in the whole run) otherwise.
func fmtLB(b balancer, v float64) string {
	if b.kind == "" {
		return "–"
	}
	return fmt.Sprintf("%.2f", v)
}

func fmtBytes(v float64) string {
	switch {
	case v == 0:
		return "–"
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	default:
		return fmt.Sprintf("%.0f KiB", v/(1<<10))
	}
}

func (rep *report) httpTable(p func(string, ...any)) {
	names := rep.workloadNames("wrk")
	if len(names) == 0 {
		return
	}
	p("## HTTP keep-alive (wrk)")
	p("")
	p("`wrk -tT -cC -d%v --timeout 5s -s report.lua http://127.0.0.1:PORT/FILE` after an unmeasured", rep.opts.duration)
	p("run of %v; latency percentiles are wrk's own (its `done()` hook). CPU is milliseconds per 1000", rep.opts.warmup)
	p("requests: *machine* is every CPU of the machine busy (`/proc/stat`, so also whatever else runs),")
	p("*softirq* its softirq part (where the XDP program and the loopback TCP stack run), *balancer* the")
	p("balancer process (`/proc/PID/stat` utime+stime, clock ticks of 10 ms), *client* wrk. *direct* is")
	p("one nginx process; behind a balancer there are three, so with a spare core a balancer can beat it.")
	p("The IPv6 rows (*-v6*, t1 c2 only) are the same nginx on `[::1]`; their × direct is to IPv4's direct,")
	p("their ratio to each other is in *Targets*.")
	p("")
	p("| workload | configuration | req/s | × direct | × haproxy-http | p50 | p99 | p99.9 | CPU machine | softirq | balancer | client | errors |")
	p("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	rep.requestRows(p, names, slices.Concat(httpBalancers, ipv6Balancers, logBalancers))
	p("")
}

// requestRows writes the rows of the HTTP request tables (keep-alive,
// connection per request), one per workload and balancer: req/s, its ratio
// to direct and to haproxy-http, latency percentiles, CPU and errors, then a
// column for each of more. A configuration without figures gets "failed:"
// and its first note.
func (rep *report) requestRows(p func(string, ...any), names []string, balancers []balancer, more ...func(agg) string) {
	for _, w := range names {
		d := rep.aggregate(direct.name, w)
		h := rep.aggregate(haproxyHTTP.name, w)
		for _, bl := range balancers {
			a := rep.aggregate(bl.name, w)
			if a.n == 0 {
				if len(a.notes) > 0 {
					p("| %s | %s | failed: %s |%s", w, bl.name, strings.ReplaceAll(a.notes[0], "|", "/"), strings.Repeat(" |", 10+len(more)))
				}
				continue
			}
			var extra string
			for _, m := range more {
				extra += " " + m(a) + " |"
			}
			p("| %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |%s", w, bl.name, a.rps,
				fmtRatio(a.rps, d.rps), fmtRatio(a.rps, h.rps), fmtUs(a.p50), fmtUs(a.p99), fmtUs(a.p999),
				fmtNum(a.machine), fmtNum(a.softirq), fmtLB(bl, a.lb), fmtNum(a.client), a.errors, extra)
		}
	}
}

// fmtConns is worker connections opened per 100 client connections.
func fmtConns(v float64) string {
	if v < 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f", v)
}

func (rep *report) cprTable(p func(string, ...any)) {
	names := append(rep.workloadNames("ab"), rep.workloadNames("close")...)
	if len(names) == 0 {
		return
	}
	secs := int(rep.opts.duration.Seconds())
	p("## Connection per request")
	p("")
	p("Every request over a new TCP connection, 100 B answers, after an unmeasured run of %v:", rep.opts.warmup)
	p("")
	p("- **ab**: `ab -q -r -s 5 -c C -t %d -n %d -e pct.csv http://127.0.0.1:PORT/b100`, HTTP/1.0", secs, abPerSecond*secs)
	p("  without keep-alive (nginx closes each connection after its answer, unless asked for keep-alive). Percentiles are ab's (its")
	p("  \"Percentage of the requests served\" table, to the µs from `-e`; ab has no p99.9); *errors* are")
	p("  its failed and non-2xx requests.")
	p("- **close**: the harness's own client ([bench/cpr.go](../bench/cpr.go), `XLB_BENCH_CLIENT=cpr`),")
	p("  C connections at a time for %v, each a loop of: connect, one HTTP/1.1 `GET` (no", rep.opts.duration)
	p("  `Connection: close`), read the answer by its `Content-Length`, close. The client closes first;")
	p("  nginx would keep its side open, so a balancer may keep the worker connection for the next")
	p("  client. Latency is connect to last byte, percentiles of every request's time; *errors* are")
	p("  failed connects, reads, statuses and sizes.")
	p("")
	p("*worker conns / 100* is how many worker connections were opened per 100 client connections.")
	p("These rows use a second port of each nginx (%d–%d, the same server) whose access log holds", nginxLogPort0, nginxLogPort0+nWorkers-1)
	p("`%s`, where `$connection` is nginx's serial number", connLogFormat)
	p("of the connection. A run's worker connections are the distinct serials it logged above the")
	p("highest serial logged before it (a pooled connection opened earlier and reused does not count).")
	p("*direct* opens one per request by definition, a check of the count (ab does not count the")
	p("requests in flight when its time is up, nginx does: a little over 100). HAProxy's figure is its")
	p("server-side reuse: it asks the worker for keep-alive whatever the client asked. xlb does the")
	p("same for HTTP/1.0 requests (`--http10 keep`, the default): it adds `Connection: keep-alive`,")
	p("reads the answer's length and closes the client's connection itself; *xlb-http10-pass* sends")
	p("them unchanged, and nginx then closes every connection. CPU columns as in the keep-alive")
	p("table (*client* is ab or the harness's client). The log (buffered: 64 KiB, 100 ms) costs nginx")
	p("the same per request in every configuration.")
	p("")
	p("| workload | configuration | req/s | × direct | × haproxy-http | p50 | p99 | p99.9 | CPU machine | softirq | balancer | client | errors | worker conns / 100 |")
	p("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	rep.requestRows(p, names, cprBalancers, func(a agg) string { return fmtConns(a.conns) })
	p("")
}

func (rep *report) largeTable(p func(string, ...any)) {
	names := rep.workloadNames("curl")
	if len(names) == 0 {
		return
	}
	p("## One 100 MB response")
	p("")
	p("`curl -sS --max-time 60 -o /dev/null http://127.0.0.1:PORT/b100m`, %d times in a row per round, each over a", curlTransfers(rep.opts.duration))
	p("new connection: MB/s of the transfers together, the median time of one, CPU per transfer.")
	p("")
	rep.largeRows(p, names, httpBalancers)
	p("")
}

// largeRows is the table of the large transfers through balancers.
func (rep *report) largeRows(p func(string, ...any), names []string, balancers []balancer) {
	p("| configuration | MB/s | × direct | × haproxy-http | seconds (median) | CPU machine (ms) | softirq (ms) | balancer (ms) |")
	p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, w := range names {
		d, h := rep.aggregate(direct.name, w), rep.aggregate(haproxyHTTP.name, w)
		for _, bl := range balancers {
			a := rep.aggregate(bl.name, w)
			if a.n == 0 {
				if len(a.notes) > 0 {
					p("| %s | failed: %s | | | | | | |", bl.name, strings.ReplaceAll(a.notes[0], "|", "/"))
				}
				continue
			}
			// One request: CPU per 1000 requests / 1000 is the CPU of the transfer.
			p("| %s | %.0f | %s | %s | %.2f | %.0f | %.0f | %.0f |", bl.name, a.mbps, fmtRatio(a.mbps, d.mbps), fmtRatio(a.mbps, h.mbps),
				a.p50/1e6, a.machine/1000, a.softirq/1000, a.lb/1000)
		}
	}
}

// vethSection is the veth topology's section of the document (its own
// run, -topology veth).
func (rep *report) vethSection(b *strings.Builder) {
	p := func(format string, args ...any) { fmt.Fprintf(b, format+"\n", args...) }
	p("## On a veth pair, native XDP")
	p("")
	p("Generated by `BENCH_TOPOLOGY=veth make bench` on %s, in %v; each figure is the median over", rep.start.UTC().Format("2006-01-02 15:04 MST"), rep.end.Sub(rep.start).Round(time.Second))
	p("%d round(s) of %v (after an unmeasured %v), raw results in [%s](%s).", rep.opts.rounds, rep.opts.duration, rep.opts.warmup, rawVethName, rawVethName)
	if rep.opts.quick {
		p("")
		p("> **Quick run** (%v per measurement, %d round(s)): a check of the harness, not a result.", rep.opts.duration, rep.opts.rounds)
	}
	p("")
	p("Three namespaces: C (wrk, curl) — L (the balancer) — W (the same three nginx workers), joined by")
	p("two veth pairs (MTU 1500, tx checksum offload off on every end: a frame that a native program")
	p("sends on by XDP_TX or a redirect loses the skb's \"checksum to be completed\" mark, so only")
	p("complete checksums survive that path). L routes between %s (%s) and %s (%s).", vethFrontIf, vethFrontAddr, vethBackIf, vethBackAddr)
	p("")
	p("- **direct**: C to one worker (%s:%d) through L's kernel forwarding.", vethWorkerAddr, nginxPort0)
	p("- **xlb**: `xlb --mode native --routed --listen %s %s,%s PORT %s ...` in L: the program", vethFrontAddr, vethFrontIf, vethBackIf, addrs(vethWorkerAddr, nginxPort0)[0])
	p("  runs natively on both of L's ends and sends translated packets from one to the other with")
	p("  XDP_REDIRECT after `bpf_fib_lookup`, as on a host with a front and a back interface: they never")
	p("  enter L's stack. Without `--routed` they would go up L's stack and be forwarded by it.")
	p("- **haproxy-http**: as on lo, bound to %s in L.", vethFrontAddr)
	p("")
	p("A veth delivers a frame that its peer's native program sends on only to an end that runs XDP")
	p("itself, so C's and W's ends (%s, %s) carry `xlb attach --mode native` (xlb's program without a", vethClientIf, vethWorkerIf)
	p("service: it passes every packet) for every configuration; it also gives those ends GRO. Without")
	p("tx checksum offload no end offers TSO, so in every configuration each frame that crosses a veth")
	p("is at most MTU-sized, as on a wire. CPU columns as in the lo tables (the whole machine, all")
	p("namespaces).")
	p("")
	names := rep.workloadNames("wrk")
	if len(names) > 0 {
		p("| workload | configuration | req/s | × direct | × haproxy-http | p50 | p99 | p99.9 | CPU machine | softirq | balancer | client | errors |")
		p("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
		rep.requestRows(p, names, vethBalancers)
		p("")
	}
	if names := rep.workloadNames("curl"); len(names) > 0 {
		p("One 100 MB response, %d transfers in a row per round, each with a new `curl` connection:", curlTransfers(rep.opts.duration))
		p("")
		rep.largeRows(p, names, vethBalancers)
		p("")
	}
	// Rounds that failed: the medians above are over the others.
	var failed []string
	for _, w := range append(names, rep.workloadNames("curl")...) {
		for _, bl := range vethBalancers {
			if a := rep.aggregate(bl.name, w); a.n > 0 && len(a.notes) > 0 {
				failed = append(failed, fmt.Sprintf("- %s, %s: %d of %d rounds failed, figures from the others (%s)",
					bl.name, w, len(a.notes), a.n+len(a.notes), strings.ReplaceAll(strings.Join(a.notes, "; "), "|", "/")))
			}
		}
	}
	if len(failed) > 0 {
		p("Failed rounds (the harness's log has the whole error):")
		p("")
		for _, f := range failed {
			p("%s", f)
		}
		p("")
	}
	p("Machine: %s.", strings.Join(rep.machine[:min(2, len(rep.machine))], "; "))
	p("")
}

func (rep *report) redisTable(p func(string, ...any)) {
	names := rep.workloadNames("redis")
	if len(names) == 0 {
		return
	}
	n := redisPerSecond * int(rep.opts.duration.Seconds())
	p("## Redis without pipelining (redis-benchmark)")
	p("")
	p("`redis-benchmark -h 127.0.0.1 -p PORT -c 50 -n %d -P 1 -k 1 -t get|set --csv`; percentiles are", n)
	p("redis-benchmark's (it reports no p99.9). HAProxy is in tcp mode: it has no Redis mode.")
	p("")
	p("| workload | configuration | req/s | × direct | p50 | p99 | CPU machine | softirq | balancer | client |")
	p("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, w := range names {
		d := rep.aggregate(direct.name, w)
		for _, bl := range redisBalancers {
			a := rep.aggregate(bl.name, w)
			if a.n == 0 {
				if len(a.notes) > 0 {
					p("| %s | %s | failed: %s | | | | | | | |", w, bl.name, strings.ReplaceAll(a.notes[0], "|", "/"))
				}
				continue
			}
			p("| %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s |", w, bl.name, a.rps, fmtRatio(a.rps, d.rps),
				fmtUs(a.p50), fmtUs(a.p99), fmtNum(a.machine), fmtNum(a.softirq), fmtLB(bl, a.lb), fmtNum(a.client))
		}
	}
	p("")
}

// memoryTable: the balancers' memory while wrk holds 1000 connections.
func (rep *report) memoryTable(p func(string, ...any)) {
	var names []string
	for _, w := range rep.workloadNames("wrk") {
		if strings.Contains(w, "c1000") {
			names = append(names, w)
		}
	}
	if len(names) == 0 {
		return
	}
	p("## Memory with 1000 client connections")
	p("")
	p("The balancer's peak VmRSS while `wrk -c1000` runs (sampled every 100 ms), its VmRSS before, and")
	p("the memlock charge of the BPF maps it holds (fdinfo of its bpf-map descriptors, each map once).")
	p("Kernel socket memory (the client sockets xlb holds, HAProxy's sockets) is in neither figure.")
	p("")
	p("| workload | configuration | RSS before | RSS peak | BPF maps | total per 1000 connections |")
	p("| --- | --- | ---: | ---: | ---: | ---: |")
	for _, w := range names {
		for _, bl := range httpBalancers {
			a := rep.aggregate(bl.name, w)
			if a.n == 0 || bl.kind == "" {
				continue
			}
			p("| %s | %s | %s | %s | %s | %s |", w, bl.name, fmtBytes(a.idleRSS), fmtBytes(a.rss), fmtBytes(a.maps), fmtBytes(a.rss+a.maps))
		}
	}
	p("")
	if slot, tables := rep.xlbPerLeg(); slot > 0 {
		p("xlb's hash maps preallocate every entry, so their charge is fixed by `--max-legs` (%d), not by", xlbMaxLegs)
		p("the number of clients. Per leg, the %d maps sized by `--max-legs` cost **%.0f bytes**; a spliced client", tables, slot)
		p("connection occupies two legs (its own and its worker leg): **%.0f bytes per client connection** at", 2*slot)
		p("the table's capacity.")
		p("")
	}
}

// xlbPerLeg is the memlock per entry, summed over the maps of xlb sized by
// --max-legs, as the last measurement recorded it, and how many maps.
func (rep *report) xlbPerLeg() (float64, int) {
	for i := len(rep.results) - 1; i >= 0; i-- {
		if r := rep.results[i]; r.LBPerLeg > 0 {
			return r.LBPerLeg, r.LBLegMaps
		}
	}
	return 0, 0
}

func (rep *report) kernTable(p func(string, ...any)) {
	p("## XDP program, per packet")
	p("")
	if len(rep.kern) == 0 {
		if rep.kernErr != "" {
			p("Not measured: %s", firstLine(rep.kernErr))
		} else {
			p("Not measured (BENCH_KERN=0).")
		}
		p("")
		return
	}
	p("`go test -run '^$' -bench '^BenchmarkXDP' -benchtime 20000x ./kern/` ([kern/bench_test.go](../kern/bench_test.go)):")
	p("the real program through `BPF_PROG_TEST_RUN`, one packet per run with the maps set up afresh")
	p("before each run (a repeated run would see the packet as the previous run rewrote it, and the")
	p("legs as it left them). The figure is the median of the kernel's own timing of a run, minus the")
	p("timer's share: the median single-run time of a foreign packet less its mean over 10⁶ repeats.")
	p("")
	p("| packet | ns/packet | kernel-timed single run | timer share |")
	p("| --- | ---: | ---: | ---: |")
	for _, k := range rep.kern {
		p("| %s | %.1f | %.1f | %.1f |", kernDescr(k.Name), k.NsPerPkt, k.RawNs, k.Overhead)
	}
	p("")
}

var kernNames = map[string]string{
	"Foreign":        "foreign TCP packet (not a leg): pass-through",
	"ForeignRepeat":  "foreign TCP packet, mean over 10⁶ repeats",
	"Spliced":        "spliced segment, worker → client, 1400 B, TS option",
	"Continuation":   "spliced segment, client → worker, request data",
	"Boundary":       "request boundary: remix onto another worker leg",
	"BoundaryLogged": "request boundary with request records on (--log-requests all): the record written, the next started",
	"SplicedRepeat":  "spliced segment, 1400 B, TS option, mean over 10⁶ repeats (steady state)",
}

func kernDescr(n string) string {
	if d, ok := kernNames[n]; ok {
		return d
	}
	return n
}

// targets: the goals of the benchmark issue against this run's medians.
func (rep *report) targets(p func(string, ...any)) {
	type row struct{ what, goal, got string }
	var rows []row
	ratio := func(b1, b2, w string) float64 {
		a, c := rep.aggregate(b1, w), rep.aggregate(b2, w)
		if a.n == 0 || c.n == 0 || c.rps == 0 {
			return math.NaN()
		}
		return a.rps / c.rps
	}
	show := func(v, goal float64, atLeast bool) string {
		if math.IsNaN(v) {
			return "not measured"
		}
		ok := v >= goal
		if !atLeast {
			ok = v <= goal
		}
		mark := "met"
		if !ok {
			mark = "**missed**"
		}
		return fmt.Sprintf("%.2f (%s)", v, mark)
	}
	p99 := func(w string) float64 {
		a, d := rep.aggregate(xlbDefault.name, w), rep.aggregate(direct.name, w)
		if a.n == 0 || d.n == 0 || d.p99 == 0 {
			return math.NaN()
		}
		return a.p99 / d.p99
	}
	for _, w := range []string{"t1 c2 100B", "t2 c50 100B"} {
		rows = append(rows,
			row{"xlb req/s ÷ direct, " + w, "≥ 0.95", show(ratio(xlbDefault.name, direct.name, w), 0.95, true)},
			row{"xlb req/s ÷ haproxy-http, " + w, "≥ 2", show(ratio(xlbDefault.name, haproxyHTTP.name, w), 2, true)},
			row{"xlb p99 ÷ direct p99, " + w, "≤ 1.2", show(p99(w), 1.2, false)})
	}
	// Data plane v2 (issue 12): bulk, and bursts of new clients (a
	// thousand connections opened at once: wrk -c1000's start).
	rows = append(rows,
		row{"xlb req/s ÷ haproxy-http, t1 c2 100B (data plane v2)", "≥ 2.2", show(ratio(xlbDefault.name, haproxyHTTP.name, "t1 c2 100B"), 2.2, true)},
		row{"xlb req/s ÷ direct, t2 c50 100KB", "≥ 0.9", show(ratio(xlbDefault.name, direct.name, "t2 c50 100KB"), 0.9, true)})
	for _, w := range []string{"t2 c1000 100B", "t2 c1000 100KB"} {
		rows = append(rows, row{"xlb p99 ÷ direct p99, " + w, "≤ 1.5", show(p99(w), 1.5, false)})
	}
	{
		a, d := rep.aggregate(xlbDefault.name, "100MB"), rep.aggregate(direct.name, "100MB")
		v := math.NaN()
		if a.n > 0 && d.n > 0 && d.mbps > 0 {
			v = a.mbps / d.mbps
		}
		rows = append(rows, row{"xlb 100 MB throughput ÷ direct", "≥ 0.95", show(v, 0.95, true)})
	}
	// IPv6 (issue 13): xlb ÷ direct over [::1] against the same over
	// 127.0.0.1, same run: within 5%.
	rows = append(rows, row{"(xlb-v6 ÷ direct-v6) ÷ (xlb ÷ direct), t1 c2 100B", "≥ 0.95",
		show(ratio(xlb6.name, direct6.name, "t1 c2 100B")/ratio(xlbDefault.name, direct.name, "t1 c2 100B"), 0.95, true)})
	// Request records (issue 15): what logging every request, or one in
	// 100, costs per request against xlb with none (the default).
	rows = append(rows,
		row{"xlb-log-all req/s ÷ xlb, t1 c2 100B (request records, every request, access log)", "≥ 0.9", show(ratio(xlbLogAll.name, xlbDefault.name, "t1 c2 100B"), 0.9, true)},
		row{"xlb-log-100 req/s ÷ xlb, t1 c2 100B (one request in 100)", "≥ 0.95", show(ratio(xlbLog100.name, xlbDefault.name, "t1 c2 100B"), 0.95, true)})
	// Connection per request (issue 17): against HAProxy and direct with ab,
	// and worker connections opened per 100 client connections where the
	// worker keeps its side open (with ab, nginx closes every connection
	// itself: a balancer that does not rewrite the request cannot keep it).
	for _, w := range []string{"ab c4 100B", "ab c50 100B"} {
		rows = append(rows,
			row{"xlb req/s ÷ haproxy-http, " + w, "≥ 1", show(ratio(xlbDefault.name, haproxyHTTP.name, w), 1, true)},
			row{"xlb req/s ÷ direct, " + w, "≥ 0.6", show(ratio(xlbDefault.name, direct.name, w), 0.6, true)})
	}
	for _, w := range []string{"close c4 100B", "close c50 100B"} {
		v := math.NaN()
		if a := rep.aggregate(xlbDefault.name, w); a.n > 0 && a.conns >= 0 {
			v = a.conns
		}
		rows = append(rows, row{"xlb worker connections opened per 100 clients, " + w, "≤ 1", show(v, 1, false)})
	}
	kern := func(name string) float64 {
		for _, k := range rep.kern {
			if k.Name == name {
				return k.NsPerPkt
			}
		}
		return math.NaN()
	}
	rows = append(rows,
		// The repeated runs: the kernel times 10⁶ runs in a row, warm, as
		// a busy host runs the program (single runs carry a cold start).
		row{"XDP spliced segment, ns", "≤ 100", show(kern("SplicedRepeat"), 100, false)},
		row{"XDP foreign pass-through, ns", "≤ 25", show(kern("ForeignRepeat"), 25, false)})
	v := math.NaN()
	if slot, _ := rep.xlbPerLeg(); slot > 0 {
		v = 2 * slot / 1024
	}
	rows = append(rows, row{"xlb map memory per client connection, KiB", "≤ 1", show(v, 1, false)})

	p("## Targets")
	p("")
	p("| target | goal | this run |")
	p("| --- | --- | --- |")
	for _, r := range rows {
		p("| %s | %s | %s |", r.what, r.goal, r.got)
	}
	p("")
	// What of the t1 c2 gap is the spreading's: the same remix, all of it
	// to one worker process.
	if one, def := ratio(xlbOne.name, direct.name, "t1 c2 100B"), ratio(xlbDefault.name, direct.name, "t1 c2 100B"); !math.IsNaN(one) && !math.IsNaN(def) {
		p("At t1 c2 100B, %s ÷ direct is %.2f and %s ÷ direct %.2f: with every request remixed onto a", xlbOne.name, one, xlbDefault.name, def)
		p("connection of one nginx, as direct's requests all go to one process, against requests spread over")
		p("three processes that share these two CPUs with wrk and the softirq work (each may wake another).")
		p("")
	}
}

func (rep *report) method(p func(string, ...any)) {
	p("## How to run")
	p("")
	p("```sh")
	p("sudo make bench                                   # installs what is missing, builds, about 15 minutes")
	p("sudo BENCH_DURATION=2s BENCH_ROUNDS=1 make bench  # quick check of the harness")
	p("sudo go run ./bench -balancers direct,xlb -workloads c2,c50 -kern=false   # a subset")
	p("sudo BENCH_DURATION=2s BENCH_ROUNDS=1 BENCH_WORKLOADS=\"ab c4,close c4\" BENCH_OUT=/tmp/b make bench")
	p("sudo BENCH_TOPOLOGY=veth BENCH_KERN=0 make bench    # the veth section only")
	p("```")
	p("")
	p("Settings (flag, or environment for `make bench`): `-duration`/`BENCH_DURATION` (%v), `-rounds`/`BENCH_ROUNDS`", defaultDuration)
	p("(%d), `-warmup`/`BENCH_WARMUP` (%v), `-out`/`BENCH_OUT` (docs), `-balancers`/`BENCH_BALANCERS`,", defaultRounds, defaultWarmup)
	p("`-workloads`/`BENCH_WORKLOADS`, `-kern`/`BENCH_KERN`, `-topology`/`BENCH_TOPOLOGY` (lo; veth: the")
	p("keep-alive and 100 MB workloads through direct, xlb and haproxy-http over veth pairs, written")
	p("into its own section). The raw results of every round are in [%s](%s).", rawName, rawName)
	p("")
	p("Balancers as started (each start listens on a port of its own from %d up, so that no", lbPort0)
	p("configuration sees the connections a previous one left in TIME-WAIT):")
	p("`xlb --log-level warn [--policy sticky] lo PORT 127.0.0.1:4171 127.0.0.1:4172 127.0.0.1:4173`;")
	p("`haproxy -db -f haproxy.cfg` with:")
	p("")
	p("```")
	p("%s```", haproxyConfig("http", "127.0.0.1", lbPort0, addrs("127.0.0.1", nginxPort0)))
	p("")
	p("(`mode tcp` and no `http-reuse` for haproxy-tcp). The connection-per-request rows start each")
	p("balancer again, in front of the workers' logging ports (127.0.0.1:%d–%d). A configuration's", nginxLogPort0, nginxLogPort0+nWorkers-1)
	p("balancer starts before its workloads and stops after them, so that an attached XDP program never")
	p("runs under another configuration's traffic.")
}

// chart draws requests/s (and MB/s for the large transfer) of each
// configuration relative to the direct connection, per workload.
func (rep *report) chart(tmp string) error {
	names := append(rep.workloadNames("wrk"), rep.workloadNames("ab", "close")...)
	names = append(names, rep.workloadNames("curl")...)
	names = append(names, rep.workloadNames("redis")...)
	if len(names) == 0 {
		return fmt.Errorf("no results")
	}
	cols := []balancer{xlbSticky, xlbDefault, haproxyHTTP, haproxyTCP}
	var data strings.Builder
	data.WriteString("workload")
	for _, c := range cols {
		data.WriteString(" " + c.name)
	}
	data.WriteString("\n")
	for _, w := range names {
		d := rep.aggregate(direct.name, w)
		fmt.Fprintf(&data, "%q", w)
		for _, c := range cols {
			a := rep.aggregate(c.name, w)
			v, base := a.rps, d.rps
			if w == "100MB" {
				v, base = a.mbps, d.mbps
			}
			if a.n == 0 || base == 0 {
				data.WriteString(" NaN")
			} else {
				fmt.Fprintf(&data, " %.3f", v/base)
			}
		}
		data.WriteString("\n")
	}
	dat := filepath.Join(tmp, "bench.dat")
	if err := os.WriteFile(dat, []byte(data.String()), 0o644); err != nil {
		return err
	}
	title := "requests/s relative to a direct connection (1 = direct; 100MB: MB/s)"
	if rep.opts.quick {
		title += " - QUICK RUN, noisy"
	}
	script := fmt.Sprintf(`set terminal pngcairo size 1200,560 font "sans,10"
set output %q
set title %q
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key outside right top
set ylabel "x direct"
set yrange [0:*]
set grid ytics
set xtics rotate by -30 scale 0
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 1.5 lc rgb "#444444"
set datafile missing "NaN"
plot for [i=2:%d] %q using i:xtic(1) title columnheader(i)
`, filepath.Join(rep.opts.out, chartName), title, len(cols)+1, dat)
	return lab.Gnuplot(tmp, "bench", script)
}

// describeMachine: CPU, kernel, memory, tool versions.
func describeMachine() []string {
	var lines []string
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		model, n := "", 0
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok {
				switch strings.TrimSpace(k) {
				case "model name":
					model = strings.TrimSpace(v)
				case "processor":
					n++
				}
			}
		}
		lines = append(lines, fmt.Sprintf("CPU: %d × %s (/proc/cpuinfo)", n, model))
	}
	lines = append(lines, "Kernel: "+cmdOut("uname", "-srvm"))
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		l, _, _ := strings.Cut(string(b), "\n")
		lines = append(lines, "Memory: "+strings.Join(strings.Fields(l)[1:], " "))
	}
	if b, err := os.ReadFile("/etc/debian_version"); err == nil {
		lines = append(lines, "Debian "+strings.TrimSpace(string(b)))
	}
	lines = append(lines,
		cmdOut(xlbBin, "version")+" (tree "+cmdOut("git", "describe", "--always", "--dirty")+"), harness "+runtime.Version(),
		cmdOut("nginx", "-v"),
		firstLine(cmdOut("haproxy", "-v")),
		firstLine(cmdOut("wrk", "-v")),
		cmdOut("redis-server", "--version"),
		firstLine(cmdOut("curl", "--version")))
	return lines
}

func cmdOut(name string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, lab.Sbin(name), args...).CombinedOutput()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
