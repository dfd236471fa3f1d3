package xdp

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"unsafe"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Mode is the XDP attachment mode.
type Mode int

const (
	// ModeAuto uses native mode when the driver supports it, generic otherwise.
	ModeAuto Mode = iota
	// ModeGeneric runs the program in the generic (skb) path: works on every
	// interface, slower.
	ModeGeneric
	// ModeNative runs the program in the driver (XDP_FLAGS_DRV_MODE).
	ModeNative
)

var modeNames = [...]string{ModeAuto: "auto", ModeGeneric: "generic", ModeNative: "native"}

func (m Mode) String() string {
	if m >= 0 && int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses "auto", "generic" or "native".
func ParseMode(s string) (Mode, error) {
	for m, name := range modeNames {
		if s == name {
			return Mode(m), nil
		}
	}
	return 0, fmt.Errorf("invalid XDP mode %q: valid modes are %s", s, strings.Join(modeNames[:], ", "))
}

// flag is the XDP_FLAGS_*_MODE bit of a concrete mode (0 for ModeAuto).
func (m Mode) flag() uint32 {
	switch m {
	case ModeGeneric:
		return unix.XDP_FLAGS_SKB_MODE
	case ModeNative:
		return unix.XDP_FLAGS_DRV_MODE
	}
	return 0
}

// IFLA_XDP_ATTACHED values (enum in include/uapi/linux/if_link.h; not in
// golang.org/x/sys/unix).
const (
	xdpAttachedNone  = 0
	xdpAttachedDrv   = 1
	xdpAttachedSkb   = 2
	xdpAttachedHW    = 3
	xdpAttachedMulti = 4
)

// Sentinel errors, for errors.Is. Returned errors wrap them with context.
var (
	ErrNoInterface      = errors.New("no such interface")
	ErrAlreadyAttached  = errors.New("an XDP program is already attached")
	ErrModeNotSupported = errors.New("XDP mode not supported by the interface")
	ErrNotAttached      = errors.New("no XDP program attached")
)

// Status is what is attached to an interface.
type Status struct {
	Attached bool
	ProgID   uint32
	// Mode is the mode the program is actually attached in: ModeGeneric or
	// ModeNative (ModeAuto when nothing is attached).
	Mode    Mode
	Ifindex int
	Iface   string
}

func (s *Status) String() string {
	if !s.Attached {
		return fmt.Sprintf("%s: no XDP program", s.Iface)
	}
	return fmt.Sprintf("%s: XDP program id %d (%s)", s.Iface, s.ProgID, s.Mode)
}

// Query reports the XDP program attached to iface.
func Query(iface string) (*Status, error) {
	idx, err := ifindex(iface)
	if err != nil {
		return nil, err
	}
	c, err := dial()
	if err != nil {
		return nil, fmt.Errorf("query XDP on %s: %w", iface, err)
	}
	defer c.Close()
	return query(c, iface, idx)
}

func query(c *rtnetlink.Conn, iface string, idx int) (*Status, error) {
	msg, err := c.Link.Get(uint32(idx))
	if err != nil {
		return nil, wrapErr(fmt.Sprintf("query XDP on %s", iface), iface, err)
	}
	st := &Status{Ifindex: idx, Iface: iface}
	if msg.Attributes == nil || msg.Attributes.XDP == nil {
		return st, nil
	}
	x := msg.Attributes.XDP
	switch x.Attached {
	case xdpAttachedNone:
		return st, nil
	case xdpAttachedSkb:
		st.Mode = ModeGeneric
	case xdpAttachedDrv:
		st.Mode = ModeNative
	case xdpAttachedHW, xdpAttachedMulti:
		// A program offloaded to the NIC, maybe next to a native one.
		return nil, fmt.Errorf("query XDP on %s: a hardware-offloaded XDP program is attached (IFLA_XDP_ATTACHED=%d); xlb does not manage offloaded programs, remove it with `ip link set dev %s xdpoffload off`", iface, x.Attached, iface)
	default:
		return nil, fmt.Errorf("query XDP on %s: unknown IFLA_XDP_ATTACHED value %d", iface, x.Attached)
	}
	st.Attached = true
	st.ProgID = x.ProgID
	return st, nil
}

// AttachOptions says how Attach treats what is already attached.
type AttachOptions struct {
	Mode Mode
	// Force replaces a program someone else attached, whatever it is.
	Force bool
	// ReplaceFD, when > 0, atomically replaces the attached program, which
	// must be this program fd (XDP_FLAGS_REPLACE); otherwise nothing changes
	// and the error wraps ErrAlreadyAttached (ErrNotAttached when nothing is
	// attached).
	ReplaceFD int
}

// Attach attaches the XDP program progFD to iface and returns the mode
// actually used (ModeGeneric or ModeNative).
//
// Without Force or ReplaceFD it refuses, with ErrAlreadyAttached, when any
// program is attached. ModeAuto tries native first and falls back to generic
// when the driver has no native XDP; when replacing (Force, ReplaceFD) it
// keeps the mode of the attached program, since the kernel refuses native and
// generic programs on one interface at the same time. ModeNative on an
// interface without native XDP returns ErrModeNotSupported.
func Attach(iface string, progFD int, opts AttachOptions) (Mode, error) {
	if progFD < 0 {
		return 0, fmt.Errorf("attach XDP to %s: invalid program fd %d", iface, progFD)
	}
	idx, err := ifindex(iface)
	if err != nil {
		return 0, err
	}
	c, err := dial()
	if err != nil {
		return 0, fmt.Errorf("attach XDP to %s: %w", iface, err)
	}
	defer c.Close()

	replacing := opts.Force || opts.ReplaceFD > 0
	mode := opts.Mode
	if mode == ModeAuto && replacing {
		if st, err := query(c, iface, idx); err == nil && st.Attached {
			mode = st.Mode
		}
	}

	var flags uint32
	expected := int32(-1)
	switch {
	case opts.ReplaceFD > 0:
		flags |= unix.XDP_FLAGS_REPLACE
		expected = int32(opts.ReplaceFD)
	case !opts.Force:
		flags |= unix.XDP_FLAGS_UPDATE_IF_NOEXIST
	}

	if mode != ModeAuto {
		err := setXDP(c, idx, int32(progFD), expected, flags|mode.flag())
		if err != nil {
			return 0, attachErr(c, iface, idx, mode, opts, err)
		}
		return mode, nil
	}
	err = setXDP(c, idx, int32(progFD), expected, flags|ModeNative.flag())
	if err == nil {
		return ModeNative, nil
	}
	if !noNativeSupport(err) {
		return 0, attachErr(c, iface, idx, ModeNative, opts, err)
	}
	if err := setXDP(c, idx, int32(progFD), expected, flags|ModeGeneric.flag()); err != nil {
		return 0, attachErr(c, iface, idx, ModeGeneric, opts, err)
	}
	return ModeGeneric, nil
}

// noNativeSupport reports whether a native attach failed because the driver
// has no native XDP (dev_xdp_attach: "Underlying driver does not support XDP
// in native mode", EOPNOTSUPP).
func noNativeSupport(err error) bool {
	if errors.Is(err, unix.EOPNOTSUPP) {
		return true
	}
	var oe *netlink.OpError
	return errors.As(err, &oe) && strings.Contains(strings.ToLower(oe.Message), "not support")
}

// attachErr turns a failed RTM_NEWLINK into an error saying what to do.
func attachErr(c *rtnetlink.Conn, iface string, idx int, mode Mode, opts AttachOptions, err error) error {
	op := fmt.Sprintf("attach XDP to %s (%s mode)", iface, mode)
	switch {
	case mode == ModeNative && noNativeSupport(err):
		return fmt.Errorf("%s: %w%s: use --mode generic or auto", op, ErrModeNotSupported, extack(err))
	case errors.Is(err, unix.EBUSY), errors.Is(err, unix.EEXIST):
		what := "a program"
		if st, qerr := query(c, iface, idx); qerr == nil {
			if !st.Attached && opts.ReplaceFD > 0 {
				return fmt.Errorf("%s: %w: nothing to replace (ReplaceFD %d)%s", op, ErrNotAttached, opts.ReplaceFD, extack(err))
			}
			if st.Attached {
				what = fmt.Sprintf("program id %d (%s mode)", st.ProgID, st.Mode)
			}
		}
		if opts.ReplaceFD > 0 {
			return fmt.Errorf("%s: %w: %s is attached, not the program of fd %d given to replace%s", op, ErrAlreadyAttached, what, opts.ReplaceFD, extack(err))
		}
		if opts.Force {
			// Only a mode conflict or a bpf_link makes a forced attach fail.
			return fmt.Errorf("%s: %w: %s is attached and cannot be replaced in %s mode%s", op, ErrAlreadyAttached, what, mode, extack(err))
		}
		return fmt.Errorf("%s: %w: %s; use --force to replace it%s", op, ErrAlreadyAttached, what, extack(err))
	}
	return wrapErr(op, iface, err)
}

// Detach removes the XDP program from iface, in the mode it is attached in.
// If expectedID is not 0 it removes the program only if it has that id, so
// that it never removes someone else's program: otherwise the error wraps
// ErrAlreadyAttached and names what is attached. With nothing attached it
// returns ErrNotAttached.
func Detach(iface string, expectedID uint32) error {
	idx, err := ifindex(iface)
	if err != nil {
		return err
	}
	c, err := dial()
	if err != nil {
		return fmt.Errorf("detach XDP from %s: %w", iface, err)
	}
	defer c.Close()

	st, err := query(c, iface, idx)
	if err != nil {
		return err
	}
	op := fmt.Sprintf("detach XDP from %s", iface)
	if !st.Attached {
		return fmt.Errorf("%s: %w", op, ErrNotAttached)
	}
	mismatch := func(err error) error {
		return fmt.Errorf("%s: %w: program id %d (%s mode) is attached, not id %d; refusing to remove someone else's program%s",
			op, ErrAlreadyAttached, st.ProgID, st.Mode, expectedID, extack(err))
	}
	if expectedID == 0 {
		if err := setXDP(c, idx, -1, -1, st.Mode.flag()); err != nil {
			return wrapErr(op, iface, err)
		}
		return nil
	}
	if st.ProgID != expectedID {
		return mismatch(nil)
	}
	// Detach atomically with XDP_FLAGS_REPLACE, so that a program attached
	// between the query and now is not removed by mistake.
	fd, err := progFDByID(expectedID)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			// The program is gone: it was replaced or detached meanwhile.
			if st, qerr := query(c, iface, idx); qerr == nil && !st.Attached {
				return fmt.Errorf("%s: %w", op, ErrNotAttached)
			}
			return mismatch(nil)
		}
		return fmt.Errorf("%s: get fd of program id %d: %w", op, expectedID, err)
	}
	defer unix.Close(fd)
	if err := setXDP(c, idx, -1, int32(fd), unix.XDP_FLAGS_REPLACE|st.Mode.flag()); err != nil {
		if errors.Is(err, unix.EEXIST) {
			if st2, qerr := query(c, iface, idx); qerr == nil {
				st = st2
				if !st.Attached {
					return fmt.Errorf("%s: %w", op, ErrNotAttached)
				}
			}
			return mismatch(err)
		}
		return wrapErr(op, iface, err)
	}
	return nil
}

