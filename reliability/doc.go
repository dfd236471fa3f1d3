// Package reliability runs xlb on a routed topology under adversity: client,
// load balancer and worker hosts as network namespaces joined by TAP links
// whose forwarder (testnet.TAP) drops, duplicates, reorders and delays frames
// with a seed. Every scenario is bounded in time and checks every payload
// byte; `make reliability` runs the long versions and writes
// docs/RELIABILITY.md. The tests need root; the code is only tests.
package reliability
