package splice

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/kern"
)

// Request records: the data plane writes one when a logged exchange ends
// (kern log_end: the client's next request, an idle release, the client's
// close, a reset), for one request in Config.LogEvery (--log-requests).
// They feed the access log (--access-log, one JSON object a line) and each
// worker's latency histograms (metrics, xlb stats). Records of requests
// still open when xlb stops, or whose pair user space ends (--client-timeout,
// --drain-timeout), are not written.

// reqLogPoll is how often the record ring is read: the data plane does not
// wake the reader (a wake-up a request would cost an interrupt each).
const reqLogPoll = 50 * time.Millisecond

// ParseLogRequests reads --log-requests: all, off, or N (one request in N).
func ParseLogRequests(s string) (uint32, error) {
	switch s {
	case "all":
		return 1, nil
	case "off":
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q: must be all, off, or N (one request in N, N from 1)", s)
	}
	return uint32(n), nil
}

// latencyBounds are the histograms' bucket bounds, seconds.
var latencyBounds = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// histogram counts observations by latencyBounds (the last bucket: above).
type histogram struct {
	counts [17]uint64 // len(latencyBounds)+1
	sum    float64
	n      uint64
}

func (h *histogram) observe(s float64) {
	i := sort.SearchFloat64s(latencyBounds, s) // the first bound >= s
	h.counts[i]++
	h.sum += s
	h.n++
}

// quantile estimates the q quantile (0..1), interpolating within a bucket
// (NaN when empty; the last bound when it falls above).
func (h *histogram) quantile(q float64) float64 {
	if h.n == 0 {
		return math.NaN()
	}
	rank := q * float64(h.n)
	var cum float64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		if cum+float64(c) >= rank {
			if i == len(latencyBounds) {
				return latencyBounds[i-1]
			}
			lo := 0.0
			if i > 0 {
				lo = latencyBounds[i-1]
			}
			return lo + (latencyBounds[i]-lo)*(rank-cum)/float64(c)
		}
		cum += float64(c)
	}
	return latencyBounds[len(latencyBounds)-1]
}

// workerLatency is one worker's histograms.
type workerLatency struct {
	duration histogram // request start to the answer's last byte
	ttfb     histogram // request start to the answer's first byte
}

// reqLog consumes the records.
type reqLog struct {
	path   string      // the access log's ("": none, "-": standard output)
	reopen atomic.Bool // SIGHUP: open path again (the reader does it)
	mu     sync.Mutex
	out    *bufio.Writer // the access log (nil: none)
	file   io.WriteCloser
	byAddr map[netip.AddrPort]*workerLatency
	// monoOff turns CLOCK_MONOTONIC nanoseconds into Unix ones: read at
	// each batch.
	monoOff int64
	buf     []byte // a record read
	line    []byte // a line written
}

// openReqLog makes the consumer; path "" has no access log, "-" is
// standard output.
func openReqLog(path string) (*reqLog, error) {
	r := &reqLog{path: path, byAddr: map[netip.AddrPort]*workerLatency{}}
	switch path {
	case "":
	case "-":
		r.file = nopCloser{os.Stdout}
	default:
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("--access-log: %w", err)
		}
		r.file = f
	}
	if r.file != nil {
		r.out = bufio.NewWriterSize(r.file, 64<<10)
	}
	return r, nil
}

