// Package testnet builds private network namespaces and veth pairs for tests
// that need the real kernel: XDP attachment, spliced TCP connections, packets
// with real checksums. Everything it creates lives inside namespaces it owns and
// is removed by t.Cleanup, even when the test fails.
//
// It is test helper code: it takes a testing.TB and fails the test on error.
package testnet

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xlb-lb/xlb/internal/runstate"
)

// rootEnv forces root-only tests to fail instead of skipping when not root.
// CI sets it, so that a misconfigured runner never skips silently.
const rootEnv = "XLB_TEST_ROOT"

// namePrefix starts the name of every namespace this package creates, so that
// leftovers are easy to spot (`ip netns list | grep xlbt-`).
const namePrefix = "xlbt-"

// netnsDir is where `ip netns` bind-mounts named namespaces.
const netnsDir = "/run/netns"

var nsCounter atomic.Uint64

// RequireRoot skips the test when not root, unless XLB_TEST_ROOT=1 is set, in
// which case it fails: CI runs as root and must never skip silently.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(rootEnv) == "1" {
		t.Fatalf("test needs root (network namespaces, XDP) but euid is %d and %s=1", os.Geteuid(), rootEnv)
	}
	t.Skipf("test needs root (network namespaces, XDP); run as root, or set %s=1 to make this a failure", rootEnv)
}

// NS is a named network namespace owned by one test.
type NS struct {
	// Name is the `ip netns` name, e.g. xlbt-1234-1.
	Name string

	t    testing.TB
	mu   sync.Mutex
	cmds []*exec.Cmd
}

// New creates a named network namespace, brings its lo up, and registers a
// cleanup that kills the processes started with Command and deletes it.
func New(t testing.TB) *NS {
	t.Helper()
	ns := &NS{
		Name: fmt.Sprintf("%s%d-%d", namePrefix, os.Getpid(), nsCounter.Add(1)),
		t:    t,
	}
	run(t, "ip", "netns", "add", ns.Name)
	t.Cleanup(ns.cleanup)
	run(t, "ip", "-n", ns.Name, "link", "set", "lo", "up")
	return ns
}

// Path is the bind mount of the namespace, usable with setns(2).
func (ns *NS) Path() string { return netnsDir + "/" + ns.Name }

func (ns *NS) cleanup() {
	ns.mu.Lock()
	cmds := ns.cmds
	ns.cmds = nil
	ns.mu.Unlock()
	for _, c := range cmds {
		if c.Process != nil {
			// The whole process group: servers like nginx fork workers
			// that would otherwise outlive their master.
			_ = unix.Kill(-c.Process.Pid, unix.SIGKILL)
			_ = c.Process.Kill()
		}
	}
	// Anything else still running inside (a daemon that changed its
	// process group) would keep the namespace alive.
	if out, err := command("ip", "netns", "pids", ns.Name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			// Not ourselves: a thread of the test process that joined the
			// namespace (Do) makes `ip netns pids` list the test itself.
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
	}
	// An xlb killed above leaves its pins and control socket, named after
	// the namespace: they go with it.
	var st unix.Stat_t
	if unix.Stat(ns.Path(), &st) == nil {
		runstate.RemoveLeftovers(st.Ino)
	}
	if out, err := command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
		ns.t.Errorf("testnet: deleting namespace %s: %v: %s", ns.Name, err, strings.TrimSpace(string(out)))
	}
}

