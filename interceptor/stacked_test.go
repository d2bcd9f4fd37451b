package interceptor_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"go.temporal.io/sdk/activity"
	temporalinterceptor "go.temporal.io/sdk/interceptor"
	"go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/tbtest"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// guardedEnv returns an activity environment running fn as activity "Call",
// guarded by guards on lim.
func guardedEnv(t *testing.T, lim *tbtest.Limiter, guards []bucket.Guard, fn func(context.Context) error) *testsuite.TestActivityEnvironment {
	t.Helper()
	ic, err := interceptor.New(interceptor.Options{Guards: map[string][]bucket.Guard{"Call": guards}, Limiter: lim, MaxWait: -1, MaxJitter: -1})
	if err != nil {
		t.Fatal(err)
	}
	var s testsuite.WorkflowTestSuite
	s.SetLogger(log.NewStructuredLogger(slog.New(slog.DiscardHandler)))
	env := s.NewTestActivityEnvironment()
	env.SetWorkerOptions(worker.Options{Interceptors: []temporalinterceptor.WorkerInterceptor{ic}})
	env.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: "Call"})
	return env
}

// An activity drawing from a per-second and a per-10-seconds bucket runs only
// with both tokens; when one bucket denies, the other's token goes back, and
// the error names every bucket that denied with the longest wait.
func TestStackedGuards(t *testing.T) {
	clock := tbtest.NewClock(t0)
	perSecond := bucket.Spec{Name: "per_second", Schedule: "@every 1s", Amount: 2, Maximum: 2}
	perTen := bucket.Spec{Name: "per_10s", Schedule: "@every 10s", Amount: 3, Maximum: 3}
	lim, err := tbtest.NewLimiter(clock.Now, perSecond, perTen)
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	env := guardedEnv(t, lim, []bucket.Guard{{Bucket: "per_second", Cost: 1}, {Bucket: "per_10s", Cost: 1}}, func(ctx context.Context) error {
		runs++
		if gs := interceptor.GrantsFromContext(ctx); len(gs) != 2 || gs[0].Bucket != "per_10s" || gs[1].Bucket != "per_second" {
			return fmt.Errorf("grants %+v, want both, in bucket order", gs)
		}
		return nil
	})
	call := func() error { _, err := env.ExecuteActivity("Call"); return err }

	for i := range 2 {
		if err := call(); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	// per_second is empty: per_10s's token goes back.
	err = call()
	d, ok := interceptor.AsDenial(err)
	if !ok || d.Bucket != "per_second" || d.RetryAfter != time.Second || len(d.Also) != 0 {
		t.Fatalf("third call: %v (%+v); want denied by per_second for 1s", err, d)
	}
	if lim.Tokens("per_10s") != 1 || lim.Stats("per_10s").Refunded != 1 {
		t.Errorf("per_10s holds %d tokens, refunded %d; want its grant refunded (1 left)", lim.Tokens("per_10s"), lim.Stats("per_10s").Refunded)
	}
	// One second on, per_second has 2 again; per_10s has 1: one call runs.
	clock.Advance(time.Second)
	if err := call(); err != nil {
		t.Fatalf("fourth call: %v", err)
	}
	// per_10s is empty, per_second holds 1: its grant goes back.
	err = call()
	if d, ok := interceptor.AsDenial(err); !ok || d.Bucket != "per_10s" || d.RetryAfter != 9*time.Second || len(d.Also) != 0 {
		t.Fatalf("fifth call: %v (%+v); want denied by per_10s for 9s", err, d)
	}
	if lim.Tokens("per_second") != 1 {
		t.Errorf("per_second holds %d tokens; want its grant of the fifth call given back (1)", lim.Tokens("per_second"))
	}
	// Both empty: denied by both; the retry waits for the longer, per_10s.
	lim.SetTokens("per_second", 0)
	err = call()
	d, ok = interceptor.AsDenial(err)
	var appErr *temporal.ApplicationError
	if !ok || !errors.As(err, &appErr) || d.Bucket != "per_10s" || d.RetryAfter != 9*time.Second || appErr.NextRetryDelay() != 9*time.Second ||
		len(d.Also) != 1 || d.Also[0].Bucket != "per_second" || d.Also[0].RetryAfter != time.Second {
		t.Fatalf("sixth call: %v (%+v); want denied by per_10s for 9s, and by per_second for 1s", err, d)
	}
	if runs != 3 {
		t.Errorf("the body ran %d times, want 3", runs)
	}
	for _, b := range []string{"per_second", "per_10s"} {
		st := lim.Stats(b)
		if used := st.GrantedTokens - st.Refunded; used != int64(runs) {
			t.Errorf("%s: %d granted − %d refunded = %d, want the %d runs", b, st.GrantedTokens, st.Refunded, used, runs)
		}
	}
}

// Settle-up: a call estimated at 100 tokens reports what it really cost.
func TestSetCostSettlesTheDifference(t *testing.T) {
	for _, tt := range []struct {
		name                  string
		initial, actual       int64
		wantTokens, wantDebt  int64
		wantRefunded, charged int64
	}{
		{"used fewer", 200, 40, 160, 0, 60, 0},
		{"used more than was left", 150, 250, 0, 100, 0, 150},
		{"used what was estimated", 200, 100, 100, 0, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := tbtest.NewClock(t0)
			llm := bucket.Spec{Name: "llm_tokens", Schedule: "@every 1m", Amount: 200, Maximum: 200, Initial: &tt.initial}
			lim, err := tbtest.NewLimiter(clock.Now, llm)
			if err != nil {
				t.Fatal(err)
			}
			env := guardedEnv(t, lim, []bucket.Guard{{Bucket: "llm_tokens", Cost: 100}}, func(ctx context.Context) error {
				return interceptor.SetCost(ctx, "", tt.actual)
			})
			if _, err := env.ExecuteActivity("Call"); err != nil {
				t.Fatal(err)
			}
			st := lim.Stats("llm_tokens")
			if lim.Tokens("llm_tokens") != tt.wantTokens || lim.Debt("llm_tokens") != tt.wantDebt || st.Refunded != tt.wantRefunded || st.Charged != tt.charged {
				t.Errorf("%d tokens, debt %d, refunded %d, charged %d; want %d, %d, %d, %d",
					lim.Tokens("llm_tokens"), lim.Debt("llm_tokens"), st.Refunded, st.Charged, tt.wantTokens, tt.wantDebt, tt.wantRefunded, tt.charged)
			}
			if tt.wantDebt > 0 {
				clock.Advance(time.Minute) // the next refill pays the debt first
				if lim.Tokens("llm_tokens") != 100 || lim.Debt("llm_tokens") != 0 {
					t.Errorf("after the refill: %d tokens, debt %d; want 100 and 0", lim.Tokens("llm_tokens"), lim.Debt("llm_tokens"))
				}
			}
		})
	}
}

