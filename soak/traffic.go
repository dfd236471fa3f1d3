package main

// The clients: short-lived ones (a connection per request), keep-alive
// ones (one connection, requests back to back with short pauses) and idle
// ones (a connection held open, a long pause, then a request, again). Each
// asks for a body of 128 B to 1 MiB and checks its length and SHA-256, and
// notes which worker answered (nginx's X-Worker header). Every failure is
// kept with what classify needs to tell whether a killed worker explains
// it.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// bodies the workers serve, by name: the same files for every worker.
var bodies = []struct {
	name   string
	size   int
	weight int // of every 100 requests
}{
	{"b128", 128, 45},
	{"b4k", 4 << 10, 30},
	{"b64k", 64 << 10, 20},
	{"b1m", 1 << 20, 5},
}

// bodyData is the content of a body: a fixed pseudo-random sequence.
func bodyData(size int) []byte {
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(uint64(size), 14))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// Client kinds.
const (
	kindShort     = "short"
	kindKeepAlive = "keepalive"
	kindIdle      = "idle"
)

// Timeouts and pauses of the clients. A request may be slow (the machine
// is small and shared): only one that does not finish within reqTimeout
// counts as failed.
const (
	reqTimeout  = 30 * time.Second
	dialTimeout = 30 * time.Second
	// Keep-alive clients pause up to keepAlivePause between requests,
	// and open a new connection after connRequests of them.
	keepAlivePause = 100 * time.Millisecond
	connRequests   = 2000
	// Idle clients pause idleMin to idleMax with their connection open,
	// and ask idleRequests times before opening a new one.
	idleMin      = 2 * time.Second
	idleMax      = 20 * time.Second
	idleRequests = 4
	// shortPause is a short-lived client's pause between connections.
	shortPause = 20 * time.Millisecond
)