// Do runs fn on an OS thread that has joined the namespace. Sockets created
// inside fn (net.Listen, net.Dial, netlink connections) belong to the
// namespace and stay usable after Do returns. Goroutines started by fn do NOT
// run in the namespace. Afterwards the thread goes back to its namespace and
// is released; if that fails it stays locked, so that the runtime ends it
// instead of reusing it in the wrong namespace.
func (ns *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		returned := false
		defer func() {
			// fn called t.FailNow (runtime.Goexit): report it instead of
			// leaving the caller waiting forever.
			if !returned {
				errc <- fmt.Errorf("testnet: function in namespace %s did not return (t.Fatal inside Do?)", ns.Name)
			}
		}()
		runtime.LockOSThread()
		back, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			returned = true
			errc <- fmt.Errorf("testnet: %w", err)
			return
		}
		defer back.Close()
		target, err := os.Open(ns.Path())
		if err != nil {
			returned = true
			errc <- fmt.Errorf("testnet: open namespace %s: %w", ns.Name, err)
			return
		}
		err = unix.Setns(int(target.Fd()), unix.CLONE_NEWNET)
		target.Close()
		if err != nil {
			returned = true
			errc <- fmt.Errorf("testnet: setns %s: %w", ns.Name, err)
			return
		}
		err = fn()
		returned = true
		if unix.Setns(int(back.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Command returns a command that runs name with args inside the namespace
// (nsenter --net). Cleanup kills it if it is still running.
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	// nsenter --net, not `ip netns exec`: the latter also makes a private
	// mount namespace with its own /sys, so bpffs pins made by one command
	// would be invisible to the next (xlb --reuse finds its predecessor's
	// state through /sys/fs/bpf).
	c := command("nsenter", append([]string{"--net=" + ns.Path(), "--", resolve(name)}, args...)...)
	// Own process group, so that cleanup kills its children too; killed if
	// the test binary dies (Pdeathsig follows the forking OS thread, which is
	// why Do gives its threads back instead of ending them); Wait returns
	// even if a child keeps the pipes.
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	c.WaitDelay = 2 * time.Second
	ns.mu.Lock()
	ns.cmds = append(ns.cmds, c)
	ns.mu.Unlock()
	return c
}

// Run runs name with args inside the namespace and fails the test on error.
func (ns *NS) Run(name string, args ...string) string {
	ns.t.Helper()
	out, err := ns.Command(name, args...).CombinedOutput()
	if err != nil {
		ns.t.Fatalf("testnet: in %s: %s %s: %v: %s", ns.Name, name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out)
}

// WaitAccepts waits until addr accepts TCP connections in the namespace, for
// servers that say nothing when they are ready. It gives up, with an error
// that says which, when exited is closed (the server's process ended) or
// after timeout.
func (ns *NS) WaitAccepts(addr string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ns.Do(func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("exited before accepting on %s", addr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("did not accept on %s within %v (last dial: %v)", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Veth creates a veth pair, aName in namespace a and bName in namespace b (a
// and b may be the same), gives them the IPv4 prefixes aAddr and bAddr (e.g.
// "10.0.0.1/24"), sets them up and turns tx checksum offload off on both, so
// that a wrong checksum is really dropped by the receiver. The pair goes away
// with the namespaces.
func Veth(t testing.TB, a *NS, aName, aAddr string, b *NS, bName, bAddr string) {
	t.Helper()
	// Both ends are created directly inside their namespaces: the host never
	// sees them, even for a moment.
	run(t, "ip", "link", "add", aName, "netns", a.Name, "type", "veth", "peer", "name", bName, "netns", b.Name)
	for _, end := range []struct {
		ns         *NS
		name, addr string
	}{{a, aName, aAddr}, {b, bName, bAddr}} {
		args := []string{"-n", end.ns.Name, "addr", "add", end.addr, "dev", end.name}
		if strings.Contains(end.addr, ":") {
			args = append(args, "nodad") // IPv6: usable at once, not after duplicate address detection
		}
		run(t, "ip", args...)
		run(t, "ip", "-n", end.ns.Name, "link", "set", end.name, "up")
		end.ns.Run("ethtool", "-K", end.name, "tx", "off")
	}
}

// run runs a host-side command (only `ip` on namespaces this package owns) and
// fails the test on error.
func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("testnet: %s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
}

// command is exec.Command that also finds tools in the sbin directories, which
// are not always on the PATH of a test run.
func command(name string, args ...string) *exec.Cmd {
	return exec.Command(resolve(name), args...)
}

// resolve returns name unchanged when it is on the PATH or is a path, and
// otherwise its location in a system directory if it is there.
func resolve(name string) string {
	if _, err := exec.LookPath(name); err == nil || strings.Contains(name, "/") {
		return name
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if p := dir + "/" + name; isExecutable(p) {
			return p
		}
	}
	return name
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0
}

// TCPMIB reads the namespace's TCP counters (/proc/net/snmp, "Tcp:" lines)
// by name, e.g. InCsumErrors, InSegs.
func (ns *NS) TCPMIB(t testing.TB) map[string]int64 {
	t.Helper()
	out := ns.Run("cat", "/proc/net/snmp")
	var names []string
	m := map[string]int64{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if names == nil {
			names = f[1:]
			continue
		}
		for i, v := range f[1:] {
			if i < len(names) {
				var n int64
				fmt.Sscan(v, &n)
				m[names[i]] = n
			}
		}
	}
	if _, ok := m["InCsumErrors"]; !ok {
		t.Fatalf("no Tcp InCsumErrors in /proc/net/snmp:\n%s", out)
	}
	return m
}
