package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/xlb-lb/xlb/splice"
)

const ctlUsage = `list                              workers: state, weight, connections idle/total, requests
  add HOST:PORT[@WEIGHT]            balance over a new worker (clients reach it at their next request)
  drain HOST:PORT                   give it no new request; its connections close as they come idle
  remove HOST:PORT                  drain it, then forget it
  weight HOST:PORT WEIGHT           change its share (0: no new connections)
  clients                           client connections: address, state, worker, protocol, why pinned
  rematch CLIENT_HOST:PORT WORKER   send that client's next request to that worker`

func runCtl(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ctl", "COMMAND [ARGS]",
		"Control a running xlb through its control socket (root only). Commands:\n  "+ctlUsage,
		"xlb ctl list\nxlb ctl add 127.0.0.1:4174@2\nxlb ctl drain 127.0.0.1:4171\nxlb ctl clients\nxlb ctl rematch 127.0.0.1:51234 127.0.0.1:4172\nxlb ctl --iface eth0 list")
	socket := fs.String("socket", "", "control socket of the instance (default: the one xlb on --iface uses)")
	iface := fs.String("iface", "", "interface of the instance (default: the only instance in this network namespace)")
	asJSON := fs.Bool("json", false, "print JSON (list)")
	if err := fs.parse(args, stdout); err != nil {
		return err
	}
	if err := fs.wantArgs(1, 3); err != nil {
		return err
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	want := map[string]int{"list": 0, "status": 0, "add": 1, "drain": 1, "remove": 1, "weight": 2, "clients": 0, "rematch": 2}
	n, ok := want[cmd]
	if !ok {
		return usagef("ctl: unknown command %q; commands:\n  %s", cmd, ctlUsage)
	}
	if len(rest) != n {
		return usagef("ctl %s: takes %d argument(s), got %d (run 'xlb ctl --help')", cmd, n, len(rest))
	}
	path, err := ctlSocket(*socket, *iface)
	if err != nil {
		return err
	}
	if cmd == "list" || cmd == "status" {
		var st splice.Status
		if err := splice.Call(path, splice.Request{Cmd: "status"}, &st); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, st)
		}
		printWorkers(stdout, st)
		return nil
	}
	if cmd == "clients" {
		var cl []splice.ClientInfo
		if err := splice.Call(path, splice.Request{Cmd: "clients"}, &cl); err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, cl)
		}
		fmt.Fprintf(stdout, "%-22s %-8s %-22s %-9s %-8s %s\n", "CLIENT", "STATE", "WORKER", "PROTOCOL", "REQUESTS", "PINNED")
		for _, c := range cl {
			pin := c.Pinned
			if pin == "" {
				pin = "-"
			}
			fmt.Fprintf(stdout, "%-22s %-8s %-22s %-9s %-8d %s\n", c.Client, c.State, c.Worker, c.Protocol, c.Requests, pin)
		}
		return nil
	}
	if err := splice.Call(path, splice.Request{Cmd: cmd, Args: rest}, nil); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s %s: done\n", cmd, strings.Join(rest, " "))
	return nil
}

// ctlSocket finds the control socket: the one named, the one of the named
// interface, or the only one of this network namespace.
func ctlSocket(socket, iface string) (string, error) {
	switch {
	case socket != "":
		return socket, nil
	case iface != "":
		return splice.DefaultSocket(iface), nil
	}
	pattern := splice.DefaultSocket("*")
	found, _ := filepath.Glob(pattern)
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return "", fmt.Errorf("no xlb control socket in this network namespace (%s): %w; name it with --socket", pattern, splice.ErrNoInstance)
	}
	return "", errors.New("several xlb instances run in this network namespace: choose one with --iface or --socket")
}

func printWorkers(w io.Writer, st splice.Status) {
	fmt.Fprintf(w, "xlb on %s port %d (pid %d): %d client connections\n", st.Iface, st.Port, st.Pid, st.Clients)
	fmt.Fprintf(w, "%-22s %-9s %6s %9s %9s %10s\n", "WORKER", "STATE", "WEIGHT", "IDLE", "LEGS", "REQUESTS")
	for _, x := range st.Workers {
		fmt.Fprintf(w, "%-22s %-9s %6d %9d %9d %10d\n", x.Addr, x.State, x.Weight, x.Idle, x.Legs, x.Requests)
	}
}
