// Command scale is xlb's 100k-client run (`make scale`): inside a private
// network namespace, three nginx workers, one balancer, and 100,000 client
// connections held open at once, each doing a few keep-alive requests with
// pauses of seconds and checking every body byte. It measures the memory
// the connections cost, with xlb and then with HAProxy (mode http,
// http-reuse always) holding the same clients, each in a fresh namespace,
// and writes docs/SCALE.md.
//
// RLIMIT_NOFILE's hard limit is 20,000 per process on the machines this
// runs on, and cannot be raised: the clients are spread over several
// processes (this program again, with -client; client.go), each from its
// own source address, and HAProxy runs as several processes sharing the
// port (SO_REUSEPORT, which HAProxy sets on its listeners by default).
// xlb needs no descriptor per client: their handshakes are answered by the
// data plane.
//
// It needs root, nginx and haproxy (scripts/deps.sh bench), and a built
// ./xlb (make).
//
//	go run ./scale [-clients 100000] [-balancers xlb,haproxy] [-out docs]
//	SCALE_CLIENTS=20000 make scale     # a quicker run
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/xlb-lb/xlb/internal/lab"
)

// nsPrefix starts the name of every namespace this program makes; then
// come its pid and the turn, so that leftovers of a killed run can be
// recognised.
const nsPrefix = "xlbs-"

// sysctls of the namespace (each is per network namespace on Linux 6.x;
// none is set on the host). The TCP memory limits (net.ipv4.tcp_mem) are
// global, not per namespace: their defaults (a few GiB on this machine)
// are far above what 200,000 idle sockets take, so they are left alone.
var sysctls = []string{
	"net.core.somaxconn=65535",
	"net.ipv4.tcp_max_syn_backlog=65535",
	// One source address reaches one destination from these ports: more
	// than perClient. Listening ports (workers, balancer) are below.
	"net.ipv4.ip_local_port_range=10000 65000",
}

// Sizes and bounds of a run.
const (
	defaultClients = 100000
	// perClient is the most connections one client process holds: under
	// the 20,000 descriptors it may have.
	perClient = 18000
	// haproxyMaxconn is the most connections HAProxy lets one process
	// take under 20,000 descriptors: it refuses to start unless it has two
	// per connection (a client's and a worker's, although http-reuse
	// shares worker connections). perHAProxy is what one process is given
	// to hold: the kernel spreads new connections over the processes by a
	// hash, not evenly.
	haproxyMaxconn = 9900
	perHAProxy     = 8000
	nWorkers       = 3
	workerPort0    = 4171 // nginx workers: 4171, 4172, 4173
	lbPort         = 8080

	startTimeout = 30 * time.Second
	stopTimeout  = 60 * time.Second
	// phaseTimeout bounds each phase of the clients (connect, first
	// requests, last requests).
	phaseTimeout = 15 * time.Minute
	// settleTimeout bounds the wait for the kernel to free the sockets of
	// the previous turn's namespace.
	settleTimeout = time.Minute
)

var xlbBin string

