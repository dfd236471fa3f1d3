package splice

import (
	"net"
	"testing"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TestNeighTableChanges: which rtnetlink messages move the next-hop
// generation. A neighbour's state moving among the valid ones with the same
// address changes no lookup; a new address, a neighbour that goes invalid
// or away, one heard of for the first time, and any route, rule, address or
// link message may.
func TestNeighTableChanges(t *testing.T) {
	mac1, mac2 := net.HardwareAddr{2, 0, 0, 0, 0, 1}, net.HardwareAddr{2, 0, 0, 0, 0, 2}
	neigh := func(typ uint16, family uint16, ifindex uint32, ip string, state uint16, ll net.HardwareAddr) (rtnetlink.Message, netlink.Message) {
		return &rtnetlink.NeighMessage{Family: family, Index: ifindex, State: state,
				Attributes: &rtnetlink.NeighAttributes{Address: net.ParseIP(ip), LLAddress: ll}},
			netlink.Message{Header: netlink.Header{Type: netlink.HeaderType(typ)}}
	}
	tab := neighTable{}
	for _, step := range []struct {
		what string
		typ  uint16
		fam  uint16
		idx  uint32
		ip   string
		st   uint16
		ll   net.HardwareAddr
		want bool
	}{
		{"first heard of, reachable", unix.RTM_NEWNEIGH, unix.AF_INET, 3, "10.0.1.1", unix.NUD_REACHABLE, mac1, true},
		{"reachable -> stale, same address", unix.RTM_NEWNEIGH, unix.AF_INET, 3, "10.0.1.1", unix.NUD_STALE, mac1, false},
		{"stale -> delay -> probe", unix.RTM_NEWNEIGH, unix.AF_INET, 3, "10.0.1.1", unix.NUD_PROBE, mac1, false},
		{"new address (failover)", unix.RTM_NEWNEIGH, unix.AF_INET, 3, "10.0.1.1", unix.NUD_STALE, mac2, true},
		{"failed", unix.RTM_NEWNEIGH, unix.AF_INET, 3, "10.0.1.1", unix.NUD_FAILED, nil, true},
		{"failed again", unix.RTM_NEWNEIGH, unix.AF_INET, 3, "10.0.1.1", unix.NUD_FAILED, nil, false},
		{"resolved", unix.RTM_NEWNEIGH, unix.AF_INET, 3, "10.0.1.1", unix.NUD_REACHABLE, mac2, true},
		{"same address on another device", unix.RTM_NEWNEIGH, unix.AF_INET, 4, "10.0.1.1", unix.NUD_REACHABLE, mac2, true},
		{"deleted", unix.RTM_DELNEIGH, unix.AF_INET, 3, "10.0.1.1", unix.NUD_REACHABLE, mac2, true},
		{"deleted, never heard of", unix.RTM_DELNEIGH, unix.AF_INET, 3, "10.0.1.9", unix.NUD_STALE, mac1, true},
		{"IPv6 neighbour, first heard of", unix.RTM_NEWNEIGH, unix.AF_INET6, 3, "2001:db8::1", unix.NUD_REACHABLE, mac1, true},
		{"IPv6 neighbour, stale", unix.RTM_NEWNEIGH, unix.AF_INET6, 3, "2001:db8::1", unix.NUD_STALE, mac1, false},
		{"IPv6 neighbour, new address", unix.RTM_NEWNEIGH, unix.AF_INET6, 3, "2001:db8::1", unix.NUD_STALE, mac2, true},
		{"bridge entry", unix.RTM_NEWNEIGH, unix.AF_BRIDGE, 3, "", unix.NUD_REACHABLE, mac1, false},
	} {
		m, nl := neigh(step.typ, step.fam, step.idx, step.ip, step.st, step.ll)
		if got := tab.changes([]rtnetlink.Message{m}, []netlink.Message{nl}); got != step.want {
			t.Errorf("%s: changed %v, want %v", step.what, got, step.want)
		}
	}
	if len(tab) != 2 {
		t.Errorf("%d neighbours kept, want 2 (a deleted one is forgotten): %v", len(tab), tab)
	}
	for _, m := range []rtnetlink.Message{&rtnetlink.RouteMessage{}, &rtnetlink.LinkMessage{}, &rtnetlink.AddressMessage{}, &rtnetlink.RuleMessage{}} {
		if !tab.changes([]rtnetlink.Message{m}, []netlink.Message{{}}) {
			t.Errorf("%T: no change", m)
		}
	}
	if tab.changes([]rtnetlink.Message{nil}, []netlink.Message{{}}) {
		t.Error("a message of no known type: a change")
	}
}
