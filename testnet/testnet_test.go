package testnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestNamespaceLifecycle(t *testing.T) {
	RequireRoot(t)
	var path string
	t.Run("create", func(t *testing.T) {
		ns := New(t)
		path = ns.Path()
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("namespace %s not created: %v", ns.Name, err)
		}
		if !strings.HasPrefix(ns.Name, namePrefix) {
			t.Errorf("name %q lacks prefix %q", ns.Name, namePrefix)
		}
	})
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("namespace %s still exists after cleanup (stat: %v)", path, err)
	}
}

func TestDoJoinsNamespace(t *testing.T) {
	RequireRoot(t)
	ns := New(t)
	var names []string
	err := ns.Do(func() error {
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		for _, i := range ifs {
			names = append(names, i.Name)
			if i.Name == "lo" && i.Flags&net.FlagUp == 0 {
				return fmt.Errorf("lo is down in %s", ns.Name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "lo" {
		t.Fatalf("interfaces in %s = %v, want only lo", ns.Name, names)
	}
	// The test's own thread must still be in the original namespace.
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	if len(ifs) == 1 && len(names) == 1 {
		t.Log("host has only lo too; namespace check is weak here")
	}
	if err := ns.Do(func() error { return errors.New("boom") }); err == nil || err.Error() != "boom" {
		t.Fatalf("Do did not return fn's error: %v", err)
	}
}

func TestListenerInDoAcceptsFromCommand(t *testing.T) {
	RequireRoot(t)
	ns := New(t)
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	cmd := ns.Command("bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d && echo hello >&3", port))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("connecting from %s: %v: %s", ns.Name, err, out)
	}
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer c.Close()
	buf := make([]byte, 16)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := c.Read(buf)
	if got := string(buf[:n]); got != "hello\n" {
		t.Fatalf("read %q, want %q", got, "hello\n")
	}

	// The same port on the host's loopback must not be this listener.
	if c, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Logf("note: something on the host also listens on port %d", port)
	}
}

func TestCommandKilledOnCleanup(t *testing.T) {
	RequireRoot(t)
	var pid int
	t.Run("inner", func(t *testing.T) {
		ns := New(t)
		cmd := ns.Command("sleep", "300")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pid = cmd.Process.Pid
		go cmd.Wait() // reap, so the pid disappears once killed
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still running after cleanup", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestVethPings(t *testing.T) {
	RequireRoot(t)
	a, b := New(t), New(t)
	Veth(t, a, "xa0", "10.199.0.1/24", b, "xb0", "10.199.0.2/24")
	// ping(8) is not always installed: send the echo request ourselves.
	if err := ping(a, "10.199.0.2"); err != nil {
		t.Fatal(err)
	}
	if err := ping(b, "10.199.0.1"); err != nil {
		t.Fatal(err)
	}

	out := a.Run("ethtool", "-k", "xa0")
	if !strings.Contains(out, "tx-checksumming: off") {
		t.Errorf("tx checksum offload still on in %s:\n%s", a.Name, out)
	}
	// TCP across the pair, listener created with Do.
	var ln net.Listener
	if err := b.Do(func() (err error) {
		ln, err = net.Listen("tcp4", "10.199.0.2:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var c net.Conn
	if err := a.Do(func() (err error) {
		c, err = net.DialTimeout("tcp4", ln.Addr().String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.Read(buf); err != nil || buf[0] != 'x' {
		t.Fatalf("read across veth: %q %v", buf, err)
	}
}

// ping sends one ICMP echo request to dst from inside ns and waits for the
// reply.
func ping(ns *NS, dst string) error {
	var c net.Conn
	if err := ns.Do(func() (err error) {
		c, err = net.Dial("ip4:icmp", dst)
		return err
	}); err != nil {
		return fmt.Errorf("ping %s from %s: %w", dst, ns.Name, err)
	}
	defer c.Close()
	req := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1, 'x', 'l', 'b'}
	binary.BigEndian.PutUint16(req[2:], icmpChecksum(req))
	if _, err := c.Write(req); err != nil {
		return fmt.Errorf("ping %s from %s: %w", dst, ns.Name, err)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("ping %s from %s: no reply: %w", dst, ns.Name, err)
		}
		// Reads on an ip4 socket may include the IPv4 header.
		b := buf[:n]
		if n >= 20 && b[0]>>4 == 4 {
			b = b[int(b[0]&0xf)*4:]
		}
		if len(b) >= 8 && b[0] == 0 && b[4] == 0x12 && b[5] == 0x34 {
			return nil
		}
	}
}

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
