package demo

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serve runs Handler("w1", 0) on a loopback port for the test.
func serve(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: Handler("w1", 0)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func dialT(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return c, bufio.NewReader(c)
}

// TestUploadSendsContinueFirst checks the exchange on the wire, as a raw
// client sees it: headers with Expect: 100-continue, then exactly
// `HTTP/1.1 100 Continue` and nothing else until the body is sent, then the
// final response with the body's hash; twice on one connection.
func TestUploadSendsContinueFirst(t *testing.T) {
	c, r := dialT(t, serve(t))
	for i, n := range []int{3 << 20, 100000} {
		body := Body(n)
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n", UploadPath, n)
		var interim []string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("upload %d: reading the interim response: %v (so far %q)", i, err, interim)
			}
			interim = append(interim, line)
			if line == "\r\n" {
				break
			}
		}
		if got := strings.Join(interim, ""); got != "HTTP/1.1 100 Continue\r\n\r\n" {
			t.Fatalf("upload %d: before the body the worker sent %q, want only 100 Continue", i, got)
		}
		// Nothing more until the body comes.
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if b, err := r.Peek(1); err == nil {
			t.Fatalf("upload %d: the worker sent %q after 100 Continue, before the body", i, b)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.Write(body); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatalf("upload %d: %v", i, err)
		}
		got, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(got) != Sum(body)+"\n" || resp.Header.Get("X-Body-Length") != fmt.Sprint(n) {
			t.Fatalf("upload %d: %s %q (length %s), want 200 %q", i, resp.Status, got, resp.Header.Get("X-Body-Length"), Sum(body))
		}
	}
}

// TestEchoUpgrade: the 101, echoes interleaved with pushes the worker sends
// on its own, and a broken frame reported rather than echoed.
func TestEchoUpgrade(t *testing.T) {
	addr := serve(t)
	c, r := dialT(t, addr)
	w, err := Upgrade(c, r, "xlb-echo")
	if err != nil || w != "w1" {
		t.Fatalf("upgrade: worker %q, %v", w, err)
	}
	if err := WriteFrame(c, FramePush, PushRequest(3, 5000, 10*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	pushes, echoes := 0, 0
	sent := [][]byte{Body(1), Body(70000), {}}
	for _, p := range sent {
		WriteFrame(c, FrameEcho, p)
	}
	for pushes < 3 || echoes < len(sent) {
		op, p, err := ReadFrame(r)
		if err != nil {
			t.Fatalf("after %d pushes and %d echoes: %v", pushes, echoes, err)
		}
		if op == FramePushed {
			if err := CheckFrame(op, p, FramePushed, "w1", Body(5000)); err != nil {
				t.Fatalf("push %d: %v", pushes, err)
			}
			pushes++
			continue
		}
		if err := CheckFrame(op, p, FrameEchoed, "w1", sent[echoes]); err != nil {
			t.Fatalf("echo %d: %v", echoes, err)
		}
		echoes++
	}
	// An HTTP request on an upgraded connection is not a frame.
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	op, p, err := ReadFrame(r)
	if err != nil || op != '!' || !bytes.Contains(p, []byte("not an echo frame")) {
		t.Errorf("after a stray request: op %q %q %v, want an error frame", op, p, err)
	}

	// Without the upgrade headers: 426.
	c2, r2 := dialT(t, addr)
	io.WriteString(c2, "GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(r2, nil)
	if err != nil || resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("/echo without Upgrade: %v %v", resp, err)
	}
}
