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

	"github.com/tokenbucket/tb/workflows"
)

// retireTimeout bounds the wait for a bucket workflow to answer the retire update.
const retireTimeout = reconfigureTimeout

// A removal is a bucket tb owns that the file no longer declares.
type removal struct {
	name     string
	schedule bool // it has a refill Schedule tb owns; else only a running workflow
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
	names, err := running(ctx, s.c)
	if err != nil {
		return nil, err
	}
	for _, name := range names {
		if _, listed := found[name]; !want[name] && !listed {
			found[name] = false
		}
	}
	gone := make([]removal, 0, len(found))
	for name, schedule := range found {
		gone = append(gone, removal{name: name, schedule: schedule})
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
func (s *syncer) remove(ctx context.Context, r removal) Change {
	ch := Change{Bucket: r.name}
	running, queue, err := s.bucketRunning(ctx, r.name)
	if err != nil {
		ch.Err = fmt.Errorf("bucket workflow: %w", err)
		return ch
	}
	switch {
	case running && s.opts.Retire:
		if err := s.retire(ctx, r.name, queue); err != nil {
			ch.Err = err
			return ch
		}
		ch.Workflow = Retired
	case running:
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

// bucketRunning reports whether the bucket's workflow runs, and on which task queue.
func (s *syncer) bucketRunning(ctx context.Context, name string) (bool, string, error) {
	desc, err := s.c.DescribeWorkflowExecution(ctx, workflows.BucketID(name), "")
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

// retire ends a running bucket workflow on task queue queue through its
// retire update, which needs a worker there: it fails at once when the
// server knows of none, and after retireTimeout when none answers.
func (s *syncer) retire(ctx context.Context, name, queue string) error {
	if s.dryRun {
		return nil
	}
	if s.unpolled(ctx, queue) {
		return fmt.Errorf("retiring bucket workflow: no worker polls task queue %q: start a tb worker there, or end the workflow with `temporal workflow terminate --workflow-id %s`, and sync again",
			queue, workflows.BucketID(name))
	}
	uctx, cancel := context.WithTimeout(ctx, retireTimeout)
	defer cancel()
	h, err := s.c.UpdateWorkflow(uctx, client.UpdateWorkflowOptions{
		WorkflowID:   workflows.BucketID(name),
		UpdateName:   workflows.RetireUpdate,
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err == nil {
		err = h.Get(uctx, nil)
	}
	if err == nil {
		return nil
	}
	if uctx.Err() != nil && ctx.Err() == nil {
		return fmt.Errorf("retiring bucket workflow: no answer within %v: is a tb worker polling task queue %q?", retireTimeout, queue)
	}
	// It may have ended meanwhile, e.g. retired by another sync.
	if running, _, derr := s.bucketRunning(ctx, name); derr == nil && !running {
		return nil
	}
	return fmt.Errorf("retiring bucket workflow: %w", err)
}
