package interceptor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	updatepb "go.temporal.io/api/update/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/grpc"

	"github.com/tokenbucket/tb/workflows"
)

// fakeBucket answers acquire updates in memory, so tests can watch how the
// Acquirer batches. Each update blocks until release receives a value, when
// gated. The bucket workflow itself is tested against Temporal elsewhere.
type fakeBucket struct {
	respond func(workflows.AcquireBatch) (workflows.AcquireResponse, error)
	gate    chan struct{} // nil: answer at once

	mu          sync.Mutex
	batches     []workflows.AcquireBatch
	updateIDs   []string
	returns     []workflows.Return
	reports     []workflows.Report
	settles     []workflows.Settle
	inFlight    int
	maxInFlight int
}

func (f *fakeBucket) UpdateWorkflow(ctx context.Context, o client.UpdateWorkflowOptions) (client.WorkflowUpdateHandle, error) {
	batch := o.Args[0].(workflows.AcquireBatch)
	f.mu.Lock()
	f.batches = append(f.batches, batch)
	f.updateIDs = append(f.updateIDs, o.UpdateID)
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	resp, err := f.respond(batch)
	if err != nil {
		return nil, err
	}
	return handle{resp}, nil
}

func (f *fakeBucket) SignalWorkflow(_ context.Context, _, _, name string, arg any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch name {
	case workflows.ReturnSignal:
		f.returns = append(f.returns, arg.(workflows.Return))
	case workflows.ReportSignal:
		f.reports = append(f.reports, arg.(workflows.Report))
	case workflows.SettleSignal:
		f.settles = append(f.settles, arg.(workflows.Settle))
	}
	return nil
}

func (f *fakeBucket) sent() []workflows.AcquireBatch {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]workflows.AcquireBatch(nil), f.batches...)
}

type handle struct{ resp workflows.AcquireResponse }

func (handle) WorkflowID() string { return "" }
func (handle) RunID() string      { return "" }
func (handle) UpdateID() string   { return "" }
func (h handle) Get(_ context.Context, v any) error {
	*v.(*workflows.AcquireResponse) = h.resp
	return nil
}

func grantAll(b workflows.AcquireBatch) (workflows.AcquireResponse, error) {
	resp := workflows.AcquireResponse{Results: make([]workflows.Outcome, len(b.Requests)), Tokens: 100}
	for i := range resp.Results {
		resp.Results[i].Granted = true
	}
	return resp, nil
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling a condition, not waiting for an event of known timing
	}
}

func TestAcquirerBatchesWaitingCallers(t *testing.T) {
	for _, inFlight := range []int{1, 2} {
		t.Run(fmt.Sprintf("MaxInFlight=%d", inFlight), func(t *testing.T) {
			f := &fakeBucket{respond: grantAll, gate: make(chan struct{})}
			a, err := NewAcquirer(f, AcquirerOptions{MaxInFlight: inFlight})
			if err != nil {
				t.Fatal(err)
			}
			const callers = 100
			var wg sync.WaitGroup
			errs := make(chan error, callers)
			for i := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					d, err := a.Acquire(context.Background(), "b", fmt.Sprint(i), 1)
					if err == nil && !d.Granted {
						err = errors.New("not granted")
					}
					errs <- err
				}()
			}
			// The first updates go out with the first callers; everyone else waits for them.
			waitFor(t, "all callers to queue", func() bool {
				a.mu.Lock()
				defer a.mu.Unlock()
				q := a.queues[workflows.BucketID("b")]
				return q != nil && countSent(f)+len(q.pending) == callers
			})
			close(f.gate)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			batches := f.sent()
			if f.maxInFlight > inFlight {
				t.Errorf("%d updates in flight at once, want at most %d", f.maxInFlight, inFlight)
			}
			if len(batches) > 2*inFlight {
				t.Errorf("%d callers took %d updates, want at most %d", callers, len(batches), 2*inFlight)
			}
			if countSent(f) != callers {
				t.Errorf("%d requests sent, want %d", countSent(f), callers)
			}
		})
	}
}

func countSent(f *fakeBucket) int {
	n := 0
	for _, b := range f.sent() {
		n += len(b.Requests)
	}
	return n
}

