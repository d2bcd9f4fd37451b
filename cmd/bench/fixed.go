package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	updatepb "go.temporal.io/api/update/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/grpc"

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
// request, their answers. It hands the Acquirer its client's WorkflowService,
// wrapped to count, as a client.Client would.
type countingUpdater struct {
	c                        client.Client
	denied, granted, updates *atomic.Int64
}

func (u *countingUpdater) UpdateWorkflow(ctx context.Context, o client.UpdateWorkflowOptions) (client.WorkflowUpdateHandle, error) {
	return nil, errors.New("countingUpdater: the Acquirer sends its updates through the WorkflowService")
}

func (u *countingUpdater) SignalWorkflow(ctx context.Context, workflowID, runID, signalName string, arg any) error {
	return u.c.SignalWorkflow(ctx, workflowID, runID, signalName, arg)
}

func (u *countingUpdater) WorkflowService() workflowservice.WorkflowServiceClient {
	return countingService{WorkflowServiceClient: u.c.WorkflowService(), u: u}
}

type countingService struct {
	workflowservice.WorkflowServiceClient
	u *countingUpdater
}

func (s countingService) UpdateWorkflowExecution(ctx context.Context, r *workflowservice.UpdateWorkflowExecutionRequest, opts ...grpc.CallOption) (*workflowservice.UpdateWorkflowExecutionResponse, error) {
	s.u.updates.Add(1)
	var batch workflows.AcquireBatch
	_ = converter.GetDefaultDataConverter().FromPayloads(r.GetRequest().GetInput().GetArgs(), &batch)
	resp, err := s.WorkflowServiceClient.UpdateWorkflowExecution(ctx, r, opts...)
	s.u.count(int64(len(batch.Requests)), resp.GetOutcome())
	return resp, err
}

func (s countingService) PollWorkflowExecutionUpdate(ctx context.Context, r *workflowservice.PollWorkflowExecutionUpdateRequest, opts ...grpc.CallOption) (*workflowservice.PollWorkflowExecutionUpdateResponse, error) {
	resp, err := s.WorkflowServiceClient.PollWorkflowExecutionUpdate(ctx, r, opts...)
	s.u.count(-1, resp.GetOutcome())
	return resp, err
}

// count counts the answers of an update of n requests (-1: not known) that
// has outcome o (nil: none yet).
func (u *countingUpdater) count(n int64, o *updatepb.Outcome) {
	if f := o.GetFailure(); f != nil {
		if f.GetApplicationFailureInfo().GetType() == workflows.ErrRateLimited && n > 0 {
			u.denied.Add(n)
		}
		return
	}
	var resp workflows.AcquireResponse
	if o.GetSuccess() == nil || converter.GetDefaultDataConverter().FromPayloads(o.GetSuccess(), &resp) != nil {
		return
	}
	for _, r := range resp.Results {
		if r.Granted {
			u.granted.Add(1)
		} else {
			u.denied.Add(1)
		}
	}
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
