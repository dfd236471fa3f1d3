package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/xlb-lb/xlb/kern"
	"github.com/xlb-lb/xlb/splice"
	"github.com/xlb-lb/xlb/xdp"
)

// statusReport is what 'xlb status' prints; its JSON form is for scripts.
type statusReport struct {
	Interface string            `json:"interface"`
	Attached  bool              `json:"attached"`
	Ours      bool              `json:"xlb"`
	ProgID    uint32            `json:"prog_id,omitempty"`
	Mode      string            `json:"mode,omitempty"`
	Note      string            `json:"note,omitempty"`
	Counters  map[string]uint64 `json:"counters,omitempty"`
	Legs      map[string]int    `json:"legs,omitempty"`
	order     []string
}

func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", "IFACE",
		"Show whether xlb's XDP program is attached to IFACE, in which mode, and the\n"+
			"data plane's counters (verdicts and packet classes, summed over CPUs).\n"+
			"IFACE may be a comma-separated list: one report each (--json: an array).",
		"xlb status lo\nxlb status --json eth0\nxlb status eth0,eth1")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.parse(args, stdout); err != nil {
		return err
	}
	if err := fs.wantArgs(1, 1); err != nil {
		return err
	}
	ifaces, err := splice.ParseIfaces(fs.Arg(0))
	if err != nil {
		return usagef("%v", err)
	}
	var rs []*statusReport
	for _, ifc := range ifaces {
		r, err := status(ifc)
		if err != nil {
			return err
		}
		rs = append(rs, r)
	}
	if *asJSON && len(rs) == 1 {
		return printJSON(stdout, rs[0])
	}
	if *asJSON {
		return printJSON(stdout, rs) // an array: one report per interface
	}
	for i, r := range rs {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		printStatus(stdout, r)
	}
	return nil
}

func status(iface string) (*statusReport, error) {
	st, err := xdp.Query(iface)
	if err != nil {
		return nil, err
	}
	r := &statusReport{Interface: iface, Attached: st.Attached}
	if !st.Attached {
		return r, nil
	}
	r.ProgID, r.Mode = st.ProgID, st.Mode.String()
	prog, maps, err := kern.AttachedMaps(st.ProgID)
	if errors.Is(err, kern.ErrNotOurs) {
		r.Note = err.Error()
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	defer prog.Close()
	for _, m := range maps {
		defer m.Close()
	}
	stats := maps[kern.StatsMapName]
	if stats == nil {
		return nil, fmt.Errorf("XDP program id %d has no %s map", st.ProgID, kern.StatsMapName)
	}
	if legs := maps[kern.LegsMapName]; legs != nil {
		if r.Legs, err = kern.LegCounts(legs, maps[kern.BindsMapName]); err != nil {
			return nil, err
		}
	}
	c, err := kern.ReadCounters(stats)
	if err != nil {
		return nil, err
	}
	r.Ours = true
	r.Counters = map[string]uint64{}
	for i, v := range c {
		name := kern.Counter(i).String()
		r.Counters[name] = v
		r.order = append(r.order, name)
	}
	return r, nil
}

func printStatus(w io.Writer, r *statusReport) {
	switch {
	case !r.Attached:
		fmt.Fprintf(w, "%s: no XDP program attached\n", r.Interface)
		return
	case !r.Ours:
		fmt.Fprintf(w, "%s: XDP program id %d (%s mode) is attached: %s\n", r.Interface, r.ProgID, r.Mode, r.Note)
		return
	}
	fmt.Fprintf(w, "%s: xlb attached (program id %d, %s mode)\n", r.Interface, r.ProgID, r.Mode)
	if len(r.Legs) > 0 {
		fmt.Fprintf(w, "legs:\n")
		for _, k := range slices.Sorted(maps.Keys(r.Legs)) {
			fmt.Fprintf(w, "  %-16s %d\n", k, r.Legs[k])
		}
	}
	fmt.Fprintf(w, "counters:\n")
	for _, name := range r.order {
		fmt.Fprintf(w, "  %-16s %d\n", name, r.Counters[name])
	}
}
