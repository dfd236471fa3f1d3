package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/splice/demo"
	"github.com/xlb-lb/xlb/testnet"
	"github.com/xlb-lb/xlb/xdp"
)

func TestMain(m *testing.M) { testkit.Main(m, nil) }

// Bound of every read and dial in these tests (starts and stops:
// testkit.StartTimeout and testkit.StopTimeout).
const ioTimeout = 20 * time.Second

// startWorkers runs n demo workers on 127.0.0.1:4171.. and returns their
// addresses.
func startWorkers(t testing.TB, ns *testnet.NS, n int, extra ...string) []string {
	t.Helper()
	var addrs []string
	for i := 0; i < n; i++ {
		addr := fmt.Sprintf("127.0.0.1:%d", 4171+i)
		args := append([]string{testkit.XLB, "demo-worker", "--name", fmt.Sprintf("w%d", i+1)}, extra...)
		p := testkit.Start(t, ns, "worker "+addr, append(args, addr)...)
		p.WaitLines("listening on", 1, testkit.StartTimeout)
		addrs = append(addrs, addr)
	}
	return addrs
}

// startXLB runs xlb in ns and waits until every worker is up.
func startXLB(t testing.TB, ns *testnet.NS, iface string, port int, workers []string, flags ...string) *testkit.Proc {
	t.Helper()
	args := append([]string{testkit.XLB}, flags...)
	args = append(args, iface, fmt.Sprint(port))
	args = append(args, workers...)
	p := testkit.Start(t, ns, "xlb", args...)
	p.WaitLines("data plane attached", 1, testkit.StartTimeout)
	p.WaitLines("worker up", len(workers), testkit.StartTimeout)
	return p
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
func startWorkersAt(t testing.TB, ns *testnet.NS, addrs ...string) []*testkit.Proc {
	t.Helper()
	var ps []*testkit.Proc
	for i, addr := range addrs {
		p := testkit.Start(t, ns, "worker "+addr, testkit.XLB, "demo-worker", "--name", fmt.Sprintf("w%d", i+1), addr)
		p.WaitLines("listening on", 1, testkit.StartTimeout)
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
		c, err = d.Dial("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, local, err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{c: c, r: bufio.NewReaderSize(c, 64<<10)}
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
