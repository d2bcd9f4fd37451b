package tbtest_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/tbtest"
	"github.com/tokenbucket/tb/workflows"
)

// t0 is a Monday at a whole hour, so "@every" and cron ticks fall on round offsets from it.
var t0 = time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)

func newLimiter(t *testing.T, clock *tbtest.Clock, specs ...bucket.Spec) *tbtest.Limiter {
	t.Helper()
	lim, err := tbtest.NewLimiter(clock.Now, specs...)
	if err != nil {
		t.Fatal(err)
	}
	return lim
}

func initial(n int64) *int64 { return &n }

// A step asks for cost tokens at t0+at and expects want; want's times are
// offsets from t0 (-1 for the zero time).
type step struct {
	at   time.Duration
	id   string
	cost int64
	want decision
}

type decision struct {
	granted    bool
	remaining  int64
	retryAfter time.Duration
	nextRefill time.Duration
	lastRefill time.Duration
}

func fromDecision(d interceptor.Decision) decision {
	off := func(t time.Time) time.Duration {
		if t.IsZero() {
			return -1
		}
		return t.Sub(t0)
	}
	return decision{d.Granted, d.Remaining, d.RetryAfter, off(d.NextRefill), off(d.LastRefill)}
}

func runSteps(t *testing.T, spec bucket.Spec, steps []step) *tbtest.Limiter {
	t.Helper()
	clock := tbtest.NewClock(t0)
	lim := newLimiter(t, clock, spec)
	for i, s := range steps {
		clock.Set(t0.Add(s.at))
		d, err := lim.Acquire(context.Background(), spec.Name, s.id, s.cost)
		if err != nil {
			t.Fatalf("step %d (%s at +%v): %v", i, s.id, s.at, err)
		}
		if got := fromDecision(d); got != s.want {
			t.Errorf("step %d (%s, cost %d, at +%v): got %+v, want %+v", i, s.id, s.cost, s.at, got, s.want)
		}
	}
	return lim
}

func TestGrantsAndDenials(t *testing.T) {
	spec := bucket.Spec{Name: "api", Schedule: "@every 1m", Amount: 2, Maximum: 3}
	lim := runSteps(t, spec, []step{
		{0, "a", 1, decision{true, 2, 0, time.Minute, -1}},
		{0, "b", 2, decision{true, 0, 0, time.Minute, -1}},
		{20 * time.Second, "c", 1, decision{false, 0, 40 * time.Second, time.Minute, -1}},
		// 3 tokens are there only after the second tick: 2, then min(3, 2+2).
		{20 * time.Second, "d", 3, decision{false, 0, 100 * time.Second, time.Minute, -1}},
		{time.Minute, "c2", 1, decision{true, 1, 0, 2 * time.Minute, time.Minute}},
		{time.Minute, "d2", 3, decision{false, 1, time.Minute, 2 * time.Minute, time.Minute}},
		{2*time.Minute + 30*time.Second, "d3", 3, decision{true, 0, 0, 3 * time.Minute, 2 * time.Minute}},
	})
	want := tbtest.Stats{Grants: 4, Denials: 3, GrantedTokens: 7, DeniedTokens: 7}
	if got := lim.Stats("api"); got != want {
		t.Errorf("Stats: got %+v, want %+v", got, want)
	}
}

func TestRefillEverySecond(t *testing.T) {
	spec := bucket.Spec{Name: "api", Schedule: "@every 1s", Amount: 1, Maximum: 3, Initial: initial(0)}
	start := t0.Add(300 * time.Millisecond) // ticks fall on whole seconds, aligned to the Unix epoch
	clock := tbtest.NewClock(start)
	lim := newLimiter(t, clock, spec)
	for _, c := range []struct {
		at         time.Duration // from start
		tokens     int64
		nextRefill time.Duration // from t0
	}{
		{0, 0, time.Second},
		{699 * time.Millisecond, 0, time.Second},
		{700 * time.Millisecond, 1, 2 * time.Second},
		{1700 * time.Millisecond, 2, 3 * time.Second},
		{2699 * time.Millisecond, 2, 3 * time.Second},
		{2700 * time.Millisecond, 3, 4 * time.Second},
		{10 * time.Second, 3, 11 * time.Second}, // capped at the maximum
	} {
		clock.Set(start.Add(c.at))
		if got := lim.Tokens("api"); got != c.tokens {
			t.Errorf("at +%v: %d tokens, want %d", c.at, got, c.tokens)
		}
		if got := lim.NextRefill("api").Sub(t0); got != c.nextRefill {
			t.Errorf("at +%v: next refill at t0+%v, want t0+%v", c.at, got, c.nextRefill)
		}
	}
}

