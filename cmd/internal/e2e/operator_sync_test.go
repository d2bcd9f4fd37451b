package e2e_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/server/temporaltest"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/operator"
	"github.com/tokenbucket/tb/workflows"
)

// actions maps each bucket to its Schedule and workflow actions.
func actions(t *testing.T, changes []operator.Change) map[string][2]operator.Action {
	t.Helper()
	m := map[string][2]operator.Action{}
	for _, ch := range changes {
		m[ch.Bucket] = [2]operator.Action{ch.Schedule, ch.Workflow}
	}
	return m
}

// TestConcurrentSyncs runs two syncs of the same file at once, round after
// round, each adding buckets: both succeed, and between them each new
// Schedule and workflow is reported created once and unchanged once.
func TestConcurrentSyncs(t *testing.T) {
	s := testserver.NewServer(t)
	other := s.NewClient()
	var specs []bucket.Spec
	for round := range 4 {
		var added []string
		for i := range 4 {
			name := fmt.Sprintf("r%d_b%d", round, i)
			added = append(added, name)
			specs = append(specs, bucket.Spec{Name: name, Schedule: "@hourly", Amount: 1, Maximum: 1})
		}
		cfg := &bucket.Config{Buckets: specs}
		start := make(chan struct{})
		type result struct {
			changes []operator.Change
			err     error
		}
		results := make(chan result, 2)
		for _, c := range []client.Client{s.Client, other} {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				<-start
				changes, err := operator.Apply(ctx, c, cfg, operator.Options{})
				results <- result{changes, err}
			}()
		}
		close(start)
		a, b := <-results, <-results
		if a.err != nil || b.err != nil {
			t.Fatalf("round %d: %v; %v", round, a.err, b.err)
		}
		got := [2]map[string][2]operator.Action{actions(t, a.changes), actions(t, b.changes)}
		for _, name := range added {
			for col, what := range []string{"Schedule", "workflow"} {
				x, y := got[0][name][col], got[1][name][col]
				if !(x == operator.Created && y == operator.Unchanged || x == operator.Unchanged && y == operator.Created) {
					t.Errorf("round %d: bucket %s: %s %s and %s; want created once and unchanged once", round, name, what, x, y)
				}
			}
		}
		for _, spec := range specs[:len(specs)-len(added)] {
			for i := range got {
				if a := got[i][spec.Name]; a != [2]operator.Action{operator.Unchanged, operator.Unchanged} {
					t.Errorf("round %d: older bucket %s: %v", round, spec.Name, a)
				}
			}
		}
	}
}

// TestSyncWithACodec: a client and worker whose payloads are compressed. Sync
// recognises the Schedules it made, reports a second run unchanged, and
// reconfigures and removes buckets.
func TestSyncWithACodec(t *testing.T) {
	dc := converter.NewCodecDataConverter(converter.GetDefaultDataConverter(),
		converter.NewZlibCodec(converter.ZlibCodecOptions{AlwaysEncode: true}))
	ts := temporaltest.NewServer(temporaltest.WithT(t), temporaltest.WithBaseClientOptions(client.Options{
		DataConverter: dc,
		Logger:        sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler)),
	}))
	ts.NewWorker(workflows.TaskQueue, func(r worker.Registry) { workflows.Register(r) })
	c := ts.GetDefaultClient()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sync := func(specs ...bucket.Spec) map[string][2]operator.Action {
		t.Helper()
		changes, err := operator.Apply(ctx, c, &bucket.Config{Buckets: specs}, operator.Options{DataConverter: dc})
		if err != nil {
			t.Fatal(err)
		}
		return actions(t, changes)
	}
	a := bucket.Spec{Name: "a", Schedule: "@hourly", Amount: 5, Maximum: 5}
	b := bucket.Spec{Name: "b", Schedule: "@daily", Amount: 1, Maximum: 2}
	created := [2]operator.Action{operator.Created, operator.Created}
	unchanged := [2]operator.Action{operator.Unchanged, operator.Unchanged}
	if got := sync(a, b); got["a"] != created || got["b"] != created {
		t.Fatalf("first sync: %v", got)
	}
	// The payloads really are compressed: the default converter cannot read them.
	desc, err := c.DescribeWorkflowExecution(ctx, workflows.BucketID("a"), "")
	if err != nil {
		t.Fatal(err)
	}
	var plain bucket.Spec
	if err := converter.GetDefaultDataConverter().FromPayload(desc.WorkflowExecutionInfo.Memo.Fields[workflows.SpecMemo], &plain); err == nil {
		t.Fatalf("the memo reads without the codec: %+v", plain)
	}
	if got := sync(a, b); got["a"] != unchanged || got["b"] != unchanged {
		t.Errorf("second sync: %v", got)
	}

	a.Amount, a.Maximum = 10, 20
	if got := sync(a, b); got["a"] != [2]operator.Action{operator.Updated, operator.Updated} || got["b"] != unchanged {
		t.Errorf("reconfiguring a: %v", got)
	}
	testserver.Eventually(t, 10*time.Second, func() (bool, string) {
		st, err := operator.State(ctx, c, "a")
		return err == nil && st.Spec.Maximum == 20 && st.Tokens == 5, fmt.Sprintf("a: %+v %v", st, err)
	})
	if got := sync(a, b); got["a"] != unchanged {
		t.Errorf("sync after reconfiguring: %v", got)
	}

	// b's Schedule is recognised as tb's: removing b deletes it.
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		it, err := c.ScheduleClient().List(ctx, client.ScheduleListOptions{})
		n := 0
		for err == nil && it.HasNext() {
			var e *client.ScheduleListEntry
			if e, err = it.Next(); err == nil && strings.HasPrefix(e.ID, workflows.ScheduleIDPrefix) {
				n++
			}
		}
		return n == 2, fmt.Sprintf("%d Schedules listed, %v", n, err)
	})
	if got := sync(a); got["b"] != [2]operator.Action{operator.Deleted, operator.Kept} {
		t.Errorf("removing b: %v", got)
	}
}
