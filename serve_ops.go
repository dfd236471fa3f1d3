package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/xlb-lb/xlb/ebpf"
	"github.com/xlb-lb/xlb/splice"
	"golang.org/x/sys/unix"
)

// What serve checks before it starts, and how it explains what went wrong.

// neededCaps are the capabilities serve needs: CAP_BPF to load the program
// and make maps, CAP_NET_ADMIN to attach XDP and for TCP_REPAIR,
// CAP_SYS_ADMIN to open programs by id (an xlb already attached) and to
// mount bpffs.
var neededCaps = []struct {
	bit  uint
	name string
}{{unix.CAP_BPF, "CAP_BPF"}, {unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"}, {unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"}}

// checkPrivileges fails unless the process has every capability serve needs.
func checkPrivileges() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("reading capabilities: %w", err)
	}
	eff := uint64(data[0].Effective) | uint64(data[1].Effective)<<32
	var missing []string
	for _, c := range neededCaps {
		if eff&(1<<c.bit) == 0 {
			missing = append(missing, c.name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	who := "root"
	if os.Geteuid() != 0 {
		who = fmt.Sprintf("uid %d, not root", os.Geteuid())
	}
	return fmt.Errorf("xlb needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN, to load and attach its XDP program; "+
		"this process (%s) lacks %s: run it with sudo, or grant the capabilities (systemd: AmbientCapabilities=, see docs/xlb.service)",
		who, strings.Join(missing, ", "))
}

// newLogger makes serve's logger: format text or json, at level.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("--log-format %q: want text or json", format)
}

// checkMetricsAddr checks the form of --metrics HOST:PORT.
func checkMetricsAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return usagef("--metrics %q: want HOST:PORT, e.g. 127.0.0.1:9464 (or :9464 for every address)", addr)
	}
	if _, err := parsePort(port); err != nil {
		return usagef("--metrics %q: port must be a number from 1 to 65535", addr)
	}
	return nil
}

// requireWorkersTimeout bounds the connection attempt to each worker with
// --require-workers.
const requireWorkersTimeout = 2 * time.Second

// requireWorkers connects once to every worker and fails if one cannot be
// reached (--require-workers); without it, xlb keeps retrying them.
func requireWorkers(workers []splice.WorkerSpec) error {
	var errs []error
	for _, w := range workers {
		c, err := net.DialTimeout("tcp", w.Addr.String(), requireWorkersTimeout)
		if err != nil {
			errs = append(errs, fmt.Errorf("worker %s is unreachable: %w", w.Addr, err))
			continue
		}
		c.Close()
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w (--require-workers: start the workers first, or leave the flag out and xlb keeps retrying them)", errors.Join(errs...))
	}
	return nil
}

// verifierLogDir is where a rejected program's full verifier log is written.
var verifierLogDir = "/run/xlb"

// explainStartError adds what to do to the errors of splice.Start that come
// from the kernel: the verifier's log is written to a file, a missing
// feature named.
func explainStartError(err error, iface string) error {
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		if strings.Contains(err.Error(), "verifier log is in ") {
			// The loader saved it already (kern.LoadWith).
			return fmt.Errorf("%w: this build of xlb does not suit kernel %s, report it with that file", err, kernelRelease())
		}
		path := filepath.Join(verifierLogDir, "verifier-"+strings.ReplaceAll(iface, "/", "_")+".log")
		werr := os.MkdirAll(verifierLogDir, 0o700)
		if werr == nil {
			werr = os.WriteFile(path, []byte(verr.Log), 0o600)
		}
		if werr != nil {
			return fmt.Errorf("%w (the full verifier log could not be written: %v)", err, werr)
		}
		return fmt.Errorf("%w; the full verifier log is in %s: this build of xlb does not suit kernel %s, report it with that file", err, path, kernelRelease())
	}
	var berr *ebpf.BTFError
	if errors.As(err, &berr) {
		// The loader saved the log of the BTF checks (kern.LoadWith).
		return fmt.Errorf("%w: kernel %s refused the type information (BTF) of this build of xlb, report it with that file", err, kernelRelease())
	}
	if errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("%w: kernel %s lacks a BPF feature xlb needs (XDP, BPF ring buffers, queue maps; Linux 6.1 or later has them all)", err, kernelRelease())
	}
	return err
}

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "(unknown)"
	}
	return unix.ByteSliceToString(u.Release[:])
}
