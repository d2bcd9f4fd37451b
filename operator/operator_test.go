package operator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/workflows"
)

// fakeClient answers the state query with state() and counts refill
// signals. Its embedded Client is nil: any other call panics, failing the test.
type fakeClient struct {
	client.Client
	mu      sync.Mutex
	state   func(signals int) (workflows.Status, error)
	signals int
}

func (f *fakeClient) QueryWorkflowWithOptions(ctx context.Context, req *client.QueryWorkflowWithOptionsRequest) (*client.QueryWorkflowWithOptionsResponse, error) {
	f.mu.Lock()
	st, err := f.state(f.signals)
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return &client.QueryWorkflowWithOptionsResponse{QueryResult: value{st}}, nil
}

func (f *fakeClient) SignalWorkflow(ctx context.Context, id, runID, name string, arg any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.signals++
	return nil
}

// value is a query result, encoded as the default converter would.
type value struct{ v any }

func (v value) HasValue() bool { return true }
func (v value) Get(ptr any) error {
	p, err := converter.GetDefaultDataConverter().ToPayload(v.v)
	if err != nil {
		return err
	}
	return converter.GetDefaultDataConverter().FromPayload(p, ptr)
}

// A query nobody answers is a *NoAnswerError, whether the deadline is the
// context's or one the server or gRPC reported; a missing workflow is a
// *NotRunningError; anything else is wrapped with the bucket's name.
func TestQueryErrors(t *testing.T) {
	for _, err := range []error{
		context.DeadlineExceeded,
		fmt.Errorf("querying: %w", context.DeadlineExceeded),
		serviceerror.NewDeadlineExceeded("context deadline exceeded"),
		fmt.Errorf("wrapped: %w", serviceerror.NewDeadlineExceeded("context deadline exceeded")),
		status.Error(codes.DeadlineExceeded, "context deadline exceeded"),
	} {
		got := queryError("a", err)
		var noAnswer *NoAnswerError
		if !errors.As(got, &noAnswer) || noAnswer.Bucket != "a" || noAnswer.Err != err {
			t.Errorf("queryError(%T %v) = %T %v, want a *NoAnswerError for bucket a", err, err, got, got)
		}
	}
	var notRunning *NotRunningError
	if got := queryError("a", serviceerror.NewNotFound("workflow not found")); !errors.As(got, &notRunning) ||
		notRunning.Status != enumspb.WORKFLOW_EXECUTION_STATUS_UNSPECIFIED || notRunning.Retired() {
		t.Errorf("NotFound: %T %v", got, got)
	}
	boom := errors.New("boom")
	if got := queryError("a", boom); !errors.Is(got, boom) || got.Error() != `bucket "a": boom` {
		t.Errorf("other errors: %v", got)
	}
}

func TestNotRunningErrorSaysHow(t *testing.T) {
	at := time.Date(2026, 11, 26, 17, 0, 0, 0, time.FixedZone("CET", 3600))
	for _, tt := range []struct {
		err  NotRunningError
		want string
	}{
		{NotRunningError{Bucket: "a"}, `bucket "a" is not running: it has no workflow`},
		{NotRunningError{Bucket: "a", Status: enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED, Closed: at},
			`bucket "a" is not running: retired (completed at 2026-11-26T16:00:00Z)`},
		{NotRunningError{Bucket: "a", Status: enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED, Closed: at},
			`bucket "a" is not running: terminated at 2026-11-26T16:00:00Z`},
		{NotRunningError{Bucket: "a", Status: enumspb.WORKFLOW_EXECUTION_STATUS_TIMED_OUT}, `bucket "a" is not running: timed out`},
		{NotRunningError{Bucket: "a", Status: 99}, `bucket "a" is not running: 99`},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.err, got, tt.want)
		}
	}
}

// A bucket that answers but does not apply the refill: Refill sends it once,
// gives up after Wait, and says it was sent.
func TestRefillWaitIsBounded(t *testing.T) {
	last := time.Date(2026, 11, 26, 17, 0, 0, 0, time.UTC)
	f := &fakeClient{state: func(int) (workflows.Status, error) {
		return workflows.Status{State: bucket.State{Tokens: 1, LastRefill: last}}, nil
	}}
	start := time.Now()
	before, _, err := Refill(context.Background(), f, "a", RefillOptions{Wait: 200 * time.Millisecond})
	took := time.Since(start)
	var notApplied *NotAppliedError
	var noAnswer *NoAnswerError
	if !errors.As(err, &notApplied) || errors.As(err, &noAnswer) || !errors.Is(err, context.DeadlineExceeded) ||
		!strings.Contains(err.Error(), `bucket "a": refill sent`) {
		t.Errorf("Refill of a bucket that never applies it: %T %v", err, err)
	}
	if f.signals != 1 || before.Tokens != 1 || took > 3*time.Second {
		t.Errorf("%d signals, before %+v, returned after %v; want 1 signal within about 200ms", f.signals, before, took)
	}
}

