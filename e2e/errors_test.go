package e2e

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/testnet"
	"github.com/xlb-lb/xlb/xdp"
)

// Every error an operator can meet when xlb cannot start: exit code 1 and a
// message that says what to do.

// runXLB runs the xlb binary in ns (through prefix, e.g. setpriv) and returns
// its exit code and combined output.
func runXLB(t *testing.T, ns *testnet.NS, prefix []string, args ...string) (int, string) {
	t.Helper()
	argv := append(append(prefix, testkit.XLB), args...)
	out, err := ns.Command(argv[0], argv[1:]...).CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%v: %v", argv, err)
	}
	return code, string(out)
}

func wantFailure(t *testing.T, what string, code int, out string, want ...string) {
	t.Helper()
	if code != 1 {
		t.Errorf("%s: exit %d, want 1; output:\n%s", what, code, out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: output lacks %q:\n%s", what, w, out)
		}
	}
}

// assertDetached checks that a failed start left nothing attached to lo.
func assertDetached(t *testing.T, ns *testnet.NS) {
	t.Helper()
	if r := testkit.Status(t, ns, "lo"); r.Attached {
		t.Errorf("a failed start left a program attached to lo")
	}
}

func TestErrorNotRootOrMissingCapability(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	asNobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}
	code, out := runXLB(t, ns, asNobody, "lo", "8080", "127.0.0.1:4171")
	wantFailure(t, "as nobody", code, out, "xlb needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN",
		"uid 65534, not root", "lacks CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN", "run it with sudo")

	noNetAdmin := []string{"setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin"}
	code, out = runXLB(t, ns, noNetAdmin, "lo", "8080", "127.0.0.1:4171")
	wantFailure(t, "root without CAP_NET_ADMIN", code, out, "this process (root) lacks CAP_NET_ADMIN:")
	noBPF := []string{"setpriv", "--bounding-set=-bpf", "--inh-caps=-bpf"}
	code, out = runXLB(t, ns, noBPF, "lo", "8080", "127.0.0.1:4171")
	wantFailure(t, "root without CAP_BPF", code, out, "this process (root) lacks CAP_BPF:")
	assertDetached(t, ns)
}

func TestErrorInterfaceMissing(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	code, out := runXLB(t, ns, nil, "nosuchif0", "8080", "127.0.0.1:4171")
	wantFailure(t, "missing interface", code, out, `interface "nosuchif0" not found (see `+"`ip link`")
}

func TestErrorPortInUse(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	startWorkersAt(t, ns, "127.0.0.1:8080") // takes the port
	code, out := runXLB(t, ns, nil, "--socket", t.TempDir()+"/ctl.sock", "lo", "8080", "127.0.0.1:4171")
	wantFailure(t, "port in use", code, out, "port 8080 on 127.0.0.1 is in use by another program", "ss -ltnp")
	assertDetached(t, ns)
}

func TestErrorMetricsPortInUse(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	startWorkersAt(t, ns, "127.0.0.1:9464")
	code, out := runXLB(t, ns, nil, "--metrics", "127.0.0.1:9464", "--socket", t.TempDir()+"/ctl.sock", "lo", "8080", "127.0.0.1:9464")
	wantFailure(t, "metrics port in use", code, out, "--metrics 127.0.0.1:9464: the address is in use by another program")
	assertDetached(t, ns)
}

// TestErrorWorkerUnreachable: with --require-workers xlb fails fast; without,
// it logs and keeps retrying, and the worker is used once it comes up.
func TestErrorWorkerUnreachable(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	sock := t.TempDir() + "/ctl.sock"
	code, out := runXLB(t, ns, nil, "--require-workers", "--socket", sock, "lo", "8080", "127.0.0.1:4179")
	wantFailure(t, "--require-workers", code, out, "worker 127.0.0.1:4179 is unreachable", "connection refused",
		"start the workers first, or leave the flag out and xlb keeps retrying them")
	assertDetached(t, ns)

	lb := testkit.Start(t, ns, "xlb", testkit.XLB, "--socket", sock, "--log-format", "json", "lo", "8080", "127.0.0.1:4179")
	lb.WaitLines(`"msg":"worker down: pool connection failed, retrying","worker":"127.0.0.1:4179"`, 1, testkit.StartTimeout)
	startWorkersAt(t, ns, "127.0.0.1:4179")
	lb.WaitLines(`"msg":"worker up","worker":"127.0.0.1:4179"`, 1, testkit.StartTimeout)
	c := dial(t, ns, "127.0.0.1:8080")
	if w, _, err := c.get("/bytes/100"); err != nil || w != "w1" {
		t.Errorf("request after the worker came up: worker %q, %v", w, err)
	}
	lb.Stop()
}

