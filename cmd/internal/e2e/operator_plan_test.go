package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.temporal.io/api/serviceerror"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/operator"
	"github.com/tokenbucket/tb/workflows"
)

// Plan reports what Apply then does, and changes nothing: no bucket is
// created, reconfigured or retired, no Schedule created or deleted.
func TestOperatorPlanChangesNothing(t *testing.T) {
	s := testserver.NewServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	apply(t, s.Client, operator.Options{}, hourly("edited", 2), hourly("removed", 2))

	edited := hourly("edited", 2)
	edited.Amount = 7
	cfg := &bucket.Config{Buckets: []bucket.Spec{edited, hourly("added", 2)}}
	opts := operator.Options{Retire: true}
	want := map[string][2]operator.Action{
		"added":   {operator.Created, operator.Created},
		"edited":  {operator.Updated, operator.Updated},
		"removed": {operator.Deleted, operator.Retired},
	}
	// The listing Plan finds removed buckets in may lag their creation.
	var plan []operator.Change
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		var err error
		plan, err = operator.Plan(ctx, s.Client, cfg, opts)
		got := actions(t, plan)
		return err == nil && fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("plan %v, %v; want %v", got, err, want)
	})
	for _, ch := range plan {
		if ch.Bucket == "edited" && ch.Details != "amount 5 → 7" {
			t.Errorf("plan details for edited: %q", ch.Details)
		}
	}

	var notFound *serviceerror.NotFound
	if _, err := s.Client.DescribeWorkflowExecution(ctx, workflows.BucketID("added"), ""); !errors.As(err, &notFound) {
		t.Errorf("Plan started added's workflow: %v", err)
	}
	if _, err := s.Client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID("added")).Describe(ctx); !errors.As(err, &notFound) {
		t.Errorf("Plan created added's Schedule: %v", err)
	}
	if st, err := operator.State(ctx, s.Client, "edited"); err != nil || st.Spec.Amount != 5 {
		t.Errorf("Plan reconfigured edited: %+v, %v", st.Spec, err)
	}
	if _, err := operator.State(ctx, s.Client, "removed"); err != nil {
		t.Errorf("Plan retired removed: %v", err)
	}
	if _, err := s.Client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID("removed")).Describe(ctx); err != nil {
		t.Errorf("Plan deleted removed's Schedule: %v", err)
	}

	// Apply does what Plan said; then Plan says nothing is left to do.
	if got := actions(t, apply(t, s.Client, opts, cfg.Buckets...)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Apply after Plan: %v; want %v", got, want)
	}
	if st, err := operator.State(ctx, s.Client, "edited"); err != nil || st.Spec.Amount != 7 {
		t.Errorf("Apply did not reconfigure edited: %+v, %v", st.Spec, err)
	}
	unchanged := [2]operator.Action{operator.Unchanged, operator.Unchanged}
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		plan, err := operator.Plan(ctx, s.Client, cfg, opts)
		got := actions(t, plan)
		return err == nil && len(got) == 2 && got["added"] == unchanged && got["edited"] == unchanged,
			fmt.Sprintf("plan after Apply: %v, %v", got, err)
	})
}