type options struct {
	clients   int
	requests  int
	pauseMin  time.Duration
	pauseMax  time.Duration
	balancers []string
	out       string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-client" {
		os.Exit(clientMain(os.Args[2:]))
	}
	var o options
	var balancers string
	flag.IntVar(&o.clients, "clients", lab.EnvInt("SCALE_CLIENTS", defaultClients), "client connections held at once (env SCALE_CLIENTS)")
	flag.IntVar(&o.requests, "requests", 3, "requests per connection before the measurement; one more after it")
	flag.DurationVar(&o.pauseMin, "pause-min", time.Second, "shortest pause between two requests of a connection")
	flag.DurationVar(&o.pauseMax, "pause-max", 3*time.Second, "longest pause between two requests of a connection")
	flag.StringVar(&balancers, "balancers", lab.EnvString("SCALE_BALANCERS", "xlb,haproxy"), "balancers, in turn (env SCALE_BALANCERS)")
	flag.StringVar(&o.out, "out", lab.EnvString("SCALE_OUT", "docs"), "directory of SCALE.md (env SCALE_OUT)")
	flag.StringVar(&xlbBin, "xlb", "./xlb", "the xlb binary (make builds it)")
	flag.Parse()
	o.balancers = strings.Split(balancers, ",")
	if flag.NArg() != 0 || o.clients < 1 || o.clients > 250*perClient || o.requests < 1 {
		fmt.Fprintln(os.Stderr, "usage: scale [-clients N] [-requests N] [-pause-min D] [-pause-max D] [-balancers xlb,haproxy] [-out DIR] [-xlb PATH]")
		os.Exit(2)
	}
	for _, b := range o.balancers {
		if b != "xlb" && b != "haproxy" {
			fatalf("unknown balancer %q: xlb or haproxy", b)
		}
	}
	if os.Geteuid() != 0 {
		fatalf("needs root (network namespaces, XDP): sudo make scale")
	}
	var err error
	if xlbBin, err = filepath.Abs(xlbBin); err != nil {
		fatalf("%v", err)
	}
	if _, err := os.Stat(xlbBin); err != nil {
		fatalf("no xlb binary at %s: run make first", xlbBin)
	}

	lab.Logf = logf
	// Ctrl-C or SIGTERM: the turn under way removes its namespace.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var turns []*turn
	for _, b := range o.balancers {
		t, err := runTurn(ctx, o, b)
		if err != nil {
			fatalf("%s: %v", b, err)
		}
		turns = append(turns, t)
	}
	if len(turns) == 0 {
		return
	}
	path := filepath.Join(o.out, "SCALE.md")
	if err := os.WriteFile(path, []byte(report(o, turns)), 0o644); err != nil {
		fatalf("%v", err)
	}
	raw, _ := json.MarshalIndent(turns, "", "  ")
	os.WriteFile(filepath.Join(o.out, "scale-results.json"), raw, 0o644)
	logf("wrote %s", path)
}

// turn is one balancer's run and what was measured.
type turn struct {
	Balancer string `json:"balancer"`
	Command  string `json:"command"`
	Procs    int    `json:"balancer_procs"`
	// Snapshots: workers only; the balancer and idle client processes up
	// (the idle baseline); every client connected and idle.
	Before   snapshot `json:"before"`
	Idle     snapshot `json:"idle"`
	Held     snapshot `json:"held"`
	Clients  int      `json:"clients"` // connections asked for
	Procs0   int      `json:"client_procs"`
	Open     int64    `json:"open"` // connections open at the measurement
	Requests int64    `json:"requests"`
	Bytes    int64    `json:"bytes"`
	Errors   int64    `json:"errors"`
	Redials  int64    `json:"redials"`
	FirstErr string   `json:"first_err,omitempty"`
	// Durations from "go": every dial done, every connection done with its
	// first requests; and the last requests and closes.
	Connect time.Duration `json:"connect_ns"`
	Ready   time.Duration `json:"ready_ns"`
	Finish  time.Duration `json:"finish_ns"`
	// xlb stats --json when all were held, and at the end.
	StatsHeld  json.RawMessage `json:"stats_held,omitempty"`
	StatsAfter json.RawMessage `json:"stats_after,omitempty"`
	MaxLegs    int             `json:"max_legs,omitempty"`
	// The most legs, and worker legs, seen in xlb's table (sampled).
	PeakLegs       int   `json:"peak_legs,omitempty"`
	PeakWorkerLegs int   `json:"peak_worker_legs,omitempty"`
	PeakFDs        int64 `json:"peak_fds,omitempty"`
}

