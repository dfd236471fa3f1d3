// Command xlb is a load balancer that splices client TCP connections onto a
// pool of worker connections inside the kernel (XDP) and can move a client to
// another worker between two requests. main only parses the command line and
// wires the packages together; each subcommand lives in its own cmd_*.go file.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// version is set at build time (-ldflags -X main.version=...).
var version = "dev"

// Exit codes, documented in the README.
const (
	exitOK      = 0
	exitFailure = 1 // runtime failure
	exitUsage   = 2 // bad usage: arguments, flags
)

// usageError marks an error the user made on the command line.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// command is one subcommand: its name, a one-line summary and its entry point.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "balance clients of IFACE:PORT over workers (the default command)", runServe},
		{"demo-worker", "run a small HTTP/1.1 keep-alive worker for demos and tests", runDemoWorker},
		{"demo-client", "drive keep-alive traffic and verify every response", runDemoClient},
		{"ctl", "control a running xlb: list, add, drain, remove, weight", runCtl},
		{"stats", "show a running xlb's workers, requests, bytes, drops and legs", runStats},
		{"top", "xlb stats, refreshed live in the terminal", runTop},
		{"status", "show whether xlb's XDP program is attached to an interface, and its counters", runStatus},
		{"attach", "attach xlb's XDP program to an interface (pass-through, counting)", runAttach},
		{"detach", "detach xlb's XDP program from an interface", runDetach},
		{"version", "print the version", runVersion},
	}
}

const mainUsage = `xlb: a load balancer that splices TCP connections in the kernel (XDP)
and balances per request without copying payload to user space.

Usage:
  xlb [serve] [FLAGS] IFACE PORT WORKER...   e.g. xlb lo 8080 127.0.0.1:4171 127.0.0.1:4172
  xlb COMMAND [ARGS...]

Commands:
%s
Run 'xlb COMMAND --help' for a command's flags and examples.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage.
`

func printUsage(w io.Writer) {
	var list string
	for _, c := range commands() {
		list += fmt.Sprintf("  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, mainUsage, list)
}

// run is main without os.Exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "-help", "help":
		printUsage(stdout)
		return exitOK
	case "--version", "-version":
		args = []string{"version"}
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		return exitCode(err, stderr)
	}
	if strings.HasPrefix(args[0], "-") || len(args) >= 2 {
		// No command word: `xlb [FLAGS] IFACE PORT WORKER...`.
		return exitCode(runServe(args, stdout, stderr), stderr)
	}
	fmt.Fprintf(stderr, "xlb: unknown command %q (run 'xlb --help' for the list)\n", args[0])
	return exitUsage
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, errHelp) {
		return exitOK
	}
	fmt.Fprintf(stderr, "xlb: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	return exitFailure
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
