package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/splice/demo"
	"github.com/xlb-lb/xlb/testnet"
	"github.com/xlb-lb/xlb/xdp"
)

// xlbBin is the binary under test, built once by TestMain.
var xlbBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "xlb-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	xlbBin = filepath.Join(dir, "xlb")
	cmd := exec.Command("go", "build", "-o", xlbBin, "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building xlb (run make first: it builds the XDP object): %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Bounds of every wait in these tests.
const (
	startTimeout = 15 * time.Second
	stopTimeout  = 20 * time.Second
	ioTimeout    = 20 * time.Second
)

// proc is a process in a namespace whose output lines are watched.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd

	mu    sync.Mutex
	lines []string
	cond  *sync.Cond
	done  chan struct{}
	err   error
}

func startProc(t testing.TB, ns *testnet.NS, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, cmd: ns.Command(args[0], args[1:]...), done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.cond.Broadcast()
			p.mu.Unlock()
		}
		io.Copy(io.Discard, pr) // a line too long for the scanner: the writer must not block
	}()
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		<-scanned // every line is in p.lines once done is closed
		close(p.done)
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			// The process group: nginx's workers hold our pipe too.
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() || os.Getenv("XLB_E2E_VERBOSE") != "" {
			t.Logf("--- output of %s:\n%s", name, p.output())
		}
	})
	return p
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// waitLines waits until n output lines contain substr.
func (p *proc) waitLines(substr string, n int, timeout time.Duration) {
	p.t.Helper()
	if err := p.awaitLines(substr, n, timeout); err != nil {
		p.t.Fatal(err)
	}
}

// stop sends SIGINT and waits for a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		p.cmd.Process.Kill()
		p.t.Fatalf("%s did not stop within %v", p.name, stopTimeout)
	}
	if p.err != nil {
		p.t.Errorf("%s exited with %v", p.name, p.err)
	}
}

// kill kills the process and its children (SIGKILL) and waits for it.
func (p *proc) kill() {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// startWorkers runs n demo workers on 127.0.0.1:4171.. and returns their
// addresses.
func startWorkers(t testing.TB, ns *testnet.NS, n int, extra ...string) []string {
	t.Helper()
	var addrs []string
	for i := 0; i < n; i++ {
		addr := fmt.Sprintf("127.0.0.1:%d", 4171+i)
		args := append([]string{xlbBin, "demo-worker", "--name", fmt.Sprintf("w%d", i+1)}, extra...)
		p := startProc(t, ns, "worker "+addr, append(args, addr)...)
		p.waitLines("listening on", 1, startTimeout)
		addrs = append(addrs, addr)
	}
	return addrs
}

// startXLB runs xlb in ns and waits until every worker is up.
func startXLB(t testing.TB, ns *testnet.NS, iface string, port int, workers []string, flags ...string) *proc {
	t.Helper()
	args := append([]string{xlbBin}, flags...)
	args = append(args, iface, fmt.Sprint(port))
	args = append(args, workers...)
	p := startProc(t, ns, "xlb", args...)
	p.waitLines("data plane attached", 1, startTimeout)
	p.waitLines("worker up", len(workers), startTimeout)
	return p
}

// status runs `xlb status --json` in ns.
type statusReport struct {
	Attached bool              `json:"attached"`
	ProgID   uint32            `json:"prog_id"`
	Counters map[string]uint64 `json:"counters"`
	Legs     map[string]int    `json:"legs"`
}

func status(t testing.TB, ns *testnet.NS, iface string) statusReport {
	t.Helper()
	out, err := ns.Command(xlbBin, "status", "--json", iface).Output()
	if err != nil {
		t.Fatalf("xlb status: %v", err)
	}
	var r statusReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("xlb status: %v\n%s", err, out)
	}
	return r
}

// waitStatus polls xlb status until ok(report) or the timeout.
func waitStatus(t testing.TB, ns *testnet.NS, iface string, timeout time.Duration, what string, ok func(statusReport) bool) statusReport {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r := status(t, ns, iface)
		if ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; status: legs %v counters %v", timeout, what, r.Legs, r.Counters)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// client is one keep-alive HTTP/1.1 connection made inside a namespace.
type client struct {
	c net.Conn
	r *bufio.Reader
}

func dial(t testing.TB, ns *testnet.NS, addr string) *client {
	t.Helper()
	return dialFrom(t, ns, "", addr)
}

// get sends GET path and reads the response; it checks the status and that
// the body is the expected one (demo.Get). It returns the worker that
// answered and the body size.
func (c *client) get(path string) (string, int, error) { return demo.Get(c.c, c.r, path) }

// ctxTimeout is a context bounded by d, cancelled at the end of the test.
func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// startWorkersAt runs a demo worker on each address in ns (named w1, w2, ...
// in order).
func startWorkersAt(t testing.TB, ns *testnet.NS, addrs ...string) []*proc {
	t.Helper()
	var ps []*proc
	for i, addr := range addrs {
		p := startProc(t, ns, "worker "+addr, xlbBin, "demo-worker", "--name", fmt.Sprintf("w%d", i+1), addr)
		p.waitLines("listening on", 1, startTimeout)
		ps = append(ps, p)
	}
	return ps
}

// dialFrom is dial with the client socket bound to the source address local
// (any if "").
func dialFrom(t testing.TB, ns *testnet.NS, local, addr string) *client {
	t.Helper()
	var c net.Conn
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: ioTimeout}
		if local != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
		}
		var err error
		c, err = d.Dial("tcp4", addr)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, local, err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c: c, r: bufio.NewReaderSize(c, 64<<10)}
}

