package lab

// The private network namespace and the processes started inside it.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/xlb-lb/xlb/internal/runstate"
)

// Logf is where the package says what it cleaned up (a namespace left by a
// killed run); the harness sets it to its own log.
var Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

// Netns is a network namespace named prefix, this process's pid and a
// turn: "xlbs-1234-xlb".
type Netns struct {
	Name string
	Ino  uint64 // inode of the namespace, in the names of xlb's pins

	mu    sync.Mutex
	procs []*Proc
}

// NewNetns removes the namespaces of killed runs with the same prefix,
// makes a new one with lo up and sets sysctls ("key=value") inside it.
func NewNetns(prefix, turn string, sysctls []string) (*Netns, error) {
	RemoveStaleNamespaces(prefix)
	ns := &Netns{Name: fmt.Sprintf("%s%d-%s", prefix, os.Getpid(), turn)}
	if out, err := exec.Command(Sbin("ip"), "netns", "add", ns.Name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", ns.Name, err, out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(ns.Path(), &st); err != nil {
		ns.Close()
		return nil, err
	}
	ns.Ino = st.Ino
	cmds := [][]string{{Sbin("ip"), "link", "set", "lo", "up"}}
	for _, s := range sysctls {
		cmds = append(cmds, []string{Sbin("sysctl"), "-qw", s})
	}
	for _, c := range cmds {
		if out, err := exec.Command("nsenter", append([]string{"--net=" + ns.Path(), "--"}, c...)...).CombinedOutput(); err != nil {
			ns.Close()
			return nil, fmt.Errorf("%s in %s: %v: %s", strings.Join(c, " "), ns.Name, err, out)
		}
	}
	return ns, nil
}

// Path is the namespace's file, for nsenter --net.
func (ns *Netns) Path() string { return "/run/netns/" + ns.Name }

// Run runs a short command in the namespace (timeout at most) and returns
// its output, stdout and stderr.
func (ns *Netns) Run(timeout time.Duration, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + ns.Path(), "--"}, args...)...).CombinedOutput()
	return string(out)
}

// Command is args in the namespace, bound to ctx: in its own process
// group (killing it kills its children: nginx forks its workers), the whole
// group killed when ctx ends, and killed if this program dies.
func (ns *Netns) Command(ctx context.Context, args ...string) *exec.Cmd {
	c := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + ns.Path(), "--"}, args...)...)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = 2 * time.Second
	return c
}

// RunCtx runs name with args to completion within timeout (or ctx) and
// returns its output, its exit state, and an error that says which command
// failed and how (its last lines).
func (ns *Netns) RunCtx(ctx context.Context, timeout time.Duration, name string, args ...string) (string, *os.ProcessState, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := ns.Command(ctx, append([]string{name}, args...)...)
	out, err := c.CombinedOutput()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("%s: no answer within %v", name, timeout)
	} else if err != nil {
		err = fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, LastLines(string(out), 5))
	}
	return string(out), c.ProcessState, err
}

// RaiseNofile sets this process's open-file limit to n (soft and hard),
// which the processes it starts inherit. (Go raises its own soft limit at
// start but gives children the original one back, unless the program set
// one itself.)
func RaiseNofile(n uint64) error {
	lim := syscall.Rlimit{Cur: n, Max: n}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("open-file limit %d: %w", n, err)
	}
	return nil
}

// Proc is a long-running process in the namespace. Its stdout lines go to
// Lines (when asked for) or to its kept output, its stdin is a pipe. Done
// is closed when it has exited; Err is its exit status then.
type Proc struct {
	Name  string
	Cmd   *exec.Cmd
	Stdin io.WriteCloser
	Lines chan string
	Done  chan struct{}
	Err   error

	mu  sync.Mutex
	out strings.Builder
}

// Start starts args in the namespace (nsenter --net: never `ip netns exec`,
// whose private mount namespace would hide xlb's bpffs pins from us), in
// its own process group, killed if this program dies. With lines, stdout
// lines are sent there (stderr is kept).
func (ns *Netns) Start(name string, withLines bool, args ...string) (*Proc, error) {
	p := &Proc{Name: name, Done: make(chan struct{})}
	p.Cmd = exec.Command("nsenter", append([]string{"--net=" + ns.Path(), "--"}, args...)...)
	p.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var err error
	if p.Stdin, err = p.Cmd.StdinPipe(); err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	p.Cmd.Stderr = pw
	var lr *io.PipeReader
	var lw *io.PipeWriter
	if withLines {
		lr, lw = io.Pipe()
		p.Cmd.Stdout = lw
		p.Lines = make(chan string, 16)
	} else {
		p.Cmd.Stdout = pw
	}
	if err := p.Cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	ns.mu.Lock()
	ns.procs = append(ns.procs, p)
	ns.mu.Unlock()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		io.Copy(io.Discard, pr)
	}()
	if withLines {
		go func() {
			sc := bufio.NewScanner(lr)
			for sc.Scan() {
				p.Lines <- sc.Text()
			}
			io.Copy(io.Discard, lr)
			close(p.Lines)
		}()
	}
	go func() {
		p.Err = p.Cmd.Wait()
		pw.Close()
		if lw != nil {
			lw.Close()
		}
		close(p.Done)
	}()
	return p, nil
}

