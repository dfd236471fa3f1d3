package xdp

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/xlb-lb/xlb/testnet"
)

func TestParseMode(t *testing.T) {
	for _, m := range []Mode{ModeAuto, ModeGeneric, ModeNative} {
		got, err := ParseMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", m.String(), got, err, m)
		}
	}
	for _, s := range []string{"", "skb", "Native", "drv"} {
		_, err := ParseMode(s)
		if err == nil {
			t.Errorf("ParseMode(%q) succeeded", s)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "auto, generic, native") || !strings.Contains(msg, fmt.Sprintf("%q", s)) {
			t.Errorf("ParseMode(%q) error %q does not name the input and the valid modes", s, msg)
		}
	}
	if s := Mode(7).String(); s != "Mode(7)" {
		t.Errorf("Mode(7).String() = %q", s)
	}
}

// in runs fn inside ns and fails the test on error.
func in(t *testing.T, ns *testnet.NS, fn func() error) {
	t.Helper()
	if err := ns.Do(fn); err != nil {
		t.Fatal(err)
	}
}

// wantStatus checks Query on iface inside ns.
func wantStatus(t *testing.T, ns *testnet.NS, iface string, attached bool, id uint32, mode Mode) {
	t.Helper()
	var st *Status
	in(t, ns, func() (err error) { st, err = Query(iface); return err })
	if st.Attached != attached || st.ProgID != id || st.Mode != mode || st.Iface != iface || st.Ifindex <= 0 {
		t.Fatalf("Query(%s) = %+v; want attached=%v id=%d mode=%v", iface, *st, attached, id, mode)
	}
}

func TestAttachDetachLifecycle(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	fd1, id1 := loadPass(t)
	fd2, id2 := loadPass(t)
	fd3, id3 := loadPass(t)

	wantStatus(t, ns, "lo", false, 0, ModeAuto)

	// Attach generic.
	in(t, ns, func() error {
		m, err := Attach("lo", fd1, AttachOptions{Mode: ModeGeneric})
		if err != nil {
			return err
		}
		if m != ModeGeneric {
			return fmt.Errorf("Attach returned mode %v, want generic", m)
		}
		return nil
	})
	wantStatus(t, ns, "lo", true, id1, ModeGeneric)

	// A second Attach without Force refuses, naming what is attached.
	in(t, ns, func() error {
		_, err := Attach("lo", fd2, AttachOptions{Mode: ModeGeneric})
		if !errors.Is(err, ErrAlreadyAttached) {
			return fmt.Errorf("second Attach: %v; want ErrAlreadyAttached", err)
		}
		for _, want := range []string{fmt.Sprintf("id %d", id1), "generic", "use --force to replace it"} {
			if !strings.Contains(err.Error(), want) {
				return fmt.Errorf("second Attach error %q lacks %q", err, want)
			}
		}
		t.Logf("second Attach: %v", err)
		return nil
	})
	wantStatus(t, ns, "lo", true, id1, ModeGeneric)

	// Force replaces it; ModeAuto keeps the attached mode.
	in(t, ns, func() error {
		m, err := Attach("lo", fd2, AttachOptions{Mode: ModeAuto, Force: true})
		if err != nil {
			return err
		}
		if m != ModeGeneric {
			return fmt.Errorf("forced Attach used %v, want generic", m)
		}
		return nil
	})
	wantStatus(t, ns, "lo", true, id2, ModeGeneric)

	// ReplaceFD with the wrong fd fails and changes nothing.
	in(t, ns, func() error {
		_, err := Attach("lo", fd3, AttachOptions{Mode: ModeGeneric, ReplaceFD: fd1})
		if !errors.Is(err, ErrAlreadyAttached) {
			return fmt.Errorf("Attach with wrong ReplaceFD: %v; want ErrAlreadyAttached", err)
		}
		t.Logf("wrong ReplaceFD: %v", err)
		return nil
	})
	wantStatus(t, ns, "lo", true, id2, ModeGeneric)

	// ReplaceFD with the right fd replaces.
	in(t, ns, func() error {
		_, err := Attach("lo", fd3, AttachOptions{Mode: ModeGeneric, ReplaceFD: fd2})
		return err
	})
	wantStatus(t, ns, "lo", true, id3, ModeGeneric)

	// Detach with a wrong id refuses.
	in(t, ns, func() error {
		err := Detach("lo", id1)
		if !errors.Is(err, ErrAlreadyAttached) || !strings.Contains(err.Error(), fmt.Sprintf("id %d", id3)) {
			return fmt.Errorf("Detach with wrong id: %v; want ErrAlreadyAttached naming id %d", err, id3)
		}
		t.Logf("wrong id: %v", err)
		return nil
	})
	wantStatus(t, ns, "lo", true, id3, ModeGeneric)

	// Detach with the right id.
	in(t, ns, func() error { return Detach("lo", id3) })
	wantStatus(t, ns, "lo", false, 0, ModeAuto)

	// Detach again: nothing attached.
	in(t, ns, func() error {
		if err := Detach("lo", 0); !errors.Is(err, ErrNotAttached) {
			return fmt.Errorf("Detach of nothing: %v; want ErrNotAttached", err)
		}
		if err := Detach("lo", id3); !errors.Is(err, ErrNotAttached) {
			return fmt.Errorf("Detach of nothing with id: %v; want ErrNotAttached", err)
		}
		return nil
	})
}

