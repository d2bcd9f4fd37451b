package workflows

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tokenbucket/tb/bucket"
)

// TestBucketCountsItsProcesses: answers tell how many processes sent batches
// within ProcessWindow: an accepted answer (recorded) those whose batches
// were accepted, a refusal those refused too; a batch without a process, or
// with an ID too long, counts nobody.
func TestBucketCountsItsProcesses(t *testing.T) {
	h := newHarness(t)
	batch := func(process string, reqs ...AcquireRequest) AcquireBatch {
		return AcquireBatch{Requests: reqs, Process: process}
	}
	var got []*updateResult
	at := func(d time.Duration, id string, b AcquireBatch) {
		h.at(d, func() { got = append(got, h.update(AcquireUpdate, id, b)) })
	}
	at(100*time.Millisecond, "u1", batch("p1", req("a", 1)))
	at(200*time.Millisecond, "u2", batch("p2", req("b", 1)))
	at(300*time.Millisecond, "u3", batch("p1", req("c", 1)))
	at(400*time.Millisecond, "u4", batch("", req("d", 1)))
	at(500*time.Millisecond, "u5", batch(strings.Repeat("x", MaxIDLength+1), req("e", 1)))
	at(600*time.Millisecond, "u6", batch("p3", req("f", 6))) // refused: 5 tokens left
	at(ProcessWindow+250*time.Millisecond, "u7", batch("p4", req("g", 1)))
	h.run(BucketInput{Spec: bucket.Spec{Name: "api", Schedule: "@every 1s", Amount: 10, Maximum: 10}}, ProcessWindow+time.Second)

	// The refusal counts p3 with p1 and p2. At 60.25 s, p2 (last seen at
	// 0.2 s) is out of the window, p1 (0.3 s) in it, with p4; p3's batch was
	// refused, and an accepted answer does not count it.
	want := []int{1, 2, 2, 2, 2, 3, 2}
	for i, r := range got {
		resp := r.resp
		if r.rejected != nil {
			d, ok := rateLimited(r.rejected)
			if !ok {
				t.Fatalf("batch %d refused: %v", i+1, r.rejected)
			}
			resp = d
		}
		if resp.Processes != want[i] {
			t.Errorf("batch %d: %d processes counted, want %d", i+1, resp.Processes, want[i])
		}
	}
	if len(got) != len(want) || got[5].rejected == nil {
		t.Errorf("%d answers; the 6th refused: %v", len(got), got[5].rejected)
	}
}

// TestFleetStaysBounded: a caller naming a new process with every batch
// makes the count no larger than MaxProcessesSeen, forgetting the process
// seen longest ago, whatever the map's order.
func TestFleetStaysBounded(t *testing.T) {
	var f fleet
	now := t0
	for i := range 3 * MaxProcessesSeen {
		now = now.Add(time.Millisecond)
		f.see(fmt.Sprint("p", i), now)
		if n := f.count(now); n > MaxProcessesSeen {
			t.Fatalf("after %d processes, %d counted", i+1, n)
		}
	}
	if len(f.seen) != MaxProcessesSeen {
		t.Errorf("%d processes held, want %d", len(f.seen), MaxProcessesSeen)
	}
	for i := 2 * MaxProcessesSeen; i < 3*MaxProcessesSeen; i++ {
		if _, ok := f.seen[fmt.Sprint("p", i)]; !ok {
			t.Fatalf("p%d, among the latest %d, was forgotten", i, MaxProcessesSeen)
		}
	}
	// Seen together: the least ID goes first.
	var g fleet
	for i := range MaxProcessesSeen {
		g.see(fmt.Sprintf("q%03d", i), t0)
	}
	g.see("new", t0)
	if _, ok := g.seen["q000"]; ok || len(g.seen) != MaxProcessesSeen {
		t.Errorf("among processes seen at once, q000 should go first: %d held, q000 kept %v", len(g.seen), ok)
	}
	// Out of the window, all go at once.
	g.see("late", t0.Add(ProcessWindow+time.Second))
	if n := g.count(t0.Add(ProcessWindow + time.Second)); n != 1 || len(g.seen) != 1 {
		t.Errorf("after the window: %d counted, %d held; want 1", n, len(g.seen))
	}
}
