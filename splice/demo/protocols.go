package demo

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The demo worker's endpoints for protocols that break the one request, one
// response rhythm on purpose, so that tests can check what a load balancer
// does with them:
//   - POST /upload reads the body and answers its SHA-256. A request with
//     `Expect: 100-continue` gets the interim `100 Continue` first (net/http
//     sends it when the handler starts reading the body), so the exchange is
//     request headers, 100, body, final response.
//   - GET /echo with `Connection: Upgrade` and an `Upgrade` header switches
//     protocols (101) and then speaks the echo protocol below on the raw
//     connection, in both directions at once, for as long as the client
//     keeps the connection.
const (
	UploadPath = "/upload"
	EchoPath   = "/echo"
)

// upload answers the hex SHA-256 of the request body (and its length in
// X-Body-Length).
func upload(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		http.Error(w, "want POST or PUT "+UploadPath, http.StatusMethodNotAllowed)
		return
	}
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, fmt.Sprintf("reading the body after %d bytes: %v", n, err), http.StatusBadRequest)
		return
	}
	body := hex.EncodeToString(h.Sum(nil)) + "\n"
	w.Header().Set("X-Body-Length", strconv.FormatInt(n, 10))
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	io.WriteString(w, body)
}

// The echo protocol, spoken after the /echo upgrade. Every message is a
// frame: an op byte, a 4-byte big-endian payload length, the payload.
//   - client FrameEcho: the worker answers FrameEchoed with Stamp(name,
//     payload);
//   - client FramePush with 12 bytes (count, size, interval in ms, each
//     uint32 big-endian): the worker sends count FramePushed frames of
//     Stamp(name, Body(size)), one every interval, on its own while it goes
//     on echoing (the worker speaks without being asked);
//
// The stamp says which worker produced each frame, so a client can check
// that a whole stream came from one worker.
const (
	FrameEcho    byte = 'E'
	FrameEchoed  byte = 'e'
	FramePush    byte = 'P'
	FramePushed  byte = 'p'
	MaxFrame          = 16 << 20
	echoIdleTime      = 2 * time.Minute // an upgraded connection silent this long is closed
)

// Stamp is the payload of a worker's frame: the worker's name (one length
// byte, then the name) followed by p.
func Stamp(name string, p []byte) []byte {
	b := make([]byte, 0, 1+len(name)+len(p))
	b = append(b, byte(len(name)))
	b = append(b, name...)
	return append(b, p...)
}

// Unstamp splits a worker's frame payload into the worker's name and the
// rest.
func Unstamp(b []byte) (string, []byte, error) {
	if len(b) < 1 || len(b) < 1+int(b[0]) {
		return "", nil, fmt.Errorf("frame payload of %d bytes has no worker stamp", len(b))
	}
	return string(b[1 : 1+b[0]]), b[1+b[0]:], nil
}

// WriteFrame writes one frame.
func WriteFrame(w io.Writer, op byte, payload []byte) error {
	var h [5]byte
	h[0] = op
	binary.BigEndian.PutUint32(h[1:], uint32(len(payload)))
	_, err := w.Write(append(h[:], payload...))
	return err
}

// ReadFrame reads one frame.
func ReadFrame(r io.Reader) (byte, []byte, error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(h[1:])
	if n > MaxFrame {
		return 0, nil, fmt.Errorf("frame header %q announces %d bytes (more than %d): not an echo frame", h[:], n, MaxFrame)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, fmt.Errorf("frame %q of %d bytes: %w", h[0], n, err)
	}
	return h[0], p, nil
}

// PushRequest is the payload of a FramePush.
func PushRequest(count, size int, interval time.Duration) []byte {
	b := make([]byte, 12)
	binary.BigEndian.PutUint32(b[0:], uint32(count))
	binary.BigEndian.PutUint32(b[4:], uint32(size))
	binary.BigEndian.PutUint32(b[8:], uint32(interval.Milliseconds()))
	return b
}