func runTurn(ctx context.Context, o options, balancer string) (t *turn, err error) {
	logf("%s: %d clients", balancer, o.clients)
	hostAlloc := hostTCPAlloc()
	ns, err := lab.NewNetns(nsPrefix, balancer, sysctls)
	if err != nil {
		return nil, err
	}
	var lbProcs []*lab.Proc
	defer func() {
		if err != nil {
			for _, p := range lbProcs {
				logf("%s: last lines of %s:\n%s", balancer, p.Name, lab.LastLines(p.Output(), 30))
			}
		}
		if cerr := ns.Close(); cerr != nil && err == nil {
			err = cerr
		}
		// The kernel frees a deleted namespace's sockets in the
		// background: the next turn's baseline waits for it (other
		// tenants of the machine move the count a little too).
		deadline := time.Now().Add(settleTimeout)
		for err == nil && ctx.Err() == nil && hostTCPAlloc() > hostAlloc+1000 && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
	}()
	go func() { // Ctrl-C
		<-ctx.Done()
		ns.Close()
	}()
	dir, err := os.MkdirTemp("", "xlb-scale-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	workers, err := startNginx(ns, dir)
	if err != nil {
		return nil, err
	}
	nsPid := workers[0].Pid()
	t = &turn{Balancer: balancer, Clients: o.clients}
	t.Before = take(nsPid, nil, nil)

	sock := filepath.Join(dir, "xlb.sock")
	switch balancer {
	case "xlb":
		t.MaxLegs = maxLegs(o.clients)
		if v := lab.EnvInt("SCALE_MAX_LEGS", 0); v > 0 {
			t.MaxLegs = v
		}
		args := []string{xlbBin, "--socket", sock, "--log-level", "warn",
			"--max-legs", strconv.Itoa(t.MaxLegs)}
		args = append(args, xlbFlags...)
		args = append(args, "lo", strconv.Itoa(lbPort))
		for i := range nWorkers {
			args = append(args, fmt.Sprintf("127.0.0.1:%d", workerPort0+i))
		}
		t.Command = strings.Join(append([]string{"xlb"}, args[1:]...), " ")
		t.Command = strings.Replace(t.Command, sock, "S", 1)
		p, err := ns.Start("xlb", false, args...)
		if err != nil {
			return nil, err
		}
		lbProcs = append(lbProcs, p)
		if err := lab.WaitListen(p, lbPort, 1, startTimeout); err != nil {
			return nil, err
		}
		if err := waitXLBWorkers(ns, sock, p); err != nil {
			return nil, err
		}
	case "haproxy":
		n := (o.clients + perHAProxy - 1) / perHAProxy
		cfg := filepath.Join(dir, "haproxy.cfg")
		if err := os.WriteFile(cfg, []byte(haproxyConfig()), 0o644); err != nil {
			return nil, err
		}
		t.Command = fmt.Sprintf("%d × haproxy -db -f haproxy.cfg (below)", n)
		for i := range n {
			p, err := ns.Start(fmt.Sprintf("haproxy %d", i+1), false, "haproxy", "-db", "-f", cfg)
			if err != nil {
				return nil, err
			}
			lbProcs = append(lbProcs, p)
			if err := lab.WaitListen(p, lbPort, i+1, startTimeout); err != nil {
				return nil, err
			}
		}
	}
	t.Procs = len(lbProcs)
	lbPids := pids(lbProcs)

	// The clients, started idle.
	nc := (o.clients + perClient - 1) / perClient
	t.Procs0 = nc
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	var clients []*lab.Proc
	for i := range nc {
		n := o.clients / nc
		if i < o.clients%nc {
			n++
		}
		p, err := ns.Start(fmt.Sprintf("client %d", i+1), true, self, "-client",
			"-src", fmt.Sprintf("127.0.0.%d", 11+i), "-addr", fmt.Sprintf("127.0.0.1:%d", lbPort),
			"-conns", strconv.Itoa(n), "-requests", strconv.Itoa(o.requests),
			"-pause-min", o.pauseMin.String(), "-pause-max", o.pauseMax.String(),
			"-seed", strconv.Itoa(i+1))
		if err != nil {
			return nil, err
		}
		clients = append(clients, p)
	}
	clientPids := pids(clients)
	if _, err := phase(clients, "hello", startTimeout, nsPid, nil); err != nil {
		return nil, err
	}
	t.Idle = take(nsPid, lbPids, clientPids)
	logf("%s: idle baseline: used %s, balancer RSS %s, BPF maps %s", balancer,
		mib(t.Idle.Used), mib(t.Idle.BalancerRSS), mib(t.Idle.BPFMemlock))

	// xlb's leg table, every 10 s while the clients work: its peak.
	sample := func() {
		if balancer != "xlb" {
			return
		}
		st := parseStats(xlbStats(ns, sock))
		var all, workers int
		for k, v := range st.Legs {
			if k == "bindings" {
				continue
			}
			all += v
			if strings.HasPrefix(k, "worker/") {
				workers += v
			}
		}
		t.PeakLegs = max(t.PeakLegs, all)
		t.PeakWorkerLegs = max(t.PeakWorkerLegs, workers)
		fds, _ := lab.ProcFDs(lbProcs[0].Pid())
		t.PeakFDs = max(t.PeakFDs, fds)
		logf("  xlb: %d legs (%d of workers), %d descriptors, legs_full %d, no_idle_leg %d", all, workers, fds, st.Counters["legs_full"], st.Counters["no_idle_leg"])
	}
	start := time.Now()
	tell(clients, "go")
	if _, err := phase(clients, "connected", phaseTimeout, nsPid, sample); err != nil {
		return nil, err
	}
	t.Connect = time.Since(start)
	logf("%s: every dial done in %v", balancer, t.Connect.Round(time.Millisecond))
	ready, err := phase(clients, "ready", phaseTimeout, nsPid, sample)
	if err != nil {
		return nil, err
	}
	t.Ready = time.Since(start)
	t.Held = take(nsPid, lbPids, clientPids)
	for _, r := range ready {
		t.Open += r.Conns
	}
	logf("%s: %d connections open after %v: used %s, balancer RSS %s, fds %d, BPF maps %s, TCP sockets %d", balancer,
		t.Open, t.Ready.Round(time.Millisecond), mib(t.Held.Used), mib(t.Held.BalancerRSS),
		t.Held.BalancerFDs, mib(t.Held.BPFMemlock), t.Held.TCPInuse)
	if balancer == "xlb" {
		t.StatsHeld = xlbStats(ns, sock)
	}

	start = time.Now()
	tell(clients, "finish")
	done, err := phase(clients, "done", phaseTimeout, nsPid, sample)
	if err != nil {
		return nil, err
	}
	t.Finish = time.Since(start)
	for _, r := range done {
		t.Requests += r.Requests
		t.Bytes += r.Bytes
		t.Errors += r.Errors
		t.Redials += r.Redials
		if t.FirstErr == "" {
			t.FirstErr = r.FirstErr
		}
	}
	logf("%s: %d requests, %d body bytes checked, %d errors (%d redials), last requests and closes in %v",
		balancer, t.Requests, t.Bytes, t.Errors, t.Redials, t.Finish.Round(time.Millisecond))
	if t.FirstErr != "" {
		logf("%s: first error: %s", balancer, t.FirstErr)
	}
	if balancer == "xlb" {
		t.StatsAfter = xlbStats(ns, sock)
	}
	for _, p := range lbProcs {
		if err := p.Stop(stopTimeout); err != nil {
			return nil, err
		}
		if balancer == "xlb" && p.Err != nil {
			return nil, fmt.Errorf("xlb exited with %v:\n%s", p.Err, lab.LastLines(p.Output(), 20))
		}
	}
	return t, nil
}

// xlbFlags keep xlb's worker connections, each a socket in xlb
// (--dial socket), under the 20,000 descriptors it may have here: with the
// default --idle-release (1 s) a client keeps its worker connection for a
// second after each answer, and with tens of thousands of clients asking
// every second or two, the pool grew to 20,000 connections, xlb ran out of
// descriptors (its control socket stopped answering) and clients waited
// for a worker connection until they timed out (see docs/SCALE.md).
var xlbFlags = []string{"--idle-release", "100ms", "--worker-conns", strconv.Itoa(xlbWorkerConns)}

// xlbWorkerConns caps xlb's connections to each worker.
const xlbWorkerConns = 4000

// maxLegs sizes xlb's leg table for clients: every client connection and
// worker connection, and room for those that finished within the linger.
// Finished legs never take more than a quarter of the table (past that
// the oldest are forgotten early), so live legs always have three
// quarters of it: (clients + worker connections) × 4/3.
func maxLegs(clients int) int { return (clients + nWorkers*xlbWorkerConns) * 4 / 3 }

// phase waits until every client reported phase, and returns the reports.
// While it waits it logs the namespace's TCP sockets every 10 s.
func phase(clients []*lab.Proc, name string, timeout time.Duration, nsPid int, onTick func()) ([]clientReport, error) {
	out := make([]clientReport, len(clients))
	errs := make(chan error, len(clients))
	var wg sync.WaitGroup
	deadline := time.After(timeout)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case line, ok := <-c.Lines:
				if !ok {
					errs <- fmt.Errorf("%s exited (%v) before %q:\n%s", c.Name, c.Err, name, lab.LastLines(c.Output(), 10))
					return
				}
				if err := json.Unmarshal([]byte(line), &out[i]); err != nil || out[i].Phase != name {
					errs <- fmt.Errorf("%s: %q instead of %q", c.Name, line, name)
				}
			case <-deadline:
				errs <- fmt.Errorf("%s: no %q within %v", c.Name, name, timeout)
			}
		}()
	}
	all := make(chan struct{})
	go func() { wg.Wait(); close(all) }()
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-all:
			close(errs)
			for err := range errs {
				return nil, err
			}
			return out, nil
		case <-tick.C:
			inuse, tw, _ := lab.Sockstat(nsPid)
			logf("  waiting for %q: %d TCP sockets in the namespace, %d in TIME-WAIT", name, inuse, tw)
			if onTick != nil {
				onTick()
			}
		}
	}
}