func TestAcquirerMaxBatch(t *testing.T) {
	f := &fakeBucket{respond: grantAll, gate: make(chan struct{})}
	a, _ := NewAcquirer(f, AcquirerOptions{MaxBatch: 3})
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() { defer wg.Done(); a.Acquire(context.Background(), "b", fmt.Sprint(i), 1) }()
	}
	waitFor(t, "callers to queue", func() bool { return countPending(a, "b")+countSent(f) == 10 })
	close(f.gate)
	wg.Wait()
	for _, b := range f.sent() {
		if len(b.Requests) > 3 {
			t.Errorf("a batch of %d requests, want at most 3", len(b.Requests))
		}
	}
}

func countPending(a *Acquirer, name string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if q := a.queues[workflows.BucketID(name)]; q != nil {
		return len(q.pending)
	}
	return 0
}

func rateLimited(waits ...time.Duration) error {
	resp := workflows.AcquireResponse{Tokens: 0, NextRefill: time.Unix(100, 0)}
	for _, w := range waits {
		resp.Results = append(resp.Results, workflows.Outcome{RetryAfter: w})
	}
	return temporal.NewApplicationErrorWithOptions("empty", workflows.ErrRateLimited, temporal.ApplicationErrorOptions{Details: []any{resp}})
}

func TestAcquirerDenialsAndReportedRejections(t *testing.T) {
	calls := 0
	f := &fakeBucket{respond: func(b workflows.AcquireBatch) (workflows.AcquireResponse, error) {
		calls++
		if calls == 1 {
			return workflows.AcquireResponse{}, temporal.NewApplicationErrorWithOptions("too few", workflows.ErrRateLimited, temporal.ApplicationErrorOptions{
				Details: []any{workflows.AcquireResponse{Tokens: 2, NextRefill: time.Unix(100, 0), Results: []workflows.Outcome{{RetryAfter: 700 * time.Millisecond}}}}})
		}
		return grantAll(b)
	}}
	a, _ := NewAcquirer(f, AcquirerOptions{})
	d, err := a.Acquire(context.Background(), "b", "x", 3) // the bucket holds 2
	if err != nil || d.Granted || d.RetryAfter != 700*time.Millisecond || !d.NextRefill.Equal(time.Unix(100, 0)) {
		t.Fatalf("denied acquire = %+v, %v; want not granted, retry after 700ms", d, err)
	}
	if d, err := a.Acquire(context.Background(), "b", "y", 1); err != nil || !d.Granted { // 1 of the 2: asked of the bucket
		t.Fatalf("second acquire = %+v, %v", d, err)
	}
	if got := f.sent()[1].Rejected; got != 3 {
		t.Errorf("the next accepted batch reported %d rejected tokens, want 3", got)
	}
}

func TestAcquirerErrors(t *testing.T) {
	tests := []struct {
		name     string
		respond  func(workflows.AcquireBatch) (workflows.AcquireResponse, error)
		wantType string // ApplicationError type, or "" for a plain error
		wantMsg  string
	}{
		{"bucket workflow missing", func(workflows.AcquireBatch) (workflows.AcquireResponse, error) {
			return workflows.AcquireResponse{}, serviceerror.NewNotFound("workflow not found")
		}, workflows.ErrUnknownBucket, `bucket "b" is not running (no workflow tb-bucket-b); run tb sync-schedules`},
		{"invalid request", func(b workflows.AcquireBatch) (workflows.AcquireResponse, error) {
			return workflows.AcquireResponse{Results: []workflows.Outcome{{Invalid: "cost 9 is more than the bucket's maximum (5)"}}}, nil
		}, workflows.ErrInvalidRequest, `bucket "b": cost 9 is more than the bucket's maximum (5)`},
		{"server unreachable", func(workflows.AcquireBatch) (workflows.AcquireResponse, error) {
			return workflows.AcquireResponse{}, serviceerror.NewUnavailable("connection refused")
		}, "", `bucket "b": acquire failed: connection refused`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, _ := NewAcquirer(&fakeBucket{respond: tt.respond}, AcquirerOptions{})
			_, err := a.Acquire(context.Background(), "b", "x", 9)
			if err == nil {
				t.Fatal("no error")
			}
			var appErr *temporal.ApplicationError
			gotType := ""
			if errors.As(err, &appErr) {
				gotType = appErr.Type()
			}
			if gotType != tt.wantType {
				t.Errorf("error type %q, want %q: %v", gotType, tt.wantType, err)
			}
			if msg := err.Error(); appErr != nil && appErr.Message() != tt.wantMsg || appErr == nil && msg != tt.wantMsg {
				t.Errorf("error %q, want %q", msg, tt.wantMsg)
			}
		})
	}
}

