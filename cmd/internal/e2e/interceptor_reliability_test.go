package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/exhausted"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/workflows"
)

// TestWorkerCrashMidAcquire runs app workers as child processes and kills
// one with SIGKILL while an acquire update of its is in flight: the bucket
// has granted the tokens, the activities waiting for them never hear of it.
// Every workflow must still complete, no refill may be drawn on by more
// activity runs than the bucket holds, and the bucket must keep granting. The
// tokens of the killed worker's grants are lost, never handed out twice.
func TestWorkerCrashMidAcquire(t *testing.T) {
	const (
		workflowCount = 40
		amount        = 5
		maximum       = 5
		slots         = 10
		queue         = "reliability-crash"
	)
	s := testserver.NewServer(t)
	spec := bucket.Spec{Name: "crash", Schedule: "@every 1s", Amount: amount, Maximum: maximum}
	s.Sync(t, spec)
	dir := t.TempDir()
	base := helperConfig{
		Address:    s.GetFrontendHostPort(),
		Namespace:  s.GetDefaultNamespace(),
		Bucket:     spec.Name,
		TaskQueue:  queue,
		Slots:      slots,
		StartsFile: filepath.Join(dir, "starts"),
	}
	victimCfg := base
	victimCfg.HoldAfter, victimCfg.HoldFile = 3, filepath.Join(dir, "held")
	victim := startHelper(t, "victim", victimCfg)
	startHelper(t, "survivor", base)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	runs := make([]client.WorkflowRun, workflowCount)
	for i := range runs {
		var err error
		runs[i], err = s.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprintf("crash-%d", i), TaskQueue: queue}, crashWorkflowType)
		if err != nil {
			t.Fatal(err)
		}
	}

	// The victim announces the grant it holds back; kill it then.
	var held int64
	testserver.Eventually(t, time.Minute, func() (bool, string) {
		b, err := os.ReadFile(victimCfg.HoldFile)
		if err != nil || len(b) == 0 {
			return false, fmt.Sprintf("the victim holds no completed grant yet (%v)", err)
		}
		var pid int
		if _, err := fmt.Sscanf(string(b), "held %d %d", &held, &pid); err != nil {
			return false, fmt.Sprintf("hold file %q: %v", b, err)
		}
		return true, ""
	})
	victimPid := victim.cmd.Process.Pid
	victim.kill(t)
	killedAt := time.Now()
	startHelper(t, "replacement", base)

	for i, r := range runs {
		if err := r.Get(ctx, nil); err != nil {
			t.Errorf("workflow crash-%d: %v", i, err)
		}
	}
	completed := time.Now()

	// The bucket still grants: a new caller gets a token.
	acq, err := interceptor.NewAcquirer(s.Client, interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace()})
	if err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		d, err := acq.Acquire(ctx, spec.Name, "after-the-crash", 1)
		return err == nil && d.Granted, fmt.Sprintf("acquire after the crash: %+v, %v", d, err)
	})

	bodies, ungranted, granted := readRuns(t, base.StartsFile)
	if len(ungranted) > 0 {
		t.Errorf("activity bodies ran without a grant:\n%s", strings.Join(ungranted, "\n"))
	}
	ran := map[string]int{}
	ranBy := map[int]int64{}
	var afterKill int
	refills := make([]time.Time, len(bodies))
	for i, b := range bodies {
		ran[b.workflow]++
		ranBy[b.pid]++
		refills[i] = b.refill
		if b.at.After(killedAt) {
			afterKill++
		}
	}
	for i := range workflowCount {
		if id := fmt.Sprintf("crash-%d", i); ran[id] == 0 {
			t.Errorf("workflow %s completed but its activity body never ran", id)
		}
	}
	per := checkWindows(t, refills, maximum)
	if afterKill == 0 {
		t.Error("no activity ran after the crash")
	}

	st, err := s.State(ctx, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	// Every token the bucket granted was logged by the process it went to
	// (but the probe's), unless an update outlived the Acquirer's timeout.
	var logged int64
	var others []string
	for pid, n := range granted {
		logged += n
		if ranBy[pid] > n {
			t.Errorf("process %d ran %d bodies on %d granted tokens", pid, ranBy[pid], n)
		}
		if pid != victimPid {
			others = append(others, fmt.Sprintf("%d of %d", n-ranBy[pid], n))
		}
	}
	lostByVictim := granted[victimPid] - ranBy[victimPid]
	unlogged := st.Granted - 1 - logged
	t.Logf("%d workflows done %v after the kill; %d bodies ran (%d by the killed worker, %d after the kill) over %d refills; "+
		"the bucket granted %d tokens: the killed worker got %d and used %d (its held batch had %d); the others left unused %s; %d not logged",
		workflowCount, completed.Sub(killedAt).Round(time.Millisecond), len(bodies), ranBy[victimPid], afterKill, len(per),
		st.Granted, granted[victimPid], ranBy[victimPid], held, strings.Join(others, ", "), unlogged)
	if int64(len(bodies))+1 > st.Granted {
		t.Errorf("bodies ran %d times (and the probe once) on %d granted tokens: a token was spent twice", len(bodies), st.Granted)
	}
	if unlogged < 0 {
		t.Errorf("the workers logged %d granted tokens, the bucket counts %d", logged, st.Granted-1)
	}
	if lostByVictim < held || lostByVictim > slots {
		t.Errorf("the killed worker left %d granted tokens unused; want from its held %d to its %d slots", lostByVictim, held, slots)
	}
}

