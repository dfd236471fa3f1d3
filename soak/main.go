// Command soak is xlb's long run (`make soak`): inside a private network
// namespace, four nginx workers and one xlb on lo, mixed traffic for 30
// minutes (short-lived, keep-alive and idle clients, bodies of 128 B to
// 1 MiB, each checked), while workers are added, drained, removed, killed
// and restarted and xlb itself is restarted with --reuse. Every 10 s it
// samples xlb's leg table, bindings and pools, its RSS, descriptors,
// goroutines and BPF map memory, and the namespace's TCP sockets. It fails
// if a series is still growing at the end (verdict.go) or a request failed
// that a killed worker does not explain (traffic.go), and writes
// docs/SOAK.md, docs/soak-results.json and docs/soak.png.
//
// It needs root, nginx and gnuplot (scripts/deps.sh bench), and a built
// ./xlb (make).
//
//	go run ./soak [-duration 30m] [-sample 10s] [-out docs]
//	SOAK_DURATION=3m SOAK_OUT=/tmp/soak make soak   # a quick check
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/xlb-lb/xlb/internal/lab"
	"github.com/xlb-lb/xlb/splice"
)

// nsPrefix starts the name of the namespace (then the pid: leftovers of a
// killed run are recognised and removed by the next).
const nsPrefix = "xlbsoak-"

var sysctls = []string{
	"net.core.somaxconn=4096",
	"net.ipv4.ip_local_port_range=10000 65000",
}

// The workers, on lo of the namespace: w1 is 127.0.0.1:4171.
const (
	nWorkers    = 4
	workerPort0 = 4171
	lbPort      = 8080
)

// Bounds of the run's waits.
const (
	startTimeout = 30 * time.Second
	stopTimeout  = 60 * time.Second
	// killDown is how long a killed worker stays dead.
	killDown = 3 * time.Second
	// drainTimeout bounds the wait for the clients to finish after the
	// run: a request under way finishes within reqTimeout.
	drainTimeout = reqTimeout + 10*time.Second
	// removeTimeout bounds a removal: the worker's connections close as
	// they come idle, which keep-alive clients' do after each request.
	removeTimeout = 60 * time.Second
)

type options struct {
	Duration time.Duration `json:"duration_ns"`
	Sample   time.Duration `json:"sample_ns"`
	Mix      mix           `json:"mix"`
	Events   bool          `json:"events"` // the schedule runs (SOAK_EVENTS=0: traffic only)
	// WorkerCloses is the share of connections, in percent, a client ends
	// with Connection: close (the worker closes after its answer) rather
	// than closing it itself (SOAK_WORKER_CLOSES, default 50).
	WorkerCloses int `json:"worker_closes_pct"`
	out          string
	xlb          string
	plot         bool // the gnuplot chart
}

func defaultOptions() options {
	return options{
		Duration:     lab.EnvDuration("SOAK_DURATION", 30*time.Minute),
		Sample:       lab.EnvDuration("SOAK_SAMPLE", 10*time.Second),
		Mix:          envMix("SOAK_MIX", mix{Short: 4, KeepAlive: 8, Idle: 16}),
		Events:       os.Getenv("SOAK_EVENTS") != "0",
		WorkerCloses: min(max(lab.EnvInt("SOAK_WORKER_CLOSES", 50), 0), 100),
		out:          lab.EnvString("SOAK_OUT", "docs"),
		xlb:          "./xlb",
		plot:         true,
	}
}