func TestRefillCron(t *testing.T) {
	spec := bucket.Spec{Name: "api", Schedule: "*/15 * * * *", Amount: 10, Maximum: 10, Initial: initial(0)}
	runSteps(t, spec, []step{
		{0, "a", 1, decision{false, 0, 15 * time.Minute, 15 * time.Minute, -1}},
		{5 * time.Minute, "b", 1, decision{false, 0, 10 * time.Minute, 15 * time.Minute, -1}},
		{15*time.Minute - time.Nanosecond, "c", 1, decision{false, 0, time.Nanosecond, 15 * time.Minute, -1}},
		{15 * time.Minute, "d", 4, decision{true, 6, 0, 30 * time.Minute, 15 * time.Minute}},
		{29 * time.Minute, "e", 7, decision{false, 6, time.Minute, 30 * time.Minute, 15 * time.Minute}},
		{45 * time.Minute, "f", 10, decision{true, 0, 0, time.Hour, 45 * time.Minute}},
	})
}

func TestRefillCronInTimeZone(t *testing.T) {
	// 9:00 on weekdays in New York is 14:00 UTC in January. From Friday
	// 10:00 there, the next refill is Monday's.
	spec := bucket.Spec{Name: "api", Schedule: "0 9 * * MON-FRI", Timezone: "America/New_York", Amount: 5, Maximum: 5, Initial: initial(0)}
	friday := time.Date(2026, 1, 9, 15, 0, 0, 0, time.UTC)
	clock := tbtest.NewClock(friday)
	lim := newLimiter(t, clock, spec)
	d, err := lim.Acquire(context.Background(), "api", "a", 1)
	if err != nil {
		t.Fatal(err)
	}
	monday := time.Date(2026, 1, 12, 14, 0, 0, 0, time.UTC)
	if d.Granted || d.RetryAfter != monday.Sub(friday) || !d.NextRefill.Equal(monday) {
		t.Errorf("got %+v, want a denial until %v", d, monday)
	}
	clock.Set(monday)
	if got := lim.Tokens("api"); got != 5 {
		t.Errorf("Monday: %d tokens, want 5", got)
	}
}

func TestMaximumCapsLongGaps(t *testing.T) {
	for _, c := range []struct {
		schedule string
		gap      time.Duration
	}{
		{"@every 1s", 366 * 24 * time.Hour},
		{"* * * * *", 30 * 24 * time.Hour},
		{"@hourly", 5 * time.Hour},
	} {
		t.Run(c.schedule, func(t *testing.T) {
			clock := tbtest.NewClock(t0)
			lim := newLimiter(t, clock, bucket.Spec{Name: "api", Schedule: c.schedule, Amount: 2, Maximum: 5})
			lim.SetTokens("api", 0)
			clock.Advance(c.gap)
			d, err := lim.Acquire(context.Background(), "api", "a", 1)
			if err != nil {
				t.Fatal(err)
			}
			// The last tick is t0+gap itself: every gap is a whole number of ticks.
			if !d.Granted || d.Remaining != 4 || !d.LastRefill.Equal(t0.Add(c.gap)) {
				t.Errorf("got %+v, want a grant leaving 4 of 5, last refill at %v", d, t0.Add(c.gap))
			}
		})
	}
}

func TestDuplicateIDs(t *testing.T) {
	spec := bucket.Spec{Name: "api", Schedule: "@hourly", Amount: 1, Maximum: 1}
	lim := runSteps(t, spec, []step{
		{0, "a", 1, decision{true, 0, 0, time.Hour, -1}},
		{time.Minute, "a", 1, decision{true, 0, 0, time.Hour, -1}}, // the grant again; no token taken
		{time.Minute, "b", 1, decision{false, 0, 59 * time.Minute, time.Hour, -1}},
		{2 * time.Minute, "b", 1, decision{false, 0, 58 * time.Minute, time.Hour, -1}}, // a denied id is decided anew
		{time.Hour, "b", 1, decision{true, 0, 0, 2 * time.Hour, time.Hour}},
		{time.Hour, "a", 5, decision{true, 0, 0, 2 * time.Hour, time.Hour}}, // granted ids are kept, whatever the cost
	})
	want := tbtest.Stats{Grants: 2, Denials: 2, Duplicates: 2, GrantedTokens: 2, DeniedTokens: 2}
	if got := lim.Stats("api"); got != want {
		t.Errorf("Stats: got %+v, want %+v", got, want)
	}
}

