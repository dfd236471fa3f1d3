package main

// The client mode (scale -client): one process opens its share of the
// connections from one source address, does a few keep-alive requests on
// each with pauses, checks every body byte, then holds them all idle until
// its parent says "finish" on stdin: one more request on each, then close.
// A process holds at most perClient connections: RLIMIT_NOFILE's hard limit
// is 20,000 on the machines this runs on, and cannot be raised.
//
// It talks to its parent in JSON lines on stdout (clientReport), one per
// phase: "hello" (started), "connected" (every dial done), "ready" (every
// connection done with its first requests, all idle), "done".

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds of the client's work.
const (
	// dialsInFlight bounds the handshakes (and first requests) one client
	// process has under way: the balancers' handshake tables and listen
	// backlogs see at most clients × dialsInFlight.
	dialsInFlight = 64
	// dialAttempts is how many times a connection is tried before it
	// counts as failed (every failed attempt is an error in the report).
	dialAttempts = 3
	// ioTimeout bounds every dial, request and answer.
	ioTimeout = 30 * time.Second
	// finishers is how many connections do their last request at once.
	finishers = 256
)

type clientOpts struct {
	src      string // source address
	addr     string // the balancer
	conns    int
	requests int // before the hold; one more after it
	pauseMin time.Duration
	pauseMax time.Duration
	path     string
	seed     uint64
}

// clientReport is one line to the parent.
type clientReport struct {
	Phase     string `json:"phase"`
	Src       string `json:"src"`
	Conns     int64  `json:"conns"`     // connections open
	Requests  int64  `json:"requests"`  // answers whose body was checked and right
	Bytes     int64  `json:"bytes"`     // body bytes checked
	Errors    int64  `json:"errors"`    // failed dials, requests, wrong bodies
	Redials   int64  `json:"redials"`   // dial attempts after a failure
	FirstErr  string `json:"first_err"` // the first error, for the report
	ElapsedMs int64  `json:"elapsed_ms"`
}

type clientStats struct {
	conns, requests, bytes, errors, redials atomic.Int64
	mu                                      sync.Mutex
	firstErr                                string
}

func (s *clientStats) fail(err error) {
	s.errors.Add(1)
	s.mu.Lock()
	if s.firstErr == "" {
		s.firstErr = err.Error()
	}
	s.mu.Unlock()
}

func (s *clientStats) report(phase, src string, start time.Time) {
	s.mu.Lock()
	first := s.firstErr
	s.mu.Unlock()
	b, _ := json.Marshal(clientReport{Phase: phase, Src: src, Conns: s.conns.Load(),
		Requests: s.requests.Load(), Bytes: s.bytes.Load(), Errors: s.errors.Load(),
		Redials: s.redials.Load(), FirstErr: first, ElapsedMs: time.Since(start).Milliseconds()})
	os.Stdout.Write(append(b, '\n'))
}

func clientMain(args []string) int {
	var o clientOpts
	fs := flag.NewFlagSet("scale -client", flag.ContinueOnError)
	fs.StringVar(&o.src, "src", "127.0.0.11", "source address")
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "balancer address")
	fs.IntVar(&o.conns, "conns", 1000, "connections")
	fs.IntVar(&o.requests, "requests", 3, "requests per connection before the hold")
	fs.DurationVar(&o.pauseMin, "pause-min", time.Second, "shortest pause between two requests")
	fs.DurationVar(&o.pauseMax, "pause-max", 3*time.Second, "longest pause between two requests")
	fs.StringVar(&o.path, "path", "/"+bodyName, "path of the body")
	fs.Uint64Var(&o.seed, "seed", 1, "seed of the pauses")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if o.conns < 1 || o.conns > perClient || o.requests < 1 || o.pauseMax < o.pauseMin {
		fmt.Fprintf(os.Stderr, "scale -client: -conns 1..%d, -requests >= 1, -pause-max >= -pause-min\n", perClient)
		return 2
	}
	c := &client{o: o, want: body(), conns: make([]net.Conn, o.conns)}
	c.req = []byte("GET " + o.path + " HTTP/1.1\r\nHost: scale\r\n\r\n")
	c.readers.New = func() any { return bufio.NewReaderSize(nil, 4096) }
	in := bufio.NewScanner(os.Stdin)
	c.stats.report("hello", o.src, time.Now())
	if !in.Scan() || in.Text() != "go" {
		return 1
	}
	start := time.Now()
	c.open()
	c.stats.report("connected", o.src, start)
	c.wg.Wait()
	c.stats.report("ready", o.src, start)
	if !in.Scan() || in.Text() != "finish" {
		return 1
	}
	c.finish()
	c.stats.report("done", o.src, start)
	return 0
}