// TestDuplicateRefillsAndAcquires delivers the same refill tick twice and
// the same acquire twice, within a run and across continue-as-new: each is
// applied once.
func TestDuplicateRefillsAndAcquires(t *testing.T) {
	s := testserver.NewServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("backfilled ticks", func(t *testing.T) {
		// A yearly refill that never fires during the test, so every tick comes from a backfill.
		spec := bucket.Spec{Name: "dup_backfill", Schedule: "@yearly", Amount: 1, Maximum: 1000, Initial: new(int64(0))}
		s.Sync(t, spec)
		h := s.Client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(spec.Name))
		// The range holds the ticks of 2020, 2021, 2022 and 2023.
		backfill := client.ScheduleBackfillOptions{Backfill: []client.ScheduleBackfill{{
			Start:   time.Date(2019, 12, 31, 23, 59, 0, 0, time.UTC),
			End:     time.Date(2023, 1, 1, 0, 1, 0, 0, time.UTC),
			Overlap: enumspb.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL,
		}}}
		var ids []string
		for y := 2020; y <= 2023; y++ {
			ids = append(ids, fmt.Sprintf("%s-%d-01-01T00:00:00Z", workflows.ScheduleID(spec.Name), y))
		}
		if err := h.Backfill(ctx, backfill); err != nil {
			t.Fatal(err)
		}
		first := waitRefillRuns(t, s, ids, nil)
		waitTokens(t, s, spec.Name, 4)
		// The same range again: four refill workflows signal four ticks already applied.
		if err := h.Backfill(ctx, backfill); err != nil {
			t.Fatal(err)
		}
		waitRefillRuns(t, s, ids, first)
		st := probeRefill(t, s, spec.Name, 100)
		if st.Tokens != 104 {
			t.Errorf("tokens = %d after 4 ticks delivered twice and a refill of 100; want 104", st.Tokens)
		}
		if n := countSignals(t, s, spec.Name); n != 9 {
			t.Errorf("the bucket received %d refill signals, want 9 (4 ticks twice and the probe)", n)
		}
	})

	t.Run("refill workflow twice for one tick", func(t *testing.T) {
		spec := bucket.Spec{Name: "dup_refill", Schedule: "@yearly", Amount: 7, Maximum: 1000, Initial: new(int64(0))}
		s.Sync(t, spec)
		// The ID a Schedule gives the refill of a tick; the refill reads the tick from it.
		id := workflows.ScheduleID(spec.Name) + "-2024-01-01T00:00:00Z"
		for range 2 {
			run, err := s.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue},
				workflows.RefillWorkflowType, workflows.RefillInput{Spec: spec})
			if err != nil {
				t.Fatal(err)
			}
			if err := run.Get(ctx, nil); err != nil {
				t.Fatal(err)
			}
		}
		st := probeRefill(t, s, spec.Name, 100)
		if st.Tokens != 107 || !st.LastTick.Equal(time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("tokens = %d, last tick %v after one tick delivered twice (amount 7) and a refill of 100; want 107 and 2024-01-01", st.Tokens, st.LastTick)
		}
	})

	t.Run("acquire retried with one update ID", func(t *testing.T) {
		spec := bucket.Spec{Name: "dup_update", Schedule: "@yearly", Amount: 1, Maximum: 100}
		s.Sync(t, spec)
		batch := workflows.AcquireBatch{Requests: []workflows.AcquireRequest{{ID: "r1", Cost: 3}}}
		for i := range 2 {
			resp, err := sendAcquire(ctx, s.Client, spec.Name, "fixed-update-id", batch)
			if err != nil || !grantedOne(resp) {
				t.Fatalf("send %d: %+v, %v", i, resp, err)
			}
		}
		// The same request in an update with another ID: granted, not taken again.
		if resp, err := sendAcquire(ctx, s.Client, spec.Name, "another-update-id", batch); err != nil || !grantedOne(resp) || resp.Tokens != 97 {
			t.Fatalf("same request, new update ID: %+v, %v", resp, err)
		}
		// One update ID sent by five callers at once.
		var g sync.WaitGroup
		errs := make([]error, 5)
		for i := range errs {
			g.Go(func() {
				b := workflows.AcquireBatch{Requests: []workflows.AcquireRequest{{ID: "r2", Cost: 2}}}
				resp, err := sendAcquire(ctx, s.Client, spec.Name, "concurrent-update-id", b)
				if err == nil && !grantedOne(resp) {
					err = fmt.Errorf("not granted: %+v", resp)
				}
				errs[i] = err
			})
		}
		g.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		st, err := s.State(ctx, spec.Name)
		if err != nil {
			t.Fatal(err)
		}
		if st.Tokens != 95 || st.Granted != 5 {
			t.Errorf("tokens %d, granted %d; want 95 and 5 (3 for r1, 2 for r2, each once)", st.Tokens, st.Granted)
		}
	})

	t.Run("across continue-as-new", func(t *testing.T) {
		spec := bucket.Spec{Name: "dup_can", Schedule: "@yearly", Amount: 1, Maximum: 1000, Initial: new(int64(0))}
		id := workflows.BucketID(spec.Name)
		if _, err := s.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue},
			workflows.BucketWorkflowType, workflows.BucketInput{Spec: spec, MaxUpdatesPerRun: 3}); err != nil {
			t.Fatal(err)
		}
		refill := workflows.Refill{ID: "tick-R1", Tick: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), Amount: 10}
		if err := s.Client.SignalWorkflow(ctx, id, "", workflows.RefillSignal, refill); err != nil {
			t.Fatal(err)
		}
		waitTokens(t, s, spec.Name, 10)
		req := func(rid string, cost int64) workflows.AcquireBatch {
			return workflows.AcquireBatch{Requests: []workflows.AcquireRequest{{ID: rid, Cost: cost}}}
		}
		for _, u := range []struct {
			update string
			batch  workflows.AcquireBatch
		}{{"u-a", req("a", 2)}, {"u-b", req("b", 3)}, {"u-c", req("c", 1)}} { // the third update ends the run
			if resp, err := sendAcquire(ctx, s.Client, spec.Name, u.update, u.batch); err != nil || !grantedOne(resp) {
				t.Fatalf("%s: %+v, %v", u.update, resp, err)
			}
		}
		first := waitRun(t, s, spec.Name, 1)
		t.Logf("continued as new: run %d, %d tokens, %d granted", first.Run, first.Tokens, first.Granted)
		if first.Tokens != 4 || first.Granted != 6 {
			t.Fatalf("after the first run: %d tokens, %d granted; want 4 and 6", first.Tokens, first.Granted)
		}

		// In the new run: the same refill, then the same updates, and the same requests under new update IDs.
		if err := s.Client.SignalWorkflow(ctx, id, "", workflows.RefillSignal, refill); err != nil {
			t.Fatal(err)
		}
		if st := probeRefill(t, s, spec.Name, 100); st.Tokens != 104 {
			t.Errorf("run %d: %d tokens after the first run's refill was resent and a refill of 100; want 104: the tick was applied again", st.Run, st.Tokens)
		}
		for _, u := range []struct {
			update string
			batch  workflows.AcquireBatch
		}{{"u-a", req("a", 2)}, {"u-b", req("b", 3)}, {"u-a-again", req("a", 2)}, {"u-c-again", req("c", 1)}} {
			before, err := s.State(ctx, spec.Name)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := sendAcquire(ctx, s.Client, spec.Name, u.update, u.batch)
			if err != nil || !grantedOne(resp) {
				t.Fatalf("%s resent: %+v, %v", u.update, resp, err)
			}
			if resp.Tokens != before.Tokens {
				t.Errorf("%s resent in run %d: the bucket went from %d to %d tokens: the request was granted again", u.update, before.Run, before.Tokens, resp.Tokens)
			}
		}
		st, err := s.State(ctx, spec.Name)
		if err != nil {
			t.Fatal(err)
		}
		if st.Run < 2 || st.Tokens != 104 || st.Granted != 6 {
			t.Errorf("after resending: run %d, %d tokens, %d granted; want a run ≥ 2 (continued again), 104 tokens (4 + the probe's 100) and 6 granted", st.Run, st.Tokens, st.Granted)
		}
	})
}

