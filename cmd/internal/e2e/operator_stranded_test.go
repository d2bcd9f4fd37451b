package e2e_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/operator"
	"github.com/tokenbucket/tb/workflows"
)

// TestRestartAfterAnInterruptedRescue: a sync that ended a stranded run and
// stopped before starting its successor leaves a bucket the next sync starts
// from that run's state, not afresh.
func TestRestartAfterAnInterruptedRescue(t *testing.T) {
	ts := temporaltest.NewServer(temporaltest.WithT(t),
		temporaltest.WithBaseClientOptions(client.Options{Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))}))
	ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) { workflows.Register(r) })
	c := ts.GetDefaultClient()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := workflows.BucketID("api")
	sync := func(spec bucket.Spec) operator.Change {
		t.Helper()
		changes, err := operator.Apply(ctx, c, &bucket.Config{Buckets: []bucket.Spec{spec}}, operator.Options{})
		if err != nil || len(changes) != 1 {
			t.Fatalf("sync: %+v %v", changes, err)
		}
		return changes[0]
	}
	spec := bucket.Spec{Name: "api", Schedule: "@hourly", Amount: 10, Maximum: 10}
	sync(spec)
	h, err := c.UpdateWorkflow(ctx, client.UpdateWorkflowOptions{
		WorkflowID:   id,
		UpdateName:   workflows.AcquireUpdate,
		Args:         []any{workflows.AcquireBatch{Requests: []workflows.AcquireRequest{{ID: "take-3", Cost: 3}}}},
		WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	if err == nil {
		err = h.Get(ctx, nil)
	}
	if err != nil {
		t.Fatal(err)
	}

	// To a queue nobody polls: the bucket continues as new there, with its 7 tokens in its input.
	typo := spec
	typo.TaskQueue = "tbb"
	sync(typo)
	var runID string
	eventually(t, func() (bool, string) {
		desc, err := c.DescribeWorkflowExecution(ctx, id, "")
		info := desc.GetWorkflowExecutionInfo()
		runID = info.GetExecution().GetRunId()
		return err == nil && info.GetTaskQueue() == "tbb", fmt.Sprintf("the bucket did not move to tbb: %v %v", info, err)
	})

	// A sync ended that run, then stopped.
	// The reason a rescue ends a run with.
	if err := c.TerminateWorkflow(ctx, id, runID, "tb sync-schedules: stranded on a task queue no worker polls; restarted on task queue "+strconv.Quote(workflows.TaskQueue)); err != nil {
		t.Fatal(err)
	}
	ch := sync(spec)
	if ch.Workflow != operator.Updated || !strings.Contains(ch.Details, "ended by an earlier sync") {
		t.Errorf("sync after the interrupted rescue: %+v", ch)
	}
	var st workflows.Status
	eventually(t, func() (bool, string) {
		var err error
		st, err = operator.State(ctx, c, "api")
		return err == nil, fmt.Sprintf("the restarted bucket does not answer: %v", err)
	})
	desc, err := c.DescribeWorkflowExecution(ctx, id, "")
	if err != nil || desc.GetWorkflowExecutionInfo().GetTaskQueue() != workflows.TaskQueue ||
		desc.GetWorkflowExecutionInfo().GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
		t.Errorf("bucket after the restart: %v %v", desc.GetWorkflowExecutionInfo(), err)
	}
	if st.Tokens != 7 || st.Granted != 3 {
		t.Errorf("restarted with %d tokens, %d granted; want the 7 and 3 of the ended run", st.Tokens, st.Granted)
	}
	if ch := sync(spec); ch.Workflow != operator.Unchanged {
		t.Errorf("sync again: %+v", ch)
	}
}

// eventually polls cond until it holds, failing the test after 20s with its explanation.
func eventually(t *testing.T, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(why)
		}
		<-tick.C
	}
}