func main() {
	o := defaultOptions()
	flag.DurationVar(&o.Duration, "duration", o.Duration, "length of the traffic (env SOAK_DURATION)")
	flag.DurationVar(&o.Sample, "sample", o.Sample, "time between samples (env SOAK_SAMPLE)")
	flag.StringVar(&o.out, "out", o.out, "directory of SOAK.md, soak-results.json and soak.png (env SOAK_OUT)")
	flag.StringVar(&o.xlb, "xlb", o.xlb, "the xlb binary (make builds it)")
	flag.Parse()
	if flag.NArg() != 0 || o.Duration < time.Minute || o.Sample <= 0 {
		fmt.Fprintln(os.Stderr, "usage: soak [-duration D (1m at least)] [-sample D] [-out DIR] [-xlb PATH]")
		os.Exit(2)
	}
	if os.Geteuid() != 0 {
		fatalf("needs root (network namespaces, XDP): sudo make soak")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lab.Logf = logf
	res, err := run(ctx, o, logf)
	if res != nil {
		if werr := writeReport(o, res); werr != nil {
			logf("report: %v", werr)
			if err == nil {
				err = werr
			}
		} else {
			logf("wrote %s", filepath.Join(o.out, "SOAK.md"))
		}
	}
	if err != nil {
		fatalf("%v", err)
	}
	if !res.Pass {
		fatalf("FAILED: %s", strings.Join(res.Problems, "; "))
	}
	logf("passed")
}

// event is one step of the schedule, as it went.
type event struct {
	T    float64 `json:"t"` // seconds from the start of the traffic
	What string  `json:"what"`
	Took float64 `json:"took"` // seconds
	Err  string  `json:"err,omitempty"`
}

// sample is one moment of the run.
type sample struct {
	T        float64        `json:"t"`
	Requests int64          `json:"requests"` // verified so far
	Failures int            `json:"failures"` // so far
	Legs     map[string]int `json:"legs"`     // xlb stats: kind/state, bindings
	// From Legs: every entry of the leg table, those not dead (finished,
	// lingering), bindings.
	AllLegs  int `json:"all_legs"`
	LiveLegs int `json:"live_legs"`
	Bindings int `json:"bindings"`
	// The workers' connections (xlb stats: idle, bound, cooling), all and
	// by worker.
	Pool        int               `json:"pool"`
	PoolIdle    int               `json:"pool_idle"`
	PoolBound   int               `json:"pool_bound"`
	PoolCooling int               `json:"pool_cooling"`
	Workers     map[string]int    `json:"workers"`
	States      map[string]string `json:"states"` // by worker
	Clients     int               `json:"clients"`
	Goroutines  int               `json:"goroutines"`
	// xlb's process and the namespace.
	Pid         int    `json:"pid"`
	RSS         int64  `json:"rss"`
	FDs         int64  `json:"fds"`
	Maps        int64  `json:"maps"` // memlock of xlb's BPF maps
	TCP         int64  `json:"tcp"`  // TCP sockets in use in the namespace
	TCPTimeWait int64  `json:"tcp_tw"`
	Err         string `json:"err,omitempty"` // xlb stats failed: no figures of xlb
}

// result is the run and its verdict.
type result struct {
	Options  options          `json:"options"`
	Start    time.Time        `json:"start"`
	Elapsed  float64          `json:"elapsed"` // seconds of traffic
	Command  string           `json:"command"`
	Version  string           `json:"version"`
	Events   []event          `json:"events"`
	Kills    []kill           `json:"kills"`
	Samples  []sample         `json:"samples"`
	Requests int64            `json:"requests"`
	Bytes    int64            `json:"bytes"`
	Conns    int64            `json:"conns"`
	ByWorker map[string]int64 `json:"by_worker"`
	Failures []failure        `json:"failures"`
	Bad      int              `json:"bad"` // failures not tolerated
	Verdicts []verdict        `json:"verdicts"`
	Pass     bool             `json:"pass"`
	Problems []string         `json:"problems"`
	// Counters are the data plane's counters at the end (xlb stats), of
	// the xlb that ran last.
	Counters map[string]uint64 `json:"counters"`
}

// run is one soak. Its result is returned whenever the traffic ran, also
// with an error (the report then says how far it got).
func run(ctx context.Context, o options, logf func(string, ...any)) (res *result, err error) {
	xlbBin, err := filepath.Abs(o.xlb)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(xlbBin); err != nil {
		return nil, fmt.Errorf("no xlb binary at %s: run make first", xlbBin)
	}
	ns, err := lab.NewNetns(nsPrefix, "run", sysctls)
	if err != nil {
		return nil, err
	}
	stopWatch := context.AfterFunc(ctx, func() { ns.Close() }) // Ctrl-C
	defer stopWatch()
	defer func() {
		if cerr := ns.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	dir, err := os.MkdirTemp("", "xlb-soak-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	s := &soak{o: o, ns: ns, dir: dir, xlbBin: xlbBin, sock: filepath.Join(dir, "xlb.sock"), logf: logf,
		nginx: make([]*lab.Proc, nWorkers)}
	if err := s.writeFiles(); err != nil {
		return nil, err
	}
	for i := range nWorkers {
		if err := s.startNginx(i); err != nil {
			return nil, err
		}
	}
	s.inXLB = []int{0, 1, 2}
	args := s.xlbArgs(false)
	s.res = &result{Options: o, Command: strings.Replace(strings.Join(append([]string{"xlb"}, args[1:]...), " "), s.sock, "S", 1),
		Version: strings.TrimSpace(ns.Run(10*time.Second, xlbBin, "version"))}
	if s.xlb, err = s.startXLB(args); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			logf("last lines of xlb:\n%s", lab.LastLines(s.xlb.Output(), 30))
		}
	}()

	dialer, err := newNSDialer(ns.Path())
	if err != nil {
		return nil, err
	}
	defer dialer.close()
	s.tr = &traffic{addr: fmt.Sprintf("127.0.0.1:%d", lbPort), dial: dialer.dial, byWorker: map[string]int64{},
		workerCloses: o.WorkerCloses}
	tctx, stopTraffic := context.WithCancel(ctx)
	defer stopTraffic()
	trafficDone := make(chan struct{})
	s.start = time.Now()
	s.res.Start = s.start
	go func() {
		s.tr.run(tctx, o.Mix)
		close(trafficDone)
	}()
	logf("traffic for %v: %d short-lived, %d keep-alive and %d idle clients; %d events; a sample every %v",
		o.Duration, o.Mix.Short, o.Mix.KeepAlive, o.Mix.Idle, len(schedule), o.Sample)

	runErr := s.loop(ctx)
	stopTraffic()
	select {
	case <-trafficDone:
	case <-time.After(drainTimeout):
		if runErr == nil {
			runErr = fmt.Errorf("clients still busy %v after the end", drainTimeout)
		}
	}
	s.res.Elapsed = time.Since(s.start).Seconds()
	var st splice.Status
	if err := splice.Call(s.sock, splice.Request{Cmd: "status"}, &st); err == nil {
		s.res.Counters = st.Counters
	}
	s.collect()
	if runErr == nil {
		if err := s.xlb.Stop(stopTimeout); err != nil {
			runErr = err
		} else if s.xlb.Err != nil {
			runErr = fmt.Errorf("xlb exited with %v:\n%s", s.xlb.Err, lab.LastLines(s.xlb.Output(), 20))
		}
	}
	if runErr != nil {
		s.res.Problems = append(s.res.Problems, runErr.Error())
	}
	s.res.Pass = len(s.res.Problems) == 0
	logf("%d requests, %s of bodies verified, %d failures (%d not explained by a kill)",
		s.res.Requests, mib(s.res.Bytes), len(s.res.Failures), s.res.Bad)
	for _, v := range s.res.Verdicts {
		logf("  %-16s %s", v.Series, v.Why)
	}
	return s.res, nil
}

