package e2e

import (
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/testkit"
	"github.com/xlb-lb/xlb/testnet"
)

// pausingWorker is an HTTP/1.1 keep-alive server (Python's sockets) whose
// /slow answer (20,000 bytes, Content-Length) stops after its first 1,000
// body bytes for 1.5 s; every answer says which of its connections served
// it (X-Conn).
const pausingWorker = `
import socket, threading, time
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 4171))
srv.listen(64)
def serve(c, n):
    buf = b""
    try:
        while True:
            while b"\r\n\r\n" not in buf:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
            req, buf = buf.split(b"\r\n\r\n", 1)
            path = req.split(b" ")[1]
            if path == b"/slow":
                body = b"s" * 20000
                c.sendall(b"HTTP/1.1 200 OK\r\nX-Conn: %d\r\nContent-Length: 20000\r\n\r\n" % n + body[:1000])
                time.sleep(1.5)
                c.sendall(body[1000:])
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\nX-Conn: %d\r\nContent-Length: 5\r\n\r\nsmall" % n)
    except OSError:
        pass
    finally:
        c.close()
n = 0
while True:
    c, _ = srv.accept()
    n += 1
    threading.Thread(target=serve, args=(c, n), daemon=True).start()
`

// TestClientLeavesMidAnswer: a client reads all its worker sent so far of
// an answer, which stops in the middle (a worker descheduled, a slow
// backend), and closes: its FIN comes with every byte sent acknowledged and
// the worker silent, as between two exchanges. Only the answer's length
// (Content-Length: 20,000, of which 1,000 were sent) says otherwise. Its
// worker connection must not serve the next client: handed over, the rest of
// the answer would reach that client before its own (make bench saw curl
// fail with "Received HTTP/0.9" after wrk's clients left mid-answer). One
// worker connection at a time (--pool 1 --worker-conns 1), so the next
// client would get that one.
func TestClientLeavesMidAnswer(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	w := testkit.Start(t, ns, "python worker", "python3", "-c", pausingWorker)
	w.WaitAccepts(ns, "127.0.0.1:4171")
	lb := startXLB(t, ns, "lo", 8080, []string{"127.0.0.1:4171"}, append(testkit.OwnSocket(t), "--pool", "1", "--worker-conns", "1")...)
	defer lb.Stop()

	c1 := dial(t, ns, "127.0.0.1:8080")
	// Acknowledge each segment at once: when the read returns, the client
	// has acknowledged all it was sent.
	if err := c1.c.(*net.TCPConn).SetNoDelay(true); err != nil {
		t.Fatal(err)
	}
	quickAck := func() {
		raw, err := c1.c.(*net.TCPConn).SyscallConn()
		if err == nil {
			raw.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1) })
		}
	}
	quickAck()
	if _, err := io.WriteString(c1.c, "GET /slow HTTP/1.1\r\nHost: xlb\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	c1.c.SetReadDeadline(time.Now().Add(ioTimeout))
	resp, err := http.ReadResponse(c1.r, nil)
	if err != nil {
		t.Fatalf("first client: %v", err)
	}
	first := resp.Header.Get("X-Conn")
	got := 0
	for got < 1000 {
		quickAck()
		n, err := resp.Body.Read(make([]byte, 1000-got))
		if err != nil {
			t.Fatalf("first client, after %d body bytes: %v", got+n, err)
		}
		got += n
	}
	quickAck()
	c1.c.Close() // FIN: nothing unread

	// The client's leg is gone from the pair: the worker connection was
	// handed back (cooled, pooled) or left to end with its answer.
	testkit.WaitStatus(t, ns, "lo", 5*time.Second, "the first client's pair undone", func(r testkit.StatusReport) bool {
		return r.Legs["client/bound"] == 0 && r.Legs["worker/cooling"] == 0
	})
	c2 := dial(t, ns, "127.0.0.1:8080")
	if _, err := io.WriteString(c2.c, "GET /small HTTP/1.1\r\nHost: xlb\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	c2.c.SetReadDeadline(time.Now().Add(ioTimeout))
	resp, err = http.ReadResponse(c2.r, nil)
	if err != nil {
		peek, _ := c2.r.Peek(c2.r.Buffered())
		t.Fatalf("second client: %s (buffered %q): the rest of the first client's answer reached it", clip(err.Error(), 80), clip(string(peek), 60))
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil || string(body) != "small" {
		t.Fatalf("second client: body %q, %v", clip(string(body), 60), err)
	}
	if second := resp.Header.Get("X-Conn"); second == first {
		t.Errorf("the second client was served on the worker connection the first left mid-answer (X-Conn %s)", first)
	}
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
