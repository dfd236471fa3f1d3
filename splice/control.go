package splice

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xlb-lb/xlb/internal/runstate"
)

// The control socket: a unix stream socket, mode 0600 in a 0700 directory,
// that answers only root (or xlb's own uid). One request per connection: a
// length-prefixed JSON Request, answered by a length-prefixed JSON Response
// (the handover also passes file descriptors, see handover.go).

// DefaultSocket is the control socket of the instance on iface.
func DefaultSocket(iface string) string { return runstate.Socket(iface) }

// Request is a control command.
type Request struct {
	Cmd  string   `json:"cmd"`
	Args []string `json:"args,omitempty"`
}

// Response answers a Request.
type Response struct {
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// maxMessage bounds a control message (a handover of 100k legs fits).
const maxMessage = 64 << 20

// controlTimeout bounds one exchange on the control socket.
const controlTimeout = 30 * time.Second

func writeMsg(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(b)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

func readMsg(r io.Reader, v any) error {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxMessage {
		return fmt.Errorf("control message of %d bytes is too large", size)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("bad control message: %w", err)
	}
	return nil
}

// ErrNoInstance is returned when no xlb answers on the control socket.
var ErrNoInstance = errors.New("no xlb is running there")

// Dial connects to the control socket at path.
func Dial(path string) (*net.UnixConn, error) {
	c, err := net.DialTimeout("unix", path, controlTimeout)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist), errors.Is(err, unix.ECONNREFUSED):
			return nil, fmt.Errorf("control socket %s: %w (start one, or name its socket with --socket)", path, ErrNoInstance)
		case errors.Is(err, os.ErrPermission):
			return nil, fmt.Errorf("control socket %s: permission denied: run as root", path)
		}
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	c.SetDeadline(time.Now().Add(controlTimeout))
	return c.(*net.UnixConn), nil
}

// Call sends one request and decodes the result into out (if not nil).
func Call(path string, req Request, out any) error {
	c, err := Dial(path)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := writeMsg(c, req); err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	var resp Response
	if err := readMsg(c, &resp); err != nil {
		return fmt.Errorf("control socket %s: %w", path, err)
	}
	if resp.Error != "" {
		return errors.New(resp.Error)
	}
	if out != nil && resp.Result != nil {
		return json.Unmarshal(resp.Result, out)
	}
	return nil
}

// listenControl makes the control socket. A stale socket file (no process
// behind it) is replaced; a live one is an error.
func listenControl(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s is in use: another xlb runs with it (use --reuse to take over, or --socket to choose another)", path)
	}
	os.Remove(path)
	return listenControlAt(path)
}

// listenControlAt listens at path, which must be free, with mode 0600.
func listenControlAt(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	return ln, nil
}

// peerAllowed lets in root and the uid xlb runs as.
func peerAllowed(c *net.UnixConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	rc.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cerr != nil {
		return cerr
	}
	if cred.Uid != 0 && int(cred.Uid) != os.Geteuid() {
		return fmt.Errorf("uid %d may not control xlb: run as root", cred.Uid)
	}
	return nil
}

// serveControl answers control connections until the listener closes.
func (lb *LB) serveControl(ln *net.UnixListener) {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				lb.log.Warn("control socket", "err", err)
			}
			return
		}
		go lb.controlConn(c)
	}
}

func (lb *LB) controlConn(c *net.UnixConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(controlTimeout))
	reply := func(result any, err error) {
		var resp Response
		if err != nil {
			resp.Error = err.Error()
		} else if result != nil {
			b, merr := json.Marshal(result)
			if merr != nil {
				resp.Error = merr.Error()
			}
			resp.Result = b
		}
		writeMsg(c, resp)
	}
	if err := peerAllowed(c); err != nil {
		reply(nil, err)
		return
	}
	var req Request
	if err := readMsg(c, &req); err != nil {
		reply(nil, err)
		return
	}
	switch req.Cmd {
	case "status", "list":
		reply(lb.Status(), nil)
	case "add":
		if len(req.Args) != 1 {
			reply(nil, errors.New("add: want HOST:PORT[@WEIGHT]"))
			return
		}
		spec, err := ParseWorker(req.Args[0])
		if err == nil {
			err = lb.AddWorker(spec)
		}
		reply(nil, err)
	case "drain", "remove":
		if len(req.Args) != 1 {
			reply(nil, fmt.Errorf("%s: want HOST:PORT", req.Cmd))
			return
		}
		if req.Cmd == "drain" {
			reply(nil, lb.DrainWorker(req.Args[0]))
		} else {
			reply(nil, lb.RemoveWorker(req.Args[0]))
		}
	case "weight":
		if len(req.Args) != 2 {
			reply(nil, errors.New("weight: want HOST:PORT WEIGHT"))
			return
		}
		w, err := strconv.Atoi(req.Args[1])
		if err != nil {
			reply(nil, fmt.Errorf("weight %q: not a number", req.Args[1]))
			return
		}
		reply(nil, lb.SetWeight(req.Args[0], w))
	case "clients":
		reply(lb.Clients(), nil)
	case "rematch":
		if len(req.Args) != 2 {
			reply(nil, errors.New("rematch: want CLIENT_HOST:PORT WORKER_HOST:PORT"))
			return
		}
		reply(nil, lb.Rematch(req.Args[0], req.Args[1]))
	case "handover":
		lb.giveHandover(c)
	default:
		reply(nil, fmt.Errorf("unknown control command %q", req.Cmd))
	}
}

// Status1 asks the xlb serving iface (default control socket) for its
// status: an error if none answers.
func Status1(iface string) (Status, error) {
	var st Status
	err := Call(DefaultSocket(iface), Request{Cmd: "status"}, &st)
	return st, err
}