func TestRefusals(t *testing.T) {
	clock := tbtest.NewClock(t0)
	lim := newLimiter(t, clock, bucket.Spec{Name: "api", Schedule: "@every 1s", Amount: 5, Maximum: 5})
	for _, c := range []struct {
		name, bucket, id string
		cost             int64
		errType          string
		retryable        bool
	}{
		{"zero cost", "api", "a", 0, workflows.ErrInvalidRequest, false},
		{"negative cost", "api", "a", -1, workflows.ErrInvalidRequest, false},
		{"cost over maximum", "api", "a", 6, workflows.ErrInvalidRequest, false},
		{"no id", "api", "", 1, workflows.ErrInvalidRequest, false},
		{"long id", "api", strings.Repeat("x", workflows.MaxIDLength+1), 1, workflows.ErrInvalidRequest, false},
		{"bad bucket name", "my-api", "a", 1, workflows.ErrInvalidRequest, false},
		{"unknown bucket", "other", "a", 1, workflows.ErrUnknownBucket, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := lim.Acquire(context.Background(), c.bucket, c.id, c.cost)
			var appErr *temporal.ApplicationError
			if !errors.As(err, &appErr) {
				t.Fatalf("got %v, want an ApplicationError", err)
			}
			if appErr.Type() != c.errType || appErr.NonRetryable() == c.retryable {
				t.Errorf("got type %s, non-retryable %t; want %s, non-retryable %t", appErr.Type(), appErr.NonRetryable(), c.errType, !c.retryable)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("bucket %q", c.bucket)) {
				t.Errorf("%q does not name the bucket", err)
			}
		})
	}
	if got := lim.Stats("api"); got != (tbtest.Stats{}) {
		t.Errorf("refusals were counted: %+v", got)
	}
	if got := lim.Tokens("api"); got != 5 {
		t.Errorf("refusals took tokens: %d left", got)
	}
}

func TestDoneContext(t *testing.T) {
	lim := newLimiter(t, tbtest.NewClock(t0), bucket.Spec{Name: "api", Schedule: "@every 1s", Amount: 5, Maximum: 5})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := lim.Acquire(ctx, "api", "a", 1); !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want %v", err, context.Canceled)
	}
	if got := lim.Tokens("api"); got != 5 {
		t.Errorf("%d tokens left, want 5", got)
	}
}

func TestSetTokens(t *testing.T) {
	clock := tbtest.NewClock(t0)
	lim := newLimiter(t, clock, bucket.Spec{Name: "api", Schedule: "@every 1m", Amount: 2, Maximum: 5})
	lim.SetTokens("api", 0)
	if d, _ := lim.Acquire(context.Background(), "api", "a", 1); d.Granted || d.RetryAfter != time.Minute {
		t.Errorf("empty bucket: got %+v, want a denial for 1m", d)
	}
	clock.Advance(time.Minute)
	if got := lim.Tokens("api"); got != 2 {
		t.Errorf("after a tick: %d tokens, want 2", got)
	}
	lim.SetTokens("api", 5)
	if got := lim.Tokens("api"); got != 5 {
		t.Errorf("after SetTokens(5): %d tokens", got)
	}
	for name, f := range map[string]func(){
		"SetTokens above maximum": func() { lim.SetTokens("api", 6) },
		"SetTokens negative":      func() { lim.SetTokens("api", -1) },
		"SetTokens unknown":       func() { lim.SetTokens("other", 1) },
		"Tokens unknown":          func() { lim.Tokens("other") },
		"Stats unknown":           func() { lim.Stats("other") },
		"NextRefill unknown":      func() { lim.NextRefill("other") },
	} {
		if !panics(f) {
			t.Errorf("%s did not panic", name)
		}
	}
}

func panics(f func()) (panicked bool) {
	defer func() { panicked = recover() != nil }()
	f()
	return false
}

