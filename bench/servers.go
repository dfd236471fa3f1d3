package main

// The servers of a run: three nginx and three redis-server workers, which
// stay up for the whole run, and the balancers under comparison, started and
// stopped around each configuration's turn in a round (an attached xlb would
// otherwise tax every other configuration's packets on lo).

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/xlb-lb/xlb/internal/lab"
)

// Ports inside the namespace.
const (
	nginxPort0 = 4171 // nginx workers: 4171, 4172, 4173
	// The same nginx workers on a second port that logs every request's
	// connection serial number ($connection): 4181, 4182, 4183, for the
	// connection-per-request rows (the other rows run without a log).
	nginxLogPort0 = 4181
	redisPort0    = 6371 // redis workers: 6371, 6372, 6373
	lbPort0       = 8080 // balancers listen from here, a new port for each start
	nWorkers      = 3
)

// Bounds of the waits on servers.
const (
	startTimeout = 20 * time.Second
	stopTimeout  = 25 * time.Second // xlb's default --shutdown-timeout is shorter
)

// Files the nginx workers serve (name -> size).
var webFiles = map[string]int{"b100": 100, "b100k": 100 << 10, "b100m": 100 << 20}

// addrs are the workers' addresses on host from port0 up.
func addrs(host string, port0 int) []string {
	var a []string
	for i := 0; i < nWorkers; i++ {
		a = append(a, net.JoinHostPort(host, fmt.Sprint(port0+i)))
	}
	return a
}

