package splice

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"
)

// Health checks, in HAProxy's vocabulary: a worker is checked every
// Interval (a TCP connect, or an HTTP GET of a path that must answer 2xx or
// 3xx within Timeout); Fall failures in a row mark it down, Rise successes
// in a row bring it back. A worker that is down takes no new request: like
// a drain, its idle connections are retired and a client on it moves at
// its next request boundary (pinned clients stay until they leave), but
// nothing is forgotten, no pinned client is closed, and no pool connection
// is opened to it until it is up again.
//
// The passive check marks a worker down that ends the pool connections it
// was given before they served anything (passiveLimit of them within
// passiveWindow, each within passiveAge of its handshake): a process that
// accepts and closes, or resets, every connection. It comes back by the
// active check (a TCP connect without --check).

// CheckSpec is --check and its settings.
type CheckSpec struct {
	HTTPPath string // "": a TCP connect; else the path of an HTTP GET
	Interval time.Duration
	Timeout  time.Duration
	Rise     int
	Fall     int
}

// Defaults of the check settings (HAProxy's: inter 2s, rise 2, fall 3).
const (
	DefaultCheckInterval = 2 * time.Second
	DefaultCheckTimeout  = time.Second
	DefaultRise          = 2
	DefaultFall          = 3
)

// Passive check settings.
const (
	passiveAge    = time.Second      // a pool connection ended younger than this, idle, counts
	passiveWindow = 10 * time.Second // ... if passiveLimit of them come within this
	passiveLimit  = 10
)

// ParseCheck reads --check: "tcp", or "http:/path" ("http" alone is
// "http:/").
func ParseCheck(s string) (CheckSpec, error) {
	c := CheckSpec{Interval: DefaultCheckInterval, Timeout: DefaultCheckTimeout, Rise: DefaultRise, Fall: DefaultFall}
	switch {
	case s == "tcp":
	case s == "http":
		c.HTTPPath = "/"
	case strings.HasPrefix(s, "http:"):
		c.HTTPPath = strings.TrimPrefix(s, "http:")
		if !strings.HasPrefix(c.HTTPPath, "/") || strings.ContainsAny(c.HTTPPath, " \r\n\t") {
			return c, fmt.Errorf("%q: the path must start with / and hold no space or line break (http:/health)", s)
		}
	default:
		return c, fmt.Errorf("%q: must be tcp or http:/PATH", s)
	}
	return c, nil
}

// Validate checks the settings' ranges.
func (c CheckSpec) Validate() error {
	switch {
	case c.Interval < 10*time.Millisecond:
		return fmt.Errorf("--check-interval %v: must be 10ms or more", c.Interval)
	case c.Timeout <= 0:
		return fmt.Errorf("--check-timeout %v: must be more than 0", c.Timeout)
	case c.Rise < 1 || c.Rise > 1000:
		return fmt.Errorf("--rise %d: must be from 1 to 1000", c.Rise)
	case c.Fall < 1 || c.Fall > 1000:
		return fmt.Errorf("--fall %d: must be from 1 to 1000", c.Fall)
	}
	return nil
}

func (c CheckSpec) String() string {
	if c.HTTPPath == "" {
		return "tcp"
	}
	return "http:" + c.HTTPPath
}

// probe runs one check of the worker at addr.
func (c CheckSpec) probe(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if c.HTTPPath == "" {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	req := "GET " + c.HTTPPath + " HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: xlb-check\r\nConnection: close\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		return err
	}
	line, err := bufio.NewReaderSize(conn, 512).ReadString('\n')
	if err != nil {
		return fmt.Errorf("no status line: %w", err)
	}
	// HTTP/1.1 200 OK
	f := strings.Fields(line)
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/") {
		return fmt.Errorf("not an HTTP answer: %q", strings.TrimSpace(line))
	}
	code, err := strconv.Atoi(f[1])
	if err != nil || code < 100 || code > 999 {
		return fmt.Errorf("bad status line %q", strings.TrimSpace(line))
	}
	if code < 200 || code >= 400 {
		return fmt.Errorf("HTTP %d", code)
	}
	return nil
}

// checkSpec is what the worker's checks use now: --check, or a TCP connect
// while the passive check holds it down; ok false: no check to run.
func (w *worker) checkSpec() (CheckSpec, bool) {
	if c := w.lb.cfg.Check; c != nil {
		return *c, true
	}
	w.mu.Lock()
	passive := w.checkDown
	w.mu.Unlock()
	return CheckSpec{Interval: DefaultCheckInterval, Timeout: DefaultCheckTimeout, Rise: DefaultRise, Fall: DefaultFall}, passive
}

