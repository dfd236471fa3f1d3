package kern

import (
	"debug/elf"
	"encoding/binary"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/xlb-lb/xlb/ebpf"
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

// layoutFacts are the sizes, offsets and enum values of structs.h the Go
// mirror relies on, in the order of bpf/layout.c: "sizeof S", "S.member" or
// the constant's name.
var layoutFacts = []struct {
	name string
	v    uint32
}{
	{"sizeof leg_key", LegKeySize}, {"leg_key.local_addr", 16}, {"leg_key.peer_port", 32}, {"leg_key.local_port", 34}, {"leg_key.family", 36},
	{"sizeof leg", LegSize}, {"leg.worker", 8}, {"leg.win_bound", 12}, {"leg.peer_hi", 16}, {"leg.requests", 40},
	{"leg.snd_nxt", 44}, {"leg.snd_win", 52}, {"leg.state", 56}, {"leg.last_ns", 72},
	{"sizeof binding", BindingSize}, {"binding.seq_off", 40}, {"binding.tsecr_off", 52}, {"binding.in_wscale", 56},
	{"binding.flags", 58}, {"binding.worker", 60}, {"binding.ifindex", 64},
	{"sizeof worker_stats", WorkerStatsSize}, {"worker_stats.requests", 16}, {"worker_stats.bytes_out", 32},
	{"sizeof handshake", HandshakeSize}, {"handshake.peer_mss", 8}, {"handshake.peer_wscale", 10}, {"handshake.our_isn", 12}, {"handshake.ns", 16},
	{"sizeof endpoint", EndpointSize}, {"endpoint.port", 16}, {"endpoint.family", 18},
	{"sizeof worker_info", WorkerInfoSize},
	{"sizeof xlb_config", ConfigSize}, {"xlb_config.listen_port", 16}, {"xlb_config.our_wscale", 18}, {"xlb_config.our_mss", 20},
	{"sizeof xlb_event", EventSize}, {"xlb_event.key", 8}, {"xlb_event.worker", 48}, {"xlb_event.peer_hi", 56},
	{"xlb_event.peer_wscale", 72}, {"xlb_event.peer_mss", 76},
	{"LEG_CLIENT", uint32(LegClient)}, {"LEG_WORKER", uint32(LegWorker)}, {"LEG_IDLE", uint32(LegIdle)},
	{"LEG_BOUND", uint32(LegBound)}, {"LEG_CLOSING", uint32(LegClosing)}, {"LEG_DEAD", uint32(LegDead)}, {"LEG_PARKED", uint32(LegParked)},
	{"LEG_OPT_TS", OptTS}, {"LEG_OPT_SACK", OptSACK}, {"LEG_OPT_WSCALE", OptWScale}, {"LEG_OPT_PEER_TS", OptPeerTS},
	{"LEG_RX_FIN", RxFIN}, {"LEG_RX_RST", RxRST},
	{"BIND_TO_CLIENT", BindToClient}, {"WORKER_DRAIN", WorkerDrain}, {"CFG_ROUTED", ConfigRouted},
	{"EV_CLIENT_LEG", uint32(EventClientLeg)}, {"EV_LEG_CLOSED", uint32(EventLegClosed)}, {"EV_POOL_EMPTY", uint32(EventPoolEmpty)},
	{"sizeof worker_cfg", WorkerCfgSize}, {"worker_cfg.trim", 4}, {"worker_cfg.weight", 8},
	{"xlb_config.policy", 22}, {"xlb_config.sched_len", 24},
	{"POLICY_JIQ", uint32(PolicyJIQ)}, {"POLICY_RR", uint32(PolicyRR)}, {"POLICY_LEAST", uint32(PolicyLeast)}, {"POLICY_STICKY", uint32(PolicySticky)},
	{"sizeof ctl_msg", CtlMsgSize}, {"ctl_msg.min_idle_ns", 8}, {"ctl_msg.key", 16}, {"CTL_PARK", uint32(CtlPark)}, {"CTL_RELEASE", uint32(CtlRelease)}, {"CTL_UNPARK", uint32(CtlUnpark)}, {"CTL_RETIRE_IDLE", uint32(CtlRetireIdle)}, {"ctl_msg.worker", 4},
	{"sizeof worker_load", WorkerLoadSize},
	{"leg.sent_hi", 60}, {"leg.pin", 64}, {"leg.proto", 68}, {"leg.tail", 69}, {"binding.proto", 59}, {"xlb_config.protocol", 23},
	{"PROTO_NONE", uint32(ProtoNone)}, {"PROTO_HTTP", uint32(ProtoHTTP)}, {"PROTO_RESP", uint32(ProtoRESP)},
	{"PROTO_MEMCACHE", uint32(ProtoMemcache)}, {"PROTO_OPAQUE", uint32(ProtoOpaque)},
	{"PIN_TLS", uint32(PinTLS)}, {"PIN_UPGRADE", uint32(PinUpgrade)}, {"PIN_INTERIM", uint32(PinInterim)},
	{"PIN_PIPELINED", uint32(PinPipelined)}, {"PIN_NOT_MSG", uint32(PinNotMsg)}, {"PIN_RAW", uint32(PinRaw)},
	{"PIN_UNKNOWN", uint32(PinUnknown)}, {"PIN_STATEFUL", uint32(PinStateful)},
	{"CFG_PROTO_AUTO", uint32(ProtocolAuto)}, {"CFG_PROTO_HTTP", uint32(ProtocolHTTP)}, {"CFG_PROTO_RESP", uint32(ProtocolRESP)},
	{"CFG_PROTO_MEMCACHE", uint32(ProtocolMemcache)}, {"CFG_PROTO_RAW", uint32(ProtocolRaw)}, {"TAIL_PSH", TailPSH}, {"TAIL_CRLF", TailCRLF},
	{"XLB_CNT_PIN_TLS", uint32(CounterPinTLS)}, {"XLB_CNT_STAY_TAIL", uint32(CounterStayTail)}, {"XLB_CNT_MAX", uint32(CounterMax)},
}

// TestLayoutsMatchC compiles bpf/layout.c, which lists sizes, offsets and
// enum values of structs.h, and compares them with the Go mirror.
func TestLayoutsMatchC(t *testing.T) {
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Fatalf("clang not found (a build dependency; run make deps): %v", err)
	}
	obj := filepath.Join(t.TempDir(), "layout.o")
	multiarch := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]
	if out, err := exec.Command(clang, "-O2", "-target", "bpf", "-I/usr/include/"+multiarch,
		"-c", "bpf/layout.c", "-o", obj).CombinedOutput(); err != nil {
		t.Fatalf("clang: %v\n%s", err, out)
	}
	f, err := elf.Open(obj)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	var got []uint32
	for _, s := range syms {
		if s.Name != "xlb_layout" {
			continue
		}
		sec := f.Sections[s.Section]
		data, err := sec.Data()
		if err != nil {
			t.Fatal(err)
		}
		raw := data[s.Value : s.Value+s.Size]
		for i := 0; i+4 <= len(raw); i += 4 {
			got = append(got, binary.LittleEndian.Uint32(raw[i:]))
		}
	}
	want := layoutFacts
	if len(got) != len(want) {
		t.Fatalf("layout.c has %d entries, the test %d: keep them in the same order", len(got), len(want))
	}
	for i, w := range want {
		if got[i] != w.v {
			t.Errorf("%s: C says %d, Go says %d", w.name, got[i], w.v)
		}
	}
}