// grantedOne reports whether resp answers one request, granted.
func grantedOne(resp workflows.AcquireResponse) bool {
	return len(resp.Results) == 1 && resp.Results[0].Granted
}

// sendAcquire sends one acquire update; a nil arg sends none.
func sendAcquire(ctx context.Context, c client.Client, name, updateID string, arg any) (workflows.AcquireResponse, error) {
	opts := client.UpdateWorkflowOptions{
		UpdateID:     updateID,
		WorkflowID:   workflows.BucketID(name),
		UpdateName:   workflows.AcquireUpdate,
		WaitForStage: client.WorkflowUpdateStageCompleted,
	}
	if arg != nil {
		opts.Args = []any{arg}
	}
	var resp workflows.AcquireResponse
	h, err := c.UpdateWorkflow(ctx, opts)
	if err == nil {
		err = h.Get(ctx, &resp)
	}
	return resp, err
}

// waitRefillRuns waits until each refill workflow ID has a completed run
// other than the one in not, and returns those run IDs.
func waitRefillRuns(t *testing.T, s *testserver.Server, ids []string, not map[string]string) map[string]string {
	t.Helper()
	runs := map[string]string{}
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		for _, id := range ids {
			d, err := s.Client.DescribeWorkflowExecution(context.Background(), id, "")
			if err != nil {
				return false, fmt.Sprintf("%s: %v", id, err)
			}
			info := d.GetWorkflowExecutionInfo()
			run := info.GetExecution().GetRunId()
			if run == not[id] || info.GetStatus() != enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED {
				return false, fmt.Sprintf("%s: run %s is %v", id, run, info.GetStatus())
			}
			runs[id] = run
		}
		return true, ""
	})
	return runs
}

