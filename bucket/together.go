package bucket

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"
)

// ScheduleStartRate is how many workflows Temporal's Schedules start a second
// per namespace by default (dynamic config
// worker.schedulerNamespaceStartWorkflowRPS). Every refill is one such start,
// so more buckets than this ticking in the same second get late refills.
const ScheduleStartRate = 30

// Together is the second in which the most buckets tick.
type Together struct {
	At      time.Time // the earliest such second
	Buckets int
}

func (t Together) String() string {
	return fmt.Sprintf("%d buckets refill in the same second (first at %s)", t.Buckets, t.At.UTC().Format(time.RFC3339))
}

// TickTogether finds the second in (from, until) in which the most of specs
// tick. It counts at most ticksPerBucket ticks of each bucket, then recounts
// the busiest seconds exactly, so a bucket ticking more often than that still
// counts where it ticks. Specs whose schedule does not parse are skipped:
// validation reports them.
func TickTogether(specs []Spec, from, until time.Time, ticksPerBucket int) Together {
	var scheds []*Schedule
	for _, s := range specs {
		if sched, err := s.ParseSchedule(); err == nil {
			scheds = append(scheds, sched)
		}
	}
	counts := map[int64]int{}
	for _, sched := range scheds {
		t := from
		for range ticksPerBucket {
			if t = sched.Next(t); t.IsZero() || !t.Before(until) {
				break
			}
			counts[t.Unix()]++
		}
	}
	candidates := slices.Collect(maps.Keys(counts))
	slices.SortFunc(candidates, func(a, b int64) int {
		return cmp.Or(cmp.Compare(counts[b], counts[a]), cmp.Compare(a, b))
	})
	var best Together
	for _, sec := range candidates[:min(len(candidates), recount)] {
		at := time.Unix(sec, 0).UTC()
		n := 0
		for _, sched := range scheds {
			if sched.Next(at.Add(-time.Second)).Equal(at) {
				n++
			}
		}
		if n > best.Buckets || n == best.Buckets && at.Before(best.At) {
			best = Together{At: at, Buckets: n}
		}
	}
	return best
}

// recount is how many of the busiest seconds TickTogether counts exactly.
const recount = 64
