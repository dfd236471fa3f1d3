package testkit

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/testnet"
)

// pollInterval is the pace of the waits that poll xlb (status, stats):
// the tables change on their own, no event says when.
const pollInterval = 50 * time.Millisecond

// StatusReport is the part of `xlb status --json IFACE` the tests read.
type StatusReport struct {
	Attached bool              `json:"attached"`
	Mode     string            `json:"mode"`
	ProgID   uint32            `json:"prog_id"`
	Counters map[string]uint64 `json:"counters"`
	Legs     map[string]int    `json:"legs"`
}

// Status runs `xlb status --json iface` in ns.
func Status(t testing.TB, ns *testnet.NS, iface string) StatusReport {
	t.Helper()
	r, err := StatusErr(ns, iface)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// StatusErr is Status that returns its error, for a goroutine other than
// the test's.
func StatusErr(ns *testnet.NS, iface string) (StatusReport, error) {
	var r StatusReport
	out, err := ns.Command(XLB, "status", "--json", iface).Output()
	if err != nil {
		return r, fmt.Errorf("xlb status: %w", err)
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return r, fmt.Errorf("xlb status: %w\n%s", err, out)
	}
	return r, nil
}

// WaitStatus polls `xlb status` on iface in ns until ok(report) or the
// timeout (the test fails then, with the last report); each change of the
// leg table on the way is logged.
func WaitStatus(t testing.TB, ns *testnet.NS, iface string, timeout time.Duration, what string, ok func(StatusReport) bool) StatusReport {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	var seen map[string]int
	for {
		r := Status(t, ns, iface)
		if ok(r) {
			return r
		}
		if !SameLegs(r.Legs, seen) {
			t.Logf("%s: after %v legs %v", what, time.Since(start).Round(time.Millisecond), r.Legs)
			seen = r.Legs
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; legs %v counters %v", timeout, what, r.Legs, r.Counters)
		}
		time.Sleep(pollInterval)
	}
}

// Stable is a condition on consecutive reads: it holds once ok held, with
// the same leg table, for at least reads reads spanning at least d.
type Stable struct {
	reads int
	d     time.Duration
	last  map[string]int
	n     int
	since time.Time
}

// NewStable is a Stable of reads reads and d.
func NewStable(reads int, d time.Duration) *Stable { return &Stable{reads: reads, d: d} }

// Next takes one read: the leg table, whether the condition holds, the time
// of the read. It reports whether the condition is stable.
func (s *Stable) Next(legs map[string]int, ok bool, now time.Time) bool {
	if !ok || s.n == 0 || !SameLegs(legs, s.last) {
		s.n, s.since = 0, now
	}
	s.last = legs
	if ok {
		s.n++
	}
	return s.n >= s.reads && now.Sub(s.since) >= s.d
}

// Full pools are stable this long (and this many reads of xlb status).
const (
	poolsStableReads = 4
	poolsStableFor   = 300 * time.Millisecond
)

// OnlyIdleWorkers reports whether a leg table holds idle worker legs and
// nothing else (no client leg, binding, closing, cooling or dead leg).
func OnlyIdleWorkers(legs map[string]int) bool {
	for k, v := range legs {
		if v != 0 && k != "worker/idle" {
			return false
		}
	}
	return legs["worker/idle"] > 0
}

// WaitPoolsFull waits until the leg table on iface holds only idle worker
// legs and is unchanged for poolsStableReads reads spanning poolsStableFor
// (the pools stopped filling), and returns that table.
func WaitPoolsFull(t testing.TB, ns *testnet.NS, iface string, timeout time.Duration) map[string]int {
	t.Helper()
	s := NewStable(poolsStableReads, poolsStableFor)
	r := WaitStatus(t, ns, iface, timeout, "full worker pools", func(r StatusReport) bool {
		return s.Next(r.Legs, OnlyIdleWorkers(r.Legs), time.Now())
	})
	return r.Legs
}

// SameLegs reports whether two leg counts are equal, ignoring zero entries.
func SameLegs(a, b map[string]int) bool {
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

// StatsWorker and StatsReport are the parts of `xlb stats --json` the
// tests read.
type StatsWorker struct {
	Addr      string `json:"addr"`
	State     string `json:"state"`
	Requests  uint64 `json:"requests"`
	BytesIn   uint64 `json:"bytes_in"`
	BytesOut  uint64 `json:"bytes_out"`
	Releases  uint64 `json:"releases"`
	Legs      int    `json:"legs"`
	Bound     int    `json:"bound"`
	Idle      int    `json:"idle"`
	Cooling   int    `json:"cooling"`
	Weight    int    `json:"weight"`
	WeightNow int    `json:"weight_now"` // ramping during --slowstart; 0 while down
	// Latency of the requests logged (--log-requests), milliseconds.
	Logged       uint64  `json:"logged"`
	LatencyP50Ms float64 `json:"latency_p50_ms"`
	LatencyP99Ms float64 `json:"latency_p99_ms"`
	TTFBP50Ms    float64 `json:"ttfb_p50_ms"`
	TTFBP99Ms    float64 `json:"ttfb_p99_ms"`
}

type StatsReport struct {
	Clients     int               `json:"clients"`
	Unspliced   uint64            `json:"unspliced"`
	Mismatches  uint64            `json:"mismatches"`
	EarlyReaps  uint64            `json:"early_reaps"`
	Held        uint64            `json:"held"`
	Replayed    uint64            `json:"replayed"`
	HeldDropped uint64            `json:"held_dropped"`
	Workers     []StatsWorker     `json:"workers"`
	Counters    map[string]uint64 `json:"counters"`
	Legs        map[string]int    `json:"legs"`
}

// Stats runs `xlb stats --json` in ns against the control socket sock.
func Stats(t testing.TB, ns *testnet.NS, sock string) StatsReport {
	t.Helper()
	out, err := ns.Command(XLB, "stats", "--json", "--socket", sock).Output()
	if err != nil {
		t.Fatalf("xlb stats --json: %v\n%s", err, out)
	}
	var r StatsReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("xlb stats --json: %v\n%s", err, out)
	}
	return r
}
