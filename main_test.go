package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/testnet"
	"github.com/xlb-lb/xlb/xdp"
	"golang.org/x/sys/unix"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestCLIUsage(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		code     int
		out, err string // substrings
	}{
		{nil, exitUsage, "", "Commands:"},
		{[]string{"--help"}, exitOK, "Exit codes: 0 ok, 1 runtime failure, 2 bad usage", ""},
		{[]string{"bogus"}, exitUsage, "", `unknown command "bogus"`},
		{[]string{"version"}, exitOK, "xlb ", ""},
		{[]string{"--version"}, exitOK, "xlb ", ""},
		{[]string{"version", "extra"}, exitUsage, "", "version takes no arguments"},
		{[]string{"status"}, exitUsage, "", "status: expected IFACE, got 0 argument(s)"},
		{[]string{"status", "a", "b"}, exitUsage, "", "expected IFACE, got 2"},
		{[]string{"status", "--help"}, exitOK, "Examples:\n  xlb status lo", ""},
		{[]string{"status", "--bogus", "lo"}, exitUsage, "", "flag provided but not defined: -bogus"},
		{[]string{"attach", "--mode", "turbo", "lo"}, exitUsage, "", `"turbo"`},
		{[]string{"attach", "--help"}, exitOK, "--force", ""},
		{[]string{"detach", "--help"}, exitOK, "xlb detach lo", ""},
		{[]string{"detach"}, exitUsage, "", "expected IFACE"},
		{[]string{"ctl", "frob"}, exitUsage, "", `unknown command "frob"`},
		{[]string{"ctl", "rematch", "1.2.3.4:5"}, exitUsage, "", "takes 2 argument(s), got 1"},
		{[]string{"--policy", "fastest", "lo", "80", "127.0.0.1:1"}, exitUsage, "", "want jiq, rr, least or sticky"},
		{[]string{"--worker-mss", "20", "lo", "80", "127.0.0.1:1"}, exitUsage, "", "--worker-mss 20: must be from 88"},
		{[]string{"--worker-conns", "-1", "lo", "80", "127.0.0.1:1"}, exitUsage, "", "--worker-conns -1"},
		{[]string{"--idle-release", "-1s", "lo", "80", "127.0.0.1:1"}, exitUsage, "", "--idle-release -1s"},
		{[]string{"ctl", "drain"}, exitUsage, "", "takes 1 argument(s), got 0"},
		{[]string{"ctl", "--socket", "/nonexistent/x.sock", "list"}, exitFailure, "", "no xlb is running there"},
		{[]string{"ctl", "--help"}, exitOK, "xlb ctl drain 127.0.0.1:4171", ""},
		{[]string{"lo", "8080"}, exitUsage, "", "no workers given"},
		{[]string{"lo", "0", "127.0.0.1:1"}, exitUsage, "", "port \"0\": must be a number from 1 to 65535"},
		{[]string{"lo", "8080", "127.0.0.1"}, exitUsage, "", "want HOST:PORT"},
		{[]string{"--policy", "best", "lo", "8080", "127.0.0.1:1"}, exitUsage, "", "unknown policy"},
		{[]string{"lo,", "8080", "127.0.0.1:1"}, exitUsage, "", `interface list "lo,": name 2 is empty`},
		{[]string{",lo", "8080", "127.0.0.1:1"}, exitUsage, "", "name 1 is empty"},
		{[]string{"l0,l1,l0", "8080", "127.0.0.1:1"}, exitUsage, "", "l0 is named twice"},
		{[]string{"status", "lo,,l1"}, exitUsage, "", "name 2 is empty"},
		{[]string{"serve", "--help"}, exitOK, "comma-separated list", ""},
	} {
		code, out, errOut := runCLI(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errOut, tc.err) {
			t.Errorf("xlb %q: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
				tc.args, code, out, errOut, tc.code, tc.out, tc.err)
		}
	}
}