// checkLoop runs the worker's health checks until ctx ends or the worker
// is removed.
func (w *worker) checkLoop(ctx context.Context) {
	interval := DefaultCheckInterval
	if c := w.lb.cfg.Check; c != nil {
		interval = c.Interval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		w.mu.Lock()
		gone := w.removing && w.drained
		w.mu.Unlock()
		if gone {
			return
		}
		c, ok := w.checkSpec()
		if !ok {
			continue
		}
		err := c.probe(ctx, w.spec.Addr.String())
		if ctx.Err() != nil {
			return
		}
		w.checked(c, err)
	}
}

// checked counts a check's result and changes the worker's health when it
// made Rise or Fall in a row.
func (w *worker) checked(c CheckSpec, err error) {
	change, fails := w.checkedNoSchedule(c, err)
	switch change {
	case "up":
		w.lb.log.Info("worker up: health check passed", "worker", w.spec.Addr, "check", c.String(), "rise", c.Rise)
	case "down":
		w.lb.log.Warn("worker down: health check failed", "worker", w.spec.Addr, "check", c.String(), "err", err, "fails", fails)
	}
	if change != "" {
		w.healthChanged()
	}
}

// checkedNoSchedule is checked's bookkeeping: the counts and the health,
// and what changed ("up", "down" or "").
func (w *worker) checkedNoSchedule(c CheckSpec, err error) (change string, fails int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.checks++
	if err == nil {
		w.checkFails = 0
		w.checkOKs++
		if w.checkDown && w.checkOKs >= c.Rise {
			w.checkDown, w.checkErr = false, nil
			w.upSince = time.Now()
			change = "up"
		}
	} else {
		w.failedChecks++
		w.checkOKs = 0
		w.checkFails++
		w.checkErr = err
		if !w.checkDown && w.checkFails >= c.Fall {
			w.checkDown = true
			change = "down"
		}
	}
	return change, w.checkFails
}

// healthChanged applies a change of the worker's health: the schedule and
// its pool follow.
func (w *worker) healthChanged() {
	w.lb.updateSchedule()
	for _, o := range w.lb.workerList() {
		o.poke() // its pool, and the others' shares of the demand
	}
}

// bornLeg is when a pool connection was made, and the end of what its
// worker had sent then (its SYN).
type bornLeg struct {
	at time.Time
	hi uint32
}

// pooledEnded notes one of the worker's pool connections ended by the
// worker while idle (the passive check), its last peer_hi: one that never
// carried an answer (a FIN at most), ended within passiveAge, counts.
func (w *worker) pooledEnded(born bornLeg, peerHi uint32) {
	if born.at.IsZero() || time.Since(born.at) > passiveAge || peerHi-born.hi > 1 {
		return
	}
	now := time.Now()
	w.mu.Lock()
	w.youngEnds = append(w.youngEnds, now)
	for len(w.youngEnds) > 0 && now.Sub(w.youngEnds[0]) > passiveWindow {
		w.youngEnds = w.youngEnds[1:]
	}
	down := !w.checkDown && len(w.youngEnds) >= passiveLimit
	if down {
		w.checkDown, w.checkOKs, w.youngEnds = true, 0, nil
		w.checkErr = errPassive
	}
	w.mu.Unlock()
	if down {
		w.lb.log.Warn("worker down: it ends the connections it is given", "worker", w.spec.Addr,
			"ended", passiveLimit, "within", passiveWindow, "each_younger_than", passiveAge)
		w.healthChanged()
	}
}

var errPassive = errors.New("passive check: it ended its new pool connections unused")

// takesRequestsLocked: the worker may be given new requests (not
// draining, not down by a check). Caller holds w.mu.
func (w *worker) takesRequestsLocked() bool { return !w.draining && !w.checkDown }

// weightNow is the worker's weight as its pool and the schedule use it: 0
// while it takes no requests; during --slowstart after it came up, ramping
// from 1 to its weight. Caller holds w.mu.
func (w *worker) weightNow(now time.Time) int {
	if !w.takesRequestsLocked() || w.spec.Weight <= 0 {
		return 0
	}
	d := w.lb.cfg.SlowStart
	if d <= 0 || w.upSince.IsZero() {
		return w.spec.Weight
	}
	el := now.Sub(w.upSince)
	if el >= d {
		return w.spec.Weight
	}
	return max(1, int(math.Ceil(float64(w.spec.Weight)*float64(el)/float64(d))))
}
