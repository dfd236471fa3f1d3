package main

// The private network namespace of a benchmark run, and the processes
// started inside it. Everything made here is removed by (*netns).close,
// which also runs on Ctrl-C and SIGTERM.

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

// nsPrefix starts the name of every namespace the harness makes; the rest is
// the harness's pid, so that leftovers of a killed run can be recognised.
const nsPrefix = "xlbb-"

// nofile is the open-file limit of every process in the namespace: wrk
// -c1000 through a proxy needs two descriptors per connection and more.
const nofile = 20000

// netns is a named network namespace (ip netns add), entered with nsenter
// --net (never `ip netns exec`: its private mount namespace would hide the
// bpffs pins xlb makes from the harness that removes them).
type netns struct {
	name string
	ino  uint64 // inode of the namespace, in the names of xlb's pins

	mu    sync.Mutex
	procs []*proc
}

func newNetns() (*netns, error) {
	removeStaleNamespaces()
	ns := &netns{name: fmt.Sprintf("%s%d", nsPrefix, os.Getpid())}
	if out, err := exec.Command(sbin("ip"), "netns", "add", ns.name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", ns.name, err, out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(ns.path(), &st); err != nil {
		ns.close()
		return nil, err
	}
	ns.ino = st.Ino
	if out, err := exec.Command(sbin("ip"), "-n", ns.name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		ns.close()
		return nil, fmt.Errorf("lo up in %s: %v: %s", ns.name, err, out)
	}
	// A client that closes first leaves its side in TIME-WAIT, and every
	// client of the connection-per-request rows connects from 127.0.0.1 to
	// one address: with the default 28,232 ephemeral ports, connect() spends
	// its time searching for a free one (TIME-WAIT is reused after 1 s at
	// the earliest), about 100 µs a connection at 15k/s. Ports from
	// ephemeralPorts up: no listening port of the harness is among them.
	if out, err := exec.Command("nsenter", "--net="+ns.path(), "--", sbin("sysctl"), "-qw",
		fmt.Sprintf("net.ipv4.ip_local_port_range=%d 65000", ephemeralPorts)).CombinedOutput(); err != nil {
		ns.close()
		return nil, fmt.Errorf("ip_local_port_range in %s: %v: %s", ns.name, err, out)
	}
	return ns, nil
}

// ephemeralPorts is the first port of the namespace's ephemeral range,
// above every port the harness listens on (lbPort0 + 1000 at most).
const ephemeralPorts = 10000

func (ns *netns) path() string { return "/run/netns/" + ns.name }

// command is name with args inside the namespace, with the open-file limit
// raised, in its own process group (so that killing it kills its children:
// nginx forks its workers), killed if the harness dies.
func (ns *netns) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	full := append([]string{"--net=" + ns.path(), "--", "/bin/sh", "-c",
		fmt.Sprintf(`ulimit -n %d && exec "$@"`, nofile), "sh", name}, args...)
	c := exec.CommandContext(ctx, "nsenter", full...)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = 2 * time.Second
	return c
}

// run runs a command to completion within timeout and returns its output.
func (ns *netns) run(ctx context.Context, timeout time.Duration, name string, args ...string) (string, *os.ProcessState, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := ns.command(ctx, name, args...)
	out, err := c.CombinedOutput()
	if ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("%s: no answer within %v", name, timeout)
	} else if err != nil {
		err = fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, lastLines(string(out), 5))
	}
	return string(out), c.ProcessState, err
}

// proc is a long-running process in the namespace whose output is kept.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error

	mu  sync.Mutex
	out strings.Builder
}

func (ns *netns) start(name string, args ...string) (*proc, error) {
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = ns.command(context.Background(), args[0], args[1:]...)
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
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
	go func() {
		p.err = p.cmd.Wait()
		pw.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// pid is the process itself: nsenter and sh exec into it.
func (p *proc) pid() int { return p.cmd.Process.Pid }

// waitOutput waits until the output holds substr n times.
func (p *proc) waitOutput(substr string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if strings.Count(p.output(), substr) >= n {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v) before printing %q:\n%s", p.name, p.err, substr, lastLines(p.output(), 20))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not print %q %d times within %v:\n%s", p.name, substr, n, timeout, lastLines(p.output(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

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

// waitPort waits until something accepts on 127.0.0.1:port in the namespace.
func (ns *netns) waitPort(ctx context.Context, port int, p *proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, _, err := ns.run(ctx, 2*time.Second, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d", port))
		if err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v):\n%s", p.name, p.err, lastLines(p.output(), 20))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s: nothing accepts on port %d after %v:\n%s", p.name, port, timeout, lastLines(p.output(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// close kills every process started in the namespace, anything else still
// inside it, removes the pins and control sockets an xlb killed inside it
// may have left, and deletes the namespace.
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
	out, err := exec.Command(sbin("ip"), "netns", "del", ns.name).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", ns.name, err, out)
	}
	return nil
}

// removeStaleNamespaces deletes namespaces left by harness runs that were
// killed (SIGKILL skips every cleanup), recognised by the dead pid in their
// name.
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
		pid, err := strconv.Atoi(strings.TrimPrefix(f[0], nsPrefix))
		if err != nil || syscall.Kill(pid, 0) == nil || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
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
