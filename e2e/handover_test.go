package e2e

import (
	"errors"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/testnet"
)

// The failure paths of a takeover (--reuse), injected into a binary built
// with the xlbtest tag (splice/fault_xlbtest.go): a production build has no
// such hook. Whatever fails, one process serves the data plane, and only the
// one whose program is attached.

var (
	faultBinOnce sync.Once
	faultBinPath string
	faultBinErr  error
)

// faultBin is xlb built with the xlbtest tag, once.
func faultBin(t *testing.T) string {
	t.Helper()
	faultBinOnce.Do(func() {
		path := filepath.Join(testkit.BuildDir, "xlb-faults")
		if faultBinErr = testkit.Build(path, "xlbtest"); faultBinErr == nil {
			faultBinPath = path
		}
	})
	if faultBinErr != nil {
		t.Fatal(faultBinErr)
	}
	return faultBinPath
}

// exitCode waits for p's exit and returns its code.
func exitCode(t *testing.T, p *testkit.Proc) int {
	t.Helper()
	if !p.Exited(testkit.StopTimeout) {
		t.Fatalf("%s did not exit within %v", p.Name, testkit.StopTimeout)
	}
	var ee *exec.ExitError
	if errors.As(p.Err(), &ee) {
		return ee.ExitCode()
	}
	if p.Err() != nil {
		t.Fatalf("%s: %v", p.Name, p.Err())
	}
	return 0
}

// handoverSetup starts workers and xlb (the xlbtest build, with env) with
// clients talking through it; it returns the program id attached.
func handoverSetup(t *testing.T, env ...string) (*testnet.NS, []string, string, *testkit.Proc, *traffic, uint32) {
	testnet.RequireRoot(t)
	bin := faultBin(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 2)
	sock := t.TempDir() + "/ctl.sock"
	args := append(append([]string{"env"}, env...), bin, "--socket", sock, "lo", "8080", workers[0], workers[1])
	old := testkit.Start(t, ns, "xlb", args...)
	old.WaitLines("data plane attached", 1, testkit.StartTimeout)
	old.WaitLines("worker up", len(workers), testkit.StartTimeout)
	tk := startTraffic(t, ns, 4)
	tk.wait(t, 100)
	r := testkit.Status(t, ns, "lo")
	if !r.Attached || r.ProgID == 0 {
		t.Fatalf("xlb status: attached %v, program id %d", r.Attached, r.ProgID)
	}
	return ns, workers, sock, old, tk, r.ProgID
}

// startTakeover runs the xlbtest build with --reuse and the fault given.
func startTakeover(t *testing.T, ns *testnet.NS, fault, sock string, workers []string) *testkit.Proc {
	args := []string{"env", "XLB_TEST_HANDOVER_FAULT=" + fault, faultBin(t), "--reuse", "--socket", sock, "lo", "8080"}
	return testkit.Start(t, ns, "xlb --reuse ("+fault+")", append(args, workers...)...)
}

// checkResumed checks that the old xlb serves on after a takeover failed:
// its program is still attached, its clients and new ones are served, and a
// takeover without a fault then succeeds (its pins and state are intact).
func checkResumed(t *testing.T, ns *testnet.NS, workers []string, sock string, old *testkit.Proc, tk *traffic, progID uint32) {
	t.Helper()
	old.WaitLines("handover failed; carrying on", 1, testkit.StartTimeout)
	if r := testkit.Status(t, ns, "lo"); r.ProgID != progID {
		t.Fatalf("after the failed takeover program id %d is attached, want the old xlb's %d", r.ProgID, progID)
	}
	tk.wait(t, tk.count.Load()+200)
	c := dial(t, ns, "127.0.0.1:8080")
	for i := 0; i < 10; i++ {
		if _, _, err := c.get("/bytes/2000"); err != nil {
			t.Fatalf("new client after the failed takeover: %v", err)
		}
	}
	newer := testkit.Start(t, ns, "xlb --reuse", testkit.XLB, "--reuse", "--socket", sock, "lo", "8080", workers[0], workers[1])
	newer.WaitLines("took over", 1, testkit.StartTimeout)
	if code := exitCode(t, old); code != 0 {
		t.Errorf("the old xlb exited with %d after handing over", code)
	}
	tk.wait(t, tk.count.Load()+200)
	tk.end(t)
	newer.Stop()
}

// TestHandoverFailsBeforeSwap: the new xlb fails with everything prepared,
// after the old one said go, just before the program swap. It exits 1
// without touching the data plane; the old one resumes and serves on.
func TestHandoverFailsBeforeSwap(t *testing.T) {
	checkFailedTakeover(t, "fail-before-swap", "injected failure before the program swap")
}

// TestHandoverOutlastsTimeout: the new xlb is not ready before the old one's
// timeout (3s here). The old one calls the takeover off and resumes; the new
// one, ready later, is not told to go and exits 1 without swapping: never
// both. The stalled xlb waits for the old one's abort (an event), so the
// timeout only has to leave the next, ordinary takeover (checkResumed)
// time to load and verify the data plane: at 1s, make test's parallel
// packages made that one miss it ("did not say go ... broken pipe") in two
// of five runs.
func TestHandoverOutlastsTimeout(t *testing.T) {
	checkFailedTakeover(t, "stall", "did not say go", "XLB_TEST_HANDOVER_TIMEOUT=3s")
}

// checkFailedTakeover runs a takeover with fault (the old xlb with env): the
// new xlb exits 1 saying says, and the old one resumes (checkResumed).
func checkFailedTakeover(t *testing.T, fault, says string, env ...string) {
	t.Helper()
	ns, workers, sock, old, tk, progID := handoverSetup(t, env...)
	newer := startTakeover(t, ns, fault, sock, workers)
	if code := exitCode(t, newer); code != 1 {
		t.Errorf("the xlb with fault %q exited with %d, want 1", fault, code)
	}
	newer.WaitLines(says, 1, testkit.StartTimeout)
	checkResumed(t, ns, workers, sock, old, tk, progID)
}

// TestHandoverNewDiesAfterSwap: the new xlb dies right after the swap,
// without a word. The old one finds its program replaced: it does not
// resume (its program is gone), says so, and exits 0.
func TestHandoverNewDiesAfterSwap(t *testing.T) {
	ns, workers, sock, old, tk, progID := handoverSetup(t)
	newer := startTakeover(t, ns, "exit-after-swap", sock, workers)
	if code := exitCode(t, newer); code != 3 {
		t.Errorf("the dying xlb exited with %d, want 3 (the injected exit)", code)
	}
	if code := exitCode(t, old); code != 0 {
		t.Errorf("the old xlb exited with %d, want 0", code)
	}
	if n := old.Count("not resuming"); n != 1 {
		t.Errorf("the old xlb said %d times that it does not resume, want 1", n)
	}
	if n := old.Count("carrying on"); n != 0 {
		t.Errorf("the old xlb carried on with another program attached")
	}
	if r := testkit.Status(t, ns, "lo"); r.ProgID == progID || !r.Attached {
		t.Errorf("after the swap: attached %v, program id %d; want the new xlb's, not %d", r.Attached, r.ProgID, progID)
	}
	tk.stop.Store(true) // nobody runs the control plane: their fate is not the point (their cleanup waits for them)
}