func TestNewLimiterRefuses(t *testing.T) {
	ok := bucket.Spec{Name: "api", Schedule: "@every 1s", Amount: 1, Maximum: 1}
	for name, c := range map[string]struct {
		now   func() time.Time
		specs []bucket.Spec
	}{
		"no clock":     {nil, []bucket.Spec{ok}},
		"invalid spec": {time.Now, []bucket.Spec{{Name: "api", Schedule: "0 * * * * *", Amount: 1, Maximum: 1}}},
		"no amount":    {time.Now, []bucket.Spec{{Name: "api", Schedule: "@hourly", Maximum: 1}}},
		"one name":     {time.Now, []bucket.Spec{ok, ok}},
	} {
		if _, err := tbtest.NewLimiter(c.now, c.specs...); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestFromConfig(t *testing.T) {
	cfg, err := bucket.Parse("buckets.yaml", []byte(`
buckets:
  - name: github_api
    schedule: "@hourly"
    amount: 1000
    maximum: 1000
    activities:
      SearchCode: 10
  - name: email_provider
    schedule: "0 0 * * *"
    timezone: America/New_York
    amount: 10000
    maximum: 10000
    initial: 0
    activities:
      SendEmail:
`))
	if err != nil {
		t.Fatal(err)
	}
	lim, err := tbtest.NewLimiter(tbtest.NewClock(t0).Now, cfg.Buckets...)
	if err != nil {
		t.Fatal(err)
	}
	g := cfg.Guards["SearchCode"][0]
	if d, err := lim.Acquire(context.Background(), g.Bucket, "a", g.Cost); err != nil || !d.Granted || d.Remaining != 990 {
		t.Errorf("SearchCode: got %+v, %v; want a grant leaving 990", d, err)
	}
	g = cfg.Guards["SendEmail"][0]
	d, err := lim.Acquire(context.Background(), g.Bucket, "b", g.Cost)
	if midnight := time.Date(2026, 1, 6, 5, 0, 0, 0, time.UTC); err != nil || d.Granted || !d.NextRefill.Equal(midnight) {
		t.Errorf("SendEmail: got %+v, %v; want a denial until %v", d, err, midnight)
	}
}

func TestClock(t *testing.T) {
	c := tbtest.NewClock(t0)
	if got := c.Advance(90 * time.Second); !got.Equal(t0.Add(90*time.Second)) || !c.Now().Equal(got) {
		t.Errorf("Advance: got %v, Now %v", got, c.Now())
	}
	c.Set(t0)
	if got := c.Now(); got != t0 {
		t.Errorf("Set: Now is %v, want %v", got, t0)
	}
	if now := time.Now(); tbtest.NewClock(now).Now() != now.Round(0) {
		t.Error("NewClock keeps a monotonic reading")
	}
}

// TestConcurrentUse takes tokens from many goroutines while the clock moves:
// every token a tick adds is granted once.
func TestConcurrentUse(t *testing.T) {
	clock := tbtest.NewClock(t0)
	lim := newLimiter(t, clock, bucket.Spec{Name: "api", Schedule: "@every 1s", Amount: 10, Maximum: 1 << 20, Initial: initial(0)})
	const workers, calls, ticks = 8, 200, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var granted []string
			for i := range calls {
				id := fmt.Sprintf("w%d-%d", w, i)
				d, err := lim.Acquire(context.Background(), "api", id, 1)
				if err != nil {
					t.Error(err)
					return
				}
				if d.Granted {
					granted = append(granted, id)
				}
			}
			for _, id := range granted { // each again: answered from the grant
				if d, err := lim.Acquire(context.Background(), "api", id, 1); err != nil || !d.Granted {
					t.Errorf("%s again: %+v, %v", id, d, err)
				}
			}
		})
	}
	wg.Go(func() {
		for range ticks {
			clock.Advance(time.Second)
			_ = lim.Tokens("api")
			_ = lim.Stats("api")
		}
	})
	wg.Wait()
	clock.Advance(time.Second)
	st, left := lim.Stats("api"), lim.Tokens("api")
	if st.GrantedTokens+left != 10*(ticks+1) {
		t.Errorf("granted %d and %d left: want %d in all", st.GrantedTokens, left, 10*(ticks+1))
	}
	if st.Grants+st.Denials != workers*calls || st.Duplicates != st.Grants {
		t.Errorf("Stats %+v: want %d requests, each grant asked again once", st, workers*calls)
	}
}