// headerHas reports whether the comma-separated header h lists token.
func headerHas(r *http.Request, h, token string) bool {
	for _, v := range r.Header.Values(h) {
		for _, f := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

// echoUpgrade switches the connection to the echo protocol.
func echoUpgrade(name string, w http.ResponseWriter, r *http.Request) {
	proto := r.Header.Get("Upgrade")
	if !headerHas(r, "Connection", "upgrade") || proto == "" {
		w.Header().Set("Upgrade", "xlb-echo")
		http.Error(w, "want Connection: Upgrade and an Upgrade header", http.StatusUpgradeRequired)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "cannot take the connection over", http.StatusInternalServerError)
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	// What the client sent after its request (it may start speaking before
	// the 101 arrives) is in brw.Reader: read from there.
	fmt.Fprintf(brw.Writer, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: %s\r\nConnection: Upgrade\r\nX-Worker: %s\r\n\r\n", proto, name)
	if brw.Writer.Flush() != nil {
		return
	}
	serveEcho(name, conn, brw.Reader)
}

// serveEcho speaks the echo protocol until the client closes or breaks it.
func serveEcho(name string, conn net.Conn, r *bufio.Reader) {
	var mu sync.Mutex // one writer at a time: echoes and pushes interleave by frame
	write := func(op byte, p []byte) error {
		mu.Lock()
		defer mu.Unlock()
		conn.SetWriteDeadline(time.Now().Add(echoIdleTime))
		return WriteFrame(conn, op, Stamp(name, p))
	}
	done := make(chan struct{})
	var pushes sync.WaitGroup
	defer func() {
		close(done)
		pushes.Wait()
	}()
	for {
		conn.SetReadDeadline(time.Now().Add(echoIdleTime))
		op, p, err := ReadFrame(r)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				// Tell the client what broke (it may be reading).
				write('!', []byte(err.Error()))
			}
			return
		}
		switch op {
		case FrameEcho:
			if write(FrameEchoed, p) != nil {
				return
			}
		case FramePush:
			if len(p) != 12 {
				write('!', []byte(fmt.Sprintf("push request of %d bytes, want 12", len(p))))
				return
			}
			count := int(binary.BigEndian.Uint32(p[0:]))
			size := int(binary.BigEndian.Uint32(p[4:]))
			interval := time.Duration(binary.BigEndian.Uint32(p[8:])) * time.Millisecond
			if size > MaxFrame-256 || count > 1<<16 {
				write('!', []byte(fmt.Sprintf("push of %d frames of %d bytes: too much", count, size)))
				return
			}
			pushes.Add(1)
			go func() {
				defer pushes.Done()
				body := Body(size)
				for i := 0; i < count; i++ {
					if i > 0 && interval > 0 {
						select {
						case <-done:
							return
						case <-time.After(interval):
						}
					}
					if write(FramePushed, body) != nil {
						return
					}
				}
			}()
		default:
			write('!', []byte(fmt.Sprintf("unknown frame op %q (first bytes %q)", op, p[:min(len(p), 32)])))
			return
		}
	}
}

// Upgrade sends the /echo upgrade request on c and reads the 101 from r. It
// returns the worker that answered.
func Upgrade(c net.Conn, r *bufio.Reader, proto string) (string, error) {
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: xlb\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n", EchoPath, proto); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", fmt.Errorf("upgrade: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", fmt.Errorf("upgrade: %s: %q", resp.Status, body)
	}
	if got := resp.Header.Get("Upgrade"); got != proto {
		return "", fmt.Errorf("upgrade: 101 names protocol %q, asked for %q", got, proto)
	}
	return resp.Header.Get("X-Worker"), nil
}

// CheckFrame checks a frame read from a worker: op, stamp and payload.
func CheckFrame(op byte, p []byte, wantOp byte, wantWorker string, want []byte) error {
	if op == '!' {
		return fmt.Errorf("worker reported an error: %q", p)
	}
	if op != wantOp {
		return fmt.Errorf("frame op %q, want %q (payload of %d bytes starts %q)", op, wantOp, len(p), p[:min(len(p), 32)])
	}
	w, rest, err := Unstamp(p)
	if err != nil {
		return err
	}
	if w != wantWorker {
		return fmt.Errorf("frame from worker %q, the stream was upgraded by %q", w, wantWorker)
	}
	if !bytes.Equal(rest, want) {
		i := 0
		for i < len(rest) && i < len(want) && rest[i] == want[i] {
			i++
		}
		return fmt.Errorf("payload of %d bytes, want %d; first difference at byte %d", len(rest), len(want), i)
	}
	return nil
}
