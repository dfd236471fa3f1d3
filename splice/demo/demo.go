// Package demo is the demo worker's HTTP handler and the matching checks:
// deterministic bodies whose hash a client verifies, and a header naming the
// worker that answered. Tests, local_script.sh and the benchmarks use it.
package demo

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxBody bounds /bytes/N.
const MaxBody = 1 << 30

// Body returns the n deterministic bytes every worker sends for /bytes/n.
func Body(n int) []byte {
	b := make([]byte, n)
	var x uint64 = 0x9e3779b97f4a7c15 ^ uint64(n)
	for i := range b {
		// xorshift64*: cheap, and a byte moved or swapped changes the hash
		x ^= x >> 12
		x ^= x << 25
		x ^= x >> 27
		b[i] = byte((x * 0x2545f4914f6cdd1d) >> 56)
	}
	return b
}

// Sum is the hex SHA-256 of b.
func Sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Handler serves /, /bytes/N, POST /upload and the /echo upgrade as worker
// `name`, each after `delay`.
func Handler(name string, delay time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if delay > 0 {
			time.Sleep(delay)
		}
		w.Header().Set("X-Worker", name)
		switch r.URL.Path {
		case UploadPath:
			upload(w, r)
			return
		case EchoPath:
			echoUpgrade(name, w, r)
			return
		}
		if r.URL.Path == "/" {
			body := []byte("worker " + name + "\n")
			w.Header().Set("X-Content-Sha256", Sum(body))
			w.Write(body)
			return
		}
		rest, ok := strings.CutPrefix(r.URL.Path, "/bytes/")
		n, err := strconv.Atoi(rest)
		if !ok || err != nil || n < 0 || n > MaxBody {
			http.Error(w, fmt.Sprintf("want /bytes/N with 0 <= N <= %d", MaxBody), http.StatusBadRequest)
			return
		}
		body := Body(n)
		w.Header().Set("X-Content-Sha256", Sum(body))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Write(body)
	})
}

// Result is what a demo client run saw.
type Result struct {
	Requests  int            // responses received and verified
	Bytes     int64          // body bytes verified
	PerWorker map[string]int // responses by X-Worker
	Errors    []error
}

// Run opens conns keep-alive connections to addr and sends requests
// sequential GET requests on each (paths cycling through sizes), verifying
// every body against its hash and the expected bytes. pause is the time
// between two requests of a connection; stop, when closed, ends the run early.
func Run(addr string, conns, requests int, sizes []int, pause time.Duration, stop <-chan struct{}) Result {
	res := Result{PerWorker: map[string]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err != nil {
				mu.Lock()
				res.Errors = append(res.Errors, err)
				mu.Unlock()
				return
			}
			defer c.Close()
			r := bufio.NewReaderSize(c, 64<<10)
			for j := 0; j < requests; j++ {
				select {
				case <-stop:
					return
				default:
				}
				n := sizes[(i+j)%len(sizes)]
				worker, got, err := Get(c, r, fmt.Sprintf("/bytes/%d", n))
				mu.Lock()
				if err != nil {
					res.Errors = append(res.Errors, fmt.Errorf("connection %d request %d: %w", i, j, err))
					mu.Unlock()
					return
				}
				res.Requests++
				res.Bytes += int64(got)
				res.PerWorker[worker]++
				mu.Unlock()
				if pause > 0 {
					time.Sleep(pause)
				}
			}
		}(i)
	}
	wg.Wait()
	return res
}

// ioTimeout bounds one request of Get.
const ioTimeout = 30 * time.Second

// Get sends GET path on c and reads the response from r, checking the status
// and that the body is the expected one for /bytes/N (and hashes to
// X-Content-Sha256). It returns the worker that answered and the body size.
func Get(c net.Conn, r *bufio.Reader, path string) (string, int, error) {
	c.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: xlb\r\n\r\n", path); err != nil {
		return "", 0, err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", 0, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	if got, want := Sum(body), resp.Header.Get("X-Content-Sha256"); got != want {
		return "", 0, fmt.Errorf("GET %s: body of %d bytes hashes to %s, header says %s", path, len(body), got, want)
	}
	if rest, ok := strings.CutPrefix(path, "/bytes/"); ok {
		if n, _ := strconv.Atoi(rest); n != len(body) || !bytes.Equal(body, Body(n)) {
			return "", 0, fmt.Errorf("GET %s: %d bytes, not the expected body", path, len(body))
		}
	}
	return resp.Header.Get("X-Worker"), len(body), nil
}
