package operator

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/workflows"
)

// KeyState returns the state of one key of the named keyed bucket, as the
// shard holding it answers: a key the shard does not hold (never used, or
// forgotten once back at its starting level) is reported at that level, with
// Held false. It waits as State does, and returns the errors State returns;
// asking a bucket that is not keyed for a key is an error too.
func KeyState(ctx context.Context, c client.Client, name, key string) (workflows.KeyStatus, error) {
	if c == nil {
		return workflows.KeyStatus{}, fmt.Errorf("bucket %q: %w", name, errNoClient)
	}
	if err := bucket.CheckKey(key); err != nil {
		return workflows.KeyStatus{}, fmt.Errorf("bucket %q: %w", name, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, queryTimeout)
		defer cancel()
	}
	id, err := keyShard(ctx, c, name, key)
	if err != nil {
		return workflows.KeyStatus{}, err
	}
	return queryKey(ctx, c, name, id, key)
}

// RefillKey adds tokens to one key of the named keyed bucket now, as
// tb refill NAME --key KEY does, and waits until the bucket has applied them.
// It returns the key's state before and after. It reports what Refill
// reports, and waits as Refill does: the refill counts as applied when the
// LastRefill of the key's shard moves.
func RefillKey(ctx context.Context, c client.Client, name, key string, opts RefillOptions) (before, after workflows.KeyStatus, err error) {
	if c == nil {
		return before, after, fmt.Errorf("bucket %q: %w", name, errNoClient)
	}
	if err := bucket.CheckKey(key); err != nil {
		return before, after, fmt.Errorf("bucket %q: %w", name, err)
	}
	if opts.Amount < 0 {
		return before, after, fmt.Errorf("bucket %q: the refill amount must be positive, or 0 for the bucket's amount; got %d", name, opts.Amount)
	}
	if opts.Wait <= 0 {
		opts.Wait = refillWait
	}
	qctx, cancel := context.WithTimeout(ctx, opts.Wait)
	id, err := keyShard(qctx, c, name, key)
	if err == nil {
		before, err = queryKey(qctx, c, name, id, key)
	}
	cancel()
	if err != nil {
		return before, after, err
	}
	sig := workflows.Refill{ID: "manual-" + uuid.NewString(), Amount: opts.Amount, Key: key}
	if _, _, err := refill(ctx, c, name, id, sig, opts); err != nil {
		return before, after, err
	}
	qctx, cancel = context.WithTimeout(ctx, opts.Wait)
	defer cancel()
	after, err = queryKey(qctx, c, name, id, key)
	return before, after, err
}

// keyShard returns the workflow ID of the shard of the named keyed bucket that holds key.
func keyShard(ctx context.Context, c client.Client, name, key string) (string, error) {
	first, err := query(ctx, c, name, workflows.ShardID(name, 0))
	var none *NotRunningError
	if errors.As(err, &none) && none.Status == enumspb.WORKFLOW_EXECUTION_STATUS_UNSPECIFIED {
		if _, uerr := query(ctx, c, name, workflows.BucketID(name)); uerr == nil {
			return "", fmt.Errorf("bucket %q is not keyed: it has no key %q", name, key)
		}
	}
	if err != nil {
		return "", err
	}
	return workflows.KeyWorkflowID(name, key, first.Spec.ShardCount()), nil
}

// queryKey asks shard id of the named bucket for key's state.
func queryKey(ctx context.Context, c client.Client, name, id, key string) (workflows.KeyStatus, error) {
	resp, err := c.QueryWorkflowWithOptions(ctx, &client.QueryWorkflowWithOptionsRequest{
		WorkflowID:           id,
		QueryType:            workflows.KeyQuery,
		Args:                 []any{key},
		QueryRejectCondition: enumspb.QUERY_REJECT_CONDITION_NOT_OPEN,
	})
	if err != nil {
		return workflows.KeyStatus{}, queryError(name, err)
	}
	if rejected := resp.QueryRejected; rejected != nil {
		return workflows.KeyStatus{}, notRunning(ctx, c, name, id, rejected.GetStatus())
	}
	var st workflows.KeyStatus
	if err := resp.QueryResult.Get(&st); err != nil {
		return workflows.KeyStatus{}, fmt.Errorf("bucket %q: reading key %q: %w", name, key, err)
	}
	return st, nil
}
