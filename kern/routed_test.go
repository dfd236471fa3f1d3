package kern_test

// Routed mode (CFG_ROUTED): translated packets leave toward their next hop,
// which the data plane looks up with bpf_fib_lookup and keeps per CPU in
// xlb_fib until the generation in xlb_fib_gen moves or XLB_FIB_TTL_NS
// passes (xlb.c route_out). The fixtures run the program in a namespace of
// their own, with the fixtures' addresses on two veth devices and static
// neighbours, the way the host of a routed xlb has them: l0 toward the
// client, l1 toward the worker.

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
	"github.com/xlb-lb/xlb/testnet"
	"golang.org/x/sys/unix"
)

const xdpRedirect = 4

// fibTTL is XLB_FIB_TTL_NS.
const fibTTL = time.Second

var (
	macClient  = [6]byte{0x02, 0xc0, 0, 0, 0, 0x01}
	macWorker  = [6]byte{0x02, 0xa0, 0, 0, 0, 0x01}
	macWorker2 = [6]byte{0x02, 0xa0, 0, 0, 0, 0x02} // the worker's neighbour after a failover
)

// routedHost is the namespace the routed fixtures run the program in.
type routedHost struct {
	ns         *testnet.NS
	l0, l1     int     // ifindexes: toward the client, toward the worker
	mac0, mac1 [6]byte // their addresses
}