// TestErrorAlreadyAttached: another XDP program, or another xlb, on the
// interface.
func TestErrorAlreadyAttached(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 1)

	_, err := attachForeignXDP(t, ns, false)
	if err != nil {
		t.Fatal(err)
	}
	code, out := runXLB(t, ns, nil, "--socket", t.TempDir()+"/a.sock", "lo", "8080", workers[0])
	wantFailure(t, "foreign program attached", code, out, "another XDP program (id", "is attached to lo; use --force to replace it")
	ns.Do(func() error {
		st, err := xdp.Query("lo")
		if err == nil && st.Attached {
			err = xdp.Detach("lo", st.ProgID)
		}
		return err
	})

	lb := startXLB(t, ns, "lo", 8080, workers, "--socket", t.TempDir()+"/b.sock")
	code, out = runXLB(t, ns, nil, "--socket", t.TempDir()+"/c.sock", "lo", "8080", workers[0])
	wantFailure(t, "second xlb", code, out, "an xlb data plane is already attached to lo", "stop it, or restart with --reuse to take over")
	lb.Stop()
}

// TestErrorNativeModeUnsupported: a feature the interface or kernel lacks
// (native XDP on lo) is named, with what to use instead.
func TestErrorNativeModeUnsupported(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 1)
	code, out := runXLB(t, ns, nil, "--mode", "native", "--socket", t.TempDir()+"/ctl.sock", "lo", "8080", workers[0])
	wantFailure(t, "native mode on lo", code, out, "XDP mode not supported by the interface", "use --mode generic or auto")
	assertDetached(t, ns)
}

// TestErrorControlSocket: xlb stats with no instance, and as a user who may
// not use the socket.
func TestErrorControlSocket(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	code, out := runXLB(t, ns, nil, "stats")
	wantFailure(t, "stats without an instance", code, out, "no xlb control socket in this network namespace", "name it with --socket")

	workers := startWorkers(t, ns, 1)
	sock := t.TempDir() + "/ctl.sock"
	lb := startXLB(t, ns, "lo", 8080, workers, "--socket", sock)
	asNobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}
	code, out = runXLB(t, ns, asNobody, "stats", "--socket", sock)
	wantFailure(t, "stats as nobody", code, out, "control socket "+sock+": permission denied: run as root")
	lb.Stop()
}

// TestBPFFSNotMounted: without bpffs on /sys/fs/bpf (in a private mount
// namespace), xlb mounts it itself and runs.
func TestBPFFSNotMounted(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 1)
	sock := t.TempDir() + "/ctl.sock"
	script := `umount /sys/fs/bpf || exit 3; mountpoint -q /sys/fs/bpf && exit 4; exec "$@"`
	lb := testkit.Start(t, ns, "xlb", "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
		testkit.XLB, "--socket", sock, "lo", "8080", workers[0])
	lb.WaitLines("worker up", 1, testkit.StartTimeout)
	c := dial(t, ns, "127.0.0.1:8080")
	if _, _, err := c.get("/bytes/100"); err != nil {
		t.Error(err)
	}
	lb.Stop()
	if strings.Contains(lb.Output(), "pinning") {
		t.Errorf("xlb failed to pin:\n%s", lb.Output())
	}
}

// TestUnitCapabilitiesSuffice: root with only the capabilities the systemd
// unit (docs/xlb.service) leaves in its bounding set runs and splices.
func TestUnitCapabilitiesSuffice(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	workers := startWorkers(t, ns, 1)
	caps := "-all,+bpf,+net_admin,+sys_admin,+perfmon,+net_raw"
	lb := testkit.Start(t, ns, "xlb", "setpriv", "--bounding-set="+caps, "--inh-caps=-all", testkit.XLB,
		"--socket", t.TempDir()+"/ctl.sock", "lo", "8080", workers[0])
	lb.WaitLines("worker up", 1, testkit.StartTimeout)
	c := dial(t, ns, "127.0.0.1:8080")
	for i := 0; i < 3; i++ {
		if _, _, err := c.get("/bytes/1000"); err != nil {
			t.Fatal(err)
		}
	}
	lb.Stop()
}

// TestErrorAttachUnderIPNetnsExec: `ip netns exec NS xlb attach IFACE` runs
// xlb in a mount namespace of its own whose /sys has no bpf filesystem; the
// pins that keep the program's tail calls would vanish with it. xlb says so
// and attaches nothing; under nsenter, which keeps the mount namespace, the
// same attach works and its program passes a connection's packets.
func TestErrorAttachUnderIPNetnsExec(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	out, err := exec.Command("ip", "netns", "exec", ns.Name, testkit.XLB, "attach", "lo").CombinedOutput()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	wantFailure(t, "attach under ip netns exec", code, string(out), "pins made here vanish when it exits", "nsenter --net=/run/netns/NAME")
	assertDetached(t, ns)

	code, outs := runXLB(t, ns, nil, "attach", "lo")
	if code != 0 {
		t.Fatalf("attach under nsenter: exit %d:\n%s", code, outs)
	}
	t.Cleanup(func() { ns.Command(testkit.XLB, "detach", "lo").Run() })
	workers := startWorkers(t, ns, 1)
	c := dial(t, ns, workers[0])
	if _, _, err := c.get("/bytes/100"); err != nil {
		t.Fatalf("a request through the attached program: %v", err)
	}
	if r := testkit.Status(t, ns, "lo"); r.Counters["tail_fail"] != 0 {
		t.Errorf("counters %v: tail calls failed under nsenter", r.Counters)
	}
}
