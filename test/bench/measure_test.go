package main

import (
	"math"
	"testing"
)

// A histogram's quantiles are read as Prometheus's histogram_quantile reads
// them: linearly within the bucket that holds the rank, the last finite
// bound past it.
func TestHistogramQuantileInterpolatesWithinItsBucket(t *testing.T) {
	h := histogram{buckets: map[float64]float64{0.01: 0, 0.1: 50, 1: 90, math.Inf(1): 100}, count: 100}
	for q, want := range map[float64]float64{0.25: 0.055, 0.5: 0.1, 0.7: 0.55, 0.99: 1} {
		if got := h.quantile(q); math.Abs(got-want) > 1e-9 {
			t.Errorf("quantile(%g) = %g, want %g", q, got, want)
		}
	}
}
