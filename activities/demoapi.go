// Package activities holds DemoAPI, a simulated third-party API with a quota,
// which tb dev --demo and the benchmarks call through tb's interceptor.
package activities

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/interceptor"
)

// DemoActivity is the activity type of DemoAPI.Call.
const DemoActivity = "CallDemoAPI"

// DemoAPI is a quota-limited API: it accepts at most Limit calls (by default
// the bucket's maximum) between two ticks of the bucket's schedule, as a
// provider with "N calls per interval, reset on the tick" would, and answers
// the rest with 429 Too Many Requests, a Retry-After and RateLimit headers.
// Its Call reports that answer to tb (interceptor.ReportHTTP), which pauses
// the bucket for every worker until the reset. It counts both. It is safe for
// concurrent use.
type DemoAPI struct {
	sched   *bucket.Schedule
	limit   int64
	latency time.Duration

	mu       sync.Mutex
	window   time.Time // the tick that opened the current window
	inWindow int64
	ok, over int64
}

// NewDemoAPI returns an API whose quota matches spec, answering after up to
// latency; limit > 0 makes it stricter than spec believes: limit calls a window.
func NewDemoAPI(spec bucket.Spec, latency time.Duration, limit int64) (*DemoAPI, error) {
	sched, err := spec.ParseSchedule()
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = spec.Maximum
	}
	return &DemoAPI{sched: sched, limit: limit, latency: latency}, nil
}

// ServeHTTP answers one call: 200, or 429 with Retry-After and RateLimit
// headers saying when the quota resets.
func (a *DemoAPI) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	now := time.Now()
	ok, reset := a.admit(now)
	if ok {
		w.WriteHeader(http.StatusOK)
		return
	}
	secs := strconv.Itoa(int(math.Ceil(reset.Sub(now).Seconds())))
	w.Header().Set("Retry-After", secs)
	w.Header().Set("RateLimit-Remaining", "0")
	w.Header().Set("RateLimit-Reset", secs)
	w.WriteHeader(http.StatusTooManyRequests)
}

// Call is the activity: one call to the API. A 429 is reported to tb,
// which pauses the bucket, and fails the attempt as a denial.
func (a *DemoAPI) Call(ctx context.Context) error {
	rec := httptest.NewRecorder()
	a.ServeHTTP(rec, nil)
	if resp := rec.Result(); resp.StatusCode != http.StatusOK {
		var appErr *temporal.ApplicationError
		if err := interceptor.ReportHTTP(ctx, "", resp); errors.As(err, &appErr) {
			return err // RateLimited: the bucket is paused until the reset
		}
		return temporal.NewApplicationError(fmt.Sprintf("429 Too Many Requests: more than %d calls since the last reset", a.limit), "QuotaExceeded")
	}
	if a.latency <= 0 {
		return nil
	}
	t := time.NewTimer(rand.N(a.latency))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// admit counts a call and reports whether the quota takes it, and when the
// window it falls in ends.
func (a *DemoAPI) admit(now time.Time) (bool, time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	// The window is [tick, next tick): find the tick at or before now.
	if a.window.IsZero() || !now.Before(a.sched.Next(a.window)) {
		a.window = a.tickAtOrBefore(now)
		a.inWindow = 0
	}
	reset := a.sched.Next(a.window)
	if a.inWindow >= a.limit {
		a.over++
		return false, reset
	}
	a.inWindow++
	a.ok++
	return true, reset
}

// tickAtOrBefore walks back from now to the latest tick not after it.
func (a *DemoAPI) tickAtOrBefore(now time.Time) time.Time {
	step := time.Second
	for {
		from := now.Add(-step)
		if next := a.sched.Next(from); !next.After(now) {
			for n := a.sched.Next(next); !n.After(now); n = a.sched.Next(n) {
				next = n
			}
			return next
		}
		step *= 2
	}
}

// Counts returns the calls accepted and those refused with 429.
func (a *DemoAPI) Counts() (ok, over int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ok, a.over
}