type client struct {
	o       clientOpts
	want    []byte
	req     []byte
	readers sync.Pool // bufio.Readers, taken for one answer: an idle connection holds none
	conns   []net.Conn
	stats   clientStats
	wg      sync.WaitGroup // connections still in their first requests
}

// open dials every connection, at most dialsInFlight at once, each doing
// its first request before the next dial may start; it returns when every
// dial is done. The connections' later requests run on (c.wg).
func (c *client) open() {
	sem := make(chan struct{}, dialsInFlight)
	rng := rand.New(rand.NewPCG(c.o.seed, 0))
	d := net.Dialer{Timeout: ioTimeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(c.o.src)}}
	for i := range c.conns {
		pauses := make([]time.Duration, c.o.requests-1)
		for j := range pauses {
			pauses[j] = c.o.pauseMin + time.Duration(rng.Int64N(int64(c.o.pauseMax-c.o.pauseMin)+1))
		}
		sem <- struct{}{}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			conn := c.dial(&d)
			if conn == nil {
				<-sem
				return
			}
			ok := c.request(conn)
			<-sem
			for _, p := range pauses {
				if !ok {
					break
				}
				time.Sleep(p) // the pause between two requests is the workload
				ok = c.request(conn)
			}
			if !ok {
				conn.Close()
				c.stats.conns.Add(-1)
				return
			}
			c.conns[i] = conn
		}()
	}
	for range dialsInFlight {
		sem <- struct{}{}
	}
}

func (c *client) dial(d *net.Dialer) net.Conn {
	for attempt := range dialAttempts {
		if attempt > 0 {
			c.stats.redials.Add(1)
		}
		conn, err := d.Dial("tcp4", c.o.addr)
		if err == nil {
			c.stats.conns.Add(1)
			return conn
		}
		c.stats.fail(fmt.Errorf("dial: %w", err))
	}
	return nil
}

// request sends one request and checks the whole answer: status, length,
// every body byte, nothing more.
func (c *client) request(conn net.Conn) bool {
	conn.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := conn.Write(c.req); err != nil {
		c.stats.fail(fmt.Errorf("write: %w", err))
		return false
	}
	r := c.readers.Get().(*bufio.Reader)
	r.Reset(conn)
	defer func() { r.Reset(nil); c.readers.Put(r) }()
	n, err := c.readAnswer(r)
	if err == nil && r.Buffered() > 0 {
		err = fmt.Errorf("%d bytes after the answer", r.Buffered())
	}
	if err != nil {
		c.stats.fail(fmt.Errorf("%s: %w", conn.LocalAddr(), err))
		return false
	}
	c.stats.requests.Add(1)
	c.stats.bytes.Add(int64(n))
	return true
}

var errBody = errors.New("body differs from the file served")

func (c *client) readAnswer(r *bufio.Reader) (int, error) {
	status, err := r.ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("status line: %w", err)
	}
	if !strings.HasPrefix(status, "HTTP/1.1 200 ") {
		return 0, fmt.Errorf("status %q", strings.TrimSpace(status))
	}
	length := -1
	for range 100 { // header lines; nginx sends about ten
		line, err := r.ReadString('\n')
		if err != nil {
			return 0, fmt.Errorf("header: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		k, v, _ := strings.Cut(line, ":")
		if strings.EqualFold(k, "Content-Length") {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if length != len(c.want) {
		return 0, fmt.Errorf("Content-Length %d, want %d", length, len(c.want))
	}
	var buf [4096]byte
	for off := 0; off < length; {
		n, err := r.Read(buf[:min(len(buf), length-off)])
		if n > 0 && !bytes.Equal(buf[:n], c.want[off:off+n]) {
			return 0, fmt.Errorf("at byte %d: %w", off, errBody)
		}
		off += n
		if err != nil && off < length {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, fmt.Errorf("body: %w", err)
		}
	}
	return length, nil
}

// finish does one more request on every connection still open, then closes
// it (the client closes first, as browsers do).
func (c *client) finish() {
	next := make(chan net.Conn)
	var wg sync.WaitGroup
	for range finishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for conn := range next {
				c.request(conn)
				conn.Close()
				c.stats.conns.Add(-1)
			}
		}()
	}
	for _, conn := range c.conns {
		if conn != nil {
			next <- conn
		}
	}
	close(next)
	wg.Wait()
}

// bodyName is the file the workers serve and bodySize its size: more than
// two segments, so that answers are split and joined on the way.
const (
	bodyName = "b4k"
	bodySize = 4096
)

// body is the served file: pseudo-random bytes, the same in every process.
func body() []byte {
	b := make([]byte, bodySize)
	x := uint64(0x9e3779b97f4a7c15)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}
