package interceptor

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/workflows"
)

func TestParseHTTP(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	n := func(v int64) *int64 { return &v }
	for _, tt := range []struct {
		name     string
		status   int
		headers  map[string]string
		pause    time.Duration
		remain   *int64
		problems int
	}{
		{"429 with Retry-After seconds", 429, map[string]string{"Retry-After": "30"}, 30 * time.Second, nil, 0},
		{"503 with Retry-After as an HTTP date", 503, map[string]string{"Retry-After": now.Add(90 * time.Second).Format(http.TimeFormat)}, 90 * time.Second, nil, 0},
		{"Retry-After capped at the most pause", 429, map[string]string{"Retry-After": "7200"}, time.Hour, nil, 0},
		{"Retry-After in the past", 429, map[string]string{"Retry-After": now.Add(-time.Minute).Format(http.TimeFormat)}, 0, n(0), 0},
		{"Retry-After negative", 429, map[string]string{"Retry-After": "-5"}, 0, n(0), 1},
		{"Retry-After not a number", 429, map[string]string{"Retry-After": "soon"}, 0, n(0), 1},
		{"Retry-After years away", 429, map[string]string{"Retry-After": "99999999"}, 0, n(0), 1},
		{"Retry-After a date years away", 429, map[string]string{"Retry-After": now.AddDate(3, 0, 0).Format(http.TimeFormat)}, 0, n(0), 1},
		{"Retry-After overflowing", 429, map[string]string{"Retry-After": "999999999999999999999"}, 0, n(0), 1},
		{"IETF draft: nothing left until the reset", 200, map[string]string{"RateLimit-Remaining": "0", "RateLimit-Reset": "12"}, 12 * time.Second, n(0), 0},
		{"IETF draft: some left", 200, map[string]string{"RateLimit-Remaining": "7", "RateLimit-Reset": "12"}, 0, n(7), 0},
		{"GitHub: a Unix reset", 403, map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1796126460"}, time.Unix(1796126460, 0).Sub(now), n(0), 0},
		{"GitHub: a Unix reset years away", 200, map[string]string{"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "4102444800"}, 0, n(0), 1},
		{"remaining not a number", 200, map[string]string{"RateLimit-Remaining": "lots"}, 0, nil, 1},
		{"remaining negative", 200, map[string]string{"X-RateLimit-Remaining": "-1"}, 0, nil, 1},
		{"a 429 that says nothing", 429, nil, 0, n(0), 0},
		{"a 200 that says nothing", 200, nil, 0, nil, 0},
		{"Retry-After and remaining together", 429, map[string]string{"Retry-After": "5", "RateLimit-Remaining": "0", "RateLimit-Reset": "20"}, 20 * time.Second, n(0), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.headers {
				h.Set(k, v)
			}
			u, problems := ParseHTTP(tt.status, h, now, DefaultMaxPause)
			if u.Pause != tt.pause {
				t.Errorf("pause %v, want %v", u.Pause, tt.pause)
			}
			switch {
			case (u.Remaining == nil) != (tt.remain == nil):
				t.Errorf("remaining %v, want %v", u.Remaining, tt.remain)
			case u.Remaining != nil && *u.Remaining != *tt.remain:
				t.Errorf("remaining %d, want %d", *u.Remaining, *tt.remain)
			}
			if len(problems) != tt.problems {
				t.Errorf("problems %q, want %d", problems, tt.problems)
			}
		})
	}
}

// A grant that was on its way when another activity of the process reported
// a pause is not used: the call would be refused. The activity's body does
// not run, it retries when the pause ends, and the tokens go back.
func TestGrantArrivingDuringAPauseIsGivenBack(t *testing.T) {
	f := &fakeBucket{respond: grantAll, gate: make(chan struct{})}
	acq, err := NewAcquirer(f, AcquirerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	env, g := guardedEnv(t, Options{Limiter: acq, Guards: map[string][]bucket.Guard{"Fetch": {{Bucket: "api", Cost: 2}}}})
	done := make(chan error, 1)
	go func() {
		_, err := env.ExecuteActivity("Fetch")
		done <- err
	}()
	waitFor(t, "the acquire update on its way", func() bool { return len(f.sent()) == 1 })
	if err := acq.Report(context.Background(), "api", "report-1", Upstream{Pause: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	close(f.gate)
	err = <-done
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != workflows.ErrRateLimited {
		t.Fatalf("err = %v, want RateLimited", err)
	}
	if d := appErr.NextRetryDelay(); d < 4*time.Second || d > 6*time.Second {
		t.Errorf("NextRetryDelay = %v, want about the 5s pause", d)
	}
	if g.runs.Load() != 0 {
		t.Errorf("the body ran %d times during the pause", g.runs.Load())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.settles) != 1 || f.settles[0].Tokens != -2 || f.settles[0].Grant != f.batches[0].Requests[0].ID {
		t.Errorf("settles %+v, want the 2 tokens of request %q given back", f.settles, f.batches[0].Requests[0].ID)
	}
}

// A report sent again under its ID (a retried send, or one attempt reporting
// twice) moves the process's own pause no more than it moves the bucket's;
// a report under a new ID does.
func TestRepeatedReportDoesNotMoveThePause(t *testing.T) {
	a, err := NewAcquirer(&fakeBucket{respond: grantAll}, AcquirerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	clock := time.Now()
	a.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	start := a.now()
	report := func(id string) {
		t.Helper()
		if err := a.Report(context.Background(), "api", id, Upstream{Pause: 2 * time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	report("r1")
	advance(time.Second)
	report("r1")
	if got := a.pausedUntil("api"); !got.Equal(start.Add(2 * time.Second)) {
		t.Errorf("after r1 again 1s later: paused until start+%v, want start+2s", got.Sub(start))
	}
	report("r2")
	if got := a.pausedUntil("api"); !got.Equal(start.Add(3 * time.Second)) {
		t.Errorf("after r2: paused until start+%v, want start+3s", got.Sub(start))
	}
	// After the pause, r1 again starts nothing: the bucket applied it once.
	advance(5 * time.Second)
	if report("r1"); !a.pausedUntil("api").IsZero() {
		t.Errorf("r1 once more after the pause: paused until %v, want no pause", a.pausedUntil("api"))
	}
	// The IDs remembered are bounded.
	for i := range 3 * maxPauseReports {
		report(fmt.Sprint("many-", i))
	}
	a.mu.Lock()
	n := len(a.queues[workflows.BucketID("api")].paused)
	a.mu.Unlock()
	if n != maxPauseReports {
		t.Errorf("%d report IDs remembered, want at most %d", n, maxPauseReports)
	}
}
