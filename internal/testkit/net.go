package testkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xlb-lb/xlb/testnet"
)

// NeedTools fails the test when a client or server it runs is missing (make
// test installs them all with scripts/deps.sh test).
func NeedTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (make test installs it: scripts/deps.sh test)", tool)
		}
	}
}

// ProtoFlags are $XLB_PROTO_FLAGS: more xlb flags for the protocol tests
// (to check the scenarios themselves with `--policy sticky --idle-release
// 0`).
func ProtoFlags() []string { return strings.Fields(os.Getenv("XLB_PROTO_FLAGS")) }

// OwnSocket is the flag that gives an xlb a control socket of its own, so
// that instances in different namespaces (tests run side by side) never
// collide on the default path.
func OwnSocket(t testing.TB) []string {
	t.Helper()
	dir, err := os.MkdirTemp("", "xlbs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return []string{"--socket", filepath.Join(dir, "ctl.sock")}
}

// Sysctls sets each "key=value" in ns.
func Sysctls(t testing.TB, ns *testnet.NS, kv ...string) {
	t.Helper()
	for _, s := range kv {
		ns.Run("sysctl", "-qw", s)
	}
}

// Sockets lists the TCP sockets in ns in state that match the ss filter
// expression (e.g. "( sport = :8080 )"), one line each, without the header.
func Sockets(t testing.TB, ns *testnet.NS, state, filter string) []string {
	t.Helper()
	out := ns.Run("ss", "-Htan", "state", state, filter)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}
