package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/xlb-lb/xlb/kern"
	"github.com/xlb-lb/xlb/splice"
	"github.com/xlb-lb/xlb/xdp"

	"github.com/xlb-lb/xlb/internal/runstate"
)

func runDetach(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("detach", "IFACE",
		"Detach xlb's XDP program from IFACE. A program that is not xlb's is left\n"+
			"alone unless --force is given.",
		"xlb detach lo\nxlb detach --force eth0   # whatever program is attached")
	force := fs.Bool("force", false, "detach the attached program even if it is not xlb's")
	if err := fs.parse(args, stdout); err != nil {
		return err
	}
	if err := fs.wantArgs(1, 1); err != nil {
		return err
	}
	iface := fs.Arg(0)
	st, err := xdp.Query(iface)
	if err != nil {
		return err
	}
	if !st.Attached {
		return fmt.Errorf("detach %s: %w", iface, xdp.ErrNotAttached)
	}
	if !*force {
		prog, stats, err := kern.Attached(st.ProgID)
		if errors.Is(err, kern.ErrNotOurs) {
			return fmt.Errorf("detach %s: %w; use --force to detach it anyway", iface, err)
		}
		if err != nil {
			return err
		}
		prog.Close()
		stats.Close()
	}
	if err := xdp.Detach(iface, st.ProgID); err != nil {
		return err
	}
	if _, err := splice.Status1(iface); errors.Is(err, splice.ErrNoInstance) {
		// No xlb serves there: the pins are those of 'xlb attach'.
		runstate.RemovePins(iface)
	}
	fmt.Fprintf(stdout, "detached XDP program id %d from %s\n", st.ProgID, iface)
	return nil
}
