// Package activities holds DemoAPI, a simulated third-party API with a quota,
// which tb dev --demo and the benchmarks call through tb's interceptor.
package activities

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.temporal.io/sdk/temporal"

	"github.com/tokenbucket/tb/bucket"
)

// DemoActivity is the activity type of DemoAPI.Call.
const DemoActivity = "CallDemoAPI"

// DemoAPI is a quota-limited API: it accepts at most the bucket's maximum
// calls between two ticks of the bucket's schedule, as a provider with "N calls
// per interval, reset on the tick" would, and answers the rest with 429.
// It counts both. It is safe for concurrent use.
type DemoAPI struct {
	sched   *bucket.Schedule
	limit   int64
	latency time.Duration

	mu       sync.Mutex
	window   time.Time // the tick that opened the current window
	inWindow int64
	ok, over int64
}

// NewDemoAPI returns an API whose quota matches spec, answering after up to latency.
func NewDemoAPI(spec bucket.Spec, latency time.Duration) (*DemoAPI, error) {
	sched, err := spec.ParseSchedule()
	if err != nil {
		return nil, err
	}
	return &DemoAPI{sched: sched, limit: spec.Maximum, latency: latency}, nil
}

// Call is the activity: one call to the API.
func (a *DemoAPI) Call(ctx context.Context) error {
	if !a.admit(time.Now()) {
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

func (a *DemoAPI) admit(now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	// The window is [tick, next tick): find the tick at or before now.
	if a.window.IsZero() || !now.Before(a.sched.Next(a.window)) {
		a.window = a.tickAtOrBefore(now)
		a.inWindow = 0
	}
	if a.inWindow >= a.limit {
		a.over++
		return false
	}
	a.inWindow++
	a.ok++
	return true
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