func waitTokens(t *testing.T, s *testserver.Server, name string, tokens int64) workflows.Status {
	t.Helper()
	var st workflows.Status
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		var err error
		st, err = s.State(context.Background(), name)
		return err == nil && st.Tokens == tokens, fmt.Sprintf("%d tokens (%v), want %d", st.Tokens, err, tokens)
	})
	return st
}

func waitRun(t *testing.T, s *testserver.Server, name string, run int) workflows.Status {
	t.Helper()
	var st workflows.Status
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		var err error
		st, err = s.State(context.Background(), name)
		return err == nil && st.Run >= run, fmt.Sprintf("run %d (%v), want %d", st.Run, err, run)
	})
	return st
}

// probeRefill signals a manual refill of amount with a new ID and returns the
// bucket's state once it is applied: every refill signalled before it has been handled.
func probeRefill(t *testing.T, s *testserver.Server, name string, amount int64) workflows.Status {
	t.Helper()
	ctx := context.Background()
	before, err := s.State(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	probe := workflows.Refill{ID: fmt.Sprintf("probe-%d", time.Now().UnixNano()), Amount: amount}
	if err := s.Client.SignalWorkflow(ctx, workflows.BucketID(name), "", workflows.RefillSignal, probe); err != nil {
		t.Fatal(err)
	}
	var st workflows.Status
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		st, err = s.State(ctx, name)
		return err == nil && st.LastRefill.After(before.LastRefill), fmt.Sprintf("probe refill not applied yet (%v)", err)
	})
	return st
}

