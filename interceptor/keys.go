package interceptor

import (
	"context"
	"fmt"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/workflows"
)

// KeyHeader is the activity header that carries the key a workflow chose for
// a keyed bucket (see WithKey): a string payload, which a workflow written in
// another language can set as well.
const KeyHeader = "tb-key"

// ErrKeyRequired is the type of the non-retryable ApplicationError an
// activity guarded by a keyed bucket fails with when it has no key.
const ErrKeyRequired = "KeyRequired"

// A Key names one key of a keyed bucket: Bucket, its name; Shards, how many
// shards buckets.yaml gives it (Spec.ShardCount); Key, the key. With no Key
// and no Shards it names a bucket that is not keyed.
type Key struct {
	Bucket string
	Key    string
	Shards int
}

// A KeyedLimiter also takes tokens from keyed buckets, one key at a time.
// *Acquirer and tbtest.Limiter are KeyedLimiters.
type KeyedLimiter interface {
	Limiter
	AcquireKey(ctx context.Context, k Key, id string, cost int64) (Decision, error)
	SettleKey(ctx context.Context, k Key, id string, tokens int64) error
	ReportKey(ctx context.Context, k Key, id string, u Upstream) error
}

// target is where a Key's updates go.
type target struct {
	bucket, wf string
	keyed      bool
}

func (k Key) target() (target, error) {
	if err := bucket.CheckName(k.Bucket); err != nil {
		return target{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("bucket %q: not a bucket name: %v", k.Bucket, err), workflows.ErrInvalidRequest, nil)
	}
	if k.Shards == 0 && k.Key == "" {
		return target{bucket: k.Bucket, wf: workflows.BucketID(k.Bucket)}, nil
	}
	if k.Shards < 1 || k.Shards > bucket.MaxShards {
		return target{}, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("bucket %q: %d shards; a keyed bucket has 1 to %d", k.Bucket, k.Shards, bucket.MaxShards), workflows.ErrInvalidRequest, nil)
	}
	if err := bucket.CheckKey(k.Key); err != nil {
		return target{}, temporal.NewNonRetryableApplicationError(fmt.Sprintf("bucket %q: %v", k.Bucket, err), ErrKeyRequired, nil)
	}
	return target{bucket: k.Bucket, wf: workflows.KeyWorkflowID(k.Bucket, k.Key, k.Shards), keyed: true}, nil
}

type keyCtxKey struct{}

// WithKey returns a workflow context whose activities take the tokens of
// keyed buckets from key: the interceptor, registered on the workflow's
// worker too, carries it to the activity in KeyHeader.
func WithKey(ctx workflow.Context, key string) workflow.Context {
	return workflow.WithValue(ctx, keyCtxKey{}, key)
}

// InterceptWorkflow implements WorkerInterceptor: it carries a key set with
// WithKey to the activities the workflow calls.
func (i *Interceptor) InterceptWorkflow(ctx workflow.Context, next temporalinterceptor.WorkflowInboundInterceptor) temporalinterceptor.WorkflowInboundInterceptor {
	return &workflowInbound{WorkflowInboundInterceptorBase: temporalinterceptor.WorkflowInboundInterceptorBase{Next: next}}
}

type workflowInbound struct {
	temporalinterceptor.WorkflowInboundInterceptorBase
}

func (w *workflowInbound) Init(outbound temporalinterceptor.WorkflowOutboundInterceptor) error {
	return w.Next.Init(&workflowOutbound{WorkflowOutboundInterceptorBase: temporalinterceptor.WorkflowOutboundInterceptorBase{Next: outbound}})
}

type workflowOutbound struct {
	temporalinterceptor.WorkflowOutboundInterceptorBase
}

func (o *workflowOutbound) ExecuteActivity(ctx workflow.Context, activityType string, args ...any) workflow.Future {
	setKeyHeader(ctx)
	return o.Next.ExecuteActivity(ctx, activityType, args...)
}

func (o *workflowOutbound) ExecuteLocalActivity(ctx workflow.Context, activityType string, args ...any) workflow.Future {
	setKeyHeader(ctx)
	return o.Next.ExecuteLocalActivity(ctx, activityType, args...)
}

func setKeyHeader(ctx workflow.Context) {
	key, ok := ctx.Value(keyCtxKey{}).(string)
	if !ok {
		return
	}
	if h := temporalinterceptor.WorkflowHeader(ctx); h != nil {
		if p, err := converter.GetDefaultDataConverter().ToPayload(key); err == nil {
			h[KeyHeader] = p
		}
	}
}

// activityKey returns the key of a guarded activity, in this order: the one
// its workflow set (KeyHeader), then Options.KeyFunc's, then the activity's
// Priority.FairnessKey, which it inherits from its workflow.
func (i *Interceptor) activityKey(ctx context.Context, in *temporalinterceptor.ExecuteActivityInput) (string, error) {
	if p := temporalinterceptor.Header(ctx)[KeyHeader]; p != nil {
		var key string
		if err := converter.GetDefaultDataConverter().FromPayload(p, &key); err == nil && key != "" {
			return key, nil
		}
	}
	if i.opts.KeyFunc != nil {
		key, err := i.opts.KeyFunc(ctx, in)
		if err != nil {
			return "", temporal.NewNonRetryableApplicationError(fmt.Sprintf("the key of the activity: %v", err), ErrKeyRequired, err)
		}
		if key != "" {
			return key, nil
		}
	}
	if key := activity.GetInfo(ctx).Priority.FairnessKey; key != "" {
		return key, nil
	}
	return "", nil
}
