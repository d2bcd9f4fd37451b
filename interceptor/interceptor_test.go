package interceptor

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/workflows"
)

// guarded counts its runs and reports the grant it ran under.
type guarded struct{ runs atomic.Int32 }

func (g *guarded) Fetch(ctx context.Context) (Grant, error) {
	g.runs.Add(1)
	grant, _ := GrantFromContext(ctx)
	return grant, nil
}

func (g *guarded) Unguarded(ctx context.Context) error {
	g.runs.Add(1)
	return nil
}

func runActivity(t *testing.T, f *fakeBucket, opts Options, name string) (*guarded, Grant, error) {
	t.Helper()
	acq, err := NewAcquirer(f, AcquirerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	opts.Limiter = acq
	opts.Guards = map[string][]bucket.Guard{"Fetch": {{Bucket: "api", Cost: 2}}}
	ic, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	var s testsuite.WorkflowTestSuite
	env := s.NewTestActivityEnvironment()
	env.SetWorkerOptions(worker.Options{Interceptors: []temporalinterceptor.WorkerInterceptor{ic}})
	g := &guarded{}
	env.RegisterActivity(g)
	v, err := env.ExecuteActivity(name)
	var grant Grant
	if err == nil && name == "Fetch" {
		err = v.Get(&grant)
	}
	return g, grant, err
}

func TestGrantedActivityRuns(t *testing.T) {
	f := &fakeBucket{respond: grantAll}
	g, grant, err := runActivity(t, f, Options{}, "Fetch")
	if err != nil {
		t.Fatal(err)
	}
	if g.runs.Load() != 1 || grant.Bucket != "api" || grant.Cost != 2 || grant.Remaining != 100 {
		t.Errorf("runs %d, grant %+v", g.runs.Load(), grant)
	}
	if b := f.sent(); len(b) != 1 || b[0].Requests[0].Cost != 2 || b[0].Requests[0].ID == "" {
		t.Errorf("sent %+v, want one request for 2 tokens with an ID", b)
	}
}

func TestDeniedActivityRetriesWhenTokensAreExpected(t *testing.T) {
	f := &fakeBucket{respond: func(workflows.AcquireBatch) (workflows.AcquireResponse, error) {
		return workflows.AcquireResponse{}, rateLimited(3 * time.Second)
	}}
	g, _, err := runActivity(t, f, Options{MaxWait: time.Second}, "Fetch")
	if g.runs.Load() != 0 {
		t.Errorf("the activity body ran %d times without a token", g.runs.Load())
	}
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != workflows.ErrRateLimited || appErr.NonRetryable() {
		t.Fatalf("err = %v, want a retryable RateLimited ApplicationError", err)
	}
	if d := appErr.NextRetryDelay(); d < 3*time.Second || d >= 3*time.Second+300*time.Millisecond {
		t.Errorf("NextRetryDelay = %v, want 3s plus under 10%% jitter", d)
	}
	var denial Denial
	if err := appErr.Details(&denial); err != nil || denial.Bucket != "api" || denial.RetryAfter != 3*time.Second || denial.Cost != 2 {
		t.Errorf("details = %+v, %v", denial, err)
	}
}

func TestShortDenialIsWaitedOut(t *testing.T) {
	calls := 0
	f := &fakeBucket{respond: func(b workflows.AcquireBatch) (workflows.AcquireResponse, error) {
		if calls++; calls == 1 {
			return workflows.AcquireResponse{}, rateLimited(20 * time.Millisecond)
		}
		return grantAll(b)
	}}
	g, grant, err := runActivity(t, f, Options{}, "Fetch")
	if err != nil || g.runs.Load() != 1 || grant.Bucket != "api" {
		t.Fatalf("runs %d, grant %+v, err %v", g.runs.Load(), grant, err)
	}
	b := f.sent()
	if len(b) != 2 || b[0].Requests[0].ID != b[1].Requests[0].ID {
		t.Errorf("batches %+v; want two asks with the same request ID", b)
	}
}

func TestActivityFailsClosed(t *testing.T) {
	f := &fakeBucket{respond: func(workflows.AcquireBatch) (workflows.AcquireResponse, error) {
		return workflows.AcquireResponse{}, serviceerror.NewNotFound("no such workflow")
	}}
	g, _, err := runActivity(t, f, Options{}, "Fetch")
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != workflows.ErrUnknownBucket {
		t.Errorf("err = %v, want UnknownBucket", err)
	}
	if g.runs.Load() != 0 {
		t.Error("the activity body ran without a token")
	}
}

func TestUnguardedActivityTakesNoToken(t *testing.T) {
	f := &fakeBucket{respond: grantAll}
	g, _, err := runActivity(t, f, Options{}, "Unguarded")
	if err != nil || g.runs.Load() != 1 || len(f.sent()) != 0 {
		t.Errorf("err %v, runs %d, updates %d; want it run with no update", err, g.runs.Load(), len(f.sent()))
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for name, opts := range map[string]Options{
		"no guards":       {},
		"no bucket":       {Guards: map[string][]bucket.Guard{"A": {{Cost: 1}}}},
		"no guard":        {Guards: map[string][]bucket.Guard{"A": {}}},
		"a bucket twice":  {Guards: map[string][]bucket.Guard{"A": {{Bucket: "b", Cost: 1}, {Bucket: "b", Cost: 2}}}},
		"bad bucket name": {Guards: map[string][]bucket.Guard{"A": {{Bucket: "a/b", Cost: 1}}}},
		"zero cost":       {Guards: map[string][]bucket.Guard{"A": {{Bucket: "b"}}}},
		"three inflight":  {Guards: map[string][]bucket.Guard{"A": {{Bucket: "b", Cost: 1}}}, AcquirerOptions: AcquirerOptions{MaxInFlight: 3}},
	} {
		if _, err := New(opts); err == nil {
			t.Errorf("%s: New accepted %+v", name, opts)
		}
	}
}

func TestRequestIDNamesTheAttempt(t *testing.T) {
	info := activity.Info{WorkflowNamespace: "ns", ActivityID: "1", Attempt: 1}
	info.WorkflowExecution.ID, info.WorkflowExecution.RunID = "wf", "run"
	a := requestID(info)
	info.Attempt = 2
	b := requestID(info)
	if a == b || len(a) != 22 {
		t.Errorf("IDs %q and %q: want distinct 22-character IDs per attempt", a, b)
	}
}

func TestFromFile(t *testing.T) {
	if _, err := FromFile("../buckets.yaml", Options{}); err != nil {
		t.Error(err)
	}
	if _, err := FromFile("missing.yaml", Options{}); err == nil {
		t.Error("FromFile(missing) succeeded")
	}
}

func TestRetryPolicyWarningIsLoggedOnce(t *testing.T) {
	ic, err := New(Options{Guards: map[string][]bucket.Guard{"Fetch": {{Bucket: "api", Cost: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	var s testsuite.WorkflowTestSuite
	s.SetLogger(log.NewStructuredLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	env := s.NewTestActivityEnvironment()
	g := bucket.Guard{Bucket: "api", Cost: 1}
	probe := func(ctx context.Context, attempts int32) error {
		info := activity.GetInfo(ctx)
		info.RetryPolicy = &temporal.RetryPolicy{MaximumAttempts: attempts}
		ic.warnRetryPolicy(ctx, info, []bucket.Guard{g})
		return nil
	}
	env.RegisterActivity(probe)
	for _, attempts := range []int32{0, 5, 5} {
		if _, err := env.ExecuteActivity(probe, attempts); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(logs.String(), "Each rate-limit denial uses one attempt"); n != 1 {
		t.Errorf("warning logged %d times, want once for MaximumAttempts 5 and never for 0:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "MaximumAttempts=5") {
		t.Errorf("the warning does not say the limit: %s", logs.String())
	}
}
