package testkit

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/testnet"
)

// Bounds of the waits on processes.
const (
	// StartTimeout bounds a process's start: its first lines, its
	// listener, xlb's workers up and pools full.
	StartTimeout = 15 * time.Second
	// StopTimeout bounds a process's exit after SIGINT or a handover.
	StopTimeout = 20 * time.Second
)

// VerboseEnv names the variable that prints every process's output at the
// end of its test, failed or not.
const VerboseEnv = "XLB_TEST_VERBOSE"

// Verbose reports whether $XLB_TEST_VERBOSE is set.
func Verbose() bool { return os.Getenv(VerboseEnv) != "" }

// Proc is a process whose output lines (stdout and stderr) are kept and can
// be waited on. It is killed, with its process group, at the end of its
// test; its output is logged then if the test failed or Verbose().
type Proc struct {
	Name string
	Args []string // as started: the program, then its arguments
	Cmd  *exec.Cmd

	t     testing.TB
	mu    sync.Mutex
	lines []string
	cond  *sync.Cond
	done  chan struct{}
	err   error
}

// Start runs args in ns as a process named name (in messages).
func Start(t testing.TB, ns *testnet.NS, name string, args ...string) *Proc {
	t.Helper()
	p, err := Spawn(t, ns, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Spawn is Start that returns its error, for a goroutine other than the
// test's (which must not call t.Fatal).
func Spawn(t testing.TB, ns *testnet.NS, name string, args ...string) (*Proc, error) {
	p, err := SpawnCmd(t, name, ns.Command(args[0], args[1:]...))
	if p != nil {
		p.Args = args
	}
	return p, err
}

// SpawnCmd starts cmd (whose SysProcAttr should give it a process group of
// its own, as testnet.NS.Command does) as a Proc.
func SpawnCmd(t testing.TB, name string, cmd *exec.Cmd) (*Proc, error) {
	p := &Proc{Name: name, Args: cmd.Args, Cmd: cmd, t: t, done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			p.cond.Broadcast()
			p.mu.Unlock()
		}
		io.Copy(io.Discard, pr) // a line too long for the scanner: the writer must not block
	}()
	go func() {
		p.err = cmd.Wait()
		pw.Close()
		<-scanned // every line is in p.lines once done is closed
		close(p.done)
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() || Verbose() {
			t.Logf("--- output of %s:\n%s", name, p.Output())
		}
	})
	return p, nil
}

// Done is closed once the process exited and all its output was read.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is the process's exit error (cmd.Wait's); read it after Done.
func (p *Proc) Err() error {
	<-p.done
	return p.err
}

// Output is every line the process printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// Count is the number of output lines that contain substr.
func (p *Proc) Count(substr string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.countLocked(substr)
}

func (p *Proc) countLocked(substr string) int {
	n := 0
	for _, l := range p.lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// WaitLines waits until n output lines contain substr, failing the test if
// the process exits first or timeout passes.
func (p *Proc) WaitLines(substr string, n int, timeout time.Duration) {
	p.t.Helper()
	if err := p.AwaitLines(substr, n, timeout); err != nil {
		p.t.Fatal(err)
	}
}

// AwaitLines is WaitLines that returns its error, for a goroutine other than
// the test's. It waits on the lines as they come (no polling) and reports
// with the process's lock released.
func (p *Proc) AwaitLines(substr string, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer timer.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		if p.countLocked(substr) >= n {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v) before printing %q %d times:\n%s", p.Name, p.err, substr, n, strings.Join(p.lines, "\n"))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not print %q %d times within %v:\n%s", p.Name, substr, n, timeout, strings.Join(p.lines, "\n"))
		}
		p.cond.Wait()
	}
}

// Stop sends SIGINT and waits for a clean exit: the test fails if the
// process takes longer than StopTimeout (it is killed then) or exits with
// an error.
func (p *Proc) Stop() {
	p.t.Helper()
	exited, err := p.interrupt()
	if !exited {
		p.t.Fatal(err)
	}
	if err != nil {
		p.t.Errorf("%s exited with %v", p.Name, err)
	}
}

// StopErr sends SIGINT and waits for the exit; it returns the exit error,
// or one saying the process did not stop within StopTimeout (it is killed
// then).
func (p *Proc) StopErr() error {
	_, err := p.interrupt()
	return err
}

func (p *Proc) interrupt() (exited bool, err error) {
	p.Cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
		return true, p.err
	case <-time.After(StopTimeout):
		p.Kill()
		return false, fmt.Errorf("%s did not stop within %v", p.Name, StopTimeout)
	}
}

// Exited waits up to timeout for the process to exit on its own and
// reports whether it did (Err is its exit error then).
func (p *Proc) Exited(timeout time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// Kill kills the process and its process group (nginx's workers hold the
// output pipe too) with SIGKILL and waits for it.
func (p *Proc) Kill() {
	select {
	case <-p.done:
	default:
		syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// WaitAccepts waits up to StartTimeout until addr accepts TCP connections in
// ns (for servers that say nothing when they are ready), failing the test
// if p exits first.
func (p *Proc) WaitAccepts(ns *testnet.NS, addr string) {
	p.t.Helper()
	if err := ns.WaitAccepts(addr, StartTimeout, p.done); err != nil {
		p.t.Fatalf("%s %v:\n%s", p.Name, err, p.Output())
	}
}
