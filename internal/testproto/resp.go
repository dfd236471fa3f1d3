package testproto

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// RESP encodes one command as a RESP array of bulk strings, the way every
// Redis client sends commands.
func RESP(args ...string) []byte {
	b := []byte(fmt.Sprintf("*%d\r\n", len(args)))
	for _, a := range args {
		b = append(b, fmt.Sprintf("$%d\r\n", len(a))...)
		b = append(b, a...)
		b = append(b, "\r\n"...)
	}
	return b
}

// Reply is one RESP reply: Kind is its type byte ('+' simple string, '-'
// error, ':' integer, '$' bulk string, '*' array); Str holds the string,
// error or bulk (Nil for a null bulk or array), Int the integer or length,
// Elems an array's elements.
type Reply struct {
	Kind  byte
	Str   string
	Int   int64
	Nil   bool
	Elems []Reply
}

func (r Reply) String() string {
	switch {
	case r.Nil:
		return string(r.Kind) + "(nil)"
	case r.Kind == '*':
		return fmt.Sprintf("*%d%v", len(r.Elems), r.Elems)
	case r.Kind == ':':
		return fmt.Sprintf(":%d", r.Int)
	case len(r.Str) > 64:
		return fmt.Sprintf("%c%q... (%d bytes)", r.Kind, r.Str[:64], len(r.Str))
	default:
		return fmt.Sprintf("%c%q", r.Kind, r.Str)
	}
}

// maxBulk bounds a bulk string ReadReply accepts (Redis's own default
// proto-max-bulk-len is 512 MB; these tests never go near 64 MB).
const maxBulk = 64 << 20

// ReadReply reads one RESP reply. A byte that cannot start or continue a
// reply is an error that quotes it.
func ReadReply(r *bufio.Reader) (Reply, error) {
	line, err := readLine(r)
	if err != nil {
		return Reply{}, err
	}
	if line == "" {
		return Reply{}, fmt.Errorf("RESP: empty line where a reply starts")
	}
	kind, rest := line[0], line[1:]
	switch kind {
	case '+', '-':
		return Reply{Kind: kind, Str: rest}, nil
	case ':':
		n, err := strconv.ParseInt(rest, 10, 64)
		if err != nil {
			return Reply{}, fmt.Errorf("RESP: integer reply %q", line)
		}
		return Reply{Kind: kind, Int: n}, nil
	case '$':
		n, err := strconv.Atoi(rest)
		if err != nil || n < -1 || n > maxBulk {
			return Reply{}, fmt.Errorf("RESP: bulk header %q", line)
		}
		if n == -1 {
			return Reply{Kind: kind, Nil: true, Int: -1}, nil
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return Reply{}, fmt.Errorf("RESP: bulk of %d bytes: %w", n, err)
		}
		if b[n] != '\r' || b[n+1] != '\n' {
			return Reply{}, fmt.Errorf("RESP: bulk of %d bytes not followed by CRLF but %q", n, b[n:])
		}
		return Reply{Kind: kind, Str: string(b[:n]), Int: int64(n)}, nil
	case '*':
		n, err := strconv.Atoi(rest)
		if err != nil || n < -1 || n > 1<<20 {
			return Reply{}, fmt.Errorf("RESP: array header %q", line)
		}
		if n == -1 {
			return Reply{Kind: kind, Nil: true, Int: -1}, nil
		}
		a := Reply{Kind: kind, Int: int64(n)}
		for i := 0; i < n; i++ {
			e, err := ReadReply(r)
			if err != nil {
				return Reply{}, fmt.Errorf("RESP: element %d of %d: %w", i, n, err)
			}
			a.Elems = append(a.Elems, e)
		}
		return a, nil
	}
	return Reply{}, fmt.Errorf("RESP: %q does not start a reply", line[:min(len(line), 64)])
}

// readLine reads a CRLF-terminated line (without the CRLF), at most 64 KB.
func readLine(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		chunk, err := r.ReadSlice('\n')
		b = append(b, chunk...)
		if err == bufio.ErrBufferFull && len(b) < 64<<10 {
			continue
		}
		if err != nil {
			return "", err
		}
		break
	}
	if len(b) < 2 || b[len(b)-2] != '\r' {
		return "", fmt.Errorf("line %q does not end with CRLF", b[:min(len(b), 64)])
	}
	return string(b[:len(b)-2]), nil
}

// InfoField returns field's value from an INFO reply ("field:value" lines),
// or "" if it is not there.
func InfoField(info, field string) string {
	for _, l := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return v
		}
	}
	return ""
}
