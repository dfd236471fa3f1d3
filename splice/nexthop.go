package splice

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Routed mode: the data plane keeps the next hops bpf_fib_lookup found (per
// CPU, xlb_fib) rather than looking one up for every packet. An entry is
// looked up again once XLB_FIB_TTL_NS has passed, or at once when the
// generation in xlb_fib_gen moves: watchNextHops moves it whenever the
// kernel says a route, a rule, an address, a link or the address of a
// neighbour changed, so that a failover (a neighbour's new MAC, a route
// through another device) is followed within the time those messages take.

// nextHopGroups are the rtnetlink groups whose messages may change what
// bpf_fib_lookup answers for an IPv4 or IPv6 packet.
var nextHopGroups = []uint32{unix.RTNLGRP_LINK, unix.RTNLGRP_NEIGH, unix.RTNLGRP_IPV4_IFADDR,
	unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV4_RULE, unix.RTNLGRP_IPV6_IFADDR, unix.RTNLGRP_IPV6_ROUTE,
	unix.RTNLGRP_IPV6_RULE}

// nextHopRetry is how long the watcher waits after an error it cannot
// place (not a lost message) before it reads again.
const nextHopRetry = 100 * time.Millisecond

// nudValid are the neighbour states in which bpf_fib_lookup uses a
// neighbour's address (the kernel's NUD_VALID).
const nudValid = unix.NUD_PERMANENT | unix.NUD_NOARP | unix.NUD_REACHABLE | unix.NUD_PROBE | unix.NUD_STALE | unix.NUD_DELAY

type neighKey struct {
	ifindex uint32
	addr    netip.Addr
}

// neighTable is what the watcher last heard of each IP neighbour: its
// link-layer address while it is valid ("" when not). A neighbour's state
// moves all the time (reachable, stale, delay, probe) without changing
// what a lookup answers; only its address and its validity do.
type neighTable map[neighKey]string

// changes says whether msgs may change a next hop, and keeps t up to date.
func (t neighTable) changes(msgs []rtnetlink.Message, nl []netlink.Message) bool {
	changed := false
	for i, m := range msgs {
		switch nm := m.(type) {
		case *rtnetlink.NeighMessage:
			if t.neighChanges(nm, nl[i].Header.Type == unix.RTM_DELNEIGH) {
				changed = true
			}
		case *rtnetlink.LinkMessage, *rtnetlink.AddressMessage, *rtnetlink.RouteMessage, *rtnetlink.RuleMessage:
			changed = true
		}
	}
	return changed
}

func (t neighTable) neighChanges(m *rtnetlink.NeighMessage, deleted bool) bool {
	if (m.Family != unix.AF_INET && m.Family != unix.AF_INET6) || m.Attributes == nil {
		return false // bridge entries: not the data plane's
	}
	addr, ok := netip.AddrFromSlice(m.Attributes.Address)
	if !ok {
		return true
	}
	k := neighKey{m.Index, addr.Unmap()}
	old, known := t[k]
	if deleted {
		delete(t, k)
		return !known || old != ""
	}
	ll := ""
	if m.State&nudValid != 0 {
		ll = string(m.Attributes.LLAddress)
	}
	t[k] = ll
	// A neighbour heard of for the first time may have been looked up
	// before: only one seen before and unchanged is known to be the same.
	return !known || old != ll
}

// watchNextHops moves the data plane's next-hop generation whenever the
// kernel says something changed that a next hop depends on, until ctx ends.
// A message lost (the socket's buffer overran) counts as a change.
func (lb *LB) watchNextHops(ctx context.Context) {
	c, err := rtnetlink.Dial(nil)
	if err == nil {
		for _, g := range nextHopGroups {
			if err = c.JoinGroup(g); err != nil {
				c.Close()
				break
			}
		}
	}
	if err != nil {
		lb.log.Error("routed mode: not watching routes and neighbours: a next hop that changes is followed only when the data plane looks it up again (every second)", "err", err)
		return
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer func() {
		if stop() {
			c.Close()
		}
	}()
	changed := func() {
		if err := lb.dp.Objs.NextHopsChanged(); err != nil {
			lb.log.Warn("routed mode: telling the data plane its next hops changed", "err", err)
		}
	}
	// Whatever changed before we joined the groups.
	changed()
	neigh := neighTable{}
	logged := false
	for {
		msgs, nl, err := c.Receive()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			changed() // lost messages, or ones we could not read: anything may have changed
			if !errors.Is(err, unix.ENOBUFS) {
				if !logged {
					lb.log.Warn("routed mode: reading route and neighbour changes", "err", err)
					logged = true
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(nextHopRetry):
				}
			}
			continue
		}
		if neigh.changes(msgs, nl) {
			changed()
		}
	}
}
