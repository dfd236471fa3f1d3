package splice

import (
	"net/netip"

	"golang.org/x/sys/unix"
)

// netipUnmap turns an IPv4-mapped IPv6 address (as Go reports the addresses
// of dual-stack sockets) into plain IPv4.
func netipUnmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// family is the socket(2) domain of a: AF_INET or AF_INET6.
func family(a netip.Addr) int {
	if a.Unmap().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// network is the Go network name of a's family: "tcp4" or "tcp6".
func network(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "tcp4"
	}
	return "tcp6"
}

// sockaddr is ap as a sockaddr of its family.
func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	a := ap.Addr().Unmap()
	if a.Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: a.As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: a.As16()}
}

// addrPort is the address of an AF_INET or AF_INET6 sockaddr (IPv4-mapped
// addresses unmapped); false for another kind.
func addrPort(sa unix.Sockaddr) (netip.AddrPort, bool) {
	switch s := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(s.Addr), uint16(s.Port)), true
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(s.Addr).Unmap(), uint16(s.Port)), true
	}
	return netip.AddrPort{}, false
}
