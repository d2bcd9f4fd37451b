package workflows

import (
	"errors"
	"fmt"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
)

// scheduledStartTime is the search attribute a Temporal Schedule sets to the
// nominal time of the action it starts.
var scheduledStartTime = temporal.NewSearchAttributeKeyTime("TemporalScheduledStartTime")

// RefillWorkflow is started by a bucket's refill Schedule on every tick. It
// signals the bucket with the tick's nominal time, which makes the refill
// idempotent, and starts the bucket first if it does not exist, so refills
// heal a missing bucket. A bucket retired by tb sync-schedules (a run that
// completed) is not restarted.
func RefillWorkflow(ctx workflow.Context, in RefillInput) error {
	tick := nominalTime(ctx)
	r := Refill{ID: tickID(tick), Tick: tick}
	shards := in.Spec.ShardCount()
	if shards == 0 {
		return refillOne(ctx, in.Spec, BucketID(in.Spec.Name), BucketInput{Spec: in.Spec}, r, nil)
	}
	// A keyed bucket: one signal per shard, not per key, all sent at once.
	sent := make([]workflow.Future, shards)
	for i := range shards {
		sent[i] = workflow.SignalExternalWorkflow(ctx, ShardID(in.Spec.Name, i), "", RefillSignal, r)
	}
	var errs []error
	for i := range shards {
		errs = append(errs, refillOne(ctx, in.Spec, ShardID(in.Spec.Name, i), BucketInput{Spec: in.Spec, Shard: i}, r, sent[i]))
	}
	return errors.Join(errs...)
}

// refillOne signals one bucket workflow (or waits for sent, the signal sent
// already), starting it first if it is missing.
func refillOne(ctx workflow.Context, spec bucket.Spec, id string, start BucketInput, r Refill, sent workflow.Future) error {
	var err error
	if sent != nil {
		err = sent.Get(ctx, nil)
	} else {
		err = signalBucket(ctx, id, r)
	}
	var missing *temporal.UnknownExternalWorkflowExecutionError
	if !errors.As(err, &missing) {
		return err
	}
	workflow.GetLogger(ctx).Info("Bucket workflow not found; starting it", "bucket", spec.Name)
	child := workflow.ExecuteChildWorkflow(workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
		WorkflowID:            id,
		ParentClosePolicy:     enumspb.PARENT_CLOSE_POLICY_ABANDON,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY,
		Memo:                  map[string]any{SpecMemo: spec},
	}), BucketWorkflowType, start)
	if err := child.GetChildWorkflowExecution().Get(ctx, nil); err != nil && !temporal.IsWorkflowExecutionAlreadyStartedError(err) {
		return fmt.Errorf("starting bucket %q: %w", spec.Name, err)
	}
	if err := signalBucket(ctx, id, r); err != nil {
		if errors.As(err, &missing) {
			return temporal.NewNonRetryableApplicationError(
				fmt.Sprintf("bucket %q was retired; run tb sync-schedules to remove its refill Schedule or to start it again", spec.Name),
				ErrUnknownBucket, err)
		}
		return err
	}
	return nil
}

func signalBucket(ctx workflow.Context, id string, r Refill) error {
	return workflow.SignalExternalWorkflow(ctx, id, "", RefillSignal, r).Get(ctx, nil)
}

// nominalTime returns the scheduled time of this refill: the search attribute
// a Schedule sets, else the time suffix of the workflow ID it generates, else
// the workflow's start time.
func nominalTime(ctx workflow.Context) time.Time {
	if t, ok := workflow.GetTypedSearchAttributes(ctx).GetTime(scheduledStartTime); ok && !t.IsZero() {
		return t.UTC().Truncate(time.Second)
	}
	info := workflow.GetInfo(ctx)
	// A Schedule appends the nominal time in UTC: "-2006-01-02T15:04:05Z".
	const suffix = len("2006-01-02T15:04:05Z")
	if id := info.WorkflowExecution.ID; len(id) > suffix {
		if t, err := time.Parse(time.RFC3339, id[len(id)-suffix:]); err == nil {
			return t.UTC()
		}
	}
	return info.WorkflowStartTime.UTC().Truncate(time.Second)
}

// tickID is the ID of the refill of a scheduled tick: its nominal time in
// UTC, to the second. The refill workflow signals it, and a bucket applying
// an authorized tick by itself remembers it, so each tick is applied once.
func tickID(tick time.Time) string { return tick.UTC().Format(time.RFC3339) }