// Refill returns the state before the refill and the first state that shows it applied.
func TestRefillWaitsUntilApplied(t *testing.T) {
	last := time.Date(2026, 11, 26, 17, 0, 0, 0, time.UTC)
	polls := 0
	f := &fakeClient{}
	f.state = func(signals int) (workflows.Status, error) {
		st := workflows.Status{State: bucket.State{Tokens: 1, LastRefill: last}}
		if signals > 0 {
			if polls++; polls > 3 { // applied on the fourth look
				st.Tokens, st.LastRefill = 4, last.Add(time.Minute)
			}
		}
		return st, nil
	}
	before, after, err := Refill(context.Background(), f, "a", RefillOptions{Amount: 3})
	if err != nil || before.Tokens != 1 || after.Tokens != 4 || f.signals != 1 {
		t.Errorf("Refill: %v → %v, %v, %d signals", before.Tokens, after.Tokens, err, f.signals)
	}
}

// A bucket that does not answer is sent the refill anyway, and the error says so.
func TestRefillWithoutAnAnswer(t *testing.T) {
	f := &fakeClient{state: func(int) (workflows.Status, error) {
		return workflows.Status{}, serviceerror.NewDeadlineExceeded("context deadline exceeded")
	}}
	_, _, err := Refill(context.Background(), f, "a", RefillOptions{})
	var notApplied *NotAppliedError
	var noAnswer *NoAnswerError
	if !errors.As(err, &notApplied) || !errors.As(err, &noAnswer) || f.signals != 1 {
		t.Errorf("Refill without an answer: %T %v, %d signals", err, err, f.signals)
	}
}

// Bad input is refused with an error naming the bucket, before any call to
// the server (the fake panics on any), and never panics.
func TestBadInput(t *testing.T) {
	ctx := context.Background()
	none := &fakeClient{state: func(int) (workflows.Status, error) {
		panic("the server was asked")
	}}
	valid := bucket.Spec{Name: "a", Schedule: "@hourly", Amount: 1, Maximum: 1}
	invalid := bucket.Spec{Name: "b", Schedule: "@hourly", Amount: 0, Maximum: 1}
	for _, tt := range []struct {
		what string
		call func() error
		want string
	}{
		{"State, nil client", func() error { _, err := State(ctx, nil, "a"); return err }, `bucket "a": operator: the client is nil`},
		{"Running, nil client", func() error { _, err := Running(ctx, nil); return err }, "the client is nil"},
		{"Refill, nil client", func() error { _, _, err := Refill(ctx, nil, "a", RefillOptions{}); return err }, `bucket "a": operator: the client is nil`},
		{"Refill, negative amount", func() error { _, _, err := Refill(ctx, none, "a", RefillOptions{Amount: -1}); return err },
			`bucket "a": the refill amount must be positive, or 0 for the bucket's amount; got -1`},
		{"Apply, nil client", func() error { _, err := Apply(ctx, nil, &bucket.Config{}, Options{}); return err }, "the client is nil"},
		{"Plan, nil config", func() error { _, err := Plan(ctx, none, nil, Options{}); return err }, "the config is nil"},
		{"Apply, invalid spec", func() error {
			_, err := Apply(ctx, none, &bucket.Config{Buckets: []bucket.Spec{valid, invalid}}, Options{})
			return err
		}, `bucket "b": amount: must be greater than 0, got 0`},
		{"Plan, a name twice", func() error {
			_, err := Plan(ctx, none, &bucket.Config{Buckets: []bucket.Spec{valid, valid}}, Options{})
			return err
		}, `bucket "a": name: "a" is declared twice`},
		{"Apply, bad task queue", func() error {
			_, err := Apply(ctx, none, &bucket.Config{Buckets: []bucket.Spec{valid}}, Options{TaskQueue: " tb"})
			return err
		}, `Options.TaskQueue " tb" has leading or trailing spaces`},
	} {
		err := tt.call()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.what, err, tt.want)
		}
	}
	var field *bucket.FieldError
	_, err := Apply(ctx, none, &bucket.Config{Buckets: []bucket.Spec{invalid}}, Options{})
	if !errors.As(err, &field) || field.Bucket != "b" || field.Field != "amount" {
		t.Errorf("an invalid spec: %T %v, want a *bucket.FieldError for b's amount", err, err)
	}
	if none.signals != 0 {
		t.Errorf("%d refills sent", none.signals)
	}
}
