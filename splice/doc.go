// Package splice is xlb's control plane: it keeps a pool of worker legs (TCP
// connections to the workers) registered with the XDP data plane, accepts and
// holds client legs, cross-checks the data plane's handshake-derived numbers,
// reaps finished legs silently, and hands connections back to the kernel on
// shutdown. The offset math lives here too (offset.go), as the oracle of the
// packet tests. See DESIGN.md "Control plane".
package splice
