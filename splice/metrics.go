package splice

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/xlb-lb/xlb/kern"
	"golang.org/x/sys/unix"
)

// The metrics endpoint (--metrics ADDR): the figures of `xlb stats` in the
// Prometheus text exposition format 0.0.4, written by hand (no client
// library: the binary's imports are the standard library and x/sys).

// MetricsPath is where the metrics are served.
const MetricsPath = "/metrics"

// metricsContentType is the content type of text format 0.0.4.
const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// metricsTimeout bounds reading a scrape request and writing its answer.
const metricsTimeout = 10 * time.Second

// CounterHelp says what each data-plane counter counts (the comments of enum
// xlb_counter in kern/bpf/structs.h). Verdicts are exported separately.
var CounterHelp = [kern.CounterMax]string{
	kern.CounterPass:         "Packets passed to the kernel stack (XDP_PASS).",
	kern.CounterDrop:         "Packets dropped (XDP_DROP); the reasons are the drop counters.",
	kern.CounterTX:           "Packets sent back out of the interface (XDP_TX).",
	kern.CounterRedirect:     "Packets redirected to another interface (XDP_REDIRECT).",
	kern.CounterAborted:      "Packets aborted (XDP_ABORTED): a program error.",
	kern.CounterNotIPv4:      "Packets that are neither IPv4 nor IPv6, passed untouched.",
	kern.CounterNotTCP:       "IP packets that are not TCP: fragments, IPv6 with an extension header; passed untouched.",
	kern.CounterMalformed:    "Packets with truncated or inconsistent headers, passed untouched.",
	kern.CounterTCP:          "Well-formed TCP segments seen (IPv4 and IPv6).",
	kern.CounterForeign:      "TCP segments of no leg of xlb, passed untouched.",
	kern.CounterSyn:          "Client SYNs to the service learned.",
	kern.CounterClientLeg:    "Client legs created from a handshake.",
	kern.CounterWorkerSynack: "Worker SYN-ACKs learned.",
	kern.CounterBind:         "Client legs bound to a worker leg.",
	kern.CounterFwdToWorker:  "Client segments translated to their worker.",
	kern.CounterFwdToClient:  "Worker segments translated to their client.",
	kern.CounterNoIdleLeg:    "Drops: client data but no idle worker leg (the client retransmits).",
	kern.CounterStaleAcked:   "Stale segments on an unbound leg, and clients' SYNs on a live one (a new connection from a port whose end never reached xlb), answered with an ACK.",
	kern.CounterImplausible:  "Segments with seq/ack out of window: forwarded, positions kept.",
	kern.CounterRSTIgnored:   "RSTs with an unexpected seq: no state change.",
	kern.CounterUnboundACK:   "Drops: pure ACK or window update on an unbound leg.",
	kern.CounterBadOptions:   "Drops: malformed TCP options, or several timestamp options.",
	kern.CounterFINAnswered:  "FINs on an unbound leg completed by the data plane.",
	kern.CounterLegClosed:    "Legs finished (FIN both ways, or RST) and reported.",
	kern.CounterEventLost:    "Events lost because the event ring was full.",
	kern.CounterUnsolicited:  "Drops: new data from a worker on an idle leg (the leg is retired).",
	kern.CounterHSData:       "Handshake ACKs that carried data (payload cut, the client retransmits).",
	kern.CounterFIBFail:      "Drops: routed mode, no route or neighbour for the next hop.",
	kern.CounterDeadLeg:      "Drops: segments on a leg already finished.",
	kern.CounterRequest:      "Request boundaries seen on bound client legs.",
	kern.CounterRemix:        "Clients moved to another worker leg at a request boundary.",
	kern.CounterRemixNoIdle:  "Request boundaries without an idle worker leg: the client stayed.",
	kern.CounterStayGap:      "New client data after a response but out of order: stayed.",
	kern.CounterStayResponse: "New client data before the whole response was acknowledged: stayed.",
	kern.CounterStayRequest:  "Worker had not acknowledged the whole request: stayed.",
	kern.CounterRetired:      "Idle worker legs retired (worker draining, pool trimmed).",
	kern.CounterParkedDrop:   "Drops: data on a client leg being released (the client retransmits).",
	kern.CounterReleased:     "Quiescent clients that gave their worker leg back (idle release).",
	kern.CounterRematch:      "Clients moved to the worker named by xlb ctl rematch.",
	kern.CounterTailFail:     "Drops: a tail call to another program failed.",
	kern.CounterBindRace:     "Drops: the leg changed between the two programs (the sender retransmits).",
	kern.CounterPinTLS:       "Connections pinned to their worker connection for life: the client speaks TLS.",
	kern.CounterPinUpgrade:   "Connections pinned: 101 Switching Protocols, CONNECT or the HTTP/2 preface.",
	kern.CounterPinInterim:   "Connections pinned: an interim (1xx) answer that did not end in its segment.",
	kern.CounterPinPipelined: "Connections pinned: the worker answered before it had the whole request (pipelining, an early answer).",
	kern.CounterPinNotMsg:    "Connections pinned: new data at a request boundary did not start a message of the protocol.",
	kern.CounterPinRaw:       "Connections pinned: --protocol raw.",
	kern.CounterPinUnknown:   "Connections pinned: the first bytes are of no protocol xlb knows (--protocol auto).",
	kern.CounterPinStateful:  "Connections pinned: a command that gives the connection state (AUTH, SELECT, MULTI, SUBSCRIBE...).",
	kern.CounterInterim:      "Interim HTTP answers (100 Continue, 103 Early Hints) passed over: the exchange went on.",
	kern.CounterStayPinned:   "Request boundaries on a pinned connection: the client stayed.",
	kern.CounterStayTail:     "Request boundaries after client data that did not end a write (or a line): the client stayed.",
	kern.CounterClientLeft:   "Clients that closed between exchanges: their worker connection went back to the pool.",
	kern.CounterUnserved:     "Clients that closed with their request while no worker connection was idle: FIN answered, request dropped.",
	kern.CounterSynAnswered:  "Client SYNs answered by the data plane itself (no socket made for the client).",
	kern.CounterLegsFull:     "Client handshakes refused with a reset: the leg table was full (raise --max-legs).",
	kern.CounterDialed:       "Worker connections opened by a SYN xlb sent and a handshake the data plane completed (--dial xdp).",
	kern.CounterDialReset:    "Dialed SYNs a worker reset (nothing listening), or rejected from TIME-WAIT (reset by the data plane and sent again).",
	kern.CounterPinClose:     "Connections pinned: the answer said the worker closes after it (Connection: close, HTTP/1.0): a client leaving then does not give the worker connection back.",
	kern.CounterKeepHttp10:   "HTTP/1.0 requests without keep-alive sent to their worker with Connection: keep-alive (--http10 keep): the data plane frames the answer and closes the client.",
	kern.CounterFramedClose:  "Client connections the data plane closed after the whole framed answer to an HTTP/1.0 request: the worker connection went back to the pool.",
	kern.CounterUnframed:     "Answers to such a request whose length the data plane could not read (no Content-Length, headers past the first 2048 bytes of the first segment): pinned, the worker closes.",
	kern.CounterFrameWait:    "Worker segments dropped: past the start of such an answer before its first segment arrived (lost, reordered); the worker sends them again.",
	kern.CounterReqlogLost:   "Request records not written: their ring was full (the reader behind; see --log-requests).",
}