func TestDetachAnyProgram(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	fd, _ := loadPass(t)
	in(t, ns, func() error {
		if _, err := Attach("lo", fd, AttachOptions{Mode: ModeGeneric}); err != nil {
			return err
		}
		return Detach("lo", 0)
	})
	wantStatus(t, ns, "lo", false, 0, ModeAuto)
}

func TestModesOnLoopback(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	fd, id := loadPass(t)
	in(t, ns, func() error {
		_, err := Attach("lo", fd, AttachOptions{Mode: ModeNative})
		if !errors.Is(err, ErrModeNotSupported) || !strings.Contains(err.Error(), "use --mode generic or auto") {
			return fmt.Errorf("native Attach on lo: %v; want ErrModeNotSupported", err)
		}
		t.Logf("native on lo: %v", err)
		return nil
	})
	wantStatus(t, ns, "lo", false, 0, ModeAuto)
	in(t, ns, func() error {
		m, err := Attach("lo", fd, AttachOptions{Mode: ModeAuto})
		if err != nil {
			return err
		}
		if m != ModeGeneric {
			return fmt.Errorf("auto Attach on lo used %v, want generic", m)
		}
		return nil
	})
	wantStatus(t, ns, "lo", true, id, ModeGeneric)
	// Auto tries native first: the kernel's refusal to mix native and
	// generic must still read as "already attached".
	in(t, ns, func() error {
		_, err := Attach("lo", fd, AttachOptions{})
		if !errors.Is(err, ErrAlreadyAttached) || !strings.Contains(err.Error(), "use --force") {
			return fmt.Errorf("auto Attach over generic: %v; want ErrAlreadyAttached", err)
		}
		return nil
	})
	in(t, ns, func() error { return Detach("lo", id) })
	// ReplaceFD with nothing attached.
	in(t, ns, func() error {
		_, err := Attach("lo", fd, AttachOptions{Mode: ModeGeneric, ReplaceFD: fd})
		if !errors.Is(err, ErrNotAttached) {
			return fmt.Errorf("ReplaceFD with nothing attached: %v; want ErrNotAttached", err)
		}
		t.Logf("replace nothing: %v", err)
		return nil
	})
	wantStatus(t, ns, "lo", false, 0, ModeAuto)
}

func TestAutoOnVethIsNative(t *testing.T) {
	testnet.RequireRoot(t)
	a, b := testnet.New(t), testnet.New(t)
	testnet.Veth(t, a, "xdpa", "10.198.0.1/24", b, "xdpb", "10.198.0.2/24")
	fd1, id1 := loadPass(t)
	fd2, id2 := loadPass(t)
	in(t, a, func() error {
		m, err := Attach("xdpa", fd1, AttachOptions{})
		if err != nil {
			return err
		}
		if m != ModeNative {
			return fmt.Errorf("auto Attach on veth used %v, want native", m)
		}
		return nil
	})
	wantStatus(t, a, "xdpa", true, id1, ModeNative)

	// A generic program cannot join a native one; Force in auto mode replaces
	// in the attached (native) mode.
	in(t, a, func() error {
		_, err := Attach("xdpa", fd2, AttachOptions{Mode: ModeGeneric, Force: true})
		if !errors.Is(err, ErrAlreadyAttached) {
			return fmt.Errorf("forced generic Attach over native: %v; want ErrAlreadyAttached", err)
		}
		t.Logf("generic over native: %v", err)
		m, err := Attach("xdpa", fd2, AttachOptions{Force: true})
		if err != nil {
			return err
		}
		if m != ModeNative {
			return fmt.Errorf("forced auto Attach used %v, want native", m)
		}
		return nil
	})
	wantStatus(t, a, "xdpa", true, id2, ModeNative)
	in(t, a, func() error { return Detach("xdpa", id2) })
	wantStatus(t, a, "xdpa", false, 0, ModeAuto)

	// Native explicitly, then generic explicitly on the other end.
	in(t, a, func() error {
		_, err := Attach("xdpa", fd1, AttachOptions{Mode: ModeNative})
		return err
	})
	in(t, b, func() error {
		_, err := Attach("xdpb", fd2, AttachOptions{Mode: ModeGeneric})
		return err
	})
	wantStatus(t, a, "xdpa", true, id1, ModeNative)
	wantStatus(t, b, "xdpb", true, id2, ModeGeneric)
	in(t, a, func() error { return Detach("xdpa", 0) })
	in(t, b, func() error { return Detach("xdpb", 0) })
	wantStatus(t, a, "xdpa", false, 0, ModeAuto)
	wantStatus(t, b, "xdpb", false, 0, ModeAuto)
}

func TestMissingInterface(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.New(t)
	fd, _ := loadPass(t)
	in(t, ns, func() error {
		const name = "xlbnope0"
		_, qerr := Query(name)
		_, aerr := Attach(name, fd, AttachOptions{})
		derr := Detach(name, 0)
		for _, err := range []error{qerr, aerr, derr} {
			if !errors.Is(err, ErrNoInterface) || !strings.Contains(err.Error(), `interface "xlbnope0" not found (see `+"`ip link`)") {
				return fmt.Errorf("got %v; want ErrNoInterface with a hint", err)
			}
		}
		return nil
	})
}