// setXDP sends RTM_NEWLINK with IFLA_XDP. fd -1 detaches; expectedFD is only
// read by the kernel with XDP_FLAGS_REPLACE.
func setXDP(c *rtnetlink.Conn, idx int, fd, expectedFD int32, flags uint32) error {
	return c.Link.Set(&rtnetlink.LinkMessage{
		Family: unix.AF_UNSPEC,
		Index:  uint32(idx),
		Attributes: &rtnetlink.LinkAttributes{
			XDP: &rtnetlink.LinkXDP{FD: fd, ExpectedFD: expectedFD, Flags: flags},
		},
	})
}

// ifindex resolves an interface name in the calling thread's namespace.
func ifindex(iface string) (int, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return 0, fmt.Errorf("%w: interface %q not found (see `ip link`)", ErrNoInterface, iface)
	}
	return ifi.Index, nil
}

// dial opens an rtnetlink connection in the calling thread's namespace, with
// extended acknowledgements on so that the kernel says why it refuses.
func dial() (*rtnetlink.Conn, error) {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("dial rtnetlink: %w", err)
	}
	// Best effort: without it errors are bare errnos, which still work.
	_ = c.SetOption(netlink.ExtendedAcknowledge, true)
	return c, nil
}

// wrapErr adds context to an rtnetlink error; the kernel's extended ack
// message is already part of *netlink.OpError's text.
func wrapErr(op, iface string, err error) error {
	if errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("%s: %w: interface %q not found (see `ip link`)", op, ErrNoInterface, iface)
	}
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("%s: %w (needs CAP_NET_ADMIN: run as root)", op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// extack formats the kernel's extended ack message of err, if any.
func extack(err error) string {
	var oe *netlink.OpError
	if errors.As(err, &oe) && oe.Message != "" {
		return fmt.Sprintf(" (kernel: %s)", oe.Message)
	}
	return ""
}

// progFDByID opens a program by id (BPF_PROG_GET_FD_BY_ID). It is the only
// bpf(2) call of this package, kept here so that it does not depend on package
// ebpf.
func progFDByID(id uint32) (int, error) {
	// union bpf_attr, the BPF_*_GET_FD_BY_ID variant.
	attr := struct {
		ID        uint32
		NextID    uint32
		OpenFlags uint32
	}{ID: id}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_GET_FD_BY_ID, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return -1, fmt.Errorf("bpf(BPF_PROG_GET_FD_BY_ID, %d): %w", id, errno)
	}
	return int(fd), nil
}
