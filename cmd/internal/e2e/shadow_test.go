package e2e_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/interceptor"
)

// TestShadowModeCountsWhatItWouldRefuse: a workload of three times a shadow
// bucket's supply all runs, none denied; each run also asks an enforcing
// bucket of the same spec, side by side; the shadow bucket's would-deny count
// equals what the enforcing one denied. Then sync switches the shadow bucket
// to enforcing, keeping its tokens.
func TestShadowModeCountsWhatItWouldRefuse(t *testing.T) {
	const supply, runs = 10, 30
	s := testserver.NewServer(t)
	shadow := bucket.Spec{Name: "shadowed", Schedule: "@yearly", Amount: supply, Maximum: supply, Mode: bucket.ModeShadow}
	enforced := bucket.Spec{Name: "enforced", Schedule: "@yearly", Amount: supply, Maximum: supply}
	s.Sync(t, shadow, enforced)
	side, err := interceptor.NewAcquirer(s.NewClient(), interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace()})
	if err != nil {
		t.Fatal(err)
	}
	var ran, shadowGrants, enforcedDenials atomic.Int64
	ic, err := interceptor.New(interceptor.Options{Guards: map[string][]bucket.Guard{"Call": {{Bucket: shadow.Name, Cost: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	w := worker.New(s.NewClient(), "shadow", worker.Options{Interceptors: []temporalinterceptor.WorkerInterceptor{ic}})
	w.RegisterWorkflowWithOptions(func(ctx workflow.Context) error {
		ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 30 * time.Second, RetryPolicy: &temporal.RetryPolicy{MaximumAttempts: 1}})
		return workflow.ExecuteActivity(ctx, "Call").Get(ctx, nil)
	}, workflow.RegisterOptions{Name: "CallOnceShadow"})
	w.RegisterActivityWithOptions(func(ctx context.Context) error {
		ran.Add(1)
		if g, _ := interceptor.GrantFromContext(ctx); g.Shadow {
			shadowGrants.Add(1)
		}
		d, err := side.Acquire(ctx, enforced.Name, fmt.Sprint(activity.GetInfo(ctx).WorkflowExecution.ID), 1)
		if err != nil {
			return err
		}
		if !d.Granted {
			enforcedDenials.Add(1)
		}
		return nil
	}, activity.RegisterOptions{Name: "Call"})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range runs {
		run, err := s.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprint("shadow-", i), TaskQueue: "shadow"}, "CallOnceShadow")
		if err == nil {
			err = run.Get(ctx, nil) // one attempt each: a denial would fail it
		}
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	if ran.Load() != runs || shadowGrants.Load() != runs-supply || enforcedDenials.Load() != runs-supply {
		t.Errorf("%d ran, %d on shadow grants, %d denied by the enforcing bucket; want %d, %d, %d", ran.Load(), shadowGrants.Load(), enforcedDenials.Load(), runs, runs-supply, runs-supply)
	}
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		sh, err1 := s.State(ctx, shadow.Name)
		en, err2 := s.State(ctx, enforced.Name)
		if err1 != nil || err2 != nil {
			return false, fmt.Sprint(err1, err2)
		}
		return sh.WouldDeny == en.Denied && en.Denied == runs-supply && sh.Denied == 0 && sh.Tokens == en.Tokens,
			fmt.Sprintf("shadow: would deny %d, denied %d, %d tokens; enforcing: denied %d, %d tokens", sh.WouldDeny, sh.Denied, sh.Tokens, en.Denied, en.Tokens)
	})

	// Switching to enforcing keeps the tokens (none left), and the next call is denied.
	shadow.Mode = bucket.ModeEnforce
	s.Sync(t, shadow, enforced)
	st, err := s.State(ctx, shadow.Name)
	if err != nil || st.Tokens != 0 || st.Spec.Mode != bucket.ModeEnforce {
		t.Fatalf("after switching to enforcing: %+v, %v", st, err)
	}
	if d, err := side.Acquire(ctx, shadow.Name, "after-the-switch", 1); err != nil || d.Granted {
		t.Errorf("acquire after the switch: %+v, %v; want denied", d, err)
	}
}
