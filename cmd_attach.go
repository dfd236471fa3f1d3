package main

import (
	"fmt"
	"io"

	"github.com/xlb-lb/xlb/internal/runstate"
	"github.com/xlb-lb/xlb/kern"
	"github.com/xlb-lb/xlb/splice"
	"github.com/xlb-lb/xlb/xdp"
)

func runAttach(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("attach", "IFACE",
		"Load xlb's XDP program and attach it to IFACE. The program stays attached after\n"+
			"this command exits; 'xlb status IFACE' shows its counters, 'xlb detach IFACE'\n"+
			"removes it. Without workers it passes every packet and only counts.",
		"xlb attach lo\nxlb attach --mode native eth0\nxlb attach --force eth0   # replace another program")
	mode := fs.String("mode", "auto", "XDP mode: generic, native or auto (native if the driver supports it)")
	force := fs.Bool("force", false, "replace an XDP program that is already attached")
	if err := fs.parse(args, stdout); err != nil {
		return err
	}
	if err := fs.wantArgs(1, 1); err != nil {
		return err
	}
	m, err := xdp.ParseMode(*mode)
	if err != nil {
		return usagef("attach: %v", err)
	}
	iface := fs.Arg(0)
	if _, err := xdp.Query(iface); err != nil {
		return err
	}
	// The prog array the program tail-calls through lives on in its pins
	// only: pins that vanish with this command would leave it without
	// them (it then passes foreign packets and drops its legs' packets).
	if runstate.PinsTransient() {
		return fmt.Errorf("attach %s: %s", iface, runstate.TransientHint)
	}
	objs, err := kern.Load()
	if err != nil {
		return err
	}
	defer objs.Close()
	used, err := xdp.Attach(iface, objs.Program.FD(), xdp.AttachOptions{Mode: m, Force: *force})
	if err != nil {
		return err
	}
	// The program tail-calls its other parts through a prog array, which
	// the kernel empties when no process or pin holds it any more: pin
	// it ('xlb detach' removes the pins).
	if err := objs.Pin(splice.PinDir(iface)); err != nil {
		xdp.Detach(iface, 0)
		return err
	}
	st, err := xdp.Query(iface)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "attached %s to %s (id %d, %s mode)\n", kern.ProgramName, iface, st.ProgID, used)
	return nil
}
