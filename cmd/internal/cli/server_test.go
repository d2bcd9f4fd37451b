package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/workflows"
)

// against returns a tb that talks to s, and a function rewriting the buckets file.
func against(t *testing.T, s *testserver.Server) (run func(args ...string) result, write func(string), path string) {
	path = writeFile(t, "")
	conn := []string{"--address", s.GetFrontendHostPort(), "--namespace", s.GetDefaultNamespace(), "-c", path}
	run = func(args ...string) result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return tb(t, ctx, nil, append(args, conn...)...)
	}
	write = func(content string) {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return run, write, path
}

// table parses tb's text table into rows of fields.
func table(out string) map[string][]string {
	rows := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] {
		f := regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(line), -1)
		rows[f[0]] = f
	}
	return rows
}

const twoBuckets = `buckets:
  - name: alpha
    schedule: "@hourly"
    amount: 10
    maximum: 10
  - name: beta
    schedule: "*/5 * * * *"
    timezone: Europe/Paris
    amount: 3
    maximum: 6
`

func TestSyncSchedulesLifecycle(t *testing.T) {
	s := testserver.NewServer(t)
	tbRun, write, _ := against(t, s)
	ctx := context.Background()

	// A Schedule tb did not create is never touched.
	if _, err := s.Client.ScheduleClient().Create(ctx, client.ScheduleOptions{
		ID:     "someone-elses",
		Spec:   client.ScheduleSpec{CronExpressions: []string{"@daily"}},
		Action: &client.ScheduleWorkflowAction{ID: "x", Workflow: "X", TaskQueue: "x"},
	}); err != nil {
		t.Fatal(err)
	}

	write(twoBuckets)
	dry := tbRun("sync-schedules", "--dry-run")
	if dry.code != 0 || !strings.Contains(dry.out, "would create") || !strings.Contains(dry.out, "dry run: nothing was changed") {
		t.Fatalf("dry run: %+v", dry)
	}
	if _, err := s.Client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID("alpha")).Describe(ctx); err == nil {
		t.Fatal("the dry run created a Schedule")
	}

	first := tbRun("sync-schedules")
	want := map[string][]string{"alpha": {"alpha", "created", "created"}, "beta": {"beta", "created", "created"}}
	if first.code != 0 || !sameRows(table(first.out), want) {
		t.Fatalf("first sync: %+v", first)
	}
	again := tbRun("sync-schedules")
	want = map[string][]string{"alpha": {"alpha", "unchanged", "unchanged"}, "beta": {"beta", "unchanged", "unchanged"}}
	if again.code != 0 || !sameRows(table(again.out), want) {
		t.Fatalf("second sync: %+v", again)
	}

	// Take 4 of alpha's tokens, then reshape it: the tokens are kept.
	acq, err := interceptor.NewAcquirer(s.Client, interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace()})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := acq.Acquire(ctx, "alpha", "r1", 4); err != nil || !d.Granted {
		t.Fatalf("acquire: %+v %v", d, err)
	}
	write(strings.Replace(strings.Replace(twoBuckets, "amount: 10", "amount: 20", 1), "maximum: 10", "maximum: 50", 1))
	edit := tbRun("sync-schedules")
	rows := table(edit.out)
	if edit.code != 0 || rows["alpha"][1] != "updated" || rows["alpha"][2] != "updated" ||
		rows["alpha"][3] != "amount 10 → 20, maximum 10 → 50, initial 10 → 50" || rows["beta"][1] != "unchanged" {
		t.Fatalf("after editing alpha: %+v", edit)
	}
	st, err := s.State(ctx, "alpha")
	if err != nil || st.Tokens != 6 || st.Spec.Maximum != 50 || st.Spec.Amount != 20 {
		t.Errorf("alpha after the update: %+v, %v; want its 6 tokens kept under the new maximum 50", st, err)
	}

	// tokens, as text and as JSON, shows the workflow's state.
	text := tbRun("tokens")
	trow := table(text.out)["alpha"]
	if text.code != 0 || len(trow) < 8 || trow[1] != "6/50" || trow[2] != "20" || trow[3] != "@hourly" || trow[6] != "4" {
		t.Errorf("tokens: %+v", text)
	}
	js := tbRun("status", "alpha", "-o", "json")
	var parsed []struct {
		Bucket string
		State  workflows.Status
	}
	if err := json.Unmarshal([]byte(js.out), &parsed); err != nil || len(parsed) != 1 || parsed[0].State.Tokens != 6 || parsed[0].State.Granted != 4 {
		t.Errorf("tokens -o json: %q, %v", js.out, err)
	}

	// Removing beta deletes its Schedule; its workflow keeps running until --retire.
	waitListed(t, s, 2)
	write(twoBuckets[:strings.Index(twoBuckets, "  - name: beta")])
	removed := tbRun("sync-schedules")
	if rows := table(removed.out); removed.code != 0 || rows["beta"][1] != "deleted" || rows["beta"][2] != "kept" {
		t.Fatalf("after removing beta: %+v", removed)
	}
	if _, err := s.Client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID("beta")).Describe(ctx); err == nil {
		t.Error("beta's Schedule still exists")
	}
	if _, err := s.State(ctx, "beta"); err != nil {
		t.Errorf("beta's workflow should still answer: %v", err)
	}
	if _, err := s.Client.ScheduleClient().GetHandle(ctx, "someone-elses").Describe(ctx); err != nil {
		t.Errorf("a Schedule tb does not own was removed: %v", err)
	}
	// beta's workflow, still running, is reported kept until --retire ends it.
	steady := tbRun("sync-schedules")
	want = map[string][]string{"alpha": {"alpha", "unchanged", "unchanged"}, "beta": {"beta", "-", "kept"}}
	if steady.code != 0 || !sameRows(table(steady.out), want) {
		t.Errorf("sync after the removal: %+v", steady)
	}
}