func newRoutedHost(t *testing.T) *routedHost {
	t.Helper()
	ns, peer := testnet.New(t), testnet.New(t)
	testnet.Veth(t, ns, "l0", fixturePrefix("10.0.0.100/24"), peer, "p0", fixturePrefix("10.0.0.1/24"))
	testnet.Veth(t, ns, "l1", fixturePrefix("10.0.1.100/24"), peer, "p1", fixturePrefix("10.0.1.1/24"))
	// bpf_fib_lookup forwards only where the stack would.
	ns.Run("sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
	h := &routedHost{ns: ns}
	h.setNeigh(t, clientAddr.Addr(), macClient, "l0")
	h.setNeigh(t, workerAddr.Addr(), macWorker, "l1")
	err := ns.Do(func() error {
		for _, d := range []struct {
			name string
			idx  *int
			mac  *[6]byte
		}{{"l0", &h.l0, &h.mac0}, {"l1", &h.l1, &h.mac1}} {
			ifc, err := net.InterfaceByName(d.name)
			if err != nil {
				return err
			}
			*d.idx = ifc.Index
			copy(d.mac[:], ifc.HardwareAddr)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// setNeigh makes addr's neighbour entry on dev say mac (permanent: the
// peer never answers for it).
// fixturePrefix is an IPv4 address and prefix of the fixtures as they use
// it (IPv6: the address's counterpart, the prefix 96 longer).
func fixturePrefix(s string) string {
	p := netip.MustParsePrefix(s)
	if !family6 {
		return s
	}
	return netip.PrefixFrom(to6(p.Addr()), p.Bits()+96).String()
}

func (h *routedHost) setNeigh(t *testing.T, addr netip.Addr, mac [6]byte, dev string) {
	t.Helper()
	h.ns.Run("ip", "neigh", "replace", addr.String(), "lladdr", net.HardwareAddr(mac[:]).String(), "dev", dev, "nud", "permanent")
}

// run passes frame through the program as if it came in on ifindex, on CPU 0
// (the next hops are cached per CPU), and returns what run() does.
func (h *routedHost) run(d *dataPlane, frame []byte, ifindex int) (uint32, []byte, kern.Counters) {
	d.t.Helper()
	var res *ebpf.TestRunResult
	before := d.counters()
	err := h.ns.Do(func() error {
		var old, cpu0 unix.CPUSet
		if err := unix.SchedGetaffinity(0, &old); err != nil {
			return err
		}
		cpu0.Set(0)
		if err := unix.SchedSetaffinity(0, &cpu0); err != nil {
			return err
		}
		defer unix.SchedSetaffinity(0, &old)
		var err error
		res, err = d.objs.Program.TestRun(&ebpf.TestRunOptions{Data: frame, Context: xdpCtx(frame, ifindex)})
		return err
	})
	if err != nil {
		d.t.Fatalf("test run: %v", err)
	}
	return res.Return, res.Data, d.since(before)
}

// xdpCtx is the struct xdp_md of a test run of frame as if it came in on
// ifindex: data, data_end, data_meta, ingress_ifindex, rx_queue_index,
// egress_ifindex.
func xdpCtx(frame []byte, ifindex int) []byte {
	ctx := make([]byte, 24)
	binary.NativeEndian.PutUint32(ctx[4:], uint32(len(frame)))
	binary.NativeEndian.PutUint32(ctx[12:], uint32(ifindex))
	return ctx
}

// checkFIBFail fails unless the program gave verdict want and counted one
// failed next-hop lookup.
func checkFIBFail(t *testing.T, what string, verdict uint32, delta kern.Counters, want uint32) {
	t.Helper()
	checkVerdict(t, verdict, want)
	if delta[kern.CounterFIBFail] != 1 {
		t.Errorf("%s: fib_fail moved %d, want 1", what, delta[kern.CounterFIBFail])
	}
}

// routedPair is the data plane in routed mode with the standard pair bound,
// the next hops of earlier fixtures forgotten.
func routedPair(t *testing.T) (*dataPlane, *routedHost, kern.Leg, kern.Leg) {
	d := loadDataPlane(t)
	cfg := defaultConfig
	cfg.Flags |= kern.ConfigRouted
	d.setConfig(cfg)
	if err := d.objs.NextHopsChanged(); err != nil {
		t.Fatal(err)
	}
	c, w := stdClientLeg(), stdWorkerLeg()
	d.bindPair(clientKey, c, workerKey, w)
	return d, newRoutedHost(t), c, w
}

// toWorker and toClient are pure ACKs on the standard pair: translated and
// sent on by the fast path, no position moved.
func toWorker(c kern.Leg) []byte {
	return fromClient(seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 502, opts: nopTS(c.PeerTSval, c.OurTSval)}).build()
}

func toClient(w kern.Leg) []byte {
	return fromWorker(seg{seq: w.PeerHi, ack: w.PeerAcked, flags: tcpACK, win: 128, opts: nopTS(w.PeerTSval, w.OurTSval)}).build()
}

// checkSent fails unless the program sent the frame on with verdict want,
// to dst from src, and counted it so (and no failed lookup).
func checkSent(t *testing.T, what string, verdict uint32, out []byte, delta kern.Counters, want uint32, dst, src [6]byte) {
	t.Helper()
	if verdict != want {
		t.Fatalf("%s: verdict %s, want %s", what, verdictName(verdict), verdictName(want))
	}
	p := mustParse(t, out)
	if p.ethDst != dst || p.ethSrc != src {
		t.Errorf("%s: MACs %s -> %s, want %s -> %s", what, net.HardwareAddr(p.ethSrc[:]), net.HardwareAddr(p.ethDst[:]),
			net.HardwareAddr(src[:]), net.HardwareAddr(dst[:]))
	}
	c := kern.CounterRedirect
	if want == xdpTX {
		c = kern.CounterTX
	}
	if delta[c] != 1 || delta[kern.CounterFIBFail] != 0 {
		t.Errorf("%s: %s moved %d, fib_fail %d; want 1 and 0", what, c, delta[c], delta[kern.CounterFIBFail])
	}
}

// TestRoutedNextHopCached: the next hop found for a destination serves its
// later packets, even when the neighbour changed since (nothing told the
// data plane); a new generation (user space saw the change) makes the next
// packet look it up again.
func TestRoutedNextHopCached(t *testing.T) {
	d, h, c, w := routedPair(t)

	v, out, delta := h.run(d, toWorker(c), h.l0)
	checkSent(t, "first client segment", v, out, delta, xdpRedirect, macWorker, h.mac1)
	if p := mustParse(t, out); p.dst != workerAddr {
		t.Fatalf("first client segment went to %s, want %s", p.dst, workerAddr)
	}
	v, out, delta = h.run(d, toClient(w), h.l1)
	checkSent(t, "first worker segment", v, out, delta, xdpRedirect, macClient, h.mac0)

	h.setNeigh(t, workerAddr.Addr(), macWorker2, "l1")
	v, out, delta = h.run(d, toWorker(c), h.l0)
	checkSent(t, "client segment, same generation", v, out, delta, xdpRedirect, macWorker, h.mac1)

	if err := d.objs.NextHopsChanged(); err != nil {
		t.Fatal(err)
	}
	v, out, delta = h.run(d, toWorker(c), h.l0)
	checkSent(t, "client segment, new generation", v, out, delta, xdpRedirect, macWorker2, h.mac1)
	v, out, delta = h.run(d, toClient(w), h.l1)
	checkSent(t, "worker segment, new generation", v, out, delta, xdpRedirect, macClient, h.mac0)
}

// TestRoutedNextHopExpires: without a new generation (no user space to
// notice the change), a next hop is looked up again after XLB_FIB_TTL_NS.
func TestRoutedNextHopExpires(t *testing.T) {
	d, h, c, _ := routedPair(t)
	v, out, delta := h.run(d, toWorker(c), h.l0)
	checkSent(t, "first client segment", v, out, delta, xdpRedirect, macWorker, h.mac1)
	h.setNeigh(t, workerAddr.Addr(), macWorker2, "l1")
	time.Sleep(fibTTL + 100*time.Millisecond)
	v, out, delta = h.run(d, toWorker(c), h.l0)
	checkSent(t, "client segment after the TTL", v, out, delta, xdpRedirect, macWorker2, h.mac1)
}

// TestRoutedIngressIsEgress: a packet whose next hop is out of the device
// it came in on leaves by XDP_TX; the same destination from the other
// device by a redirect. The ingress device is part of an entry's tag (the
// lookup depends on it): with forwarding off on l1, a packet in on l1 is
// dropped although the same destination is cached for l0.
func TestRoutedIngressIsEgress(t *testing.T) {
	d, h, _, w := routedPair(t)
	v, out, delta := h.run(d, toClient(w), h.l0)
	checkSent(t, "worker segment in on l0", v, out, delta, xdpTX, macClient, h.mac0)
	v, out, delta = h.run(d, toClient(w), h.l1)
	checkSent(t, "worker segment in on l1", v, out, delta, xdpRedirect, macClient, h.mac0)
	v, out, delta = h.run(d, toClient(w), h.l0)
	checkSent(t, "worker segment in on l0 again", v, out, delta, xdpTX, macClient, h.mac0)

	h.ns.Run("sysctl", "-qw", "net.ipv4.conf.l1.forwarding=0", "net.ipv6.conf.l1.forwarding=0")
	if err := d.objs.NextHopsChanged(); err != nil {
		t.Fatal(err)
	}
	v, out, delta = h.run(d, toClient(w), h.l0)
	checkSent(t, "worker segment in on l0, l1 not forwarding", v, out, delta, xdpTX, macClient, h.mac0)
	v, _, delta = h.run(d, toClient(w), h.l1)
	checkFIBFail(t, "in on l1, not forwarding", v, delta, xdpDrop)
}

// TestRoutedMTU: a packet longer than its egress device's MTU is looked up
// (and dropped, counted, as the lookup says), not sent on by the cached
// next hop of shorter ones, which stays.
func TestRoutedMTU(t *testing.T) {
	d, h, c, _ := routedPair(t)
	h.ns.Run("ip", "link", "set", "l1", "mtu", "1300") // IPv6 needs 1280 or more
	v, out, delta := h.run(d, toWorker(c), h.l0)
	checkSent(t, "short client segment", v, out, delta, xdpRedirect, macWorker, h.mac1)
	long := fromClient(seg{seq: c.PeerHi, ack: c.PeerAcked, flags: tcpACK, win: 502, opts: nopTS(c.PeerTSval, c.OurTSval),
		payload: make([]byte, 1400)}).build()
	v, _, delta = h.run(d, long, h.l0)
	checkFIBFail(t, "longer than the MTU", v, delta, xdpDrop)
	h.setNeigh(t, workerAddr.Addr(), macWorker2, "l1") // shows whether the next one is looked up
	v, out, delta = h.run(d, toWorker(c), h.l0)
	checkSent(t, "short client segment again", v, out, delta, xdpRedirect, macWorker, h.mac1)
}

// TestRoutedNoNeighbour: a destination without a resolved neighbour goes to
// the stack, translated, for the kernel to resolve it; that answer is not
// kept, so the next packet after the neighbour appears goes out directly.
// A neighbour that went away is noticed at the next generation.
func TestRoutedNoNeighbour(t *testing.T) {
	d, h, c, _ := routedPair(t)
	h.ns.Run("ip", "neigh", "del", workerAddr.Addr().String(), "dev", "l1")
	frame := toWorker(c)
	v, out, delta := h.run(d, frame, h.l0)
	checkVerdict(t, v, xdpPass)
	p := mustParse(t, out)
	if p.dst != workerAddr || p.ethDst != [6]byte(frame[0:6]) || p.ethSrc != [6]byte(frame[6:12]) {
		t.Errorf("to the stack: %s, MACs %x -> %x; want %s, the MACs it came with", p.dst, p.ethSrc, p.ethDst, workerAddr)
	}
	if delta[kern.CounterFIBFail] != 1 || delta[kern.CounterPass] != 1 {
		t.Errorf("fib_fail moved %d, pass %d; want 1 and 1", delta[kern.CounterFIBFail], delta[kern.CounterPass])
	}

	h.setNeigh(t, workerAddr.Addr(), macWorker, "l1")
	v, out, delta = h.run(d, toWorker(c), h.l0)
	checkSent(t, "client segment once the neighbour is known", v, out, delta, xdpRedirect, macWorker, h.mac1)

	h.ns.Run("ip", "neigh", "del", workerAddr.Addr().String(), "dev", "l1")
	if err := d.objs.NextHopsChanged(); err != nil {
		t.Fatal(err)
	}
	v, _, delta = h.run(d, toWorker(c), h.l0)
	checkFIBFail(t, "neighbour gone, new generation", v, delta, xdpPass)
}

// TestRoutedNoRoute: a destination without a route is dropped and counted,
// as before the cache; a route that appears serves the next packet.
func TestRoutedNoRoute(t *testing.T) {
	d, h, c, _ := routedPair(t)
	h.ns.Run("ip", "addr", "del", fixturePrefix("10.0.1.100/24"), "dev", "l1") // its subnet's route goes with it
	if err := d.objs.NextHopsChanged(); err != nil {
		t.Fatal(err)
	}
	v, _, delta := h.run(d, toWorker(c), h.l0)
	checkFIBFail(t, "no route", v, delta, xdpDrop)
	h.ns.Run("ip", "addr", "add", fixturePrefix("10.0.1.100/24"), "dev", "l1", "nodad")
	h.setNeigh(t, workerAddr.Addr(), macWorker, "l1")
	v, out, delta := h.run(d, toWorker(c), h.l0)
	checkSent(t, "client segment once routed", v, out, delta, xdpRedirect, macWorker, h.mac1)
}
