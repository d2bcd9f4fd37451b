package histories

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/operator"
	"github.com/tokenbucket/tb/workflows"
)

// The histories TestRecordHistories writes, each as <name><TB_RECORD_SUFFIX>.json.
const (
	grantsFile       = "bucket-grants-denials-refills"
	leasesFile       = "bucket-leases"
	reconfigureFile  = "bucket-reconfigure"
	firstRunFile     = "bucket-continue-as-new-run1"
	continuedRunFile = "bucket-continue-as-new-run2"
	retireFile       = "bucket-retire"
	scheduledFile    = "refill-schedule"
	missingFile      = "refill-missing-bucket"
	healedFile       = "bucket-started-by-refill"
	retiredFile      = "refill-retired-bucket"
	garbageFile      = "bucket-garbage"
)

var files = []string{grantsFile, leasesFile, reconfigureFile, firstRunFile, continuedRunFile,
	retireFile, scheduledFile, missingFile, healedFile, retiredFile, garbageFile}

// wait bounds every wait for the server or the worker.
const wait = 30 * time.Second

var suffixRE = regexp.MustCompile(`^[A-Za-z0-9._-]*$`)

// TestRecordHistories drives bucket and refill workflows through tb's real
// paths on an in-process Temporal server, and writes the history of each run
// to workflows/testdata/histories, where the replay test of package workflows
// replays them. Committed histories are never rewritten: it refuses to
// overwrite a file, so a new build records with a new TB_RECORD_SUFFIX.
//
//	TB_RECORD_HISTORIES=1 TB_RECORD_SUFFIX=-<commit> go test ./cmd/internal/histories -run TestRecordHistories -v
func TestRecordHistories(t *testing.T) {
	if os.Getenv("TB_RECORD_HISTORIES") != "1" {
		t.Skip("set TB_RECORD_HISTORIES=1 to record histories into workflows/testdata/histories")
	}
	suffix := os.Getenv("TB_RECORD_SUFFIX")
	if !suffixRE.MatchString(suffix) {
		t.Fatalf("TB_RECORD_SUFFIX %q: use letters, digits, '.', '_' and '-' only", suffix)
	}
	dir := filepath.Join("..", "..", "..", "workflows", "testdata", "histories")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		path := filepath.Join(dir, name+suffix+".json")
		if _, err := os.Stat(path); err == nil {
			t.Fatalf("%s exists: recorded histories are never rewritten; set TB_RECORD_SUFFIX to add new ones", path)
		}
	}
	r := &recorder{s: testserver.NewServer(t), dir: dir, suffix: suffix}
	t.Run("grants, denials and refills", r.grantsDenialsRefills)
	t.Run("leases", r.leases)
	t.Run("reconfigure", r.reconfigure)
	t.Run("continue as new", r.continueAsNew)
	t.Run("retire", r.retire)
	t.Run("refill from a schedule", r.refillFromSchedule)
	t.Run("refill of a missing bucket", r.refillMissingBucket)
	t.Run("garbage", r.garbage)
}

type recorder struct {
	s      *testserver.Server
	dir    string
	suffix string
}

// yearStart is the latest tick of an @yearly schedule, as a refill workflow would signal it.
func yearStart() workflows.Refill {
	tick := time.Date(time.Now().UTC().Year(), 1, 1, 0, 0, 0, 0, time.UTC)
	return workflows.Refill{ID: tick.Format(time.RFC3339), Tick: tick}
}

