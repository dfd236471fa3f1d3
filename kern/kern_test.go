package kern

import (
	"bytes"
	"debug/elf"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/xlb-lb/xlb/kern/internal/layoutgen"
)

// TestCountersMatchHeader checks that the Go mirror of enum xlb_counter agrees
// with structs.h, name by name and number by number.
func TestCountersMatchHeader(t *testing.T) {
	src, err := os.ReadFile("bpf/structs.h")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^\s*XLB_CNT_([A-Z0-9_]+)\s*=\s*(\d+),`)
	found := re.FindAllStringSubmatch(string(src), -1)
	if len(found) == 0 {
		t.Fatal("no XLB_CNT_ entries found in structs.h")
	}
	if len(found) != int(CounterMax) {
		t.Fatalf("structs.h has %d counters, kern.go %d", len(found), CounterMax)
	}
	for _, m := range found {
		n, _ := strconv.Atoi(m[2])
		want := toLowerSnake(m[1])
		if got := Counter(n).String(); got != want {
			t.Errorf("counter %d: Go name %q, C name %q", n, got, want)
		}
	}
}

func toLowerSnake(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func TestSpecParsesEmbeddedObject(t *testing.T) {
	spec, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := spec.Programs[ProgramName]; !ok {
		t.Errorf("program %s missing from embedded object", ProgramName)
	}
	m, ok := spec.Maps[StatsMapName]
	if !ok {
		t.Fatalf("map %s missing from embedded object", StatsMapName)
	}
	if m.MaxEntries != uint32(CounterMax) {
		t.Errorf("map %s has %d entries, want %d (one per counter)", StatsMapName, m.MaxEntries, CounterMax)
	}
	if spec.License != "GPL" {
		t.Errorf("license %q, want GPL", spec.License)
	}
}

// TestLayoutGenerated regenerates zlayout.go from the BTF of the embedded
// object (the one this package was built with) and this package's Go types:
// the checked-in file must be what kern/gen writes. It fails when
// structs.h changed and zlayout.go was not regenerated, when zlayout.go was
// edited by hand, and when a Go type no longer matches its C struct.
func TestLayoutGenerated(t *testing.T) {
	src, err := layoutgen.GoSources(".", "zlayout.go")
	if err != nil {
		t.Fatal(err)
	}
	want, err := layoutgen.Generate(Object, "bpf/xlb.o", "kern", src)
	if err != nil {
		t.Fatalf("kern/gen cannot generate from the built object: %v", err)
	}
	got, err := os.ReadFile("zlayout.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		i := 0
		for i < len(gl) && i < len(wl) && gl[i] == wl[i] {
			i++
		}
		line := func(l []string) string {
			if i < len(l) {
				return l[i]
			}
			return "(end of file)"
		}
		t.Errorf("zlayout.go is not what kern/gen writes from bpf/xlb.o: run go generate ./kern/ (make does it too)\n"+
			"first difference, line %d:\n have %s\n want %s", i+1, line(gl), line(wl))
	}
}

// TestObjectCarriesLayouts checks that the anchor of bpf/anchors.h puts the
// shared layouts into the object without adding anything the loader acts
// on: no map, no program, no relocation of a program refers to it.
func TestObjectCarriesLayouts(t *testing.T) {
	spec, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	l, err := spec.BTF.StructLayout("leg")
	if err != nil {
		t.Fatal(err)
	}
	if l.Size != LegSize {
		t.Errorf("struct leg: %d bytes in BTF, LegSize %d", l.Size, LegSize)
	}
	if _, ok := spec.Maps[layoutgen.Anchor]; ok {
		t.Errorf("the anchor %s became a map", layoutgen.Anchor)
	}
	want := []string{ProgramName, BindProgName, SlowProgName, XlateProgName, CtlProgName}
	if len(spec.Programs) != len(want) {
		t.Errorf("%d programs, want %d (%v)", len(spec.Programs), len(want), want)
	}
	f, err := elf.NewFile(bytes.NewReader(Object))
	if err != nil {
		t.Fatal(err)
	}
	sec := f.Section(".anchors")
	if sec == nil {
		t.Fatal("no section .anchors")
	}
	if sec.Size != 8 || sec.Flags&elf.SHF_EXECINSTR != 0 {
		t.Errorf("section .anchors: %d bytes, flags %v; want one pointer of data", sec.Size, sec.Flags)
	}
}

// TestMarshalRoundTrip checks the Go encodings against each other.
func TestMarshalRoundTrip(t *testing.T) {
	k := LegKey{Peer: netip.MustParseAddrPort("10.1.2.3:40000"), Local: netip.MustParseAddrPort("10.9.8.7:8080")}
	b, err := k.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 10 || b[3] != 3 || b[32] != 0x9c || b[33] != 0x40 || b[36] != 2 {
		t.Errorf("key bytes % x", b)
	}
	var k2 LegKey
	if err := k2.UnmarshalBinary(b); err != nil || k2 != k {
		t.Errorf("key round trip: %v %v", k2, err)
	}
	l := Leg{Kind: LegWorker, PeerWScale: 7, OurWScale: 9, Opts: OptTS | OptSACK, PeerMSS: 1460, OurMSS: 1400,
		Worker: 3, WinBound: 1 << 20, PeerHi: 1, PeerAcked: 2, PeerTSval: 3, PeerWin: 4, ReqMark: 5, RxFlags: RxFIN,
		Requests: 6, SndNxt: 7, OurTSval: 8, SndWin: 9, State: LegBound, SentHi: 10, Pin: PinUpgrade,
		Proto: ProtoRESP, Tail: TailPSH | TailCRLF, LastNs: 1 << 40}
	lb, _ := l.MarshalBinary()
	var l2 Leg
	if err := l2.UnmarshalBinary(lb); err != nil || l2 != l {
		t.Errorf("leg round trip: %+v %v", l2, err)
	}
	bd := Binding{To: k, SeqOff: 1, AckOff: 2, TSvalOff: 3, TSecrOff: 4, InWScale: 5, OutWScale: 6, Flags: BindToClient, Proto: ProtoHTTP, Worker: 7, Ifindex: 8}
	bb, _ := bd.MarshalBinary()
	var bd2 Binding
	if err := bd2.UnmarshalBinary(bb); err != nil || bd2 != bd {
		t.Errorf("binding round trip: %+v %v", bd2, err)
	}
	if _, err := (LegKey{Peer: netip.MustParseAddrPort("[::1]:1"), Local: k.Local}).MarshalBinary(); err == nil {
		t.Error("a key of two families was accepted")
	}
	if _, err := (LegKey{Peer: netip.MustParseAddrPort("[::ffff:10.1.2.3]:1"), Local: netip.MustParseAddrPort("[::ffff:10.9.8.7]:2")}).MarshalBinary(); err == nil {
		t.Error("a key of IPv4-mapped addresses was accepted")
	}
	k6 := LegKey{Peer: netip.MustParseAddrPort("[2001:db8::1]:40000"), Local: netip.MustParseAddrPort("[2001:db8::2]:8080")}
	b6, err := k6.MarshalBinary()
	if err != nil || b6[0] != 0x20 || b6[15] != 1 || b6[31] != 2 || b6[36] != 10 || k2.UnmarshalBinary(b6) != nil || k2 != k6 {
		t.Errorf("IPv6 key: % x, decoded %v, %v", b6, k2, err)
	}
	bad := bytes.Clone(b)
	bad[36] = 0 // family
	if err := k2.UnmarshalBinary(bad); err == nil {
		t.Error("a key of family 0 was accepted")
	}

	// A command of no leg has an all-zero key; one of a leg has the key.
	mb, err := (&CtlMsg{Op: CtlRetireIdle, Worker: 5}).MarshalBinary()
	if err != nil || len(mb) != CtlMsgSize || !bytes.Equal(mb[16:16+LegKeySize], make([]byte, LegKeySize)) {
		t.Errorf("ctl msg without a key: % x %v", mb, err)
	}
	m := CtlMsg{Op: CtlPark, Worker: 1, MinIdleNs: 1 << 33, Key: k}
	mb, _ = m.MarshalBinary()
	var m2 CtlMsg
	m2.decode(mb)
	if m2 != m || !bytes.Equal(mb[16:16+LegKeySize], b) {
		t.Errorf("ctl msg round trip: %+v", m2)
	}

	// Events: the key of a pool-low event is zero.
	ev := Event{Type: EventLegClosed, State: LegBound, Key: k, Worker: 2, Kind: LegClient, Pin: PinStateful, PeerHi: 1,
		SndNxt: 2, PeerTSval: 3, OurTSval: 4, PeerWScale: 5, OurWScale: 6, Opts: OptTS, RxFlags: RxRST, PeerMSS: 1400}
	eb := make([]byte, EventSize)
	ev.encode(eb)
	var ev2 Event
	if err := ev2.UnmarshalBinary(eb); err != nil || ev2 != ev {
		t.Errorf("event round trip: %+v %v", ev2, err)
	}
	low := Event{Type: EventPoolLow, Worker: 3}
	low.encode(eb)
	if err := ev2.UnmarshalBinary(eb); err != nil || ev2 != low {
		t.Errorf("pool-low event: %+v %v", ev2, err)
	}

	// The config: the listen address with its family (byte 32); the zero
	// Addr (any address of either family) is all zero, family 0; 0.0.0.0
	// and :: keep theirs (any address of that family).
	c := Config{ListenAddr: netip.MustParseAddr("192.0.2.1"), ListenPort: 8080, OurWScale: 7, Flags: ConfigRouted,
		OurMSS: 1400, Policy: PolicyLeast, Protocol: ProtocolRESP, SchedLen: 12}
	cb, err := c.MarshalBinary()
	var c2 Config
	if err != nil || c2.UnmarshalBinary(cb) != nil || c2 != c || cb[0] != 192 || cb[3] != 1 || cb[16] != 0x1f || cb[17] != 0x90 || cb[32] != 2 {
		t.Errorf("config round trip: %+v % x %v", c2, cb, err)
	}
	for _, tc := range []struct {
		a      netip.Addr
		family byte
	}{{netip.Addr{}, 0}, {netip.IPv4Unspecified(), 2}, {netip.IPv6Unspecified(), 10}, {netip.MustParseAddr("2001:db8::1"), 10}} {
		c.ListenAddr = tc.a
		cb, err = c.MarshalBinary()
		if err != nil || c2.UnmarshalBinary(cb) != nil || c2.ListenAddr != tc.a || cb[32] != tc.family ||
			(tc.a.IsUnspecified() || !tc.a.IsValid()) != bytes.Equal(cb[:16], make([]byte, 16)) {
			t.Errorf("config with listen address %v: % x, decoded %v, %v", tc.a, cb, c2.ListenAddr, err)
		}
	}
	c.ListenAddr = netip.MustParseAddr("::ffff:192.0.2.1")
	if _, err := c.MarshalBinary(); err == nil {
		t.Error("an IPv4-mapped listen address was accepted")
	}

	eb2, err := Endpoint(netip.MustParseAddrPort("10.0.0.1:4171")).MarshalBinary()
	if err != nil || !bytes.Equal(eb2, []byte{10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x4b, 2, 0}) {
		t.Errorf("endpoint bytes % x %v", eb2, err)
	}

	wc := WorkerCfg{Flags: WorkerDrain, Trim: -3, Weight: 2, Low: 4, CoolUs: 5}
	wb, _ := wc.MarshalBinary()
	var wc2 WorkerCfg
	if err := wc2.UnmarshalBinary(wb); err != nil || wc2 != wc {
		t.Errorf("worker cfg round trip: %+v %v", wc2, err)
	}
	load := WorkerLoad{Bound: -1, Idle: 2, Cooling: 3}
	lob := make([]byte, WorkerLoadSize)
	load.encode(lob)
	var load2 WorkerLoad
	if err := load2.UnmarshalBinary(lob); err != nil || load2 != load {
		t.Errorf("worker load round trip: %+v %v", load2, err)
	}
	ws := WorkerStats{Binds: 1, Releases: 2, Requests: 3, BytesIn: 4, BytesOut: 5}
	wsb := make([]byte, WorkerStatsSize)
	ws.encode(wsb)
	var sum WorkerStats
	sum.AddPerCPU(wsb)
	sum.AddPerCPU(wsb)
	if sum != (WorkerStats{2, 4, 6, 8, 10}) {
		t.Errorf("worker stats summed over two CPUs: %+v", sum)
	}
	h := Handshake{PeerISN: 1, PeerTSval: 2, PeerMSS: 1460, PeerWScale: NoWScale, Opts: OptSACK, OurISN: 3, Ns: 4}
	hb := make([]byte, HandshakeSize)
	h.encode(hb)
	var h2 Handshake
	if err := h2.UnmarshalBinary(hb); err != nil || h2 != h {
		t.Errorf("handshake round trip: %+v %v", h2, err)
	}
	ce := CoolingEntry{Key: k, DueNs: 1 << 50}
	cob, _ := ce.MarshalBinary()
	var ce2 CoolingEntry
	if err := ce2.UnmarshalBinary(cob); err != nil || ce2 != ce {
		t.Errorf("cooling entry round trip: %+v %v", ce2, err)
	}
}

// TestEncodeClearsPadding encodes into buffers full of 0xff: the padding
// members of the C structs (per the object's BTF) must come out zero, as
// the data plane's own writes leave them.
func TestEncodeClearsPadding(t *testing.T) {
	spec, err := Spec()
	if err != nil {
		t.Fatal(err)
	}
	k := LegKey{Peer: netip.MustParseAddrPort("10.1.2.3:40000"), Local: netip.MustParseAddrPort("10.9.8.7:8080")}
	for _, c := range []struct {
		name   string
		size   int
		encode func([]byte)
	}{
		{"leg_key", LegKeySize, k.encode},
		{"leg", LegSize, (&Leg{}).encode},
		{"endpoint", EndpointSize, (*Endpoint)(&k.Peer).encode},
		{"worker_cfg", WorkerCfgSize, (&WorkerCfg{}).encode},
		{"xlb_event", EventSize, (&Event{Key: k}).encode},
	} {
		l, err := spec.BTF.StructLayout(c.name)
		if err != nil {
			t.Fatal(err)
		}
		b := bytes.Repeat([]byte{0xff}, c.size)
		c.encode(b)
		pads := 0
		for _, m := range l.Members {
			if strings.HasPrefix(m.Name, "pad") {
				pads++
				if z := b[m.Offset : m.Offset+m.Size]; !bytes.Equal(z, make([]byte, m.Size)) {
					t.Errorf("struct %s: %s is % x", c.name, m.Name, z)
				}
			}
		}
		if pads == 0 {
			t.Errorf("struct %s: no padding member", c.name)
		}
	}
}

// BenchmarkLegDecode is the cost per leg of a walk of the leg table
// (ForEachLeg): a key and a leg decoded.
func BenchmarkLegDecode(b *testing.B) {
	kb, _ := LegKey{Peer: netip.MustParseAddrPort("10.1.2.3:40000"), Local: netip.MustParseAddrPort("10.9.8.7:8080")}.MarshalBinary()
	lb, _ := (&Leg{Kind: LegClient, State: LegBound, PeerHi: 1, LastNs: 2}).MarshalBinary()
	b.ReportAllocs()
	for b.Loop() {
		var k LegKey
		var l Leg
		if k.UnmarshalBinary(kb) != nil || l.UnmarshalBinary(lb) != nil {
			b.Fatal("decode")
		}
	}
}
