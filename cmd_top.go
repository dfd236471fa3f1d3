package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/xlb-lb/xlb/splice"
)

// clearScreen moves the cursor home and clears the terminal (ANSI).
const clearScreen = "\x1b[H\x1b[2J"

func runTop(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("top", "",
		"'xlb stats', refreshed live in the terminal; the requests column is the rate\n"+
			"since the previous refresh. Ctrl-C ends it.",
		"xlb top\nxlb top --interval 5s --iface eth0\nxlb top --count 3   # three refreshes, then exit")
	socket := fs.String("socket", "", "control socket of the instance (default: the one xlb on --iface uses)")
	iface := fs.String("iface", "", "interface of the instance (default: the only instance in this network namespace)")
	interval := fs.Duration("interval", time.Second, "time between refreshes")
	n := fs.Int("count", 0, "stop after this many refreshes (0: until Ctrl-C)")
	if err := fs.parse(args, stdout); err != nil {
		return err
	}
	if err := fs.wantArgs(0, 0); err != nil {
		return err
	}
	if *interval < 100*time.Millisecond {
		return usagef("--interval %v: must be at least 100ms", *interval)
	}
	if *n < 0 {
		return usagef("--count %d: must be 0 or more", *n)
	}
	path, err := ctlSocket(*socket, *iface)
	if err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	var prev *splice.Status
	var prevAt time.Time
	for i := 0; *n == 0 || i < *n; i++ {
		var st splice.Status
		if err := splice.Call(path, splice.Request{Cmd: "status"}, &st); err != nil {
			return err
		}
		now := time.Now()
		// One write per frame, so the terminal never shows half of one.
		var b bytes.Buffer
		b.WriteString(clearScreen)
		fmt.Fprintf(&b, "%s, every %v (Ctrl-C to quit)\n", now.Format("15:04:05"), *interval)
		printStats(&b, st, prev, now.Sub(prevAt))
		stdout.Write(b.Bytes())
		prev, prevAt = &st, now
		if *n != 0 && i == *n-1 {
			break
		}
		select {
		case <-sig:
			return nil
		case <-tick.C:
		}
	}
	return nil
}
