package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/worker"

	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/operator"
	"github.com/tokenbucket/tb/workflows"
)

// Refill returns the bucket's state before and after the refill, once
// applied, capped at the maximum; it refuses a bucket that is not running
// and starts none.
func TestOperatorRefill(t *testing.T) {
	s := testserver.NewServer(t)
	ctx := context.Background()
	apply(t, s.Client, operator.Options{}, hourly("api", 1), hourly("gone", 1))

	for _, tt := range []struct {
		amount        int64
		before, after int64
	}{{3, 1, 4}, {0, 4, 9}, {0, 9, 10}} { // 0: the bucket's amount, 5
		before, after, err := operator.Refill(ctx, s.Client, "api", operator.RefillOptions{Amount: tt.amount})
		if err != nil || before.Tokens != tt.before || after.Tokens != tt.after || !after.LastRefill.After(before.LastRefill) {
			t.Errorf("Refill %d: %d → %d tokens, %v; want %d → %d", tt.amount, before.Tokens, after.Tokens, err, tt.before, tt.after)
		}
	}
	if st, err := operator.State(ctx, s.Client, "api"); err != nil || st.Tokens != 10 {
		t.Errorf("after the refills: %+v, %v", st, err)
	}

	_, _, err := operator.Refill(ctx, s.Client, "never", operator.RefillOptions{})
	var nr *operator.NotRunningError
	if !errors.As(err, &nr) || nr.Bucket != "never" {
		t.Errorf("Refill of a bucket never created: %T %v", err, err)
	}
	var notFound *serviceerror.NotFound
	if _, err := s.Client.DescribeWorkflowExecution(ctx, workflows.BucketID("never"), ""); !errors.As(err, &notFound) {
		t.Errorf("Refill started a bucket: %v", err)
	}

	if err := s.Client.TerminateWorkflow(ctx, workflows.BucketID("gone"), "", "test"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := operator.Refill(ctx, s.Client, "gone", operator.RefillOptions{}); !errors.As(err, &nr) || nr.Status != enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED {
		t.Errorf("Refill of a terminated bucket: %T %v", err, err)
	}
}

// Without a worker, Refill gives up within its Wait and says the refill is
// sent; a worker started later applies it, once.
func TestOperatorRefillWithoutAWorker(t *testing.T) {
	ts := noWorkerServer(t)
	c := ts.GetDefaultClient()
	ctx := context.Background()
	apply(t, c, operator.Options{}, hourly("lonely", 0))

	begin := time.Now()
	_, _, err := operator.Refill(ctx, c, "lonely", operator.RefillOptions{Wait: time.Second})
	took := time.Since(begin)
	var (
		notApplied *operator.NotAppliedError
		noAnswer   *operator.NoAnswerError
	)
	if !errors.As(err, &notApplied) || !errors.As(err, &noAnswer) || notApplied.Bucket != "lonely" {
		t.Errorf("Refill with no worker: %T %v; want a *NotAppliedError wrapping a *NoAnswerError", err, err)
	}
	if took > 4*time.Second {
		t.Errorf("Refill with a 1s Wait returned after %v", took)
	}

	ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) { workflows.Register(r) })
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		st, err := operator.State(ctx, c, "lonely")
		return err == nil && st.Tokens == 5, fmt.Sprintf("%d tokens, %v; want the 5 of the refill sent", st.Tokens, err)
	})
	// One more refill, waited for: every signal before it has been handled, so the first was applied once.
	if before, after, err := operator.Refill(ctx, c, "lonely", operator.RefillOptions{Amount: 1}); err != nil || before.Tokens != 5 || after.Tokens != 6 {
		t.Errorf("second refill: %d → %d, %v; want 5 → 6", before.Tokens, after.Tokens, err)
	}
}