func TestAcquirerTimeoutIsBounded(t *testing.T) {
	f := &fakeBucket{respond: grantAll, gate: make(chan struct{})} // never answers
	a, _ := NewAcquirer(f, AcquirerOptions{Timeout: 50 * time.Millisecond})
	start := time.Now()
	_, err := a.Acquire(context.Background(), "b", "x", 1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want the acquire timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("gave up after %v", d)
	}
}

func TestAcquirerForgetsCallersThatLeave(t *testing.T) {
	f := &fakeBucket{respond: grantAll, gate: make(chan struct{})}
	a, _ := NewAcquirer(f, AcquirerOptions{})
	go a.Acquire(context.Background(), "b", "first", 1) // occupies the one update in flight
	waitFor(t, "the first update", func() bool { return len(f.sent()) == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { _, err := a.Acquire(ctx, "b", "leaver", 1); done <- err }()
	waitFor(t, "the second caller to queue", func() bool { return countPending(a, "b") == 1 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if n := countPending(a, "b"); n != 0 {
		t.Errorf("%d callers still queued after the only one left", n)
	}
	close(f.gate)
}

func TestNewAcquirerOptions(t *testing.T) {
	if _, err := NewAcquirer(nil, AcquirerOptions{}); err == nil {
		t.Error("a nil client was accepted")
	}
	if _, err := NewAcquirer(&fakeBucket{}, AcquirerOptions{MaxInFlight: 3}); err == nil {
		t.Error("MaxInFlight 3 was accepted")
	}
}

// congestedService answers the first congested acquire updates sent
// through it with err, and the rest by granting every request.
type congestedService struct {
	workflowservice.WorkflowServiceClient // the methods not overridden panic
	congested                             int
	err                                   error

	mu        sync.Mutex
	reqs      []*workflowservice.UpdateWorkflowExecutionRequest
	deadlines []time.Duration // the time each call had left
	at        []time.Time
}

func (s *congestedService) UpdateWorkflowExecution(ctx context.Context, r *workflowservice.UpdateWorkflowExecutionRequest, _ ...grpc.CallOption) (*workflowservice.UpdateWorkflowExecutionResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, _ := ctx.Deadline()
	s.reqs, s.deadlines, s.at = append(s.reqs, r), append(s.deadlines, time.Until(d)), append(s.at, time.Now())
	if len(s.reqs) <= s.congested {
		return nil, s.err
	}
	var b workflows.AcquireBatch
	if err := converter.GetDefaultDataConverter().FromPayloads(r.GetRequest().GetInput().GetArgs(), &b); err != nil {
		return nil, err
	}
	resp, _ := grantAll(b)
	p, _ := converter.GetDefaultDataConverter().ToPayloads(resp)
	return &workflowservice.UpdateWorkflowExecutionResponse{
		Outcome: &updatepb.Outcome{Value: &updatepb.Outcome_Success{Success: p}},
		Stage:   enumspb.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_COMPLETED,
	}, nil
}

// serviceClient is an Updater with a WorkflowService, as a client.Client is.
type serviceClient struct {
	updaterFunc
	svc workflowservice.WorkflowServiceClient
}

func (c serviceClient) WorkflowService() workflowservice.WorkflowServiceClient { return c.svc }

func TestAcquirerSendsACongestedUpdateAgainUnderTheSameID(t *testing.T) {
	for _, congestion := range []error{
		serviceerror.NewResourceExhausted(enumspb.RESOURCE_EXHAUSTED_CAUSE_CONCURRENT_LIMIT, "limit on number of concurrent in-flight updates has been reached (10)"),
		serviceerror.NewUnavailable("workflow update was aborted"),
		serviceerror.NewWorkflowNotReady("Unable to perform workflow execution update due to unexpected workflow task failure."),
	} {
		svc := &congestedService{congested: 3, err: congestion}
		a, err := NewAcquirer(serviceClient{svc: svc}, AcquirerOptions{Namespace: "ns", Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		d, err := a.Acquire(context.Background(), "b", "x", 1)
		if err != nil || !d.Granted {
			t.Fatalf("%v: Acquire = %+v, %v", congestion, d, err)
		}
		if len(svc.reqs) != 4 {
			t.Fatalf("%v: %d updates sent, want 4 (3 congested, then granted)", congestion, len(svc.reqs))
		}
		for i, r := range svc.reqs {
			if r.GetNamespace() != "ns" || r.GetRequest().GetMeta().GetUpdateId() != svc.reqs[0].GetRequest().GetMeta().GetUpdateId() {
				t.Errorf("%v: update %d went to namespace %q as %q; want ns, as the first", congestion, i, r.GetNamespace(), r.GetRequest().GetMeta().GetUpdateId())
			}
			// Never cut short: each call has what is left of the whole timeout.
			if left := 5*time.Second - svc.at[i].Sub(svc.at[0]); svc.deadlines[i] < left-time.Second {
				t.Errorf("%v: update %d had %v left, want about %v", congestion, i, svc.deadlines[i], left)
			}
		}
		// Each congested answer doubled the spread the next one waits a random part of.
		a.mu.Lock()
		spread := a.queues[workflows.BucketID("b")].spread
		a.mu.Unlock()
		if want := 4 * minSpread; spread != want-spreadStep { // doubled 3 times from minSpread, less a step for the grant
			t.Errorf("%v: spread %v after 3 congested answers and a quick grant, want %v", congestion, spread, want-spreadStep)
		}
	}
}

func TestAcquirerNamesTheNamespaceOfAMissingBucket(t *testing.T) {
	svc := &congestedService{congested: 1, err: serviceerror.NewNotFound("workflow not found")}
	a, _ := NewAcquirer(serviceClient{svc: svc}, AcquirerOptions{})
	_, err := a.Acquire(context.Background(), "b", "x", 1)
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != workflows.ErrUnknownBucket || !strings.Contains(err.Error(), `namespace "default" (AcquirerOptions.Namespace)`) {
		t.Errorf("err = %v; want %s naming the namespace", err, workflows.ErrUnknownBucket)
	}
}

type updaterFunc func(context.Context, client.UpdateWorkflowOptions) (client.WorkflowUpdateHandle, error)

func (f updaterFunc) UpdateWorkflow(ctx context.Context, o client.UpdateWorkflowOptions) (client.WorkflowUpdateHandle, error) {
	return f(ctx, o)
}

func (updaterFunc) SignalWorkflow(context.Context, string, string, string, any) error { return nil }

func TestAcquirerLease(t *testing.T) {
	nextTick := time.Now().Add(leaseMargin + 300*time.Millisecond)
	lentAt := time.Unix(50, 0)
	f := &fakeBucket{respond: func(b workflows.AcquireBatch) (workflows.AcquireResponse, error) {
		resp, _ := grantAll(b)
		resp.NextTick, resp.LastRefill = nextTick, lentAt
		resp.LeaseFor = time.Until(nextTick)
		return resp, nil
	}}
	a, err := NewAcquirer(f, AcquirerOptions{Lease: 5})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		d, err := a.Acquire(context.Background(), "b", fmt.Sprint(i), 1)
		if err != nil || !d.Granted || !d.LastRefill.Equal(lentAt) {
			t.Fatalf("acquire %d: %+v, %v", i, d, err)
		}
	}
	// The first update carried a lease of 5, which served the next 5 callers.
	b := f.sent()
	if len(b) != 1 || len(b[0].Requests) != 2 || !b[0].Requests[1].Optional || b[0].Requests[1].Cost != 5 {
		t.Fatalf("updates sent: %+v; want one, with a lease of 5 after the request", b)
	}
	// The 7th caller finds the lease spent: a new update, with a new lease.
	if d, err := a.Acquire(context.Background(), "b", "7", 2); err != nil || !d.Granted {
		t.Fatalf("acquire 7: %+v, %v", d, err)
	}
	if a.Acquire(context.Background(), "b", "8", 1); len(f.sent()) != 2 {
		t.Errorf("%d updates; want the 8th caller served by the second lease", len(f.sent()))
	}
	// Shortly before the bucket's next tick the unused 4 go back.
	waitFor(t, "the lease's return", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.returns) == 1
	})
	if r := f.returns[0]; r.Tokens != 4 || r.ID != f.sent()[1].Requests[1].ID {
		t.Errorf("return %+v; want the second lease's 4 unused tokens", r)
	}
	// A lease that has ended serves nobody.
	waitFor(t, "the lease's end", func() bool { return time.Now().After(nextTick.Add(-leaseMargin)) })
	a.Acquire(context.Background(), "b", "9", 1)
	if len(f.sent()) != 3 {
		t.Errorf("%d updates; want a round trip once the lease ended", len(f.sent()))
	}
}

// A lease is timed on the process's own clock from before the update was
// sent, never by comparing the server's next tick with the local time: a
// worker whose clock runs behind the server's must not hand out tokens of one
// window in the next.
func TestAcquirerLeaseIgnoresClockSkew(t *testing.T) {
	for _, skew := range []time.Duration{-2 * time.Second, 0, 2 * time.Second} {
		t.Run(fmt.Sprint("skew ", skew), func(t *testing.T) {
			const window = leaseMargin + 200*time.Millisecond
			f := &fakeBucket{respond: func(b workflows.AcquireBatch) (workflows.AcquireResponse, error) {
				resp, _ := grantAll(b)
				resp.NextTick = time.Now().Add(window) // the server's clock
				resp.LeaseFor = window
				return resp, nil
			}}
			a, err := NewAcquirer(f, AcquirerOptions{Lease: 1 << 40}) // never used up
			if err != nil {
				t.Fatal(err)
			}
			a.now = func() time.Time { return time.Now().Add(skew) }
			start := time.Now()
			if d, err := a.Acquire(context.Background(), "b", "first", 1); err != nil || !d.Granted {
				t.Fatalf("first acquire: %+v, %v", d, err)
			}
			// Served from the lease until it ends, then from the bucket again.
			var last time.Duration
			for i := 0; len(f.sent()) == 1; i++ {
				last = time.Since(start)
				if last > 5*time.Second {
					t.Fatal("the lease never ended")
				}
				if _, err := a.Acquire(context.Background(), "b", fmt.Sprint(i), 1); err != nil {
					t.Fatal(err)
				}
			}
			if limit := window - leaseMargin + 20*time.Millisecond; last > limit { // + the first send
				t.Errorf("the lease served a caller %v after it was sent; its window ends %v after", last, limit)
			}
		})
	}
}

func TestAcquirerRefusesBadRequestIDs(t *testing.T) {
	f := &fakeBucket{respond: grantAll}
	a, _ := NewAcquirer(f, AcquirerOptions{})
	for _, id := range []string{"", strings.Repeat("x", workflows.MaxIDLength+1)} {
		_, err := a.Acquire(context.Background(), "b", id, 1)
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || appErr.Type() != workflows.ErrInvalidRequest || !appErr.NonRetryable() {
			t.Errorf("id of %d bytes: %v, want a non-retryable InvalidRequest", len(id), err)
		}
	}
	if len(f.sent()) != 0 {
		t.Errorf("%d updates sent for invalid ids", len(f.sent()))
	}
	if _, err := a.Acquire(context.Background(), "b", strings.Repeat("x", workflows.MaxIDLength), 1); err != nil {
		t.Errorf("an id of %d bytes: %v", workflows.MaxIDLength, err)
	}
}

// Tokens the validator refused reach the bucket's count even when no later
// batch is accepted to carry them.
func TestAcquirerReportsRejectionsWhenIdle(t *testing.T) {
	f := &fakeBucket{respond: func(workflows.AcquireBatch) (workflows.AcquireResponse, error) {
		return workflows.AcquireResponse{}, rateLimited(time.Second)
	}}
	a, _ := NewAcquirer(f, AcquirerOptions{})
	a.reportDelay = 20 * time.Millisecond
	var seen int64
	for i := range 5 {
		d, err := a.Acquire(context.Background(), "b", fmt.Sprint(i), int64(i+1))
		if err != nil || d.Granted {
			t.Fatalf("acquire %d: %+v, %v", i, d, err)
		}
		seen += int64(i + 1)
	}
	waitFor(t, "a report", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		var n int64
		for _, r := range f.reports {
			n += r.Rejected
		}
		return n == seen
	})
	// Once: one more refusal brings the count to exactly one more.
	if _, err := a.Acquire(context.Background(), "b", "more", 1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the second report", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		var n int64
		for _, r := range f.reports {
			n += r.Rejected
		}
		if n > seen+1 {
			t.Fatalf("reported %d rejected tokens, callers saw %d", n, seen+1)
		}
		return n == seen+1
	})
}

// Once the bucket refused this process's first request, callers asking for
// more than it holds are refused here until the refill it named, with no
// update; then one batch carries them all, and reports those refusals.
func TestAcquirerRefusesLocallyUntilTheRefill(t *testing.T) {
	var calls atomic.Int64
	f := &fakeBucket{respond: func(b workflows.AcquireBatch) (workflows.AcquireResponse, error) {
		if calls.Add(1) == 1 {
			return workflows.AcquireResponse{}, rateLimited(300 * time.Millisecond)
		}
		return grantAll(b)
	}}
	a, _ := NewAcquirer(f, AcquirerOptions{})
	a.reportDelay = time.Hour // reported by the next batch
	start := time.Now()
	if d, err := a.Acquire(context.Background(), "b", "first", 1); err != nil || d.Granted {
		t.Fatalf("first acquire: %+v, %v", d, err)
	}
	var denied int64
	for i := range 10 {
		d, err := a.Acquire(context.Background(), "b", fmt.Sprint("local-", i), 2)
		if err != nil || d.Granted || d.RetryAfter <= 0 || d.RetryAfter > 300*time.Millisecond || !d.NextRefill.Equal(time.Unix(100, 0)) {
			t.Fatalf("acquire %d in the quiet spell: %+v, %v; want refused until the refill, here", i, d, err)
		}
		denied += 2
	}
	if n := len(f.sent()); n != 1 || time.Since(start) > 250*time.Millisecond {
		t.Fatalf("%d updates in the quiet spell (%v), want the first alone", n, time.Since(start))
	}
	// After the refill the bucket is asked again, and told of the refusals.
	waitFor(t, "the refill the bucket named", func() bool { return time.Since(start) > 350*time.Millisecond }) // counted from the send, a little after start
	if d, err := a.Acquire(context.Background(), "b", "after", 1); err != nil || !d.Granted {
		t.Fatalf("acquire after the refill: %+v, %v", d, err)
	}
	if b := f.sent(); len(b) != 2 || b[1].Rejected != 1+denied {
		t.Errorf("batches %+v; want a second one reporting %d refused tokens", b, 1+denied)
	}
}

// A bucket refusing until a refill hours away is asked again after maxQuiet,
// so a refill by hand reaches the process's callers; the callers refused
// meanwhile are still told to come back at that refill.
func TestAcquirerAsksAgainAfterMaxQuiet(t *testing.T) {
	var calls atomic.Int64
	f := &fakeBucket{respond: func(b workflows.AcquireBatch) (workflows.AcquireResponse, error) {
		if calls.Add(1) == 1 {
			return workflows.AcquireResponse{}, rateLimited(time.Hour)
		}
		return grantAll(b) // refilled by hand
	}}
	a, _ := NewAcquirer(f, AcquirerOptions{})
	a.reportDelay = time.Hour
	var mu sync.Mutex
	clock := time.Now()
	a.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	if d, err := a.Acquire(context.Background(), "b", "first", 1); err != nil || d.Granted {
		t.Fatalf("first acquire: %+v, %v", d, err)
	}
	mu.Lock()
	clock = clock.Add(maxQuiet - time.Second)
	mu.Unlock()
	if d, err := a.Acquire(context.Background(), "b", "quiet", 1); err != nil || d.Granted || d.RetryAfter < 59*time.Minute {
		t.Fatalf("acquire in the quiet spell: %+v, %v; want refused here until the refill an hour away", d, err)
	}
	if n := len(f.sent()); n != 1 {
		t.Fatalf("%d updates in the quiet spell, want the first alone", n)
	}
	mu.Lock()
	clock = clock.Add(2 * time.Second)
	mu.Unlock()
	if d, err := a.Acquire(context.Background(), "b", "after", 1); err != nil || !d.Granted {
		t.Fatalf("acquire %v after the refusal: %+v, %v; want the bucket asked again, and granted", maxQuiet+time.Second, d, err)
	}
}

// Callers who arrive while an update is in flight, some of whom its refusal
// covers: those are answered at once, the others go in the next batch.
func TestAcquirerRefusesSomeOfTheNextBatch(t *testing.T) {
	var calls atomic.Int64
	gate := make(chan struct{})
	f := &fakeBucket{respond: func(b workflows.AcquireBatch) (workflows.AcquireResponse, error) {
		if calls.Add(1) == 1 {
			<-gate
			return workflows.AcquireResponse{}, temporal.NewApplicationErrorWithOptions("too few", workflows.ErrRateLimited, temporal.ApplicationErrorOptions{
				Details: []any{workflows.AcquireResponse{Tokens: 1, NextRefill: time.Unix(100, 0), Results: []workflows.Outcome{{RetryAfter: time.Hour}}}}})
		}
		return grantAll(b)
	}}
	a, _ := NewAcquirer(f, AcquirerOptions{})
	a.reportDelay = time.Hour
	first := make(chan Decision, 1)
	go func() {
		d, _ := a.Acquire(context.Background(), "b", "first", 5)
		first <- d
	}()
	waitFor(t, "the first update on its way", func() bool { return len(f.sent()) == 1 })
	type answer struct {
		cost int64
		d    Decision
		err  error
	}
	answers := make(chan answer, 5)
	for i, cost := range []int64{2, 1, 2, 1, 2} {
		go func() {
			d, err := a.Acquire(context.Background(), "b", fmt.Sprint("next-", i), cost)
			answers <- answer{cost, d, err}
		}()
	}
	waitFor(t, "the callers waiting", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		q := a.queues[workflows.BucketID("b")]
		return q != nil && len(q.pending) == 5
	})
	close(gate)
	if d := <-first; d.Granted {
		t.Fatalf("the first request: %+v, want refused", d)
	}
	for range 5 {
		r := <-answers
		if r.err != nil || r.d.Granted != (r.cost == 1) {
			t.Errorf("a caller asking %d: %+v, %v; want granted only when asking no more than the 1 token the bucket holds", r.cost, r.d, r.err)
		}
	}
	if b := f.sent(); len(b) != 2 || len(b[1].Requests) != 2 {
		t.Errorf("batches %+v; want a second one of the 2 callers asking 1", b)
	}
}

