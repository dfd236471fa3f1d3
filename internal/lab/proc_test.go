package lab

import (
	"os"
	"testing"
)

// TestProcFiles reads this process's own proc files.
func TestProcFiles(t *testing.T) {
	pid := os.Getpid()
	if rss := ProcRSS(pid); rss < 1<<20 {
		t.Errorf("RSS %d bytes: below 1 MiB", rss)
	}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fds, socks := ProcFDs(pid)
	if fds < 4 || socks < 0 || socks > fds {
		t.Errorf("%d descriptors, %d sockets: want 4 or more (stdin, stdout, stderr, one open file)", fds, socks)
	}
	if kv := ReadKV("/proc/self/status"); kv["Pid"] != int64(pid) {
		t.Errorf("ReadKV: Pid %d, want %d", kv["Pid"], pid)
	}
	if inuse, _, _ := Sockstat(pid); inuse < 0 {
		t.Errorf("sockstat: %d TCP sockets", inuse)
	}
	if n := SumMemlock(ProcBPFMaps(pid)); n != 0 {
		t.Errorf("BPF maps of a process without any: %d bytes", n)
	}
	if got := LastLines("a\nb\nc\n", 2); got != "b\nc" {
		t.Errorf("LastLines: %q", got)
	}
}
