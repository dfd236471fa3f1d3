// Command gen writes kern/zlayout.go, the Go side of the layouts of
// kern/bpf/structs.h, from the built object's BTF and kern's hand-written Go
// types (see package kern/internal/layoutgen). `make` runs it whenever
// kern/bpf/xlb.o changes; by hand, after make has built the object:
//
//	go generate ./kern/
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/xlb-lb/xlb/kern/internal/layoutgen"
)

func main() {
	obj := flag.String("obj", "bpf/xlb.o", "the data plane object (built by make)")
	out := flag.String("o", "zlayout.go", "the file to write (types are read from the Go files of the current directory, this one left out)")
	pkg := flag.String("pkg", "kern", "the package name")
	flag.Parse()
	if err := run(*obj, *out, *pkg); err != nil {
		fmt.Fprintln(os.Stderr, "kern/gen:", err)
		os.Exit(1)
	}
}

func run(obj, out, pkg string) error {
	raw, err := os.ReadFile(obj)
	if err != nil {
		return fmt.Errorf("%w (build it first: make kern/bpf/xlb.o)", err)
	}
	src, err := layoutgen.GoSources(".", out)
	if err != nil {
		return err
	}
	code, err := layoutgen.Generate(raw, filepath.ToSlash(obj), pkg, src)
	if err != nil {
		return err
	}
	return os.WriteFile(out, code, 0o644)
}
