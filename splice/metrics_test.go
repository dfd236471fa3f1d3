package splice

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/xlb-lb/xlb/kern"
)

// TestWriteMetrics checks the exposition format: every sample belongs to a
// family announced by HELP and TYPE lines, counters end in _total, gauges do
// not, labels are quoted, and every data-plane counter is exported.
func TestWriteMetrics(t *testing.T) {
	lat := &workerLatency{}
	for _, d := range []float64{0.0002, 0.0002, 0.003, 0.07, 20} {
		lat.duration.observe(d)
		lat.ttfb.observe(d / 2)
	}
	st := Status{Pid: 1, Iface: "lo", Port: 8080, Clients: 3, Unspliced: 1, Goroutines: 12,
		Workers: []WorkerStatus{
			{Addr: "127.0.0.1:4171", State: "up", Weight: 2, Legs: 6, Bound: 2, Idle: 3, Cooling: 1, Binds: 7, Releases: 6, Requests: 42, BytesIn: 1000, BytesOut: 9000,
				latency: lat},
			{Addr: `odd"name\`, State: "down", Weight: 1},
		},
		Counters: map[string]uint64{},
		Legs:     map[string]int{"client/bound": 2, "worker/idle": 3, "bindings": 4},
	}
	for i := kern.Counter(0); i < kern.CounterMax; i++ {
		st.Counters[i.String()] = uint64(100 + i)
	}
	var b bytes.Buffer
	if err := WriteMetrics(&b, st); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	types := map[string]string{}
	helped := map[string]bool{}
	samples := map[string]string{} // name{labels} -> value
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		switch f := strings.Fields(line); {
		case strings.HasPrefix(line, "# HELP "):
			if len(f) < 4 {
				t.Errorf("HELP without text: %q", line)
			}
			helped[f[2]] = true
		case strings.HasPrefix(line, "# TYPE "):
			if len(f) != 4 || (f[3] != "counter" && f[3] != "gauge" && f[3] != "histogram") {
				t.Errorf("bad TYPE line %q", line)
				continue
			}
			if _, dup := types[f[2]]; dup {
				t.Errorf("family %s announced twice", f[2])
			}
			types[f[2]] = f[3]
		default:
			i := strings.LastIndexByte(line, ' ')
			if i < 0 {
				t.Errorf("bad sample line %q", line)
				continue
			}
			key, name := line[:i], line[:i]
			if j := strings.IndexByte(name, '{'); j >= 0 {
				name = name[:j]
				if !strings.HasSuffix(key, "}") {
					t.Errorf("unterminated labels: %q", line)
				}
			}
			if !strings.HasPrefix(name, "xlb_") {
				t.Errorf("sample %q lacks the xlb_ prefix", line)
			}
			family := name
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if f, ok := strings.CutSuffix(name, suf); ok && types[f] == "histogram" {
					family = f
				}
			}
			typ, ok := types[family]
			if typ == "histogram" && family == name {
				t.Errorf("histogram sample %q is none of _bucket, _sum, _count", line)
			}
			name = family
			if !ok || !helped[name] {
				t.Errorf("sample %q before its HELP and TYPE lines", line)
			}
			if (typ == "counter") != strings.HasSuffix(name, "_total") {
				t.Errorf("%s is a %s: counters, and only they, end in _total", name, typ)
			}
			samples[key] = line[i+1:]
		}
	}
	want := map[string]string{
		// 0.2 ms twice, 3 ms, 70 ms, 20 s: cumulative buckets, +Inf all.
		`xlb_request_duration_seconds_bucket{worker="127.0.0.1:4171",le="0.0001"}`:   "0",
		`xlb_request_duration_seconds_bucket{worker="127.0.0.1:4171",le="0.00025"}`:  "2",
		`xlb_request_duration_seconds_bucket{worker="127.0.0.1:4171",le="0.005"}`:    "3",
		`xlb_request_duration_seconds_bucket{worker="127.0.0.1:4171",le="0.1"}`:      "4",
		`xlb_request_duration_seconds_bucket{worker="127.0.0.1:4171",le="10"}`:       "4",
		`xlb_request_duration_seconds_bucket{worker="127.0.0.1:4171",le="+Inf"}`:     "5",
		`xlb_request_duration_seconds_count{worker="127.0.0.1:4171"}`:                "5",
		`xlb_request_duration_seconds_sum{worker="127.0.0.1:4171"}`:                  "20.0734",
		`xlb_time_to_first_byte_seconds_bucket{worker="127.0.0.1:4171",le="0.0001"}`: "2",
		`xlb_client_legs_open`: "3",
		`xlb_unspliced_total`:  "1",
		`xlb_goroutines`:       "12",
		`xlb_worker_requests_total{worker="127.0.0.1:4171"}`:       "42",
		`xlb_worker_request_bytes_total{worker="127.0.0.1:4171"}`:  "1000",
		`xlb_worker_response_bytes_total{worker="127.0.0.1:4171"}`: "9000",
		`xlb_worker_releases_total{worker="127.0.0.1:4171"}`:       "6",
		`xlb_worker_binds_total{worker="127.0.0.1:4171"}`:          "7",
		`xlb_worker_legs{worker="127.0.0.1:4171",state="idle"}`:    "3",
		`xlb_worker_legs{worker="127.0.0.1:4171",state="bound"}`:   "2",
		`xlb_worker_legs{worker="127.0.0.1:4171",state="cooling"}`: "1",
		`xlb_worker_weight{worker="127.0.0.1:4171"}`:               "2",
		`xlb_worker_up{worker="127.0.0.1:4171"}`:                   "1",
		`xlb_worker_up{worker="odd\"name\\"}`:                      "0",
		`xlb_worker_state{worker="odd\"name\\",state="down"}`:      "1",
		`xlb_verdicts_total{verdict="drop"}`:                       "101",
		`xlb_drops_total{reason="no_idle_leg"}`:                    "116",
		`xlb_dataplane_remix_total`:                                "130",
		`xlb_legs{kind="client",state="bound"}`:                    "2",
		`xlb_bindings`:                                             "4",
	}
	for k, v := range want {
		if samples[k] != v {
			t.Errorf("%s = %q, want %q", k, samples[k], v)
		}
	}
	// Every data-plane counter is exported, with its own help.
	for i := kern.Counter(0); i < kern.CounterMax; i++ {
		if CounterHelp[i] == "" {
			t.Errorf("counter %s has no help text", i)
		}
		if !strings.Contains(text, `"`+i.String()+`"} `) && !strings.Contains(text, "xlb_dataplane_"+i.String()+"_total ") {
			t.Errorf("counter %s is not exported", i)
		}
	}
}

func TestHistogramQuantile(t *testing.T) {
	var h histogram
	if q := h.quantile(0.5); !math.IsNaN(q) {
		t.Errorf("empty: %v", q)
	}
	for range 100 {
		h.observe(0.003) // in (0.0025, 0.005]
	}
	if q := h.quantile(0.5); q <= 0.0025 || q > 0.005 {
		t.Errorf("p50 of 3 ms: %v", q)
	}
	h.observe(30) // above the last bound
	if q := h.quantile(1); q != 10 {
		t.Errorf("p100 past the last bound: %v", q)
	}
	if q := h.quantile(0.99); q > 0.005 {
		t.Errorf("p99 of 100 at 3 ms and one at 30 s: %v", q)
	}
}

func TestParseLogRequests(t *testing.T) {
	for in, want := range map[string]uint32{"all": 1, "off": 0, "1": 1, "100": 100} {
		if got, err := ParseLogRequests(in); err != nil || got != want {
			t.Errorf("%q: %d, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "0", "-1", "some", "4294967296"} {
		if _, err := ParseLogRequests(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