// grantsDenialsRefills: grants through the Acquirer, a partial batch,
// denials the validator turned away (no history) reported by the next
// accepted batch, refills with a tick and manual ones (one capped), a
// duplicate refill ID and a duplicate request ID.
func (r *recorder) grantsDenialsRefills(t *testing.T) {
	spec := bucket.Spec{Name: "grants", Schedule: "@yearly", Amount: 5, Maximum: 10, Initial: new(int64(4))}
	r.sync(t, spec)
	a := newAcquirer(t, r.s)

	r.grant(t, a, spec.Name, "grant-1", 1, 3)
	r.grant(t, a, spec.Name, "grant-2", 2, 1)
	resp := r.acquireBatch(t, spec.Name, "partial-batch", workflows.AcquireBatch{Requests: []workflows.AcquireRequest{
		{ID: "partial-1", Cost: 1}, {ID: "partial-2", Cost: 1}, {ID: "partial-3", Cost: 11}}})
	if res := resp.Results; len(res) != 3 || !res[0].Granted || res[1].Granted || res[1].RetryAfter <= 0 || res[2].Invalid == "" || resp.Tokens != 0 {
		t.Fatalf("partial batch: %+v; want granted, denied with a retry-after, invalid, and 0 tokens left", resp)
	}
	r.deny(t, a, spec.Name, "denied-1", 1)
	r.deny(t, a, spec.Name, "denied-2", 2)
	tick := yearStart()
	r.signal(t, spec.Name, workflows.RefillSignal, tick)
	r.grant(t, a, spec.Name, "grant-3", 1, 4) // reports the 3 tokens denied
	r.signal(t, spec.Name, workflows.RefillSignal, workflows.Refill{ID: "manual-1", Amount: 3})
	r.signal(t, spec.Name, workflows.RefillSignal, tick) // a duplicate: ignored
	r.grant(t, a, spec.Name, "grant-4", 2, 5)
	r.grant(t, a, spec.Name, "grant-1", 1, 5) // a duplicate: granted again, for free
	r.signal(t, spec.Name, workflows.RefillSignal, workflows.Refill{ID: "manual-2", Amount: 100})
	r.grant(t, a, spec.Name, "grant-5", 10, 0) // the refill was capped at 10
	r.wantState(t, spec.Name, 0, 17, 4)
	r.save(t, grantsFile, workflows.BucketID(spec.Name), r.runID(t, spec.Name))
}

// leases: optional requests lent while the bucket is rich, one refused,
// returns (one applied, one repeated, one late, after a refill) and a grant
// showing the tokens.
func (r *recorder) leases(t *testing.T) {
	spec := bucket.Spec{Name: "leases", Schedule: "@yearly", Amount: 10, Maximum: 20}
	r.sync(t, spec)
	lease := func(update, request, id string, cost int64, lent bool, tokens int64) {
		t.Helper()
		resp := r.acquireBatch(t, spec.Name, update, workflows.AcquireBatch{Requests: []workflows.AcquireRequest{
			{ID: request, Cost: 1}, {ID: id, Cost: cost, Optional: true}}})
		if res := resp.Results; len(res) != 2 || !res[0].Granted || res[1].Granted != lent || resp.Tokens != tokens {
			t.Fatalf("%s: %+v; want the request granted, the lease lent %t, %d tokens left", update, resp, lent, tokens)
		}
	}
	lease("lease-a", "lease-req-1", "lease-a", 5, true, 14)
	r.signal(t, spec.Name, workflows.ReturnSignal, workflows.Return{ID: "lease-a", Tokens: 3})
	r.wantState(t, spec.Name, 17, 3, 0)
	r.signal(t, spec.Name, workflows.ReturnSignal, workflows.Return{ID: "lease-a", Tokens: 2}) // returned already: ignored
	lease("lease-b", "lease-req-2", "lease-b", 5, true, 11)
	lease("lease-c", "lease-req-3", "lease-c", 6, false, 10) // 10 tokens are too few to lend 6
	r.signal(t, spec.Name, workflows.RefillSignal, workflows.Refill{ID: "manual-1", Amount: 2})
	r.signal(t, spec.Name, workflows.ReturnSignal, workflows.Return{ID: "lease-b", Tokens: 5}) // after a refill: ignored
	r.grant(t, newAcquirer(t, r.s), spec.Name, "lease-req-4", 1, 11)
	r.wantState(t, spec.Name, 11, 11, 0)
	r.save(t, leasesFile, workflows.BucketID(spec.Name), r.runID(t, spec.Name))
}

