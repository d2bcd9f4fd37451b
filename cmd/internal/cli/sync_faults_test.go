package cli_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/common/dynamicconfig"
	"go.temporal.io/server/temporal"
	"go.temporal.io/server/temporaltest"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/workflows"
)

// oneBucket is a buckets file holding bucket api, followed by extra lines of its definition.
func oneBucket(extra string) string {
	return "buckets:\n  - name: api\n    schedule: \"@hourly\"\n    amount: 10\n    maximum: 10\n" + extra
}

// queueWorker runs tb's workflows on queue with a client of its own, as
// another process would; stop ends it (also at the end of the test).
func queueWorker(t *testing.T, s *testserver.Server, queue string) (stop func()) {
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

// bucketRun returns the task queue and run ID of a bucket's current run.
func bucketRun(t *testing.T, s *testserver.Server, name string) (queue, runID string) {
	t.Helper()
	desc, err := s.Client.DescribeWorkflowExecution(context.Background(), workflows.BucketID(name), "")
	if err != nil {
		t.Fatalf("bucket %s: %v", name, err)
	}
	info := desc.GetWorkflowExecutionInfo()
	return info.GetTaskQueue(), info.GetExecution().GetRunId()
}

// scheduleQueue returns the task queue a bucket's refill Schedule starts its refills on.
func scheduleQueue(t *testing.T, s *testserver.Server, name string) string {
	t.Helper()
	ctx := context.Background()
	desc, err := s.Client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(name)).Describe(ctx)
	if err != nil {
		t.Fatalf("Schedule of %s: %v", name, err)
	}
	return desc.Schedule.Action.(*client.ScheduleWorkflowAction).TaskQueue
}

