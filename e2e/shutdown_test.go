package e2e

import (
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/testnet"
)

// TestShutdownEndsConnectionsProperly: on SIGINT xlb lets a response in
// flight finish, then every connection ends with a FIN carrying the right
// sequence numbers (the client reads EOF, not a reset), the worker side is
// closed too, and the data plane is detached and unpinned.
func TestShutdownEndsConnectionsProperly(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 3)
	// 200 MB through lo take 2 s on a quiet machine, and more than the
	// default 10 s of --shutdown-timeout on a busy one: what is tested is
	// that the response finishes, not how fast.
	lb := startXLB(t, ns, "lo", 8080, workers, "--shutdown-timeout", "60s")

	idle := dial(t, ns, "127.0.0.1:8080")
	for i := 0; i < 5; i++ {
		if _, _, err := idle.get("/bytes/1000"); err != nil {
			t.Fatal(err)
		}
	}
	// A big response in flight when the signal comes: it must complete.
	busy := dial(t, ns, "127.0.0.1:8080")
	result := make(chan error, 1)
	go func() {
		_, n, err := busy.get("/bytes/200000000")
		if err == nil && n != 200000000 {
			err = errors.New("short body")
		}
		result <- err
	}()
	testkit.WaitStatus(t, ns, "lo", ioTimeout, "the big request to be bound", func(r testkit.StatusReport) bool {
		return r.Counters["bind"] >= 2 && r.Counters["fwd_to_client"] > 1000
	})
	lb.Cmd.Process.Signal(syscall.SIGINT)
	if err := <-result; err != nil {
		t.Fatalf("the response in flight at shutdown: %v", err)
	}
	if !lb.Exited(testkit.StopTimeout) {
		t.Fatal("xlb did not stop")
	}
	if lb.Err() != nil {
		t.Errorf("xlb exited with %v", lb.Err())
	}
	if !strings.Contains(lb.Output(), "connections handed back to the kernel") {
		t.Errorf("no hand-back in the log:\n%s", lb.Output())
	}
	for name, c := range map[string]*client{"idle": idle, "busy": busy} {
		c.c.SetReadDeadline(time.Now().Add(ioTimeout))
		_, err := c.r.ReadByte()
		if !errors.Is(err, io.EOF) {
			t.Errorf("%s client: read after shutdown gave %v, want EOF (a proper FIN)", name, err)
		}
	}
	if r := testkit.Status(t, ns, "lo"); r.Attached {
		t.Error("the data plane is still attached after shutdown")
	}
	// The workers' ends are closed as well: no established connection is
	// left on their ports (bounded wait: the FIN exchange takes a moment).
	deadline := time.Now().Add(ioTimeout)
	for {
		out, err := ns.Command("ss", "-Htn", "state", "established", "( sport >= :4171 and sport <= :4173 )").Output()
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(out)) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker connections still established after shutdown:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRestartSamePort: xlb stopped and started again at once on the same
// port comes up. The connections it handed back end in TIME-WAIT on the
// service port; they must not keep the new listener out for a minute (the
// repair mode used to read and hand back sockets clears address reuse).
func TestRestartSamePort(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 2)
	for round := 0; round < 2; round++ {
		lb := startXLB(t, ns, "lo", 8080, workers, testkit.OwnSocket(t)...)
		var cs []*client
		for i := 0; i < 4; i++ {
			c := dial(t, ns, "127.0.0.1:8080")
			if _, _, err := c.get("/bytes/2000"); err != nil {
				t.Fatalf("round %d client %d: %v", round, i, err)
			}
			cs = append(cs, c)
		}
		lb.Stop()
		// xlb handed the connections back and closed them: each client
		// reads the FIN before closing its end, so that the service port's
		// ends, which closed first, sit in TIME-WAIT, what the next round
		// must bind past. (xlb's start-up probe used to leave one there
		// too, whatever the clients did; it probes another port now.)
		for i, c := range cs {
			c.c.SetReadDeadline(time.Now().Add(ioTimeout))
			if _, err := c.r.ReadByte(); !errors.Is(err, io.EOF) {
				t.Fatalf("round %d client %d: read after the stop gave %v, want EOF", round, i, err)
			}
			c.c.Close()
		}
		if tw := testkit.Sockets(t, ns, "time-wait", "( sport = :8080 )"); round == 0 && len(tw) == 0 {
			t.Fatal("no TIME-WAIT on the service port after the stop: the test would prove nothing")
		}
	}
}

// TestShutdownLeavesForeignProgram: another XDP program replaced xlb's on
// its interface (another tool, `ip link set xdp ... force`); when xlb
// stops it detaches its own program only, by id: the other one stays.
func TestShutdownLeavesForeignProgram(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 1)
	lb := startXLB(t, ns, "lo", 8080, workers, "--socket", t.TempDir()+"/ctl.sock")
	ours := testkit.Status(t, ns, "lo").ProgID

	foreign, err := attachForeignXDP(t, ns, true)
	if err != nil {
		t.Fatal(err)
	}
	if foreign == ours {
		t.Fatalf("the foreign program got xlb's id %d", ours)
	}
	lb.Stop()
	if !strings.Contains(lb.Output(), "our program was replaced by another; leaving that one attached") {
		t.Errorf("xlb did not say that it leaves the foreign program:\n%s", lb.Output())
	}
	if r := testkit.Status(t, ns, "lo"); !r.Attached || r.ProgID != foreign {
		t.Errorf("after xlb stopped: attached %v, program id %d; want the foreign program %d still attached", r.Attached, r.ProgID, foreign)
	}
}