// TestConcurrentActivities runs guarded activities at once in a
// TestWorkflowEnvironment: they finish at the refills, two by two.
func TestConcurrentActivities(t *testing.T) {
	env, lim := workflowEnv(t, bucket.Spec{Name: "api", Schedule: "@every 1m", Amount: 2, Maximum: 2})
	env.RegisterActivityWithOptions(func(ctx context.Context) (time.Time, error) { return env.Now(), nil }, activity.RegisterOptions{Name: "Call"})
	env.RegisterWorkflow(callAtOnce)
	env.ExecuteWorkflow(callAtOnce, 6)
	var ran []time.Time
	if err := env.GetWorkflowResult(&ran); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(ran, time.Time.Compare)
	var got []time.Duration
	for _, r := range ran {
		got = append(got, r.Sub(t0))
	}
	if want := []time.Duration{0, 0, time.Minute, time.Minute, 2 * time.Minute, 2 * time.Minute}; !slices.Equal(got, want) {
		t.Errorf("ran at %v, want %v", got, want)
	}
	if st := lim.Stats("api"); st.Grants != 6 {
		t.Errorf("Stats: %+v", st)
	}
}

func workflowEnv(t *testing.T, specs ...bucket.Spec) (*testsuite.TestWorkflowEnvironment, *tbtest.Limiter) {
	t.Helper()
	var s testsuite.WorkflowTestSuite
	quiet(&s)
	env := s.NewTestWorkflowEnvironment()
	env.SetStartTime(t0)
	lim, err := tbtest.NewLimiter(env.Now, specs...)
	if err != nil {
		t.Fatal(err)
	}
	guards := map[string][]bucket.Guard{}
	for _, spec := range specs {
		guards["Call"] = []bucket.Guard{{Bucket: spec.Name, Cost: 1}}
	}
	tb, err := interceptor.New(interceptor.Options{Guards: guards, Limiter: lim, MaxWait: -1, MaxJitter: -1})
	if err != nil {
		t.Fatal(err)
	}
	env.SetWorkerOptions(worker.Options{Interceptors: []temporalinterceptor.WorkerInterceptor{tb}})
	return env, lim
}

func callAtOnce(ctx workflow.Context, n int) ([]time.Time, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout:    time.Minute,
		ScheduleToCloseTimeout: time.Hour,
		RetryPolicy:            &temporal.RetryPolicy{MaximumAttempts: 0},
	})
	futures := make([]workflow.Future, n)
	for i := range futures {
		futures[i] = workflow.ExecuteActivity(ctx, "Call")
	}
	ran := make([]time.Time, n)
	for i, f := range futures {
		if err := f.Get(ctx, &ran[i]); err != nil {
			return nil, err
		}
	}
	return ran, nil
}

