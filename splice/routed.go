package splice

import "github.com/xlb-lb/xlb/kern"

// routedFlag is the data plane's config flag for Config.Routed: translated
// packets leave through bpf_fib_lookup and XDP_TX/XDP_REDIRECT instead of
// going up this host's stack (which would then have to forward them).
func (c Config) routedFlag() uint8 {
	if c.Routed {
		return kern.ConfigRouted
	}
	return 0
}
