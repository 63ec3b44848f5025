package stats

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	xs := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, tc := range []struct {
		name string
		p    float64
		want float64
	}{
		{"p10", 10, 1}, {"p50", 50, 5}, {"p90", 90, 9}, {"p99", 99, 10}, {"p100", 100, 10}, {"p0", 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(xs, tc.p); got != tc.want {
				t.Errorf("Percentile(1..10, %v) = %v, want %v", tc.p, got, tc.want)
			}
		})
	}
}

func TestOf(t *testing.T) {
	s := Durations([]time.Duration{3 * time.Second, time.Second, 2 * time.Second, 4 * time.Second})
	if s.N != 4 || s.Min != 1 || s.Max != 4 || s.P50 != 2 || s.Mean != 2.5 {
		t.Errorf("got %+v, want n=4 min=1 max=4 p50=2 mean=2.5", s)
	}
	if got, want := s.Spread(), (3.0-1.0)/2.0; got != want {
		t.Errorf("Spread() = %v, want %v", got, want)
	}
	if (Summary{}).Spread() != 0 || Of(nil).N != 0 {
		t.Error("empty summary: want zeros")
	}
	if Ratio(1, 0) != 0 || Ratio(3, 2) != 1.5 {
		t.Error("Ratio: want 0 for a zero baseline and a/b otherwise")
	}
}
