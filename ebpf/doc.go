// Package ebpf is a small, hand-written interface to the bpf(2) system call:
// maps, programs, pinning on bpffs, BPF_PROG_TEST_RUN, a ring buffer reader and
// a loader for the ELF objects that clang builds from our own C sources.
//
// It knows nothing about load balancing. It deliberately supports only what the
// project's objects use: legacy map definitions in a "maps" section, one
// program per "xdp"/"socket" section, R_BPF_64_64 map relocations, bpf-to-bpf
// calls and callbacks (bpf_loop) to functions in ".text", and no global
// variables. Anything else in an object is an error that says what to change,
// never a silent skip.
//
// BTF: an object built with clang -g carries its types (.BTF) and, per
// function, its BTF func and source lines (.BTF.ext). The loader parses both
// (ParseBTF, ParseBTFExt), fills in what clang leaves to it (each DATASEC's
// size and variable offsets), loads the BTF once per collection
// (BPF_BTF_LOAD) and passes it with every program, with the func_info and
// line_info of the program as linked. The verifier then checks a global
// function once on its own rather than at each call, and its logs name source
// lines. BTF.StructLayout exposes the object's struct layouts. Not supported:
// BTF-defined maps (".maps"), CO-RE relocations, kernels that lack a BTF kind
// clang writes (no sanitising as libbpf does for old kernels).
//
// Errors wrap sentinels (ErrKeyNotExist, ErrNotPermitted, ErrBTF, ...) that
// also match the underlying errno with errors.Is where there is one.
//
// Only 64-bit little-endian hosts are supported (amd64, arm64): bpf_attr
// pointer fields are declared as unsafe.Pointer, which must be 8 bytes.
package ebpf
