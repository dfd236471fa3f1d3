package main

// The verdict on a sampled series: does it grow without bound? A series
// that steps up once (a worker added, a pool that fills, the heap of a
// process that took over with --reuse) and stays there is not a leak; one
// that is still growing at the end of the run is.

import (
	"fmt"
	"math"
)

// warmupShare of the samples, from the start, is left out of the verdict:
// pools fill, heaps and maps reach their working size.
const warmupShare = 0.2

// tolerance is how much a series may grow, Abs plus Rel times its level
// in the first third (a count of legs scales with the traffic, a process's
// descriptors less so).
type tolerance struct {
	Abs float64 `json:"abs"`
	Rel float64 `json:"rel"`
}

func (t tolerance) of(level float64) float64 { return t.Abs + t.Rel*math.Abs(level) }

// verdict is one series judged: the means of its thirds after the warm-up
// (A, B, C) and of the halves of the last third (C1, C2).
type verdict struct {
	Series string  `json:"series"`
	Unit   string  `json:"unit"`
	N      int     `json:"n"` // samples judged
	First  float64 `json:"first"`
	Last   float64 `json:"last"`
	Max    float64 `json:"max"`
	A      float64 `json:"a"`
	B      float64 `json:"b"`
	C      float64 `json:"c"`
	C1     float64 `json:"c1"`
	C2     float64 `json:"c2"`
	Tol    float64 `json:"tol"`
	Grows  bool    `json:"grows"`
	Why    string  `json:"why"`
}

// minJudged is the fewest samples, after the warm-up, a verdict needs: two
// per sixth.
const minJudged = 12

// judge decides whether values (in time order, one per sample) grow
// without bound. The samples after the warm-up are split into thirds A, B,
// C and C into halves C1, C2; the series grows only if C−A > tol,
// C−B > tol/2 and C2−C1 > tol/4: it is higher at the end than at the
// start, than in the middle, and still rising within the last third. A
// step that plateaus fails the last two; noise within tol fails the first.
func judge(name, unit string, values []float64, tol tolerance) verdict {
	v := verdict{Series: name, Unit: unit}
	skip := int(math.Ceil(float64(len(values)) * warmupShare))
	xs := values[skip:]
	v.N = len(xs)
	if len(xs) < minJudged {
		v.Why = fmt.Sprintf("too few samples (%d after the warm-up, %d needed)", len(xs), minJudged)
		v.Grows = true // a run too short to judge proves nothing
		return v
	}
	v.First, v.Last = xs[0], xs[len(xs)-1]
	v.Max = xs[0]
	for _, x := range xs {
		v.Max = max(v.Max, x)
	}
	n := len(xs)
	a, b := n/3, 2*n/3
	c := xs[b:]
	v.A, v.B, v.C = mean(xs[:a]), mean(xs[a:b]), mean(c)
	v.C1, v.C2 = mean(c[:len(c)/2]), mean(c[len(c)/2:])
	v.Tol = tol.of(v.A)
	up, mid, end := v.C-v.A, v.C-v.B, v.C2-v.C1
	v.Grows = up > v.Tol && mid > v.Tol/2 && end > v.Tol/4
	switch {
	case v.Grows:
		v.Why = fmt.Sprintf("still growing: C−A %s > %s, C−B %s > %s, C2−C1 %s > %s",
			unitNum(up, unit), unitNum(v.Tol, unit), unitNum(mid, unit), unitNum(v.Tol/2, unit), unitNum(end, unit), unitNum(v.Tol/4, unit))
	case up <= v.Tol:
		v.Why = fmt.Sprintf("bounded: C−A %s ≤ %s", unitNum(up, unit), unitNum(v.Tol, unit))
	case mid <= v.Tol/2:
		v.Why = fmt.Sprintf("stepped, then flat: C−B %s ≤ %s", unitNum(mid, unit), unitNum(v.Tol/2, unit))
	default:
		v.Why = fmt.Sprintf("stepped, flat at the end: C2−C1 %s ≤ %s", unitNum(end, unit), unitNum(v.Tol/4, unit))
	}
	return v
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}
