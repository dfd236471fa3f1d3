package reliability

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xlb-lb/xlb/internal/runstate"
	"github.com/xlb-lb/xlb/internal/testkit"
)

// TestMultiIface: xlb serves L's front and back interfaces (`xlb l0,l1`).
// Both carry the same program; `xlb status l0,l1` reports each; a handover
// (--reuse) replaces the program on both; traffic flows before and after;
// once xlb stops, neither interface has an XDP program and no pin is left.
// A missing interface in the list is a runtime error (exit 1) that leaves
// nothing attached.
func TestMultiIface(t *testing.T) {
	tp := newTopo(t, topoOpts{routed: routedForwarding()})
	ids := tp.progIDs()
	if ids[0] == 0 || ids[0] != ids[1] {
		t.Fatalf("program ids on %s,%s: %v, want the same xlb program on both", frontIface, backIface, ids)
	}
	tp.expectIntact(load{conns: 2, requests: 10, sizes: small})
	// The clients leave before the handover, so that the legs it moves are
	// the pools' only (e2e's TestReuseDuringTraffic hands clients over).
	tp.closeClients()
	tp.waitBaseline(2)

	// Handover: the new process replaces the program on both interfaces.
	old := tp.lb
	args := append([]string{testkit.XLB, "--reuse"}, old.Args[1:]...)
	tp.lb = testkit.Start(t, tp.l, "xlb (reuse)", args...)
	tp.lb.WaitLines("took over", 1, testkit.StartTimeout)
	if !old.Exited(testkit.StopTimeout) {
		t.Fatalf("the old xlb did not exit after the handover")
	}
	ids2 := tp.progIDs()
	if ids2[0] == 0 || ids2[0] != ids2[1] || ids2[0] == ids[0] {
		t.Fatalf("program ids after the handover: %v (before %v), want a new one, the same on both", ids2, ids)
	}
	tp.expectIntact(load{conns: 2, requests: 10, sizes: small})
	tp.closeClients()
	tp.waitBaseline(4)

	if err := tp.lb.StopErr(); err != nil {
		t.Fatalf("xlb stop: %v", err)
	}
	for _, ifc := range []string{frontIface, backIface} {
		if tp.xdpAttached(ifc) {
			t.Errorf("an XDP program is still attached to %s after xlb stopped", ifc)
		}
	}
	if pins := leftoverPins(tp); len(pins) > 0 {
		t.Errorf("pins left after xlb stopped: %v", pins)
	}

	// A missing interface: exit 1, a message naming it, nothing attached.
	cmd := tp.l.Command(testkit.XLB, "--listen", frontAddr, "--mode", "generic", frontIface+",nosuch0", fmt.Sprint(servicePort), tp.workerAddrs[0])
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), `"nosuch0" not found`) {
		t.Errorf("xlb %s,nosuch0: %v, want exit 1 naming nosuch0:\n%s", frontIface, err, out)
	}
	if tp.xdpAttached(frontIface) {
		t.Errorf("an XDP program is attached to %s after a failed start", frontIface)
	}
}

// progIDs returns the program id `xlb status --json l0,l1` reports on each
// interface (0: none or not xlb's).
func (tp *topo) progIDs() [2]uint32 {
	tp.t.Helper()
	out, err := tp.l.Command(testkit.XLB, "status", "--json", frontIface+","+backIface).Output()
	if err != nil {
		tp.t.Fatalf("xlb status %s,%s: %v", frontIface, backIface, err)
	}
	var rs []struct {
		Interface string `json:"interface"`
		Ours      bool   `json:"xlb"`
		ProgID    uint32 `json:"prog_id"`
	}
	if err := json.Unmarshal(out, &rs); err != nil || len(rs) != 2 {
		tp.t.Fatalf("xlb status --json %s,%s: %v\n%s", frontIface, backIface, err, out)
	}
	var ids [2]uint32
	for i, r := range rs {
		if r.Ours {
			ids[i] = r.ProgID
		}
	}
	return ids
}

// expectIntact runs l and fails the test unless every request was answered
// with the exact bytes.
func (tp *topo) expectIntact(l load) {
	tp.t.Helper()
	res := tp.run(l)
	for _, err := range res.failures {
		tp.t.Errorf("request failed: %v", err)
	}
	if want := l.conns * l.requests; res.requests != want {
		tp.t.Fatalf("%d requests answered intact, want %d", res.requests, want)
	}
	tp.t.Logf("%d requests intact; workers %v", res.requests, res.perWorker)
}

// leftoverPins lists the pins of L's namespace under runstate.PinRoot.
func leftoverPins(tp *topo) []string {
	var st unix.Stat_t
	if err := unix.Stat(tp.l.Path(), &st); err != nil {
		tp.t.Fatal(err)
	}
	ents, _ := os.ReadDir(runstate.PinRoot)
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), fmt.Sprintf("net%d-", st.Ino)) {
			out = append(out, e.Name())
		}
	}
	return out
}
