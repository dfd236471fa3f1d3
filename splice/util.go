package splice

import "net/netip"

// netipUnmap turns an IPv4-mapped IPv6 address (as Go reports the addresses
// of dual-stack sockets) into plain IPv4.
func netipUnmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