// countSignals counts the refill signals in every run of a bucket's history.
func countSignals(t *testing.T, s *testserver.Server, name string) int {
	t.Helper()
	ctx := context.Background()
	n := 0
	run := ""
	for {
		it := s.Client.GetWorkflowHistory(ctx, workflows.BucketID(name), run, false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
		next := ""
		for it.HasNext() {
			e, err := it.Next()
			if err != nil {
				t.Fatal(err)
			}
			if sig := e.GetWorkflowExecutionSignaledEventAttributes(); sig != nil && sig.SignalName == workflows.RefillSignal {
				n++
			}
			if a := e.GetWorkflowExecutionStartedEventAttributes(); a != nil {
				next = a.GetContinuedExecutionRunId()
			}
		}
		if next == "" {
			return n
		}
		run = next
	}
}

// TestOverloadKeepsServing: 4 processes × 200 callers hammer a bucket that
// grants 20 tokens a second, for 15 s (a minute with TB_LONG=1). The bucket
// keeps granting, never more than a refill holds; it continues as new, so
// its current history stays short; no caller gets an error, and the server
// never refuses an update for having too many in flight: each process keeps
// at most two in flight, below Temporal's 10 per workflow.
func TestOverloadKeepsServing(t *testing.T) {
	const (
		processes = 4
		amount    = 20
		maximum   = 20
		// Batching makes accepted updates few (denials write no history), so
		// the bucket is told to continue as new after 10 to show it under load.
		maxUpdatesPerRun = 10
		// Well above a run of 10 accepted updates (~5 events each) and the
		// refill signals between them (~4 each); one run of 15 s without
		// continue-as-new holds ~250 events.
		historyBound = 200
		// The bucket refills each second; callers going without a grant for
		// this long (or twice the longest gap between refills, plus a second,
		// if refills come later still) means it stopped serving.
		maxWait = 5 * time.Second
	)
	callers, duration := 200, 15*time.Second
	if os.Getenv("TB_LONG") == "1" {
		duration = time.Minute
	}
	if raceEnabled {
		// The race detector caps live goroutines (the server has thousands)
		// and slows the server several times over: a shorter, lighter load,
		// whose safety still holds; its liveness is only logged.
		callers, duration = 50, 10*time.Second
	}
	s := testserver.NewServer(t)
	spec := bucket.Spec{Name: "overload", Schedule: "@every 1s", Amount: amount, Maximum: maximum}
	ctx, cancel := context.WithTimeout(context.Background(), duration+2*time.Minute)
	defer cancel()
	id := workflows.BucketID(spec.Name)
	// Started here to continue as new often; the Sync that follows finds it
	// up to date and adds the refill Schedule.
	if _, err := s.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: id, TaskQueue: workflows.TaskQueue,
		Memo: map[string]any{workflows.SpecMemo: spec}},
		workflows.BucketWorkflowType, workflows.BucketInput{Spec: spec, MaxUpdatesPerRun: maxUpdatesPerRun}); err != nil {
		t.Fatal(err)
	}
	s.Sync(t, spec)
	before, err := s.State(ctx, spec.Name)
	if err != nil {
		t.Fatal(err)
	}

	// Sample the current run's history length while the load runs.
	var maxHistory atomic.Int64
	runIDs := sync.Map{}
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			if n, run, err := historyLength(ctx, s.Client, id); err == nil {
				runIDs.Store(run, true)
				if n > maxHistory.Load() {
					maxHistory.Store(n)
				}
			}
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	}()

	type tally struct {
		mu       sync.Mutex
		grants   []time.Time // LastRefill of each grant
		grantAt  []time.Time // when each grant reached its caller
		seen     map[time.Time]bool
		errs     map[string]int
		firstErr map[string]error
		acquires int
	}
	tl := &tally{seen: map[time.Time]bool{}, errs: map[string]int{}, firstErr: map[string]error{}}
	begin := time.Now()
	end := begin.Add(duration)
	var wg sync.WaitGroup
	exhausted := exhausted.New()
	for p := range processes {
		process := s.NewClientWithOptions(client.Options{
			Logger:         log.NewStructuredLogger(slog.New(slog.DiscardHandler)),
			MetricsHandler: exhausted,
		})
		acq, err := interceptor.NewAcquirer(process, interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace(), MaxInFlight: 2})
		if err != nil {
			t.Fatal(err)
		}
		for c := range callers {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(p), uint64(c)))
				for n := 0; time.Now().Before(end); n++ {
					d, err := acq.Acquire(ctx, spec.Name, fmt.Sprintf("p%d-c%d-%d", p, c, n), 1)
					tl.mu.Lock()
					tl.acquires++
					if err != nil {
						class := errorClass(err)
						tl.errs[class]++
						if tl.firstErr[class] == nil {
							tl.firstErr[class] = err
						}
					} else {
						tl.seen[d.LastRefill] = true
						if d.Granted {
							tl.grants = append(tl.grants, d.LastRefill)
							tl.grantAt = append(tl.grantAt, time.Now())
						}
					}
					tl.mu.Unlock()
					wait := 100 * time.Millisecond // after an error
					if err == nil {
						if d.Granted {
							continue
						}
						// Come back at any moment up to when tokens are expected: many come too early.
						wait = time.Duration(rng.Int64N(int64(d.RetryAfter) + 1))
					}
					timer := time.NewTimer(min(wait, time.Until(end)))
					<-timer.C
				}
			})
		}
	}
	goroutines := runtime.NumGoroutine()
	wg.Wait()
	exhaustedByCause := exhausted.ByCause()
	elapsed := time.Since(begin)
	close(stopSampling)
	<-sampled

	// The bucket still answers, and grants.
	probe, err := interceptor.NewAcquirer(s.Client, interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace()})
	if err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		d, err := probe.Acquire(ctx, spec.Name, "after-the-overload", 1)
		return err == nil && d.Granted, fmt.Sprintf("acquire after the overload: %+v, %v", d, err)
	})
	after, err := s.State(ctx, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	hist, _, err := historyLength(ctx, s.Client, id)
	if err != nil {
		t.Fatal(err)
	}
	maxHistory.Store(max(maxHistory.Load(), hist))
	runs := 0
	runIDs.Range(func(any, any) bool { runs++; return true })

	per := checkWindows(t, tl.grants, maximum)
	// Refill windows seen by any answer, but the first and last, which the
	// load only partly covers. A refill that arrives late, when the next tick
	// is already due, has its tokens counted against that next tick: the
	// window it opens can pass without a grant, so windows are only logged.
	var windows []time.Time
	for w := range tl.seen {
		windows = append(windows, w)
	}
	slices.SortFunc(windows, func(a, b time.Time) int { return a.Compare(b) })
	var middle, served, fullyServed int
	for i := 1; i < len(windows)-1; i++ {
		w := windows[i]
		middle++
		if per[w] > 0 {
			served++
		}
		if per[w] == maximum {
			fullyServed++
		}
	}
	// The longest time no caller was granted a token, and the longest time
	// between two refills (or the last one and the end of the load): when
	// CPU contention delays the refills themselves, grants wait for them.
	slices.SortFunc(tl.grantAt, func(a, b time.Time) int { return a.Compare(b) })
	var longestWait, longestRefillGap time.Duration
	prev := begin
	for _, at := range append(tl.grantAt, end) {
		longestWait = max(longestWait, at.Sub(prev))
		prev = at
	}
	prev = time.Time{}
	for _, w := range append(windows, end) {
		if !prev.IsZero() {
			longestRefillGap = max(longestRefillGap, w.Sub(prev))
		}
		prev = w
	}
	waitBound := max(maxWait, 2*longestRefillGap+time.Second)
	if os.Getenv("TB_DEBUG") != "" {
		for _, w := range windows {
			t.Logf("window %s: %d grants", w.Format("15:04:05.000"), per[w])
		}
	}
	var errTotal int
	var errText []string
	for class, n := range tl.errs {
		errTotal += n
		errText = append(errText, fmt.Sprintf("%s ×%d (first: %v)", class, n, tl.firstErr[class]))
	}
	t.Logf("%d callers (%d goroutines) for %v: %d acquires, %d granted (%.0f%% of %d per second); longest time without a grant %v (refills at most %v apart); "+
		"grants in %d of %d refill windows opened and closed within the load (%d took all %d tokens); bucket run %d → %d (%d runs sampled), "+
		"history at most %d events (now %d); errors: %d %v; ResourceExhausted answers to the callers' clients, retries included: %v",
		processes*callers, goroutines, elapsed.Round(time.Millisecond), tl.acquires, len(tl.grants),
		100*float64(len(tl.grants))/(elapsed.Seconds()*amount), amount, longestWait.Round(time.Millisecond), longestRefillGap.Round(time.Millisecond),
		served, middle, fullyServed, maximum, before.Run, after.Run, runs, maxHistory.Load(), hist, errTotal, errText, exhaustedByCause)

	if n := tl.errs["ResourceExhausted"]; n > 0 {
		t.Errorf("callers saw ResourceExhausted %d times: %v", n, tl.firstErr["ResourceExhausted"])
	}
	// The SDK retries ResourceExhausted answers out of the callers' sight.
	// BusyWorkflow is how the server turns updates away from a run that is
	// continuing as new (they land on the next run) or whose lock it could not
	// take in time; any other cause, above all ConcurrentLimit (more than 10
	// updates in flight), is what batching must prevent.
	for cause, n := range exhaustedByCause {
		if cause != "BusyWorkflow" {
			t.Errorf("the server answered the callers' acquire updates with ResourceExhausted (%s) %d times", cause, n)
		}
	}
	if errTotal > 0 {
		t.Errorf("callers saw %d errors: %s", errTotal, strings.Join(errText, "; "))
		// What the bucket's runs recorded of failed workflow tasks, which
		// abort the updates they carry.
		runIDs.Range(func(k, _ any) bool {
			it := s.Client.GetWorkflowHistory(ctx, id, k.(string), false, 0)
			for it.HasNext() {
				ev, err := it.Next()
				if err != nil {
					break
				}
				if a := ev.GetWorkflowTaskFailedEventAttributes(); a != nil {
					t.Logf("run %s, event %d: workflow task failed: %v: %v", k, ev.GetEventId(), a.GetCause(), a.GetFailure().GetMessage())
				}
				if a := ev.GetWorkflowTaskTimedOutEventAttributes(); a != nil {
					t.Logf("run %s, event %d: workflow task timed out: %v", k, ev.GetEventId(), a.GetTimeoutType())
				}
			}
			return true
		})
	}
	if int64(len(tl.grants))+1 > after.Granted-before.Granted {
		t.Errorf("callers hold %d grants; the bucket counts %d", len(tl.grants)+1, after.Granted-before.Granted)
	}
	// Liveness under this load needs the server at full speed.
	liveness := t.Errorf
	if raceEnabled {
		liveness = t.Logf
	}
	if longestWait > waitBound {
		liveness("no caller was granted a token for %v of the load, though refills came at most %v apart: the bucket stopped serving",
			longestWait.Round(time.Millisecond), longestRefillGap.Round(time.Millisecond))
	}
	if after.Run < 2 {
		liveness("the bucket continued as new %d times under load, want at least 2 (every %d updates)", after.Run, maxUpdatesPerRun)
	}
	if maxHistory.Load() >= historyBound {
		t.Errorf("the current run's history reached %d events; want under %d", maxHistory.Load(), historyBound)
	}
}