// makeWebRoot writes the served files (pseudo-random bytes: nothing on the
// path compresses).
func makeWebRoot(dir string) error {
	root := filepath.Join(dir, "www")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	for name, size := range webFiles {
		b := make([]byte, size)
		x := uint64(0x9e3779b97f4a7c15)
		for i := range b {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			b[i] = byte(x)
		}
		if err := os.WriteFile(filepath.Join(root, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// connLogFormat is the access log of the logging port: the connection's
// serial number (nginx numbers every connection it accepts, from 1), the
// request's number on it, the status and the body size.
const connLogFormat = `$connection $connection_requests $status $body_bytes_sent`

// nginxConnLog is the access log of worker i (0-based) on its logging port.
func nginxConnLog(dir string, i int) string {
	return filepath.Join(dir, fmt.Sprintf("nginx%d", i+1), "conn.log")
}

// startNginx starts one single-process nginx per worker address, keep-alive
// without a request limit, sendfile on, no access log on the main port; the
// second port (nginxLogPort0 + i) serves the same files and logs
// connLogFormat, buffered (flushed within connLogFlush).
func startNginx(ctx context.Context, tp *topology, dir string) error {
	ns := tp.workers
	logAddrs := addrs(tp.workerHost, nginxLogPort0)
	for i, addr := range addrs(tp.workerHost, nginxPort0) {
		wd := filepath.Join(dir, fmt.Sprintf("nginx%d", i+1))
		if err := os.MkdirAll(wd, 0o755); err != nil {
			return err
		}
		conf := fmt.Sprintf(`
user root;
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile %[4]d;
pid %[1]s/nginx.pid;
error_log stderr error;
events { worker_connections 8192; }
http {
	access_log off;
	client_body_temp_path %[1]s;
	proxy_temp_path %[1]s;
	fastcgi_temp_path %[1]s;
	uwsgi_temp_path %[1]s;
	scgi_temp_path %[1]s;
	keepalive_requests 1000000;
	keepalive_timeout 300s;
	sendfile on;
	tcp_nopush on;
	log_format conn '%[5]s';
	server {
		listen %[2]s backlog=4096;
		%[9]s
		root %[3]s;
	}
	server {
		listen %[6]s backlog=4096;
		root %[3]s;
		access_log %[7]s conn buffer=64k flush=%[8]dms;
	}
}
`, wd, addr, filepath.Join(dir, "www"), nofile, connLogFormat, logAddrs[i], nginxConnLog(dir, i), connLogFlush.Milliseconds(), listen6(tp, nginxPort0+i))
		path := filepath.Join(wd, "nginx.conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			return err
		}
		p, err := ns.Start("nginx "+addr, false, "nginx", "-c", path)
		if err != nil {
			return err
		}
		if err := lab.WaitListen(p, nginxPort0+i, 1, startTimeout); err != nil {
			return err
		}
		if err := lab.WaitListen(p, nginxLogPort0+i, 1, startTimeout); err != nil {
			return err
		}
	}
	return nil
}

// startRedis starts the redis workers: no persistence, in the foreground.
func startRedis(ctx context.Context, tp *topology, dir string) error {
	ns := tp.workers
	for i := range nWorkers {
		port := redisPort0 + i
		wd := filepath.Join(dir, fmt.Sprintf("redis%d", i+1))
		if err := os.MkdirAll(wd, 0o755); err != nil {
			return err
		}
		p, err := ns.Start(fmt.Sprintf("redis :%d", port), false, "redis-server",
			"--bind", tp.workerHost, "--port", fmt.Sprint(port), "--dir", wd,
			"--save", "", "--appendonly", "no", "--daemonize", "no",
			"--protected-mode", "no", "--maxclients", "10000", "--loglevel", "warning")
		if err != nil {
			return err
		}
		if err := lab.WaitListen(p, port, 1, startTimeout); err != nil {
			return err
		}
	}
	return nil
}

// A balancer under comparison.
type balancer struct {
	name  string // short name, in tables and the chart
	descr string // what it is, for the document
	// kind: "" (direct to the first worker), "xlb", "haproxy"
	kind   string
	policy string   // xlb --policy; "" for the default
	args   []string // more xlb flags
	mode   string   // haproxy mode: http or tcp
	// workers: only the first this many workers (0: all of them)
	workers int
	// ipv6: clients, balancer and workers over [::1] (the lo topology's
	// IPv6 rows)
	ipv6 bool
}

var (
	direct     = balancer{name: "direct", descr: "wrk straight to one worker (the physical limit)"}
	xlbSticky  = balancer{name: "xlb-sticky", kind: "xlb", policy: "sticky", descr: "xlb --policy sticky (a client keeps its worker connection)"}
	xlbDefault = balancer{name: "xlb", kind: "xlb", descr: "xlb, default policy (jiq: per-request remix)"}
	xlbOne     = balancer{name: "xlb-1w", kind: "xlb", workers: 1,
		descr: "xlb, default policy, in front of the first worker only: requests remixed over that nginx's connections, so they all go to one process, as direct's do (with three, each request may wake another process on these two CPUs: that cost is the spreading's, not the data plane's)"}
	xlbKernelHS = balancer{name: "xlb-kernel-hs", kind: "xlb", args: []string{"--handshake", "kernel"},
		descr: "xlb --handshake kernel (the listener answers SYNs; each client accepted, its socket destroyed)"}
	xlbDialSocket = balancer{name: "xlb-socket", kind: "xlb", args: []string{"--dial", "socket"},
		descr: "xlb --dial socket (each worker connection a socket, connect()ed and read in repair mode; the default, auto, dials them from the data plane)"}
	xlbPass10 = balancer{name: "xlb-http10-pass", kind: "xlb", args: []string{"--http10", "pass"},
		descr: "xlb --http10 pass (HTTP/1.0 requests sent as they are: the worker closes each connection after its answer; the default, keep, sends them as keep-alive requests and closes the client itself)"}
	xlbDrop = balancer{name: "xlb-drop", kind: "xlb", args: []string{"--empty-pool", "drop", "--no-pool-ahead"},
		descr: "xlb --empty-pool drop --no-pool-ahead (a request that finds every pool empty is dropped and sent again by its client after its timeout, and the pools grow only from such requests: what xlb did before; the default holds such a request and grows the pools from the clients' SYNs)"}
	haproxyHTTP = balancer{name: "haproxy-http", kind: "haproxy", mode: "http", descr: "HAProxy mode http, http-reuse always, balance roundrobin, nbthread 1"}
	haproxyTCP  = balancer{name: "haproxy-tcp", kind: "haproxy", mode: "tcp", descr: "HAProxy mode tcp, balance roundrobin, nbthread 1"}
	direct6     = balancer{name: "direct-v6", ipv6: true, descr: "direct over IPv6: wrk to [::1], the first worker's IPv6 listener"}
	xlbLogAll   = balancer{name: "xlb-log-all", kind: "xlb", args: []string{"--log-requests", "all", "--access-log", "/dev/null"},
		descr: "xlb --log-requests all --access-log /dev/null: a request record from the data plane for every request, each written as a JSON line (to /dev/null) and counted in the latency histograms"}
	xlbLog100 = balancer{name: "xlb-log-100", kind: "xlb", args: []string{"--log-requests", "100"},
		descr: "xlb --log-requests 100: a request record for one request in 100 (drawn at random), for the latency histograms only"}
	xlb6 = balancer{name: "xlb-v6", kind: "xlb", ipv6: true, descr: "xlb over IPv6: listening on [::1], the workers' IPv6 listeners ([::1]:PORT), spliced and remixed by the IPv6 programs"}
)

// logBalancers run the request-record rows (t1 c2 100 B): their cost
// against xlb's own row.
var logBalancers = []balancer{xlbLogAll, xlbLog100}

// ipv6Balancers run the IPv6 rows (lo topology): the same workers on [::1].
var ipv6Balancers = []balancer{direct6, xlb6}

// listen6 is the nginx line that also listens on [::1]:port, in the lo
// topology (the IPv6 rows).
func listen6(tp *topology, port int) string {
	if tp.name != "lo" {
		return ""
	}
	return fmt.Sprintf("listen [::1]:%d backlog=4096;", port)
}

// cprBalancers run the connection-per-request rows (haproxy-tcp would open
// a worker connection per client connection, as direct does).
// xlb-kernel-hs shows what answering handshakes in the data plane buys,
// xlb-http10-pass what keeping HTTP/1.0 clients' worker connections does,
// xlb-drop what holding and growing the pools ahead cost or buy here.
var cprBalancers = []balancer{direct, xlbSticky, xlbDefault, xlbDrop, xlbDialSocket, xlbKernelHS, xlbPass10, haproxyHTTP}

// vethBalancers run on the veth topology.
var vethBalancers = []balancer{direct, xlbDefault, xlbDrop, haproxyHTTP}

// running is a started balancer: where clients connect, and its process.
type running struct {
	b    balancer
	host string
	port int
	p    *lab.Proc // nil for direct
}

// hostPort is where clients connect: host:port, [host]:port for IPv6.
func (r *running) hostPort() string { return net.JoinHostPort(r.host, fmt.Sprint(r.port)) }

// lbStarts counts balancer starts: each start listens on a port of its
// own, lbPort0 + lbStarts, so that no configuration sees the connections a
// previous one left in TIME-WAIT.
var lbStarts int

// startBalancer starts b in front of workers (addresses); direct needs
// nothing started and sends clients to the first worker.
func startBalancer(ctx context.Context, tp *topology, dir string, b balancer, workers []string) (*running, error) {
	lbPort := lbPort0 + lbStarts%1000
	lbStarts++
	ns := tp.lb
	r := &running{b: b, host: tp.listenAt, port: lbPort}
	if b.ipv6 {
		r.host = "::1"
	}
	if b.workers > 0 && b.workers < len(workers) {
		workers = workers[:b.workers]
	}
	var err error
	switch b.kind {
	case "":
		host, port, _ := net.SplitHostPort(workers[0])
		r.host = host
		fmt.Sscanf(port, "%d", &r.port)
		return r, nil
	case "xlb":
		args := []string{xlbBin, "--socket", filepath.Join(dir, "xlb.sock"), "--log-level", "warn"}
		args = append(args, tp.xlbFlags...)
		if b.policy != "" {
			args = append(args, "--policy", b.policy)
		}
		args = append(args, b.args...)
		args = append(args, tp.xlbIface, fmt.Sprint(lbPort))
		args = append(args, workers...)
		if r.p, err = ns.Start(b.name, false, args...); err != nil {
			return nil, err
		}
		// --log-level warn hides the start-up lines: wait for the port,
		// then for the pool (the listener opens before the workers are up).
		if err = lab.WaitListen(r.p, lbPort, 1, startTimeout); err == nil {
			err = waitXLBWorkers(ctx, ns, dir, r.p, len(workers))
		}
	case "haproxy":
		path := filepath.Join(dir, "haproxy-"+b.mode+".cfg")
		if err := os.WriteFile(path, []byte(haproxyConfig(b.mode, tp.listenAt, lbPort, workers)), 0o644); err != nil {
			return nil, err
		}
		if r.p, err = ns.Start(b.name, false, "haproxy", "-db", "-f", path); err != nil {
			return nil, err
		}
		err = lab.WaitListen(r.p, lbPort, 1, startTimeout)
	}
	if err != nil {
		r.stop()
		// What holds the port, when that is why it failed.
		ss, _, _ := ns.RunCtx(ctx, 5*time.Second, "ss", "-tanpe", fmt.Sprintf("( sport = :%d )", lbPort))
		return nil, fmt.Errorf("%w\nsockets on port %d:\n%s", err, lbPort, lab.LastLines(ss, 10))
	}
	return r, nil
}

// waitXLBWorkers waits until `xlb ctl list` shows n workers up.
func waitXLBWorkers(ctx context.Context, ns *lab.Netns, dir string, p *lab.Proc, n int) error {
	deadline := time.Now().Add(startTimeout)
	var out string
	for time.Now().Before(deadline) && ctx.Err() == nil {
		out, _, _ = ns.RunCtx(ctx, 5*time.Second, xlbBin, "ctl", "--socket", filepath.Join(dir, "xlb.sock"), "list")
		if strings.Count(out, " up") >= n {
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

func (r *running) stop() error {
	if r == nil || r.p == nil {
		return nil
	}
	err := r.p.Stop(stopTimeout)
	if err == nil && r.p.Err != nil && r.b.kind == "xlb" {
		err = fmt.Errorf("%s exited with %v:\n%s", r.b.name, r.p.Err, lab.LastLines(r.p.Output(), 20))
	}
	return err
}

// haproxyConfig: one process, one thread (nbthread 1), round robin; in http
// mode idle server connections are shared between clients (http-reuse
// always), HAProxy's answer to per-request balancing over keep-alive.
func haproxyConfig(mode, host string, port int, workers []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
	nbthread 1
	maxconn %d
	tune.bufsize 16384

defaults
	mode %s
	timeout connect 5s
	timeout client 300s
	timeout server 300s
	timeout http-keep-alive 300s
	maxconn %d

frontend fe
	bind %s:%d backlog 4096
	default_backend be

backend be
	balance roundrobin
`, nofile/2-100, mode, nofile/2-100, host, port)
	if mode == "http" {
		b.WriteString("\thttp-reuse always\n")
	}
	for i, w := range workers {
		fmt.Fprintf(&b, "\tserver w%d %s\n", i+1, w)
	}
	return b.String()
}
