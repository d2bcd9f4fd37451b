package operator

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	workflowpb "go.temporal.io/api/workflow/v1"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/workflows"
)

// pollersTimeout bounds asking the server who polls a task queue.
const pollersTimeout = 10 * time.Second

// unpolled reports whether the server says no worker has polled task queue
// queue for workflow tasks lately (it remembers pollers for minutes). It
// reports false when it cannot tell.
func (s *syncer) unpolled(ctx context.Context, queue string) bool {
	s.mu.Lock()
	v, ok := s.unpolledQueues[queue]
	s.mu.Unlock()
	if ok {
		return v
	}
	ctx, cancel := context.WithTimeout(ctx, pollersTimeout)
	defer cancel()
	resp, err := s.c.DescribeTaskQueue(ctx, queue, enumspb.TASK_QUEUE_TYPE_WORKFLOW)
	if err != nil {
		return false
	}
	v = len(resp.GetPollers()) == 0
	s.mu.Lock()
	s.unpolledQueues[queue] = v
	s.mu.Unlock()
	return v
}

// rescueReason begins the reason rescue gives for ending a stranded run.
const rescueReason = "tb sync-schedules: stranded on a task queue no worker polls; restarted on task queue "

// rescue restarts, on spec's task queue, a bucket whose current run is
// stranded on a task queue no worker polls, where it cannot take the
// configure update that would move it.
//
// Only a run that has never completed a workflow task is restarted: its
// state is then exactly the input it started with, so a new run with that
// input (on the right queue) loses and grants nothing. A run that did
// complete tasks holds state only a worker on its queue can hand on, and
// restarting it from its input could grant tokens twice: rescue fails,
// naming the queue that needs a worker.
func (s *syncer) rescue(ctx context.Context, spec bucket.Spec, run *workflowpb.WorkflowExecutionInfo) error {
	id := run.GetExecution().GetWorkflowId()
	from, runID := run.GetTaskQueue(), run.GetExecution().GetRunId()
	_, worked, err := s.startInput(ctx, id, runID)
	if err != nil {
		return fmt.Errorf("reading its run on task queue %q: %w", from, err)
	}
	if worked {
		return fmt.Errorf("it runs on task queue %q, which no worker polls, and has served there, so tb will not restart it from an older state: start a tb worker on task queue %q, then sync again to move it to %q",
			from, from, spec.TaskQueue)
	}
	err = s.c.TerminateWorkflow(ctx, id, runID, rescueReason+strconv.Quote(spec.TaskQueue))
	var notFound *serviceerror.NotFound
	if err != nil && !errors.As(err, &notFound) {
		return fmt.Errorf("ending its run on task queue %q: %w", from, err)
	}
	return s.restart(ctx, id, spec, from, runID)
}

// restart starts bucket workflow id again on spec's task queue with the
// input of runID, a run rescue ended. A sync that fails in between (or a
// later one) finds that run ended for this reason, and restarts from it too.
func (s *syncer) restart(ctx context.Context, id string, spec bucket.Spec, from, runID string) error {
	// A worker may have taken the run up between the read and its end. Its
	// history, now closed, tells: if it did, its state is unknown, and the
	// bucket starts again empty, which grants nothing twice.
	in, worked, err := s.startInput(ctx, id, runID)
	if err != nil {
		return fmt.Errorf("reading its ended run on task queue %q: %w", from, err)
	}
	in.Spec.TaskQueue = spec.TaskQueue
	if worked {
		st := bucket.State{}
		if in.State != nil {
			st = *in.State
		}
		st.Tokens = 0
		in.State = &st
	}
	err = s.start(ctx, in)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if err != nil && !errors.As(err, &started) { // started: another sync restarted it
		return fmt.Errorf("restarting it on task queue %q: %w", spec.TaskQueue, err)
	}
	if worked {
		return fmt.Errorf("a worker on task queue %q took its run up while it was being moved to %q: it was restarted there with no tokens, to grant none twice", from, spec.TaskQueue)
	}
	return nil
}

// rescued reports whether a bucket's latest run, ended, was ended by rescue.
func (s *syncer) rescued(ctx context.Context, id, runID string) (bool, error) {
	it := s.c.GetWorkflowHistory(ctx, id, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_CLOSE_EVENT)
	for it.HasNext() {
		ev, err := it.Next()
		if err != nil {
			return false, err
		}
		if t := ev.GetWorkflowExecutionTerminatedEventAttributes(); t != nil && strings.HasPrefix(t.GetReason(), rescueReason) {
			return true, nil
		}
	}
	return false, nil
}

// startInput returns the input a bucket workflow run started with, and
// whether the run has completed a workflow task (and so may hold another state).
func (s *syncer) startInput(ctx context.Context, id, runID string) (workflows.BucketInput, bool, error) {
	var in workflows.BucketInput
	it := s.c.GetWorkflowHistory(ctx, id, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for first := true; it.HasNext(); first = false {
		ev, err := it.Next()
		if err != nil {
			return in, false, err
		}
		if first {
			attrs := ev.GetWorkflowExecutionStartedEventAttributes()
			if attrs == nil {
				return in, false, fmt.Errorf("its history begins with %v, not its start", ev.GetEventType())
			}
			if err := s.opts.DataConverter.FromPayloads(attrs.GetInput(), &in); err != nil {
				return in, false, fmt.Errorf("reading its input: %w", err)
			}
		}
		if ev.GetEventType() == enumspb.EVENT_TYPE_WORKFLOW_TASK_COMPLETED {
			return in, true, nil
		}
	}
	return in, false, nil
}
