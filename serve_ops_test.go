package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xlb-lb/xlb/ebpf"
	"golang.org/x/sys/unix"
)

// TestServeUsageErrors: mistakes on serve's command line exit 2 with a
// message that says what is wrong and what to do, before any privilege is
// needed.
func TestServeUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		err  string
	}{
		{[]string{"lo", "8080"}, "no workers given: name at least one HOST:PORT[@WEIGHT]"},
		{[]string{"lo", "70000", "127.0.0.1:4171"}, `port "70000": must be a number from 1 to 65535`},
		{[]string{"lo", "http", "127.0.0.1:4171"}, `port "http": must be a number from 1 to 65535`},
		{[]string{"lo", "8080", "127.0.0.1"}, `worker "127.0.0.1": want HOST:PORT[@WEIGHT], e.g. 127.0.0.1:4171`},
		{[]string{"lo", "8080", "127.0.0.1:99999"}, `worker "127.0.0.1:99999": port must be 1-65535`},
		{[]string{"lo", "8080", "127.0.0.1:4171@-1"}, "weight must be a number from 0 to"},
		{[]string{"lo", "8080", "nosuchhost.invalid:4171"}, `cannot resolve "nosuchhost.invalid"`},
		{[]string{"--log-format", "xml", "lo", "8080", "127.0.0.1:4171"}, `--log-format "xml": want text or json`},
		{[]string{"--log-level", "loud", "lo", "8080", "127.0.0.1:4171"}, `--log-level "loud": want debug, info, warn or error`},
		{[]string{"--metrics", "9464", "lo", "8080", "127.0.0.1:4171"}, `--metrics "9464": want HOST:PORT`},
		{[]string{"--metrics", "127.0.0.1:0", "lo", "8080", "127.0.0.1:4171"}, "port must be a number from 1 to 65535"},
		{[]string{"--announce", "a-name-far-too-long", "lo", "8080", "127.0.0.1:4171"}, `--announce "a-name-far-too-long": not an interface name`},
		{[]string{"--announce", "xlb/vip", "lo", "8080", "127.0.0.1:4171"}, `--announce "xlb/vip": not an interface name`},
		{[]string{"stats", "extra"}, "stats takes no arguments"},
		{[]string{"top", "--interval", "1ms"}, "--interval 1ms: must be at least 100ms"},
	} {
		code, _, errOut := runCLI(tc.args...)
		if code != exitUsage || !strings.Contains(errOut, tc.err) {
			t.Errorf("xlb %q: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut, exitUsage, tc.err)
		}
	}
}

// TestHelpEverywhere: every command has --help with examples, exit 0.
func TestHelpEverywhere(t *testing.T) {
	for _, c := range commands() {
		code, out, errOut := runCLI(c.name, "--help")
		if code != exitOK || !strings.Contains(out, "Examples:\n  xlb ") {
			t.Errorf("xlb %s --help: exit %d, stdout %q, stderr %q", c.name, code, out, errOut)
		}
	}
}

// TestControlSocketErrors: no instance, or a socket the user may not use.
func TestControlSocketErrors(t *testing.T) {
	for _, cmd := range []string{"stats", "top"} {
		code, _, errOut := runCLI(cmd, "--socket", "/nonexistent/xlb.sock")
		if code != exitFailure || !strings.Contains(errOut, "no xlb is running there (start one, or name its socket with --socket)") {
			t.Errorf("xlb %s on a missing socket: exit %d, %q", cmd, code, errOut)
		}
	}
}

// TestVerifierRejectionExplained: a verifier rejection is summarised, and its
// full log written to a file the message names.
func TestVerifierRejectionExplained(t *testing.T) {
	old := verifierLogDir
	verifierLogDir = t.TempDir()
	t.Cleanup(func() { verifierLogDir = old })
	log := "0: (b7) r0 = 0\n1: (61) r2 = *(u32 *)(r1 +4)\ninvalid access to packet, off=4 size=4\nprocessed 2 insns\n"
	err := fmt.Errorf("loading xlb: %w", &ebpf.VerifierError{Program: "xlb", Errno: unix.EACCES, Log: log})
	got := explainStartError(err, "lo").Error()
	path := filepath.Join(verifierLogDir, "verifier-lo.log")
	for _, want := range []string{"verifier rejected program xlb", "invalid access to packet", "full verifier log is in " + path} {
		if !strings.Contains(got, want) {
			t.Errorf("message %q lacks %q", got, want)
		}
	}
	b, rerr := os.ReadFile(path)
	if rerr != nil || string(b) != log {
		t.Errorf("full log file: %v, %q", rerr, b)
	}
	if !errors.Is(explainStartError(err, "lo"), unix.EACCES) {
		t.Error("the explained error no longer wraps the errno")
	}
	// When the loader already saved the log, it is not written twice.
	os.Remove(path)
	saved := fmt.Errorf("loading: %w; the whole verifier log is in /tmp/x.log", &ebpf.VerifierError{Program: "xlb", Log: log})
	got = explainStartError(saved, "lo").Error()
	if strings.Count(got, "log is in") != 1 || !strings.Contains(got, "/tmp/x.log") || !strings.Contains(got, kernelRelease()) {
		t.Errorf("message %q: want the loader's file named once, and the kernel", got)
	}
	if _, err := os.Stat(path); err == nil {
		t.Errorf("%s written although the loader saved the log", path)
	}
}

// TestMissingKernelFeatureExplained: a feature the kernel lacks is named as
// such, with the kernel's release.
func TestMissingKernelFeatureExplained(t *testing.T) {
	err := fmt.Errorf("map xlb_events: create: %w", ebpf.ErrNotSupported)
	got := explainStartError(err, "lo").Error()
	for _, want := range []string{"xlb_events", "kernel " + kernelRelease() + " lacks a BPF feature xlb needs", "Linux 6.1 or later"} {
		if !strings.Contains(got, want) {
			t.Errorf("message %q lacks %q", got, want)
		}
	}
}

// TestBTFRejectionExplained: BTF the kernel refuses is named as such, with
// the file the loader saved its log to.
func TestBTFRejectionExplained(t *testing.T) {
	be := &ebpf.BTFError{Errno: unix.EINVAL, Log: "[44] DATASEC license size=0 vlen=1 size == 0\n"}
	err := fmt.Errorf("loading the XDP program: %w; the whole verifier log is in /tmp/x.log", be)
	got := explainStartError(err, "lo")
	for _, want := range []string{"kernel rejected the object's BTF", "size == 0", "/tmp/x.log", "refused the type information (BTF)", kernelRelease()} {
		if !strings.Contains(got.Error(), want) {
			t.Errorf("message %q lacks %q", got, want)
		}
	}
	if !errors.Is(got, unix.EINVAL) {
		t.Error("the explained error no longer wraps the errno")
	}
}
