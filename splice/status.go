package splice

import (
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/xlb-lb/xlb/kern"
)

// WorkerStatus is what `xlb stats` shows of a worker.
type WorkerStatus struct {
	Addr   string `json:"addr"`
	ID     uint32 `json:"id"`
	Weight int    `json:"weight"`
	State  string `json:"state"`
	// Legs is the worker's live connections, Bound + Idle + Cooling, as
	// the data plane counts them (xlb_wload, read once for every worker).
	Legs     int    `json:"legs"`
	Bound    int    `json:"bound"`     // bound to a client
	Idle     int    `json:"idle"`      // idle in its pool
	Cooling  int    `json:"cooling"`   // given back by a leaving client, idle soon
	Binds    uint64 `json:"binds"`     // times a leg was taken for a client
	Releases uint64 `json:"releases"`  // times a leg was given back at a remix
	Requests uint64 `json:"requests"`  // requests started on its legs
	BytesIn  uint64 `json:"bytes_in"`  // client -> worker payload
	BytesOut uint64 `json:"bytes_out"` // worker -> client payload
	Error    string `json:"error,omitempty"`
	// Health checks: run and failed (--check, or the passive check's
	// TCP checks while it holds the worker down), and why the last failed.
	// WeightNow is the weight its pool and the schedule use now: 0 while
	// it takes no requests, ramping during --slowstart.
	WeightNow    int    `json:"weight_now"`
	Checks       uint64 `json:"checks,omitempty"`
	FailedChecks uint64 `json:"failed_checks,omitempty"`
	CheckError   string `json:"check_error,omitempty"`
	// Latency of the requests logged (--log-requests), milliseconds:
	// request start to the answer's last byte, and to its first byte.
	Logged       uint64  `json:"logged,omitempty"` // requests with an answer logged
	LatencyP50Ms float64 `json:"latency_p50_ms,omitempty"`
	LatencyP99Ms float64 `json:"latency_p99_ms,omitempty"`
	TTFBP50Ms    float64 `json:"ttfb_p50_ms,omitempty"`
	TTFBP99Ms    float64 `json:"ttfb_p99_ms,omitempty"`
	latency      *workerLatency
}

// Status is the state of a running load balancer.
type Status struct {
	Pid     int    `json:"pid"`
	Iface   string `json:"iface"`
	Port    uint16 `json:"port"`
	Clients int    `json:"clients"` // client connections held
	// Announce is the --announce device's state: "up", or "down: WHY"
	// (empty without --announce).
	Announce   string `json:"announce,omitempty"`
	Unspliced  uint64 `json:"unspliced"`
	Mismatches uint64 `json:"mismatches"`
	// EarlyReaps counts finished legs forgotten before their linger was
	// over, to keep room in the leg table (--max-legs too small for the
	// rate connections end at).
	EarlyReaps uint64 `json:"early_reaps"`
	// Held counts client segments that found no idle worker connection
	// and that the data plane kept (--empty-pool hold; a segment whose
	// connection went to another client first is held again, and counted
	// again); Replayed those sent on once a connection was pooled,
	// HeldDropped those that were not (older than 1 s, or the program did
	// not forward them: the client's connection ended meanwhile).
	Held        uint64 `json:"held"`
	Replayed    uint64 `json:"replayed"`
	HeldDropped uint64 `json:"held_dropped"`
	// RestWindow is the window, in bytes, a worker is told once its client
	// acknowledged all it sent (the smallest a client opened with).
	RestWindow uint32         `json:"rest_window"`
	Workers    []WorkerStatus `json:"workers"`
	// Goroutines is the process's goroutine count: steady under steady
	// traffic; growth means something is left waiting (make soak watches it).
	Goroutines int `json:"goroutines"`
	// Counters are the data plane's counters by name (kern.Counter), summed
	// over CPUs; Legs counts the leg table by "kind/state", plus "bindings".
	Counters map[string]uint64 `json:"counters,omitempty"`
	Legs     map[string]int    `json:"legs,omitempty"`
}

// Status reports the load balancer's state.
func (lb *LB) Status() Status {
	s := Status{Pid: os.Getpid(), Iface: lb.cfg.Iface, Port: lb.cfg.Port,
		Unspliced: lb.unspliced.Load(), Mismatches: lb.mismatches.Load(), EarlyReaps: lb.earlyReaps.Load(),
		Goroutines: runtime.NumGoroutine(), Announce: lb.announced()}
	if r := lb.replay; r != nil {
		s.Held, s.Replayed, s.HeldDropped = r.holds.Load(), r.replayed.Load(), r.expired.Load()
	}
	loads, lerr := lb.dp.Loads()
	for _, w := range lb.workerList() {
		l := loads.of(w.id)
		ws, _ := lb.dp.WorkerStats(w.id)
		lat, logged := lb.reqlog.latency(w.spec.Addr) // its own lock: not under w.mu
		w.mu.Lock()
		st := WorkerStatus{Addr: w.spec.Addr.String(), ID: w.id, Weight: w.spec.Weight, State: w.stateName(),
			Legs: l.Legs(), Bound: l.Bound, Idle: l.Idle, Cooling: l.Cooling,
			Binds: ws.Binds, Releases: ws.Releases, Requests: ws.Requests, BytesIn: ws.BytesIn, BytesOut: ws.BytesOut}
		if w.lastErr != nil {
			st.Error = w.lastErr.Error()
		}
		st.Checks, st.FailedChecks, st.WeightNow = w.checks, w.failedChecks, w.weightNow(time.Now())
		if w.checkErr != nil {
			st.CheckError = w.checkErr.Error()
		}
		if logged && lat.duration.n > 0 {
			st.latency = &lat
			st.Logged = lat.duration.n
			st.LatencyP50Ms, st.LatencyP99Ms = lat.duration.quantile(0.5)*1e3, lat.duration.quantile(0.99)*1e3
			st.TTFBP50Ms, st.TTFBP99Ms = lat.ttfb.quantile(0.5)*1e3, lat.ttfb.quantile(0.99)*1e3
		}
		if lerr != nil {
			st.Error = lerr.Error() // its connections are unknown: say why they read 0
		}
		w.mu.Unlock()
		s.Workers = append(s.Workers, st)
	}
	sort.Slice(s.Workers, func(i, j int) bool { return s.Workers[i].ID < s.Workers[j].ID })
	if c, err := lb.dp.Config(); err == nil {
		s.RestWindow = c.RestWin
	}
	if c, err := kern.ReadCounters(lb.dp.Objs.Stats); err == nil {
		s.Counters = make(map[string]uint64, len(c))
		for i, v := range c {
			s.Counters[kern.Counter(i).String()] = v
		}
	}
	if legs, err := kern.LegCounts(lb.dp.Objs.Legs, lb.dp.Objs.Binds); err == nil {
		s.Legs = legs
		for k, n := range legs {
			if state, ok := strings.CutPrefix(k, kern.LegClient.String()+"/"); ok && state != kern.LegDead.String() {
				s.Clients += n
			}
		}
	}
	return s
}