func TestMain(m *testing.M) {
	defaultStartSpread = -1 // TestAcquirerSpreadsItsFirstUpdate tests it
	os.Exit(m.Run())
}

func TestAcquirerSpreadsItsFirstUpdate(t *testing.T) {
	const spread = 300 * time.Millisecond
	var firsts []time.Duration
	for range 20 {
		f := &fakeBucket{respond: grantAll}
		a, _ := NewAcquirer(f, AcquirerOptions{StartSpread: spread})
		start := time.Now()
		if d, err := a.Acquire(context.Background(), "b", "first", 1); err != nil || !d.Granted {
			t.Fatalf("Acquire = %+v, %v", d, err)
		}
		firsts = append(firsts, time.Since(start))
		start = time.Now()
		if d, err := a.Acquire(context.Background(), "b", "second", 1); err != nil || !d.Granted {
			t.Fatalf("Acquire = %+v, %v", d, err)
		}
		if second := time.Since(start); second > spread/3 {
			t.Errorf("the second update waited %v: only the first is spread", second)
		}
	}
	slices.Sort(firsts)
	// Uniform over [0, 300ms): 20 draws all below 100ms, or all above 200ms,
	// happen once in 3^20.
	if firsts[len(firsts)-1] < spread/3 || firsts[0] > 2*spread/3 || firsts[len(firsts)-1] > spread+100*time.Millisecond {
		t.Errorf("first updates waited %v; want them spread over [0, %v)", firsts, spread)
	}
}

