package e2e_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.temporal.io/sdk/client"

	"github.com/tokenbucket/tb/bucket"
	"github.com/tokenbucket/tb/cmd/internal/testserver"
	"github.com/tokenbucket/tb/interceptor"
	"github.com/tokenbucket/tb/workflows"
)

// TestPausedScheduleStopsRefills: pausing a bucket's refill Schedule (as the
// Web UI does) stops its refills — after the ticks already authorized, those
// within bucket.AuthorizeLead after the latest refill's tick, and at most the
// tick of a refill in flight — and unpausing starts them again.
//
// The test counts grants: a query answers as of the bucket's latest event,
// and an idle, paused bucket has none.
func TestPausedScheduleStopsRefills(t *testing.T) {
	s := testserver.NewServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := bucket.Spec{Name: "paused", Schedule: "@every 1s", Amount: 1, Maximum: 1000, Initial: new(int64(0))}
	s.Sync(t, spec)
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		st, err := s.State(ctx, spec.Name)
		return err == nil && st.Tokens >= 3 && !st.Until.IsZero(), fmt.Sprintf("%+v (%v); want refills flowing", st.State, err)
	})
	h := s.Client.ScheduleClient().GetHandle(ctx, workflows.ScheduleID(spec.Name))
	if err := h.Pause(ctx, client.SchedulePauseOptions{Note: "paused by the test"}); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	st, err := s.State(ctx, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	// Tokens on hand, and the ticks authorized but not applied yet.
	authorized := int64(max(st.Until.Sub(st.LastTick), 0) / time.Second)
	t.Logf("at the pause: %d tokens, last tick %v, authorized until %v, refill lag %v", st.Tokens, st.LastTick, st.Until, st.RefillLag)

	acq, err := interceptor.NewAcquirer(s.NewClient(), interceptor.AcquirerOptions{Namespace: s.GetDefaultNamespace(), StartSpread: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer acq.Close(context.Background())
	var grants int64
	var last time.Duration // after the pause, of the latest grant
	for i := 0; time.Since(paused) < 10*time.Second; i++ {
		d, err := acq.Acquire(ctx, spec.Name, fmt.Sprint("paused-", i), 1)
		if err != nil {
			t.Fatal(err)
		}
		if d.Granted {
			grants++
			last = time.Since(paused)
			continue
		}
		<-time.After(min(d.RetryAfter, 200*time.Millisecond)) // the polling interval
	}
	t.Logf("after the pause: %d grants, the latest %v after it", grants, last.Round(time.Millisecond))
	const lead = int64(bucket.AuthorizeLead / time.Second)
	if grants < st.Tokens+authorized {
		t.Errorf("%d grants after the pause; want at least the %d tokens on hand and the %d ticks authorized", grants, st.Tokens, authorized)
	}
	if grants > st.Tokens+1+lead {
		t.Errorf("%d grants after the pause: more than the %d tokens on hand, the tick of a refill in flight and the %d ticks it may authorize", grants, st.Tokens, lead)
	}
	if last > bucket.AuthorizeLead+2*time.Second {
		t.Errorf("a grant %v after the pause: a tick applied later than the authorized ones could", last.Round(time.Millisecond))
	}
	if err := h.Unpause(ctx, client.ScheduleUnpauseOptions{Note: "resumed by the test"}); err != nil {
		t.Fatal(err)
	}
	testserver.Eventually(t, 30*time.Second, func() (bool, string) {
		d, err := acq.Acquire(ctx, spec.Name, fmt.Sprint("unpaused-", time.Now().UnixNano()), 1)
		return err == nil && d.Granted, fmt.Sprintf("%+v (%v); want refills again after unpausing", d, err)
	})
}