func tell(clients []*lab.Proc, line string) {
	for _, c := range clients {
		fmt.Fprintln(c.Stdin, line)
	}
}

func pids(ps []*lab.Proc) []int {
	var out []int
	for _, p := range ps {
		out = append(out, p.Pid())
	}
	return out
}

// startNginx starts one single-process nginx per worker, keep-alive
// without a request limit, serving the body file.
func startNginx(ns *lab.Netns, dir string) ([]*lab.Proc, error) {
	root := filepath.Join(dir, "www")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(root, bodyName), body(), 0o644); err != nil {
		return nil, err
	}
	var ps []*lab.Proc
	for i := range nWorkers {
		wd := filepath.Join(dir, fmt.Sprintf("nginx%d", i+1))
		if err := os.MkdirAll(wd, 0o755); err != nil {
			return nil, err
		}
		conf := fmt.Sprintf(`
user root;
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 19000;
pid %[1]s/nginx.pid;
error_log stderr error;
events { worker_connections 16384; }
http {
	access_log off;
	client_body_temp_path %[1]s;
	proxy_temp_path %[1]s;
	fastcgi_temp_path %[1]s;
	uwsgi_temp_path %[1]s;
	scgi_temp_path %[1]s;
	keepalive_requests 1000000;
	keepalive_timeout 600s;
	server {
		listen 127.0.0.1:%[2]d backlog=4096;
		root %[3]s;
	}
}
`, wd, workerPort0+i, root)
		path := filepath.Join(wd, "nginx.conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			return nil, err
		}
		p, err := ns.Start(fmt.Sprintf("nginx %d", i+1), false, "nginx", "-c", path)
		if err != nil {
			return nil, err
		}
		if err := lab.WaitListen(p, workerPort0+i, 1, startTimeout); err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// haproxyConfig is bench's (mode http, http-reuse always, one thread,
// round robin) for one of several processes on the same port: each bind
// gets SO_REUSEPORT (HAProxy's default), and the kernel spreads the
// connections over the processes.
func haproxyConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
	nbthread 1
	maxconn %[1]d
	tune.bufsize 16384

defaults
	mode http
	timeout connect 5s
	timeout client 600s
	timeout server 600s
	timeout http-keep-alive 600s
	maxconn %[1]d

frontend fe
	bind 127.0.0.1:%[2]d backlog 65535
	default_backend be

backend be
	balance roundrobin
	http-reuse always
`, haproxyMaxconn, lbPort)
	for i := range nWorkers {
		fmt.Fprintf(&b, "\tserver w%d 127.0.0.1:%d\n", i+1, workerPort0+i)
	}
	return b.String()
}

// waitXLBWorkers waits until `xlb ctl list` shows every worker up.
func waitXLBWorkers(ns *lab.Netns, sock string, p *lab.Proc) error {
	deadline := time.Now().Add(startTimeout)
	var out string
	for time.Now().Before(deadline) {
		out = ns.Run(10*time.Second, xlbBin, "ctl", "--socket", sock, "list")
		if strings.Count(out, " up") >= nWorkers {
			return nil
		}
		select {
		case <-p.Done:
			return fmt.Errorf("xlb exited (%v):\n%s", p.Err, lab.LastLines(p.Output(), 20))
		default:
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("xlb: workers not up after %v; xlb ctl list:\n%s\nxlb output:\n%s", startTimeout, out, lab.LastLines(p.Output(), 20))
}

func xlbStats(ns *lab.Netns, sock string) json.RawMessage {
	out := ns.Run(10*time.Second, xlbBin, "stats", "--socket", sock, "--json")
	if !json.Valid([]byte(out)) {
		logf("xlb stats: %s", lab.LastLines(out, 5))
		return nil
	}
	return json.RawMessage(out)
}

// hostTCPAlloc is the machine's TCP sockets (sockstat's alloc is not per
// namespace).
func hostTCPAlloc() int64 {
	f, err := os.Open("/proc/net/sockstat")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		for i := 0; i+1 < len(fl); i++ {
			if fl[0] == "TCP:" && fl[i] == "alloc" {
				n, _ := strconv.ParseInt(fl[i+1], 10, 64)
				return n
			}
		}
	}
	return 0
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "scale: "+format+"\n", args...)
}

func fatalf(format string, args ...any) {
	logf(format, args...)
	os.Exit(1)
}