// waitOnQueue waits until bucket name's running workflow is on queue and answers queries.
func waitOnQueue(t *testing.T, s *testserver.Server, name, queue string) workflows.Status {
	t.Helper()
	var st workflows.Status
	testserver.Eventually(t, 20*time.Second, func() (bool, string) {
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
	s := testserver.NewServer(t)
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
			acq, err := interceptor.NewAcquirer(s.Client, interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace()})
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

// TestSyncRevertsATypoQueue checks that a bucket sent to a task queue nobody
// polls comes back, with its tokens, when buckets.yaml is fixed.
func TestSyncRevertsATypoQueue(t *testing.T) {
	s := testserver.NewServer(t)
	tbRun, write, _ := against(t, s)
	fresh := "  - name: fresh\n    schedule: \"@hourly\"\n    amount: 3\n    maximum: 3\n"

	write(oneBucket(""))
	if r := tbRun("sync-schedules"); r.code != 0 {
		t.Fatal(r)
	}
	acq, err := interceptor.NewAcquirer(s.Client, interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace()})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := acq.Acquire(context.Background(), "api", "take-3", 3); err != nil || !d.Granted {
		t.Fatalf("acquire: %+v %v", d, err)
	}

	// The typo: api moves to a queue nobody polls, and fresh is created there.
	write(oneBucket("    task_queue: tbb\n") + fresh + "    task_queue: tbb\n")
	typo := tbRun("sync-schedules")
	if typo.code != 0 {
		t.Fatalf("sync to the typo queue: %+v", typo)
	}
	for _, name := range []string{"api", "fresh"} {
		if want := fmt.Sprintf("tb: warning: bucket %q: no worker polls task queue \"tbb\"", name); !strings.Contains(typo.err, want) {
			t.Errorf("stderr %q, want %q", typo.err, want)
		}
	}
	testserver.Eventually(t, 20*time.Second, func() (bool, string) {
		q, _ := bucketRun(t, s, "api")
		return q == "tbb", "api is on task queue " + q
	})

	// The fix: both come back to tb, api with its 7 tokens, fresh with its initial 3.
	write(oneBucket("") + fresh)
	fix := tbRun("sync-schedules")
	rows := table(fix.out)
	if fix.code != 0 || rows["api"][2] != "updated" || !strings.HasPrefix(rows["api"][3], "task queue tbb → tb") ||
		rows["fresh"][2] != "updated" || rows["api"][1] != "updated" {
		t.Fatalf("reverting the typo: %+v", fix)
	}
	if st := waitOnQueue(t, s, "api", workflows.TaskQueue); st.Tokens != 7 || st.Granted != 3 {
		t.Errorf("api after the revert: %d tokens, %d granted; want 7 and 3", st.Tokens, st.Granted)
	}
	if st := waitOnQueue(t, s, "fresh", workflows.TaskQueue); st.Tokens != 3 {
		t.Errorf("fresh after the revert: %d tokens, want 3", st.Tokens)
	}
	if q := scheduleQueue(t, s, "api"); q != workflows.TaskQueue {
		t.Errorf("api's Schedule refills on %q", q)
	}
	tokens := tbRun("tokens")
	if tokens.code != 0 || table(tokens.out)["api"][1] != "7/10" {
		t.Errorf("tokens after the revert: %+v", tokens)
	}
	again := tbRun("sync-schedules")
	if rows := table(again.out); again.code != 0 || rows["api"][2] != "unchanged" || rows["fresh"][2] != "unchanged" || again.err != "" {
		t.Errorf("syncing again: %+v", again)
	}
}

// TestSyncWillNotRollBackABucketThatRan checks that a bucket whose queue lost
// its worker after the bucket had served there is not restarted from an older
// state: sync fails, naming the bucket and the queue that needs a worker, and
// moves it once a worker is back.
func TestSyncWillNotRollBackABucketThatRan(t *testing.T) {
	// Short polls and a short poller memory, so the server soon forgets a stopped worker.
	ts := temporaltest.NewServer(temporaltest.WithT(t),
		temporaltest.WithBaseClientOptions(client.Options{Logger: sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler))}),
		temporaltest.WithBaseServerOptions(temporal.WithDynamicConfigClient(dynamicconfig.StaticClient{
			dynamicconfig.ForceSearchAttributesCacheRefreshOnRead.Key(): []dynamicconfig.ConstrainedValue{{Value: true}},
			dynamicconfig.MatchingLongPollExpirationInterval.Key():      []dynamicconfig.ConstrainedValue{{Value: time.Second}},
			dynamicconfig.PollerHistoryTTL.Key():                        []dynamicconfig.ConstrainedValue{{Value: 3 * time.Second}},
		})))
	ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) { workflows.Register(r) })
	s := &testserver.Server{TestServer: ts, Client: ts.GetDefaultClient()}
	tbRun, write, _ := against(t, s)

	stop := queueWorker(t, s, "limits_c")
	write(oneBucket("    task_queue: limits_c\n"))
	if r := tbRun("sync-schedules"); r.code != 0 {
		t.Fatal(r)
	}
	acq, err := interceptor.NewAcquirer(s.Client, interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace()})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := acq.Acquire(context.Background(), "api", "take-2", 2); err != nil || !d.Granted {
		t.Fatalf("acquire: %+v %v", d, err)
	}
	_, before := bucketRun(t, s, "api")
	stop()
	testserver.Eventually(t, 20*time.Second, func() (bool, string) {
		r, err := s.Client.DescribeTaskQueue(context.Background(), "limits_c", enumspb.TASK_QUEUE_TYPE_WORKFLOW)
		return err == nil && len(r.GetPollers()) == 0, fmt.Sprintf("pollers of limits_c: %v %v", r.GetPollers(), err)
	})

	write(oneBucket(""))
	began := time.Now()
	r := tbRun("sync-schedules")
	if r.code != 1 || !strings.Contains(r.err, `bucket "api"`) || !strings.Contains(r.err, `task queue "limits_c"`) {
		t.Errorf("moving a bucket whose worker is gone: %+v", r)
	}
	if d := time.Since(began); d > 10*time.Second {
		t.Errorf("failing took %v", d)
	}
	if q, run := bucketRun(t, s, "api"); q != "limits_c" || run != before {
		t.Errorf("api is run %s on %q, want its run %s left on limits_c", run, q, before)
	}

	queueWorker(t, s, "limits_c")
	testserver.Eventually(t, 20*time.Second, func() (bool, string) {
		r := tbRun("sync-schedules")
		return r.code == 0, fmt.Sprintf("sync with a worker back on limits_c: %+v", r)
	})
	if st := waitOnQueue(t, s, "api", workflows.TaskQueue); st.Tokens != 8 {
		t.Errorf("api on tb: %d tokens, want 8", st.Tokens)
	}
}

// TestSyncRetireIsBounded checks that --retire gives up, naming the bucket and
// its task queue, when nothing answers there, and leaves what a re-run retires.
func TestSyncRetireIsBounded(t *testing.T) {
	s := testserver.NewServer(t)
	tbRun, write, _ := against(t, s)
	gone := "  - name: gone\n    schedule: \"@hourly\"\n    amount: 1\n    maximum: 1\n"

	// gone's queue has never had a worker.
	write(oneBucket("") + gone + "    task_queue: nobody\n")
	if r := tbRun("sync-schedules"); r.code != 0 {
		t.Fatal(r)
	}
	waitListed(t, s, 2)
	write(oneBucket(""))
	began := time.Now()
	r := tbRun("sync-schedules", "--retire")
	if r.code != 1 || !strings.Contains(r.err, `bucket "gone"`) || !strings.Contains(r.err, `task queue "nobody"`) {
		t.Errorf("retiring a bucket no worker runs: %+v", r)
	}
	// The server knows no worker polls "nobody": no need to wait out the 30s bound.
	if d := time.Since(began); d > 10*time.Second {
		t.Errorf("failing took %v", d)
	}
	ctx := context.Background()
	if _, err := s.Client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID("gone")).Describe(ctx); err != nil {
		t.Errorf("the failed retire deleted gone's Schedule: %v", err)
	}

	// With a worker there, running it again finishes the job.
	queueWorker(t, s, "nobody")
	testserver.Eventually(t, 20*time.Second, func() (bool, string) {
		r = tbRun("sync-schedules", "--retire")
		row := table(r.out)["gone"]
		return r.code == 0 && len(row) >= 3 && row[1] == "deleted" && row[2] == "retired", fmt.Sprintf("retrying: %+v", r)
	})
	desc, err := s.Client.DescribeWorkflowExecution(ctx, workflows.BucketID("gone"), "")
	if err != nil || desc.GetWorkflowExecutionInfo().GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
		t.Errorf("gone after --retire: %v %v", desc.GetWorkflowExecutionInfo().GetStatus(), err)
	}
}