// reopenFile opens the access log's path again (after a rotation moved the
// file away), once what was buffered went to the old one. On failure the
// old file is kept.
func (r *reqLog) reopenFile() error {
	if r.out == nil || r.path == "-" {
		return nil
	}
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	r.out.Flush()
	old := r.file
	r.file = f
	r.out.Reset(f)
	return old.Close()
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// An access log line is a JSON object (written by appendLine):
//
//	time           when the request's first segment came (RFC 3339, UTC)
//	client         the client's address and port
//	worker         the worker's
//	worker_conn    xlb's port of the worker connection
//	request        its number on the client's connection
//	request_bytes  bytes sent to the worker
//	response_bytes bytes of the answer (interim 1xx answers excepted)
//	ttfb_ms        its first byte, milliseconds after the start (null: none)
//	duration_ms    its last byte, the same way (null: none)
//	end            next, release, close or reset
//	pinned         why the pair is pinned (absent: it is not)
//
// Written by hand: with json.Marshal, the xlb-log-all row of a bench
// subset (7c58890) cost the balancer 2.58 ms of CPU per 1000 requests
// against 0.78 for xlb-log-100 (its CPU column), about 1.8 us a record;
// BenchmarkAppendLine: 202 ns, no allocation.

// appendLine appends rec's line, with its start at Unix nanoseconds start.
func appendLine(b []byte, rec *kern.ReqRecord, start int64) []byte {
	b = append(b, `{"time":"`...)
	b = time.Unix(0, start).UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","client":"`...)
	b = rec.Client.Peer.AppendTo(b)
	b = append(b, `","worker":"`...)
	b = rec.WLeg.Peer.AppendTo(b)
	b = append(b, `","worker_conn":`...)
	b = strconv.AppendUint(b, uint64(rec.WLeg.Local.Port()), 10)
	b = append(b, `,"request":`...)
	b = strconv.AppendUint(b, uint64(rec.Request), 10)
	b = append(b, `,"request_bytes":`...)
	b = strconv.AppendUint(b, uint64(rec.ReqBytes), 10)
	b = append(b, `,"response_bytes":`...)
	b = strconv.AppendUint(b, uint64(rec.RespBytes), 10)
	ms := func(b []byte, us uint32) []byte {
		if us == 0 {
			return append(b, "null"...)
		}
		return strconv.AppendFloat(b, float64(us-1)/1e3, 'f', -1, 64) // whole microseconds
	}
	b = append(b, `,"ttfb_ms":`...)
	b = ms(b, rec.FirstUs)
	b = append(b, `,"duration_ms":`...)
	b = ms(b, rec.LastUs)
	b = append(b, `,"end":"`...)
	b = append(b, rec.End.String()...)
	b = append(b, '"')
	if rec.Pin != kern.PinNone {
		b = append(b, `,"pinned":"`...)
		b = append(b, rec.Pin.String()...) // lower-case words: nothing to escape
		b = append(b, '"')
	}
	return append(b, "}\n"...)
}

// batchStart is called before a batch of records.
func (r *reqLog) batchStart() {
	r.monoOff = time.Now().UnixNano() - int64(fineNs())
}

// add takes one record.
func (r *reqLog) add(rec *kern.ReqRecord) {
	worker := rec.WLeg.Peer
	r.mu.Lock()
	l := r.byAddr[worker]
	if l == nil {
		l = &workerLatency{}
		r.byAddr[worker] = l
	}
	if rec.FirstUs > 0 {
		l.ttfb.observe(float64(rec.FirstUs-1) / 1e6)
		l.duration.observe(float64(rec.LastUs-1) / 1e6)
	}
	r.mu.Unlock()
	if r.out == nil {
		return
	}
	r.line = appendLine(r.line[:0], rec, int64(rec.StartNs)+r.monoOff)
	r.out.Write(r.line)
}

// flush writes what the access log buffered.
func (r *reqLog) flush() error {
	if r.out == nil {
		return nil
	}
	return r.out.Flush()
}

func (r *reqLog) close() error {
	if r.file == nil {
		return nil
	}
	err := r.flush()
	if cerr := r.file.Close(); err == nil {
		err = cerr
	}
	return err
}

// latency returns a copy of worker's histograms (ok false: no record yet).
func (r *reqLog) latency(worker netip.AddrPort) (workerLatency, bool) {
	if r == nil {
		return workerLatency{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.byAddr[worker]
	if !ok {
		return workerLatency{}, false
	}
	return *l, true
}

// readRequests reads the record ring until ctx ends (a last read then).
func (lb *LB) readRequests(ctx context.Context, rd *ebpf.RingBufReader) {
	defer rd.Close()
	t := time.NewTicker(reqLogPoll)
	defer t.Stop()
	for {
		lb.drainRequests(rd)
		select {
		case <-ctx.Done():
			lb.drainRequests(rd)
			return
		case <-t.C:
		}
	}
}

// ReopenAccessLog has the access log opened again under its name, at the
// reader's next turn (SIGHUP, after a rotation). It returns false when
// there is no access log file to reopen.
func (lb *LB) ReopenAccessLog() bool {
	if p := lb.reqlog.path; p == "" || p == "-" || lb.cfg.LogEvery == 0 {
		return false
	}
	lb.reqlog.reopen.Store(true)
	lb.log.Info("reopening the access log", "path", lb.reqlog.path)
	return true
}

// drainRequests takes every record the ring holds.
func (lb *LB) drainRequests(rd *ebpf.RingBufReader) {
	if lb.reqlog.reopen.Swap(false) {
		if err := lb.reqlog.reopenFile(); err != nil {
			lb.log.Error("reopening the access log: writing on to the old file", "path", lb.reqlog.path, "err", err)
		}
	}
	lb.reqlog.batchStart()
	for range 1 << 20 { // bounded: the ring holds far fewer
		rec, ok := rd.TryReadAppend(lb.reqlog.buf[:0])
		if !ok {
			break
		}
		lb.reqlog.buf = rec // its room serves the next record
		var rr kern.ReqRecord
		if err := rr.UnmarshalBinary(rec); err != nil {
			lb.log.Warn("bad request record from the data plane", "err", err)
			continue
		}
		lb.reqlog.add(&rr)
	}
	if err := lb.reqlog.flush(); err != nil {
		lb.log.Error("writing the access log", "err", err)
	}
}
