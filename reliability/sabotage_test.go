package reliability

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/kern"
	"github.com/xlb-lb/xlb/testnet"
)

// Bounds of TestSabotageIsCaught.
const (
	// sabotageRequestTimeout is the child runs' requestTimeout: a clean
	// request takes milliseconds, a hung one is declared hung this soon.
	sabotageRequestTimeout = 5 * time.Second
	// sabotageRunTimeout bounds one child run of a scenario.
	sabotageRunTimeout = 90 * time.Second
	// sabotageScenario is the scenario run against both binaries.
	sabotageScenario = "TestClean"
)

// TestSabotageIsCaught shows that the scenarios catch a broken translation:
// xlb built with -DXLB_SABOTAGE_TS (the data plane leaves TCP timestamps
// untranslated, see kern/bpf/tcp_opts.h) must fail sabotageScenario through
// the harness's own checks, and the real binary must pass it. Each run is
// this test binary re-executed on that one scenario with XLB_BIN set.
func TestSabotageIsCaught(t *testing.T) {
	testnet.RequireRoot(t)
	if os.Getenv("XLB_SABOTAGE_CHILD") != "" {
		t.Skip("inside a child run")
	}
	bin := buildSabotaged(t)

	out, err, took := runChild(t, bin)
	t.Logf("sabotaged xlb, %s: %v after %v", sabotageScenario, err, took.Round(time.Millisecond))
	if err == nil {
		t.Fatalf("%s passed against xlb with untranslated timestamps: the harness does not catch broken translation\n%s", sabotageScenario, out)
	}
	if took > sabotageRunTimeout {
		t.Fatalf("the sabotaged run was killed after %v instead of failing by itself\n%s", took, out)
	}
	// The failure must come from the scenario's checks, once the topology
	// is up, not from a build, a start-up or a crash.
	caught := strings.Contains(out, "request failed:") || strings.Contains(out, "requests answered intact") ||
		strings.Contains(out, "TCP checksum errors") || strings.Contains(out, "waited ")
	if !caught || !strings.Contains(out, "verified in") {
		t.Fatalf("the sabotaged run failed, but not on a scenario check:\n%s", out)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "request failed:") || strings.Contains(l, "verified in") {
			t.Logf("sabotaged: %s", strings.TrimSpace(l))
		}
	}

	out, err, took = runChild(t, testkit.XLB)
	t.Logf("real xlb, %s: %v after %v", sabotageScenario, err, took.Round(time.Millisecond))
	if err != nil {
		t.Fatalf("%s failed against the real xlb:\n%s", sabotageScenario, out)
	}
}

// buildSabotaged builds xlb with -DXLB_SABOTAGE_TS in a copy of the module
// (kern embeds kern/bpf/xlb.o and xlb6.o, so the objects must be in the
// source tree).
func buildSabotaged(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	// The sources, walked rather than listed by git: CI and a fresh root
	// may have no git. Built things stay behind (the object must be built
	// anew, with the define).
	dir := t.TempDir()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel == ".git" || rel == "build" || rel == "docs" {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || rel == "xlb" || strings.HasSuffix(rel, ".o") || strings.HasSuffix(rel, ".pcap") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, rel), b, 0o644)
	})
	if err != nil {
		t.Fatalf("copying the module: %v", err)
	}
	// The Makefile's own rule and flags, plus the define.
	if out, err := exec.Command("make", "-C", dir, "--no-print-directory", "CLANG=clang -DXLB_SABOTAGE_TS", "kern/bpf/xlb.o", "kern/bpf/xlb6.o").CombinedOutput(); err != nil {
		t.Fatalf("building the sabotaged data plane: %v\n%s", err, out)
	}
	obj, err := os.ReadFile(filepath.Join(dir, "kern/bpf/xlb.o"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(obj, kern.Object) {
		t.Fatal("-DXLB_SABOTAGE_TS changed nothing in the object: is the hook still in kern/bpf/tcp_opts.h?")
	}
	bin := filepath.Join(dir, "xlb-sabotaged")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the sabotaged xlb: %v\n%s", err, out)
	}
	return bin
}

// runChild runs sabotageScenario, short version, in a child test process
// against bin, and returns its output, exit error and duration.
func runChild(t *testing.T, bin string) (string, error, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), sabotageRunTimeout+testkit.StopTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run", "^"+sabotageScenario+"$", "-test.count=1", "-test.v")
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "XLB_RELIABILITY") && !strings.HasPrefix(kv, "XLB_BIN=") && !strings.HasPrefix(kv, testkit.VerboseEnv+"=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, "XLB_BIN="+bin, "XLB_SABOTAGE_CHILD=1",
		"XLB_RELIABILITY_REQUEST_TIMEOUT="+sabotageRequestTimeout.String())
	start := time.Now()
	out, err := cmd.CombinedOutput()
	return string(out), err, time.Since(start)
}
