package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
)

// DrainRow is how a backlog of guarded activities drains through a bucket
// refilled with 10 tokens every second (maximum 10), for one way of limiting.
type DrainRow struct {
	Limiter    string  `json:"limiter"` // "tb", "fixed-5s", "task-queue-rps"
	Activities int     `json:"activities"`
	Reps       int     `json:"reps"`
	IdealSec   float64 `json:"idealSec"`
	DrainSec   float64 `json:"drainSec"` // median over reps
	VsIdeal    float64 `json:"vsIdeal"`  // DrainSec / IdealSec
	// DenialsPerGrant: answers "no token" per token granted; UpdatesPerGrant:
	// acquire updates sent per token granted; AttemptsPerActivity: activity
	// attempts started per activity (1 when no attempt was spent on a denial).
	// Medians over reps.
	DenialsPerGrant     float64 `json:"denialsPerGrant"`
	UpdatesPerGrant     float64 `json:"updatesPerGrant"`
	AttemptsPerActivity float64 `json:"attemptsPerActivity"`
	// OverWindow is the most starts in one refill window minus the tokens
	// available in it (must be ≤ 0), by the bucket's own refills where it
	// has them, and over one-second wall-clock windows aligned to the ticks.
	OverRefillWindow *int `json:"overRefillWindow,omitempty"`
	OverClockWindow  int  `json:"overClockWindow"`
	// FirstSec is when the first activity ran after the backlog was queued
	// (median over reps): the server starting n workflows at once, and for
	// tb the start spread.
	FirstSec float64 `json:"firstSec"`
}

const (
	drainSchedule = "@every 1s"
	drainAmount   = 10
	drainActivity = "CallAPI"
	drainWorkflow = "CallAPIOnce"
)

func callOnce(ctx workflow.Context) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		ScheduleToCloseTimeout: 10 * time.Minute,
		StartToCloseTimeout:    time.Minute,
		RetryPolicy:            &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 0},
	})
	return workflow.ExecuteActivity(ctx, drainActivity).Get(ctx, nil)
}

// recorder is the guarded activity: it notes each start and the refill its token came from.
type recorder struct {
	mu      sync.Mutex
	starts  []time.Time
	refills map[time.Time]int
}

func (r *recorder) call(ctx context.Context) error {
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.starts = append(r.starts, now)
	if g, ok := interceptor.GrantFromContext(ctx); ok {
		r.refills[g.LastRefill]++
	} else if g, ok := ctx.Value(fixedGrantKey{}).(interceptor.Decision); ok {
		r.refills[g.LastRefill]++
	}
	return nil
}

// runDrain runs the comparison rows and, with -long, tb's drain at each of
// drainPhases after them, on the same (warm) server.
func runDrain(ctx context.Context, cfg config) ([]DrainRow, []DrainPhaseRow, error) {
	e, err := newEnv(ctx, true, nil)
	if err != nil {
		return nil, nil, err
	}
	defer e.close()
	rows, err := drainRows(ctx, cfg, e)
	if err != nil || !cfg.long {
		return rows, nil, err
	}
	phases, err := drainPhaseRows(ctx, cfg, e, rows[0].Activities, drainPhases)
	return rows, phases, err
}

// runDrainPhases runs tb's drain at each of drainPhasesAlone, alone on its
// server: the phase rows of -long drain, at twice the phases.
func runDrainPhases(ctx context.Context, cfg config) ([]DrainPhaseRow, error) {
	e, err := newEnv(ctx, true, nil)
	if err != nil {
		return nil, err
	}
	defer e.close()
	return drainPhaseRows(ctx, cfg, e, cfg.scale(100, 300), drainPhasesAlone)
}

