package kern_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// TestMain runs the fixtures over IPv4 and then, as root, this test binary
// again over IPv6 (XLB_KERN_FAMILY=6, packet_test.go), so that one
// `go test ./kern/` checks both objects. XLB_KERN_FAMILY=4 or 6 runs one
// family only; benchmarks and fuzzing run once, over the family asked for.
func TestMain(m *testing.M) {
	code := m.Run()
	if code != 0 || os.Getenv("XLB_KERN_FAMILY") != "" || os.Geteuid() != 0 || flagSet("test.bench") || flagSet("test.fuzz") {
		os.Exit(code)
	}
	fmt.Println("kern: the fixtures again, over IPv6 (XLB_KERN_FAMILY=6)")
	cmd := exec.Command(os.Args[0], os.Args[1:]...)
	cmd.Env = append(os.Environ(), "XLB_KERN_FAMILY=6")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "kern: over IPv6: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// flagSet: the test flag name was given a value.
func flagSet(name string) bool {
	f := flag.Lookup(name)
	return f != nil && f.Value.String() != ""
}
