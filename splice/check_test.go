package splice

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

func TestParseCheck(t *testing.T) {
	for _, tc := range []struct {
		in, path, err string
	}{
		{"tcp", "", ""},
		{"http", "/", ""},
		{"http:/health", "/health", ""},
		{"http:/a/b?x=1", "/a/b?x=1", ""},
		{"http:health", "", "must start with /"},
		{"http:/a b", "", "no space"},
		{"udp", "", "must be tcp or http:/PATH"},
		{"", "", "must be tcp or http:/PATH"},
	} {
		c, err := ParseCheck(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want one saying %q", tc.in, err, tc.err)
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case tc.err == "" && (c.HTTPPath != tc.path || c.Rise != DefaultRise || c.Fall != DefaultFall || c.Interval != DefaultCheckInterval):
			t.Errorf("%q: %+v", tc.in, c)
		}
	}
	c, _ := ParseCheck("tcp")
	for _, bad := range []func(*CheckSpec){
		func(c *CheckSpec) { c.Interval = time.Millisecond },
		func(c *CheckSpec) { c.Timeout = 0 },
		func(c *CheckSpec) { c.Rise = 0 },
		func(c *CheckSpec) { c.Fall = -1 },
	} {
		b := c
		bad(&b)
		if b.Validate() == nil {
			t.Errorf("%+v validated", b)
		}
	}
	if err := c.Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

// answerWith serves each connection on a loopback port with reply (nothing
// read first when reply is empty: the connection is closed at once).
func answerWith(t *testing.T, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if reply == "" {
					return
				}
				buf := make([]byte, 4096)
				n, _ := c.Read(buf)
				if !strings.HasPrefix(string(buf[:n]), "GET /health HTTP/1.1\r\n") {
					io.WriteString(c, "HTTP/1.1 400 Bad Request\r\n\r\n")
					return
				}
				if reply != "silent" {
					io.WriteString(c, reply)
				} else {
					time.Sleep(time.Second)
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestProbe(t *testing.T) {
	closed := func() string {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}()
	httpCheck := CheckSpec{HTTPPath: "/health", Timeout: 300 * time.Millisecond}
	tcpCheck := CheckSpec{Timeout: 300 * time.Millisecond}
	for _, tc := range []struct {
		name  string
		c     CheckSpec
		addr  string
		fails string // "" passes
	}{
		{"tcp up", tcpCheck, answerWith(t, ""), ""},
		{"tcp refused", tcpCheck, closed, "refused"},
		{"http 200", httpCheck, answerWith(t, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), ""},
		{"http 302", httpCheck, answerWith(t, "HTTP/1.0 302 Found\r\n\r\n"), ""},
		{"http 500", httpCheck, answerWith(t, "HTTP/1.1 500 Internal Server Error\r\n\r\n"), "HTTP 500"},
		{"http 404", httpCheck, answerWith(t, "HTTP/1.1 404 Not Found\r\n\r\n"), "HTTP 404"},
		{"not http", httpCheck, answerWith(t, "+PONG\r\n"), "not an HTTP answer"},
		{"closed", httpCheck, answerWith(t, ""), "no status line"},
		{"silent", httpCheck, answerWith(t, "silent"), "timeout"},
	} {
		start := time.Now()
		err := tc.c.probe(context.Background(), tc.addr)
		switch {
		case tc.fails == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.fails != "" && (err == nil || !strings.Contains(err.Error(), tc.fails)):
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.fails)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s: took %v, past its timeout", tc.name, d)
		}
	}
}

func TestWeightNow(t *testing.T) {
	lb := &LB{cfg: Config{SlowStart: time.Second}}
	up := time.Unix(1000, 0)
	w := &worker{lb: lb, spec: WorkerSpec{Weight: 10}, upSince: up}
	for _, tc := range []struct {
		at   time.Duration
		want int
	}{
		{0, 1}, {100 * time.Millisecond, 1}, {250 * time.Millisecond, 3}, {500 * time.Millisecond, 5},
		{999 * time.Millisecond, 10}, {time.Second, 10}, {time.Hour, 10},
	} {
		if got := w.weightNow(up.Add(tc.at)); got != tc.want {
			t.Errorf("%v after coming up: weight %d, want %d", tc.at, got, tc.want)
		}
	}
	w.checkDown = true
	if got := w.weightNow(up.Add(time.Hour)); got != 0 {
		t.Errorf("down: weight %d", got)
	}
	w.checkDown, w.draining = false, true
	if got := w.weightNow(up.Add(time.Hour)); got != 0 {
		t.Errorf("draining: weight %d", got)
	}
	w.draining, w.spec.Weight = false, 0
	if got := w.weightNow(up.Add(100 * time.Millisecond)); got != 0 {
		t.Errorf("weight 0 in slow start: weight %d", got)
	}
	lb.cfg.SlowStart = 0
	w.spec.Weight = 4
	if got := w.weightNow(up); got != 4 {
		t.Errorf("no slow start: weight %d", got)
	}
}

// TestCheckedRiseFall: Fall failures in a row mark a worker down, Rise
// passes in a row bring it back; a pass between failures restarts the count.
func TestCheckedRiseFall(t *testing.T) {
	lb := &LB{cfg: Config{}, log: slog.New(slog.DiscardHandler)}
	w := &worker{lb: lb, spec: WorkerSpec{Weight: 1}, kick: make(chan struct{}, 1)}
	c := CheckSpec{Rise: 2, Fall: 3}
	fail := io.ErrUnexpectedEOF
	steps := []struct {
		err  error
		down bool
	}{
		{fail, false}, {fail, false}, {nil, false}, // a pass resets the count
		{fail, false}, {fail, false}, {fail, true},
		{nil, true}, {fail, true}, {nil, true}, {nil, false},
	}
	for i, s := range steps {
		w.checkedNoSchedule(c, s.err)
		if w.checkDown != s.down {
			t.Fatalf("step %d (%v): down %v, want %v", i, s.err, w.checkDown, s.down)
		}
	}
	if w.checks != uint64(len(steps)) || w.failedChecks != 6 {
		t.Errorf("checks %d, failed %d", w.checks, w.failedChecks)
	}
	if w.upSince.IsZero() || w.checkErr != nil {
		t.Errorf("back up: upSince %v, checkErr %v", w.upSince, w.checkErr)
	}
}