func TestFlagsAfterArguments(t *testing.T) {
	fs := newFlagSet("x", "IFACE", "", "")
	j := fs.Bool("json", false, "")
	if err := fs.parse([]string{"lo", "--json"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !*j || fs.NArg() != 1 || fs.Arg(0) != "lo" {
		t.Errorf("json=%v args=%q", *j, fs.Args())
	}
	fs = newFlagSet("x", "ARG", "", "")
	fs.Bool("json", false, "")
	if err := fs.parse([]string{"--", "--json"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if fs.NArg() != 1 || fs.Arg(0) != "--json" {
		t.Errorf("after --: args=%q", fs.Args())
	}
}

// TestBinaryDependencies keeps the binary's imports to the standard library
// and the modules DESIGN.md allows.
func TestBinaryDependencies(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not on PATH")
	}
	out, err := exec.Command(goBin, "list", "-deps", "-f", "{{if .Module}}{{.Module.Path}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	allowed := map[string]bool{
		"github.com/xlb-lb/xlb":              true,
		"golang.org/x/sys":                   true,
		"github.com/mdlayher/netlink":        true,
		"github.com/mdlayher/socket":         true,
		"golang.org/x/net":                   true,
		"golang.org/x/sync":                  true,
		"github.com/jsimonetti/rtnetlink/v2": true,
	}
	for _, m := range strings.Fields(string(out)) {
		if !allowed[m] {
			t.Errorf("the binary depends on module %s, which is not allowed", m)
		}
	}
}

// TestAttachStatusDetach is tier 3: attach to a private namespace's lo, pass
// real TCP traffic, see the counters move, detach, leave nothing behind.
func TestAttachStatusDetach(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	err := ns.Do(func() error {
		if code, out, errOut := runCLI("attach", "--mode", "generic", "lo"); code != exitOK {
			t.Fatalf("attach: exit %d: %s%s", code, out, errOut)
		}
		t.Cleanup(func() { ns.Do(func() error { runCLI("detach", "--force", "lo"); return nil }) })

		code, out, errOut := runCLI("attach", "lo")
		if code != exitFailure || !strings.Contains(errOut, "--force") {
			t.Errorf("second attach: exit %d, stderr %q; want a refusal that mentions --force", code, errOut)
		}

		before := readStatus(t)
		if !before.Attached || !before.Ours || before.Mode != "generic" {
			t.Fatalf("status after attach: %+v", before)
		}
		sent := tcpExchange(t, 20)
		after := readStatus(t)
		if d := after.Counters["tcp"] - before.Counters["tcp"]; d < uint64(sent) {
			t.Errorf("tcp counter moved by %d for %d segments or more", d, sent)
		}
		if d := after.Counters["pass"] - before.Counters["pass"]; d < uint64(sent) {
			t.Errorf("pass counter moved by %d for %d segments or more", d, sent)
		}

		code, out, errOut = runCLI("status", "lo")
		if code != exitOK || !strings.Contains(out, "xlb attached") || !strings.Contains(out, "tcp") {
			t.Errorf("status: exit %d, %q %q", code, out, errOut)
		}

		if code, out, errOut := runCLI("detach", "lo"); code != exitOK {
			t.Fatalf("detach: exit %d: %s%s", code, out, errOut)
		}
		st, err := xdp.Query("lo")
		if err != nil {
			t.Fatal(err)
		}
		if st.Attached {
			t.Errorf("still attached after detach: %+v", st)
		}
		code, out, _ = runCLI("status", "lo")
		if code != exitOK || !strings.Contains(out, "no XDP program attached") {
			t.Errorf("status after detach: exit %d, %q", code, out)
		}
		code, _, errOut = runCLI("detach", "lo")
		if code != exitFailure || !strings.Contains(errOut, "no XDP program attached") {
			t.Errorf("detach again: exit %d, %q", code, errOut)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	assertNothingPinned(t, ns)
}

// TestDetachLeavesForeignProgram: a program that is not xlb's is left alone
// unless --force.
func TestDetachLeavesForeignProgram(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	prog, err := ebpf.LoadProgram(&ebpf.ProgramSpec{
		Name: "other", Type: ebpf.XDP, License: "GPL",
		Instructions: []ebpf.Instruction{ebpf.Mov64Imm(ebpf.R0, 2), ebpf.Exit()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	ns.Do(func() error {
		if _, err := xdp.Attach("lo", prog.FD(), xdp.AttachOptions{Mode: xdp.ModeGeneric}); err != nil {
			t.Fatal(err)
		}
		code, out, _ := runCLI("status", "lo")
		if code != exitOK || !strings.Contains(out, "not xlb's") {
			t.Errorf("status with a foreign program: exit %d, %q", code, out)
		}
		code, _, errOut := runCLI("detach", "lo")
		if code != exitFailure || !strings.Contains(errOut, "--force") {
			t.Errorf("detach of a foreign program: exit %d, %q", code, errOut)
		}
		if st, _ := xdp.Query("lo"); st == nil || !st.Attached {
			t.Errorf("foreign program was detached without --force")
		}
		if code, _, errOut := runCLI("detach", "--force", "lo"); code != exitOK {
			t.Errorf("detach --force: exit %d, %q", code, errOut)
		}
		code, _, errOut = runCLI("status", "nosuchif0")
		if code != exitFailure || !strings.Contains(errOut, `"nosuchif0" not found`) {
			t.Errorf("status of a missing interface: exit %d, %q", code, errOut)
		}
		return nil
	})
}

func readStatus(t *testing.T) statusReport {
	t.Helper()
	code, out, errOut := runCLI("status", "--json", "lo")
	if code != exitOK {
		t.Fatalf("status --json: exit %d: %s", code, errOut)
	}
	var r statusReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return r
}

// tcpExchange runs n request/response round trips over loopback TCP (in the
// caller's namespace) and returns a lower bound of the segments exchanged.
func tcpExchange(t *testing.T, n int) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	for i := 0; i < n; i++ {
		msg := bytes.Repeat([]byte{byte(i)}, len(buf))
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, msg) {
			t.Fatalf("round trip %d: payload changed", i)
		}
	}
	return 2 * n
}

// assertNothingPinned checks that nothing of ns is pinned: pins carry the
// namespace's inode (other packages' tests may run meanwhile).
func assertNothingPinned(t *testing.T, ns *testnet.NS) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(ns.Path(), &st); err != nil {
		t.Fatal(err)
	}
	pins, _ := filepath.Glob(fmt.Sprintf("%s/xlb/net%d-*", ebpf.DefaultBPFFS, st.Ino))
	for _, p := range pins {
		t.Errorf("left pinned: %s", p)
	}
}
