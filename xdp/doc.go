// Package xdp attaches, detaches and queries XDP programs on a network
// interface over rtnetlink (RTM_NEWLINK with IFLA_XDP), in generic (skb),
// native (driver) or automatic mode.
//
// It works on program file descriptors and ids only; loading programs is the
// job of package ebpf. Every call resolves the interface and dials rtnetlink in
// the calling thread's network namespace.
//
// Attach never replaces someone else's program by accident: it uses
// XDP_FLAGS_UPDATE_IF_NOEXIST unless asked to force, and Detach can be told
// which program id it expects to remove. Extended acknowledgement messages from
// the kernel are kept in the returned errors.
package xdp