func TestSetCostErrors(t *testing.T) {
	if err := interceptor.SetCost(context.Background(), "", 1); err == nil {
		t.Error("SetCost outside a guarded activity succeeded")
	}
	lim, _ := tbtest.NewLimiter(tbtest.NewClock(t0).Now, bucket.Spec{Name: "a", Schedule: "@hourly", Amount: 5, Maximum: 5}, bucket.Spec{Name: "b", Schedule: "@hourly", Amount: 5, Maximum: 5})
	env := guardedEnv(t, lim, []bucket.Guard{{Bucket: "a", Cost: 1}, {Bucket: "b", Cost: 1}}, func(ctx context.Context) error {
		if interceptor.SetCost(ctx, "", 2) == nil {
			return errors.New(`SetCost "" with two buckets succeeded`)
		}
		if interceptor.SetCost(ctx, "c", 2) == nil {
			return errors.New("SetCost of a bucket the activity does not draw from succeeded")
		}
		if interceptor.SetCost(ctx, "a", -1) == nil {
			return errors.New("a negative cost was accepted")
		}
		return interceptor.SetCost(ctx, "b", 3)
	})
	if _, err := env.ExecuteActivity("Call"); err != nil {
		t.Fatal(err)
	}
	if lim.Tokens("a") != 4 || lim.Tokens("b") != 2 {
		t.Errorf("a holds %d, b holds %d; want 4 and 2 (b settled at 3)", lim.Tokens("a"), lim.Tokens("b"))
	}
}

// A 429 with Retry-After, reported from inside the activity, pauses the
// bucket for every caller and fails the activity as a denial until then.
func TestReportHTTPPausesTheBucket(t *testing.T) {
	clock := tbtest.NewClock(t0)
	lim, err := tbtest.NewLimiter(clock.Now, bucket.Spec{Name: "api", Schedule: "@every 1s", Amount: 5, Maximum: 5})
	if err != nil {
		t.Fatal(err)
	}
	env := guardedEnv(t, lim, []bucket.Guard{{Bucket: "api", Cost: 1}}, func(ctx context.Context) error {
		resp := &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"30"}}}
		if err := interceptor.ReportHTTP(ctx, "", resp); err != nil {
			return err
		}
		return errors.New("a 429 did not fail the activity")
	})
	_, err = env.ExecuteActivity("Call")
	d, ok := interceptor.AsDenial(err)
	var appErr *temporal.ApplicationError
	if !ok || !errors.As(err, &appErr) || appErr.NonRetryable() || appErr.Category() != temporal.ApplicationErrorCategoryBenign ||
		d.Bucket != "api" || d.RetryAfter < 29*time.Second || d.RetryAfter > 30*time.Second {
		t.Fatalf("after a 429: %v (%+v); want a retryable, benign RateLimited for 30s", err, d)
	}
	// Every other caller is refused until the pause ends, whatever the bucket holds.
	dec, err := lim.Acquire(context.Background(), "api", "other", 1)
	if err != nil || dec.Granted || dec.RetryAfter < 29*time.Second {
		t.Errorf("another caller during the pause: %+v, %v", dec, err)
	}
	clock.Advance(31 * time.Second)
	if dec, err := lim.Acquire(context.Background(), "api", "later", 1); err != nil || !dec.Granted {
		t.Errorf("after the pause: %+v, %v", dec, err)
	}
}