func drainRows(ctx context.Context, cfg config, e *env) ([]DrainRow, error) {
	n := cfg.scale(100, 300)
	reps := cfg.scale(1, 3)
	var rows []DrainRow
	for _, limiter := range []string{"tb", "fixed-5s", "task-queue-rps"} {
		row := DrainRow{Limiter: limiter, Activities: n, Reps: reps, IdealSec: float64(n-drainAmount) / drainAmount}
		var drains, denials, updates, attempts, firsts []float64
		for rep := range reps {
			r, err := drainOnce(ctx, e, limiter, rep, n, -1)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", limiter, err)
			}
			drains, denials = append(drains, r.drain.Seconds()), append(denials, r.denialsPerGrant)
			updates, attempts = append(updates, r.updatesPerGrant), append(attempts, r.attemptsPerActivity)
			firsts = append(firsts, r.first.Seconds())
			row.OverClockWindow = max(row.OverClockWindow, r.overClock)
			if r.overRefill != nil {
				v := *r.overRefill
				if row.OverRefillWindow != nil {
					v = max(v, *row.OverRefillWindow)
				}
				row.OverRefillWindow = &v
			}
		}
		row.DrainSec, row.DenialsPerGrant = median(drains), median(denials)
		row.UpdatesPerGrant, row.AttemptsPerActivity = median(updates), median(attempts)
		row.VsIdeal = row.DrainSec / row.IdealSec
		row.FirstSec = median(firsts)
		rows = append(rows, row)
		cfg.logf("drain: %s: %.1fs for ideal %.0fs (%.2fx), first activity after %.2fs, %.2f denials and %.2f updates per grant, %.2f attempts per activity",
			limiter, row.DrainSec, row.IdealSec, row.VsIdeal, row.FirstSec, row.DenialsPerGrant, row.UpdatesPerGrant, row.AttemptsPerActivity)
	}
	return rows, nil
}

// DrainPhaseRow is tb's drain with the bucket's Schedule created at a given
// fraction of a second: a Schedule starts its refill workflows near that
// phase (drifting), so it sets how late each tick's own refill signal is.
type DrainPhaseRow struct {
	TargetPhase   float64 `json:"targetPhase"`   // seconds past a whole second the Schedule was meant to be created at
	SchedulePhase float64 `json:"schedulePhase"` // and was
	Activities    int     `json:"activities"`
	IdealSec      float64 `json:"idealSec"`
	DrainSec      float64 `json:"drainSec"`
	VsIdeal       float64 `json:"vsIdeal"`
	// Lags of the ticks during the drain (see RefillResult): each tick's own
	// refill signal, and when it became applicable.
	SignalP50ms      float64 `json:"signalP50ms"`
	SignalP99ms      float64 `json:"signalP99ms"`
	EffectiveP50ms   float64 `json:"effectiveP50ms"`
	EffectiveP99ms   float64 `json:"effectiveP99ms"`
	NextOnlyP99ms    float64 `json:"nextOnlyP99ms"` // effective, had each refill authorized the next tick alone
	OverRefillWindow int     `json:"overRefillWindow"`
	OverClockWindow  int     `json:"overClockWindow"`
	// FirstSec is when the first activity ran after the backlog was queued;
	// AfterFirstVsIdeal the rest of the drain ÷ IdealSec; UnusedTokens the
	// tokens of the refill windows from the first granted in to the last
	// that no activity used (a window granting none counts all its tokens).
	FirstSec          float64 `json:"firstSec"`
	AfterFirstVsIdeal float64 `json:"afterFirstVsIdeal"`
	UnusedTokens      int     `json:"unusedTokens"`
}

// drainGoal is the goal for tb's drain ÷ ideal at every phase.
const drainGoal = 1.05

// drainPhases are the phases, past a whole second, at which the phase rows
// create the bucket's Schedule.
var drainPhases = []time.Duration{100 * time.Millisecond, 400 * time.Millisecond, 700 * time.Millisecond}

// drainPhasesAlone are the phases of the phases scenario.
var drainPhasesAlone = []time.Duration{100 * time.Millisecond, 250 * time.Millisecond, 400 * time.Millisecond,
	550 * time.Millisecond, 700 * time.Millisecond, 850 * time.Millisecond}

