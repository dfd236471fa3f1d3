package testkit

import (
	"encoding/binary"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xlb-lb/xlb/testnet"
)

// sh runs script under sh as a Proc in a process group of its own (as
// testnet.NS.Command does), without a namespace.
func sh(t *testing.T, script string) *Proc {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p, err := SpawnCmd(t, "sh", cmd)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProcLines(t *testing.T) {
	p := sh(t, "echo one ready; echo two ready; echo other; exec sleep 30")
	p.WaitLines("ready", 2, 5*time.Second)
	if err := p.AwaitLines("other", 1, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := p.Count("ready"); n != 2 {
		t.Errorf("Count(ready) = %d, want 2", n)
	}
	if got, want := p.Output(), "one ready\ntwo ready\nother"; got != want {
		t.Errorf("Output() = %q, want %q", got, want)
	}
	if p.Args[0] != "sh" || p.Name != "sh" {
		t.Errorf("Args %q, Name %q", p.Args, p.Name)
	}
	// exec sleep: SIGINT ends it with that signal, an exit error.
	err := p.StopErr()
	if err == nil || !strings.Contains(err.Error(), "interrupt") {
		t.Errorf("StopErr() = %v, want the interrupt", err)
	}
	if p.Err() != err {
		t.Errorf("Err() = %v after StopErr() = %v", p.Err(), err)
	}
}

func TestProcAwaitExited(t *testing.T) {
	p := sh(t, "echo hello; exit 3")
	start := time.Now()
	err := p.AwaitLines("never", 1, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "exited (exit status 3) before printing") || !strings.Contains(err.Error(), "hello") {
		t.Errorf("AwaitLines on an exited process: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("AwaitLines waited %v for a process that exited", d)
	}
	if !p.Exited(time.Second) {
		t.Error("Exited: false after the exit")
	}
}

func TestProcAwaitTimeout(t *testing.T) {
	p := sh(t, "exec sleep 30")
	start := time.Now()
	err := p.AwaitLines("never", 1, 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not print") {
		t.Errorf("AwaitLines: %v, want a timeout", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 5*time.Second {
		t.Errorf("AwaitLines returned after %v, want the 200ms timeout", d)
	}
	if p.Exited(50 * time.Millisecond) {
		t.Error("Exited: true for a running process")
	}
}

// TestProcKillGroup: Kill ends the process's children too (a child holding
// the output pipe would otherwise keep Done open).
func TestProcKillGroup(t *testing.T) {
	p := sh(t, "sleep 30 & echo child; wait")
	p.WaitLines("child", 1, 5*time.Second)
	done := make(chan struct{})
	go func() { p.Kill(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Kill did not return within 10s")
	}
	select {
	case <-p.Done():
	default:
		t.Error("Done open after Kill")
	}
}

func TestVerbose(t *testing.T) {
	t.Setenv(VerboseEnv, "")
	if Verbose() {
		t.Error("Verbose() with XLB_TEST_VERBOSE empty")
	}
	t.Setenv(VerboseEnv, "1")
	if !Verbose() {
		t.Error("not Verbose() with XLB_TEST_VERBOSE=1")
	}
}

func TestSameLegs(t *testing.T) {
	for _, tc := range []struct {
		a, b map[string]int
		same bool
	}{
		{nil, nil, true},
		{map[string]int{"worker/idle": 0}, nil, true},
		{map[string]int{"worker/idle": 3}, map[string]int{"worker/idle": 3, "client/bound": 0}, true},
		{map[string]int{"worker/idle": 3}, map[string]int{"worker/idle": 4}, false},
		{map[string]int{"worker/idle": 3}, map[string]int{"worker/idle": 3, "client/bound": 1}, false},
	} {
		if SameLegs(tc.a, tc.b) != tc.same || SameLegs(tc.b, tc.a) != tc.same {
			t.Errorf("SameLegs(%v, %v) != %v", tc.a, tc.b, tc.same)
		}
	}
}

func TestOnlyIdleWorkers(t *testing.T) {
	for _, tc := range []struct {
		legs map[string]int
		want bool
	}{
		{nil, false},
		{map[string]int{"worker/idle": 0}, false},
		{map[string]int{"worker/idle": 4, "client/bound": 0}, true},
		{map[string]int{"worker/idle": 4, "worker/cooling": 1}, false},
		{map[string]int{"worker/idle": 4, "bindings": 1}, false},
	} {
		if got := OnlyIdleWorkers(tc.legs); got != tc.want {
			t.Errorf("OnlyIdleWorkers(%v) = %v", tc.legs, got)
		}
	}
}

func TestStable(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	a, b := map[string]int{"worker/idle": 4}, map[string]int{"worker/idle": 5}
	s := NewStable(3, 300*time.Millisecond)
	steps := []struct {
		legs map[string]int
		ok   bool
		ms   int
		want bool
	}{
		{a, true, 0, false},
		{a, true, 100, false},
		{b, true, 200, false}, // changed: starts over
		{b, false, 300, false},
		{b, true, 400, false}, // ok again: starts over
		{b, true, 500, false},
		{b, true, 600, false}, // three reads, 200ms
		{b, true, 700, true},  // four reads, 300ms
		{a, true, 800, false},
	}
	for i, st := range steps {
		if got := s.Next(st.legs, st.ok, at(st.ms)); got != st.want {
			t.Errorf("step %d (%v ok=%v at %dms): %v, want %v", i, st.legs, st.ok, st.ms, got, st.want)
		}
	}
	// Enough time but too few reads.
	s = NewStable(3, 0)
	if s.Next(a, true, at(0)) || s.Next(a, true, at(5000)) || !s.Next(a, true, at(5001)) {
		t.Error("NewStable(3, 0): want stable at the third read")
	}
}

// TestSegment checks the built segment field by field and its checksum
// independently: summed with the pseudo-header, a right checksum folds to
// 0xffff; a BadCsum one does not.
func TestSegment(t *testing.T) {
	s := Segment{
		Src: netip.MustParseAddr("10.1.0.2"), Dst: netip.MustParseAddr("10.1.0.1"),
		SPort: 40000, DPort: 8080, Seq: 0xfffffff0, Ack: 7, Flags: FlagPSH | FlagACK, Window: 1024,
		Options: []byte{1, 1, 1, 0}, Payload: []byte("hello"),
	}
	pkt := s.IPv4()
	if len(pkt) != 20+20+4+5 || pkt[0] != 0x45 || pkt[9] != unix.IPPROTO_TCP || binary.BigEndian.Uint16(pkt[2:]) != uint16(len(pkt)) {
		t.Fatalf("IPv4 header % x", pkt[:20])
	}
	if netip.AddrFrom4([4]byte(pkt[12:16])) != s.Src || netip.AddrFrom4([4]byte(pkt[16:20])) != s.Dst {
		t.Errorf("addresses % x", pkt[12:20])
	}
	seg := pkt[20:]
	if binary.BigEndian.Uint16(seg[0:]) != 40000 || binary.BigEndian.Uint16(seg[2:]) != 8080 ||
		binary.BigEndian.Uint32(seg[4:]) != 0xfffffff0 || binary.BigEndian.Uint32(seg[8:]) != 7 ||
		seg[12] != 6<<4 || seg[13] != 0x18 || binary.BigEndian.Uint16(seg[14:]) != 1024 ||
		string(seg[20:24]) != "\x01\x01\x01\x00" || string(seg[24:]) != "hello" {
		t.Errorf("TCP header % x", seg)
	}
	if !foldsToOnes(s.Src, s.Dst, seg) {
		t.Errorf("checksum %#04x does not verify", binary.BigEndian.Uint16(seg[16:]))
	}
	s.BadCsum = true
	if bad := s.TCP(); foldsToOnes(s.Src, s.Dst, bad) {
		t.Error("a BadCsum segment verifies")
	}
	// An odd length (the last byte padded).
	s.BadCsum, s.Options, s.Payload = false, nil, []byte("odd")
	if !foldsToOnes(s.Src, s.Dst, s.TCP()) {
		t.Error("checksum of an odd-length segment does not verify")
	}
}

// foldsToOnes is the receiver's check of a TCP checksum (RFC 1071), written
// apart from TCPChecksum: the 16-bit one's complement sum of the
// pseudo-header and the segment, checksum included, is 0xffff.
func foldsToOnes(src, dst netip.Addr, seg []byte) bool {
	b := append(append(append([]byte{}, src.AsSlice()...), dst.AsSlice()...), 0, unix.IPPROTO_TCP, byte(len(seg)>>8), byte(len(seg)))
	b = append(b, seg...)
	if len(b)%2 == 1 {
		b = append(b, 0)
	}
	var sum uint64
	for i := 0; i < len(b); i += 2 {
		sum += uint64(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return sum == 0xffff
}

// TestRawIPv4 sends a segment through RawIPv4 in a namespace and reads it
// back whole from a raw TCP socket there.
func TestRawIPv4(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	s := Segment{Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddr("127.0.0.1"),
		SPort: 1234, DPort: 4321, Seq: 1, Flags: FlagSYN, Window: 1000, Payload: []byte("x")}
	// The receiving socket is made in ns (a socket stays in the namespace
	// it was made in).
	var fd int
	err := ns.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	if err := RawIPv4(ns, func(send func([]byte) error) error { return send(s.IPv4()) }); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	for i := 0; i < 10; i++ { // the kernel's own answer (a RST) may come too
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatalf("reading the segment back: %v", err)
		}
		if ihl := int(buf[0]&0xf) * 4; n > ihl && string(buf[ihl:n]) == string(s.TCP()) {
			return
		}
	}
	t.Fatal("the segment sent never arrived")
}
