package ebpf

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// requireRoot skips a test that needs root, unless XLB_TEST_ROOT=1 (CI runs
// as root and must not skip silently), which makes it a failure.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("XLB_TEST_ROOT") == "1" {
		t.Fatal("needs root (bpf(2), bpffs) but XLB_TEST_ROOT=1 and euid != 0")
	}
	t.Skip("needs root for bpf(2) and bpffs; run as root (CI sets XLB_TEST_ROOT=1)")
}

// bpfCFlags mirror BPF_CFLAGS of the Makefile.
func bpfCFlags() []string {
	multiarch := map[string]string{"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu"}[runtime.GOARCH]
	return []string{"-O2", "-g", "-mcpu=v3", "-target", "bpf", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
		"-I/usr/include/" + multiarch, "-I../kern/bpf"}
}

// compileBPF builds a C source file into an object in a temporary directory.
func compileBPF(t *testing.T, src string) string {
	t.Helper()
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Fatalf("clang not found (a build dependency; run make deps): %v", err)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(src)+".o")
	args := append(bpfCFlags(), "-c", src, "-o", out)
	if b, err := exec.Command(clang, args...).CombinedOutput(); err != nil {
		t.Fatalf("clang %s: %v\n%s", src, err, b)
	}
	return out
}

// compileBPFSource builds C source text.
func compileBPFSource(t *testing.T, name, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".c")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return compileBPF(t, path)
}

// builtObject returns the object built by make from src (obj), or builds it
// if it is missing or older than src.
func builtObject(t *testing.T, src, obj string) string {
	t.Helper()
	so, errS := os.Stat(src)
	oo, errO := os.Stat(obj)
	if errO == nil && (errS != nil || !oo.ModTime().Before(so.ModTime())) {
		return obj
	}
	if errS != nil {
		t.Fatalf("%s missing and no source %s: run make", obj, src)
	}
	return compileBPF(t, src)
}

// xlbObject is kern/bpf/xlb.o (built by make, or here if missing).
func xlbObject(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("../kern/bpf/xlb.o"); err == nil {
		return "../kern/bpf/xlb.o"
	}
	return compileBPF(t, "../kern/bpf/xlb.c")
}

// loadCollection loads the collection of obj with opts; it is closed when
// the test ends.
func loadCollection(t *testing.T, obj string, opts *CollectionOptions) *Collection {
	t.Helper()
	spec, err := LoadCollectionSpec(obj)
	if err != nil {
		t.Fatal(err)
	}
	coll, err := NewCollection(spec, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(coll.Close)
	return coll
}

// objectBTF opens obj (closed when the test ends) and reads its .BTF
// section as clang wrote it, raw and parsed (without the loader's fix-ups).
func objectBTF(t *testing.T, obj string) (*elf.File, []byte, *BTF) {
	t.Helper()
	f, err := elf.Open(obj)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	raw, err := f.Section(btfSection).Data()
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseBTF(raw)
	if err != nil {
		t.Fatal(err)
	}
	return f, raw, b
}

func ringbufObject(t *testing.T) string {
	return builtObject(t, "testdata/ringbuf.c", "testdata/ringbuf.o")
}
