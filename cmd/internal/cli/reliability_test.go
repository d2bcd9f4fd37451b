package cli_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	sdklog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/cli"
	"github.com/tokenbucket/tb/cmd/internal/devserver"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/operator"
	"github.com/tokenbucket/tb/workflows"
)

const (
	relQueue    = "reliability-app"
	relActivity = "ReliabilityCallAPI"
)

// relServer is an embedded Temporal server on a SQLite file at a fixed
// address, which a test stops and starts again.
type relServer struct {
	t    *testing.T
	opts devserver.Options
	mu   sync.Mutex
	srv  *devserver.Server
}

// startRelServer starts a server for the test; it stops when the test ends,
// after every client made with dial is closed.
func startRelServer(t *testing.T) *relServer {
	t.Helper()
	s := &relServer{t: t, opts: devserver.Options{
		Address: freeAddress(t),
		DBFile:  filepath.Join(t.TempDir(), "tb.db"),
	}}
	t.Cleanup(func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.srv != nil {
			_ = s.srv.Stop()
		}
	})
	s.start()
	return s
}

// start starts the server and returns how long that took.
func (s *relServer) start() time.Duration {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	began := time.Now()
	srv, err := devserver.Start(ctx, s.opts)
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	return time.Since(began)
}

// stop stops the server and returns how long that took.
func (s *relServer) stop() time.Duration {
	s.t.Helper()
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	began := time.Now()
	if err := srv.Stop(); err != nil {
		s.t.Fatal(err)
	}
	return time.Since(began)
}

// dial returns a client, as a separate process would have; it reconnects by
// itself when the server comes back.
func (s *relServer) dial() client.Client {
	s.t.Helper()
	c, err := client.Dial(client.Options{
		HostPort: s.opts.Address,
		Logger:   sdklog.NewStructuredLogger(slog.New(slog.DiscardHandler)),
	})
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(c.Close)
	return c
}

// tbWorker runs the bucket and refill workflows.
func (s *relServer) tbWorker() {
	s.t.Helper()
	w := worker.New(s.dial(), workflows.TaskQueue, worker.Options{})
	workflows.Register(w)
	if err := w.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(w.Stop)
}

// appWorker runs relCallOnce and its guarded activity, with the given interceptors.
func (s *relServer) appWorker(rec *relRecorder, slots int, ics ...temporalinterceptor.WorkerInterceptor) {
	s.t.Helper()
	w := worker.New(s.dial(), relQueue, worker.Options{MaxConcurrentActivityExecutionSize: slots, Interceptors: ics})
	w.RegisterWorkflow(relCallOnce)
	w.RegisterActivityWithOptions(rec.call, activity.RegisterOptions{Name: relActivity})
	if err := w.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(w.Stop)
}

// relSync makes the namespace's buckets exactly specs.
func relSync(t *testing.T, c client.Client, specs ...bucket.Spec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := operator.Apply(ctx, c, &bucket.Config{Buckets: specs}, operator.Options{}); err != nil {
		t.Fatal(err)
	}
}

func relState(ctx context.Context, c client.Client, name string) (workflows.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return operator.State(ctx, c, name)
}

// relCallOnce runs the guarded activity with unlimited attempts, bounded in time.
func relCallOnce(ctx workflow.Context) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		ScheduleToCloseTimeout: 3 * time.Minute,
		StartToCloseTimeout:    10 * time.Second,
		RetryPolicy:            &temporal.RetryPolicy{InitialInterval: 500 * time.Millisecond, MaximumAttempts: 0},
	})
	return workflow.ExecuteActivity(ctx, relActivity).Get(ctx, nil)
}

// relRecorder is the guarded activity: it records each body run and the refill its grant drew on.
type relRecorder struct {
	mu        sync.Mutex
	runs      []relRun
	ungranted int
}

type relRun struct {
	workflow string
	refill   time.Time
	at       time.Time
}