// soak is the state of a run.
type soak struct {
	o      options
	ns     *lab.Netns
	dir    string
	xlbBin string
	sock   string
	logf   func(string, ...any)

	nginx []*lab.Proc // by worker
	inXLB []int       // workers xlb balances over, in the order added
	xlb   *lab.Proc
	tr    *traffic
	start time.Time
	res   *result
}

func workerAddr(i int) string { return fmt.Sprintf("127.0.0.1:%d", workerPort0+i) }
func workerName(i int) string { return fmt.Sprintf("w%d", i+1) }

// schedule is the events, each at a share of the run: every 8%, the last
// at 72%, so that the last quarter shows whether the series settle.
var schedule = []struct {
	what string
	do   func(s *soak) error
}{
	{"add w4", func(s *soak) error { return s.ctl("add", 3) }},
	{"drain w2", func(s *soak) error { return s.ctl("drain", 1) }},
	{"remove w2", func(s *soak) error { return s.remove(1) }},
	{"kill nginx w1 (SIGKILL), restart it", func(s *soak) error { return s.killWorker(0) }},
	{"add w2", func(s *soak) error { return s.ctl("add", 1) }},
	{"restart xlb with --reuse", func(s *soak) error { return s.reuse() }},
	{"drain w4", func(s *soak) error { return s.ctl("drain", 3) }},
	{"remove w4", func(s *soak) error { return s.remove(3) }},
	{"kill nginx w3 (SIGKILL), restart it", func(s *soak) error { return s.killWorker(2) }},
}

const eventShare = 0.08

// shortDuration is the soak of `make test` (TestSoakShort): the same
// schedule, compressed.
const shortDuration = 150 * time.Second

