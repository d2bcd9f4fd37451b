package tbtest_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.temporal.io/sdk/activity"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/tbtest"
)

// Geocoder holds the activities of an application that calls a geocoding API
// allowing 2 calls a minute.
type Geocoder struct {
	// Now is the application's clock: time.Now in production.
	Now func() time.Time
}

// A Place is what Geocode returns.
type Place struct {
	City    string
	Ran     time.Time // when the activity body ran
	Attempt int32
	Left    int64 // tokens the bucket held once this call took its own
}

// Geocode is guarded by tb: its body runs only with a token of the geocoder bucket.
func (g *Geocoder) Geocode(ctx context.Context, city string) (Place, error) {
	grant, _ := interceptor.GrantFromContext(ctx)
	return Place{City: city, Ran: g.Now(), Attempt: activity.GetInfo(ctx).Attempt, Left: grant.Remaining}, nil
}

// geocoderBucket is the bucket buckets.yaml would declare for the API.
var geocoderBucket = bucket.Spec{Name: "geocoder", Schedule: "@every 1m", Amount: 2, Maximum: 2}

// quiet keeps the test environments' logs out of the examples' output.
func quiet(s *testsuite.WorkflowTestSuite) {
	s.SetLogger(log.NewStructuredLogger(slog.New(slog.DiscardHandler)))
}

// A guarded activity runs in a TestActivityEnvironment with tb's interceptor
// and an in-memory bucket on a clock the test moves.
func Example_activity() {
	clock := tbtest.NewClock(time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC))
	lim, err := tbtest.NewLimiter(clock.Now, geocoderBucket)
	if err != nil {
		panic(err)
	}
	tb, err := interceptor.New(interceptor.Options{
		Guards:  map[string][]bucket.Guard{"Geocode": {{Bucket: "geocoder", Cost: 1}}},
		Limiter: lim,
		// The clock stands still while the activity runs: a denial waited out
		// inside it would never end. Fail at once instead, and without jitter,
		// so NextRetryDelay is exact.
		MaxWait:   -1,
		MaxJitter: -1,
	})
	if err != nil {
		panic(err)
	}

	var suite testsuite.WorkflowTestSuite
	quiet(&suite)
	env := suite.NewTestActivityEnvironment()
	env.SetWorkerOptions(worker.Options{Interceptors: []temporalinterceptor.WorkerInterceptor{tb}})
	g := &Geocoder{Now: clock.Now}
	env.RegisterActivityWithOptions(g.Geocode, activity.RegisterOptions{Name: "Geocode"})

	geocode := func(city string) {
		v, err := env.ExecuteActivity("Geocode", city)
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) {
			d, _ := interceptor.AsDenial(err)
			fmt.Printf("%s: %s, retryable %t, next retry in %v; bucket %s holds %d, refills at %s\n",
				city, appErr.Type(), !appErr.NonRetryable(), appErr.NextRetryDelay(),
				d.Bucket, d.Remaining, d.NextRefill.Format(time.TimeOnly))
			return
		}
		var p Place
		if err := v.Get(&p); err != nil {
			panic(err)
		}
		fmt.Printf("%s: ran at %s, %d token(s) left\n", p.City, p.Ran.Format(time.TimeOnly), p.Left)
	}

	geocode("Paris")
	geocode("Lyon")
	clock.Advance(20 * time.Second)
	geocode("Nice")
	clock.Advance(40 * time.Second) // past the tick at 09:01:00
	geocode("Nice")
	fmt.Printf("%+v\n", lim.Stats("geocoder"))
	// Output:
	// Paris: ran at 09:00:00, 1 token(s) left
	// Lyon: ran at 09:00:00, 0 token(s) left
	// Nice: RateLimited, retryable true, next retry in 40s; bucket geocoder holds 0, refills at 09:01:00
	// Nice: ran at 09:01:00, 1 token(s) left
	// {Grants:3 Denials:1 Duplicates:0 GrantedTokens:3 DeniedTokens:1 Refunded:0 Charged:0 Unrefunded:0}
}

// GeocodeAll is an application's workflow: it geocodes cities one after the
// other, with the retry policy tb recommends for guarded activities.
func GeocodeAll(ctx workflow.Context, cities []string) ([]Place, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout:    time.Minute,
		ScheduleToCloseTimeout: time.Hour, // how long a call may wait for quota
		RetryPolicy:            &temporal.RetryPolicy{MaximumAttempts: 0},
	})
	var out []Place
	for _, city := range cities {
		var p Place
		if err := workflow.ExecuteActivity(ctx, "Geocode", city).Get(ctx, &p); err != nil {
			return out, err
		}
		out = append(out, p)
	}
	return out, nil
}

// In a TestWorkflowEnvironment the Limiter reads the environment's clock,
// which jumps to each retry: denials become retries at the bucket's refills,
// and the workflow completes at once.
func Example_workflow() {
	start := time.Date(2026, 1, 5, 9, 0, 0, 0, time.UTC)
	var suite testsuite.WorkflowTestSuite
	quiet(&suite)
	env := suite.NewTestWorkflowEnvironment()
	env.SetStartTime(start) // before NewLimiter: the buckets start then
	lim, err := tbtest.NewLimiter(env.Now, geocoderBucket)
	if err != nil {
		panic(err)
	}
	tb, err := interceptor.New(interceptor.Options{
		Guards:    map[string][]bucket.Guard{"Geocode": {{Bucket: "geocoder", Cost: 1}}},
		Limiter:   lim,
		MaxWait:   -1, // env.Now stands still while an activity runs
		MaxJitter: -1, // retry exactly at the refill
	})
	if err != nil {
		panic(err)
	}
	env.SetWorkerOptions(worker.Options{Interceptors: []temporalinterceptor.WorkerInterceptor{tb}})
	g := &Geocoder{Now: env.Now}
	env.RegisterActivityWithOptions(g.Geocode, activity.RegisterOptions{Name: "Geocode"})
	env.RegisterWorkflow(GeocodeAll)

	env.ExecuteWorkflow(GeocodeAll, []string{"Paris", "Lyon", "Nice", "Lille", "Brest"})
	var places []Place
	if err := env.GetWorkflowResult(&places); err != nil {
		panic(err)
	}
	for _, p := range places {
		fmt.Printf("+%v %s (attempt %d)\n", p.Ran.Sub(start), p.City, p.Attempt)
	}
	fmt.Printf("%+v\n", lim.Stats("geocoder"))
	// Output:
	// +0s Paris (attempt 1)
	// +0s Lyon (attempt 1)
	// +1m0s Nice (attempt 2)
	// +1m0s Lille (attempt 1)
	// +2m0s Brest (attempt 2)
	// {Grants:5 Denials:2 Duplicates:0 GrantedTokens:5 DeniedTokens:2 Refunded:0 Charged:0 Unrefunded:0}
}