func (r *relRecorder) call(ctx context.Context) error {
	now := time.Now()
	grant, ok := interceptor.GrantFromContext(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !ok {
		r.ungranted++
		return temporal.NewNonRetryableApplicationError("ran without a grant", "NoGrant", nil)
	}
	r.runs = append(r.runs, relRun{workflow: activity.GetInfo(ctx).WorkflowExecution.ID, refill: grant.LastRefill, at: now})
	return nil
}

func (r *relRecorder) all() ([]relRun, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]relRun(nil), r.runs...), r.ungranted
}

// TestServerRestartKeepsBucketsAndRetries stops the Temporal server (SQLite
// file) while activities are being denied and retried, and starts it again
// on the same file and address. The bucket's counters, its refill Schedule
// and the pending retries survive; every workflow completes; no refill is
// drawn on by more activities than the bucket holds, across the restart.
func TestServerRestartKeepsBucketsAndRetries(t *testing.T) {
	const (
		workflowCount = 30
		amount        = 5
		maximum       = 5
		slots         = 20
	)
	srv := startRelServer(t)
	c := srv.dial()
	srv.tbWorker()
	spec := bucket.Spec{Name: "restart", Schedule: "@every 1s", Amount: amount, Maximum: maximum}
	// A bucket no one uses during the restart: its state must come back exactly.
	idle := bucket.Spec{Name: "restart_idle", Schedule: "@yearly", Amount: 10, Maximum: 10}
	relSync(t, c, spec, idle)
	// Every denial fails the attempt, to be retried when tokens are expected.
	ic, err := interceptor.New(interceptor.Options{Guards: map[string][]bucket.Guard{relActivity: {{Bucket: spec.Name, Cost: 1}}}, MaxWait: -1})
	if err != nil {
		t.Fatal(err)
	}
	rec := &relRecorder{}
	srv.appWorker(rec, slots, ic)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	idleAcq, err := interceptor.NewAcquirer(c, interceptor.AcquirerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := idleAcq.Acquire(ctx, idle.Name, "idle-1", 3); err != nil || !d.Granted {
		t.Fatalf("acquire from the idle bucket: %+v, %v", d, err)
	}
	if d, err := idleAcq.Acquire(ctx, idle.Name, "idle-2", 8); err != nil || d.Granted {
		t.Fatalf("acquire 8 of the idle bucket's 7 tokens: %+v, %v", d, err)
	}
	if d, err := idleAcq.Acquire(ctx, idle.Name, "idle-3", 2); err != nil || !d.Granted {
		t.Fatalf("acquire from the idle bucket: %+v, %v", d, err)
	}
	idleBefore, err := relState(ctx, c, idle.Name)
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	runs := make([]client.WorkflowRun, workflowCount)
	for i := range runs {
		if runs[i], err = c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprintf("restart-%d", i), TaskQueue: relQueue}, relCallOnce); err != nil {
			t.Fatal(err)
		}
	}
	testserver.Eventually(t, time.Minute, func() (bool, string) {
		done, _ := rec.all()
		return len(done) >= 10, fmt.Sprintf("%d activities ran", len(done))
	})
	// Activities wait for tokens as retries after a RateLimited attempt.
	var retrying int
	for i := range workflowCount {
		d, err := c.DescribeWorkflowExecution(ctx, fmt.Sprintf("restart-%d", i), "")
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range d.GetPendingActivities() {
			if a.GetLastFailure().GetApplicationFailureInfo().GetType() == workflows.ErrRateLimited {
				retrying++
			}
		}
	}
	before, err := relState(ctx, c, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	schedBefore, err := c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(spec.Name)).Describe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stopping := time.Now()
	stopTook := srv.stop()
	ranBefore, _ := rec.all()
	startTook := srv.start()
	restarted := time.Now()

	// The bucket answers again, as it was.
	var after workflows.Status
	testserver.Eventually(t, time.Minute, func() (bool, string) {
		after, err = relState(ctx, c, spec.Name)
		var notFound *serviceerror.NotFound
		if errors.As(err, &notFound) {
			t.Fatalf("the bucket is gone after the restart: %v", err)
		}
		return err == nil, fmt.Sprintf("state query after the restart: %v", err)
	})
	answering := time.Since(restarted)
	if !after.Created.Equal(before.Created) || after.Granted < before.Granted || after.Denied < before.Denied || after.Spec.Amount != amount {
		t.Errorf("bucket after the restart: %+v; before it: %+v", after, before)
	}
	if idleAfter, err := relState(ctx, c, idle.Name); err != nil || !reflect.DeepEqual(idleAfter.State, idleBefore.State) {
		t.Errorf("idle bucket after the restart: %+v (%v); before it: %+v", idleAfter.State, err, idleBefore.State)
	} else if idleAfter.Tokens != 5 || idleAfter.Granted != 5 {
		t.Errorf("idle bucket: %d tokens, %d granted; want 5 and 5", idleAfter.Tokens, idleAfter.Granted)
	}
	sched, err := c.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(spec.Name)).Describe(ctx)
	if err != nil {
		t.Fatalf("refill Schedule after the restart: %v", err)
	}
	if sched.Schedule.State.Paused || !reflect.DeepEqual(sched.Schedule.Spec, schedBefore.Schedule.Spec) {
		t.Errorf("refill Schedule after the restart: paused %v, spec %+v; before it: %+v", sched.Schedule.State.Paused, sched.Schedule.Spec, schedBefore.Schedule.Spec)
	}
	// The Schedule fires again: a tick after the restart reaches the bucket.
	testserver.Eventually(t, time.Minute, func() (bool, string) {
		st, err := relState(ctx, c, spec.Name)
		return err == nil && st.LastTick.After(restarted), fmt.Sprintf("last tick %v (%v), restarted at %v", st.LastTick, err, restarted)
	})

	for i, r := range runs {
		if err := r.Get(ctx, nil); err != nil {
			t.Errorf("workflow restart-%d: %v", i, err)
		}
	}
	drained := time.Since(restarted)
	done, ungranted := rec.all()
	if ungranted > 0 {
		t.Errorf("%d activity bodies ran without a grant", ungranted)
	}
	ran := map[string]int{}
	per := map[time.Time]int{}
	var afterRestart int
	for _, r := range done {
		ran[r.workflow]++
		per[r.refill]++
		if r.at.After(restarted) {
			afterRestart++
		}
	}
	for i := range workflowCount {
		if id := fmt.Sprintf("restart-%d", i); ran[id] == 0 {
			t.Errorf("workflow %s completed but its activity never ran", id)
		}
	}
	for refill, n := range per {
		if n > maximum {
			t.Errorf("%d activities drew on the refill applied at %s; the bucket holds at most %d", n, refill.Format("15:04:05.000"), maximum)
		}
	}
	end, err := relState(ctx, c, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	lost := end.Granted - int64(len(done))
	t.Logf("%d of %d activities ran before the stop (%v after the workload began), %d were retrying after a denial; stop took %v, start %v, the bucket answered %v after the start; "+
		"%d activities ran after the restart, all done %v after it; bucket granted %d before the stop, %d after it, %d in all; %d granted tokens unused; %d refill windows, run %d",
		len(ranBefore), workflowCount, stopping.Sub(began).Round(time.Millisecond), retrying, stopTook.Round(time.Millisecond), startTook.Round(time.Millisecond),
		answering.Round(time.Millisecond), afterRestart, drained.Round(time.Millisecond), before.Granted, after.Granted, end.Granted, lost, len(per), end.Run)
	if retrying == 0 || len(ranBefore) == workflowCount || afterRestart == 0 {
		t.Errorf("%d activities ran before the stop (%d retrying), %d after the restart: the restart did not fall in the workload", len(ranBefore), retrying, afterRestart)
	}
	if lost < 0 || lost > slots {
		t.Errorf("the bucket granted %d tokens and %d activities ran: want at most %d grants lost with the server", end.Granted, len(done), slots)
	}
}

