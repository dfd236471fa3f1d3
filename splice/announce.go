package splice

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The service address announcement (--announce NAME): a TUN device that is
// up while this xlb serves, for a routing daemon on the host to announce
// the service address (the VIP) while it is, and to withdraw it when it is
// not (BIRD: a static route via "NAME" with `check link`; docs/SCALE-OUT.md).
//
// Two states make the device usable by the daemon, and each covers a way
// the service ends:
//   - its carrier is on while a process holds one of its queues: ours. When
//     xlb exits, also killed (SIGKILL, a crash), the kernel closes the
//     queue, the carrier goes off (a device xlb made is destroyed), and the
//     daemon withdraws with no one to tell it;
//   - its administrative state (IFF_UP) is ours to set: up while at least
//     one worker takes requests, down when none does, and down first thing
//     when xlb stops (before its connections are handed back).
//
// The device is multi-queue so that a takeover (--reuse) holds it without a
// gap: the new process attaches a queue of its own before the old one lets
// go of its, and leaves the administrative state as the old one had it.

// announceTick is how often the health behind the announcement is read.
const announceTick = 100 * time.Millisecond

// announcer holds our queue of the announcement device.
type announcer struct {
	name string
	f    *os.File // our queue: the carrier, while it is open
	mu   sync.Mutex
	up   bool   // the administrative state we set last
	why  string // why it is down, for the log and the status
	done bool   // withdrawn for good: xlb stops
}

// openAnnounce attaches a queue of TUN device name, creating it when it
// does not exist (then it lives as long as some xlb holds it). A device
// another process holds a queue of (its carrier is on: the xlb a --reuse
// takes over from) keeps its administrative state; any other is set down
// until the health says up.
func openAnnounce(name string) (*announcer, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, fmt.Errorf("--announce %q: %w", name, err)
	}
	a := &announcer{name: name, why: "starting"}
	fl, err := a.flags(nil)
	held := err == nil && fl&unix.IFF_RUNNING != 0
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("--announce %s: open /dev/net/tun (the tun module, CAP_NET_ADMIN): %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_MULTI_QUEUE)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("--announce %s: an interface of that name exists and is not a multi-queue TUN device xlb may attach to (%w); give a name of its own (xlb makes the device), or make it with `ip tuntap add %s mode tun multi_queue`", name, err, name)
		}
		return nil, fmt.Errorf("--announce %s: TUNSETIFF: %w", name, err)
	}
	a.f = os.NewFile(uintptr(fd), "tun:"+name)
	if held {
		a.up, err = a.isUp()
	} else {
		err = a.setUp(false)
	}
	if err != nil {
		a.f.Close()
		return nil, err
	}
	return a, nil
}

// flags reads, and with set != nil changes, the device's interface flags.
func (a *announcer) flags(set func(uint16) uint16) (uint16, error) {
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("--announce %s: %w", a.name, err)
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(a.name)
	if err != nil {
		return 0, fmt.Errorf("--announce %s: %w", a.name, err)
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return 0, fmt.Errorf("--announce %s: reading its flags: %w", a.name, err)
	}
	fl := ifr.Uint16()
	if set == nil || set(fl) == fl {
		return fl, nil
	}
	fl = set(fl)
	ifr.SetUint16(fl)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return 0, fmt.Errorf("--announce %s: setting its flags: %w", a.name, err)
	}
	return fl, nil
}

func (a *announcer) isUp() (bool, error) {
	fl, err := a.flags(nil)
	return fl&unix.IFF_UP != 0, err
}

func (a *announcer) setUp(up bool) error {
	_, err := a.flags(func(fl uint16) uint16 {
		if up {
			return fl | unix.IFF_UP
		}
		return fl &^ unix.IFF_UP
	})
	if err == nil {
		a.up = up
	}
	return err
}

// announce makes the device up or down, and says so in the log when it
// changes (why: what took it down).
func (lb *LB) announce(up bool, why string) {
	a := lb.announcer
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f == nil || a.done && up {
		return
	}
	if a.up == up {
		if !up {
			a.why = why
		}
		return
	}
	if err := a.setUp(up); err != nil {
		lb.log.Error("announcement", "err", err)
		return
	}
	if up {
		a.why = ""
		lb.log.Info("announcing: the service address may be routed here", "device", a.name)
	} else {
		a.why = why
		lb.log.Warn("announcement withdrawn", "device", a.name, "why", why)
	}
}

// withdraw takes the announcement down for good: xlb stops. It comes
// before the connections are handed back, so that the routers send new
// clients elsewhere as soon as they can.
func (lb *LB) withdraw() {
	if a := lb.announcer; a != nil {
		a.mu.Lock()
		a.done = true // first: the loop may not put it up again
		a.mu.Unlock()
	}
	lb.announce(false, "stopping")
}

// announced reports the announcement's state for the status: "up", "down:
// WHY", or "" without --announce.
func (lb *LB) announced() string {
	a := lb.announcer
	if a == nil {
		return ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.up {
		return "up"
	}
	return "down: " + a.why
}

// closeAnnounce lets go of our queue: with no other holder, the carrier
// goes off (a device xlb made is removed).
func (lb *LB) closeAnnounce() {
	a := lb.announcer
	if a == nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.f != nil {
		a.f.Close()
		a.f = nil
	}
}

// serving reports whether a worker takes requests: it is up (its pool
// connections succeed) and its weight now is not 0 (not down by its
// checks, not draining, not weighted out).
func (lb *LB) serving() bool {
	now := time.Now()
	for _, w := range lb.workerList() {
		w.mu.Lock()
		ok := w.state == WorkerUp && w.weightNow(now) > 0
		w.mu.Unlock()
		if ok {
			return true
		}
	}
	return false
}

// announceLoop keeps the announcement up while a worker takes requests.
func (lb *LB) announceLoop(stop <-chan struct{}) {
	t := time.NewTicker(announceTick)
	defer t.Stop()
	for {
		if lb.serving() {
			lb.announce(true, "")
		} else {
			lb.announce(false, "no worker takes requests")
		}
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}
