package testnet

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TAPConfig is how a TAP link treats its frames.
type TAPConfig struct {
	// AtoB and BtoA are the impairments of each direction.
	AtoB, BtoA Impairment
	// Pcap, when set, is a capture file of every frame the link delivers
	// (after the impairment: what the receivers saw), both directions.
	Pcap string
}

// Bounds of a link's forwarders.
const (
	// linkPoll is the longest a forwarder blocks in a read: it wakes at
	// least this often to release held and delayed frames.
	linkPoll = 10 * time.Millisecond
	// maxLinkLife stops a forwarder that outlives any sane test (its
	// Cleanup stops it much earlier).
	maxLinkLife = time.Hour
	// maxFrame is the largest frame read from a TAP (no offloads: one
	// MTU-sized Ethernet frame, with room to spare).
	maxFrame = 65536
)

// Link is a TAP link: a TAP device in each of two namespaces, and a
// forwarder in the test process that copies frames between them through an
// Impairment per direction. TAP devices have no checksum offload, so every
// frame carries complete checksums and the receiving kernel verifies them.
type Link struct {
	// A and B are the interface names in the two namespaces.
	A, B string

	t    testing.TB
	fa   *os.File
	fb   *os.File
	dirs [2]*linkDir // 0: A to B, 1: B to A
	pcap *pcapWriter
	stop chan struct{}
	wg   sync.WaitGroup
	once sync.Once
}

type linkDir struct {
	mu       sync.Mutex
	im       *impairer
	src, dst *os.File
	writeErr uint64
	err      error // why the forwarder stopped early
}

// TAP creates a TAP link between namespace a (interface aName, prefix aAddr,
// e.g. "10.1.0.1/24") and namespace b, sets both ends up with IPv6 off (no
// stray router solicitations on the wire), and starts its forwarder. Cleanup
// stops the forwarder and closes the devices, which removes them.
func TAP(t testing.TB, a *NS, aName, aAddr string, b *NS, bName, bAddr string, cfg TAPConfig) *Link {
	t.Helper()
	l := &Link{A: aName, B: bName, t: t, stop: make(chan struct{})}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("testnet: link %s-%s: %v", aName, bName, err)
		}
	})
	var err error
	if l.fa, err = openTAP(a, aName); err != nil {
		t.Fatal(err)
	}
	if l.fb, err = openTAP(b, bName); err != nil {
		t.Fatal(err)
	}
	for _, end := range []struct {
		ns         *NS
		name, addr string
	}{{a, aName, aAddr}, {b, bName, bAddr}} {
		if strings.Contains(end.addr, ":") {
			// An IPv6 link: no router advertisements or autoconfigured
			// addresses, the address usable at once (no duplicate
			// address detection); neighbour discovery crosses the link
			// like any frame.
			end.ns.Run("sysctl", "-qw", "net.ipv6.conf."+end.name+".accept_ra=0", "net.ipv6.conf."+end.name+".autoconf=0")
			run(t, "ip", "-n", end.ns.Name, "addr", "add", end.addr, "dev", end.name, "nodad")
		} else {
			end.ns.Run("sysctl", "-qw", "net.ipv6.conf."+end.name+".disable_ipv6=1")
			if end.addr != "" {
				run(t, "ip", "-n", end.ns.Name, "addr", "add", end.addr, "dev", end.name)
			}
		}
		run(t, "ip", "-n", end.ns.Name, "link", "set", end.name, "up")
		// A TAP without TUNSETOFFLOAD has no checksum offload; say so
		// explicitly, and check it, since the whole point is that the
		// receiver verifies every checksum.
		end.ns.Command("ethtool", "-K", end.name, "tx", "off").Run()
		if out := end.ns.Run("ethtool", "-k", end.name); !strings.Contains(out, "tx-checksumming: off") {
			t.Fatalf("testnet: %s in %s still offloads tx checksums:\n%s", end.name, end.ns.Name, out)
		}
	}
	if cfg.Pcap != "" {
		if l.pcap, err = newPcapWriter(cfg.Pcap); err != nil {
			t.Fatal(err)
		}
	}
	l.dirs[0] = &linkDir{im: newImpairer(cfg.AtoB), src: l.fa, dst: l.fb}
	l.dirs[1] = &linkDir{im: newImpairer(cfg.BtoA), src: l.fb, dst: l.fa}
	for _, d := range l.dirs {
		l.wg.Add(1)
		go l.forward(d)
	}
	return l
}