// TestAnswersAsTheBucketWorkflow sends the same requests, at the same
// instants, to tb's bucket workflow (refilled at each tick, as its Schedule
// would) and to a Limiter, and compares their answers.
func TestAnswersAsTheBucketWorkflow(t *testing.T) {
	for _, spec := range []bucket.Spec{
		{Name: "every", Schedule: "@every 1m", Amount: 3, Maximum: 5},
		{Name: "cron", Schedule: "*/7 * * * *", Amount: 4, Maximum: 6, Initial: initial(1)},
	} {
		t.Run(spec.Name, func(t *testing.T) {
			var s testsuite.WorkflowTestSuite
			quiet(&s)
			env := s.NewTestWorkflowEnvironment()
			env.SetStartTime(t0)
			workflows.Register(env)
			lim, err := tbtest.NewLimiter(env.Now, spec)
			if err != nil {
				t.Fatal(err)
			}
			const span = time.Hour
			sched, _ := spec.ParseSchedule()
			for tick := sched.Next(t0); tick.Before(t0.Add(span)); tick = sched.Next(tick) {
				env.RegisterDelayedCallback(func() {
					env.SignalWorkflow(workflows.RefillSignal, workflows.Refill{ID: tick.Format(time.RFC3339), Tick: tick})
				}, tick.Sub(t0))
			}

			type answer struct {
				at              time.Duration
				id              string
				cost            int64
				limiter, bucket decision
			}
			var answers []*answer
			rng := rand.New(rand.NewPCG(1, 2))
			var ids []string
			for i := range 200 {
				at := time.Duration(rng.Int64N(int64(span)))
				id := fmt.Sprint("r", i)
				if len(ids) > 0 && rng.IntN(5) == 0 {
					id = ids[rng.IntN(len(ids))] // sometimes an id asked before
				}
				ids = append(ids, id)
				a := &answer{at: at, id: id, cost: 1 + rng.Int64N(spec.Maximum)}
				answers = append(answers, a)
				env.RegisterDelayedCallback(func() {
					d, err := lim.Acquire(context.Background(), spec.Name, a.id, a.cost)
					if err != nil {
						t.Errorf("Limiter at +%v: %v", a.at, err)
					}
					a.limiter = fromDecision(d)
					acquire(t, env, fmt.Sprint("u", i), a.id, a.cost, &a.bucket)
				}, at)
			}
			env.RegisterDelayedCallback(func() {
				env.UpdateWorkflow(workflows.RetireUpdate, "retire", &testsuite.TestUpdateCallback{
					OnAccept: func() {}, OnReject: func(error) {}, OnComplete: func(any, error) {},
				})
			}, span)
			env.ExecuteWorkflow(workflows.BucketWorkflowType, workflows.BucketInput{Spec: spec})
			if !env.IsWorkflowCompleted() || env.GetWorkflowError() != nil {
				t.Fatalf("bucket workflow did not complete: %v", env.GetWorkflowError())
			}
			slices.SortStableFunc(answers, func(a, b *answer) int { return int(a.at - b.at) })
			var grants, denials int
			for _, a := range answers {
				if a.bucket.lastRefill == unknown {
					a.bucket.lastRefill = a.limiter.lastRefill
				}
				// The bucket paces its refusals, bucket.ComebackGap apart;
				// the Limiter leaves that out.
				if late := a.bucket.retryAfter - a.limiter.retryAfter; !a.bucket.granted && late > 0 && late%bucket.ComebackGap == 0 {
					a.bucket.retryAfter = a.limiter.retryAfter
				}
				if a.limiter != a.bucket {
					t.Errorf("%s (cost %d) at +%v: Limiter %+v, bucket workflow %+v", a.id, a.cost, a.at, a.limiter, a.bucket)
				}
				if a.bucket.granted {
					grants++
				} else {
					denials++
				}
			}
			if grants < 20 || denials < 20 {
				t.Errorf("%d grants and %d denials: the steps test too little", grants, denials)
			}
		})
	}
}

// unknown marks a time the bucket workflow's answer does not hold.
const unknown = -2

// acquire sends one request to the bucket workflow and stores its answer in d.
func acquire(t *testing.T, env *testsuite.TestWorkflowEnvironment, updateID, id string, cost int64, d *decision) {
	env.UpdateWorkflow(workflows.AcquireUpdate, updateID, &testsuite.TestUpdateCallback{
		OnAccept: func() {},
		OnReject: func(err error) {
			// The test environment hands over the validator's error as it was
			// made, its details Go values: read them as their own type.
			var appErr *temporal.ApplicationError
			var resp workflows.AcquireResponse
			if !errors.As(err, &appErr) || appErr.Type() != workflows.ErrRateLimited || appErr.Details(&resp) != nil || len(resp.Results) != 1 {
				t.Errorf("bucket workflow refused %s: %v", id, err)
				return
			}
			*d = fromDecision(interceptor.Decision{Remaining: resp.Tokens, RetryAfter: resp.Results[0].RetryAfter, NextRefill: resp.NextRefill})
			d.lastRefill = unknown // the validator's denial does not say
		},
		OnComplete: func(v any, err error) {
			resp, _ := v.(workflows.AcquireResponse)
			if err != nil || len(resp.Results) != 1 {
				t.Errorf("bucket workflow answered %s with %+v, %v", id, resp, err)
				return
			}
			r := resp.Results[0]
			*d = fromDecision(interceptor.Decision{Granted: r.Granted, Remaining: resp.Tokens, RetryAfter: r.RetryAfter,
				NextRefill: resp.NextRefill, LastRefill: resp.LastRefill})
		},
	}, workflows.AcquireBatch{Requests: []workflows.AcquireRequest{{ID: id, Cost: cost}}})
}