// TestSyncRetireGivesUpAfter30s: a worker that polled lately but is gone
// leaves nothing to answer the retire; sync gives up after 30s.
func TestSyncRetireGivesUpAfter30s(t *testing.T) {
	s := testserver.NewServer(t)
	tbRun, write, _ := against(t, s)
	stop := queueWorker(t, s, "limits_d")
	write(oneBucket("") + "  - name: gone\n    schedule: \"@hourly\"\n    amount: 1\n    maximum: 1\n    task_queue: limits_d\n")
	if r := tbRun("sync-schedules"); r.code != 0 {
		t.Fatal(r)
	}
	waitOnQueue(t, s, "gone", "limits_d")
	waitListed(t, s, 2)
	stop()
	write(oneBucket(""))
	began := time.Now()
	r := tbRun("sync-schedules", "--retire")
	if r.code != 1 || !strings.Contains(r.err, `bucket "gone"`) || !strings.Contains(r.err, `task queue "limits_d"`) {
		t.Errorf("retiring a bucket whose worker left: %+v", r)
	}
	if d := time.Since(began); d > 45*time.Second {
		t.Errorf("failing took %v", d)
	}
}

// TestSyncRetiresBucketsKeptEarlier checks that a bucket once removed without
// --retire (its Schedule deleted, its workflow kept) is reported kept, and
// retired by a later --retire.
func TestSyncRetiresBucketsKeptEarlier(t *testing.T) {
	s := testserver.NewServer(t)
	tbRun, write, _ := against(t, s)
	write(twoBuckets)
	if r := tbRun("sync-schedules"); r.code != 0 {
		t.Fatal(r)
	}
	waitListed(t, s, 2)
	write(twoBuckets[:strings.Index(twoBuckets, "  - name: beta")])
	if r := tbRun("sync-schedules"); r.code != 0 || table(r.out)["beta"][2] != "kept" {
		t.Fatalf("removing beta: %+v", r)
	}
	waitListed(t, s, 1)
	kept := tbRun("sync-schedules")
	if row := table(kept.out)["beta"]; kept.code != 0 || !sameRows(map[string][]string{"beta": row}, map[string][]string{"beta": {"beta", "-", "kept"}}) {
		t.Errorf("sync after beta was kept: %+v", kept)
	}
	retire := tbRun("sync-schedules", "--retire")
	if row := table(retire.out)["beta"]; retire.code != 0 || !sameRows(map[string][]string{"beta": row}, map[string][]string{"beta": {"beta", "-", "retired"}}) {
		t.Errorf("--retire after beta was kept: %+v", retire)
	}
	ctx := context.Background()
	desc, err := s.Client.DescribeWorkflowExecution(ctx, workflows.BucketID("beta"), "")
	if err != nil || desc.GetWorkflowExecutionInfo().GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
		t.Errorf("beta after --retire: %v %v", desc.GetWorkflowExecutionInfo().GetStatus(), err)
	}
}

// TestSyncRefusesToEmptyTheNamespace: a file with no buckets deletes what tb
// owns only with --delete-all.
func TestSyncRefusesToEmptyTheNamespace(t *testing.T) {
	s := testserver.NewServer(t)
	tbRun, write, _ := against(t, s)
	ctx := context.Background()
	write(twoBuckets)
	if r := tbRun("sync-schedules"); r.code != 0 {
		t.Fatal(r)
	}
	waitListed(t, s, 2)
	write("buckets: []\n")
	for _, args := range [][]string{{"sync-schedules"}, {"sync-schedules", "--dry-run"}, {"sync-schedules", "--retire"}} {
		r := tbRun(args...)
		if r.code != 1 || !strings.Contains(r.err, "--delete-all") || !strings.Contains(r.err, "alpha, beta") {
			t.Errorf("tb %v with no buckets: %+v", args, r)
		}
	}
	for _, name := range []string{"alpha", "beta"} {
		if _, err := s.Client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(name)).Describe(ctx); err != nil {
			t.Errorf("%s's Schedule after the refusals: %v", name, err)
		}
	}
	r := tbRun("sync-schedules", "--delete-all")
	want := map[string][]string{"alpha": {"alpha", "deleted", "kept"}, "beta": {"beta", "deleted", "kept"}}
	if r.code != 0 || !sameRows(table(r.out), want) {
		t.Errorf("--delete-all: %+v", r)
	}
	// Nothing left to delete (the workflows are kept): an empty file is fine.
	waitListed(t, s, 0)
	if r := tbRun("sync-schedules"); r.code != 0 {
		t.Errorf("sync with no buckets and nothing to delete: %+v", r)
	}
}