// garbage: what no Schedule or tb acquirer sends, and what tb sends since
// the build of 2026-12-01: a refill from the future and one with an ID too
// long to remember (both ignored), a request ID too long (invalid), a report
// of refused tokens, and a lease whose answer says how long it lasts.
func (r *recorder) garbage(t *testing.T) {
	spec := bucket.Spec{Name: "garbage", Schedule: "@yearly", Amount: 10, Maximum: 20}
	r.sync(t, spec)
	r.signal(t, spec.Name, workflows.RefillSignal, workflows.Refill{ID: "future", Tick: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)})
	r.signal(t, spec.Name, workflows.RefillSignal, workflows.Refill{ID: strings.Repeat("x", workflows.MaxIDLength+1), Amount: 1})
	resp := r.acquireBatch(t, spec.Name, "long-id", workflows.AcquireBatch{Requests: []workflows.AcquireRequest{
		{ID: strings.Repeat("y", workflows.MaxIDLength+1), Cost: 1}, {ID: "short", Cost: 1}}})
	if res := resp.Results; len(res) != 2 || res[0].Invalid == "" || !res[1].Granted {
		t.Fatalf("long id: %+v; want the long ID invalid and the short one granted", resp)
	}
	r.signal(t, spec.Name, workflows.ReportSignal, workflows.Report{Rejected: 7})
	resp = r.acquireBatch(t, spec.Name, "lease", workflows.AcquireBatch{Requests: []workflows.AcquireRequest{
		{ID: "with-lease", Cost: 1}, {ID: "lease-1", Cost: 5, Optional: true}, {ID: "lease-2", Cost: 5, Optional: true}}})
	if res := resp.Results; len(res) != 3 || !res[1].Granted || res[2].Granted || resp.LeaseFor <= 0 {
		t.Fatalf("lease: %+v; want one lease of the two lent, and LeaseFor", resp)
	}
	st := r.wantState(t, spec.Name, 13, 7, 7)
	if st.Ignored != 2 {
		t.Fatalf("ignored %d refills, want 2", st.Ignored)
	}
	r.save(t, garbageFile, workflows.BucketID(spec.Name), r.runID(t, spec.Name))
}

// reconfigure: tb sync-schedules changes a running bucket twice through the
// configure update, which upserts the spec memo: a lowered maximum clamps
// the tokens, a raised one keeps them, and the new amount applies to the
// next refill.
func (r *recorder) reconfigure(t *testing.T) {
	spec := bucket.Spec{Name: "reconfigure", Schedule: "@yearly", Amount: 5, Maximum: 20, Initial: new(int64(15))}
	r.sync(t, spec)
	a := newAcquirer(t, r.s)
	r.grant(t, a, spec.Name, "reconfigure-1", 2, 13)
	lowered := bucket.Spec{Name: spec.Name, Schedule: "@yearly", Amount: 4, Maximum: 8}
	r.sync(t, lowered)
	r.wantState(t, spec.Name, 8, 2, 0)
	r.grant(t, a, spec.Name, "reconfigure-2", 1, 7)
	raised := bucket.Spec{Name: spec.Name, Schedule: "@monthly", Amount: 10, Maximum: 30}
	r.sync(t, raised)
	r.wantState(t, spec.Name, 7, 3, 0)
	r.signal(t, spec.Name, workflows.RefillSignal, workflows.Refill{ID: "manual-1"}) // the new amount, 10
	r.grant(t, a, spec.Name, "reconfigure-3", 1, 16)
	st := r.wantState(t, spec.Name, 16, 4, 0)
	if st.Spec.Maximum != 30 || st.Spec.Schedule != "@monthly" {
		t.Fatalf("spec %+v; want the raised one", st.Spec)
	}
	r.save(t, reconfigureFile, workflows.BucketID(spec.Name), r.runID(t, spec.Name))
}

