package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/workflows"
)

// TestFloodedBucketKeepsAnswering floods a daily bucket with what a hostile
// or careless caller can send — batches of thousands of lease requests,
// request and refill IDs a kilobyte long — past every bound the bucket keeps,
// then lets it continue as new. What it carries must stay small enough for
// Temporal to accept, so the next run answers.
func TestFloodedBucketKeepsAnswering(t *testing.T) {
	s := testserver.NewServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := bucket.Spec{Name: "flooded", Schedule: "@daily", Amount: 10_000_000, Maximum: 10_000_000}
	const floods = 7
	id := workflows.BucketID(spec.Name)
	// The run continues as new after the floods and one more update.
	if _, err := s.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue},
		workflows.BucketWorkflowType, workflows.BucketInput{Spec: spec, MaxUpdatesPerRun: floods + 2}); err != nil {
		t.Fatal(err)
	}
	// Refills with IDs too long to remember; a refill also ends the leases lent before it, so these come first.
	for i := range 20 {
		sig := workflows.Refill{ID: fmt.Sprintf("%02d%s", i, strings.Repeat("y", 1000)), Amount: 1}
		if err := s.Client.SignalWorkflow(ctx, id, "", workflows.RefillSignal, sig); err != nil {
			t.Fatal(err)
		}
	}
	for f := range floods {
		reqs := []workflows.AcquireRequest{{ID: fmt.Sprint("need-", f), Cost: 1}}
		for i := range workflows.MaxBatch - 1 {
			reqs = append(reqs, workflows.AcquireRequest{ID: fmt.Sprintf("lease-%d-%d", f, i), Cost: 1, Optional: true})
		}
		if _, err := sendAcquire(ctx, s.Client, spec.Name, fmt.Sprint("flood-", f), workflows.AcquireBatch{Requests: reqs}); err != nil {
			t.Fatalf("flood %d: %v", f, err)
		}
	}
	long := workflows.AcquireBatch{}
	for i := range 400 {
		long.Requests = append(long.Requests, workflows.AcquireRequest{ID: fmt.Sprintf("%04d%s", i, strings.Repeat("x", 1000)), Cost: 1})
	}
	long.Requests = append(long.Requests, workflows.AcquireRequest{ID: "short", Cost: 1})
	if _, err := sendAcquire(ctx, s.Client, spec.Name, "long-ids", long); err != nil {
		t.Fatalf("long ids: %v", err)
	}
	// The last update of the run.
	if _, err := sendAcquire(ctx, s.Client, spec.Name, "last", workflows.AcquireBatch{Requests: []workflows.AcquireRequest{{ID: "last", Cost: 1}}}); err != nil {
		t.Fatal(err)
	}
	st := waitRun(t, s, spec.Name, 1)
	if len(st.Leases) > bucket.MaxLeases {
		t.Errorf("the new run carries %d leases, more than %d", len(st.Leases), bucket.MaxLeases)
	}
	// It answers: a query (above), an acquire, and a refill.
	acq, err := interceptor.NewAcquirer(s.Client, interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace()})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := acq.Acquire(ctx, spec.Name, "after", 1); err != nil || !d.Granted {
		t.Fatalf("acquire after the flood: %+v, %v", d, err)
	}
	probeRefill(t, s, spec.Name, 1)
	// Its workflow tasks never failed.
	it := s.Client.GetWorkflowHistory(ctx, id, "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		if f := e.GetWorkflowTaskFailedEventAttributes(); f != nil {
			t.Fatalf("a workflow task failed: %v", f.GetFailure().GetMessage())
		}
	}
	t.Logf("run %d: %d tokens, %d granted, %d leases carried", st.Run, st.Tokens, st.Granted, len(st.Leases))
}

// TestFutureTicksAreIgnored: a backfill of the refill Schedule over a future
// range and a hand-sent refill from the year 2200 reach the bucket; neither
// may push its forecasts past its real next refill.
func TestFutureTicksAreIgnored(t *testing.T) {
	s := testserver.NewServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := bucket.Spec{Name: "future", Schedule: "@every 1s", Amount: 5, Maximum: 5}
	s.Sync(t, spec)
	id := workflows.BucketID(spec.Name)

	// A month ahead, three ticks.
	start := time.Now().Add(30 * 24 * time.Hour).Truncate(time.Second)
	h := s.Client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(spec.Name))
	if err := h.Backfill(ctx, client.ScheduleBackfillOptions{Backfill: []client.ScheduleBackfill{{
		Start: start, End: start.Add(2 * time.Second), Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL,
	}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Client.SignalWorkflow(ctx, id, "", workflows.RefillSignal,
		workflows.Refill{ID: "2200", Tick: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		st, err := s.State(ctx, spec.Name)
		return err == nil && st.Ignored >= 3, fmt.Sprintf("%d refills ignored (%v), want the backfilled ones and the hand-sent one", st.Ignored, err)
	})

	// Empty the bucket: a denied caller is told to come back at the next tick.
	acq, err := interceptor.NewAcquirer(s.Client, interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace()})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		d, err := acq.Acquire(ctx, spec.Name, fmt.Sprint("r", i), 5)
		if err != nil {
			t.Fatal(err)
		}
		if !d.Granted {
			if d.RetryAfter > time.Second+bucket.MaxRefillLag+bucket.LateRefillGrace {
				t.Fatalf("denied with a retry-after of %v; the next tick is at most a second away", d.RetryAfter)
			}
			break
		}
		if i > 20 {
			t.Fatal("never denied")
		}
	}
	st, err := s.State(ctx, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if st.LastTick.After(time.Now().Add(bucket.TickAllowance)) || time.Until(st.NextRefill) > time.Second+bucket.MaxRefillLag+bucket.LateRefillGrace {
		t.Errorf("last tick %v, next refill %v: the future reached the forecast", st.LastTick, st.NextRefill)
	}
}

// TestDenialsAreCountedOnce: callers on three processes hammer a small
// bucket; once they stop, the bucket's Denied count equals the tokens the
// callers were refused — those the validator turned away included, which
// reach the bucket in a later batch or, when none comes, in a report.
func TestDenialsAreCountedOnce(t *testing.T) {
	s := testserver.NewServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := bucket.Spec{Name: "counted", Schedule: "@every 1s", Amount: 2, Maximum: 2}
	s.Sync(t, spec)
	var (
		mu      sync.Mutex
		granted int64
		denied  int64
		wg      sync.WaitGroup
	)
	stop := time.Now().Add(3 * time.Second)
	for p := range 3 {
		acq, err := interceptor.NewAcquirer(s.NewClient(), interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace()})
		if err != nil {
			t.Fatal(err)
		}
		for c := range 10 {
			wg.Go(func() {
				for i := 0; time.Now().Before(stop); i++ {
					d, err := acq.Acquire(ctx, spec.Name, fmt.Sprintf("p%d-c%d-%d", p, c, i), 1)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					if d.Granted {
						granted++
					} else {
						denied++
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if denied == 0 {
		t.Fatal("no caller was denied")
	}
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		st, err := s.State(ctx, spec.Name)
		if err != nil {
			return false, err.Error()
		}
		if st.Denied > denied || st.Granted != granted {
			t.Fatalf("the bucket counts %d denied and %d granted; callers saw %d and %d", st.Denied, st.Granted, denied, granted)
		}
		return st.Denied == denied, fmt.Sprintf("the bucket counts %d denied tokens, callers saw %d", st.Denied, denied)
	})
	t.Logf("%d granted, %d denied, counted alike", granted, denied)
}
