package scaleout

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/splice/demo"
	"github.com/xlb-lb/xlb/testnet"
)

func TestMain(m *testing.M) { testkit.Main(m, nil) }

// The topology. Client hosts Ci (10.10.i.2) reach the router R (10.10.i.1);
// R reaches xlb host Xj over 10.20.j.0/24 (R .1, Xj .2) and has the route
// to the VIP from BGP; Xj reaches the worker host W over 10.30.j.0/24 (Xj
// .1, W .2), where Xj's own workers listen (named xjwK, so that every
// answer says which xlb host carried it).
const (
	vip            = "10.99.0.1"
	vipPort        = 80
	hosts          = 3
	clientHosts    = 2
	workersPerHost = 2
	announceDev    = "xlb-vip"
	routerAS       = 65000
	xlbAS          = 65001
	// resGroup is the router's resilient nexthop group (resilient mode),
	// nexthop j its member for Xj.
	resGroup   = 10
	resBuckets = 64
)

// Bounds of the test's waits.
const (
	convergeTimeout = 30 * time.Second // BGP sessions up, a route changed
	ioTimeout       = 5 * time.Second  // one request
	requestEvery    = 100 * time.Millisecond
	clientLife      = 3 * time.Minute // a long-lived client gives up after this
)

// cluster is a running scale-out topology.
type cluster struct {
	t         *testing.T
	r, w      *testnet.NS
	c         [clientHosts]*testnet.NS
	x         [hosts]*testnet.NS
	xlb       [hosts]*testkit.Proc
	xlbArgs   [hosts][]string
	resilient bool
	dir       string
}

// newCluster builds the namespaces and links, starts the workers, BIRD on
// the router and each xlb host, and the three xlb, and waits until the
// router routes the VIP over all three. resilient: BIRD on the router puts
// its route in table 100, and a mirror (what a router with resilient
// hashing does) keeps the members of a resilient nexthop group, which the
// VIP's route uses, to the BGP next hops.
func newCluster(t *testing.T, resilient bool) *cluster {
	testnet.RequireRoot(t)
	for _, p := range []string{"/usr/sbin/bird", "/usr/sbin/birdc"} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s not installed (make test installs bird2: scripts/deps.sh test)", p)
		}
	}
	cl := &cluster{t: t, r: testnet.New(t), w: testnet.New(t), resilient: resilient, dir: t.TempDir()}
	testkit.Sysctls(t, cl.r, "net.ipv4.ip_forward=1", "net.ipv4.fib_multipath_hash_policy=1",
		"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
	for i := range cl.c {
		cl.c[i] = testnet.New(t)
		// A TAP link, not a veth: a veth hands the router the client
		// socket's own skb, whose hash (the socket's random txhash, l4_hash
		// set) the router's multipath selection takes as it is, and which
		// TCP changes on a retransmission timeout. Through the link's
		// forwarder the router hashes the headers, as from a wire.
		var tc testnet.TAPConfig
		if dir := os.Getenv("XLB_SCALEOUT_PCAP"); dir != "" {
			tc.Pcap = filepath.Join(dir, fmt.Sprintf("%s-c%d.pcap", strings.ReplaceAll(t.Name(), "/", "_"), i+1))
		}
		testnet.TAP(t, cl.c[i], "c0", fmt.Sprintf("10.10.%d.2/24", i+1), cl.r, fmt.Sprintf("rc%d", i+1), fmt.Sprintf("10.10.%d.1/24", i+1), tc)
		cl.c[i].Run("ip", "route", "add", "default", "via", fmt.Sprintf("10.10.%d.1", i+1))
	}
	for j := range cl.x {
		x := testnet.New(t)
		cl.x[j] = x
		testnet.Veth(t, cl.r, fmt.Sprintf("rx%d", j+1), fmt.Sprintf("10.20.%d.1/24", j+1), x, "f0", fmt.Sprintf("10.20.%d.2/24", j+1))
		testnet.Veth(t, x, "b0", fmt.Sprintf("10.30.%d.1/24", j+1), cl.w, fmt.Sprintf("wx%d", j+1), fmt.Sprintf("10.30.%d.2/24", j+1))
		x.Run("ip", "route", "add", "default", "via", fmt.Sprintf("10.20.%d.1", j+1))
		x.Run("ip", "addr", "add", vip+"/32", "dev", "lo")
		var kv []string
		for _, dev := range []string{"all", "default", "f0", "b0"} {
			// Translated packets carry X's own addresses as their source.
			kv = append(kv, "net.ipv4.conf."+dev+".accept_local=1", "net.ipv4.conf."+dev+".rp_filter=0", "net.ipv4.conf."+dev+".send_redirects=0")
		}
		testkit.Sysctls(t, x, append([]string{"net.ipv4.ip_forward=1"}, kv...)...)
	}
	for j := range hosts {
		for k := range workersPerHost {
			addr := fmt.Sprintf("10.30.%d.2:%d", j+1, 4171+k)
			p := testkit.Start(t, cl.w, "worker "+addr, testkit.XLB, "demo-worker", "--name", fmt.Sprintf("x%dw%d", j+1, k+1), addr)
			p.WaitLines("listening on", 1, testkit.StartTimeout)
		}
	}
	cl.startRouterBIRD()
	for j := range hosts {
		cl.startHostBIRD(j)
		cl.startXLB(j)
	}
	cl.waitHosts([]int{0, 1, 2}, convergeTimeout)
	return cl
}

