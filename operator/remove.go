package operator

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/workflows"
)

// retireTimeout bounds the wait for a bucket workflow to answer the retire update.
const retireTimeout = reconfigureTimeout

// A removal is a bucket tb owns that the file no longer declares.
type removal struct {
	name     string
	schedule bool     // it has a refill Schedule tb owns; else only a running workflow
	listed   []string // its workflows the visibility store lists as running
}

// removed lists the buckets not wanted that tb owns: those with a refill
// Schedule tb created, and those whose bucket workflow runs without one (a
// bucket removed earlier without --retire), so a later --retire ends them too.
func (s *syncer) removed(ctx context.Context, want map[string]bool) ([]removal, error) {
	found := map[string]bool{} // name → has a Schedule
	it, err := s.c.ScheduleClient().List(ctx, client.ScheduleListOptions{PageSize: 1000})
	if err != nil {
		return nil, err
	}
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return nil, err
		}
		name, ok := strings.CutPrefix(e.ID, workflows.ScheduleIDPrefix)
		if ok && !want[name] && s.owned(e.Memo) {
			found[name] = true
		}
	}
	runs, err := running(ctx, s.c)
	if err != nil {
		return nil, err
	}
	for name := range runs {
		if _, listed := found[name]; !want[name] && !listed {
			found[name] = false
		}
	}
	gone := make([]removal, 0, len(found))
	for name, schedule := range found {
		gone = append(gone, removal{name: name, schedule: schedule, listed: runs[name]})
	}
	sort.Slice(gone, func(i, j int) bool { return gone[i].name < gone[j].name })
	return gone, nil
}

// remove retires a removed bucket's workflow when asked to, then deletes its Schedule.
//
// Retiring comes first. A retire that fails (no worker answers) then leaves
// the bucket as it was, Schedule and all, and running sync again retries
// both. Deleting first would leave, on such a failure, a bucket that nothing
// refills. A refill the Schedule starts after the retire finds the bucket
// completed, and does not start it again.
//
// A keyed bucket's shards are retired last to first, so that a retire that
// fails part way leaves shard 0 running, by which the next sync finds them.
func (s *syncer) remove(ctx context.Context, r removal) Change {
	ch := Change{Bucket: r.name}
	ids, queues, err := s.runningWorkflows(ctx, r)
	if err != nil {
		ch.Err = fmt.Errorf("bucket workflow: %w", err)
		return ch
	}
	switch {
	case len(ids) > 0 && s.opts.Retire:
		for i := len(ids) - 1; i >= 0; i-- {
			if err := s.retire(ctx, ids[i], queues[i]); err != nil {
				ch.Err = err
				return ch
			}
		}
		ch.Workflow = Retired
	case len(ids) > 0:
		ch.Workflow = Kept
	}
	if !r.schedule {
		return ch
	}
	ch.Schedule = Deleted
	if s.dryRun {
		return ch
	}
	if err := s.c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(r.name)).Delete(ctx); err != nil {
		var notFound *serviceerror.NotFound
		if !errors.As(err, &notFound) {
			ch.Schedule, ch.Err = "", fmt.Errorf("deleting refill Schedule: %w", err)
		}
	}
	return ch
}

// runningWorkflows returns the IDs of removed bucket r's running workflows,
// and the task queues they run on: the bucket's, or a keyed bucket's shards
// in order (as many as shard 0's spec says, and those the visibility store
// listed when r was found).
func (s *syncer) runningWorkflows(ctx context.Context, r removal) (ids, queues []string, err error) {
	candidates := map[string]bool{workflows.BucketID(r.name): true, workflows.ShardID(r.name, 0): true}
	for _, id := range r.listed {
		candidates[id] = true
	}
	desc, err := s.c.DescribeWorkflowExecution(ctx, workflows.ShardID(r.name, 0), "")
	var notFound *serviceerror.NotFound
	switch {
	case errors.As(err, &notFound):
	case err != nil:
		return nil, nil, err
	case desc.GetWorkflowExecutionInfo().GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING:
		var spec bucket.Spec
		if err := s.decodeMemo(desc.GetWorkflowExecutionInfo().GetMemo(), workflows.SpecMemo, &spec); err != nil {
			return nil, nil, err
		}
		for i := range spec.ShardCount() {
			candidates[workflows.ShardID(r.name, i)] = true
		}
	}
	order := []string{workflows.BucketID(r.name)}
	for i := range bucket.MaxShards {
		order = append(order, workflows.ShardID(r.name, i))
	}
	for _, id := range order {
		if !candidates[id] {
			continue
		}
		running, queue, err := s.workflowRunning(ctx, id)
		if err != nil {
			return nil, nil, err
		}
		if running {
			ids, queues = append(ids, id), append(queues, queue)
		}
	}
	return ids, queues, nil
}

// workflowRunning reports whether workflow id runs, and on which task queue.
func (s *syncer) workflowRunning(ctx context.Context, id string) (bool, string, error) {
	desc, err := s.c.DescribeWorkflowExecution(ctx, id, "")
	var notFound *serviceerror.NotFound
	if errors.As(err, &notFound) {
		return false, "", nil
	}
	if err != nil {
		return false, "", err
	}
	info := desc.GetWorkflowExecutionInfo()
	return info.GetStatus() == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING, info.GetTaskQueue(), nil
}

// retire ends running bucket workflow id on task queue queue through its
// retire update, which needs a worker there: it fails at once when the
// server knows of none, and after retireTimeout when none answers.
func (s *syncer) retire(ctx context.Context, id, queue string) error {
	if s.dryRun {
		return nil
	}
	if s.unpolled(ctx, queue) {
		return fmt.Errorf("retiring bucket workflow: no worker polls task queue %q: start a tb worker there, or end the workflow with `temporal workflow terminate --workflow-id %s`, and sync again",
			queue, id)
	}
	uctx, cancel := context.WithTimeout(ctx, retireTimeout)
	defer cancel()
	h, err := s.c.UpdateWorkflow(uctx, client.UpdateWorkflowOptions{
		WorkflowID:   id,
		UpdateName:   workflows.RetireUpdate,
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err == nil {
		err = h.Get(uctx, nil)
	}
	if err == nil {
		return nil
	}
	// The SDK may end the call at its own deadline, a moment before uctx's,
	// with its timeout error.
	var timedOut *client.WorkflowUpdateServiceTimeoutOrCanceledError
	if (uctx.Err() != nil || errors.As(err, &timedOut)) && ctx.Err() == nil {
		return fmt.Errorf("retiring bucket workflow: no answer within %v: is a tb worker polling task queue %q?", retireTimeout, queue)
	}
	// It may have ended meanwhile, e.g. retired by another sync.
	if running, _, derr := s.workflowRunning(ctx, id); derr == nil && !running {
		return nil
	}
	return fmt.Errorf("retiring bucket workflow: %w", err)
}
