// Package stats summarises benchmark samples: percentiles by nearest rank,
// the interquartile spread, and ratios to a baseline. It is plain
// arithmetic with no I/O, so the bench's numbers can be checked by hand.
package stats

import (
	"math"
	"slices"
	"time"
)

// Summary describes one sample set. Values are in the unit the samples
// were given in (seconds for durations, see Durations).
type Summary struct {
	N    int     `json:"n"`
	Min  float64 `json:"min"`
	P10  float64 `json:"p10"`
	P25  float64 `json:"p25"`
	P50  float64 `json:"p50"`
	P75  float64 `json:"p75"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// Of summarises xs (which it does not modify). An empty set gives N == 0
// and zeros.
func Of(xs []float64) Summary {
	if len(xs) == 0 {
		return Summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	var sum float64
	for _, x := range s {
		sum += x
	}
	return Summary{
		N: len(s), Min: s[0], Max: s[len(s)-1], Mean: sum / float64(len(s)),
		P10: Percentile(s, 10), P25: Percentile(s, 25), P50: Percentile(s, 50),
		P75: Percentile(s, 75), P90: Percentile(s, 90), P99: Percentile(s, 99),
	}
}

// Durations summarises durations in seconds.
func Durations(ds []time.Duration) Summary {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = d.Seconds()
	}
	return Of(xs)
}

// Percentile is the nearest-rank percentile p (0-100] of sorted xs: the
// smallest sample with at least p% of the samples at or below it. With 30
// samples p99 is the maximum; the bench says so rather than interpolate.
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = max(1, min(rank, len(sorted)))
	return sorted[rank-1]
}

// Spread is the interquartile range relative to the median, e.g. 0.12 for
// a middle half that spans 12% of the median. 0 when the median is 0.
func (s Summary) Spread() float64 {
	if s.P50 == 0 {
		return 0
	}
	return (s.P75 - s.P25) / s.P50
}

// Ratio is a/b, or 0 when b is 0.
func Ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}
