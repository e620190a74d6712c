package main

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"

	"github.com/google/pprof/profile"
)

// heapSummary is what the manager's heap holds, from its profile.
type heapSummary struct {
	InUseMiB float64       `json:"inuse_mib"`
	Top      []heapHolding `json:"top"`
}

// heapHolding is the memory in use allocated by one function (flat).
type heapHolding struct {
	Function string  `json:"function"`
	MiB      float64 `json:"mib"`
}

// mib is a mebibyte in bytes.
const mib = 1 << 20

// heapTop is how many functions the summary names.
const heapTop = 12

// heapProfile reads the manager's heap profile after a collection
// (/debug/pprof/heap?gc=1) and sums its in-use bytes by allocating function.
func heapProfile(pprofURL string) (heapSummary, error) {
	body, err := scrape(pprofURL + "heap?gc=1")
	if err != nil {
		return heapSummary{}, err
	}
	p, err := profile.Parse(bytes.NewReader([]byte(body)))
	if err != nil {
		return heapSummary{}, fmt.Errorf("parsing the heap profile: %w", err)
	}
	index := slices.IndexFunc(p.SampleType, func(t *profile.ValueType) bool { return t.Type == "inuse_space" })
	if index < 0 {
		return heapSummary{}, fmt.Errorf("the heap profile has no inuse_space")
	}
	byFunction := map[string]int64{}
	var total int64
	for _, s := range p.Sample {
		v := s.Value[index]
		total += v
		if len(s.Location) > 0 && len(s.Location[0].Line) > 0 {
			byFunction[s.Location[0].Line[0].Function.Name] += v
		}
	}
	out := heapSummary{InUseMiB: float64(total) / mib}
	for fn, v := range byFunction {
		out.Top = append(out.Top, heapHolding{fn, float64(v) / mib})
	}
	slices.SortFunc(out.Top, func(a, b heapHolding) int { return cmp.Compare(b.MiB, a.MiB) })
	out.Top = out.Top[:min(len(out.Top), heapTop)]
	return out, nil
}
