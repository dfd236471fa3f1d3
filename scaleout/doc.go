// Package scaleout tests xlb scaled out over several hosts the way
// Katran, GLB and Maglev deployments are: each xlb host serves the same
// service address (a VIP on its lo) and announces it over BGP (BIRD 2) while
// its xlb serves (xlb --announce); a router spreads flows over the hosts
// with an ECMP multipath route, L4 hashing. All of it runs in network
// namespaces: clients -- router -- three xlb hosts -- workers.
// docs/SCALE-OUT.md describes the pattern and what these tests measure.
package scaleout