// TestBadAcquirePayloads sends acquire updates the bucket can never grant to
// a real bucket workflow: each is refused with an InvalidRequest error
// naming the problem, the workflow never fails a task, and the tokens stay.
func TestBadAcquirePayloads(t *testing.T) {
	s := testserver.NewServer(t)
	spec := bucket.Spec{Name: "payloads", Schedule: "@yearly", Amount: 5, Maximum: 5, Initial: new(int64(3))}
	s.Sync(t, spec)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before, err := s.State(ctx, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	one := func(id string, cost int64) workflows.AcquireBatch {
		return workflows.AcquireBatch{Requests: []workflows.AcquireRequest{{ID: id, Cost: cost}}}
	}
	tooMany := workflows.AcquireBatch{Requests: make([]workflows.AcquireRequest, workflows.MaxBatch+1)}
	for i := range tooMany.Requests {
		tooMany.Requests[i] = workflows.AcquireRequest{ID: fmt.Sprint(i), Cost: 1}
	}
	raw := func(cost any) map[string]any {
		return map[string]any{"requests": []any{map[string]any{"id": "x", "cost": cost}}}
	}
	for _, tc := range []struct {
		name    string
		arg     any
		errType string // "" when the SDK refuses the payload before tb's validator sees it
		want    string // in the error message
	}{
		{"negative cost", one("neg", -1), workflows.ErrInvalidRequest, "cost must be greater than 0, got -1"},
		{"zero cost", one("zero", 0), workflows.ErrInvalidRequest, "cost must be greater than 0, got 0"},
		{"cost over the maximum", one("big", 6), workflows.ErrInvalidRequest, "cost 6 is more than the bucket's maximum (5)"},
		{"cost MaxInt64", one("huge", math.MaxInt64), workflows.ErrInvalidRequest, fmt.Sprintf("cost %d is more than the bucket's maximum (5)", int64(math.MaxInt64))},
		{"cost MinInt64", one("tiny", math.MinInt64), workflows.ErrInvalidRequest, fmt.Sprintf("got %d", int64(math.MinInt64))},
		{"empty request id", one("", 1), workflows.ErrInvalidRequest, "request id is required"},
		{"empty batch", workflows.AcquireBatch{}, workflows.ErrInvalidRequest, "an acquire batch holds no requests"},
		{"no argument", nil, workflows.ErrInvalidRequest, "an acquire batch holds no requests"},
		{"too many requests", tooMany, workflows.ErrInvalidRequest, "holds 5001 requests; the most is 5000"},
		{"non-integer cost", raw(1.5), "", "cost"},
		{"cost as a string", raw("1"), "", "cost"},
		{"cost beyond int64", raw(1e30), "", "cost"},
		{"requests not a list", map[string]any{"requests": "all of them"}, "", "requests"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := sendAcquire(ctx, s.Client, spec.Name, "", tc.arg)
			if err == nil {
				t.Fatalf("accepted: %+v", resp)
			}
			var appErr *temporal.ApplicationError
			switch {
			case !errors.As(err, &appErr):
				t.Errorf("error %v (%T): want an ApplicationError", err, err)
			case tc.errType != "" && (appErr.Type() != tc.errType || !appErr.NonRetryable()):
				t.Errorf("error %v: want a non-retryable ApplicationError of type %s", err, tc.errType)
			case tc.errType == "" && !strings.Contains(err.Error(), "cannot unmarshal"):
				t.Errorf("error %v: want the decoding error", err)
			}
			if !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q: want one line containing %q", err, tc.want)
			}
			t.Logf("%s: %v", tc.name, err)
			if st, err := s.State(ctx, spec.Name); err != nil || st.Tokens != before.Tokens || st.Granted != before.Granted {
				t.Errorf("after it the bucket holds %d tokens, granted %d (%v); want %d and %d", st.Tokens, st.Granted, err, before.Tokens, before.Granted)
			}
		})
	}

	// A batch mixing good and bad requests: the good one is granted, the bad
	// one refused with its reason.
	mixed := workflows.AcquireBatch{Requests: []workflows.AcquireRequest{{ID: "ok", Cost: 1}, {ID: "ok", Cost: 1}, {ID: "bad", Cost: -2}}}
	resp, err := sendAcquire(ctx, s.Client, spec.Name, "", mixed)
	if err != nil || len(resp.Results) != 3 || !resp.Results[0].Granted ||
		!strings.Contains(resp.Results[1].Invalid, `request id "ok" appears twice`) || !strings.Contains(resp.Results[2].Invalid, "got -2") || resp.Tokens != before.Tokens-1 {
		t.Errorf("mixed batch: %+v, %v", resp, err)
	}

	// Through the Acquirer, as the interceptor would.
	acq, err := interceptor.NewAcquirer(s.Client, interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace()})
	if err != nil {
		t.Fatal(err)
	}
	for _, cost := range []int64{-1, 0, 6, math.MaxInt64} {
		d, err := acq.Acquire(ctx, spec.Name, fmt.Sprintf("acq-%d", cost), cost)
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || appErr.Type() != workflows.ErrInvalidRequest || !appErr.NonRetryable() || !strings.Contains(err.Error(), "cost") {
			t.Errorf("Acquire cost %d: %+v, %v; want a non-retryable InvalidRequest naming the cost", cost, d, err)
		}
	}

	after, err := s.State(ctx, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	if after.Tokens != before.Tokens-1 || after.Granted != before.Granted+1 || after.Run != before.Run {
		t.Errorf("after the bad payloads: %d tokens, %d granted, run %d; want %d, %d, %d (only the mixed batch's good request taken)",
			after.Tokens, after.Granted, after.Run, before.Tokens-1, before.Granted+1, before.Run)
	}
	if d, err := acq.Acquire(ctx, spec.Name, "good", 1); err != nil || !d.Granted {
		t.Errorf("a good request after the bad ones: %+v, %v", d, err)
	}
	// No workflow task failed: a panic in the bucket would show as one.
	it := s.Client.GetWorkflowHistory(ctx, workflows.BucketID(spec.Name), "", false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		if f := e.GetWorkflowTaskFailedEventAttributes(); f != nil {
			t.Errorf("workflow task failed: %v", f.GetFailure())
		}
	}
}

