package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/xlb-lb/xlb/kern"
	"github.com/xlb-lb/xlb/splice"
)

func runStats(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("stats", "",
		"Show what a running xlb does, from its control socket (root only): per worker\n"+
			"its state, weight, connections idle/total, requests, bytes each way and\n"+
			"releases (a client giving one of its connections back: remix, idle release,\n"+
			"rematch); the data plane's verdicts, every drop reason and its other\n"+
			"counters; the leg table. Fits 80 columns.\n"+
			"The same figures are served to Prometheus by 'xlb serve --metrics ADDR'.",
		"xlb stats\nxlb stats --json\nxlb stats --iface eth0")
	socket := fs.String("socket", "", "control socket of the instance (default: the one xlb on --iface uses)")
	iface := fs.String("iface", "", "interface of the instance (default: the only instance in this network namespace)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.parse(args, stdout); err != nil {
		return err
	}
	if err := fs.wantArgs(0, 0); err != nil {
		return err
	}
	path, err := ctlSocket(*socket, *iface)
	if err != nil {
		return err
	}
	var st splice.Status
	if err := splice.Call(path, splice.Request{Cmd: "status"}, &st); err != nil {
		return err
	}
	if *asJSON {
		return printJSON(stdout, st)
	}
	printStats(stdout, st, nil, 0)
	return nil
}

// printStats writes st as a table of at most 80 columns. With prev (xlb top),
// the requests column is the rate since prev, taken dt earlier.
func printStats(w io.Writer, st splice.Status, prev *splice.Status, dt time.Duration) {
	fmt.Fprintf(w, "xlb on %s port %d (pid %d): %d client legs open\n", st.Iface, st.Port, st.Pid, st.Clients)
	reqCol := "REQUESTS"
	if prev != nil {
		reqCol = "REQ/S"
	}
	fmt.Fprintf(w, "%-21s %-8s %3s %9s %8s %7s %7s %8s\n", "WORKER", "STATE", "WT", "IDLE/LEGS", reqCol, "IN", "OUT", "RELEASES")
	before := map[string]splice.WorkerStatus{}
	if prev != nil {
		for _, x := range prev.Workers {
			before[x.Addr] = x
		}
	}
	for _, x := range st.Workers {
		req := count(x.Requests)
		if prev != nil {
			req = "-"
			if b, ok := before[x.Addr]; ok && dt > 0 && x.Requests >= b.Requests {
				req = count(uint64(float64(x.Requests-b.Requests) / dt.Seconds()))
			}
		}
		fmt.Fprintf(w, "%-21s %-8s %3d %9s %8s %7s %7s %8s\n", x.Addr, x.State, x.Weight,
			fmt.Sprintf("%d/%d", x.Idle, x.Legs), req, bytesIEC(x.BytesIn), bytesIEC(x.BytesOut), count(x.Releases))
		if x.Error != "" {
			fmt.Fprintf(w, "  %s\n", clip("last error: "+x.Error, 76))
		}
		if x.CheckError != "" {
			fmt.Fprintf(w, "  %s\n", clip("health check: "+x.CheckError, 76))
		}
		if x.Logged > 0 {
			fmt.Fprintf(w, "  latency p50 %s p99 %s, first byte p50 %s p99 %s (%s logged)\n",
				ms(x.LatencyP50Ms), ms(x.LatencyP99Ms), ms(x.TTFBP50Ms), ms(x.TTFBP99Ms), count(x.Logged))
		}
	}
	fmt.Fprintf(w, "IN: bytes client->worker; OUT: worker->client; RELEASES: connections given\n")
	fmt.Fprintf(w, "back by clients (remix, idle release, rematch)\n")
	if st.Announce != "" {
		fmt.Fprintf(w, "announcement %s\n", st.Announce)
	}
	if st.Unspliced > 0 || st.Mismatches > 0 {
		fmt.Fprintf(w, "unspliced connections %d, handshake mismatches %d\n", st.Unspliced, st.Mismatches)
	}
	if st.RestWindow > 0 {
		fmt.Fprintf(w, "rest window %d bytes (what a worker is told once all it sent is acknowledged)\n", st.RestWindow)
	}
	if st.Held > 0 {
		fmt.Fprintf(w, "client data held while the pools were empty %d: sent on %d, dropped %d\n", st.Held, st.Replayed, st.HeldDropped)
	}
	if st.EarlyReaps > 0 {
		fmt.Fprintf(w, "finished connections forgotten early for room in the leg table %d (raise --max-legs)\n", st.EarlyReaps)
	}
	if len(st.Counters) == 0 {
		return
	}
	var verdicts, drops, others []string
	isDrop := map[string]bool{}
	for _, c := range splice.DropCounters {
		isDrop[c.String()] = true
		drops = append(drops, c.String())
	}
	for i := kern.Counter(0); i < kern.CounterMax; i++ {
		switch {
		case i <= kern.CounterAborted:
			verdicts = append(verdicts, i.String())
		case !isDrop[i.String()]:
			others = append(others, i.String())
		}
	}
	grid(w, "data plane verdicts:", verdicts, func(k string) uint64 { return st.Counters[k] })
	grid(w, "drop reasons:", drops, func(k string) uint64 { return st.Counters[k] })
	grid(w, "data plane counters:", others, func(k string) uint64 { return st.Counters[k] })
	if len(st.Legs) > 0 {
		grid(w, "leg table:", slices.Sorted(maps.Keys(st.Legs)), func(k string) uint64 { return uint64(st.Legs[k]) })
	}
}

// grid prints name/value pairs three to a line (78 columns).
func grid(w io.Writer, title string, names []string, value func(string) uint64) {
	fmt.Fprintln(w, title)
	for i, n := range names {
		end := ""
		if i%3 == 2 || i == len(names)-1 {
			end = "\n"
		}
		fmt.Fprintf(w, "  %-14s %9s%s", clip(n, 14), count(value(n)), end)
	}
}

// count prints n in at most 8 characters.
func count(n uint64) string {
	if n < 100_000_000 {
		return fmt.Sprint(n)
	}
	return si(float64(n), 1000, "")
}

// bytesIEC prints a byte count in at most 7 characters: 512B, 1.5K, 20.3M.
func bytesIEC(n uint64) string {
	if n < 1024 {
		return fmt.Sprintf("%dB", n)
	}
	return si(float64(n), 1024, "")
}

func si(v, base float64, unit string) string {
	for _, p := range []string{"K", "M", "G", "T", "P", "E"} {
		v /= base
		if v < 999.95 {
			return fmt.Sprintf("%.1f%s%s", v, p, unit)
		}
	}
	return fmt.Sprintf("%.0fE%s", v, unit)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "~"
}

// ms prints a latency in milliseconds the way xlb stats does.
func ms(v float64) string {
	switch {
	case v < 1:
		return strconv.FormatFloat(v*1000, 'f', 0, 64) + "µs"
	case v < 1000:
		return strconv.FormatFloat(v, 'f', 1, 64) + "ms"
	}
	return strconv.FormatFloat(v/1000, 'f', 2, 64) + "s"
}
