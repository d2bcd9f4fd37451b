package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/interceptor"
)

const stackedQueue = "stacked"

// stackedRuns records, for each body run, the refill each grant drew on.
type stackedRuns struct {
	mu   sync.Mutex
	runs [][]interceptor.Grant
}

func (r *stackedRuns) CallBoth(ctx context.Context) error {
	gs := interceptor.GrantsFromContext(ctx)
	if len(gs) != 2 {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("ran with %d grants", len(gs)), "NoGrant", nil)
	}
	r.mu.Lock()
	r.runs = append(r.runs, gs)
	r.mu.Unlock()
	return nil
}

func callBothOnce(ctx workflow.Context) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		ScheduleToCloseTimeout: 3 * time.Minute,
		StartToCloseTimeout:    30 * time.Second,
		RetryPolicy:            &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 0},
	})
	return workflow.ExecuteActivity(ctx, "CallBoth").Get(ctx, nil)
}

// TestStackedBucketsHoldEveryWindow: one activity draws from a per-second
// bucket and a per-10-seconds bucket, on 3 workers. No refill of either is
// drawn on by more runs than it holds; each bucket lost, net of refunds,
// exactly the tokens of the runs; every workflow completes.
func TestStackedBucketsHoldEveryWindow(t *testing.T) {
	const workflows = 24
	s := testserver.NewServer(t)
	perSecond := bucket.Spec{Name: "per_second", Schedule: "@every 1s", Amount: 3, Maximum: 3}
	perTen := bucket.Spec{Name: "per_10s", Schedule: "@every 10s", Amount: 10, Maximum: 10}
	s.Sync(t, perSecond, perTen)
	guards := []bucket.Guard{{Bucket: perSecond.Name, Cost: 1}, {Bucket: perTen.Name, Cost: 1}}
	rec := &stackedRuns{}
	for range 3 {
		// No waiting inside the activity: a denial after the first grant gives it back.
		ic, err := interceptor.New(interceptor.Options{Guards: map[string][]bucket.Guard{"CallBoth": guards}, MaxWait: -1})
		if err != nil {
			t.Fatal(err)
		}
		w := worker.New(s.NewClient(), stackedQueue, worker.Options{
			MaxConcurrentActivityExecutionSize: 10,
			Interceptors:                       []temporalinterceptor.WorkerInterceptor{ic},
		})
		w.RegisterWorkflowWithOptions(callBothOnce, workflow.RegisterOptions{Name: "CallBothOnce"})
		w.RegisterActivityWithOptions(rec.CallBoth, activity.RegisterOptions{Name: "CallBoth"})
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Stop(); _ = ic.Close(context.Background()) })
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	runs := make([]client.WorkflowRun, workflows)
	for i := range runs {
		var err error
		if runs[i], err = s.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprint("stacked-", i), TaskQueue: stackedQueue}, "CallBothOnce"); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range runs {
		if err := r.Get(ctx, nil); err != nil {
			t.Fatalf("workflow %d: %v", i, err)
		}
	}
	rec.mu.Lock()
	bodies := rec.runs
	rec.mu.Unlock()
	if len(bodies) != workflows {
		t.Errorf("%d bodies ran for %d workflows", len(bodies), workflows)
	}
	for k, spec := range []bucket.Spec{perTen, perSecond} { // the grants are in bucket order
		per := map[time.Time]int64{}
		for _, gs := range bodies {
			per[gs[k].LastRefill]++
		}
		for refill, n := range per {
			if n > spec.Maximum {
				t.Errorf("%s: %d runs drew on the refill of %s; it holds %d", spec.Name, n, refill.Format("15:04:05.000"), spec.Maximum)
			}
		}
		// The refunds of denied runs reach the bucket by signal: wait for them.
		testserver.Eventually(t, 30*time.Second, func() (bool, string) {
			st, err := s.State(ctx, spec.Name)
			if err != nil {
				return false, err.Error()
			}
			return st.Granted-st.Refunded-st.Unrefunded == int64(len(bodies)),
				fmt.Sprintf("%s: %d granted − %d refunded − %d refunded too late = %d tokens used; %d runs", spec.Name, st.Granted, st.Refunded, st.Unrefunded, st.Granted-st.Refunded-st.Unrefunded, len(bodies))
		})
		st, _ := s.State(ctx, spec.Name)
		t.Logf("%s: %d granted, %d refunded, %d refunded too late, %d runs, %d refills drawn on", spec.Name, st.Granted, st.Refunded, st.Unrefunded, len(bodies), len(per))
	}
}

// TestCrashBetweenTwoBuckets kills an app worker holding the grant of the
// first of an activity's two buckets before it asks the second. The first
// bucket loses at most the held grant and the grants in flight, the second
// at most the grants in flight; no grant is used twice.
func TestCrashBetweenTwoBuckets(t *testing.T) {
	const (
		workflowCount = 30
		slots         = 10
		queue         = "crash-stacked"
	)
	s := testserver.NewServer(t)
	first := bucket.Spec{Name: "a_first", Schedule: "@every 1s", Amount: 5, Maximum: 5}
	second := bucket.Spec{Name: "b_second", Schedule: "@every 1s", Amount: 5, Maximum: 5}
	s.Sync(t, first, second)
	dir := t.TempDir()
	base := helperConfig{
		Address: s.GetFrontendHostPort(), Namespace: s.GetDefaultNamespace(),
		Bucket: first.Name, Then: second.Name, TaskQueue: queue, Slots: slots,
		StartsFile: filepath.Join(dir, "starts"),
	}
	victimCfg := base
	victimCfg.HoldAfter, victimCfg.HoldFile = 3, filepath.Join(dir, "held")
	victim := startHelper(t, "victim", victimCfg)
	startHelper(t, "survivor", base)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	runs := make([]client.WorkflowRun, workflowCount)
	for i := range runs {
		var err error
		if runs[i], err = s.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprint("crash2-", i), TaskQueue: queue}, crashWorkflowType); err != nil {
			t.Fatal(err)
		}
	}
	var held int64
	testserver.Eventually(t, time.Minute, func() (bool, string) {
		b, err := os.ReadFile(victimCfg.HoldFile)
		if err != nil || len(b) == 0 {
			return false, fmt.Sprintf("the victim holds no grant of %s yet (%v)", first.Name, err)
		}
		var pid int
		_, err = fmt.Sscanf(string(b), "held %d %d", &held, &pid)
		return err == nil, fmt.Sprintf("hold file %q: %v", b, err)
	})
	victim.kill(t)
	startHelper(t, "replacement", base)
	for i, r := range runs {
		if err := r.Get(ctx, nil); err != nil {
			t.Errorf("workflow crash2-%d: %v", i, err)
		}
	}
	bodies, ungranted, _ := readRuns(t, base.StartsFile)
	if len(ungranted) > 0 {
		t.Errorf("%d bodies ran without both grants", len(ungranted))
	}
	for _, spec := range []bucket.Spec{first, second} {
		var lost int64
		testserver.Eventually(t, 30*time.Second, func() (bool, string) {
			st, err := s.State(ctx, spec.Name)
			if err != nil {
				return false, err.Error()
			}
			lost = st.Granted - st.Refunded - st.Unrefunded - int64(len(bodies))
			return lost >= 0 && lost <= held+slots, fmt.Sprintf("%s: %d granted − %d refunded − %d runs = %d lost; want 0 … %d (held %d + %d slots)",
				spec.Name, st.Granted, st.Refunded, len(bodies), lost, held+slots, held, slots)
		})
		t.Logf("%s: %d tokens lost with the killed worker (it held %d of %s)", spec.Name, lost, held, first.Name)
	}
}