// verdictCounters are exported as xlb_verdicts_total{verdict=...}.
var verdictCounters = []kern.Counter{kern.CounterPass, kern.CounterDrop, kern.CounterTX, kern.CounterRedirect, kern.CounterAborted}

// DropCounters are the counters of packets the data plane dropped, one per
// reason (a few also count packets not dropped: fib_fail counts a missing
// neighbour, which is passed to the stack).
var DropCounters = []kern.Counter{kern.CounterNoIdleLeg, kern.CounterUnboundACK, kern.CounterBadOptions,
	kern.CounterUnsolicited, kern.CounterFIBFail, kern.CounterDeadLeg, kern.CounterParkedDrop,
	kern.CounterTailFail, kern.CounterBindRace}

// WriteMetrics writes s in the Prometheus text exposition format 0.0.4.
func WriteMetrics(w io.Writer, s Status) error {
	var b bytes.Buffer
	family := func(name, typ, help string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	sample := func(name string, v uint64, labels ...string) {
		b.WriteString(name)
		if len(labels) > 0 {
			b.WriteByte('{')
			for i := 0; i+1 < len(labels); i += 2 {
				if i > 0 {
					b.WriteByte(',')
				}
				fmt.Fprintf(&b, "%s=\"%s\"", labels[i], escapeLabel(labels[i+1]))
			}
			b.WriteByte('}')
		}
		fmt.Fprintf(&b, " %d\n", v)
	}
	perWorker := func(name, typ, help string, v func(WorkerStatus) uint64) {
		family(name, typ, help)
		for _, x := range s.Workers {
			sample(name, v(x), "worker", x.Addr)
		}
	}

	family("xlb_client_legs_open", "gauge", "Client connections held by xlb.")
	sample("xlb_client_legs_open", uint64(s.Clients))
	family("xlb_unspliced_total", "counter", "Accepted client connections without a client leg (closed).")
	sample("xlb_unspliced_total", s.Unspliced)
	family("xlb_handshake_mismatches_total", "counter", "Client legs whose handshake-derived numbers disagree with the socket.")
	sample("xlb_handshake_mismatches_total", s.Mismatches)
	family("xlb_legs_reaped_early_total", "counter", "Finished connections forgotten before their linger, to keep room in the leg table (see --max-legs).")
	sample("xlb_legs_reaped_early_total", s.EarlyReaps)
	family("xlb_held_total", "counter", "Client segments that found no idle worker connection, kept by the data plane (--empty-pool hold).")
	sample("xlb_held_total", s.Held)
	family("xlb_held_replayed_total", "counter", "Held client segments sent on once a worker connection was pooled.")
	sample("xlb_held_replayed_total", s.Replayed)
	family("xlb_held_dropped_total", "counter", "Held client segments not sent on (too old, or dropped again), left to the client's retransmission.")
	sample("xlb_held_dropped_total", s.HeldDropped)
	family("xlb_goroutines", "gauge", "Goroutines of the xlb process.")
	sample("xlb_goroutines", uint64(s.Goroutines))

	family("xlb_worker_up", "gauge", "1 if the worker's pool connections succeed, else 0.")
	for _, x := range s.Workers {
		up := uint64(0)
		if x.State == WorkerUp.String() {
			up = 1
		}
		sample("xlb_worker_up", up, "worker", x.Addr)
	}
	family("xlb_worker_state", "gauge", "The worker's state: 1 for its current state (starting, up, down: connections fail or a health check marked it down, draining, drained, removing).")
	for _, x := range s.Workers {
		sample("xlb_worker_state", 1, "worker", x.Addr, "state", x.State)
	}
	perWorker("xlb_worker_checks_total", "counter", "Health checks run on the worker (--check; TCP checks while the passive check holds it down).", func(x WorkerStatus) uint64 { return x.Checks })
	perWorker("xlb_worker_check_failures_total", "counter", "Health checks of the worker that failed.", func(x WorkerStatus) uint64 { return x.FailedChecks })
	perWorker("xlb_worker_weight", "gauge", "The worker's weight (its share of the pool).", func(x WorkerStatus) uint64 { return uint64(x.Weight) })
	family("xlb_worker_legs", "gauge", "The worker's live connections: idle in its pool, bound to a client, or cooling (given back by a leaving client).")
	for _, x := range s.Workers {
		sample("xlb_worker_legs", uint64(x.Idle), "worker", x.Addr, "state", "idle")
		sample("xlb_worker_legs", uint64(x.Bound), "worker", x.Addr, "state", "bound")
		sample("xlb_worker_legs", uint64(x.Cooling), "worker", x.Addr, "state", "cooling")
	}
	perWorker("xlb_worker_requests_total", "counter", "Requests started on the worker's connections.", func(x WorkerStatus) uint64 { return x.Requests })
	perWorker("xlb_worker_request_bytes_total", "counter", "Payload bytes from clients to the worker.", func(x WorkerStatus) uint64 { return x.BytesIn })
	perWorker("xlb_worker_response_bytes_total", "counter", "Payload bytes from the worker to clients.", func(x WorkerStatus) uint64 { return x.BytesOut })
	perWorker("xlb_worker_binds_total", "counter", "Times one of the worker's idle connections was bound to a client.", func(x WorkerStatus) uint64 { return x.Binds })
	perWorker("xlb_worker_releases_total", "counter", "Times a client gave one of the worker's connections back (at a remix, an idle release or a rematch).", func(x WorkerStatus) uint64 { return x.Releases })

	histo := func(name, help string, h func(*workerLatency) *histogram) {
		family(name, "histogram", help)
		for _, x := range s.Workers {
			if x.latency == nil {
				continue
			}
			hh := h(x.latency)
			var cum uint64
			for i, bound := range latencyBounds {
				cum += hh.counts[i]
				sample(name+"_bucket", cum, "worker", x.Addr, "le", strconv.FormatFloat(bound, 'g', -1, 64))
			}
			sample(name+"_bucket", hh.n, "worker", x.Addr, "le", "+Inf")
			fmt.Fprintf(&b, "%s_sum{worker=\"%s\"} %s\n", name, escapeLabel(x.Addr), strconv.FormatFloat(hh.sum, 'g', -1, 64))
			sample(name+"_count", hh.n, "worker", x.Addr)
		}
	}
	histo("xlb_request_duration_seconds", "Time from a request's first byte to its answer's last, requests logged (--log-requests).",
		func(l *workerLatency) *histogram { return &l.duration })
	histo("xlb_time_to_first_byte_seconds", "Time from a request's first byte to its answer's first, requests logged (--log-requests).",
		func(l *workerLatency) *histogram { return &l.ttfb })

	if len(s.Counters) > 0 {
		family("xlb_verdicts_total", "counter", "Packets by XDP verdict.")
		for _, c := range verdictCounters {
			sample("xlb_verdicts_total", s.Counters[c.String()], "verdict", c.String())
		}
		family("xlb_drops_total", "counter", "Packets dropped by the data plane, by reason.")
		for _, c := range DropCounters {
			sample("xlb_drops_total", s.Counters[c.String()], "reason", c.String())
		}
		for i := kern.Counter(0); i < kern.CounterMax; i++ {
			if slices.Contains(verdictCounters, i) || slices.Contains(DropCounters, i) {
				continue
			}
			name := "xlb_dataplane_" + i.String() + "_total"
			family(name, "counter", CounterHelp[i])
			sample(name, s.Counters[i.String()])
		}
	}
	if len(s.Legs) > 0 {
		family("xlb_legs", "gauge", "Entries of the data plane's leg table, by kind and state.")
		for _, k := range slices.Sorted(maps.Keys(s.Legs)) {
			kind, state, ok := strings.Cut(k, "/")
			if !ok || kind == kern.PinnedLegs {
				continue
			}
			sample("xlb_legs", uint64(s.Legs[k]), "kind", kind, "state", state)
		}
		family("xlb_client_legs_pinned", "gauge", "Live client connections pinned to their worker connection for life, by reason.")
		for r := kern.PinTLS; r < kern.PinMax; r++ {
			sample("xlb_client_legs_pinned", uint64(s.Legs[kern.PinnedLegs+"/"+r.String()]), "reason", r.String())
		}
		family("xlb_bindings", "gauge", "Entries of the data plane's binding table (two per spliced pair).")
		sample("xlb_bindings", uint64(s.Legs["bindings"]))
	}
	_, err := w.Write(b.Bytes())
	return err
}

// escapeLabel escapes a label value as the text format wants.
func escapeLabel(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// ListenMetrics listens on addr for the metrics endpoint. SO_REUSEPORT lets
// the xlb that takes over with --reuse listen on the same address while its
// predecessor still runs.
func ListenMetrics(addr string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		return errors.Join(err, serr)
	}}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, fmt.Errorf("--metrics %s: the address is in use by another program (see `ss -ltnp`); choose another one", addr)
		}
		return nil, fmt.Errorf("--metrics %s: %w", addr, err)
	}
	return ln, nil
}

// ServeMetrics answers scrapes on ln until it is closed.
func (lb *LB) ServeMetrics(ln net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc(MetricsPath, func(w http.ResponseWriter, r *http.Request) {
		var b bytes.Buffer
		if err := WriteMetrics(&b, lb.Status()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", metricsContentType)
		w.Write(b.Bytes())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, "xlb: metrics at %s\n", MetricsPath)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: metricsTimeout, WriteTimeout: metricsTimeout}
	if err := srv.Serve(ln); err != nil && !errors.Is(err, net.ErrClosed) {
		lb.log.Warn("metrics endpoint stopped", "err", err)
	}
}