// sysctls sets each "key=value" in ns.
func sysctls(t testing.TB, ns *testnet.NS, kv ...string) {
	t.Helper()
	for _, s := range kv {
		ns.Run("sysctl", "-qw", s)
	}
}

// getWant sends GET path and checks that the response is 200 with exactly
// the body want (compared by SHA-256), for servers that send no hash header
// (nginx serving testproto.WebRoot).
func (c *client) getWant(path string, want []byte) error {
	c.c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := fmt.Fprintf(c.c, "GET %s HTTP/1.1\r\nHost: xlb\r\n\r\n", path); err != nil {
		return err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	if got, w := demo.Sum(body), demo.Sum(want); got != w {
		return fmt.Errorf("GET %s: body of %d bytes hashes to %s, want %d bytes hashing to %s", path, len(body), got, len(want), w)
	}
	return nil
}

// sameLegs reports whether two leg counts are equal, ignoring zero entries.
func sameLegs(a, b map[string]int) bool {
	for k, v := range a {
		if v != b[k] {
			return false
		}
	}
	for k, v := range b {
		if v != a[k] {
			return false
		}
	}
	return true
}

// sockets lists the TCP sockets in ns that match the ss filter expression
// (e.g. "( sport = :8080 )"), one line each, without the header.
func sockets(t testing.TB, ns *testnet.NS, state, filter string) []string {
	t.Helper()
	out := ns.Run("ss", "-Htan", "state", state, filter)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// ownSocket is the flag that gives an xlb a control socket of its own, so
// that instances in different namespaces (tests run side by side) never
// collide on the default path.
func ownSocket(t testing.TB) []string {
	t.Helper()
	dir, err := os.MkdirTemp("", "xlbs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return []string{"--socket", filepath.Join(dir, "ctl.sock")}
}

// waitOutput is waitLines that fails the test cleanly: it reports through
// t.Fatalf only after releasing the process's lock (waitLines calls Fatalf
// with the lock released and then unlocks it again from a defer, which
// crashes the test binary and leaves its namespaces behind).
func (p *proc) waitOutput(substr string, n int, timeout time.Duration) {
	p.t.Helper()
	if err := p.awaitLines(substr, n, timeout); err != nil {
		p.t.Fatal(err)
	}
}

// count is the number of p's output lines that contain substr.
func (p *proc) count(substr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.countLocked(substr)
}

// countLocked is count with p.mu held.
func (p *proc) countLocked(substr string) int {
	n := 0
	for _, l := range p.lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

func (p *proc) awaitLines(substr string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer timer.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.countLocked(substr) >= n {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v) before printing %q %d times:\n%s", p.name, p.err, substr, n, strings.Join(p.lines, "\n"))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not print %q %d times within %v:\n%s", p.name, substr, n, timeout, strings.Join(p.lines, "\n"))
		}
		p.cond.Wait()
	}
}

// attachForeignXDP attaches another XDP program (one that passes every
// packet) to lo in ns, generic mode, replacing one there if force, and
// returns its id. The program is closed at the end of the test.
func attachForeignXDP(t testing.TB, ns *testnet.NS, force bool) (uint32, error) {
	t.Helper()
	prog, err := ebpf.LoadProgram(&ebpf.ProgramSpec{
		Name: "other", Type: ebpf.XDP, License: "GPL",
		Instructions: []ebpf.Instruction{ebpf.Mov64Imm(ebpf.R0, 2), ebpf.Exit()},
	})
	if err != nil {
		return 0, err
	}
	t.Cleanup(func() { prog.Close() })
	var id uint32
	err = ns.Do(func() error {
		if _, err := xdp.Attach("lo", prog.FD(), xdp.AttachOptions{Mode: xdp.ModeGeneric, Force: force}); err != nil {
			return err
		}
		st, err := xdp.Query("lo")
		id = st.ProgID
		return err
	})
	return id, err
}