// loop samples and runs the events until the run's end.
func (s *soak) loop(ctx context.Context) error {
	tick := time.NewTicker(s.o.Sample)
	defer tick.Stop()
	end := time.NewTimer(s.o.Duration)
	defer end.Stop()
	next := 0
	eventAt := func(i int) time.Duration {
		return time.Duration(float64(s.o.Duration) * eventShare * float64(i+1))
	}
	evTimer := time.NewTimer(eventAt(0))
	defer evTimer.Stop()
	if !s.o.Events {
		evTimer.Stop()
	}
	s.takeSample()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted")
		case <-end.C:
			s.takeSample()
			return nil
		case <-tick.C:
			s.takeSample()
			select {
			case <-s.xlb.Done:
				return fmt.Errorf("xlb exited (%v):\n%s", s.xlb.Err, lab.LastLines(s.xlb.Output(), 20))
			default:
			}
		case <-evTimer.C:
			ev := schedule[next]
			t0 := time.Now()
			s.logf("%s: %s", fmtT(t0.Sub(s.start)), ev.what)
			err := ev.do(s)
			e := event{T: t0.Sub(s.start).Seconds(), What: ev.what, Took: time.Since(t0).Seconds()}
			if err != nil {
				e.Err = err.Error()
			}
			s.res.Events = append(s.res.Events, e)
			if err != nil {
				return fmt.Errorf("%s: %w", ev.what, err)
			}
			if next++; next < len(schedule) {
				evTimer.Reset(max(0, eventAt(next)-time.Since(s.start)))
			}
		}
	}
}

func (s *soak) takeSample() {
	sm := sample{T: time.Since(s.start).Seconds(), Requests: s.tr.counts.Requests.Load()}
	s.tr.mu.Lock()
	sm.Failures = len(s.tr.failures)
	s.tr.mu.Unlock()
	var st splice.Status
	if err := splice.Call(s.sock, splice.Request{Cmd: "status"}, &st); err != nil {
		sm.Err = err.Error()
	} else {
		sm.Legs = st.Legs
		for k, n := range st.Legs {
			kind, state, _ := strings.Cut(k, "/")
			switch {
			case k == "bindings":
				sm.Bindings = n
			case kind == "client" || kind == "worker":
				sm.AllLegs += n
				if state != "dead" {
					sm.LiveLegs += n
				}
			}
		}
		sm.Workers, sm.States = map[string]int{}, map[string]string{}
		for _, w := range st.Workers {
			sm.Pool += w.Legs
			sm.PoolIdle += w.Idle
			sm.PoolBound += w.Bound
			sm.PoolCooling += w.Cooling
			sm.Workers[w.Addr] = w.Legs
			sm.States[w.Addr] = w.State
		}
		sm.Clients, sm.Goroutines, sm.Pid = st.Clients, st.Goroutines, st.Pid
		sm.RSS = lab.ProcRSS(st.Pid)
		sm.FDs, _ = lab.ProcFDs(st.Pid)
		sm.Maps = lab.SumMemlock(lab.ProcBPFMaps(st.Pid))
		sm.TCP, sm.TCPTimeWait, _ = lab.Sockstat(st.Pid)
	}
	s.res.Samples = append(s.res.Samples, sm)
	if len(s.res.Samples)%6 == 1 || sm.Err != "" {
		s.logf("%s: %d requests, %d failures; legs %d (%d live), bindings %d, pool %d; RSS %s, fds %d, goroutines %d, maps %s, TCP %d %s",
			fmtT(time.Duration(sm.T*float64(time.Second))), sm.Requests, sm.Failures, sm.AllLegs, sm.LiveLegs, sm.Bindings, sm.Pool,
			mib(sm.RSS), sm.FDs, sm.Goroutines, mib(sm.Maps), sm.TCP, sm.Err)
	}
}

// collect totals the traffic, classifies the failures and judges the
// series.
func (s *soak) collect() {
	r := s.res
	r.Requests, r.Bytes, r.Conns = s.tr.counts.Requests.Load(), s.tr.counts.Bytes.Load(), s.tr.counts.Conns.Load()
	s.tr.mu.Lock()
	r.ByWorker = s.tr.byWorker
	r.Failures = append([]failure(nil), s.tr.failures...)
	s.tr.mu.Unlock()
	r.Bad = classify(r.Failures, r.Kills)
	if r.Bad > 0 {
		r.Problems = append(r.Problems, fmt.Sprintf("%d failed requests not explained by a kill", r.Bad))
	}
	if r.Requests == 0 {
		r.Problems = append(r.Problems, "no request answered")
	}
	for _, sr := range judgedSeries {
		var xs []float64
		for _, sm := range r.Samples {
			if sm.Err == "" {
				xs = append(xs, sr.value(sm))
			}
		}
		v := judge(sr.name, sr.unit, xs, sr.tol)
		r.Verdicts = append(r.Verdicts, v)
		if v.Grows {
			r.Problems = append(r.Problems, fmt.Sprintf("%s: %s", v.Series, v.Why))
		}
	}
}

