// Package e2e holds the end-to-end tests (tier 3 of DESIGN.md): the real xlb
// binary, real clients and servers, every payload hash-checked, each test in
// network namespaces of its own. They need root; CI runs them.
package e2e
