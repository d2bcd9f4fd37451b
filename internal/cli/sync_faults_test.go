package cli_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/internal/tbtest"
	"github.com/tokenbucket/tb/workflows"
)

// oneBucket is a buckets file holding bucket api, followed by extra lines of its definition.
func oneBucket(extra string) string {
	return "buckets:\n  - name: api\n    schedule: \"@hourly\"\n    amount: 10\n    maximum: 10\n" + extra
}

// queueWorker runs tb's workflows on queue with a client of its own, as
// another process would; stop ends it (also at the end of the test).
func queueWorker(t *testing.T, s *tbtest.Server, queue string) (stop func()) {
	t.Helper()
	w := worker.New(s.NewClient(), queue, worker.Options{})
	workflows.Register(w)
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() { once.Do(w.Stop) }
	t.Cleanup(stop)
	return stop
}

// scheduleQueue returns the task queue a bucket's refill Schedule starts its refills on.
func scheduleQueue(t *testing.T, s *tbtest.Server, name string) string {
	t.Helper()
	ctx := context.Background()
	desc, err := s.Client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(name)).Describe(ctx)
	if err != nil {
		t.Fatalf("Schedule of %s: %v", name, err)
	}
	return desc.Schedule.Action.(*client.ScheduleWorkflowAction).TaskQueue
}

// waitOnQueue waits until bucket name's running workflow is on queue and answers queries.
func waitOnQueue(t *testing.T, s *tbtest.Server, name, queue string) workflows.Status {
	t.Helper()
	var st workflows.Status
	tbtest.Eventually(t, 20*time.Second, func() (bool, string) {
		desc, err := s.Client.DescribeWorkflowExecution(context.Background(), workflows.BucketID(name), "")
		if err != nil {
			return false, err.Error()
		}
		info := desc.GetWorkflowExecutionInfo()
		if info.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING || info.GetTaskQueue() != queue {
			return false, fmt.Sprintf("bucket %s is %v on task queue %q, want running on %q", name, info.GetStatus(), info.GetTaskQueue(), queue)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if st, err = s.State(ctx, name); err != nil {
			return false, fmt.Sprintf("bucket %s on %q does not answer: %v", name, queue, err)
		}
		return true, ""
	})
	return st
}

// TestSyncTaskQueueEdits checks that after any sequence of edits to
// task_queue and --task-queue the bucket runs on the queue its spec (or the
// default) names, keeps its tokens, and answers tb tokens once the workers
// of the queues it left are gone.
func TestSyncTaskQueueEdits(t *testing.T) {
	s := tbtest.NewServer(t)
	tbRun, write, _ := against(t, s)
	stopA := queueWorker(t, s, "limits_a")
	stopB := queueWorker(t, s, "limits_b")

	steps := []struct {
		what    string
		file    string
		args    []string
		queue   string
		details string
	}{
		{"created with task_queue", oneBucket("    task_queue: limits_a\n"), nil, "limits_a", ""},
		{"task_queue removed", oneBucket(""), nil, workflows.TaskQueue, "task queue limits_a → tb"},
		{"--task-queue set", oneBucket(""), []string{"--task-queue", "limits_b"}, "limits_b", "task queue tb → limits_b"},
		{"task_queue wins over --task-queue", oneBucket("    task_queue: limits_a\n"), []string{"--task-queue", "limits_b"}, "limits_a", "task queue limits_b → limits_a"},
		{"task_queue changed, --task-queue dropped", oneBucket("    task_queue: limits_b\n"), nil, "limits_b", "task queue limits_a → limits_b"},
		{"--task-queue and task_queue both dropped", oneBucket(""), nil, workflows.TaskQueue, "task queue limits_b → tb"},
		{"--task-queue named with the file silent", oneBucket(""), []string{"--task-queue", "limits_a"}, "limits_a", "task queue tb → limits_a"},
		{"--task-queue dropped", oneBucket(""), nil, workflows.TaskQueue, "task queue limits_a → tb"},
	}
	for i, step := range steps {
		write(step.file)
		r := tbRun(append([]string{"sync-schedules"}, step.args...)...)
		row := table(r.out)["api"]
		if r.code != 0 || len(row) < 3 {
			t.Fatalf("step %d (%s): %+v", i, step.what, r)
		}
		if step.details != "" && (row[2] != "updated" || len(row) < 4 || row[3] != step.details) {
			t.Errorf("step %d (%s): got %q, want the workflow updated with %q", i, step.what, row, step.details)
		}
		st := waitOnQueue(t, s, "api", step.queue)
		if q := scheduleQueue(t, s, "api"); q != step.queue {
			t.Errorf("step %d (%s): the Schedule refills on %q, want %q", i, step.what, q, step.queue)
		}
		if i == 0 {
			acq, err := interceptor.NewAcquirer(s.Client, interceptor.AcquirerOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if d, err := acq.Acquire(context.Background(), "api", "take-4", 4); err != nil || !d.Granted {
				t.Fatalf("acquire: %+v %v", d, err)
			}
		} else if st.Tokens != 6 {
			t.Errorf("step %d (%s): %d tokens, want the 6 left kept across moves", i, step.what, st.Tokens)
		}
		again := tbRun(append([]string{"sync-schedules"}, step.args...)...)
		if row := table(again.out)["api"]; again.code != 0 || len(row) < 3 || row[1] != "unchanged" || row[2] != "unchanged" {
			t.Errorf("step %d (%s): syncing again: %+v", i, step.what, again)
		}
	}

	// A bucket an older tb started with --task-queue limits_a: its memo names no queue.
	old := bucket.Spec{Name: "old", Schedule: "@hourly", Amount: 5, Maximum: 5}
	if _, err := s.Client.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{
		ID:        workflows.BucketID(old.Name),
		TaskQueue: "limits_a",
		Memo:      map[string]any{workflows.SpecMemo: old},
	}, workflows.BucketWorkflowType, workflows.BucketInput{Spec: old}); err != nil {
		t.Fatal(err)
	}
	waitOnQueue(t, s, "old", "limits_a")
	write(oneBucket("") + "  - name: old\n    schedule: \"@hourly\"\n    amount: 5\n    maximum: 5\n")
	r := tbRun("sync-schedules")
	if row := table(r.out)["old"]; r.code != 0 || len(row) < 4 || row[2] != "updated" || row[3] != "task queue limits_a → tb" {
		t.Errorf("syncing a bucket whose memo names no queue: %+v", r)
	}
	waitOnQueue(t, s, "old", workflows.TaskQueue)

	// With the other queues' workers gone, every bucket still answers.
	stopA()
	stopB()
	tokens := tbRun("tokens")
	rows := table(tokens.out)
	if tokens.code != 0 || rows["api"][1] != "6/10" || rows["old"][1] != "5/5" {
		t.Errorf("tokens after the other workers stopped: %+v", tokens)
	}
}