func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Pid is the process itself: nsenter execs into it.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// WaitOutput waits until the output (stderr, and stdout without Lines)
// holds substr n times.
func (p *Proc) WaitOutput(substr string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if strings.Count(p.Output(), substr) >= n {
			return nil
		}
		select {
		case <-p.Done:
			return fmt.Errorf("%s exited (%v) before printing %q:\n%s", p.Name, p.Err, substr, LastLines(p.Output(), 20))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not print %q %d times within %v:\n%s", p.Name, substr, n, timeout, LastLines(p.Output(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop sends SIGINT (xlb then detaches and removes its pins), waits, and
// kills the process group if it does not end within timeout.
func (p *Proc) Stop(timeout time.Duration) error {
	select {
	case <-p.Done:
		return nil
	default:
	}
	syscall.Kill(p.Pid(), syscall.SIGINT)
	select {
	case <-p.Done:
		syscall.Kill(-p.Pid(), syscall.SIGKILL) // forked children, if any
		return nil
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s did not stop within %v on SIGINT; killed", p.Name, timeout)
	}
}

// Kill kills the process group and waits for the process (5 s at most).
func (p *Proc) Kill() {
	select {
	case <-p.Done: // its pid may be another process's by now
		return
	default:
	}
	syscall.Kill(-p.Pid(), syscall.SIGKILL)
	select {
	case <-p.Done:
	case <-time.After(5 * time.Second):
	}
}

// WaitListen waits until n sockets of the namespace listen on port, from
// the namespace's /proc/net/tcp and tcp6 seen through p.
func WaitListen(p *Proc, port, n int, timeout time.Duration) error {
	want := fmt.Sprintf(":%04X 00000000:0000 0A", port)
	want6 := fmt.Sprintf(":%04X 00000000000000000000000000000000:0000 0A", port)
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", p.Pid()))
		b6, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp6", p.Pid()))
		if strings.Count(string(b), want)+strings.Count(string(b6), want6) >= n {
			return nil
		}
		select {
		case <-p.Done:
			return fmt.Errorf("%s exited (%v):\n%s", p.Name, p.Err, LastLines(p.Output(), 20))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: nothing listens on port %d after %v:\n%s", p.Name, port, timeout, LastLines(p.Output(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Close kills every process started in the namespace and anything else
// still inside it, removes the pins and control sockets an xlb killed
// inside it may have left, and deletes the namespace.
func (ns *Netns) Close() error {
	ns.mu.Lock()
	procs := ns.procs
	ns.procs = nil
	ns.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
	if out, err := exec.Command(Sbin("ip"), "netns", "pids", ns.Name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if ns.Ino != 0 {
		runstate.RemoveLeftovers(ns.Ino)
	}
	if out, err := exec.Command(Sbin("ip"), "netns", "del", ns.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", ns.Name, err, out)
	}
	return nil
}

// RemoveStaleNamespaces deletes namespaces left by runs that were killed
// (SIGKILL skips every cleanup), recognised by the dead pid in their name.
func RemoveStaleNamespaces(nsPrefix string) {
	out, err := exec.Command(Sbin("ip"), "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], nsPrefix) {
			continue
		}
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(f[0], nsPrefix), "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue
		}
		stale := &Netns{Name: f[0]}
		var st syscall.Stat_t
		if syscall.Stat(stale.Path(), &st) == nil {
			stale.Ino = st.Ino
		}
		Logf("removing namespace %s left by a killed run", stale.Name)
		if err := stale.Close(); err != nil {
			Logf("%v", err)
		}
	}
}

// Sbin finds tools of the sbin directories even when PATH lacks them.
func Sbin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if _, err := os.Stat(dir + "/" + name); err == nil {
			return dir + "/" + name
		}
	}
	return name
}

// LastLines is the last n lines of s.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Veth joins namespaces a and b with a veth pair (aName in a, bName in b,
// each made inside its namespace, so the host never sees them), gives the
// ends the IPv4 prefixes aAddr and bAddr ("10.0.0.1/24"), sets them up and
// turns tx checksum offload off on both: a packet rewritten by a native XDP
// program and sent on with XDP_TX or a redirect loses the skb's "checksum
// to be completed" mark, so only complete checksums survive that path, as
// on a wire.
func Veth(a *Netns, aName, aAddr string, b *Netns, bName, bAddr string) error {
	ip := Sbin("ip")
	if out, err := exec.Command(ip, "link", "add", aName, "netns", a.Name, "type", "veth", "peer", "name", bName, "netns", b.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip link add %s/%s: %v: %s", aName, bName, err, out)
	}
	for _, end := range []struct {
		ns         *Netns
		name, addr string
	}{{a, aName, aAddr}, {b, bName, bAddr}} {
		for _, c := range [][]string{
			{ip, "-n", end.ns.Name, "addr", "add", end.addr, "dev", end.name},
			{ip, "-n", end.ns.Name, "link", "set", end.name, "up"},
			{"nsenter", "--net=" + end.ns.Path(), "--", Sbin("ethtool"), "-K", end.name, "tx", "off"},
		} {
			if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				return fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, out)
			}
		}
	}
	return nil
}
