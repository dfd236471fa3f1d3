package testkit

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// XLB is the binary under test, set by Main: $XLB_BIN, or xlb built once
// into a temporary directory.
var XLB string

// BuildDir is the temporary directory of Main's build (xlb built with other
// tags goes there too); it is removed when the tests end.
var BuildDir string

// Main sets XLB (building xlb unless $XLB_BIN names one), runs the tests,
// then after (when set, with the tests' exit code; it returns the code to
// exit with), and exits. A package's TestMain is one call to it.
func Main(m *testing.M, after func(code int) int) {
	dir, err := os.MkdirTemp("", "xlb-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	BuildDir = dir
	XLB = os.Getenv("XLB_BIN")
	if XLB == "" {
		XLB = filepath.Join(dir, "xlb")
		if err := Build(XLB); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	if after != nil {
		code = after(code)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// Build builds xlb (the module's main package, with the build tags given)
// into out.
func Build(out string, tags ...string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	args := []string{"build", "-o", out}
	for _, tag := range tags {
		args = append(args, "-tags", tag)
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building xlb %v (run make first: it builds the XDP object): %v\n%s", tags, err, b)
	}
	return nil
}

// ModuleRoot is the directory of the go.mod above the working directory (a
// test runs in its package's directory).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for i := 0; i < 64; i++ {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			break
		}
		dir = up
	}
	return "", errors.New("no go.mod above the working directory")
}
