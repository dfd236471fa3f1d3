package main

// Worker connections of the connection-per-request rows, counted from the
// workers' own access logs: nginx numbers every connection it accepts
// ($connection, a serial number per nginx process, from 1) and the logging
// port writes it on each request's line (connLogFormat). A run's worker
// connections are the distinct serials of the lines it added; those above
// the highest serial logged before the run are the connections opened for
// it (a connection opened earlier and reused, as by HAProxy's or xlb's
// pool, is not).

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"strconv"
	"time"
)

// connLogFlush is nginx's flush interval of the buffered access log: lines
// reach the file within it.
const connLogFlush = 100 * time.Millisecond

// connLog is the part of one worker's access log read so far.
type connLog struct {
	path string
	off  int64 // bytes read
	max  int64 // the highest serial read
}

// connLogs of every worker, by path: what was read stays read.
var connLogs = map[string]*connLog{}

func workerConnLogs(dir string) []*connLog {
	var ls []*connLog
	for i := range nWorkers {
		p := nginxConnLog(dir, i)
		if connLogs[p] == nil {
			connLogs[p] = &connLog{path: p}
		}
		ls = append(ls, connLogs[p])
	}
	return ls
}

// read parses the whole lines appended since the last read: the distinct
// serials and how many lines (requests).
func (l *connLog) read() (map[int64]bool, int64, error) {
	serials := map[int64]bool{}
	f, err := os.Open(l.path)
	if os.IsNotExist(err) {
		return serials, 0, nil // nothing logged yet
	}
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	if _, err := f.Seek(l.off, io.SeekStart); err != nil {
		return nil, 0, err
	}
	br := bufio.NewReaderSize(f, 1<<20)
	var lines int64
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			return nil, 0, err // no line of ours is that long
		}
		if err != nil {
			break // EOF: a partial line stays for the next read
		}
		l.off += int64(len(line))
		lines++
		serial, _, _ := bytes.Cut(line, []byte(" "))
		n, perr := strconv.ParseInt(string(bytes.TrimSpace(serial)), 10, 64)
		if perr != nil {
			continue
		}
		serials[n] = true
		l.max = max(l.max, n)
	}
	return serials, lines, nil
}

// countWorkerConns runs fn (the measured run) and sets r's worker
// connection figures from the lines the workers logged meanwhile.
func countWorkerConns(dir string, r *result, fn func() error) error {
	ls := workerConnLogs(dir)
	time.Sleep(3 * connLogFlush) // the warm-up's last lines
	before := make([]int64, len(ls))
	for i, l := range ls {
		if _, _, err := l.read(); err != nil {
			return err
		}
		before[i] = l.max
	}
	if err := fn(); err != nil {
		return err
	}
	time.Sleep(3 * connLogFlush)
	for i, l := range ls {
		serials, lines, err := l.read()
		if err != nil {
			return err
		}
		r.WorkerRequests += lines
		r.WorkerConnsUsed += int64(len(serials))
		for s := range serials {
			if s > before[i] {
				r.WorkerConns++
			}
		}
		if l.max > before[i] {
			r.WorkerSerials += l.max - before[i]
		}
	}
	return nil
}

// connsPer100 is the log's suffix of a connection-per-request run.
func connsPer100(r result) string {
	if r.WorkerRequests == 0 || r.Requests == 0 {
		return ""
	}
	return " worker conns/100 " + strconv.FormatFloat(float64(r.WorkerConns)*100/float64(r.Requests), 'f', 2, 64)
}