// continueAsNew: a bucket continuing as new every 3 updates; its first run
// and the run it continued as, which sees the first run's refill and request
// IDs again.
func (r *recorder) continueAsNew(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	spec := bucket.Spec{Name: "continue_as_new", Schedule: "@yearly", Amount: 5, Maximum: 10, Initial: new(int64(2))}
	id := workflows.BucketID(spec.Name)
	run, err := r.s.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: id, TaskQueue: workflows.TaskQueue, Memo: map[string]any{workflows.SpecMemo: spec},
	}, workflows.BucketWorkflowType, workflows.BucketInput{Spec: spec, MaxUpdatesPerRun: 3})
	if err != nil {
		t.Fatal(err)
	}
	first := run.GetRunID()
	a := newAcquirer(t, r.s)
	tick := yearStart()
	r.grant(t, a, spec.Name, "can-1", 2, 0)
	r.signal(t, spec.Name, workflows.RefillSignal, tick)
	r.grant(t, a, spec.Name, "can-2", 1, 4)
	r.grant(t, a, spec.Name, "can-3", 3, 1) // the third update: the run continues as new
	testserver.Eventually(t, wait, func() (bool, string) {
		d, err := r.s.Client.DescribeWorkflowExecution(ctx, id, first)
		st := d.GetWorkflowExecutionInfo().GetStatus()
		return err == nil && st == enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW, fmt.Sprintf("first run %s (%v)", st, err)
	})
	second := r.runID(t, spec.Name)
	if second == first {
		t.Fatalf("run %s continued as new, but is still the current run", first)
	}
	r.signal(t, spec.Name, workflows.RefillSignal, tick) // applied in the first run: ignored
	r.grant(t, a, spec.Name, "can-1", 2, 1)              // granted in the first run: free
	r.grant(t, a, spec.Name, "can-4", 1, 0)
	st := r.wantState(t, spec.Name, 0, 7, 0)
	if st.Run != 1 {
		t.Fatalf("run %d; want 1", st.Run)
	}
	r.save(t, firstRunFile, id, first)
	r.save(t, continuedRunFile, id, second)
}

// retire: a grant, then the retire update ends the run; a refill started by
// the Schedule then finds the bucket retired and fails.
func (r *recorder) retire(t *testing.T) {
	spec := bucket.Spec{Name: "retired", Schedule: "@yearly", Amount: 5, Maximum: 5}
	r.sync(t, spec)
	id := workflows.BucketID(spec.Name)
	runID := r.runID(t, spec.Name)
	r.grant(t, newAcquirer(t, r.s), spec.Name, "retire-1", 1, 4)
	var st workflows.Status
	r.update(t, spec.Name, "retire", workflows.RetireUpdate, nil, &st)
	if st.Tokens != 4 || st.Granted != 1 {
		t.Fatalf("retired with %+v; want 4 tokens, 1 granted", st)
	}
	r.waitClosed(t, id, runID, enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED)
	r.save(t, retireFile, id, runID)

	refillID, refillRun := r.triggerRefill(t, spec.Name, enumspb.WORKFLOW_EXECUTION_STATUS_FAILED)
	r.save(t, retiredFile, refillID, refillRun)
}

// refillFromSchedule: the Schedule starts a refill workflow, which sets the
// TemporalScheduledStartTime search attribute the refill takes its tick from.
func (r *recorder) refillFromSchedule(t *testing.T) {
	spec := bucket.Spec{Name: "scheduled", Schedule: "@yearly", Amount: 3, Maximum: 10, Initial: new(int64(0))}
	r.sync(t, spec)
	id, runID := r.triggerRefill(t, spec.Name, enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED)
	r.settle(t, workflows.BucketID(spec.Name), "")
	if st := r.wantState(t, spec.Name, 3, 0, 0); st.LastTick.IsZero() {
		t.Fatalf("the refill carried no tick: %+v", st)
	}
	r.save(t, scheduledFile, id, runID)
}

