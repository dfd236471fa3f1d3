package main

// The private network namespace of one balancer's turn, and the processes
// started inside it (a short version of bench/ns.go). Everything made here
// is removed by (*netns).close, which also runs on Ctrl-C and SIGTERM.

import (
	"bufio"
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

// nsPrefix starts the name of every namespace this program makes; then
// come its pid and the turn, so that leftovers of a killed run can be
// recognised.
const nsPrefix = "xlbs-"

// sysctls of the namespace (each is per network namespace on Linux 6.x;
// none is set on the host). The TCP memory limits (net.ipv4.tcp_mem) are
// global, not per namespace: their defaults (a few GiB on this machine)
// are far above what 200,000 idle sockets take, so they are left alone.
var sysctls = []string{
	"net.core.somaxconn=65535",
	"net.ipv4.tcp_max_syn_backlog=65535",
	// One source address reaches one destination from these ports: more
	// than perClient. Listening ports (workers, balancer) are below.
	"net.ipv4.ip_local_port_range=10000 65000",
}

type netns struct {
	name string
	ino  uint64 // inode of the namespace, in the names of xlb's pins

	mu    sync.Mutex
	procs []*proc
}

func newNetns(turn string) (*netns, error) {
	removeStaleNamespaces()
	ns := &netns{name: fmt.Sprintf("%s%d-%s", nsPrefix, os.Getpid(), turn)}
	if out, err := exec.Command(sbin("ip"), "netns", "add", ns.name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", ns.name, err, out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(ns.path(), &st); err != nil {
		ns.close()
		return nil, err
	}
	ns.ino = st.Ino
	cmds := [][]string{{sbin("ip"), "link", "set", "lo", "up"}}
	for _, s := range sysctls {
		cmds = append(cmds, []string{sbin("sysctl"), "-qw", s})
	}
	for _, c := range cmds {
		if out, err := exec.Command("nsenter", append([]string{"--net=" + ns.path(), "--"}, c...)...).CombinedOutput(); err != nil {
			ns.close()
			return nil, fmt.Errorf("%s in %s: %v: %s", strings.Join(c, " "), ns.name, err, out)
		}
	}
	return ns, nil
}

func (ns *netns) path() string { return "/run/netns/" + ns.name }

// proc is a long-running process in the namespace. Its stdout lines go to
// lines (when asked for) or to its kept output, its stdin is a pipe.
type proc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	done  chan struct{}
	err   error

	mu  sync.Mutex
	out strings.Builder
}

// start starts args in the namespace (nsenter --net: never `ip netns exec`,
// whose private mount namespace would hide xlb's bpffs pins from us), in
// its own process group, killed if this program dies. With lines, stdout
// lines are sent there (stderr is kept).
func (ns *netns) start(name string, withLines bool, args ...string) (*proc, error) {
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command("nsenter", append([]string{"--net=" + ns.path(), "--"}, args...)...)
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	p.cmd.Stderr = pw
	var lr *io.PipeReader
	var lw *io.PipeWriter
	if withLines {
		lr, lw = io.Pipe()
		p.cmd.Stdout = lw
		p.lines = make(chan string, 16)
	} else {
		p.cmd.Stdout = pw
	}
	if err := p.cmd.Start(); err != nil {
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
				p.lines <- sc.Text()
			}
			io.Copy(io.Discard, lr)
			close(p.lines)
		}()
	}
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		if lw != nil {
			lw.Close()
		}
		close(p.done)
	}()
	return p, nil
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// pid is the process itself: nsenter execs into it.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop sends SIGINT (xlb then detaches and removes its pins), waits, and
// kills the process group if it does not end within timeout.
func (p *proc) stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	syscall.Kill(p.pid(), syscall.SIGINT)
	select {
	case <-p.done:
		syscall.Kill(-p.pid(), syscall.SIGKILL) // forked children, if any
		return nil
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("%s did not stop within %v on SIGINT; killed", p.name, timeout)
	}
}

func (p *proc) kill() {
	syscall.Kill(-p.pid(), syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
	}
}

// waitListen waits until n sockets of the namespace listen on port, from
// the namespace's /proc/net/tcp seen through p.
func waitListen(p *proc, port, n int, timeout time.Duration) error {
	want := fmt.Sprintf(":%04X 00000000:0000 0A", port)
	deadline := time.Now().Add(timeout)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/tcp", p.pid()))
		if strings.Count(string(b), want) >= n {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v):\n%s", p.name, p.err, lastLines(p.output(), 20))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: nothing listens on port %d after %v:\n%s", p.name, port, timeout, lastLines(p.output(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// close kills every process started in the namespace and anything else
// still inside it, removes the pins and control sockets an xlb killed
// inside it may have left, and deletes the namespace.
func (ns *netns) close() error {
	ns.mu.Lock()
	procs := ns.procs
	ns.procs = nil
	ns.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
	if out, err := exec.Command(sbin("ip"), "netns", "pids", ns.name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if ns.ino != 0 {
		runstate.RemoveLeftovers(ns.ino)
	}
	if out, err := exec.Command(sbin("ip"), "netns", "del", ns.name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", ns.name, err, out)
	}
	return nil
}

// removeStaleNamespaces deletes namespaces left by runs that were killed
// (SIGKILL skips every cleanup), recognised by the dead pid in their name.
func removeStaleNamespaces() {
	out, err := exec.Command(sbin("ip"), "netns", "list").Output()
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
		stale := &netns{name: f[0]}
		var st syscall.Stat_t
		if syscall.Stat(stale.path(), &st) == nil {
			stale.ino = st.Ino
		}
		logf("removing namespace %s left by a killed run", stale.name)
		if err := stale.close(); err != nil {
			logf("%v", err)
		}
	}
}

// sbin finds tools of the sbin directories even when PATH lacks them.
func sbin(name string) string {
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

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