// drainPhaseRows runs tb's drain of n once at each of phases.
func drainPhaseRows(ctx context.Context, cfg config, e *env, n int, phases []time.Duration) ([]DrainPhaseRow, error) {
	sched, err := bucket.ParseSchedule(drainSchedule, "")
	if err != nil {
		return nil, err
	}
	var rows []DrainPhaseRow
	for i, phase := range phases {
		r, err := drainOnce(ctx, e, "tb", i, n, phase)
		if err != nil {
			return nil, fmt.Errorf("tb at phase %v: %w", phase, err)
		}
		row := DrainPhaseRow{TargetPhase: phase.Seconds(), SchedulePhase: r.schedulePhase, Activities: n,
			IdealSec: float64(n-drainAmount) / drainAmount, DrainSec: r.drain.Seconds(), OverClockWindow: r.overClock}
		row.VsIdeal = row.DrainSec / row.IdealSec
		row.FirstSec, row.AfterFirstVsIdeal = r.first.Seconds(), (r.drain-r.first).Seconds()/row.IdealSec
		for _, w := range r.unused {
			row.UnusedTokens += w.Left
		}
		if r.overRefill != nil {
			row.OverRefillWindow = *r.overRefill
		}
		got, err := refillArrivals(ctx, e.c, r.bucket)
		if err != nil {
			return nil, err
		}
		// The ticks during the drain, each after the one before it.
		var signal, effective, nextOnly []time.Duration
		var prev time.Time
		for t := sched.Next(r.begin.Add(-2 * time.Second)); !t.After(r.begin.Add(r.drain)); prev, t = t, sched.Next(t) {
			if !t.After(r.begin) {
				continue
			}
			if s, ok := got.signalLag(t); ok {
				eff, _ := got.effectiveLag(sched, bucket.AuthorizeLead, prev, t)
				next, _ := got.effectiveLag(sched, 0, prev, t)
				signal, effective, nextOnly = append(signal, s), append(effective, eff), append(nextOnly, next)
			}
		}
		row.SignalP50ms, row.SignalP99ms = ms(percentile(signal, 50)), ms(percentile(signal, 99))
		row.EffectiveP50ms, row.EffectiveP99ms = ms(percentile(effective, 50)), ms(percentile(effective, 99))
		row.NextOnlyP99ms = ms(percentile(nextOnly, 99))
		rows = append(rows, row)
		cfg.logf("drain: tb, Schedule created %.2fs past a second: %.1fs for ideal %.0fs (%.2fx); signal lag p50 %.0fms p99 %.0fms, effective p50 %.0fms p99 %.0fms (next tick alone authorized: p99 %.0fms); first activity ran %.2fs after the start, the last %.2fs; windows not used up (s after the start: tokens left) %v",
			row.SchedulePhase, row.DrainSec, row.IdealSec, row.VsIdeal, row.SignalP50ms, row.SignalP99ms, row.EffectiveP50ms, row.EffectiveP99ms, row.NextOnlyP99ms, r.first.Seconds(), r.last.Seconds(), r.unused)
	}
	return rows, nil
}

type drainResult struct {
	bucket              string
	begin               time.Time
	schedulePhase       float64 // seconds past a whole second the Schedule was created at
	drain               time.Duration
	denialsPerGrant     float64
	updatesPerGrant     float64
	attemptsPerActivity float64
	overRefill          *int
	// unused lists, for each refill window before the last that the drain
	// did not use up, its start after begin and the tokens it left.
	unused []windowLeft
	// first and last are when the first and the last activity body ran,
	// after the drain began.
	first, last time.Duration
	overClock   int
}

