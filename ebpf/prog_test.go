package ebpf

import (
	"encoding/binary"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

// XDP verdicts and xlb_stats indexes (kern/structs.h) the tests check.
const (
	xdpDrop = 1
	xdpPass = 2

	cntPass      = 0
	cntMalformed = 7
	cntTCP       = 8
)

func loadXLB(t *testing.T, opts *CollectionOptions) *Collection {
	t.Helper()
	requireRoot(t)
	return loadCollection(t, xlbObject(t), opts)
}

// tcpPacket is Ethernet + IPv4 (valid checksum) + TCP SYN.
func tcpPacket() []byte {
	pkt := make([]byte, 14+20+20)
	copy(pkt[0:6], []byte{0x02, 0, 0, 0, 0, 1})
	copy(pkt[6:12], []byte{0x02, 0, 0, 0, 0, 2})
	binary.BigEndian.PutUint16(pkt[12:], 0x0800)
	ip := pkt[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[8] = 64
	ip[9] = 6 // TCP
	copy(ip[12:16], []byte{10, 0, 0, 1})
	copy(ip[16:20], []byte{10, 0, 0, 2})
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	tcp := pkt[34:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 80)
	binary.BigEndian.PutUint32(tcp[4:], 1000)
	tcp[12] = 5 << 4
	tcp[13] = 0x02 // SYN
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	return pkt
}

func TestXLBCollectionTestRun(t *testing.T) {
	coll := loadXLB(t, nil)
	prog, stats := coll.Programs["xlb_xdp"], coll.Maps["xlb_stats"]
	if prog == nil || stats == nil {
		t.Fatalf("collection: programs %v maps %v", sortedKeys(coll.Programs), sortedKeys(coll.Maps))
	}
	counter := func(idx uint32) uint64 {
		t.Helper()
		v, err := stats.SumPerCPUUint64(Uint32Key(idx))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	// Three runs of one repeat each: a run with Repeat > 1 that a signal
	// interrupts returns EINTR after some of its repeats, and bpf() tries
	// it again, so the counters could not be exact.
	pkt := tcpPacket()
	var res *TestRunResult
	var err error
	for range 3 {
		if res, err = prog.TestRun(&TestRunOptions{Data: pkt}); err != nil {
			t.Fatal(err)
		}
	}
	if res.Return != xdpPass {
		t.Errorf("TCP packet: verdict %d, want XDP_PASS", res.Return)
	}
	if string(res.Data) != string(pkt) {
		t.Errorf("TCP packet changed: %x", res.Data)
	}
	if p, tcp := counter(cntPass), counter(cntTCP); p != 3 || tcp != 3 {
		t.Errorf("after 3 runs: pass %d tcp %d, want 3 and 3", p, tcp)
	}

	// BPF_PROG_TEST_RUN refuses packets shorter than an Ethernet header
	// (even after XDP metadata, on 6.18), so a 5-byte packet cannot be run.
	// The shortest malformed packet: an Ethernet header announcing IPv4 and
	// nothing after it.
	res, err = prog.TestRun(&TestRunOptions{Data: tcpPacket()[:14]})
	if err != nil {
		t.Fatal(err)
	}
	if res.Return != xdpPass {
		t.Errorf("truncated IPv4 packet: verdict %d, want XDP_PASS", res.Return)
	}
	if m, p := counter(cntMalformed), counter(cntPass); m != 1 || p != 4 {
		t.Errorf("after truncated packet: malformed %d pass %d, want 1 and 4", m, p)
	}
	// The TCP packet again, after 12 bytes of XDP metadata: struct xdp_md in
	// Context says where the packet starts (data) and ends (data_end).
	const metaLen = 12
	withMeta := append(make([]byte, metaLen), tcpPacket()...)
	xdpMD := make([]byte, 24) // struct xdp_md: six __u32
	binary.NativeEndian.PutUint32(xdpMD[0:], metaLen)
	binary.NativeEndian.PutUint32(xdpMD[4:], uint32(len(withMeta)))
	if res, err = prog.TestRun(&TestRunOptions{Data: withMeta, Context: xdpMD}); err != nil {
		t.Fatal(err)
	}
	if tcp := counter(cntTCP); res.Return != xdpPass || tcp != 4 {
		t.Errorf("packet after metadata: verdict %d tcp %d, want XDP_PASS and 4", res.Return, tcp)
	}
	if _, err := prog.TestRun(&TestRunOptions{Data: []byte{1, 2, 3, 4, 5}}); err == nil ||
		!strings.Contains(err.Error(), "at least 14 bytes") {
		t.Errorf("5 bytes without metadata: %v", err)
	}

	info, err := prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	statsID, err := stats.ID()
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "xlb_xdp" || info.Type != XDP || !slices.Contains(info.MapIDs, statsID) ||
		len(info.MapIDs) == 0 || len(info.MapIDs) > len(coll.Maps) || info.ID == 0 {
		t.Errorf("info %+v, want xlb_xdp XDP with at most %d map IDs including %d", info, len(coll.Maps), statsID)
	}
	same, err := NewMapFromID(statsID)
	if err != nil {
		t.Fatal(err)
	}
	defer same.Close()
	if same.Name() != "xlb_stats" || same.Type() != PerCPUArray {
		t.Errorf("map from id: %+v", same.Spec())
	}
	if v, err := same.SumPerCPUUint64(Uint32Key(cntTCP)); err != nil || v != 4 {
		t.Errorf("tcp counter through the map from id: %d, %v", v, err)
	}
	p2, err := NewProgramFromID(info.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if p2.Name() != "xlb_xdp" || p2.Type() != XDP {
		t.Errorf("program from id: %s %s", p2.Name(), p2.Type())
	}
}

func TestCollectionReplaceMaps(t *testing.T) {
	requireRoot(t)
	spec, err := LoadCollectionSpec(xlbObject(t))
	if err != nil {
		t.Fatal(err)
	}
	want := *spec.Maps["xlb_stats"]
	stats, err := NewMap(&want)
	if err != nil {
		t.Fatal(err)
	}
	defer stats.Close()
	coll := loadXLB(t, &CollectionOptions{ReplaceMaps: map[string]*Map{"xlb_stats": stats}})
	if coll.Maps["xlb_stats"] != stats {
		t.Fatal("collection did not use the replacement map")
	}
	if _, err := coll.Programs["xlb_xdp"].TestRun(&TestRunOptions{Data: tcpPacket()}); err != nil {
		t.Fatal(err)
	}
	if v, err := stats.SumPerCPUUint64(Uint32Key(cntTCP)); err != nil || v != 1 {
		t.Errorf("replacement map counter: %d, %v", v, err)
	}
	coll.Close()
	if stats.FD() < 0 {
		t.Fatal("Collection.Close closed a replacement map")
	}

	wrong := want
	wrong.ValueSize = 4
	bad, err := NewMap(&wrong)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	_, err = NewCollection(spec, &CollectionOptions{ReplaceMaps: map[string]*Map{"xlb_stats": bad}})
	if err == nil || !strings.Contains(err.Error(), "replace map xlb_stats") {
		t.Fatalf("incompatible replacement: %v", err)
	}
	_, err = NewCollection(spec, &CollectionOptions{ReplaceMaps: map[string]*Map{"nope": bad}})
	if err == nil || !strings.Contains(err.Error(), "no such map") {
		t.Fatalf("replacement of an unknown map: %v", err)
	}
}

func TestVerifierRejects(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name  string
		typ   ProgType
		insns []Instruction
		want  string
	}{
		{"exit without r0", SocketFilter, []Instruction{Exit()}, "R0 !read_ok"},
		// r2 = ctx->data; r0 = *(u32 *)r2 without checking data_end.
		{"unchecked packet read", XDP, []Instruction{LoadMem32(R2, R1, 0), LoadMem32(R0, R2, 0), Exit()}, "invalid access to packet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadProgram(&ProgramSpec{Name: "bad_prog", Type: tt.typ, Instructions: tt.insns, License: "GPL"})
			var ve *VerifierError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v (%T), want *VerifierError", err, err)
			}
			if !strings.Contains(ve.Log, tt.want) || !strings.Contains(ve.Error(), tt.want) {
				t.Fatalf("log %q / error %q lacks %q", ve.Log, ve.Error(), tt.want)
			}
			if !strings.HasPrefix(ve.Error(), "verifier rejected program bad_prog") || ve.Errno == nil {
				t.Errorf("error %q, errno %v", ve.Error(), ve.Errno)
			}
		})
	}
}

func TestLoadProgramAndTestRun(t *testing.T) {
	requireRoot(t)
	p, err := LoadProgram(&ProgramSpec{
		Name: "drop_all", Type: XDP, License: "GPL",
		Instructions: []Instruction{Mov64Imm(R0, xdpDrop), Exit()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	res, err := p.TestRun(&TestRunOptions{Data: tcpPacket(), Repeat: 100})
	if err != nil {
		t.Fatal(err)
	}
	if res.Return != xdpDrop || res.Duration < 0 {
		t.Errorf("result %+v", res)
	}
	if _, err := p.TestRun(&TestRunOptions{Data: tcpPacket(), DataOutCap: 10}); err == nil {
		t.Error("output larger than DataOutCap: no error")
	}
	if _, err := LoadProgram(&ProgramSpec{Name: "empty", Type: XDP, License: "GPL"}); err == nil {
		t.Error("empty program loaded")
	}
}

// Without privileges (and with unprivileged BPF disabled, the default), a
// load and a map creation say which privilege is missing.
func TestUnprivilegedErrors(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("checks the errors of an unprivileged user; runs when not root")
	}
	if b, err := os.ReadFile("/proc/sys/kernel/unprivileged_bpf_disabled"); err != nil || strings.TrimSpace(string(b)) == "0" {
		t.Skip("unprivileged BPF is enabled on this host")
	}
	_, err := LoadProgram(&ProgramSpec{Name: "p", Type: SocketFilter, License: "GPL",
		Instructions: []Instruction{Mov64Imm(R0, 0), Exit()}})
	if !errors.Is(err, ErrNotPermitted) || !strings.Contains(err.Error(), "CAP_BPF") {
		t.Errorf("unprivileged load: %v", err)
	}
	_, err = NewMap(&MapSpec{Name: "m", Type: Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if !errors.Is(err, ErrNotPermitted) {
		t.Errorf("unprivileged map create: %v", err)
	}
}

// A rejected program whose log is larger than the first log buffer: the
// buffer grows and the error keeps the end of the log.
func TestVerifierLogGrows(t *testing.T) {
	requireRoot(t)
	var insns []Instruction
	for range 8000 {
		insns = append(insns, Mov64Imm(R0, 0))
	}
	insns = append(insns, LoadMem32(R0, R3, 0), Exit()) // r3 is never set
	_, err := LoadProgram(&ProgramSpec{Name: "long_bad", Type: SocketFilter, Instructions: insns, License: "GPL"})
	var ve *VerifierError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v, want *VerifierError", err)
	}
	if len(ve.Log) <= verifierLogMinSize || ve.Truncated || !strings.Contains(ve.Error(), "R3 !read_ok") {
		t.Fatalf("log of %d bytes (truncated %v), error %q", len(ve.Log), ve.Truncated, ve.Error())
	}
	t.Logf("%d-byte log; %s", len(ve.Log), ve.Error())
}
