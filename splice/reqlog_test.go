package splice

import (
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/xlb-lb/xlb/kern"
)

// TestAppendLine: an access log line is valid JSON with every field, for
// either family, with and without an answer and a pin.
func TestAppendLine(t *testing.T) {
	start := time.Date(2026, 12, 3, 9, 31, 59, 225377877, time.UTC)
	for _, tc := range []struct {
		rec  kern.ReqRecord
		want map[string]any
	}{
		{kern.ReqRecord{
			Client: kern.LegKey{Peer: netip.MustParseAddrPort("198.51.100.7:44074"), Local: netip.MustParseAddrPort("10.0.0.1:80")},
			WLeg:   kern.LegKey{Peer: netip.MustParseAddrPort("10.0.1.1:8080"), Local: netip.MustParseAddrPort("10.0.1.9:59275")},
			End:    kern.ReqEndNext, Request: 2, ReqBytes: 88, RespBytes: 5216, FirstUs: 306, LastUs: 326},
			map[string]any{"time": "2026-12-03T09:31:59.225377877Z", "client": "198.51.100.7:44074", "worker": "10.0.1.1:8080",
				"worker_conn": 59275.0, "request": 2.0, "request_bytes": 88.0, "response_bytes": 5216.0,
				"ttfb_ms": 0.305, "duration_ms": 0.325, "end": "next"}},
		{kern.ReqRecord{
			Client: kern.LegKey{Peer: netip.MustParseAddrPort("[2001:db8::7]:5000"), Local: netip.MustParseAddrPort("[2001:db8::1]:443")},
			WLeg:   kern.LegKey{Peer: netip.MustParseAddrPort("[2001:db8::2]:8443"), Local: netip.MustParseAddrPort("[2001:db8::1]:40000")},
			End:    kern.ReqEndReset, Pin: kern.PinTLS, Request: 1, ReqBytes: 517},
			map[string]any{"time": "2026-12-03T09:31:59.225377877Z", "client": "[2001:db8::7]:5000", "worker": "[2001:db8::2]:8443",
				"worker_conn": 40000.0, "request": 1.0, "request_bytes": 517.0, "response_bytes": 0.0,
				"ttfb_ms": nil, "duration_ms": nil, "end": "reset", "pinned": "tls"}},
	} {
		line := appendLine(nil, &tc.rec, start.UnixNano())
		if line[len(line)-1] != '\n' {
			t.Errorf("%q: no newline", line)
		}
		var got map[string]any
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if len(got) != len(tc.want) {
			t.Errorf("%q: %d fields, want %d", line, len(got), len(tc.want))
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Errorf("%q: %s is %v, want %v", line, k, got[k], v)
			}
		}
	}
}

func BenchmarkAppendLine(b *testing.B) {
	rec := kern.ReqRecord{
		Client: kern.LegKey{Peer: netip.MustParseAddrPort("198.51.100.7:44074")},
		WLeg:   kern.LegKey{Peer: netip.MustParseAddrPort("10.0.1.1:8080"), Local: netip.MustParseAddrPort("10.0.1.9:59275")},
		End:    kern.ReqEndNext, Request: 2, ReqBytes: 88, RespBytes: 5216, FirstUs: 306, LastUs: 326}
	var buf []byte
	for b.Loop() {
		buf = appendLine(buf[:0], &rec, 1764754319225377877)
	}
}