// relGate holds the first guarded activity that reaches it until released,
// then records what tb's interceptor, which runs inside it, returned.
type relGate struct {
	temporalinterceptor.WorkerInterceptorBase
	once    sync.Once
	arrived chan struct{}
	release chan struct{}
	results chan relGateResult
}

type relGateResult struct {
	err  error
	took time.Duration
}

func (g *relGate) InterceptActivity(_ context.Context, next temporalinterceptor.ActivityInboundInterceptor) temporalinterceptor.ActivityInboundInterceptor {
	return &relGateInbound{ActivityInboundInterceptorBase: temporalinterceptor.ActivityInboundInterceptorBase{Next: next}, g: g}
}

type relGateInbound struct {
	temporalinterceptor.ActivityInboundInterceptorBase
	g *relGate
}

func (a *relGateInbound) ExecuteActivity(ctx context.Context, in *temporalinterceptor.ExecuteActivityInput) (any, error) {
	first := false
	a.g.once.Do(func() { first = true; close(a.g.arrived) })
	if first {
		select {
		case <-a.g.release:
		case <-ctx.Done():
		}
	}
	began := time.Now()
	v, err := a.Next.ExecuteActivity(ctx, in)
	if first {
		a.g.results <- relGateResult{err: err, took: time.Since(began)}
	}
	return v, err
}

