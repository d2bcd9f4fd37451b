package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"

	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/workflows"
)

// fixedBackoff limits like the Celery package's rate_limit decorator: take a
// token from the same bucket, and when there is none, retry after a fixed
// countdown whatever the bucket says.
type fixedBackoff struct {
	temporalinterceptor.WorkerInterceptorBase
	acq      *interceptor.Acquirer
	bucket   string
	activity string
	delay    time.Duration
}

type fixedGrantKey struct{}

func (f *fixedBackoff) InterceptActivity(ctx context.Context, next temporalinterceptor.ActivityInboundInterceptor) temporalinterceptor.ActivityInboundInterceptor {
	return &fixedInbound{ActivityInboundInterceptorBase: temporalinterceptor.ActivityInboundInterceptorBase{Next: next}, f: f}
}

type fixedInbound struct {
	temporalinterceptor.ActivityInboundInterceptorBase
	f *fixedBackoff
}

func (in *fixedInbound) ExecuteActivity(ctx context.Context, input *temporalinterceptor.ExecuteActivityInput) (any, error) {
	info := activity.GetInfo(ctx)
	if info.ActivityType.Name != in.f.activity {
		return in.Next.ExecuteActivity(ctx, input)
	}
	id := fmt.Sprintf("%s/%s/%d", info.WorkflowExecution.ID, info.ActivityID, info.Attempt)
	d, err := in.f.acq.Acquire(ctx, in.f.bucket, id, 1)
	if err != nil {
		return nil, err
	}
	if !d.Granted {
		return nil, temporal.NewApplicationErrorWithOptions("no token", workflows.ErrRateLimited,
			temporal.ApplicationErrorOptions{NextRetryDelay: in.f.delay, Category: temporal.ApplicationErrorCategoryBenign})
	}
	return in.Next.ExecuteActivity(context.WithValue(ctx, fixedGrantKey{}, d), input)
}

// countingUpdater counts the acquire updates that pass through it, and per
// request, their answers.
type countingUpdater struct {
	c                        interceptor.Updater
	denied, granted, updates *atomic.Int64
}

func (u *countingUpdater) UpdateWorkflow(ctx context.Context, o client.UpdateWorkflowOptions) (client.WorkflowUpdateHandle, error) {
	u.updates.Add(1)
	n := int64(len(o.Args[0].(workflows.AcquireBatch).Requests))
	h, err := u.c.UpdateWorkflow(ctx, o)
	if err != nil {
		if _, ok := interceptor.AsDenial(err); ok {
			u.denied.Add(n)
		}
		return nil, err
	}
	return &countingHandle{WorkflowUpdateHandle: h, u: u, n: n}, nil
}

func (u *countingUpdater) SignalWorkflow(ctx context.Context, workflowID, runID, signalName string, arg any) error {
	return u.c.SignalWorkflow(ctx, workflowID, runID, signalName, arg)
}

type countingHandle struct {
	client.WorkflowUpdateHandle
	u *countingUpdater
	n int64
}

func (h *countingHandle) Get(ctx context.Context, v any) error {
	err := h.WorkflowUpdateHandle.Get(ctx, v)
	if _, ok := interceptor.AsDenial(err); ok {
		h.u.denied.Add(h.n)
		return err
	}
	if resp, ok := v.(*workflows.AcquireResponse); ok && err == nil {
		for _, r := range resp.Results {
			if r.Granted {
				h.u.granted.Add(1)
			} else {
				h.u.denied.Add(1)
			}
		}
	}
	return err
}

// attemptCounter counts activity attempts, before any limiter sees them.
type attemptCounter struct {
	temporalinterceptor.WorkerInterceptorBase
	n *atomic.Int64
}

func (a *attemptCounter) InterceptActivity(ctx context.Context, next temporalinterceptor.ActivityInboundInterceptor) temporalinterceptor.ActivityInboundInterceptor {
	return &countingInbound{ActivityInboundInterceptorBase: temporalinterceptor.ActivityInboundInterceptorBase{Next: next}, n: a.n}
}

type countingInbound struct {
	temporalinterceptor.ActivityInboundInterceptorBase
	n *atomic.Int64
}

func (c *countingInbound) ExecuteActivity(ctx context.Context, in *temporalinterceptor.ExecuteActivityInput) (any, error) {
	c.n.Add(1)
	return c.Next.ExecuteActivity(ctx, in)
}