// bird starts BIRD in ns with config conf (foreground, its own control
// socket), and returns the socket's path.
func (cl *cluster) bird(ns *testnet.NS, name, conf string) string {
	cfg := filepath.Join(cl.dir, name+".conf")
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		cl.t.Fatal(err)
	}
	sock := filepath.Join(cl.dir, name+".ctl")
	p := testkit.Start(cl.t, ns, "bird "+name, "bird", "-f", "-c", cfg, "-s", sock, "-P", filepath.Join(cl.dir, name+".pid"))
	// Up once its control socket answers; a bad config ends it at once.
	end := time.Now().Add(testkit.StartTimeout)
	for ns.Command("birdc", "-s", sock, "show", "status").Run() != nil {
		if p.Exited(50*time.Millisecond) || time.Now().After(end) {
			cl.t.Fatalf("bird %s did not start:\n%s", name, p.Output())
		}
	}
	return sock
}

// startRouterBIRD: R takes the VIP's route from each xlb host (eBGP) and,
// with merge paths, installs one multipath route over every equal one.
func (cl *cluster) startRouterBIRD() {
	var b strings.Builder
	fmt.Fprintf(&b, "router id 10.20.0.1;\nprotocol device { scan time 10; }\n")
	table := ""
	if cl.resilient {
		table = "kernel table 100;" // the mirror reads it
	}
	fmt.Fprintf(&b, "protocol kernel { %s ipv4 { import none; export all; }; merge paths on; }\n", table)
	fmt.Fprintf(&b, "template bgp xlbhost { local as %d; hold time 3; keepalive time 1; connect retry time 1; ipv4 { import all; export none; }; }\n", routerAS)
	for j := range hosts {
		fmt.Fprintf(&b, "protocol bgp x%d from xlbhost { neighbor 10.20.%d.2 as %d; }\n", j+1, j+1, xlbAS)
	}
	cl.bird(cl.r, "router", b.String())
	if cl.resilient {
		for j := range hosts {
			cl.r.Run("ip", "nexthop", "add", "id", fmt.Sprint(j+1), "via", fmt.Sprintf("10.20.%d.2", j+1), "dev", fmt.Sprintf("rx%d", j+1))
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go cl.mirror(ctx, done)
		cl.t.Cleanup(func() { cancel(); <-done })
	}
}

// startHostBIRD: Xj announces the VIP while the device xlb --announce
// holds is up (administratively, and with its carrier: `check link`).
func (cl *cluster) startHostBIRD(j int) {
	conf := fmt.Sprintf(`router id 10.20.%[1]d.2;
protocol device { scan time 10; }
protocol static vip { ipv4; check link yes; route %[2]s/32 via "%[3]s"; }
protocol bgp uplink {
	local 10.20.%[1]d.2 as %[4]d; neighbor 10.20.%[1]d.1 as %[5]d;
	hold time 3; keepalive time 1; connect retry time 1;
	ipv4 { import none; export where proto = "vip"; };
}
`, j+1, vip, announceDev, xlbAS, routerAS)
	cl.bird(cl.x[j], fmt.Sprintf("x%d", j+1), conf)
}

// startXLB starts (again) Xj's xlb: routed, on its front and back
// interfaces, serving the VIP, announcing it by the device; extra flags
// (--reuse) come first.
func (cl *cluster) startXLB(j int, extra ...string) {
	if cl.xlbArgs[j] == nil {
		args := []string{testkit.XLB, "--routed", "--listen", vip, "--mode", "generic",
			"--socket", cl.sock(j),
			"--announce", announceDev, "--shutdown-timeout", "2s", "f0,b0", fmt.Sprint(vipPort)}
		for k := range workersPerHost {
			args = append(args, fmt.Sprintf("10.30.%d.2:%d", j+1, 4171+k))
		}
		cl.xlbArgs[j] = args
	}
	p := testkit.Start(cl.t, cl.x[j], fmt.Sprintf("xlb x%d", j+1), append(cl.xlbArgs[j][:1:1], append(extra, cl.xlbArgs[j][1:]...)...)...)
	// Stopped, not killed, at the end: it removes its pins.
	cl.t.Cleanup(func() {
		if !p.Exited(0) {
			p.StopErr()
		}
	})
	cl.xlb[j] = p
	p.WaitLines("announcing", 1, testkit.StartTimeout)
}

// ipJSON runs `ip -j args...` in R and decodes its output into v.
func (cl *cluster) ipJSON(v any, args ...string) error {
	out, err := cl.r.Command("ip", append([]string{"-j"}, args...)...).Output()
	if err != nil {
		return fmt.Errorf("ip %s: %v", strings.Join(args, " "), err)
	}
	if len(strings.TrimSpace(string(out))) == 0 {
		return nil
	}
	return json.Unmarshal(out, v)
}

type route struct {
	Dev      string `json:"dev"`
	Nexthops []struct {
		Dev string `json:"dev"`
	} `json:"nexthops"`
}

// bgpHosts lists the xlb hosts (0-based) the router's BGP route to the VIP
// goes to, in order: from the main table, or from table 100 (resilient).
func (cl *cluster) bgpHosts() ([]int, error) {
	args := []string{"route", "show", vip + "/32", "proto", "bird"}
	if cl.resilient {
		args = append(args, "table", "100")
	}
	var rs []route
	if err := cl.ipJSON(&rs, args...); err != nil {
		return nil, err
	}
	var out []int
	for _, r := range rs {
		devs := []string{r.Dev}
		if len(r.Nexthops) > 0 {
			devs = devs[:0]
			for _, nh := range r.Nexthops {
				devs = append(devs, nh.Dev)
			}
		}
		for _, d := range devs {
			var n int
			if _, err := fmt.Sscanf(d, "rx%d", &n); err == nil {
				out = append(out, n-1)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// waitHosts waits until the router routes the VIP over exactly want (and,
// resilient, until the group has them as members), and returns how long it
// took.
func (cl *cluster) waitHosts(want []int, timeout time.Duration) time.Duration {
	cl.t.Helper()
	start := time.Now()
	var got []int
	var err error
	for time.Since(start) < timeout {
		got, err = cl.bgpHosts()
		if err == nil && slices.Equal(got, want) && (!cl.resilient || slices.Equal(cl.groupHosts(), want)) {
			took := time.Since(start)
			out, _ := cl.r.Command("ip", "-o", "route", "show", vip).Output()
			cl.t.Logf("the router's route: %s", strings.Join(strings.Fields(string(out)), " "))
			return took
		}
		time.Sleep(10 * time.Millisecond)
	}
	cl.t.Fatalf("the router's route to %s goes to hosts %v (err %v), want %v within %v", vip, got, err, want, timeout)
	return 0
}

// groupHosts lists the members of the resilient group (0-based hosts).
func (cl *cluster) groupHosts() []int {
	var nhs []struct {
		Group []struct {
			ID int `json:"id"`
		} `json:"group"`
	}
	if err := cl.ipJSON(&nhs, "nexthop", "show", "id", fmt.Sprint(resGroup)); err != nil || len(nhs) == 0 {
		return nil
	}
	var out []int
	for _, m := range nhs[0].Group {
		out = append(out, m.ID-1)
	}
	slices.Sort(out)
	return out
}

// mirror keeps the resilient group's members the BGP route's next hops,
// and the VIP's route on the group: what a router with resilient hashing
// does with a multipath route (BIRD and FRR install hash-threshold
// multipath routes on Linux, not resilient groups).
func (cl *cluster) mirror(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	var have []int
	routed := false
	for ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		want, err := cl.bgpHosts()
		if err != nil || len(want) == 0 || slices.Equal(want, have) {
			continue
		}
		var ids []string
		for _, j := range want {
			ids = append(ids, fmt.Sprint(j+1))
		}
		out, err := cl.r.Command("ip", "nexthop", "replace", "id", fmt.Sprint(resGroup), "group", strings.Join(ids, "/"),
			"type", "resilient", "buckets", fmt.Sprint(resBuckets), "idle_timer", "1").CombinedOutput()
		if err != nil {
			cl.t.Errorf("mirror: ip nexthop replace: %v: %s", err, out)
			return
		}
		have = want
		if !routed {
			if out, err := cl.r.Command("ip", "route", "replace", vip+"/32", "nhid", fmt.Sprint(resGroup)).CombinedOutput(); err != nil {
				cl.t.Errorf("mirror: ip route replace: %v: %s", err, out)
				return
			}
			routed = true
		}
	}
}

// bucketShares counts the resilient group's buckets per host.
func (cl *cluster) bucketShares() [hosts]int {
	var bs []struct {
		Bucket struct {
			NHID int `json:"nhid"`
		} `json:"bucket"`
	}
	var n [hosts]int
	if err := cl.ipJSON(&bs, "nexthop", "bucket", "show", "id", fmt.Sprint(resGroup)); err != nil {
		cl.t.Fatal(err)
	}
	for _, b := range bs {
		if j := b.Bucket.NHID - 1; j >= 0 && j < hosts {
			n[j]++
		}
	}
	return n
}

// routedTo asks the router where it sends the flow from a client's
// address and port to the VIP now (`ip route get` with the ports: the L4
// hash), as the 0-based host.
func (cl *cluster) routedTo(clientHost int, from endpoint) (int, error) {
	out, err := cl.r.Command("ip", "-o", "route", "get", vip, "from", from.addr, "iif", fmt.Sprintf("rc%d", clientHost+1),
		"ipproto", "6", "sport", fmt.Sprint(from.port), "dport", fmt.Sprint(vipPort)).CombinedOutput()
	if err != nil {
		return -1, fmt.Errorf("ip route get: %v: %s", err, out)
	}
	f := strings.Fields(string(out))
	if i := slices.Index(f, "dev"); i >= 0 && i+1 < len(f) {
		var n int
		if _, err := fmt.Sscanf(f[i+1], "rx%d", &n); err == nil {
			return n - 1, nil
		}
	}
	return -1, fmt.Errorf("ip route get: no xlb host in %q", out)
}

type endpoint struct {
	addr string
	port int
}

// hostOf is the xlb host (0-based) that carried an answer of worker xJwK.
func hostOf(worker string) int {
	var j, k int
	if _, err := fmt.Sscanf(worker, "x%dw%d", &j, &k); err != nil {
		return -1
	}
	return j - 1
}

// dial opens a connection to the VIP from client host i.
func (cl *cluster) dial(i int) (net.Conn, error) { return cl.dialFrom(i, nil) }

// dialFrom is dial from the local address and port local (nil: any).
func (cl *cluster) dialFrom(i int, local *net.TCPAddr) (net.Conn, error) {
	var c net.Conn
	err := cl.c[i].Do(func() error {
		d := net.Dialer{Timeout: ioTimeout}
		if local != nil {
			d.LocalAddr = local
		}
		var err error
		c, err = d.Dial("tcp", net.JoinHostPort(vip, fmt.Sprint(vipPort)))
		return err
	})
	return c, err
}

// get sends one request on c and returns the host that carried it.
func get(c net.Conn, r *bufio.Reader) (int, error) {
	c.SetDeadline(time.Now().Add(ioTimeout))
	w, _, err := demo.Get(c, r, "/")
	if err != nil {
		return -1, err
	}
	if h := hostOf(w); h >= 0 {
		return h, nil
	}
	return -1, fmt.Errorf("answer from an unknown worker %q", w)
}

// spread opens n new connections (spread over the client hosts, a few at a
// time), one request each, and counts them by the host that carried them.
// Every one must succeed.
func (cl *cluster) spread(n int) [hosts]int {
	cl.t.Helper()
	var mu sync.Mutex
	var per [hosts]int
	var errs []error
	var wg sync.WaitGroup
	before := cl.counters()
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := cl.dial(i % clientHosts)
			h := -1
			if err == nil {
				h, err = get(c, bufio.NewReader(c))
				c.Close()
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			per[h]++
		}()
	}
	wg.Wait()
	for _, err := range errs {
		cl.t.Errorf("a new client failed: %v", err)
	}
	if len(errs) > 0 {
		// What each host's data plane counted meanwhile says where.
		after := cl.counters()
		for j := range hosts {
			var d []string
			for k, v := range after[j] {
				if v != before[j][k] {
					d = append(d, fmt.Sprintf("%s+%d", k, v-before[j][k]))
				}
			}
			slices.Sort(d)
			cl.t.Logf("x%d's counters during it: %s", j+1, strings.Join(d, " "))
		}
	}
	return per
}

// counters reads each running xlb's data-plane counters.
func (cl *cluster) counters() [hosts]map[string]uint64 {
	var out [hosts]map[string]uint64
	for j := range hosts {
		if r, err := testkit.StatusErr(cl.x[j], "f0"); err == nil {
			out[j] = r.Counters
		}
	}
	return out
}

// checkShares fails unless each host in on carried 20-45% of the total
// (those not in on: none).
func (cl *cluster) checkShares(what string, per [hosts]int, on []int) {
	cl.t.Helper()
	total := 0
	for _, n := range per {
		total += n
	}
	cl.t.Logf("%s: %d new clients by host %v", what, total, per)
	for j, n := range per {
		share := float64(n) / float64(max(total, 1))
		if !slices.Contains(on, j) {
			if n > 0 {
				cl.t.Errorf("%s: %d new clients went to x%d, which is out", what, n, j+1)
			}
			continue
		}
		lo, hi := 0.20, 0.45
		if len(on) == 2 {
			lo, hi = 0.35, 0.65 // two hosts: each about half
		}
		if share < lo || share > hi {
			cl.t.Errorf("%s: x%d carried %.0f%% of the new clients, want %.0f-%.0f%%", what, j+1, share*100, lo*100, hi*100)
		}
	}
}

// longClient is a client that keeps its connection and sends a request
// every requestEvery until stopped or its connection fails.
type longClient struct {
	clientHost int
	from       endpoint
	host       int // the xlb host of its first answer

	mu       sync.Mutex
	requests int
	others   int   // answers carried by another host than the first
	err      error // what ended it
	done     chan struct{}
}

func (lc *longClient) state() (requests, others int, err error) {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.requests, lc.others, lc.err
}

// startLong opens n long-lived clients and returns them once each has its
// first answer.
func (cl *cluster) startLong(n int, stop <-chan struct{}) []*longClient {
	cl.t.Helper()
	var out []*longClient
	for i := range n {
		c, err := cl.dial(i % clientHosts)
		if err != nil {
			cl.t.Fatalf("long-lived client %d: %v", i, err)
		}
		cl.t.Cleanup(func() { c.Close() })
		r := bufio.NewReader(c)
		h, err := get(c, r)
		if err != nil {
			cl.t.Fatalf("long-lived client %d: first request: %v", i, err)
		}
		la := c.LocalAddr().(*net.TCPAddr)
		lc := &longClient{clientHost: i % clientHosts, from: endpoint{la.IP.String(), la.Port}, host: h, requests: 1, done: make(chan struct{})}
		go lc.run(c, r, stop)
		out = append(out, lc)
	}
	return out
}

func (lc *longClient) run(c net.Conn, r *bufio.Reader, stop <-chan struct{}) {
	defer close(lc.done)
	end := time.Now().Add(clientLife)
	t := time.NewTicker(requestEvery)
	defer t.Stop()
	for time.Now().Before(end) {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		h, err := get(c, r)
		lc.mu.Lock()
		if err != nil {
			lc.err = err
			lc.mu.Unlock()
			return
		}
		lc.requests++
		if h != lc.host {
			lc.others++
		}
		lc.mu.Unlock()
	}
}

// byHost counts clients by their host.
func byHost(ls []*longClient) [hosts]int {
	var n [hosts]int
	for _, l := range ls {
		n[l.host]++
	}
	return n
}