// refillMissingBucket: the bucket workflow is gone (terminated); the next
// refill the Schedule starts finds it missing, starts it as a child, and
// signals it. The bucket it started is recorded too, after a grant.
func (r *recorder) refillMissingBucket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	spec := bucket.Spec{Name: "missing", Schedule: "@yearly", Amount: 3, Maximum: 10, Initial: new(int64(4))}
	r.sync(t, spec)
	id := workflows.BucketID(spec.Name)
	gone := r.runID(t, spec.Name)
	if err := r.s.Client.TerminateWorkflow(ctx, id, gone, "the bucket workflow went missing"); err != nil {
		t.Fatal(err)
	}
	refillID, refillRun := r.triggerRefill(t, spec.Name, enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED)
	healed := r.runID(t, spec.Name)
	if healed == gone {
		t.Fatalf("the refill did not start bucket %s again", id)
	}
	r.settle(t, id, healed)
	r.wantState(t, spec.Name, 7, 0, 0) // a new bucket holds its initial 4, plus the refill of 3
	r.grant(t, newAcquirer(t, r.s), spec.Name, "missing-1", 1, 6)
	r.save(t, missingFile, refillID, refillRun)
	r.save(t, healedFile, id, healed)
}

func newAcquirer(t *testing.T, s *testserver.Server) *interceptor.Acquirer {
	t.Helper()
	a, err := interceptor.NewAcquirer(s.Client, interceptor.AcquirerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// sync creates or reconfigures the bucket as tb sync-schedules does.
func (r *recorder) sync(t *testing.T, spec bucket.Spec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	changes, err := operator.Apply(ctx, r.s.Client, &bucket.Config{Buckets: []bucket.Spec{spec}}, operator.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range changes {
		if ch.Bucket == spec.Name && ch.Workflow != operator.Created && ch.Workflow != operator.Updated {
			t.Fatalf("sync left bucket %s %s; want it created or updated", spec.Name, ch.Workflow)
		}
	}
	r.settle(t, workflows.BucketID(spec.Name), "")
}

// grant acquires through the Acquirer and wants the tokens granted, leaving tokens.
func (r *recorder) grant(t *testing.T, a *interceptor.Acquirer, name, id string, cost, tokens int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	d, err := a.Acquire(ctx, name, id, cost)
	if err != nil {
		t.Fatalf("acquire %s: %v", id, err)
	}
	if !d.Granted || d.Remaining != tokens {
		t.Fatalf("acquire %s of %d: %+v; want granted, %d tokens left", id, cost, d, tokens)
	}
}

// deny acquires through the Acquirer and wants it turned away by the validator.
func (r *recorder) deny(t *testing.T, a *interceptor.Acquirer, name, id string, cost int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	d, err := a.Acquire(ctx, name, id, cost)
	if err != nil {
		t.Fatalf("acquire %s: %v", id, err)
	}
	if d.Granted || d.RetryAfter <= 0 {
		t.Fatalf("acquire %s of %d: %+v; want it denied, with a retry-after", id, cost, d)
	}
}

// acquireBatch sends one acquire update, with a fixed update ID.
func (r *recorder) acquireBatch(t *testing.T, name, updateID string, batch workflows.AcquireBatch) workflows.AcquireResponse {
	t.Helper()
	var resp workflows.AcquireResponse
	r.update(t, name, updateID, workflows.AcquireUpdate, batch, &resp)
	return resp
}

func (r *recorder) update(t *testing.T, name, updateID, update string, arg, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	opts := client.UpdateWorkflowOptions{
		UpdateID:     updateID,
		WorkflowID:   workflows.BucketID(name),
		UpdateName:   update,
		WaitForStage: client.WorkflowUpdateStageCompleted,
	}
	if arg != nil {
		opts.Args = []any{arg}
	}
	h, err := r.s.Client.UpdateWorkflow(ctx, opts)
	if err == nil {
		err = h.Get(ctx, out)
	}
	if err != nil {
		t.Fatalf("update %s %s: %v", update, updateID, err)
	}
}

// signal signals the bucket and waits until it has handled the signal.
func (r *recorder) signal(t *testing.T, name, signal string, arg any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := r.s.Client.SignalWorkflow(ctx, workflows.BucketID(name), "", signal, arg); err != nil {
		t.Fatalf("signal %s %+v: %v", signal, arg, err)
	}
	r.settle(t, workflows.BucketID(name), "")
}

// settle waits until the run has no workflow task pending: everything sent
// to it so far is in its history, decided.
func (r *recorder) settle(t *testing.T, id, runID string) {
	t.Helper()
	testserver.Eventually(t, wait, func() (bool, string) {
		d, err := r.s.Client.DescribeWorkflowExecution(context.Background(), id, runID)
		if err != nil {
			return false, fmt.Sprintf("describing %s: %v", id, err)
		}
		if st := d.GetWorkflowExecutionInfo().GetStatus(); st != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
			return true, ""
		}
		return d.GetPendingWorkflowTask() == nil, fmt.Sprintf("%s has a workflow task pending", id)
	})
}

func (r *recorder) waitClosed(t *testing.T, id, runID string, want enumspb.WorkflowExecutionStatus) {
	t.Helper()
	var st enumspb.WorkflowExecutionStatus
	testserver.Eventually(t, wait, func() (bool, string) {
		d, err := r.s.Client.DescribeWorkflowExecution(context.Background(), id, runID)
		st = d.GetWorkflowExecutionInfo().GetStatus()
		return err == nil && st != enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING, fmt.Sprintf("%s is %s (%v)", id, st, err)
	})
	if st != want {
		t.Fatalf("%s ended %s; want %s", id, st, want)
	}
}

// runID returns the current run of the bucket workflow.
func (r *recorder) runID(t *testing.T, name string) string {
	t.Helper()
	d, err := r.s.Client.DescribeWorkflowExecution(context.Background(), workflows.BucketID(name), "")
	if err != nil {
		t.Fatal(err)
	}
	return d.GetWorkflowExecutionInfo().GetExecution().GetRunId()
}

// wantState queries the bucket and wants its tokens and counts.
func (r *recorder) wantState(t *testing.T, name string, tokens, granted, denied int64) workflows.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	st, err := r.s.State(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if st.Tokens != tokens || st.Granted != granted || st.Denied != denied {
		t.Fatalf("bucket %s: %d tokens, %d granted, %d denied; want %d, %d, %d", name, st.Tokens, st.Granted, st.Denied, tokens, granted, denied)
	}
	return st
}

// triggerRefill has the bucket's Schedule start a refill workflow now, and
// waits for it to end with the status wanted.
func (r *recorder) triggerRefill(t *testing.T, name string, want enumspb.WorkflowExecutionStatus) (id, runID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	h := r.s.Client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(name))
	desc, err := h.Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before := len(desc.Info.RecentActions)
	if err := h.Trigger(ctx, client.ScheduleTriggerOptions{Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL}); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, wait, func() (bool, string) {
		desc, err := h.Describe(ctx)
		if err != nil || len(desc.Info.RecentActions) <= before {
			return false, fmt.Sprintf("Schedule %s started no refill (%v)", workflows.ScheduleID(name), err)
		}
		started := desc.Info.RecentActions[len(desc.Info.RecentActions)-1].StartWorkflowResult
		id, runID = started.WorkflowID, started.FirstExecutionRunID
		return true, ""
	})
	r.waitClosed(t, id, runID, want)
	return id, runID
}

// save writes the run's whole history as JSON, the format of
// `temporal workflow show --output json`, and checks that the SDK reads it back.
func (r *recorder) save(t *testing.T, name, id, runID string) {
	t.Helper()
	r.settle(t, id, runID)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	hist := &historypb.History{}
	it := r.s.Client.GetWorkflowHistory(ctx, id, runID, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatalf("history of %s: %v", id, err)
		}
		hist.Events = append(hist.Events, e)
	}
	data, err := protojson.Marshal(hist)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, data, "", "  "); err != nil {
		t.Fatal(err)
	}
	out.WriteByte('\n')
	back, err := client.HistoryFromJSON(bytes.NewReader(out.Bytes()), client.HistoryJSONOptions{})
	if err != nil {
		t.Fatalf("the SDK cannot read the history of %s back: %v", id, err)
	}
	if !proto.Equal(back, hist) {
		t.Fatalf("the history of %s reads back different", id)
	}
	path := filepath.Join(r.dir, name+r.suffix+".json")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(out.Bytes()); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d events (workflow %s, run %s)", path, len(hist.Events), id, runID)
}