// judgedSeries are the series that must not grow without bound, with
// their tolerances: what traffic and events move them by, not a leak.
var judgedSeries = []struct {
	name, unit string
	value      func(sample) float64
	tol        tolerance
}{
	{"xlb RSS", "bytes", func(s sample) float64 { return float64(s.RSS) }, tolerance{Abs: 4 << 20, Rel: 0.1}},
	{"open fds", "", func(s sample) float64 { return float64(s.FDs) }, tolerance{Abs: 16, Rel: 0.1}},
	{"goroutines", "", func(s sample) float64 { return float64(s.Goroutines) }, tolerance{Abs: 8}},
	{"BPF map memory", "bytes", func(s sample) float64 { return float64(s.Maps) }, tolerance{Abs: 1 << 20}},
	{"legs", "", func(s sample) float64 { return float64(s.AllLegs) }, tolerance{Abs: 100, Rel: 0.25}},
	{"live legs", "", func(s sample) float64 { return float64(s.LiveLegs) }, tolerance{Abs: 50, Rel: 0.25}},
	{"bindings", "", func(s sample) float64 { return float64(s.Bindings) }, tolerance{Abs: 50, Rel: 0.25}},
	{"pool", "", func(s sample) float64 { return float64(s.Pool) }, tolerance{Abs: 50, Rel: 0.25}},
	{"TCP sockets", "", func(s sample) float64 { return float64(s.TCP) }, tolerance{Abs: 100, Rel: 0.25}},
}

// ctl runs `xlb ctl CMD ADDR` for worker i, and keeps inXLB in step.
func (s *soak) ctl(cmd string, i int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.xlbBin, "ctl", "--socket", s.sock, cmd, workerAddr(i)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("xlb ctl %s %s: %v: %s", cmd, workerAddr(i), err, out)
	}
	switch cmd {
	case "add":
		s.inXLB = append(s.inXLB, i)
	case "remove":
		for j, w := range s.inXLB {
			if w == i {
				s.inXLB = append(s.inXLB[:j], s.inXLB[j+1:]...)
				break
			}
		}
	}
	return nil
}

// remove removes worker i and waits until xlb forgot it.
func (s *soak) remove(i int) error {
	if err := s.ctl("remove", i); err != nil {
		return err
	}
	return s.waitGone(i)
}

// killWorker kills worker i's nginx with SIGKILL, and starts it again
// killDown later.
func (s *soak) killWorker(i int) error {
	k := kill{Worker: workerName(i), At: time.Now()}
	s.nginx[i].Kill()
	time.Sleep(killDown)
	err := s.startNginx(i)
	k.Back = time.Now()
	s.res.Kills = append(s.res.Kills, k)
	return err
}

// reuse starts a new xlb with --reuse over the workers of the running one
// and waits until the old one exited 0 and the new one serves.
func (s *soak) reuse() error {
	old := s.xlb
	p, err := s.startXLB(s.xlbArgs(true))
	if err != nil {
		return err
	}
	s.xlb = p
	select {
	case <-old.Done:
	case <-time.After(stopTimeout):
		return fmt.Errorf("the old xlb still runs %v after the new one started", stopTimeout)
	}
	if old.Err != nil {
		return fmt.Errorf("the old xlb exited with %v:\n%s", old.Err, lab.LastLines(old.Output(), 20))
	}
	return nil
}

func (s *soak) xlbArgs(reuse bool) []string {
	args := []string{s.xlbBin, "--socket", s.sock, "--log-level", "warn"}
	args = append(args, strings.Fields(os.Getenv("SOAK_XLB_FLAGS"))...)
	if reuse {
		args = append(args, "--reuse")
	}
	args = append(args, "lo", strconv.Itoa(lbPort))
	for _, i := range s.inXLB {
		args = append(args, workerAddr(i))
	}
	return args
}

