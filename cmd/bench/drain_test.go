package main

import (
	"slices"
	"testing"
	"time"

	"github.com/tokenbucket/tb/bucket"
)

func TestUnusedWindows(t *testing.T) {
	sched, err := bucket.ParseSchedule("@every 1s", "")
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Date(2026, 1, 2, 3, 4, 5, 500_000_000, time.UTC)
	tick := func(s int) time.Time { return begin.Truncate(time.Second).Add(time.Duration(s) * time.Second) }
	// Windows 0 and 1 used up, 2 granting none, 3 granting 7, 4 the last (partial).
	grants := map[time.Time]int{tick(0): 10, tick(1): 10, tick(3): 7, tick(4): 2}
	got := unusedWindows(grants, sched, begin, 10)
	want := []windowLeft{{At: 1500 * time.Millisecond, Left: 10}, {At: 2500 * time.Millisecond, Left: 3}}
	if !slices.Equal(got, want) {
		t.Errorf("unusedWindows = %v, want %v", got, want)
	}
	if got := unusedWindows(nil, sched, begin, 10); got != nil {
		t.Errorf("unusedWindows of no grants = %v, want none", got)
	}
}
