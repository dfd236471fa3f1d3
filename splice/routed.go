package splice

import "github.com/xlb-lb/xlb/kern"

// flags are the data plane's config flags for c. Routed: translated packets
// leave through bpf_fib_lookup and XDP_TX/XDP_REDIRECT instead of going up
// this host's stack (which would then have to forward them). Unless
// KernelHandshake, the data plane answers clients' SYNs itself: no socket
// is made, accepted and destroyed per client. Unless PassHTTP10, HTTP/1.0
// requests without keep-alive reach their worker as keep-alive requests and
// the data plane ends the client's connection after the answer. Unless
// DropOnEmptyPool, client data that finds every pool empty is held; unless
// NoPoolAhead, clients' SYNs past the idle legs grow the pools.
func (c Config) flags() uint8 {
	var f uint8
	if c.Routed {
		f |= kern.ConfigRouted
	}
	if !c.KernelHandshake {
		f |= kern.ConfigAnswerSyn
	}
	if !c.PassHTTP10 {
		f |= kern.ConfigKeepHttp10
	}
	if !c.DropOnEmptyPool {
		f |= kern.ConfigHoldFirst
	}
	if !c.NoPoolAhead {
		f |= kern.ConfigSynDemand
	}
	return f
}
