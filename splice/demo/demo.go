// Package demo is the demo worker's HTTP handler and the matching checks:
// deterministic bodies whose hash a client verifies, and a header naming the
// worker that answered. Tests, local_script.sh and the benchmarks use it.
package demo

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
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

// Handler serves / and /bytes/N as worker `name`, each after `delay`.
func Handler(name string, delay time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if delay > 0 {
			time.Sleep(delay)
		}
		w.Header().Set("X-Worker", name)
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
