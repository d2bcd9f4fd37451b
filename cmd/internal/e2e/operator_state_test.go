package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/server/temporaltest"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/operator"
	"github.com/tokenbucket/tb/workflows"
)

// noWorkerServer is a server with no tb worker: bucket workflows start but never run.
func noWorkerServer(t *testing.T) *temporaltest.TestServer {
	return temporaltest.NewServer(temporaltest.WithT(t),
		temporaltest.WithBaseClientOptions(client.Options{Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))}))
}

func hourly(name string, initial int64) bucket.Spec {
	return bucket.Spec{Name: name, Schedule: "@hourly", Amount: 5, Maximum: 10, Initial: &initial}
}

func apply(t *testing.T, c client.Client, opts operator.Options, specs ...bucket.Spec) []operator.Change {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	changes, err := operator.Apply(ctx, c, &bucket.Config{Buckets: specs}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return changes
}

// notRunning returns State's error for the bucket as a *NotRunningError, or fails.
func notRunning(t *testing.T, c client.Client, name string) *operator.NotRunningError {
	t.Helper()
	st, err := operator.State(context.Background(), c, name)
	var nr *operator.NotRunningError
	if !errors.As(err, &nr) || nr.Bucket != name {
		t.Fatalf("State(%s) = %+v, %v; want a *NotRunningError", name, st, err)
	}
	return nr
}

// State reads a running bucket, and tells a bucket never created, one
// retired and one terminated apart, with when they closed.
func TestOperatorState(t *testing.T) {
	s := testserver.NewServer(t)
	ctx := context.Background()
	start := time.Now()
	apply(t, s.Client, operator.Options{}, hourly("live", 3), hourly("retired", 3), hourly("killed", 3))

	st, err := operator.State(ctx, s.Client, "live")
	if err != nil || st.Tokens != 3 || st.Spec.Name != "live" || st.Spec.Maximum != 10 || st.NextRefill.IsZero() {
		t.Errorf("State of a running bucket: %+v, %v", st, err)
	}

	if nr := notRunning(t, s.Client, "never"); nr.Status != enumspb.WORKFLOW_EXECUTION_STATUS_UNSPECIFIED || !nr.Closed.IsZero() || nr.Retired() {
		t.Errorf("a bucket never created: %+v", nr)
	}

	// Retire "retired"; the listing Apply retires from may lag its creation.
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		apply(t, s.Client, operator.Options{Retire: true}, hourly("live", 3), hourly("killed", 3))
		_, err := operator.State(ctx, s.Client, "retired")
		var nr *operator.NotRunningError
		return errors.As(err, &nr), fmt.Sprintf("retired still answers: %v", err)
	})
	nr := notRunning(t, s.Client, "retired")
	if !nr.Retired() || nr.Status != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED || nr.Closed.Before(start.Add(-time.Minute)) || nr.Closed.After(time.Now().Add(time.Minute)) {
		t.Errorf("a retired bucket: %+v", nr)
	}

	if err := s.Client.TerminateWorkflow(ctx, workflows.BucketID("killed"), "", "test"); err != nil {
		t.Fatal(err)
	}
	nr = notRunning(t, s.Client, "killed")
	if nr.Retired() || nr.Status != enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED || nr.Closed.Before(start.Add(-time.Minute)) {
		t.Errorf("a terminated bucket: %+v", nr)
	}

	// States answers for each, in order.
	got := operator.States(ctx, s.Client, []string{"killed", "live", "never"})
	if len(got) != 3 || got[0].Bucket != "killed" || got[0].Err == nil || got[1].Err != nil || got[1].Status.Tokens != 3 || got[2].Err == nil {
		t.Errorf("States: %+v", got)
	}

	// Running lists the one bucket still running.
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		names, err := operator.Running(ctx, s.Client)
		return err == nil && slices.Equal(names, []string{"live"}), fmt.Sprintf("Running: %q, %v", names, err)
	})
}

// Without a worker, State returns a *NoAnswerError, within 5 s by default
// or by the caller's deadline; a closed bucket is still told apart.
func TestOperatorStateWithoutAWorker(t *testing.T) {
	ts := noWorkerServer(t)
	c := ts.GetDefaultClient()
	ctx := context.Background()
	apply(t, c, operator.Options{}, hourly("lonely", 1), hourly("killed", 1)) // starting a bucket needs no worker

	// The server gives up on a query with no worker before the deadline
	// (at about half of it): State's bound is an upper bound.
	for _, tt := range []struct {
		timeout time.Duration // 0: none, State's own 5 s
		max     time.Duration
	}{{0, 8 * time.Second}, {time.Second, 3 * time.Second}} {
		qctx, cancel := ctx, context.CancelFunc(func() {})
		if tt.timeout > 0 {
			qctx, cancel = context.WithTimeout(ctx, tt.timeout)
		}
		begin := time.Now()
		_, err := operator.State(qctx, c, "lonely")
		took := time.Since(begin)
		cancel()
		var noAnswer *operator.NoAnswerError
		if !errors.As(err, &noAnswer) || noAnswer.Bucket != "lonely" || noAnswer.Err == nil {
			t.Errorf("State with no worker, deadline %v: %T %v", tt.timeout, err, err)
		}
		if took > tt.max {
			t.Errorf("State with no worker, deadline %v, answered after %v; want at most %v", tt.timeout, took, tt.max)
		}
	}

	if err := c.TerminateWorkflow(ctx, workflows.BucketID("killed"), "", "test"); err != nil {
		t.Fatal(err)
	}
	if nr := notRunning(t, c, "killed"); nr.Status != enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED {
		t.Errorf("a terminated bucket, with no worker: %+v", nr)
	}
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		names, err := operator.Running(ctx, c)
		return err == nil && slices.Equal(names, []string{"lonely"}), fmt.Sprintf("Running: %q, %v", names, err)
	})
}