// TestLayoutsFromBTF reads the sizes and offsets of layoutFacts from BTF
// instead of layout.c. The data plane's object has no BTF for these structs
// (clang writes BTF for the types of global variables and of the arguments
// of functions that are not inlined; see ebpf's TestXLBObjectLayouts), so
// this compiles structs.h with one global pointer per struct, the anchor
// that puts a type into BTF. The same anchors in bpf/ (or BTF-defined maps
// naming their key and value types) would let this test read the real
// object and retire layout.c and its hand-kept order.
func TestLayoutsFromBTF(t *testing.T) {
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Fatalf("clang not found (a build dependency; run make deps): %v", err)
	}
	structs := map[string]bool{}
	for _, f := range layoutFacts {
		if s, ok := strings.CutPrefix(f.name, "sizeof "); ok {
			structs[s] = true
		}
	}
	src := "#include \"structs.h\"\n"
	for s := range structs {
		src += "struct " + s + " *anchor_" + s + ";\n"
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "anchors.c"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	multiarch := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]
	obj := filepath.Join(dir, "anchors.o")
	if out, err := exec.Command(clang, "-O2", "-g", "-target", "bpf", "-I/usr/include/"+multiarch, "-Ibpf",
		"-c", filepath.Join(dir, "anchors.c"), "-o", obj).CombinedOutput(); err != nil {
		t.Fatalf("clang: %v\n%s", err, out)
	}
	f, err := elf.Open(obj)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	raw, err := f.Section(".BTF").Data()
	if err != nil {
		t.Fatal(err)
	}
	btf, err := ebpf.ParseBTF(raw)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, fact := range layoutFacts {
		if s, ok := strings.CutPrefix(fact.name, "sizeof "); ok {
			l, err := btf.StructLayout(s)
			if err != nil {
				t.Errorf("%s: %v", fact.name, err)
			} else if l.Size != fact.v {
				t.Errorf("%s: BTF says %d, Go says %d", fact.name, l.Size, fact.v)
			}
			checked++
			continue
		}
		s, member, ok := strings.Cut(fact.name, ".")
		if !ok {
			continue // an enum constant: in BTF only if a type uses the enum
		}
		l, err := btf.StructLayout(s)
		if err != nil {
			t.Errorf("%s: %v", fact.name, err)
			continue
		}
		m, ok := l.Member(member)
		if !ok {
			t.Errorf("%s: no such member in BTF", fact.name)
		} else if m.Offset != fact.v {
			t.Errorf("%s: BTF says offset %d, Go says %d", fact.name, m.Offset, fact.v)
		}
		checked++
	}
	if checked < len(structs) {
		t.Fatalf("checked %d facts", checked)
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
		t.Error("an IPv6 key was accepted")
	}
}