func TestSyncRetiresRemovedBuckets(t *testing.T) {
	s := testserver.NewServer(t)
	tbRun, write, _ := against(t, s)
	ctx := context.Background()
	write(twoBuckets)
	if r := tbRun("sync-schedules"); r.code != 0 {
		t.Fatal(r)
	}
	// Removals are found by listing Schedules, which lags creation slightly.
	waitListed(t, s, 2)
	write("buckets: []\n")
	r := tbRun("sync-schedules", "--retire", "--delete-all", "-o", "json")
	var parsed struct {
		Buckets []struct{ Bucket, Schedule, Workflow string }
	}
	if err := json.Unmarshal([]byte(r.out), &parsed); err != nil || r.code != 0 || len(parsed.Buckets) != 2 {
		t.Fatalf("retire: %+v %v", r, err)
	}
	for _, b := range parsed.Buckets {
		if b.Schedule != "deleted" || b.Workflow != "retired" {
			t.Errorf("%+v", b)
		}
	}
	desc, err := s.Client.DescribeWorkflowExecution(ctx, workflows.BucketID("alpha"), "")
	if err != nil || desc.WorkflowExecutionInfo.Status.String() != "Completed" {
		t.Errorf("alpha's workflow after --retire: %v %v", desc.GetWorkflowExecutionInfo().GetStatus(), err)
	}
}

func TestSyncReportsTheFailingBucket(t *testing.T) {
	s := testserver.NewServer(t)
	tbRun, write, _ := against(t, s)
	ctx := context.Background()
	// A Schedule with tb's ID that tb did not create: sync refuses to take it over.
	if _, err := s.Client.ScheduleClient().Create(ctx, client.ScheduleOptions{
		ID:     workflows.ScheduleID("beta"),
		Spec:   client.ScheduleSpec{CronExpressions: []string{"@daily"}},
		Action: &client.ScheduleWorkflowAction{ID: "x", Workflow: "X", TaskQueue: "x"},
	}); err != nil {
		t.Fatal(err)
	}
	write(twoBuckets)
	r := tbRun("sync-schedules")
	rows := table(r.out)
	if r.code != 1 || rows["alpha"][1] != "created" || !strings.Contains(rows["beta"][3], "was not created by tb") {
		t.Errorf("sync with a foreign Schedule: %+v", r)
	}
	if !strings.Contains(r.err, `bucket "beta": refill Schedule: Schedule tb-refill-beta exists but was not created by tb`) {
		t.Errorf("stderr %q", r.err)
	}
}

func TestRefillAndMissingBuckets(t *testing.T) {
	s := testserver.NewServer(t)
	tbRun, write, _ := against(t, s)
	write(strings.Replace(twoBuckets, "maximum: 10", "maximum: 10\n    initial: 1", 1))
	if r := tbRun("sync-schedules"); r.code != 0 {
		t.Fatal(r)
	}
	r := tbRun("refill", "alpha", "--amount", "3")
	if r.code != 0 || r.out != "bucket alpha: 1 → 4 tokens (maximum 10)\n" {
		t.Errorf("refill --amount 3: %+v", r)
	}
	r = tbRun("refill", "alpha")
	if r.code != 0 || r.out != "bucket alpha: 4 → 10 tokens (maximum 10)\n" {
		t.Errorf("refill capped at the maximum: %+v", r)
	}
	r = tbRun("refill", "nope")
	if r.code != 1 || r.err != "tb: bucket \"nope\" is not running (run tb sync-schedules)\n" {
		t.Errorf("refill of a missing bucket: %+v", r)
	}
	r = tbRun("tokens", "alpha", "nope")
	rows := table(r.out)
	if r.code != 1 || rows["alpha"][1] != "10/10" || rows["nope"][len(rows["nope"])-1] != "not running (run tb sync-schedules)" {
		t.Errorf("tokens with a missing bucket: %+v", r)
	}
}

// waitListed waits until the namespace lists n Schedules created by tb.
func waitListed(t *testing.T, s *testserver.Server, n int) {
	t.Helper()
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		it, err := s.Client.ScheduleClient().List(context.Background(), client.ScheduleListOptions{})
		if err != nil {
			return false, err.Error()
		}
		listed := 0
		for it.HasNext() {
			e, err := it.Next()
			if err != nil {
				return false, err.Error()
			}
			if strings.HasPrefix(e.ID, workflows.ScheduleIDPrefix) {
				listed++
			}
		}
		return listed == n, fmt.Sprintf("%d Schedules listed, want %d", listed, n)
	})
}

func sameRows(got, want map[string][]string) bool {
	if len(got) != len(want) {
		return false
	}
	for k, w := range want {
		g := got[k]
		if len(g) < len(w) {
			return false
		}
		for i := range w {
			if g[i] != w[i] {
				return false
			}
		}
	}
	return true
}