// TestAcquirerSpreadsAfterIdleInAFleet: an update sent after a second
// without one waits a random part of IdleSpread × processes ÷ 64 when the
// bucket says more than 8 processes ask it; a smaller fleet, a busy queue,
// callers coming back from a refusal (the bucket spaces those) and
// IdleSpread < 0 never wait; a lower count replaces the one remembered only
// a minute after it.
func TestAcquirerSpreadsAfterIdleInAFleet(t *testing.T) {
	const spread = 300 * time.Millisecond
	var (
		mu        sync.Mutex
		clock     = time.Now()
		processes = 64
		refuse    bool
	)
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	setFleet := func(n int) { mu.Lock(); processes = n; mu.Unlock() }
	f := &fakeBucket{respond: func(b workflows.AcquireBatch) (workflows.AcquireResponse, error) {
		if b.Process == "" {
			t.Error("a batch names no process")
		}
		resp, _ := grantAll(b)
		mu.Lock()
		resp.Processes = processes
		if refuse {
			resp.Results = []workflows.Outcome{{RetryAfter: time.Second}}
		}
		mu.Unlock()
		return resp, nil
	}}
	newAcquirer := func(o AcquirerOptions) *Acquirer {
		a, err := NewAcquirer(f, o)
		if err != nil {
			t.Fatal(err)
		}
		a.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
		return a
	}
	a := newAcquirer(AcquirerOptions{StartSpread: -1, IdleSpread: spread})
	n := 0
	acquire := func(a *Acquirer) time.Duration {
		n++
		start := time.Now()
		mu.Lock()
		want := !refuse
		mu.Unlock()
		if d, err := a.Acquire(context.Background(), "b", fmt.Sprint("r", n), 1); err != nil || d.Granted != want {
			t.Fatalf("Acquire = %+v, %v; want granted %v", d, err, want)
		}
		return time.Since(start)
	}
	if d := acquire(a); d > spread/3 { // the first: no StartSpread, and no idle spell yet
		t.Errorf("the first update waited %v", d)
	}
	var waits []time.Duration
	for range 20 {
		advance(2 * time.Second)
		waits = append(waits, acquire(a))
		advance(100 * time.Millisecond)
		if d := acquire(a); d > spread/3 {
			t.Errorf("an update 100 ms after the last waited %v", d)
		}
	}
	slices.Sort(waits)
	// Uniform over [0, 300ms): 20 draws all below 100ms, or all above 200ms,
	// happen once in 3^20.
	if waits[len(waits)-1] < spread/3 || waits[0] > 2*spread/3 || waits[len(waits)-1] > spread+100*time.Millisecond {
		t.Errorf("64 processes: updates after an idle spell waited %v; want them spread over [0, %v)", waits, spread)
	}
	// Refused callers come back when the bucket says, unspread: the idle
	// spell starts then.
	for range 10 {
		mu.Lock()
		refuse = true
		mu.Unlock()
		advance(2 * time.Second)
		acquire(a) // after an idle spell: spread
		mu.Lock()
		refuse = false
		mu.Unlock()
		advance(time.Second + 500*time.Millisecond) // told to come back in 1 s
		if d := acquire(a); d > 30*time.Millisecond {
			t.Errorf("a caller coming back from a refusal waited %v", d)
		}
	}
	// 16 processes: a quarter of the spread.
	setFleet(16)
	advance(2 * time.Second)
	acquire(a) // the lower count is not taken yet: remembered for a minute
	advance(fleetMemory)
	acquire(a) // now it is
	for range 10 {
		advance(2 * time.Second)
		if d := acquire(a); d > spread/4+50*time.Millisecond {
			t.Errorf("16 processes: an update after an idle spell waited %v; want at most %v", d, spread/4)
		}
	}
	// 8 processes, or IdleSpread < 0: no wait.
	setFleet(8)
	advance(fleetMemory)
	acquire(a)
	b := newAcquirer(AcquirerOptions{StartSpread: -1})
	setFleet(64)
	acquire(b)
	for range 10 {
		setFleet(8)
		advance(2 * time.Second)
		if d := acquire(a); d > 30*time.Millisecond {
			t.Errorf("8 processes: an update after an idle spell waited %v", d)
		}
		setFleet(64)
		if d := acquire(b); d > 30*time.Millisecond {
			t.Errorf("IdleSpread < 0 (StartSpread < 0): an update after an idle spell waited %v", d)
		}
	}
}
