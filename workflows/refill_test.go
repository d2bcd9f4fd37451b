package workflows

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"
)

func refillEnv(t *testing.T, opts client.StartWorkflowOptions) *testsuite.TestWorkflowEnvironment {
	var s testsuite.WorkflowTestSuite
	env := s.NewTestWorkflowEnvironment()
	env.SetStartTime(t0.Add(5*time.Second + 30*time.Millisecond))
	env.SetStartWorkflowOptions(opts)
	Register(env)
	return env
}

func TestRefillSignalsTheTick(t *testing.T) {
	tests := []struct {
		name string
		opts client.StartWorkflowOptions
		want time.Time
	}{
		{"workflow ID suffix", client.StartWorkflowOptions{ID: ScheduleID("api") + "-2026-11-26T12:00:05Z"}, t0.Add(5 * time.Second)},
		{"start time", client.StartWorkflowOptions{ID: "manual"}, t0.Add(5 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := refillEnv(t, tt.opts)
			var sent []Refill
			env.OnSignalExternalWorkflow(mock.Anything, BucketID("api"), "", RefillSignal, mock.Anything).
				Return(func(_, _, _, _ string, arg any) error { sent = append(sent, arg.(Refill)); return nil })
			env.ExecuteWorkflow(RefillWorkflowType, RefillInput{Spec: spec5()})
			if err := env.GetWorkflowError(); err != nil {
				t.Fatal(err)
			}
			want := Refill{ID: tt.want.Format(time.RFC3339), Tick: tt.want}
			if len(sent) != 1 || sent[0].ID != want.ID || !sent[0].Tick.Equal(want.Tick) {
				t.Errorf("signals = %+v, want one %+v", sent, want)
			}
		})
	}
}

// The test environment gives search attributes to child workflows only, so
// this parent starts the refill the way a Schedule would: with the attribute set.
func scheduleLike(ctx workflow.Context, tick time.Time) error {
	ctx = workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:            "any",
		TypedSearchAttributes: temporal.NewSearchAttributes(scheduledStartTime.ValueSet(tick)),
	})
	return workflow.ExecuteChildWorkflow(ctx, RefillWorkflowType, RefillInput{Spec: spec5()}).Get(ctx, nil)
}

func TestRefillReadsTheScheduledTime(t *testing.T) {
	env := refillEnv(t, client.StartWorkflowOptions{ID: "parent"})
	env.RegisterWorkflow(scheduleLike)
	var sent []Refill
	env.OnSignalExternalWorkflow(mock.Anything, BucketID("api"), "", RefillSignal, mock.Anything).
		Return(func(_, _, _, _ string, arg any) error { sent = append(sent, arg.(Refill)); return nil })
	tick := t0.Add(4 * time.Second)
	env.ExecuteWorkflow(scheduleLike, tick)
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if len(sent) != 1 || sent[0].ID != "2026-11-26T12:00:04Z" || !sent[0].Tick.Equal(tick) {
		t.Errorf("signals = %+v, want one for the tick at 12:00:04", sent)
	}
}

func TestRefillStartsAMissingBucket(t *testing.T) {
	env := refillEnv(t, client.StartWorkflowOptions{ID: ScheduleID("api") + "-2026-11-26T12:00:05Z"})
	// The bucket is not found; once the refill starts it as a child, the
	// environment delivers the next signal to that child.
	env.OnSignalExternalWorkflow(mock.Anything, BucketID("api"), "", RefillSignal, mock.Anything).
		Return(&temporal.UnknownExternalWorkflowExecutionError{}).Once()
	empty := spec5()
	empty.Initial = new(int64(0))
	var st Status
	var queryErr error
	env.RegisterDelayedCallback(func() {
		var v converter.EncodedValue
		if v, queryErr = env.QueryWorkflowByID(BucketID("api"), StateQuery); queryErr == nil {
			queryErr = v.Get(&st)
		}
		queryErr = errors.Join(queryErr, env.UpdateWorkflowByID(BucketID("api"), RetireUpdate, "retire", &testsuite.TestUpdateCallback{
			OnAccept: func() {}, OnReject: func(error) {}, OnComplete: func(any, error) {},
		}))
	}, time.Second)
	env.ExecuteWorkflow(RefillWorkflowType, RefillInput{Spec: empty})
	if err := env.GetWorkflowError(); err != nil {
		t.Fatal(err)
	}
	if queryErr != nil {
		t.Fatalf("the bucket was not started: %v", queryErr)
	}
	// The 12:00:05 refill filled it and authorized the ticks through
	// 12:00:08; the bucket applied the 12:00:06 one by itself before the
	// query a second later.
	if st.Tokens != 5 || st.Spec.Name != "api" || !st.LastTick.Equal(t0.Add(6*time.Second)) || !st.Until.Equal(t0.Add(8*time.Second)) {
		t.Errorf("started bucket = %+v; want it refilled from 0 to 5 by the 12:00:05 tick, the ticks through 12:00:08 authorized and the 12:00:06 one applied", st)
	}
}

func TestRefillDoesNotRestartARetiredBucket(t *testing.T) {
	env := refillEnv(t, client.StartWorkflowOptions{ID: "r"})
	env.OnSignalExternalWorkflow(mock.Anything, BucketID("api"), "", RefillSignal, mock.Anything).
		Return(&temporal.UnknownExternalWorkflowExecutionError{})
	env.OnWorkflow(BucketWorkflowType, mock.Anything, mock.Anything).Return(Status{}, nil)
	env.ExecuteWorkflow(RefillWorkflowType, RefillInput{Spec: spec5()})
	var appErr *temporal.ApplicationError
	if err := env.GetWorkflowError(); !errors.As(err, &appErr) || appErr.Type() != ErrUnknownBucket {
		t.Errorf("workflow error = %v, want UnknownBucket", err)
	}
}