// TestTemporalUnreachableFailsClosed stops the server under an activity that
// is about to take its token: tb's interceptor fails the attempt within its
// acquire timeout and the activity body does not run. An Acquirer fails
// within its timeout too. Once the server is back, the workflow completes.
func TestTemporalUnreachableFailsClosed(t *testing.T) {
	const (
		timeout = time.Second
		bound   = 5 * time.Second
	)
	srv := startRelServer(t)
	c := srv.dial()
	srv.tbWorker()
	// Full and refilled each second: any refusal below is the outage's doing.
	spec := bucket.Spec{Name: "unreachable", Schedule: "@every 1s", Amount: 10, Maximum: 10}
	relSync(t, c, spec)
	ic, err := interceptor.New(interceptor.Options{
		Guards:          map[string][]bucket.Guard{relActivity: {{Bucket: spec.Name, Cost: 1}}},
		AcquirerOptions: interceptor.AcquirerOptions{Timeout: timeout},
	})
	if err != nil {
		t.Fatal(err)
	}
	gate := &relGate{arrived: make(chan struct{}), release: make(chan struct{}), results: make(chan relGateResult, 1)}
	rec := &relRecorder{}
	srv.appWorker(rec, 10, gate, ic) // the gate runs first, tb's interceptor inside it
	acq, err := interceptor.NewAcquirer(srv.dial(), interceptor.AcquirerOptions{Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if d, err := acq.Acquire(ctx, spec.Name, "before", 1); err != nil || !d.Granted {
		t.Fatalf("acquire before the outage: %+v, %v", d, err)
	}
	run, err := c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "unreachable-1", TaskQueue: relQueue}, relCallOnce)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-gate.arrived:
	case <-ctx.Done():
		t.Fatal("the guarded activity never started")
	}

	stopTook := srv.stop()
	close(gate.release)
	began := time.Now()
	during, cancelDuring := context.WithTimeout(ctx, 10*time.Second) // ends the wait should the Acquirer's own timeout not
	_, acqErr := acq.Acquire(during, spec.Name, "during", 1)
	acqTook := time.Since(began)
	cancelDuring()
	var res relGateResult
	select {
	case res = <-gate.results:
	case <-time.After(30 * time.Second):
		t.Fatalf("tb's interceptor did not return within 30s of the server stopping (the Acquirer failed after %v: %v)", acqTook, acqErr)
	}
	bodies, _ := rec.all()
	t.Logf("server stopped in %v; Acquirer (timeout %v) failed after %v: %v; interceptor failed the attempt after %v: %v",
		stopTook.Round(time.Millisecond), timeout, acqTook.Round(time.Millisecond), acqErr, res.took.Round(time.Millisecond), res.err)
	if acqErr == nil || acqTook > bound {
		t.Errorf("Acquire with the server down: %v after %v; want an error within %v", acqErr, acqTook, bound)
	}
	if res.err == nil || res.took > bound {
		t.Errorf("the guarded activity with the server down: %v after %v; want an error within %v", res.err, res.took, bound)
	}
	var appErr *temporal.ApplicationError
	if errors.As(res.err, &appErr) && appErr.Type() == workflows.ErrRateLimited {
		t.Errorf("the outage was reported as a rate limit: %v", res.err)
	}
	if len(bodies) != 0 {
		t.Fatalf("the activity body ran %d times with the server down", len(bodies))
	}

	startTook := srv.start()
	restarted := time.Now()
	testserver.Eventually(t, time.Minute, func() (bool, string) {
		d, err := acq.Acquire(ctx, spec.Name, "after", 1)
		return err == nil && d.Granted, fmt.Sprintf("acquire after the restart: %+v, %v", d, err)
	})
	acquiring := time.Since(restarted)
	if err := run.Get(ctx, nil); err != nil {
		t.Fatalf("workflow after the restart: %v", err)
	}
	bodies, ungranted := rec.all()
	t.Logf("server started again in %v; acquires granted %v later; workflow done %v after the start",
		startTook.Round(time.Millisecond), acquiring.Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))
	if len(bodies) != 1 || ungranted != 0 {
		t.Errorf("after the restart the body ran %d times with a grant and %d without; want once, with", len(bodies), ungranted)
	}
}

