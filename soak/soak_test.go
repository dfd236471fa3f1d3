package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/internal/lab"
	"github.com/xlb-lb/xlb/testnet"
)

// TestSoakShort is `make soak` in 2.5 minutes, a sample every 5 s: it
// fails on the same conditions (a series still growing at the end, a
// failed request no kill explains, an event or xlb failing). Its report
// is logged with -v and kept nowhere.
func TestSoakShort(t *testing.T) {
	testnet.RequireRoot(t)
	if testing.Short() {
		t.Skip("-short: the soak takes 2.5 minutes")
	}
	if _, err := exec.LookPath("nginx"); err != nil {
		if _, err := os.Stat("/usr/sbin/nginx"); err != nil {
			t.Fatalf("needs nginx (scripts/deps.sh test installs it)")
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "xlb")
	cmd := exec.Command("go", "build", "-o", bin, "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building xlb (run make first: it builds the XDP object): %v\n%s", err, out)
	}
	o := defaultOptions()
	o.Duration, o.Sample = shortDuration, 5*time.Second
	o.out, o.xlb = filepath.Join(dir, "report"), bin
	_, err := exec.LookPath("gnuplot")
	o.plot = err == nil
	ctx, cancel := context.WithTimeout(context.Background(), shortDuration+5*time.Minute)
	defer cancel()
	lab.Logf = t.Logf
	res, err := run(ctx, o, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeReport(o, res); err != nil {
		t.Error(err)
	}
	if b, err := os.ReadFile(filepath.Join(o.out, reportName)); err == nil && (testing.Verbose() || !res.Pass) {
		t.Logf("report:\n%s", b)
	}
	t.Logf("%d requests, %s verified, %d failures tolerated", res.Requests, mib(res.Bytes), len(res.Failures)-res.Bad)
	if !res.Pass {
		t.Errorf("soak failed:\n%s", strings.Join(res.Problems, "\n"))
	}
}
