package interceptor

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/google/uuid"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	updatepb "go.temporal.io/api/update/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"google.golang.org/grpc/codes"

	"github.com/tokenbucket/tb/workflows"
)

// An acquire update goes to the bucket through the client's WorkflowService,
// not client.UpdateWorkflow, and the Acquirer retries it by itself, because
// of how the server (1.32) treats a workflow with more Updates in flight than
// history.maxInFlightUpdates (10):
//
//   - The update that finds the limit reached is answered ResourceExhausted,
//     and that error, raised with the workflow's lock held, clears the
//     workflow's cached state: every update in flight is aborted (retryably,
//     "workflow update was aborted") and the speculative workflow task
//     carrying them is dropped.
//   - client.UpdateWorkflow retries both answers after 200 ms, doubling; a
//     fleet's updates keep crossing the limit, clearing each other, until
//     the backoff has spread them out: about 9 s without a single event in
//     the bucket's history, signals included, at 64 processes.
//   - A call cut short by its context can strand the speculative task it
//     created (it never reaches matching) for 5 s, holding every update
//     admitted after it.
//
// So an update is sent once per try and never cut short; a congested answer
// (ResourceExhausted, Unavailable, and WorkflowNotReady, with which the
// server aborts the updates a failed workflow task carried) doubles the
// process's spread (which paces
// its later comebacks), and the same update (same ID, answered once) is sent
// again after a random part of a backoff doubled per congested answer (see
// maxBackoff): the fleet backs off at its own pace instead of the SDK's.

// maxBackoff bounds the wait before an update the bucket answered congested
// is sent again: a random part of minSpread, doubled for each congested
// answer in a row. While a fleet's updates keep the bucket congested they
// thin out exponentially, and the bucket's task queue drains; at maxSpread
// (the bound of the spread of comebacks) 64 processes kept it congested.
const maxBackoff = 8 * time.Second

// workflowServicer is the part of a client.Client the Acquirer sends its
// updates through. An Updater without it gets client.UpdateWorkflow, and
// the SDK's retries.
type workflowServicer interface {
	WorkflowService() workflowservice.WorkflowServiceClient
}

// identity names this process in the updates it sends, as the SDK's default does.
var identity = func() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%d@%s@tb", os.Getpid(), host)
}()

// update runs the acquire update within the Acquirer's timeout, sending it
// again, under the same update ID, while the bucket answers congested, and
// adapts the queue's spread to how it went (see queue.spread).
func (a *Acquirer) update(q *queue, batch workflows.AcquireBatch) (workflows.AcquireResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), a.opts.Timeout)
	defer cancel()
	id := uuid.NewString()
	for tries := 0; ; tries++ {
		start := a.now()
		resp, err := a.updateOnce(ctx, q.wf, id, batch)
		if err == nil || ctx.Err() != nil || !congested(err) {
			a.mu.Lock()
			q.measure(a.now().Sub(start)) // the try that was answered
			a.mu.Unlock()
			return resp, a.classify(q, err)
		}
		a.mu.Lock()
		q.congest()
		a.mu.Unlock()
		delay := rand.N(min(maxBackoff, minSpread<<min(tries, 10)))
		select {
		case <-ctx.Done():
			return resp, a.classify(q, err)
		case <-time.After(delay): // backing off from a congested bucket
		}
	}
}

// congested reports whether an update's error is the server's answer to too
// many updates at once (or to a bucket continuing as new, or a server
// restarting), or to a workflow task that failed while it carried the
// update (WorkflowNotReady: the server retries the task, and the update was
// not applied): worth sending again, later.
func congested(err error) bool {
	st := serviceerror.ToStatus(err)
	switch st.Code() {
	case codes.ResourceExhausted, codes.Unavailable, codes.Aborted:
		return true
	}
	var notReady *serviceerror.WorkflowNotReady
	return errors.As(serviceerror.FromStatus(st), &notReady)
}

// updateOnce sends the acquire update once and waits for its outcome.
func (a *Acquirer) updateOnce(ctx context.Context, wf, id string, batch workflows.AcquireBatch) (resp workflows.AcquireResponse, err error) {
	if a.svc == nil {
		h, err := a.c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{UpdateID: id, WorkflowID: wf,
			UpdateName: workflows.AcquireUpdate, Args: []any{batch}, WaitForStage: client.WorkflowUpdateStageCompleted})
		if err == nil {
			err = h.Get(ctx, &resp)
		}
		return resp, err
	}
	args, err := a.opts.DataConverter.ToPayloads(batch)
	if err != nil {
		return resp, err
	}
	exec := &commonpb.WorkflowExecution{WorkflowId: wf}
	wait := &updatepb.WaitPolicy{LifecycleStage: enumspb.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_COMPLETED}
	r, err := a.svc.UpdateWorkflowExecution(ctx, &workflowservice.UpdateWorkflowExecutionRequest{
		Namespace:         a.opts.Namespace,
		WorkflowExecution: exec,
		WaitPolicy:        wait,
		Request: &updatepb.Request{
			Meta:  &updatepb.Meta{UpdateId: id, Identity: identity},
			Input: &updatepb.Input{Name: workflows.AcquireUpdate, Args: args},
		},
	})
	if err != nil {
		return resp, err
	}
	outcome := r.GetOutcome()
	for outcome == nil { // the server's long poll ended first: ask again
		p, err := a.svc.PollWorkflowExecutionUpdate(ctx, &workflowservice.PollWorkflowExecutionUpdateRequest{
			Namespace:  a.opts.Namespace,
			UpdateRef:  &updatepb.UpdateRef{WorkflowExecution: exec, UpdateId: id},
			Identity:   identity,
			WaitPolicy: wait,
		})
		if err != nil {
			return resp, err
		}
		outcome = p.GetOutcome()
	}
	if f := outcome.GetFailure(); f != nil {
		return resp, a.failures.FailureToError(f)
	}
	if err := a.opts.DataConverter.FromPayloads(outcome.GetSuccess(), &resp); err != nil {
		return resp, fmt.Errorf("decoding the answer (is AcquirerOptions.DataConverter the client's?): %w", err)
	}
	return resp, nil
}

// classify turns the errors of an acquire update into the errors callers test for.
func (a *Acquirer) classify(q *queue, err error) error {
	if err == nil {
		return nil
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return err // RateLimited, InvalidRequest, UnknownBucket: the bucket's own answer
	}
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		where := ""
		if a.svc != nil {
			where = fmt.Sprintf(" in namespace %q (AcquirerOptions.Namespace)", a.opts.Namespace)
		}
		return temporal.NewApplicationErrorWithCause(
			fmt.Sprintf("bucket %q is not running (no workflow %s%s); run tb sync-schedules", q.bucket, q.wf, where),
			workflows.ErrUnknownBucket, err)
	}
	var nsNotFound *serviceerror.NamespaceNotFound
	if errors.As(err, &nsNotFound) {
		return fmt.Errorf("bucket %q: no namespace %q (AcquirerOptions.Namespace): %w", q.bucket, a.opts.Namespace, err)
	}
	return fmt.Errorf("bucket %q: acquire failed: %w", q.bucket, err)
}
