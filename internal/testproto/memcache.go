package testproto

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// MemcacheSet is a memcached text `set` of key to value (flags 0, no
// expiry).
func MemcacheSet(key string, value []byte) []byte {
	b := []byte(fmt.Sprintf("set %s 0 0 %d\r\n", key, len(value)))
	b = append(b, value...)
	return append(b, "\r\n"...)
}

// MemcacheGet is a memcached text `get` of the keys (a multi-get when there
// are several).
func MemcacheGet(keys ...string) []byte {
	return []byte("get " + strings.Join(keys, " ") + "\r\n")
}

// Item is one VALUE of a get answer.
type Item struct {
	Key   string
	Value []byte
}

// ReadGet reads the answer to one get: VALUE blocks, then END. A line that
// is neither (an ERROR, a CLIENT_ERROR, a stray STORED) is an error that
// quotes it.
func ReadGet(r *bufio.Reader) ([]Item, error) {
	var items []Item
	for {
		line, err := readLine(r)
		if err != nil {
			return items, fmt.Errorf("after %d values: %w", len(items), err)
		}
		if line == "END" {
			return items, nil
		}
		f := strings.Fields(line)
		if len(f) < 4 || f[0] != "VALUE" {
			return items, fmt.Errorf("after %d values: %q where VALUE or END belongs", len(items), line[:min(len(line), 80)])
		}
		n, err := strconv.Atoi(f[3])
		if err != nil || n < 0 || n > maxBulk {
			return items, fmt.Errorf("VALUE line %q", line)
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return items, fmt.Errorf("value of %s (%d bytes): %w", f[1], n, err)
		}
		if b[n] != '\r' || b[n+1] != '\n' {
			return items, fmt.Errorf("value of %s (%d bytes) not followed by CRLF but %q", f[1], n, b[n:])
		}
		items = append(items, Item{Key: f[1], Value: b[:n]})
	}
}

// ReadLine reads one CRLF-terminated reply line (STORED, ERROR, ...).
func ReadLine(r *bufio.Reader) (string, error) { return readLine(r) }
