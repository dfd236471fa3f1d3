package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/internal/testproto"
	"github.com/xlb-lb/xlb/testnet"
)

// TestPinnedClientOperations: a TLS client is pinned to its worker
// connection, and every operation says so: xlb ctl clients shows the
// protocol and the reason, the stats and metrics count it, xlb ctl rematch
// refuses it with an error that says why, and a drain of its worker waits
// for it up to --drain-timeout, then closes its connection, and the drain
// completes. Plain HTTP clients beside it are balanced as ever.
func TestPinnedClientOperations(t *testing.T) {
	testnet.RequireRoot(t)
	testkit.NeedTools(t, "nginx")
	ns := testnet.New(t)
	farm := tlsFarm(t, ns)
	sock := testkit.OwnSocket(t)
	metrics := "127.0.0.1:9464"
	lb := startXLB(t, ns, "lo", 8080, farm.addrs, append(sock, "--drain-timeout", "1s", "--metrics", metrics)...)
	defer lb.Stop()

	var tc *tls.Conn
	err := ns.Do(func() error {
		var err error
		tc, err = tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp4", "127.0.0.1:8080",
			&tls.Config{InsecureSkipVerify: true, ServerName: testproto.ServerName})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	r := bufio.NewReader(tc)
	if err := tlsGet(tc, r, 1000); err != nil {
		t.Fatal(err)
	}

	// ctl clients: protocol and reason.
	var clients []struct {
		Client, Worker, Protocol, Pinned string
	}
	if err := json.Unmarshal(ctl(t, ns, sock[1], "clients", "--json"), &clients); err != nil {
		t.Fatal(err)
	}
	local := tc.LocalAddr().String()
	var worker string
	for _, c := range clients {
		if c.Client == local {
			worker = c.Worker
			if c.Protocol != "opaque" || c.Pinned != "tls" {
				t.Errorf("ctl clients: %s protocol %q pinned %q, want opaque, tls", local, c.Protocol, c.Pinned)
			}
		}
	}
	if worker == "" {
		t.Fatalf("ctl clients does not list %s: %+v", local, clients)
	}
	text := string(ctl(t, ns, sock[1], "clients"))
	if !strings.Contains(text, "PINNED") || !strings.Contains(text, "tls") {
		t.Errorf("ctl clients table without the pin:\n%s", text)
	}

	// Stats and metrics count it.
	st := testkit.Status(t, ns, "lo")
	if st.Counters["pin_tls"] != 1 || st.Legs["pinned/tls"] != 1 {
		t.Errorf("pin_tls %d, legs pinned/tls %d; want 1, 1", st.Counters["pin_tls"], st.Legs["pinned/tls"])
	}
	m, err := ns.Command("curl", "-sS", "http://"+metrics+"/metrics").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`xlb_client_legs_pinned{reason="tls"} 1`, `xlb_dataplane_pin_tls_total 1`} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics without %q", want)
		}
	}

	// rematch refuses it, saying why.
	other := farm.addrs[0]
	if other == worker {
		other = farm.addrs[1]
	}
	out, err := ns.Command(testkit.XLB, "ctl", "--socket", sock[1], "rematch", local, other).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "pinned") || !strings.Contains(string(out), "tls") {
		t.Errorf("rematch of a pinned client: %v\n%s\nwant an error saying it is pinned (tls)", err, out)
	}
	if err := tlsGet(tc, r, 100000); err != nil {
		t.Fatalf("the pinned client after the refused rematch: %v", err)
	}

	// A drain of its worker waits for it, up to --drain-timeout; then its
	// connection is closed and the drain completes.
	start := time.Now()
	ctl(t, ns, sock[1], "drain", worker)
	tc.SetDeadline(time.Now().Add(ioTimeout))
	n, err := r.Read(make([]byte, 1))
	waited := time.Since(start)
	if !errors.Is(err, io.EOF) && !isReset(err) {
		t.Errorf("pinned client of a draining worker: read %d bytes, %v; want its connection closed", n, err)
	}
	if waited < time.Second {
		t.Errorf("the pinned client was closed %v after the drain began, before --drain-timeout 1s", waited)
	}
	lb.WaitLines("drain timeout", 1, 10*time.Second)
	lb.WaitLines(fmt.Sprintf(`msg="worker drained: no connection left" worker=%s`, worker), 1, 10*time.Second)
	t.Logf("pinned client closed %v after the drain began", waited.Round(10*time.Millisecond))
}

// isReset says whether err is a connection reset (a TLS client may see the
// close as one).
func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "reset by peer") || strings.Contains(err.Error(), "broken pipe"))
}