// TestBadBucketNamesThroughTheAcquirer: an unknown bucket gets an
// UnknownBucket error, and names that look like paths or queries, or that
// could not travel in a gRPC header, a non-retryable InvalidRequest before
// anything is sent; each names the bucket on one line and creates nothing.
func TestBadBucketNamesThroughTheAcquirer(t *testing.T) {
	s := testserver.NewServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	acq, err := interceptor.NewAcquirer(s.Client, interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace(), Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		errType string // "" for an error that is not the bucket's answer
	}{
		{"nope", workflows.ErrUnknownBucket},
		{"a/b", workflows.ErrInvalidRequest},
		{"a?b=c", workflows.ErrInvalidRequest},
		{"../x", workflows.ErrInvalidRequest},
		{"a b", workflows.ErrInvalidRequest},
		{"", workflows.ErrInvalidRequest},
		{"a\nb", workflows.ErrInvalidRequest},
	} {
		name := tc.name
		d, err := acq.Acquire(ctx, name, "r", 1)
		if err == nil {
			t.Errorf("bucket %q: %+v, want an error", name, d)
			continue
		}
		t.Logf("bucket %q: %v", name, err)
		var appErr *temporal.ApplicationError
		if tc.errType != "" && (!errors.As(err, &appErr) || appErr.Type() != tc.errType) {
			t.Errorf("bucket %q: %v; want an %s error", name, err, tc.errType)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("bucket %q", name)) || strings.Contains(err.Error(), "\n") {
			t.Errorf("bucket %q: error %q; want one line naming the bucket", name, err)
		}
		if strings.Contains(name, "\n") {
			continue // such an ID cannot even be looked up
		}
		var notFound *serviceerror.NotFound
		if _, err := s.Client.DescribeWorkflowExecution(ctx, workflows.BucketID(name), ""); !errors.As(err, &notFound) {
			t.Errorf("bucket %q: a workflow exists after the acquire (%v)", name, err)
		}
		if _, err := s.Client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(name)).Describe(ctx); !errors.As(err, &notFound) {
			t.Errorf("bucket %q: a Schedule exists after the acquire (%v)", name, err)
		}
	}
	// Nothing at all was started in the namespace.
	resp, err := s.Client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range resp.GetExecutions() {
		t.Errorf("workflow %q exists", e.GetExecution().GetWorkflowId())
	}
}