// failure is one request that did not bring back the right body.
type failure struct {
	Client string    `json:"client"` // kind and number: "keepalive 3"
	Kind   string    `json:"kind"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Err    string    `json:"err"`
	// Content is set when the answer came and was wrong (a status, a
	// length, a digest, no X-Worker): never explained by a kill.
	Content bool `json:"content"`
	// Reused: the request was not the first on its connection; LastWorker
	// answered the previous one, at LastAt.
	Reused     bool      `json:"reused"`
	LastWorker string    `json:"last_worker,omitempty"`
	LastAt     time.Time `json:"last_at,omitzero"`
	// Tolerated and why, from classify.
	Tolerated bool   `json:"tolerated"`
	Why       string `json:"why"`
}

// counts are the traffic's totals.
type counts struct {
	Requests atomic.Int64 // answered and verified
	Bytes    atomic.Int64 // body bytes verified
	Conns    atomic.Int64 // connections opened
}

// traffic runs the clients until its context ends.
type traffic struct {
	addr string
	dial func(ctx context.Context, addr string) (net.Conn, error)
	// workerCloses: the share (percent) of connections whose last request
	// says Connection: close (the worker closes after its answer); the
	// others the client closes after the answer.
	workerCloses int
	counts       counts
	// byWorker counts answers by X-Worker.
	mu       sync.Mutex
	byWorker map[string]int64
	failures []failure
}

// mix is how many clients of each kind run.
type mix struct {
	Short, KeepAlive, Idle int
}

func (tr *traffic) run(ctx context.Context, m mix) {
	var wg sync.WaitGroup
	for kind, n := range map[string]int{kindShort: m.Short, kindKeepAlive: m.KeepAlive, kindIdle: m.Idle} {
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tr.client(ctx, kind, i+1)
			}()
		}
	}
	wg.Wait()
}

// conn is a client's connection and what it saw.
type conn struct {
	c          net.Conn
	br         *bufio.Reader
	requests   int
	lastWorker string
	lastAt     time.Time
}

func (tr *traffic) client(ctx context.Context, kind string, id int) {
	rng := rand.New(rand.NewPCG(uint64(id), uint64(len(kind))))
	name := fmt.Sprintf("%s %d", kind, id)
	var cn *conn
	closeConn := func() {
		if cn != nil {
			cn.c.Close()
			cn = nil
		}
	}
	defer closeConn()
	for ctx.Err() == nil {
		switch kind {
		case kindShort:
			sleep(ctx, shortPause)
		case kindKeepAlive:
			sleep(ctx, time.Duration(rng.Int64N(int64(keepAlivePause))))
		case kindIdle:
			if cn == nil { // a fresh connection is held before its first request too
				if c, err := tr.open(ctx); err == nil {
					cn = c
				}
			}
			sleep(ctx, idleMin+time.Duration(rng.Int64N(int64(idleMax-idleMin))))
		}
		if ctx.Err() != nil {
			return
		}
		start := time.Now()
		f := failure{Client: name, Kind: kind, Start: start}
		if cn == nil {
			c, err := tr.open(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				f.End, f.Err = time.Now(), "dial: "+err.Error()
				tr.fail(f)
				continue
			}
			cn = c
		}
		if cn.requests > 0 {
			f.Reused, f.LastWorker, f.LastAt = true, cn.lastWorker, cn.lastAt
		}
		body := pickBody(rng)
		last := kind == kindShort ||
			(kind == kindKeepAlive && cn.requests+1 >= connRequests) ||
			(kind == kindIdle && cn.requests+1 >= idleRequests)
		worker, err := request(cn, body, last && rng.IntN(100) < tr.workerCloses)
		if err != nil {
			if ctx.Err() != nil && !errors.As(err, new(contentError)) {
				return // cut off by the end of the run
			}
			f.End, f.Err = time.Now(), err.Error()
			f.Content = errors.As(err, new(contentError))
			tr.fail(f)
			closeConn()
			continue
		}
		cn.requests++
		cn.lastWorker, cn.lastAt = worker, time.Now()
		tr.counts.Requests.Add(1)
		tr.counts.Bytes.Add(int64(bodies[body].size))
		tr.mu.Lock()
		tr.byWorker[worker]++
		tr.mu.Unlock()
		if last {
			closeConn()
		}
	}
}

func (tr *traffic) open(ctx context.Context) (*conn, error) {
	c, err := tr.dial(ctx, tr.addr)
	if err != nil {
		return nil, err
	}
	tr.counts.Conns.Add(1)
	return &conn{c: c, br: bufio.NewReaderSize(c, 64<<10)}, nil
}

func (tr *traffic) fail(f failure) {
	tr.mu.Lock()
	tr.failures = append(tr.failures, f)
	tr.mu.Unlock()
}

func pickBody(rng *rand.Rand) int {
	r := rng.IntN(100)
	for i, b := range bodies {
		if r < b.weight {
			return i
		}
		r -= b.weight
	}
	return 0
}

// contentError is an answer that came and was wrong.
type contentError struct{ msg string }

func (e contentError) Error() string { return e.msg }

// digests of the bodies, by index.
var digests = func() [][32]byte {
	d := make([][32]byte, len(bodies))
	for i, b := range bodies {
		d[i] = sha256.Sum256(bodyData(b.size))
	}
	return d
}()

// request asks for body on cn (with closing: Connection: close) and
// checks the answer; it returns the worker that answered.
func request(cn *conn, body int, closing bool) (string, error) {
	cn.c.SetDeadline(time.Now().Add(reqTimeout))
	hdr := ""
	if closing {
		hdr = "Connection: close\r\n"
	}
	if _, err := fmt.Fprintf(cn.c, "GET /%s HTTP/1.1\r\nHost: soak\r\n%s\r\n", bodies[body].name, hdr); err != nil {
		return "", fmt.Errorf("write: %w", err)
	}
	resp, err := http.ReadResponse(cn.br, nil)
	if err != nil {
		return "", fmt.Errorf("read response: %w", err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return "", fmt.Errorf("read body (%d of %d bytes): %w", n, bodies[body].size, err)
	}
	worker := resp.Header.Get("X-Worker")
	switch {
	case resp.StatusCode != http.StatusOK:
		return worker, contentError{fmt.Sprintf("status %s from %q", resp.Status, worker)}
	case worker == "":
		return worker, contentError{"no X-Worker header"}
	case n != int64(bodies[body].size):
		return worker, contentError{fmt.Sprintf("%s: %d bytes, want %d (from %s)", bodies[body].name, n, bodies[body].size, worker)}
	case [32]byte(h.Sum(nil)) != digests[body]:
		return worker, contentError{fmt.Sprintf("%s: SHA-256 differs (from %s)", bodies[body].name, worker)}
	}
	return worker, nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// nsDialer dials from inside a network namespace: its goroutines are
// locked to threads that entered the namespace (setns), and a socket
// belongs to the namespace of the thread that made it. The threads end
// with the dialer (a goroutine that exits locked takes its thread along).
type nsDialer struct {
	reqs chan dialReq
	once sync.Once
}

type dialReq struct {
	ctx  context.Context
	addr string
	res  chan dialRes
}

type dialRes struct {
	c   net.Conn
	err error
}

// nsDialers is how many dials may be under way at once.
const nsDialers = 16

func newNSDialer(nsPath string) (*nsDialer, error) {
	d := &nsDialer{reqs: make(chan dialReq)}
	ready := make(chan error, nsDialers)
	for range nsDialers {
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err == nil {
				err = unix.Setns(fd, unix.CLONE_NEWNET)
				unix.Close(fd)
			}
			ready <- err
			if err != nil {
				return
			}
			nd := net.Dialer{Timeout: dialTimeout}
			for r := range d.reqs {
				c, err := nd.DialContext(r.ctx, "tcp", r.addr)
				r.res <- dialRes{c, err}
			}
		}()
	}
	var first error
	for range nsDialers {
		if err := <-ready; err != nil && first == nil {
			first = fmt.Errorf("enter %s: %w", nsPath, err)
		}
	}
	if first != nil {
		d.close()
		return nil, first
	}
	return d, nil
}

func (d *nsDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	r := dialReq{ctx: ctx, addr: addr, res: make(chan dialRes, 1)}
	select {
	case d.reqs <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res := <-r.res
	return res.c, res.err
}

// close ends the dialer's threads; no dial may be under way or follow.
func (d *nsDialer) close() { d.once.Do(func() { close(d.reqs) }) }

// kill is a worker killed at At and listening again at Back.
type kill struct {
	Worker string    `json:"worker"` // its X-Worker name
	At     time.Time `json:"at"`
	Back   time.Time `json:"back"`
}

// Bounds of what a kill explains.
const (
	// killSettle: after the restarted worker listens, requests sent to the
	// killed one's connections (still in xlb's pool until it sees them
	// close) may fail for this long.
	killSettle = 5 * time.Second
	// keepAliveAfterKill: a client connection that was served by the
	// killed worker right before the kill may find out at its next
	// request, after an idle client's longest pause.
	keepAliveAfterKill = idleMax + reqTimeout + killSettle
)

// classify decides whether each failure is explained by a kill: only a
// connection-level failure (no answer, a cut one, a reset: never a wrong
// answer) is, either
//   - in flight on a killed worker: the request was under way while the
//     worker was dead (between the kill and killSettle after it listened
//     again); or
//   - on a client connection whose worker connection was killed: the
//     connection's previous answer came from the killed worker before the
//     kill, and this request started within keepAliveAfterKill of it.
//
// It sets Tolerated and Why, and returns how many are not tolerated.
func classify(fs []failure, kills []kill) int {
	bad := 0
	for i := range fs {
		f := &fs[i]
		f.Tolerated, f.Why = false, "not explained by a kill"
		if f.Content {
			f.Why = "a wrong answer: never explained by a kill"
			bad++
			continue
		}
		for _, k := range kills {
			if !f.Start.After(k.Back.Add(killSettle)) && !f.End.Before(k.At) {
				f.Tolerated, f.Why = true, fmt.Sprintf("in flight while %s was killed", k.Worker)
				break
			}
			if f.Reused && f.LastWorker == k.Worker && f.LastAt.Before(k.At) && !f.Start.Before(k.At) &&
				f.Start.Before(k.At.Add(keepAliveAfterKill)) {
				f.Tolerated, f.Why = true, fmt.Sprintf("its connection was served by %s, killed since", k.Worker)
				break
			}
		}
		if !f.Tolerated {
			bad++
		}
	}
	return bad
}
