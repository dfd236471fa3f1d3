// Package ebpf is a small, hand-written interface to the bpf(2) system call:
// maps, programs, pinning on bpffs, BPF_PROG_TEST_RUN, a ring buffer reader and
// a loader for the ELF objects that clang builds from our own C sources.
//
// It knows nothing about load balancing. It deliberately supports only what the
// project's objects use: legacy map definitions in a "maps" section (no BTF),
// one program per "xdp"/"socket" section, R_BPF_64_64 map relocations, no
// bpf-to-bpf calls and no global variables. Anything else in an object is an
// error that says what to change, never a silent skip.
//
// Errors wrap sentinels (ErrKeyNotExist, ErrNotPermitted, ...) that also match
// the underlying errno with errors.Is.
//
// Only 64-bit little-endian hosts are supported (amd64, arm64): bpf_attr
// pointer fields are declared as unsafe.Pointer, which must be 8 bytes.
package ebpf
