package main

import (
	"math/rand/v2"
	"testing"
)

// TestJudge: synthetic series of 180 samples (30 minutes every 10 s)
// around a level of 1000 with a tolerance of 50.
func TestJudge(t *testing.T) {
	const n = 180
	tol := tolerance{Abs: 50}
	rng := rand.New(rand.NewPCG(1, 2))
	series := func(f func(i int) float64) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			xs[i] = f(i)
		}
		return xs
	}
	noise := func() float64 { return (rng.Float64()*2 - 1) * 40 }
	for _, tc := range []struct {
		name  string
		xs    []float64
		grows bool
	}{
		{"flat", series(func(int) float64 { return 1000 }), false},
		{"noise", series(func(int) float64 { return 1000 + noise() }), false},
		{"spikes", series(func(i int) float64 {
			if i%17 == 0 {
				return 5000
			}
			return 1000
		}), false},
		// A leak of 1 per sample: +120 over the judged 144 samples.
		{"leak", series(func(i int) float64 { return 1000 + float64(i) }), true},
		{"leak in noise", series(func(i int) float64 { return 1000 + 2*float64(i) + noise() }), true},
		// A slow leak under the tolerance passes: the tolerance is what
		// the run can tell.
		{"slow leak", series(func(i int) float64 { return 1000 + float64(i)/10 }), false},
		// Steps that plateau: in the middle, and late (the last event of a
		// run is at 72%: a step within the last third's first half would
		// look like growth).
		{"step", series(func(i int) float64 {
			if i > n/2 {
				return 1500
			}
			return 1000
		}), false},
		{"late step", series(func(i int) float64 {
			if i > n*70/100 {
				return 1500
			}
			return 1000
		}), false},
		{"step then leak", series(func(i int) float64 {
			if i > n/2 {
				return 1500 + 4*float64(i-n/2)
			}
			return 1000
		}), true},
		// Growth that stopped in the last third's first half.
		{"levelled off", series(func(i int) float64 { return 1000 + 2*float64(min(i, n*82/100)) }), false},
		{"falling", series(func(i int) float64 { return 2000 - 3*float64(i) }), false},
	} {
		v := judge(tc.name, "", tc.xs, tol)
		if v.Grows != tc.grows {
			t.Errorf("%s: grows %v, want %v (%s; A %.1f B %.1f C %.1f C1 %.1f C2 %.1f)", tc.name, v.Grows, tc.grows, v.Why, v.A, v.B, v.C, v.C1, v.C2)
		}
	}
	if v := judge("short", "", make([]float64, 10), tol); !v.Grows {
		t.Errorf("10 samples judged: %s", v.Why)
	}
	if got := (tolerance{Abs: 10, Rel: 0.5}).of(-100); got != 60 {
		t.Errorf("tolerance of -100: %v, want 60", got)
	}
}
