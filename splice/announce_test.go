package splice

import (
	"log/slog"
	"net"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xlb-lb/xlb/testnet"
)

// TestAnnounceDevice: the --announce device in a namespace of its own. xlb
// makes it, down; up and down follow announce; a second holder (a --reuse
// takeover) keeps it as it is, and it stays up, carrier on, when the first
// lets go; once the last holder lets go the device is gone. A name taken by
// an interface that is not a TUN device is refused with a clear error.
func TestAnnounceDevice(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	const name = "xlbtest0"
	flags := func() (uint16, bool) {
		var fl uint16
		var ok bool
		if err := ns.Do(func() error {
			a := &announcer{name: name}
			var err error
			fl, err = a.flags(nil)
			ok = err == nil
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return fl, ok
	}
	open := func() *announcer {
		var a *announcer
		if err := ns.Do(func() (err error) { a, err = openAnnounce(name); return err }); err != nil {
			t.Fatal(err)
		}
		return a
	}
	lb := &LB{log: slog.New(slog.DiscardHandler)}

	first := open()
	if fl, ok := flags(); !ok || fl&unix.IFF_UP != 0 || first.up {
		t.Fatalf("a new device: flags %#x (exists %v), up %v; want it there and down", fl, ok, first.up)
	}
	lb.announcer = first
	if err := ns.Do(func() error { lb.announce(true, ""); return nil }); err != nil {
		t.Fatal(err)
	}
	if fl, _ := flags(); fl&(unix.IFF_UP|unix.IFF_RUNNING) != unix.IFF_UP|unix.IFF_RUNNING || lb.announced() != "up" {
		t.Fatalf("announced: flags %#x, status %q; want up and running", fl, lb.announced())
	}

	// A takeover: the second holder keeps the state.
	second := open()
	if !second.up {
		t.Errorf("a second holder of a device that is up and held reads it down")
	}
	lb.closeAnnounce() // the first one lets go
	if fl, ok := flags(); !ok || fl&(unix.IFF_UP|unix.IFF_RUNNING) != unix.IFF_UP|unix.IFF_RUNNING {
		t.Fatalf("after the first holder let go: flags %#x (exists %v), want up and running", fl, ok)
	}
	lb.announcer = second
	if err := ns.Do(func() error { lb.withdraw(); lb.announce(true, ""); return nil }); err != nil {
		t.Fatal(err)
	}
	if fl, _ := flags(); fl&unix.IFF_UP != 0 || lb.announced() != "down: stopping" {
		t.Fatalf("withdrawn for good, then asked up: flags %#x, status %q; want down, %q", fl, lb.announced(), "down: stopping")
	}
	lb.closeAnnounce()
	if fl, ok := flags(); ok {
		t.Fatalf("the device is still there (flags %#x) after its last holder let go", fl)
	}

	// lo is no TUN device.
	err := ns.Do(func() error { _, err := openAnnounce("lo"); return err })
	if err == nil || !strings.Contains(err.Error(), "not a multi-queue TUN device") {
		t.Errorf("--announce lo: %v, want a refusal that says it is no TUN device", err)
	}
	if _, err := net.InterfaceByName(name); err == nil {
		t.Errorf("the device %s appeared outside the test's namespace", name)
	}
}
