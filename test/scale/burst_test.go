package main

import "testing"

// A run moved off a lost host ran its attempts on two hosts: failover, not a
// double placement; one attempt's containers on two hosts are.
func TestTallyCreatesTellsAMoveFromADoublePlacement(t *testing.T) {
	var res stepResult
	tallyCreates(map[string]map[string][]string{
		"scale/moved":   {"1": {"sim-1"}, "2": {"sim-2"}},
		"scale/twice":   {"1": {"sim-1", "sim-3"}},
		"scale/again":   {"1": {"sim-4", "sim-4"}},
		"scale/once":    {"1": {"sim-5"}},
		"scale/retried": {"1": {"sim-6"}, "2": {"sim-6"}},
	}, &res)
	if res.DoublePlaced != 1 || res.Recreated != 1 || res.Moved != 1 {
		t.Fatalf("placed twice %d, created again %d, moved %d; want 1, 1, 1", res.DoublePlaced, res.Recreated, res.Moved)
	}
}