// TestBadBucketNamesThroughTheCLI: tb refill and tb tokens on a bucket that
// does not exist, or whose name holds path or query characters, say so on
// one line, exit non-zero, and create nothing.
func TestBadBucketNamesThroughTheCLI(t *testing.T) {
	s := testserver.NewServer(t)
	tbRun, _, _ := against(t, s)
	ctx := context.Background()
	calls := 0
	for _, name := range []string{"nope", "a/b", "a?b=c", "../x", "a b", ""} {
		for _, args := range [][]string{{"refill", name}, {"refill", name, "--amount", "5"}, {"tokens", name}, {"tokens", name, "-o", "json"}} {
			calls++
			r := tbRun(args...)
			if r.code != cli.ExitFailure || !strings.HasPrefix(r.err, "tb: ") || strings.Count(r.err, "\n") != 1 {
				t.Errorf("tb %q: exit %d, stderr %q; want exit %d and one line", args, r.code, r.err, cli.ExitFailure)
			}
			switch args[0] {
			case "refill":
				if want := fmt.Sprintf("tb: bucket %q is not running (run tb sync-schedules)\n", name); r.err != want {
					t.Errorf("tb %q: stderr %q, want %q", args, r.err, want)
				}
			case "tokens":
				if r.err != "tb: 1 of 1 buckets could not be read\n" || !strings.Contains(r.out, "not running (run tb sync-schedules)") {
					t.Errorf("tb %q: stdout %q, stderr %q", args, r.out, r.err)
				}
			}
		}
		var notFound *serviceerror.NotFound
		if _, err := s.Client.DescribeWorkflowExecution(ctx, workflows.BucketID(name), ""); !errors.As(err, &notFound) {
			t.Errorf("bucket %q: a workflow exists (%v)", name, err)
		}
		if _, err := s.Client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(name)).Describe(ctx); !errors.As(err, &notFound) {
			t.Errorf("bucket %q: a Schedule exists (%v)", name, err)
		}
	}
	resp, err := s.Client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range resp.GetExecutions() {
		t.Errorf("workflow %q exists after %d tb commands", e.GetExecution().GetWorkflowId(), calls)
	}
}