// openTAP creates TAP device name inside ns (the device belongs to the
// namespace of the thread that opens /dev/net/tun: the host never sees it)
// and returns its file, non-blocking so that reads have deadlines and Close
// wakes a blocked reader.
func openTAP(ns *NS, name string) (*os.File, error) {
	var f *os.File
	err := ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("testnet: open /dev/net/tun: %w", err)
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return fmt.Errorf("testnet: TAP %s: %w", name, err)
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("testnet: TUNSETIFF %s in %s: %w", name, ns.Name, err)
		}
		f = os.NewFile(uintptr(fd), "tap:"+name)
		return nil
	})
	return f, err
}

// forward copies frames from d.src to d.dst through the impairment until the
// link is closed.
func (l *Link) forward(d *linkDir) {
	defer l.wg.Done()
	buf := make([]byte, maxFrame)
	end := time.Now().Add(maxLinkLife)
	for time.Now().Before(end) {
		select {
		case <-l.stop:
			return
		default:
		}
		now := time.Now()
		deadline := now.Add(linkPoll)
		d.mu.Lock()
		if next, ok := d.im.next(); ok && next.Before(deadline) {
			deadline = next
		}
		d.mu.Unlock()
		var n int
		var err error
		if deadline.After(now) {
			d.src.SetReadDeadline(deadline)
			n, err = d.src.Read(buf)
		}
		now = time.Now()
		d.mu.Lock()
		if n > 0 {
			d.im.push(now, bytes.Clone(buf[:n]))
		}
		out := d.im.due(now)
		d.mu.Unlock()
		for _, f := range out {
			if _, werr := d.dst.Write(f); werr != nil {
				d.mu.Lock()
				d.writeErr++
				d.mu.Unlock()
				continue
			}
			if l.pcap != nil {
				l.pcap.write(now, f)
			}
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			select {
			case <-l.stop: // closed under us: the normal end
			default:
				d.mu.Lock()
				d.err = err
				d.mu.Unlock()
			}
			return
		}
	}
}

// Stats returns what each direction did so far.
func (l *Link) Stats() (ab, ba Stats) {
	get := func(d *linkDir) Stats {
		d.mu.Lock()
		defer d.mu.Unlock()
		s := d.im.stats
		s.WriteErrs = d.writeErr
		return s
	}
	return get(l.dirs[0]), get(l.dirs[1])
}

// Set changes both directions' impairments from now on (frames already held
// or delayed keep their fate).
func (l *Link) Set(ab, ba Impairment) {
	for i, cfg := range []Impairment{ab, ba} {
		d := l.dirs[i]
		d.mu.Lock()
		d.im.reconfigure(cfg)
		d.mu.Unlock()
	}
}

// Close stops the forwarder and removes the TAP devices (they exist only as
// long as their file is open). It returns why a forwarder stopped early, if
// one did. Safe to call more than once.
func (l *Link) Close() error {
	var errs []error
	l.once.Do(func() {
		close(l.stop)
		for _, f := range []*os.File{l.fa, l.fb} {
			if f != nil {
				f.Close() // wakes a reader blocked on it
			}
		}
		l.wg.Wait()
		for i, d := range l.dirs {
			if d != nil && d.err != nil {
				errs = append(errs, fmt.Errorf("forwarder %d stopped: %w", i, d.err))
			}
		}
		if l.pcap != nil {
			if err := l.pcap.close(); err != nil {
				errs = append(errs, err)
			}
		}
	})
	return errors.Join(errs...)
}
