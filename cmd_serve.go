package main

import (
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/xlb-lb/xlb/splice"
	"github.com/xlb-lb/xlb/xdp"
)

const serveSynopsis = "IFACE PORT WORKER..."

func runServe(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", serveSynopsis,
		"Listen on PORT of IFACE's addresses and balance the clients over the workers\n"+
			"(HOST:PORT[@WEIGHT]). Client connections are spliced onto pooled worker\n"+
			"connections by the XDP program: no payload reaches user space. 'serve' may\n"+
			"be left out: 'xlb lo 8080 ...' is the same. Ctrl-C or SIGTERM stop it\n"+
			"cleanly: in-flight requests finish, connections are closed properly\n"+
			"(SIGHUP too, but with --access-log FILE, which it opens again: logrotate).\n"+
			"IFACE may be a comma-separated list (routed mode: the clients' side, then\n"+
			"the workers' side): the program goes on each, in the same mode; the first\n"+
			"one's addresses are listened on and it names the pins and control socket.",
		"xlb lo 8080 127.0.0.1:4171 127.0.0.1:4172 127.0.0.1:4173\n"+
			"xlb --listen 10.0.0.1 --pool 32 eth0 80 10.0.1.1:8080@2 10.0.1.2:8080\n"+
			"xlb --metrics 127.0.0.1:9464 --log-format json --require-workers lo 8080 127.0.0.1:4171\n"+
			"xlb --reuse lo 8080 127.0.0.1:4171   # restart: take over without dropping connections\n"+
			"xlb --routed eth0,eth1 80 10.0.1.1:8080   # clients on eth0, workers behind eth1\n"+
			"xlb --routed --listen 192.0.2.10 --announce xlb-vip eth0,eth1 80 10.0.1.1:8080   # a VIP on lo, announced by BGP (docs/SCALE-OUT.md)")
	cfg := splice.Config{}
	listen := fs.String("listen", "", "addresses to listen on, comma-separated, IPv4 or IPv6 (default: every address of IFACE of the workers' families, link-local ones excepted); clients of a family are served by the workers of that family")
	fs.IntVar(&cfg.Pool, "pool", splice.DefaultPool, "connections kept per worker and unit of weight, beyond its share of those busy with clients")
	mode := fs.String("mode", "auto", "XDP mode: generic, native or auto")
	policy := fs.String("policy", string(splice.PolicyJIQ), "who gets each request: jiq (the worker idle the longest), rr (round robin), least (fewest busy connections per weight), sticky (a client keeps its connection)")
	protocol := fs.String("protocol", "auto", "how request boundaries are told: auto (from each connection's first bytes: HTTP/1.x, Redis RESP, memcached text; TLS and anything else stay on one worker connection), http, resp, memcache (that protocol's rules for every connection), or raw (every connection stays on one worker connection: an L4 splice)")
	fs.DurationVar(&cfg.QueueTimeout, "queue-timeout", splice.DefaultQueueTimeout, "a client whose request waited this long for a worker connection is reset (0: never)")
	fs.DurationVar(&cfg.ClientTimeout, "client-timeout", splice.DefaultClientTimeout, "a client silent this long (and its worker) has its connection closed with a FIN (0: never)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", splice.DefaultDrainTimeout, "how long a draining worker waits for clients pinned to it (TLS, upgraded streams) before their connections are closed (0: for ever)")
	fs.IntVar(&cfg.WorkerMSS, "worker-mss", 0, "TCP MSS of the connections to workers (default: 1400 on a 1500-byte network, else from IFACE's MTU); at most the smallest MSS of the clients' paths")
	fs.IntVar(&cfg.WorkerConns, "worker-conns", 0, "at most this many connections to each worker, idle or busy (0: no limit)")
	fs.DurationVar(&cfg.IdleRelease, "idle-release", splice.DefaultIdleRelease, "a client with no request in flight for this long gives its worker connection back (0: keep it until its next request)")
	fs.BoolVar(&cfg.Force, "force", false, "replace an XDP program already attached to IFACE")
	fs.BoolVar(&cfg.Reuse, "reuse", false, "take over from a running xlb on IFACE without dropping its connections")
	dial := fs.String("dial", "auto", "how pool connections to workers are opened: xdp (a SYN sent raw, the handshake completed by the data plane, no socket per connection), socket (connect(), then the socket read in repair mode), or auto (xdp for an IPv4 worker reached through an interface the program is attached to, whose answers it sees; socket otherwise)")
	handshake := fs.String("handshake", "xdp", "who answers a client's SYN: xdp (the data plane, no socket per client) or kernel (the listener; each client accepted and its socket destroyed)")
	http10 := fs.String("http10", "keep", "HTTP/1.0 requests without keep-alive: keep (sent to the worker as keep-alive requests; xlb reads each answer's length and closes the client's connection after it, the worker's connection is reused) or pass (sent as they are: the worker closes its connection after each answer)")
	fs.BoolVar(&cfg.NoPoolAhead, "no-pool-ahead", false, "grow the pools only for clients' data that found no idle worker connection, not already for the clients' SYNs that outnumber the idle connections")
	emptyPool := fs.String("empty-pool", "hold", "a client's data that finds no idle worker connection: hold (kept by the data plane and sent on once a connection is opened, within milliseconds) or drop (the client sends it again after its retransmission timeout, 200 ms or more)")
	fs.BoolVar(&cfg.Routed, "routed", false, "send rewritten packets out toward the next hop (XDP_TX/redirect after a FIB lookup) instead of to this host's stack")
	fs.StringVar(&cfg.Socket, "socket", "", "control socket (default /run/xlb/net<netns inode>-IFACE.sock, the first IFACE; xlb ctl finds it)")
	maxLegs := fs.Uint("max-legs", 65536, "size of the leg table (client and worker connections)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", splice.DefaultShutdownTimeout, "how long in-flight requests may take to finish on stop")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "text or json (one object a line)")
	metrics := fs.String("metrics", "", "serve Prometheus metrics on HOST:PORT, e.g. 127.0.0.1:9464 (path /metrics)")
	check := fs.String("check", "", "active health check of each worker: tcp (a connect) or http:/PATH (a GET that must answer 2xx or 3xx); a worker that fails --fall checks in a row takes no new requests until it passes --rise in a row (default: none; a worker that ends the connections it is given unused is marked down anyway, and checked with tcp until it is back)")
	checkCfg := splice.CheckSpec{}
	fs.DurationVar(&checkCfg.Interval, "check-interval", splice.DefaultCheckInterval, "time between two checks of a worker")
	fs.DurationVar(&checkCfg.Timeout, "check-timeout", splice.DefaultCheckTimeout, "a check not done within this fails")
	fs.IntVar(&checkCfg.Rise, "rise", splice.DefaultRise, "checks passed in a row that bring a worker that is down back up")
	fs.IntVar(&checkCfg.Fall, "fall", splice.DefaultFall, "checks failed in a row that mark a worker down")
	fs.StringVar(&cfg.Announce, "announce", "", "a TUN device (made if it does not exist) that is up while this xlb serves, for a routing daemon to announce the service address by: up once a worker takes requests; down when none does, and first thing on stop; its carrier goes off when xlb exits, also killed (docs/SCALE-OUT.md)")
	fs.DurationVar(&cfg.SlowStart, "slowstart", 0, "a worker that comes back up has its weight ramp from 1 to its own over this time (0: at once)")
	logRequests := fs.String("log-requests", "", "request records from the data plane, for the access log and the latency histograms (metrics, xlb stats): all, N (one request in N, drawn at random) or off (default: all with --access-log, else off)")
	fs.StringVar(&cfg.AccessLog, "access-log", "", "write a JSON object a line for each request logged (--log-requests) to FILE, appended, or - for standard output: time, client address, worker, worker connection, bytes each way, time to first byte, duration, how it ended")
	reqWorkers := fs.Bool("require-workers", false, "fail at start if a worker cannot be reached (default: keep retrying it)")
	if err := fs.parse(args, stdout); err != nil {
		return err
	}
	if fs.NArg() == 2 {
		return usagef("no workers given: name at least one HOST:PORT[@WEIGHT] after IFACE PORT (run 'xlb serve --help')")
	}
	if err := fs.wantArgs(3, -1); err != nil {
		return err
	}
	var err error
	if cfg.Ifaces, err = splice.ParseIfaces(fs.Arg(0)); err != nil {
		return usagef("%v", err)
	}
	cfg.Iface = cfg.Ifaces[0]
	cfg.Port, err = parsePort(fs.Arg(1))
	if err != nil {
		return err
	}
	for _, w := range fs.Args()[2:] {
		spec, err := splice.ParseWorker(w)
		if err != nil {
			return usagef("%v", err)
		}
		cfg.Workers = append(cfg.Workers, spec)
	}
	if *listen != "" {
		for _, s := range strings.Split(*listen, ",") {
			a, err := netip.ParseAddr(strings.TrimSpace(s))
			if err != nil {
				return usagef("--listen %q: %q is not an IP address", *listen, s)
			}
			if slices.Contains(cfg.Listen, a.Unmap()) {
				return usagef("--listen %q: %s given twice", *listen, a)
			}
			cfg.Listen = append(cfg.Listen, a.Unmap())
		}
	}
	if *check != "" {
		c, err := splice.ParseCheck(*check)
		if err != nil {
			return usagef("--check %v", err)
		}
		c.Interval, c.Timeout, c.Rise, c.Fall = checkCfg.Interval, checkCfg.Timeout, checkCfg.Rise, checkCfg.Fall
		if err := c.Validate(); err != nil {
			return usagef("%v", err)
		}
		cfg.Check = &c
	} else {
		for _, f := range []string{"check-interval", "check-timeout", "rise", "fall"} {
			if fs.isSet(f) {
				return usagef("--%s needs --check", f)
			}
		}
	}
	switch {
	case *logRequests != "":
		n, err := splice.ParseLogRequests(*logRequests)
		if err != nil {
			return usagef("--log-requests %v", err)
		}
		if n == 0 && cfg.AccessLog != "" {
			return usagef("--access-log %s with --log-requests off: nothing would be written", cfg.AccessLog)
		}
		cfg.LogEvery = n
	case cfg.AccessLog != "":
		cfg.LogEvery = 1
	}
	if cfg.SlowStart < 0 {
		return usagef("--slowstart %v: must be 0 (none) or more", cfg.SlowStart)
	}
	if a := cfg.Announce; a != "" && (len(a) >= unix.IFNAMSIZ || a == "." || a == ".." || strings.ContainsAny(a, "/: \t\n")) {
		return usagef("--announce %q: not an interface name (1 to %d characters, no '/', ':' or spaces)", a, unix.IFNAMSIZ-1)
	}
	if cfg.Policy, err = splice.ParsePolicy(*policy); err != nil {
		return usagef("--policy: %v", err)
	}
	if cfg.Protocol, err = splice.ParseProtocol(*protocol); err != nil {
		return usagef("--protocol: %v", err)
	}
	switch *dial {
	case "xdp":
		cfg.Dial = splice.DialXDP
	case "socket":
		cfg.Dial = splice.DialSocket
	case "auto":
		cfg.Dial = splice.DialAuto
	default:
		return usagef("--dial %q: must be auto, xdp or socket", *dial)
	}
	switch *handshake {
	case "xdp":
	case "kernel":
		cfg.KernelHandshake = true
	default:
		return usagef("--handshake %q: must be xdp or kernel", *handshake)
	}
	switch *http10 {
	case "keep":
	case "pass":
		cfg.PassHTTP10 = true
	default:
		return usagef("--http10 %q: must be keep or pass", *http10)
	}
	switch *emptyPool {
	case "hold":
	case "drop":
		cfg.DropOnEmptyPool = true
	default:
		return usagef("--empty-pool %q: must be hold or drop", *emptyPool)
	}
	if cfg.QueueTimeout < 0 {
		return usagef("--queue-timeout %v: must be 0 (never) or more", cfg.QueueTimeout)
	}
	if cfg.ClientTimeout < 0 {
		return usagef("--client-timeout %v: must be 0 (never) or more", cfg.ClientTimeout)
	}
	if cfg.DrainTimeout < 0 {
		return usagef("--drain-timeout %v: must be 0 (no limit) or more", cfg.DrainTimeout)
	}
	if cfg.Mode, err = xdp.ParseMode(*mode); err != nil {
		return usagef("--mode: %v", err)
	}
	if cfg.Pool < 1 || cfg.Pool > 10000 {
		return usagef("--pool %d: must be from 1 to 10000", cfg.Pool)
	}
	if cfg.WorkerMSS != 0 && (cfg.WorkerMSS < 88 || cfg.WorkerMSS > 32767) {
		return usagef("--worker-mss %d: must be from 88 to 32767 (0: automatic)", cfg.WorkerMSS)
	}
	if cfg.WorkerConns < 0 {
		return usagef("--worker-conns %d: must be 0 (no cap) or more", cfg.WorkerConns)
	}
	if cfg.IdleRelease < 0 {
		return usagef("--idle-release %v: must be 0 (off) or more", cfg.IdleRelease)
	}
	if *maxLegs < 64 || *maxLegs > 1<<24 {
		return usagef("--max-legs %d: must be from 64 to %d", *maxLegs, 1<<24)
	}
	cfg.MaxLegs = uint32(*maxLegs)
	if cfg.Log, err = newLogger(stderr, *logFormat, *logLevel); err != nil {
		return err
	}
	if *metrics != "" {
		if err := checkMetricsAddr(*metrics); err != nil {
			return err
		}
	}
	if err := checkPrivileges(); err != nil {
		return err
	}
	if *reqWorkers {
		if err := requireWorkers(cfg.Workers); err != nil {
			return err
		}
	}
	var metricsLn net.Listener
	if *metrics != "" {
		if metricsLn, err = splice.ListenMetrics(*metrics); err != nil {
			return err
		}
		defer metricsLn.Close()
	}

	// Signals are ours before the start: one that comes during it (the
	// workers may be up, the program attached) is taken once it is done,
	// and stops xlb cleanly rather than kill it half started.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	lb, err := splice.Start(cfg)
	if err != nil {
		return explainStartError(err, cfg.Iface)
	}
	if metricsLn != nil {
		go lb.ServeMetrics(metricsLn)
		cfg.Log.Info("serving metrics", "addr", metricsLn.Addr().String(), "path", splice.MetricsPath)
	}
	for {
		select {
		case s := <-sig:
			// SIGHUP with an access log file is logrotate's
			// postrotate: the file is opened again under its name.
			// Without one it stops xlb, as it did (a closed terminal).
			if s == syscall.SIGHUP && lb.ReopenAccessLog() {
				continue
			}
			cfg.Log.Info("stopping", "signal", s.String())
			return lb.Shutdown()
		case <-lb.Done():
			return nil // another xlb took over (--reuse)
		}
	}
}

func parsePort(s string) (uint16, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 {
		return 0, usagef("port %q: must be a number from 1 to 65535", s)
	}
	return uint16(p), nil
}