// startXLB starts xlb and waits until it listens and its workers are up.
func (s *soak) startXLB(args []string) (*lab.Proc, error) {
	p, err := s.ns.Start("xlb", false, args...)
	if err != nil {
		return nil, err
	}
	if err := lab.WaitListen(p, lbPort, 1, startTimeout); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(startTimeout)
	for {
		var st splice.Status
		err := splice.Call(s.sock, splice.Request{Cmd: "status"}, &st)
		if err == nil && st.Pid != p.Pid() {
			err = fmt.Errorf("the control socket answers for pid %d, not %d", st.Pid, p.Pid())
		}
		if err == nil {
			if err = s.allUp(st); err == nil {
				return p, nil
			}
		}
		select {
		case <-p.Done:
			return nil, fmt.Errorf("xlb exited (%v):\n%s", p.Err, lab.LastLines(p.Output(), 20))
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("xlb: not ready after %v: %v\n%s", startTimeout, err, lab.LastLines(p.Output(), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// allUp says whether every worker of inXLB is up in st.
func (s *soak) allUp(st splice.Status) error {
	states := map[string]string{}
	for _, w := range st.Workers {
		states[w.Addr] = w.State
	}
	for _, i := range s.inXLB {
		if states[workerAddr(i)] != splice.WorkerUp.String() {
			return fmt.Errorf("workers not all up: %v", states)
		}
	}
	return nil
}

// waitGone waits until worker i is no longer in xlb's status (removed).
func (s *soak) waitGone(i int) error {
	deadline := time.Now().Add(removeTimeout)
	for {
		var st splice.Status
		err := splice.Call(s.sock, splice.Request{Cmd: "status"}, &st)
		if err == nil {
			gone := true
			for _, w := range st.Workers {
				if w.Addr == workerAddr(i) {
					gone = false
					err = fmt.Errorf("still %s with %d connections", w.State, w.Legs)
				}
			}
			if gone {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not removed after %v: %v", workerName(i), removeTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// writeFiles writes the bodies and each worker's nginx.conf.
func (s *soak) writeFiles() error {
	root := filepath.Join(s.dir, "www")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	for _, b := range bodies {
		if err := os.WriteFile(filepath.Join(root, b.name), bodyData(b.size), 0o644); err != nil {
			return err
		}
	}
	for i := range nWorkers {
		wd := filepath.Join(s.dir, workerName(i))
		if err := os.MkdirAll(wd, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(wd, "nginx.conf"), []byte(nginxConf(wd, root, i)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// nginxConf is a single-process nginx, keep-alive without a request limit,
// that names itself in X-Worker.
func nginxConf(wd, root string, i int) string {
	return fmt.Sprintf(`user root;
daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log stderr error;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path %[1]s;
	proxy_temp_path %[1]s;
	fastcgi_temp_path %[1]s;
	uwsgi_temp_path %[1]s;
	scgi_temp_path %[1]s;
	keepalive_requests 1000000;
	keepalive_timeout 600s;
	default_type application/octet-stream;
	server {
		listen 127.0.0.1:%[2]d backlog=4096;
		root %[3]s;
		add_header X-Worker %[4]s always;
	}
}
`, wd, workerPort0+i, root, workerName(i))
}

func (s *soak) startNginx(i int) error {
	conf := filepath.Join(s.dir, workerName(i), "nginx.conf")
	p, err := s.ns.Start("nginx "+workerName(i), false, "nginx", "-c", conf)
	if err != nil {
		return err
	}
	if err := lab.WaitListen(p, workerPort0+i, 1, startTimeout); err != nil {
		return err
	}
	s.nginx[i] = p
	return nil
}

func fmtT(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%02d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// envMix reads "SHORT,KEEPALIVE,IDLE" client counts.
func envMix(name string, def mix) mix {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var m mix
	if _, err := fmt.Sscanf(v, "%d,%d,%d", &m.Short, &m.KeepAlive, &m.Idle); err != nil || m.Short < 0 || m.KeepAlive < 0 || m.Idle < 0 {
		fatalf("%s=%q: want SHORT,KEEPALIVE,IDLE client counts, e.g. 4,8,16", name, v)
	}
	return m
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().UTC().Format("15:04:05")+" soak: "+format+"\n", args...)
}

func fatalf(format string, args ...any) {
	logf(format, args...)
	os.Exit(1)
}
