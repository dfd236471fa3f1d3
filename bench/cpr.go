package main

// The "client closes first" load generator of the connection-per-request
// rows. No standard tool does it: ab speaks HTTP/1.0 without keep-alive (the
// worker closes first), wrk and redis-benchmark keep their connections. So
// the bench binary is its own load generator: run with XLB_BENCH_CLIENT=cpr
// in its environment, it opens a connection, sends one HTTP/1.1 GET (no
// Connection: close, so the worker keeps its side open), reads the answer by
// its Content-Length, closes, and starts again, from C goroutines for a
// duration. It prints its figures as "XLB name value" lines, as the wrk
// script does:
//
//	XLB_BENCH_CLIENT=cpr bench -c 4 -d 5s [-timeout 5s] 127.0.0.1:8080 /b100

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// cprEnv in the environment turns the bench binary into the load generator.
const cprEnv = "XLB_BENCH_CLIENT"

// cprMain is the load generator's main; its exit code.
func cprMain(args []string) int {
	fs := flag.NewFlagSet("cpr", flag.ContinueOnError)
	conns := fs.Int("c", 4, "concurrent clients (connections at a time)")
	d := fs.Duration("d", 5*time.Second, "how long to start new requests")
	timeout := fs.Duration("timeout", 5*time.Second, "bound of one request, connection included")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 2 || *conns < 1 || *d <= 0 {
		fmt.Fprintln(os.Stderr, "usage: XLB_BENCH_CLIENT=cpr bench -c N -d DURATION [-timeout D] HOST:PORT /PATH")
		return 2
	}
	addr, path := fs.Arg(0), fs.Arg(1)
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: xlb-bench-cpr\r\nAccept: */*\r\n\r\n")

	type worker struct {
		lat    []time.Duration
		bytes  int64
		errs   int64
		errMsg string
	}
	ws := make([]*worker, *conns)
	start := time.Now()
	end := start.Add(*d)
	var wg sync.WaitGroup
	for i := range ws {
		w := &worker{lat: make([]time.Duration, 0, 1<<14)}
		ws[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				n, err := cprOnce(addr, req, buf, t0.Add(*timeout))
				if err != nil {
					w.errs++
					if w.errMsg == "" {
						w.errMsg = err.Error()
					}
					if errors.Is(err, syscall.EADDRNOTAVAIL) || errors.Is(err, syscall.ECONNREFUSED) {
						time.Sleep(time.Millisecond) // no spinning on a refused connect
					}
					continue
				}
				w.lat = append(w.lat, time.Since(t0))
				w.bytes += int64(n)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	var lat []time.Duration
	var total, errs int64
	errMsg := ""
	for _, w := range ws {
		lat = append(lat, w.lat...)
		total += w.bytes
		errs += w.errs
		if errMsg == "" {
			errMsg = w.errMsg
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())

	fmt.Printf("XLB requests %d\n", len(lat))
	fmt.Printf("XLB errors %d\n", errs)
	fmt.Printf("XLB duration_us %d\n", elapsed.Microseconds())
	fmt.Printf("XLB bytes %d\n", total)
	fmt.Printf("XLB p50 %d\n", percentile(lat, 50).Microseconds())
	fmt.Printf("XLB p99 %d\n", percentile(lat, 99).Microseconds())
	fmt.Printf("XLB p999 %d\n", percentile(lat, 99.9).Microseconds())
	fmt.Printf("XLB cpu_us %d\n", cpu.Microseconds())
	if errMsg != "" {
		fmt.Printf("XLBERR %s\n", errMsg)
	}
	return 0
}

// percentile of sorted samples, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// cprOnce makes one request over a new connection and closes it (a FIN: the
// whole answer has been read) once the answer is complete; the size of the
// answer, headers included.
func cprOnce(addr string, req, buf []byte, deadline time.Time) (int, error) {
	c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if _, err := c.Write(req); err != nil {
		return 0, err
	}
	// Headers: they fit in buf.
	n := 0
	hdrEnd := -1
	for hdrEnd < 0 {
		if n == len(buf) {
			return n, fmt.Errorf("response headers over %d bytes", len(buf))
		}
		m, err := c.Read(buf[n:])
		n += m
		if i := bytes.Index(buf[:n], []byte("\r\n\r\n")); i >= 0 {
			hdrEnd = i + 4
			break
		}
		if err != nil {
			return n, fmt.Errorf("reading headers after %d bytes: %w", n, err)
		}
	}
	hdr := buf[:hdrEnd]
	if !bytes.HasPrefix(hdr, []byte("HTTP/1.1 200 ")) {
		line, _, _ := bytes.Cut(hdr, []byte("\r\n"))
		return n, fmt.Errorf("status %q", line)
	}
	cl := -1
	for _, line := range bytes.Split(hdr, []byte("\r\n")) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && string(bytes.ToLower(bytes.TrimSpace(k))) == "content-length" {
			cl, err = strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil {
				return n, fmt.Errorf("content-length %q", v)
			}
		}
	}
	if cl < 0 {
		return n, fmt.Errorf("no content-length")
	}
	want := hdrEnd + cl
	for n < want {
		// The body beyond buf is read and counted, not kept.
		chunk := buf[min(n, len(buf)/2):]
		if len(chunk) > want-n {
			chunk = chunk[:want-n]
		}
		m, err := c.Read(chunk)
		n += m
		if err != nil && n < want {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, fmt.Errorf("body: %d of %d bytes: %w", n-hdrEnd, cl, err)
		}
	}
	if n > want {
		return n, fmt.Errorf("%d bytes after the answer", n-want)
	}
	return n, nil
}