// drainOnce drains n activities through limiter. A phase ≥ 0 creates the
// bucket's Schedule that long past a whole second (tb and fixed-5s only).
func drainOnce(ctx context.Context, e *env, limiter string, rep, n int, phase time.Duration) (drainResult, error) {
	queue := fmt.Sprintf("drain-%s-%d", limiter, rep)
	name := fmt.Sprintf("drain_%s_%d", map[string]string{"tb": "tb", "fixed-5s": "fixed", "task-queue-rps": "tq"}[limiter], rep)
	if phase >= 0 {
		queue, name = fmt.Sprintf("%s-phase%d", queue, phase.Milliseconds()), fmt.Sprintf("%s_phase%d", name, phase.Milliseconds())
	}
	spec := bucket.Spec{Name: name, Schedule: drainSchedule, Amount: drainAmount, Maximum: drainAmount}
	var schedPhase float64
	if limiter != "task-queue-rps" {
		if phase >= 0 {
			now := time.Now()
			at := now.Truncate(time.Second).Add(phase)
			if !at.After(now) {
				at = at.Add(time.Second)
			}
			select {
			case <-ctx.Done():
				return drainResult{}, ctx.Err()
			case <-time.After(time.Until(at)):
			}
		}
		if err := e.sync(ctx, spec); err != nil {
			return drainResult{}, err
		}
		var err error
		if schedPhase, err = schedulePhase(ctx, e, spec.Name); err != nil {
			return drainResult{}, err
		}
		// Start once the Schedule is refilling the (full) bucket.
		if err := waitForRefill(ctx, e, spec.Name); err != nil {
			return drainResult{}, err
		}
	}
	rec := &recorder{refills: map[time.Time]int{}}
	var denied, granted, updates, attempts atomic.Int64
	for range 2 { // two worker processes
		c, err := e.newClient()
		if err != nil {
			return drainResult{}, err
		}
		opts := worker.Options{MaxConcurrentActivityExecutionSize: n/2 + 1}
		counted := &countingUpdater{c: c, denied: &denied, granted: &granted, updates: &updates}
		count := &attemptCounter{n: &attempts}
		switch limiter {
		case "tb":
			acq, err := interceptor.NewAcquirer(counted, interceptor.AcquirerOptions{})
			if err != nil {
				return drainResult{}, err
			}
			ic, err := interceptor.New(interceptor.Options{Guards: map[string][]bucket.Guard{drainActivity: {{Bucket: spec.Name, Cost: 1}}}, Limiter: acq})
			if err != nil {
				return drainResult{}, err
			}
			opts.Interceptors = []temporalinterceptor.WorkerInterceptor{count, ic}
		case "fixed-5s":
			acq, err := interceptor.NewAcquirer(counted, interceptor.AcquirerOptions{})
			if err != nil {
				return drainResult{}, err
			}
			opts.Interceptors = []temporalinterceptor.WorkerInterceptor{count, &fixedBackoff{acq: acq, bucket: spec.Name, activity: drainActivity, delay: 5 * time.Second}}
		case "task-queue-rps":
			opts.TaskQueueActivitiesPerSecond = drainAmount
			opts.Interceptors = []temporalinterceptor.WorkerInterceptor{count}
		}
		w := worker.New(c, queue, opts)
		w.RegisterWorkflowWithOptions(callOnce, workflow.RegisterOptions{Name: drainWorkflow})
		w.RegisterActivityWithOptions(rec.call, activity.RegisterOptions{Name: drainActivity})
		if err := e.start(w); err != nil {
			return drainResult{}, err
		}
	}

	begin := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run, err := e.c.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprintf("%s-%d", queue, i), TaskQueue: queue}, drainWorkflow)
			if err == nil {
				err = run.Get(ctx, nil)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	res := drainResult{bucket: name, begin: begin, schedulePhase: schedPhase, drain: time.Since(begin)}
	close(errs)
	if err := <-errs; err != nil {
		return res, err
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if g := granted.Load(); g > 0 {
		res.denialsPerGrant = float64(denied.Load()) / float64(g)
		res.updatesPerGrant = float64(updates.Load()) / float64(g)
	}
	res.attemptsPerActivity = float64(attempts.Load()) / float64(n)
	if len(rec.refills) > 0 {
		most := 0
		for _, c := range rec.refills {
			most = max(most, c)
		}
		over := most - drainAmount
		res.overRefill = &over
		sched, err := bucket.ParseSchedule(drainSchedule, "")
		if err != nil {
			return res, err
		}
		res.unused = unusedWindows(rec.refills, sched, begin, drainAmount)
	}
	if len(rec.starts) > 0 {
		res.first, res.last = slices.MinFunc(rec.starts, time.Time.Compare).Sub(begin), slices.MaxFunc(rec.starts, time.Time.Compare).Sub(begin)
	}
	perSecond := map[int64]int{}
	for _, s := range rec.starts {
		perSecond[s.Unix()]++
	}
	counts := make([]int, 0, len(perSecond))
	for _, c := range perSecond {
		counts = append(counts, c)
	}
	res.overClock = slices.Max(counts) - drainAmount
	return res, nil
}

// A windowLeft is a refill window the drain did not use up: when it began
// (its refill's tick, or the refill before the drain for the first) after
// the drain began, and the tokens it left.
type windowLeft struct {
	At   time.Duration
	Left int
}

func (w windowLeft) String() string { return fmt.Sprintf("%.1fs: %d", w.At.Seconds(), w.Left) }

// unusedWindows returns the windows before the last of a drain whose
// bucket holds at most amount tokens, each starting full, that granted
// fewer than amount: the window of every tick of sched from the first
// window granted in to the last, those granting none included.
func unusedWindows(grants map[time.Time]int, sched *bucket.Schedule, begin time.Time, amount int) []windowLeft {
	windows := slices.SortedFunc(maps.Keys(grants), time.Time.Compare)
	if len(windows) == 0 {
		return nil
	}
	var left []windowLeft
	last := windows[len(windows)-1]
	for w := windows[0]; !w.IsZero() && w.Before(last); w = sched.Next(w) {
		if n := grants[w]; n < amount {
			left = append(left, windowLeft{At: w.Sub(begin), Left: amount - n})
		}
	}
	return left
}

// waitForRefill waits until a scheduled refill has reached the bucket.
func waitForRefill(ctx context.Context, e *env, name string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		st, err := e.state(ctx, name)
		if err == nil && !st.LastTick.IsZero() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("bucket %s: no refill within 30s", name)
}
