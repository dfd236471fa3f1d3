package main

import (
	"strings"
	"testing"
	"time"
)

// TestClassify: which failures a kill explains.
func TestClassify(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	kills := []kill{{Worker: "w1", At: at(100), Back: at(102)}}
	for _, tc := range []struct {
		name string
		f    failure
		ok   bool
	}{
		{"in flight at the kill", failure{Start: at(99.9), End: at(100.1)}, true},
		{"sent while dead", failure{Start: at(101), End: at(101.2)}, true},
		{"sent as it came back", failure{Start: at(105), End: at(105.1)}, true},
		{"before the kill", failure{Start: at(90), End: at(99)}, false},
		{"long after", failure{Start: at(150), End: at(150.1)}, false},
		{"wrong answer in flight", failure{Start: at(99.9), End: at(100.1), Content: true}, false},
		{"keep-alive served by the killed worker", failure{Start: at(120), End: at(120.1), Reused: true, LastWorker: "w1", LastAt: at(99)}, true},
		{"keep-alive served by another worker", failure{Start: at(120), End: at(120.1), Reused: true, LastWorker: "w2", LastAt: at(99)}, false},
		{"keep-alive served after the kill", failure{Start: at(120), End: at(120.1), Reused: true, LastWorker: "w1", LastAt: at(110)}, false},
		{"keep-alive far too late", failure{Start: at(100 + keepAliveAfterKill.Seconds() + 1), End: at(200), Reused: true, LastWorker: "w1", LastAt: at(99)}, false},
		{"keep-alive wrong answer", failure{Start: at(120), End: at(120.1), Reused: true, LastWorker: "w1", LastAt: at(99), Content: true}, false},
	} {
		fs := []failure{tc.f}
		bad := classify(fs, kills)
		if fs[0].Tolerated != tc.ok || (bad == 0) != tc.ok {
			t.Errorf("%s: tolerated %v (%s), bad %d; want tolerated %v", tc.name, fs[0].Tolerated, fs[0].Why, bad, tc.ok)
		}
		if tc.ok && !strings.Contains(fs[0].Why, "w1") {
			t.Errorf("%s: why %q does not name the worker", tc.name, fs[0].Why)
		}
	}
	if bad := classify([]failure{{Start: at(1), End: at(2)}}, nil); bad != 1 {
		t.Errorf("a failure without kills: %d bad", bad)
	}
}
