package interceptor

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/workflows"
)

func TestAsDenial(t *testing.T) {
	next := time.Date(2026, 12, 1, 12, 0, 1, 0, time.UTC)
	ic := &Interceptor{opts: Options{MaxJitter: -1}}
	fromInterceptor := ic.rateLimited([]Denial{{Bucket: "api", Cost: 2, Remaining: 1, RetryAfter: 3 * time.Second, NextRefill: next}})
	fromBucket := temporal.NewApplicationErrorWithOptions("empty", workflows.ErrRateLimited, temporal.ApplicationErrorOptions{
		Details: []any{workflows.AcquireResponse{Bucket: "api", Tokens: 1, NextRefill: next, Results: []workflows.Outcome{{RetryAfter: 3 * time.Second}}}}})
	for _, tt := range []struct {
		name string
		err  error
		want Denial
		ok   bool
	}{
		{"the interceptor's error", fromInterceptor, Denial{Bucket: "api", Cost: 2, Remaining: 1, RetryAfter: 3 * time.Second, NextRefill: next}, true},
		{"as a workflow sees it", asWorkflowSeesIt(t, fromInterceptor), Denial{Bucket: "api", Cost: 2, Remaining: 1, RetryAfter: 3 * time.Second, NextRefill: next}, true},
		{"wrapped by fmt", fmt.Errorf("calling: %w", fromInterceptor), Denial{Bucket: "api", Cost: 2, Remaining: 1, RetryAfter: 3 * time.Second, NextRefill: next}, true},
		{"the bucket's validator", fromBucket, Denial{Bucket: "api", Remaining: 1, RetryAfter: 3 * time.Second, NextRefill: next}, true},
		{"RateLimited without details", temporal.NewApplicationError("slow down", workflows.ErrRateLimited), Denial{}, false},
		{"RateLimited with other details", temporal.NewApplicationError("slow down", workflows.ErrRateLimited, "a string"), Denial{}, false},
		{"another type", temporal.NewApplicationError("no", workflows.ErrUnknownBucket), Denial{}, false},
		{"a plain error", errors.New("no"), Denial{}, false},
		{"nil", nil, Denial{}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := AsDenial(tt.err)
			if ok != tt.ok || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("AsDenial = %+v, %t; want %+v, %t", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestCloseAnswersWaitingCallersAndGivesBackTheLease(t *testing.T) {
	var refuse atomic.Bool
	hold := make(chan struct{})
	f := &fakeBucket{respond: func(b workflows.AcquireBatch) (workflows.AcquireResponse, error) {
		if b.Requests[0].ID == "y" {
			<-hold // the update in flight when Close is called
		}
		if refuse.Load() {
			return workflows.AcquireResponse{}, rateLimited(time.Second)
		}
		resp, _ := grantAll(b)
		resp.LeaseFor = time.Hour
		return resp, nil
	}}
	a, err := NewAcquirer(f, AcquirerOptions{Lease: 10})
	if err != nil {
		t.Fatal(err)
	}
	a.reportDelay = time.Hour // only Close reports
	ctx := context.Background()
	// The first update lends 10; three callers use three of them.
	for i := range 4 {
		if d, err := a.Acquire(ctx, "b", fmt.Sprint("r", i), 1); err != nil || !d.Granted {
			t.Fatalf("acquire %d: %+v, %v", i, d, err)
		}
	}
	// Another bucket refuses 4 tokens, which no batch reports.
	refuse.Store(true)
	if d, err := a.Acquire(ctx, "other", "x", 4); err != nil || d.Granted {
		t.Fatalf("acquire from other: %+v, %v", d, err)
	}
	// A caller waiting behind an update in flight.
	inFlight := make(chan error, 1)
	go func() { _, err := a.Acquire(ctx, "third", "y", 1); inFlight <- err }()
	waitFor(t, "the update in flight", func() bool { return len(f.sent()) == 3 })
	waiting := make(chan error, 1)
	go func() { _, err := a.Acquire(ctx, "third", "z", 1); waiting <- err }()
	waitFor(t, "the waiting caller", func() bool { return countPending(a, "third") == 1 })

	closed := make(chan error, 1)
	go func() { closed <- a.Close(ctx) }()
	if err := <-waiting; !errors.Is(err, ErrClosed) {
		t.Errorf("a caller waiting to be sent got %v, want ErrClosed", err)
	}
	close(hold) // the update in flight answers its caller: a denial of 1
	if err := <-inFlight; err != nil {
		t.Errorf("the caller in flight got %v, want the bucket's answer", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if _, err := a.Acquire(ctx, "b", "after", 1); !errors.Is(err, ErrClosed) {
		t.Errorf("acquire after Close: %v, want ErrClosed", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.returns) != 1 || f.returns[0].Tokens != 7 {
		t.Errorf("returns %+v; want the lease's 7 unused tokens given back", f.returns)
	}
	var reported int64
	for _, r := range f.reports {
		reported += r.Rejected
	}
	if len(f.reports) != 2 || reported != 5 {
		t.Errorf("reports %+v; want the refused tokens no batch reported, 4 and 1, reported", f.reports)
	}
}

// asWorkflowSeesIt returns err as a workflow sees an activity that failed
// with it: encoded, decoded and wrapped by the SDK.
func asWorkflowSeesIt(t *testing.T, err error) error {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.RegisterActivityWithOptions(func(context.Context) error { return err }, activity.RegisterOptions{Name: "Fail"})
	env.RegisterWorkflowWithOptions(func(ctx workflow.Context) error {
		ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
			StartToCloseTimeout: time.Minute,
			RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
		})
		return workflow.ExecuteActivity(ctx, "Fail").Get(ctx, nil)
	}, workflow.RegisterOptions{Name: "CallFail"})
	env.ExecuteWorkflow("CallFail")
	got := env.GetWorkflowError()
	var actErr *temporal.ActivityError
	if !errors.As(got, &actErr) {
		t.Fatalf("the workflow saw %v, want an ActivityError", got)
	}
	return got
}
